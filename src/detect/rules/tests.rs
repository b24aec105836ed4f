use super::*;
use crate::store::window::ValueStats;

/// A window holding one gauge value (or one delta).
fn value(value: f64) -> WindowStats {
    let mut values = ValueStats::default();
    values.add(value, 1);
    WindowStats {
        values,
        ..WindowStats::default()
    }
}

/// A 40-minute rise of 100 kB/s ending at `last`, fitting well.
fn rising(last: f64) -> Trend {
    Trend {
        slope_per_sec: 1e5,
        r2: 0.98,
        last,
        duration_secs: 2400.0,
    }
}

/// One table row: the service's metric series in a window (name, value,
/// trend), the config, and the measures of the anomalies expected.
struct Case {
    name: &'static str,
    config: DetectConfig,
    metrics: Vec<(&'static str, f64, Option<Trend>)>,
    expected: &'static [&'static str],
}

fn check(cases: Vec<Case>) {
    for case in cases {
        let windows: Vec<WindowStats> = case
            .metrics
            .iter()
            .map(|(_, amount, _)| value(*amount))
            .collect();
        let input: Vec<(&str, &WindowStats, Option<&Trend>)> = case
            .metrics
            .iter()
            .zip(&windows)
            .map(|((name, _, trend), stats)| (*name, stats, trend.as_ref()))
            .collect();
        let found = service_rules(&case.config, "checkout", &input);
        let measures: Vec<&str> = found
            .iter()
            .map(|anomaly| anomaly.measure.as_str())
            .collect();
        assert_eq!(measures, case.expected, "{}: {found:#?}", case.name);
        for anomaly in &found {
            assert_eq!(anomaly.kind, AnomalyKind::Saturation, "{}", case.name);
            assert_eq!(anomaly.severity, Severity::Critical, "{}", case.name);
            assert!(!anomaly.severe, "{}", case.name);
        }
    }
}

const USED: &str = "db.client.connection.count{db.client.connection.state=used}";
const IDLE: &str = "db.client.connection.count{db.client.connection.state=idle}";
const MAX: &str = "db.client.connection.max";
const PENDING: &str = "db.client.connection.pending_requests";

#[test]
fn connection_pool() {
    let defaults = DetectConfig::default;
    check(vec![
        Case {
            name: "19 of 20 used with 3 waiting",
            config: defaults(),
            metrics: vec![
                (USED, 19.0, None),
                (IDLE, 1.0, None),
                (MAX, 20.0, None),
                (PENDING, 3.0, None),
            ],
            expected: &["db.client.connection.count{db.client.connection.state=used}/max"],
        },
        Case {
            name: "full but nobody waiting",
            config: defaults(),
            metrics: vec![(USED, 20.0, None), (MAX, 20.0, None), (PENDING, 0.0, None)],
            expected: &[],
        },
        Case {
            name: "half used with waiters",
            config: defaults(),
            metrics: vec![(USED, 10.0, None), (MAX, 20.0, None), (PENDING, 5.0, None)],
            expected: &[],
        },
        Case {
            name: "no pending metric: no evidence of waiting",
            config: defaults(),
            metrics: vec![(USED, 20.0, None), (MAX, 20.0, None)],
            expected: &[],
        },
        Case {
            name: "a max of 0 is not divided by",
            config: defaults(),
            metrics: vec![(USED, 0.0, None), (MAX, 0.0, None), (PENDING, 2.0, None)],
            expected: &[],
        },
        Case {
            name: "idle connections are not usage",
            config: defaults(),
            metrics: vec![(IDLE, 20.0, None), (MAX, 20.0, None), (PENDING, 2.0, None)],
            expected: &[],
        },
        Case {
            name: "older names",
            config: defaults(),
            metrics: vec![
                ("db.client.connections.usage{state=used,pool.name=orders}", 10.0, None),
                ("db.client.connections.usage{state=idle,pool.name=orders}", 0.0, None),
                ("db.client.connections.max{pool.name=orders}", 10.0, None),
                ("db.client.connections.pending_requests{pool.name=orders}", 1.0, None),
            ],
            expected: &["db.client.connections.usage{state=used,pool.name=orders}/max"],
        },
        Case {
            name: "two pools paired by name: only the full one",
            config: defaults(),
            metrics: vec![
                ("db.client.connection.count{db.client.connection.state=used,db.client.connection.pool.name=a}", 19.0, None),
                ("db.client.connection.max{db.client.connection.pool.name=a}", 20.0, None),
                ("db.client.connection.pending_requests{db.client.connection.pool.name=a}", 0.0, None),
                ("db.client.connection.count{db.client.connection.state=used,db.client.connection.pool.name=b}", 10.0, None),
                ("db.client.connection.max{db.client.connection.pool.name=b}", 10.0, None),
                ("db.client.connection.pending_requests{db.client.connection.pool.name=b}", 4.0, None),
            ],
            expected: &["db.client.connection.count{db.client.connection.state=used,db.client.connection.pool.name=b}/max"],
        },
        Case {
            name: "a lower threshold",
            config: DetectConfig {
                pool_usage_ratio: 0.5,
                ..defaults()
            },
            metrics: vec![(USED, 10.0, None), (MAX, 20.0, None), (PENDING, 5.0, None)],
            expected: &["db.client.connection.count{db.client.connection.state=used}/max"],
        },
    ]);
}

#[test]
fn connection_pool_summary() {
    let windows = [value(19.0), value(20.0), value(3.0)];
    let found = service_rules(
        &DetectConfig::default(),
        "checkout",
        &[
            ("db.client.connection.count{db.client.connection.state=used,db.client.connection.pool.name=orders}", &windows[0], None),
            ("db.client.connection.max{db.client.connection.pool.name=orders}", &windows[1], None),
            ("db.client.connection.pending_requests{db.client.connection.pool.name=orders}", &windows[2], None),
        ],
    );
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].summary,
        "connection pool orders 95% used (19 of 20 connections), 3 requests waiting"
    );
    assert_eq!((found[0].current, found[0].baseline), (95.0, 90.0));
}

#[test]
fn cpu_throttling() {
    let defaults = DetectConfig::default;
    check(vec![
        Case {
            name: "docker stats: 40 of 100 periods",
            config: defaults(),
            metrics: vec![
                ("container.cpu.throttling_data.throttled_periods", 40.0, None),
                ("container.cpu.throttling_data.periods", 100.0, None),
            ],
            expected: &["container.cpu.throttling_data.throttled_periods/container.cpu.throttling_data.periods"],
        },
        Case {
            name: "docker stats: 10 of 100 periods",
            config: defaults(),
            metrics: vec![
                ("container.cpu.throttling_data.throttled_periods", 10.0, None),
                ("container.cpu.throttling_data.periods", 100.0, None),
            ],
            expected: &[],
        },
        Case {
            name: "cAdvisor: exactly 25%",
            config: defaults(),
            metrics: vec![
                ("container_cpu_cfs_throttled_periods_total{container.name=api}", 25.0, None),
                ("container_cpu_cfs_periods_total{container.name=api}", 100.0, None),
            ],
            expected: &["container_cpu_cfs_throttled_periods_total{container.name=api}/container_cpu_cfs_periods_total"],
        },
        Case {
            name: "cAdvisor: paired by container",
            config: defaults(),
            metrics: vec![
                ("container_cpu_cfs_throttled_periods_total{container.name=api}", 5.0, None),
                ("container_cpu_cfs_periods_total{container.name=api}", 100.0, None),
                ("container_cpu_cfs_throttled_periods_total{container.name=worker}", 50.0, None),
                ("container_cpu_cfs_periods_total{container.name=worker}", 100.0, None),
            ],
            expected: &["container_cpu_cfs_throttled_periods_total{container.name=worker}/container_cpu_cfs_periods_total"],
        },
        Case {
            name: "too few periods to judge",
            config: defaults(),
            metrics: vec![
                ("container.cpu.throttling_data.throttled_periods", 4.0, None),
                ("container.cpu.throttling_data.periods", 5.0, None),
            ],
            expected: &[],
        },
        Case {
            name: "no periods at all",
            config: defaults(),
            metrics: vec![
                ("container.cpu.throttling_data.throttled_periods", 0.0, None),
                ("container.cpu.throttling_data.periods", 0.0, None),
            ],
            expected: &[],
        },
        Case {
            name: "throttled without periods",
            config: defaults(),
            metrics: vec![("container.cpu.throttling_data.throttled_periods", 50.0, None)],
            expected: &[],
        },
    ]);
}

#[test]
fn cpu_throttling_summary() {
    let windows = [value(40.0), value(100.0)];
    let found = service_rules(
        &DetectConfig::default(),
        "checkout",
        &[
            (
                "container_cpu_cfs_throttled_periods_total{container.name=api}",
                &windows[0],
                None,
            ),
            (
                "container_cpu_cfs_periods_total{container.name=api}",
                &windows[1],
                None,
            ),
        ],
    );
    assert_eq!(
        found[0].summary,
        "CPU of container api throttled in 40% of periods (40 of 100)"
    );
}

#[test]
fn memory_trend_to_limit() {
    let defaults = DetectConfig::default;
    let configured = || DetectConfig {
        limits: [("process.memory.usage".to_owned(), 1.6e9)]
            .into_iter()
            .collect(),
        ..defaults()
    };
    check(vec![
        Case {
            name: "limit metric 500 MB away at 100 kB/s: 83 minutes",
            config: defaults(),
            metrics: vec![
                (
                    "container.memory.working_set{k8s.container.name=app}",
                    1.5e9,
                    Some(rising(1.5e9)),
                ),
                (
                    "k8s.container.memory.limit{k8s.container.name=app}",
                    2e9,
                    None,
                ),
            ],
            expected: &["container.memory.working_set{k8s.container.name=app}"],
        },
        Case {
            name: "limit far away: 2.7 days",
            config: defaults(),
            metrics: vec![
                ("container.memory.usage", 1.5e9, Some(rising(1.5e9))),
                ("k8s.container.memory.limit", 25e9, None),
            ],
            expected: &[],
        },
        Case {
            name: "paired with the limit of its own container",
            config: defaults(),
            metrics: vec![
                (
                    "container.memory.usage{k8s.container.name=app}",
                    1.5e9,
                    Some(rising(1.5e9)),
                ),
                (
                    "k8s.container.memory.limit{k8s.container.name=sidecar}",
                    1.6e9,
                    None,
                ),
                (
                    "k8s.container.memory.limit{k8s.container.name=app}",
                    64e9,
                    None,
                ),
            ],
            expected: &[],
        },
        Case {
            name: "no limit anywhere",
            config: defaults(),
            metrics: vec![("process.memory.usage", 1.5e9, Some(rising(1.5e9)))],
            expected: &[],
        },
        Case {
            name: "configured limit",
            config: configured(),
            metrics: vec![("process.memory.usage", 1.5e9, Some(rising(1.5e9)))],
            expected: &["process.memory.usage"],
        },
        Case {
            name: "already over the limit",
            config: configured(),
            metrics: vec![("process.memory.usage", 1.7e9, Some(rising(1.7e9)))],
            expected: &["process.memory.usage"],
        },
        Case {
            name: "poor fit",
            config: configured(),
            metrics: vec![(
                "process.memory.usage",
                1.5e9,
                Some(Trend {
                    r2: 0.5,
                    ..rising(1.5e9)
                }),
            )],
            expected: &[],
        },
        Case {
            name: "too short a rise",
            config: configured(),
            metrics: vec![(
                "process.memory.usage",
                1.5e9,
                Some(Trend {
                    duration_secs: 600.0,
                    ..rising(1.5e9)
                }),
            )],
            expected: &[],
        },
        Case {
            name: "falling",
            config: configured(),
            metrics: vec![(
                "process.memory.usage",
                1.5e9,
                Some(Trend {
                    slope_per_sec: -1e5,
                    ..rising(1.5e9)
                }),
            )],
            expected: &[],
        },
        Case {
            name: "no trend known",
            config: configured(),
            metrics: vec![("process.memory.usage", 1.5e9, None)],
            expected: &[],
        },
        Case {
            name: "not a memory metric",
            config: configured(),
            metrics: vec![("jvm.thread.count", 1.5e9, Some(rising(1.5e9)))],
            expected: &[],
        },
    ]);
}

#[test]
fn memory_projection() {
    let windows = [value(1.5e9), value(2e9)];
    let trend = rising(1.5e9);
    let found = service_rules(
        &DetectConfig::default(),
        "checkout",
        &[
            (
                "container.memory.working_set{k8s.container.name=app}",
                &windows[0],
                Some(&trend),
            ),
            (
                "k8s.container.memory.limit{k8s.container.name=app}",
                &windows[1],
                None,
            ),
        ],
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].time_to_limit_secs, Some(5000.0));
    assert_eq!(found[0].baseline, 2e9);
    assert_eq!(
        found[0].summary,
        "container.memory.working_set{k8s.container.name=app} 1.5G rising 360M/h, \
         reaches its 2G limit in 83 min"
    );
}

#[test]
fn names_split_into_base_and_attributes() {
    let stats = WindowStats::default();
    let series = Series::new("a.b{k=v,x=y}", &stats, None);
    assert_eq!(series.base, "a.b");
    assert_eq!(series.attributes, vec![("k", "v"), ("x", "y")]);
    assert_eq!(series.attribute("x"), Some("y"));
    let plain = Series::new("a.b", &stats, None);
    assert!(plain.attributes.is_empty());
    // Broken suffixes do not panic.
    let broken = Series::new("a.b{k", &stats, None);
    assert_eq!(broken.base, "a.b");
    assert!(broken.attributes.is_empty());
    // No points: no value.
    assert_eq!(plain.level(), None);
    assert_eq!(plain.delta(), None);
}
