use super::*;
use crate::store::window::ValueStats;
use proptest::prelude::*;

/// Window length of every test, seconds.
const WINDOW: f64 = 10.0;
/// A UTC midnight (2023-11-14), so window `i` of a day is at `10 * i` s.
const MIDNIGHT: u64 = 1_699_920_000;
/// Windows in a day.
const DAY: u64 = 8_640;
/// Baseline windows fed before the window under test: the 30 of warm-up and
/// 60 more.
const BASELINE: u64 = 90;

/// Start of window `index` (counted from `MIDNIGHT`), Unix nanoseconds.
fn start(index: u64) -> u64 {
    (MIDNIGHT + index * WINDOW as u64) * 1_000_000_000
}

/// A small deterministic generator (SplitMix64), so the noise in these tests
/// is the same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Poisson: exact (Knuth) for small means, normal approximation above.
    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut product = 1.0;
            let mut count = 0;
            loop {
                product *= self.uniform();
                if product < limit {
                    return count;
                }
                count += 1;
            }
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }

    /// Binomial by summing Bernoulli trials.
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.uniform() < p).count() as u64
    }

    /// `value` with log-normal jitter of relative size `sigma`.
    fn jitter(&mut self, value: f64, sigma: f64) -> f64 {
        value * (sigma * self.normal()).exp()
    }
}

fn operation() -> SeriesInfo {
    SeriesInfo {
        kind: SeriesKind::Operation,
        name: "GET /checkout".to_owned(),
    }
}

fn metric(name: &str) -> SeriesInfo {
    SeriesInfo {
        kind: SeriesKind::Metric,
        name: name.to_owned(),
    }
}

fn log(name: &str) -> SeriesInfo {
    SeriesInfo {
        kind: SeriesKind::Log,
        name: name.to_owned(),
    }
}

/// A span window.
fn spans(requests: u64, errors: u64, p50: f64, p95: f64, p99: f64) -> WindowStats {
    let latency = requests > 0;
    WindowStats {
        requests,
        errors,
        p50: latency.then_some(p50),
        p95: latency.then_some(p95),
        p99: latency.then_some(p99),
        max: latency.then_some(p99 * 1.2),
        values: ValueStats::default(),
        subs: None,
    }
}

/// A gauge window with one point.
fn gauge(value: f64) -> WindowStats {
    let mut values = ValueStats::default();
    values.add(value, 1);
    WindowStats {
        values,
        ..WindowStats::default()
    }
}

/// Span traffic with Poisson counts, binomial errors and 5% log-normal
/// latency jitter around the given quantiles.
fn noisy_spans(rng: &mut Rng, lambda: f64, error_rate: f64, quantiles: [f64; 3]) -> WindowStats {
    let requests = rng.poisson(lambda);
    let errors = rng.binomial(requests, error_rate);
    spans(
        requests,
        errors,
        rng.jitter(quantiles[0], 0.05),
        rng.jitter(quantiles[1], 0.05),
        rng.jitter(quantiles[2], 0.05),
    )
}

/// Feeds windows `from..to` made by `make`, returning the anomalies with
/// their window index.
fn feed(
    detector: &mut SeriesDetector,
    config: &DetectConfig,
    from: u64,
    to: u64,
    mut make: impl FnMut(u64) -> WindowStats,
) -> Vec<(u64, Anomaly)> {
    let mut found = Vec::new();
    for index in from..to {
        let stats = make(index);
        for anomaly in detector.observe(config, start(index), WINDOW, &stats) {
            found.push((index, anomaly));
        }
    }
    found
}

/// What a table case expects from the window under test.
type Expected = &'static [(AnomalyKind, bool)];

/// One detector case: a series, how its baseline windows look, the window
/// judged after them, and the anomalies expected (kind, severe).
struct Case {
    name: &'static str,
    info: SeriesInfo,
    config: DetectConfig,
    baseline: fn(&mut Rng) -> WindowStats,
    window: WindowStats,
    expected: Expected,
}

/// Runs `case`, returning the anomalies of the window under test after
/// checking the baseline itself raised none.
fn run(case: &Case) -> Vec<Anomaly> {
    let mut rng = Rng(7);
    let mut detector = SeriesDetector::new(case.info.clone());
    let during = feed(&mut detector, &case.config, 0, BASELINE, |_| {
        (case.baseline)(&mut rng)
    });
    assert!(
        during.is_empty(),
        "{}: baseline raised {during:#?}",
        case.name
    );
    detector.observe(&case.config, start(BASELINE), WINDOW, &case.window)
}

fn check(cases: &[Case]) {
    for case in cases {
        let found = run(case);
        let kinds: Vec<(AnomalyKind, bool)> = found
            .iter()
            .map(|anomaly| (anomaly.kind, anomaly.severe))
            .collect();
        assert_eq!(kinds, case.expected, "{}: {found:#?}", case.name);
        for anomaly in &found {
            let expected_severity = if anomaly.severe {
                Severity::Critical
            } else {
                Severity::Warning
            };
            assert_eq!(anomaly.severity, expected_severity, "{}", case.name);
            assert!(!anomaly.summary.is_empty(), "{}", case.name);
        }
    }
}

// Baselines used by the tables.

fn busy(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 200.0, 0.003, [40.0, 95.0, 150.0])
}

fn fast_endpoint(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 200.0, 0.0, [4.0, 10.0, 15.0])
}

fn quiet(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 25.0, 0.0, [40.0, 95.0, 150.0])
}

fn fractional_errors(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 320.0, 0.003, [40.0, 95.0, 150.0])
}

fn never_failing_trickle(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 3.0, 0.0, [40.0, 95.0, 150.0])
}

fn never_failing(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 100.0, 0.0, [40.0, 95.0, 150.0])
}

fn huge(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 10_000.0, 0.001, [40.0, 95.0, 150.0])
}

fn idle(rng: &mut Rng) -> WindowStats {
    noisy_spans(rng, 0.1, 0.0, [40.0, 95.0, 150.0])
}

fn log_records(rng: &mut Rng) -> WindowStats {
    let records = rng.poisson(200.0);
    WindowStats {
        requests: records,
        errors: rng.binomial(records, 0.01),
        ..WindowStats::default()
    }
}

fn memory(rng: &mut Rng) -> WindowStats {
    gauge(rng.jitter(1e9, 0.01))
}

fn pool_used(rng: &mut Rng) -> WindowStats {
    gauge((10.0 + 2.0 * rng.normal()).round().max(0.0))
}

fn request_duration(rng: &mut Rng) -> WindowStats {
    let mut stats = noisy_spans(rng, 200.0, 0.0, [0.040, 0.095, 0.150]);
    stats.errors = 0;
    stats
}

fn lenient_errors() -> DetectConfig {
    DetectConfig {
        error_min_requests: 1,
        ..DetectConfig::default()
    }
}

#[test]
fn latency_table() {
    let defaults = DetectConfig::default;
    check(&[
        Case {
            name: "steady",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(205, 1, 41.0, 97.0, 148.0),
            expected: &[],
        },
        Case {
            name: "p95 9x with p50 3x: the whole distribution moved, severe",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(312, 0, 120.0, 840.0, 900.0),
            expected: &[(AnomalyKind::Latency, true)],
        },
        Case {
            name: "p95 9x alone: a handful of slow requests, a warning",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(312, 0, 45.0, 840.0, 900.0),
            expected: &[(AnomalyKind::Latency, false)],
        },
        Case {
            name: "p95 1.7x is a warning",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(200, 0, 42.0, 160.0, 170.0),
            expected: &[(AnomalyKind::Latency, false)],
        },
        Case {
            name: "2.5x but only 15 ms: relative without absolute",
            info: operation(),
            config: defaults(),
            baseline: fast_endpoint,
            window: spans(200, 0, 5.0, 25.0, 20.0),
            expected: &[],
        },
        Case {
            name: "too few requests to judge",
            info: operation(),
            config: defaults(),
            baseline: quiet,
            window: spans(15, 0, 400.0, 840.0, 900.0),
            expected: &[],
        },
        Case {
            name: "tail only: p99 4x",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(200, 0, 40.0, 96.0, 600.0),
            expected: &[(AnomalyKind::Latency, false)],
        },
        Case {
            name: "edges are judged like operations",
            info: SeriesInfo {
                kind: SeriesKind::Edge,
                name: "payment".to_owned(),
            },
            config: defaults(),
            baseline: busy,
            window: spans(200, 0, 42.0, 160.0, 170.0),
            expected: &[(AnomalyKind::Latency, false)],
        },
    ]);
}

#[test]
fn latency_reports_the_headline_quantile() {
    let case = Case {
        name: "p95 9x",
        info: operation(),
        config: DetectConfig::default(),
        baseline: busy,
        window: spans(312, 0, 45.0, 840.0, 900.0),
        expected: &[],
    };
    let found = run(&case);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].measure, "p95");
    assert_eq!(found[0].unit, "ms");
    assert_eq!(found[0].current, 840.0);
    assert!((found[0].baseline - 95.0).abs() < 3.0, "{found:#?}");
    assert!(
        found[0].summary.starts_with("p95 840 ms vs 9")
            && found[0].summary.ends_with(" ms baseline, 312 requests"),
        "{}",
        found[0].summary
    );

    let case = Case {
        window: spans(200, 0, 40.0, 96.0, 600.0),
        ..case
    };
    assert_eq!(run(&case)[0].measure, "p99");
}

#[test]
fn error_rate_table() {
    let defaults = DetectConfig::default;
    check(&[
        Case {
            name: "steady 0.3%",
            info: operation(),
            config: defaults(),
            baseline: fractional_errors,
            window: spans(320, 2, 40.0, 95.0, 150.0),
            expected: &[],
        },
        Case {
            name: "12.5% vs 0.3%",
            info: operation(),
            config: defaults(),
            baseline: fractional_errors,
            window: spans(320, 40, 40.0, 95.0, 150.0),
            expected: &[(AnomalyKind::ErrorRate, true)],
        },
        Case {
            name: "never failed: 1 of 3 is not an incident",
            info: operation(),
            config: defaults(),
            baseline: never_failing_trickle,
            window: spans(3, 1, 40.0, 95.0, 150.0),
            expected: &[],
        },
        Case {
            name: "never failed: 1 of 3, even without the request minimum",
            info: operation(),
            config: lenient_errors(),
            baseline: never_failing_trickle,
            window: spans(3, 1, 40.0, 95.0, 150.0),
            expected: &[],
        },
        Case {
            name: "never failed: 3 of 4 is not an incident",
            info: operation(),
            config: defaults(),
            baseline: never_failing_trickle,
            window: spans(4, 3, 40.0, 95.0, 150.0),
            expected: &[],
        },
        Case {
            name: "never failed: 30 of 100 is",
            info: operation(),
            config: defaults(),
            baseline: never_failing,
            window: spans(100, 30, 40.0, 95.0, 150.0),
            expected: &[(AnomalyKind::ErrorRate, true)],
        },
        Case {
            name: "never failed: 4 of 100 is a warning",
            info: operation(),
            config: defaults(),
            baseline: never_failing,
            window: spans(100, 4, 40.0, 95.0, 150.0),
            expected: &[(AnomalyKind::ErrorRate, false)],
        },
        Case {
            name: "significant but under 2 points",
            info: operation(),
            config: defaults(),
            baseline: huge,
            window: spans(10_000, 150, 40.0, 95.0, 150.0),
            expected: &[],
        },
    ]);
}

#[test]
fn error_rate_summary() {
    let found = run(&Case {
        name: "12.5% vs 0.3%",
        info: operation(),
        config: DetectConfig::default(),
        baseline: fractional_errors,
        window: spans(320, 40, 40.0, 95.0, 150.0),
        expected: &[],
    });
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].measure, "error rate");
    assert_eq!(found[0].current, 12.5);
    assert!(
        found[0].summary.starts_with("error rate 12.5% vs 0.")
            && found[0].summary.ends_with("% baseline, 40 of 320 requests"),
        "{}",
        found[0].summary
    );
}

#[test]
fn traffic_table() {
    let defaults = DetectConfig::default;
    check(&[
        Case {
            name: "drop to zero from 20/s",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(0, 0, 0.0, 0.0, 0.0),
            expected: &[(AnomalyKind::TrafficDrop, true)],
        },
        Case {
            name: "drop to a third",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(70, 0, 40.0, 95.0, 150.0),
            expected: &[(AnomalyKind::TrafficDrop, false)],
        },
        Case {
            name: "idle 0.01/s going quiet",
            info: operation(),
            config: defaults(),
            baseline: idle,
            window: spans(0, 0, 0.0, 0.0, 0.0),
            expected: &[],
        },
        Case {
            name: "idle 0.01/s with a burst",
            info: operation(),
            config: defaults(),
            baseline: idle,
            window: spans(5, 0, 40.0, 95.0, 150.0),
            expected: &[],
        },
        Case {
            name: "spike 3x",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(600, 2, 40.0, 95.0, 150.0),
            expected: &[(AnomalyKind::TrafficSpike, false)],
        },
        Case {
            name: "spike 6x is severe",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(1_200, 4, 40.0, 95.0, 150.0),
            expected: &[(AnomalyKind::TrafficSpike, true)],
        },
        Case {
            name: "wobble to 70%",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(140, 0, 40.0, 95.0, 150.0),
            expected: &[],
        },
        Case {
            name: "wobble to 150%",
            info: operation(),
            config: defaults(),
            baseline: busy,
            window: spans(300, 1, 40.0, 95.0, 150.0),
            expected: &[],
        },
    ]);
}

#[test]
fn traffic_summary() {
    let found = run(&Case {
        name: "drop to zero",
        info: operation(),
        config: DetectConfig::default(),
        baseline: busy,
        window: spans(0, 0, 0.0, 0.0, 0.0),
        expected: &[],
    });
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].summary, "requests 0/s vs 20/s baseline");
    assert_eq!(found[0].unit, "req/s");
}

#[test]
fn log_table() {
    let defaults = DetectConfig::default;
    check(&[
        Case {
            name: "steady error logs",
            info: log("all"),
            config: defaults(),
            baseline: log_records,
            window: WindowStats {
                requests: 210,
                errors: 3,
                ..WindowStats::default()
            },
            expected: &[],
        },
        Case {
            name: "error logs 1% -> 30%",
            info: log("all"),
            config: defaults(),
            baseline: log_records,
            window: WindowStats {
                requests: 200,
                errors: 60,
                ..WindowStats::default()
            },
            expected: &[(AnomalyKind::ErrorLogs, true)],
        },
        Case {
            name: "log records dropping are not traffic",
            info: log("all"),
            config: defaults(),
            baseline: log_records,
            window: WindowStats::default(),
            expected: &[],
        },
        Case {
            name: "severity classes other than `all` are ignored",
            info: log("ERROR"),
            config: defaults(),
            baseline: log_records,
            window: WindowStats {
                requests: 200,
                errors: 60,
                ..WindowStats::default()
            },
            expected: &[],
        },
    ]);
}

#[test]
fn metric_table() {
    let defaults = DetectConfig::default;
    check(&[
        Case {
            name: "steady memory",
            info: metric("process.memory.usage"),
            config: defaults(),
            baseline: memory,
            window: gauge(1.01e9),
            expected: &[],
        },
        Case {
            name: "memory doubles",
            info: metric("process.memory.usage"),
            config: defaults(),
            baseline: memory,
            window: gauge(2e9),
            expected: &[(AnomalyKind::LevelShift, false)],
        },
        Case {
            name: "pool usage 10 -> 25",
            info: metric("db.client.connection.count{db.client.connection.state=used}"),
            config: defaults(),
            baseline: pool_used,
            window: gauge(25.0),
            expected: &[(AnomalyKind::LevelShift, false)],
        },
        Case {
            name: "pool usage 10 -> 14: within noise and under 50%",
            info: metric("db.client.connection.count{db.client.connection.state=used}"),
            config: defaults(),
            baseline: pool_used,
            window: gauge(14.0),
            expected: &[],
        },
        Case {
            name: "memory drops to a third (a restart)",
            info: metric("process.memory.usage"),
            config: defaults(),
            baseline: memory,
            window: gauge(3e8),
            expected: &[(AnomalyKind::LevelShift, false)],
        },
        Case {
            name: "unwatched metric",
            info: metric("shop.cart.items"),
            config: defaults(),
            baseline: pool_used,
            window: gauge(100.0),
            expected: &[],
        },
        Case {
            name: "request duration histogram: p95 9x, p50 3x",
            info: metric("http.server.request.duration{http.route=/cart}"),
            config: defaults(),
            baseline: request_duration,
            window: spans(300, 0, 0.12, 0.84, 0.9),
            expected: &[(AnomalyKind::Latency, true)],
        },
        Case {
            name: "request duration histogram: p95 alone jumps (a bucket flip)",
            info: metric("http.server.request.duration{http.route=/cart}"),
            config: defaults(),
            baseline: request_duration,
            window: spans(300, 0, 0.042, 0.25, 0.3),
            expected: &[],
        },
        Case {
            name: "request duration histogram: p99 alone jumps",
            info: metric("http.server.request.duration{http.route=/cart}"),
            config: defaults(),
            baseline: request_duration,
            window: spans(300, 0, 0.04, 0.1, 0.6),
            expected: &[],
        },
        Case {
            name: "pool use time (seconds) 3 ms -> 8 ms: under 20 ms",
            info: metric("db.client.connection.use_time{db.client.connection.pool.name=db}"),
            config: defaults(),
            baseline: |rng| {
                let mut stats = noisy_spans(rng, 40.0, 0.0, [0.002, 0.003, 0.004]);
                stats.errors = 0;
                stats
            },
            window: spans(40, 0, 0.005, 0.008, 0.01),
            expected: &[],
        },
        Case {
            name: "request duration histogram: 2x but under 20 ms",
            info: metric("http.server.request.duration"),
            config: defaults(),
            baseline: |rng| {
                let mut stats = noisy_spans(rng, 200.0, 0.0, [0.002, 0.005, 0.008]);
                stats.errors = 0;
                stats
            },
            window: spans(200, 0, 0.004, 0.010, 0.016),
            expected: &[],
        },
    ]);
}

#[test]
fn metric_summaries() {
    let found = run(&Case {
        name: "pool",
        info: metric("db.client.connection.count{db.client.connection.state=used}"),
        config: DetectConfig::default(),
        baseline: pool_used,
        window: gauge(25.0),
        expected: &[],
    });
    assert_eq!(
        found[0].summary,
        "db.client.connection.count{db.client.connection.state=used} 25 vs 10 baseline"
    );
    let found = run(&Case {
        name: "histogram",
        info: metric("http.server.request.duration{http.route=/cart}"),
        config: DetectConfig::default(),
        baseline: request_duration,
        window: spans(300, 0, 0.12, 0.84, 0.9),
        expected: &[],
    });
    assert_eq!(found[0].measure, "http.server.request.duration p95");
    assert!(
        found[0]
            .summary
            .starts_with("http.server.request.duration p95 840 ms vs 9"),
        "{}",
        found[0].summary
    );
    assert!(found[0].summary.ends_with("300 observations"));
}

#[test]
fn warm_up_is_reported_and_silent() {
    let config = DetectConfig::default();
    let mut detector = SeriesDetector::new(operation());
    assert_eq!(
        detector.readiness(&config),
        Readiness::WarmingUp { have: 0, need: 30 }
    );
    let mut rng = Rng(1);
    // Outrageous windows during warm-up raise nothing.
    let found = feed(&mut detector, &config, 0, 29, |index| match index {
        12 => spans(0, 0, 0.0, 0.0, 0.0),
        20 => spans(200, 150, 4000.0, 9000.0, 9000.0),
        _ => busy(&mut rng),
    });
    assert!(found.is_empty(), "{found:#?}");
    assert_eq!(
        detector.readiness(&config),
        Readiness::WarmingUp { have: 29, need: 30 }
    );
    feed(&mut detector, &config, 29, 30, |_| busy(&mut rng));
    assert_eq!(detector.readiness(&config), Readiness::Ready);
    let found = detector.observe(&config, start(30), WINDOW, &spans(0, 0, 0.0, 0.0, 0.0));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].kind, AnomalyKind::TrafficDrop);
}

#[test]
fn a_p95_that_swings_between_two_levels_is_not_an_anomaly() {
    // A cache whose miss rate sits near 5%: in about 45% of windows the p95
    // is a miss (~60 ms), otherwise a hit (~5 ms). Median and MAD call every
    // miss window an outlier; the range rule does not.
    let config = DetectConfig::default();
    let mut rng = Rng(41);
    let mut detector = SeriesDetector::new(operation());
    let swinging = |rng: &mut Rng| {
        let requests = rng.poisson(80.0);
        let p95 = if rng.uniform() < 0.45 {
            rng.jitter(60.0, 0.4)
        } else {
            rng.jitter(5.0, 0.1)
        };
        spans(
            requests,
            0,
            rng.jitter(1.6, 0.05),
            p95,
            rng.jitter(150.0, 0.2),
        )
    };
    let found = feed(&mut detector, &config, 0, 2_000, |_| swinging(&mut rng));
    let mut windows: Vec<u64> = found.iter().map(|(index, _)| *index).collect();
    windows.dedup();
    // About one window in 360 beats the hour's maximum by chance; what must
    // not happen is two in a row, which would open an incident.
    assert!(windows.len() <= 12, "{found:#?}");
    assert!(
        windows.windows(2).all(|pair| pair[1] > pair[0] + 1),
        "{found:#?}"
    );
    // Nor is one such window severe, which would open an incident at once:
    // the upper level is always "3x the median".
    assert!(
        found.iter().all(|(_, anomaly)| !anomaly.severe),
        "{found:#?}"
    );
    // A real slowdown still stands out.
    let found = detector.observe(
        &config,
        start(2_000),
        WINDOW,
        &spans(80, 0, 10.0, 400.0, 900.0),
    );
    assert!(
        found
            .iter()
            .any(|anomaly| anomaly.kind == AnomalyKind::Latency),
        "{found:#?}"
    );
}

#[test]
fn small_flickering_counts_are_not_level_shifts() {
    // Connections in use of a quiet pool: mostly 0, sometimes 1 or 2, and
    // averaged over the window's points.
    let config = DetectConfig::default();
    let mut rng = Rng(43);
    let mut detector = SeriesDetector::new(metric(
        "db.client.connection.count{db.client.connection.state=used}",
    ));
    let found = feed(&mut detector, &config, 0, 2_000, |_| {
        let mut values = ValueStats::default();
        for time in 0..2 {
            let used = match rng.uniform() {
                roll if roll < 0.8 => 0.0,
                roll if roll < 0.97 => 1.0,
                _ => 2.0,
            };
            values.add(used, time);
        }
        WindowStats {
            values,
            ..WindowStats::default()
        }
    });
    assert!(found.len() <= 10, "{found:#?}");
    let found = detector.observe(&config, start(2_000), WINDOW, &gauge(8.0));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].kind, AnomalyKind::LevelShift);
}

#[test]
fn a_distribution_sum_is_not_a_level() {
    // A rare route's request duration: most windows have no observations
    // (count 0, sum 0), some have one. The sum is not a level, so the first
    // request is not a jump from zero.
    let config = DetectConfig::default();
    let mut rng = Rng(47);
    let mut detector = SeriesDetector::new(metric(
        "http.server.request.duration{http.route=/users/login,http.response.status_code=401}",
    ));
    let found = feed(&mut detector, &config, 0, 500, |index| {
        let mut values = ValueStats::default();
        if index > 100 && rng.uniform() < 0.2 {
            let seconds = rng.jitter(0.03, 0.3);
            values.add(seconds, 1);
            WindowStats {
                requests: 1,
                p50: Some(seconds),
                p95: Some(seconds),
                p99: Some(seconds),
                max: Some(seconds),
                values,
                ..WindowStats::default()
            }
        } else {
            values.add(0.0, 1);
            WindowStats {
                values,
                ..WindowStats::default()
            }
        }
    });
    assert!(found.is_empty(), "{found:#?}");
    assert!(detector.distribution);
    assert!(detector.history.iter().all(|window| window.level.is_nan()));
}

#[test]
fn low_traffic_windows_do_not_teach_latency() {
    // Traffic is not judged here, so the trickle windows are not flagged as
    // drops (which would keep them out of every baseline anyway).
    let config = DetectConfig {
        traffic_min_rate: f64::INFINITY,
        ..DetectConfig::default()
    };
    let mut detector = SeriesDetector::new(operation());
    let mut rng = Rng(3);
    // 30 busy windows at 95 ms, then 60 trickling ones (5 requests) at 1 s:
    // the slow trickle must not become the latency baseline.
    let found = feed(&mut detector, &config, 0, 90, |index| {
        if index < 30 {
            busy(&mut rng)
        } else {
            spans(5, 0, 900.0, 1000.0, 1000.0)
        }
    });
    assert!(
        found
            .iter()
            .all(|(_, anomaly)| anomaly.kind != AnomalyKind::Latency),
        "{found:#?}"
    );
    let found = detector.observe(
        &config,
        start(90),
        WINDOW,
        &spans(200, 0, 900.0, 1000.0, 1000.0),
    );
    assert!(
        found
            .iter()
            .any(|anomaly| anomaly.kind == AnomalyKind::Latency),
        "{found:#?}"
    );
}

#[test]
fn an_ongoing_anomaly_does_not_poison_its_baseline_but_a_permanent_change_is_learned() {
    let config = DetectConfig::default();
    let mut detector = SeriesDetector::new(operation());
    let mut rng = Rng(5);
    let normal = feed(&mut detector, &config, 0, 90, |_| busy(&mut rng));
    assert!(normal.is_empty(), "{normal:#?}");
    // From window 90 on, p95 is 2.5x for good (a slower new version).
    let found = feed(&mut detector, &config, 90, 90 + 360, |_| {
        noisy_spans(&mut rng, 200.0, 0.003, [40.0, 240.0, 300.0])
    });
    let latency: Vec<u64> = found
        .iter()
        .filter(|(_, anomaly)| anomaly.kind == AnomalyKind::Latency)
        .map(|(index, _)| *index)
        .collect();
    // Every window of the first 29 minutes is still anomalous...
    for index in 90..90 + 174 {
        assert!(latency.contains(&index), "window {index} not anomalous");
    }
    // ...and after 30 minutes the new level is the baseline.
    let relearned = 90 + 180;
    assert!(
        latency.iter().all(|index| *index < relearned),
        "still alerting after re-learning: {:?}",
        latency
            .iter()
            .filter(|index| **index >= relearned)
            .collect::<Vec<_>>()
    );
    // The baseline really moved: another 2.5x rise, to 600 ms, is judged
    // against 240 ms (a warning), not against the old 95 ms (6x, severe).
    let again = detector.observe(
        &config,
        start(450),
        WINDOW,
        &spans(200, 0, 40.0, 600.0, 700.0),
    );
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].kind, AnomalyKind::Latency);
    assert!(!again[0].severe, "{again:#?}");
    assert!((again[0].baseline - 240.0).abs() < 10.0, "{again:#?}");
}

#[test]
fn a_daily_peak_is_not_an_incident_once_a_day_is_known() {
    let config = DetectConfig::default();
    // 10/s all day, 40/s with p95 tripled from 12:00 to 12:20.
    let peak = |index: u64| {
        let second_of_day = (index % DAY) * 10;
        (12 * 3600..12 * 3600 + 1200).contains(&second_of_day)
    };
    let traffic = |rng: &mut Rng, index: u64| {
        if peak(index) {
            noisy_spans(rng, 400.0, 0.003, [60.0, 300.0, 450.0])
        } else {
            noisy_spans(rng, 100.0, 0.003, [40.0, 100.0, 150.0])
        }
    };

    // Without history: the first day's peak is an anomaly.
    let mut rng = Rng(11);
    let mut detector = SeriesDetector::new(operation());
    let noon = 12 * 360;
    let first_day = feed(&mut detector, &config, 0, DAY, |index| {
        traffic(&mut rng, index)
    });
    let in_peak: Vec<&Anomaly> = first_day
        .iter()
        .filter(|(index, _)| peak(*index))
        .map(|(_, anomaly)| anomaly)
        .collect();
    assert!(
        in_peak
            .iter()
            .any(|anomaly| anomaly.kind == AnomalyKind::TrafficSpike)
            && in_peak
                .iter()
                .any(|anomaly| anomaly.kind == AnomalyKind::Latency),
        "first peak should alert: {in_peak:#?}"
    );
    assert!(
        first_day.iter().all(|(index, _)| peak(*index)),
        "only the peak alerts on day one: {:#?}",
        first_day
            .iter()
            .filter(|(index, _)| !peak(*index))
            .collect::<Vec<_>>()
    );

    // With a day of history: the same peak the next day is not.
    let second_day = feed(&mut detector, &config, DAY, DAY + noon + 360, |index| {
        traffic(&mut rng, index)
    });
    assert!(second_day.is_empty(), "{second_day:#?}");

    // The same detector still sees a real incident at another time of day
    // (at 13:00 the last hour holds the 300 ms peak, so the rise must clear
    // that level by 1.5x too).
    let found = detector.observe(
        &config,
        start(DAY + noon + 360),
        WINDOW,
        &spans(100, 0, 40.0, 600.0, 700.0),
    );
    assert!(
        found
            .iter()
            .any(|anomaly| anomaly.kind == AnomalyKind::Latency),
        "{found:#?}"
    );

    // And a fresh detector, fed the two hours before the peak, alerts on it.
    let mut fresh = SeriesDetector::new(operation());
    let found = feed(
        &mut fresh,
        &config,
        DAY + noon - 720,
        DAY + noon + 12,
        |index| traffic(&mut rng, index),
    );
    assert!(
        found
            .iter()
            .any(|(index, anomaly)| peak(*index) && anomaly.kind == AnomalyKind::TrafficSpike),
        "{found:#?}"
    );
}

#[test]
fn seasonality_can_be_turned_off() {
    let config = DetectConfig {
        seasonality: false,
        // A shorter history only to keep this day-long test quick.
        history_windows: 120,
        ..DetectConfig::default()
    };
    let peak = |index: u64| (12 * 360..12 * 360 + 120).contains(&(index % DAY));
    let mut rng = Rng(13);
    let mut detector = SeriesDetector::new(operation());
    let found = feed(&mut detector, &config, 0, DAY + 12 * 360 + 6, |index| {
        let lambda = if peak(index) { 400.0 } else { 100.0 };
        noisy_spans(&mut rng, lambda, 0.003, [40.0, 100.0, 150.0])
    });
    assert!(
        found
            .iter()
            .any(|(index, anomaly)| *index > DAY && anomaly.kind == AnomalyKind::TrafficSpike),
        "the second peak alerts without seasonality"
    );
    assert!(detector.profile.is_empty());
}

/// Memory at 1 GB for 10 minutes, then growing 6 MB a minute for 40.
fn leaking(rng: &mut Rng, index: u64) -> WindowStats {
    let base = 1e9 * (1.0 + 0.002 * rng.normal());
    let growth = index.saturating_sub(60) as f64 * 1e6;
    gauge(base + growth)
}

#[test]
fn a_steady_rise_is_a_trend_with_time_to_limit() {
    let config = DetectConfig {
        limits: [("process.memory.usage".to_owned(), 2e9)]
            .into_iter()
            .collect(),
        ..DetectConfig::default()
    };
    let mut rng = Rng(17);
    let mut detector = SeriesDetector::new(metric("process.memory.usage"));
    let found = feed(&mut detector, &config, 0, 300, |index| {
        leaking(&mut rng, index)
    });
    assert!(
        found
            .iter()
            .all(|(_, anomaly)| anomaly.kind == AnomalyKind::Trend),
        "{found:#?}"
    );
    // Nothing before 30 minutes of history exist.
    assert!(found.iter().all(|(index, _)| *index >= 179), "{found:#?}");
    let (index, last) = found.last().expect("a trend by 40 minutes of growth");
    assert_eq!(*index, 299);
    // 1.24 GB now, growing 100 kB/s: (2 GB - 1.24 GB) / 100 kB/s = 7600 s.
    let time_to_limit = last.time_to_limit_secs.expect("limit configured");
    assert!((time_to_limit - 7600.0).abs() < 400.0, "{time_to_limit}");
    assert_eq!(last.severity, Severity::Critical, "within the 6 h horizon");
    assert!(!last.severe);
    assert!(
        last.summary.starts_with("process.memory.usage rising 3")
            && last.summary.contains("M/h for ")
            && last.summary.contains("; limit 2G in "),
        "{}",
        last.summary
    );

    let trend = detector.trend().expect("trend");
    assert!(trend.r2 > 0.95, "{trend:?}");
    assert!((trend.slope_per_sec - 1e5).abs() < 5e3, "{trend:?}");
    assert!(trend.duration_secs >= 1800.0, "{trend:?}");
}

#[test]
fn trend_cases() {
    let rising = |config: DetectConfig, name: &str| {
        let mut rng = Rng(19);
        let mut detector = SeriesDetector::new(metric(name));
        let found = feed(&mut detector, &config, 0, 300, |index| {
            leaking(&mut rng, index)
        });
        (detector, found)
    };

    // No limit: a trend, without a projection, as a warning.
    let (_, found) = rising(
        DetectConfig::default(),
        "container.memory.working_set{k8s.container.name=app}",
    );
    let (_, last) = found.last().expect("trend");
    assert_eq!(last.kind, AnomalyKind::Trend);
    assert_eq!(last.time_to_limit_secs, None);
    assert_eq!(last.severity, Severity::Warning);

    // A limit far away: projected, but only a warning.
    let config = DetectConfig {
        limits: [("*.memory.usage".to_owned(), 1e11)].into_iter().collect(),
        ..DetectConfig::default()
    };
    let (_, found) = rising(config, "process.memory.usage");
    let (_, last) = found.last().expect("trend");
    assert!(last.time_to_limit_secs.expect("projected") > 6.0 * 3600.0);
    assert_eq!(last.severity, Severity::Warning);

    // Not a trend-watched metric: the fit exists (for rules) but no anomaly.
    let (detector, found) = rising(DetectConfig::default(), "db.client.connection.count");
    assert!(found.is_empty(), "{found:#?}");
    assert!(detector.trend().is_some());

    // Flat noise: no trend anomaly, and a poor fit.
    let config = DetectConfig::default();
    let mut rng = Rng(23);
    let mut detector = SeriesDetector::new(metric("process.memory.usage"));
    let found = feed(&mut detector, &config, 0, 400, |_| memory(&mut rng));
    assert!(found.is_empty(), "{found:#?}");
    assert!(detector.trend().expect("fit").r2 < 0.5);

    // A rise too small to matter (2% in 40 minutes) with a perfect fit.
    let mut detector = SeriesDetector::new(metric("process.memory.usage"));
    let found = feed(&mut detector, &config, 0, 300, |index| {
        gauge(1e9 + index.saturating_sub(60) as f64 * 1e5)
    });
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn out_of_order_windows_are_ignored_and_a_new_window_length_restarts() {
    let config = DetectConfig::default();
    let mut detector = SeriesDetector::new(operation());
    let mut rng = Rng(29);
    feed(&mut detector, &config, 0, 40, |_| busy(&mut rng));
    assert_eq!(detector.readiness(&config), Readiness::Ready);
    // A repeat of window 39, and an older one, change nothing.
    let zero = spans(0, 0, 0.0, 0.0, 0.0);
    assert!(detector
        .observe(&config, start(39), WINDOW, &zero)
        .is_empty());
    assert!(detector
        .observe(&config, start(10), WINDOW, &zero)
        .is_empty());
    assert_eq!(detector.history.len(), 40);
    // Non-finite or zero window lengths are refused rather than trusted.
    assert!(detector
        .observe(&config, start(40), f64::NAN, &zero)
        .is_empty());
    assert!(detector.observe(&config, start(40), 0.0, &zero).is_empty());
    assert_eq!(detector.history.len(), 40);
    // Another window length: counts no longer compare, so start over.
    assert!(detector.observe(&config, start(40), 60.0, &zero).is_empty());
    assert_eq!(
        detector.readiness(&config),
        Readiness::WarmingUp { have: 1, need: 30 }
    );
}

#[test]
fn state_round_trips_through_json() {
    let config = DetectConfig::default();
    let mut rng = Rng(31);
    let mut detector = SeriesDetector::new(operation());
    // Past a slot boundary, so the profile is in the state too, and with some
    // idle windows so NaN latencies are in it.
    feed(&mut detector, &config, 0, 200, |index| {
        if index % 17 == 0 {
            spans(0, 0, 0.0, 0.0, 0.0)
        } else {
            busy(&mut rng)
        }
    });
    let json = serde_json::to_string(&detector).expect("serialize");
    let mut restored: SeriesDetector = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(serde_json::to_string(&restored).expect("serialize"), json);
    assert_eq!(restored.info(), detector.info());
    assert!(!restored.profile.is_empty());

    let window = spans(0, 0, 0.0, 0.0, 0.0);
    assert_eq!(
        restored.observe(&config, start(200), WINDOW, &window),
        detector.observe(&config, start(200), WINDOW, &window)
    );

    let bad = json.replace("\"operation\"", "\"gauge\"");
    let error = serde_json::from_str::<SeriesDetector>(&bad).expect_err("unknown kind");
    assert!(error.to_string().contains("unknown series kind"), "{error}");
}

#[test]
fn memory_per_series_is_as_documented() {
    assert_eq!(std::mem::size_of::<WindowSummary>(), 32);
    assert_eq!(std::mem::size_of::<SlotSummary>(), 24);
    let config = DetectConfig::default();
    let mut detector = SeriesDetector::new(operation());
    let mut rng = Rng(37);
    feed(&mut detector, &config, 0, 1_000, |_| busy(&mut rng));
    assert_eq!(detector.history.len(), config.history_windows);
    assert_eq!(detector.profile.len(), 144 * 3);
    // Unwatched series keep nothing.
    let mut ignored = SeriesDetector::new(metric("shop.cart.items"));
    feed(&mut ignored, &config, 0, 1_000, |_| gauge(1.0));
    assert!(ignored.history.is_empty() && ignored.profile.is_empty());
    assert_eq!(ignored.readiness(&config), Readiness::Ready);
}

#[test]
fn summaries_format_numbers_for_people() {
    assert_eq!(format_ms(840.4), "840 ms");
    assert_eq!(format_ms(2.54), "2.5 ms");
    assert_eq!(format_ms(0.123), "0.12 ms");
    assert_eq!(format_percent(0.125), "12.5%");
    assert_eq!(format_percent(0.003), "0.3%");
    assert_eq!(format_percent(0.0005), "0.05%");
    assert_eq!(format_percent(0.0), "0%");
    assert_eq!(format_rate(0.0), "0");
    assert_eq!(format_rate(24.3), "24");
    assert_eq!(format_rate(1.5), "1.5");
    assert_eq!(format_value(1.24e9), "1.24G");
    assert_eq!(format_value(850e6), "850M");
    assert_eq!(format_value(25.0), "25");
    assert_eq!(format_value(12_345.0), "12.3k");
    assert_eq!(format_duration(45.0), "45 s");
    assert_eq!(format_duration(2400.0), "40 min");
    assert_eq!(format_duration(7600.0), "2.1 h");
}

proptest! {
    // Each case is 2,000 windows; a handful of seeds and shapes is plenty.
    // The cases are drawn from a fixed seed: a run draws 16,000
    // windows, and one case once held two windows in a row with 12 and 11
    // failures where 2.6 were expected (p about 5e-10 together), which
    // the detector rightly flagged. The same eight cases every run, so the
    // suite does not fail on such a draw.
    #![proptest_config(ProptestConfig {
        cases: 8,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7472_6961_6765),
        ..ProptestConfig::default()
    })]

    /// 2,000 windows (5.5 hours) of stationary traffic: Poisson counts,
    /// binomial errors, 5% log-normal latency jitter.
    ///
    /// The bound: each window runs about six tests. Latency needs 1.5x, which
    /// 5% jitter reaches at 8 standard deviations; traffic needs half or
    /// double a Poisson count of at least 20, at least 4.5 standard
    /// deviations away and then p < 1e-4 besides. The error test is the only
    /// one whose chance level binds: binomial noise against the pooled rate
    /// crosses p < 1e-4 about 0.2 times in 2,000 windows (less after the
    /// 2-point and z guards). So more than 2 anomalous windows, any severe
    /// one, or two in a row (what would open an incident) is a bug, not bad
    /// luck.
    #[test]
    fn stationary_traffic_is_quiet(
        seed in any::<u64>(),
        lambda in 20.0f64..500.0,
        error_rate in 0.0f64..0.05,
        p95 in 5.0f64..2_000.0,
    ) {
        let config = DetectConfig::default();
        let mut rng = Rng(seed);
        let mut detector = SeriesDetector::new(operation());
        let found = feed(&mut detector, &config, 0, 2_000, |_| {
            noisy_spans(&mut rng, lambda, error_rate, [p95 * 0.4, p95, p95 * 1.6])
        });
        let mut windows: Vec<u64> = found.iter().map(|(index, _)| *index).collect();
        windows.dedup();
        prop_assert!(windows.len() <= 2, "{:#?}", found);
        prop_assert!(found.iter().all(|(_, anomaly)| !anomaly.severe), "{:#?}", found);
        prop_assert!(windows.windows(2).all(|pair| pair[1] > pair[0] + 1), "{:#?}", found);
    }

    /// The same for a watched gauge with 2% noise: a level shift needs 50%
    /// and 6 robust standard deviations, which Gaussian noise does not reach.
    #[test]
    fn stationary_gauges_are_quiet(seed in any::<u64>(), level in 1.0f64..1e10) {
        let config = DetectConfig::default();
        let mut rng = Rng(seed);
        let mut detector = SeriesDetector::new(metric("process.memory.usage"));
        let found = feed(&mut detector, &config, 0, 2_000, |_| {
            gauge(rng.jitter(level, 0.02))
        });
        prop_assert!(found.is_empty(), "{:#?}", found);
    }
}

/// A span window of individual request latencies (ms), with exact
/// nearest-rank quantiles and the sub-window histograms the store keeps
/// (requests spread evenly over the sub-windows).
fn window_of(latencies: &[f64]) -> WindowStats {
    use crate::store::window::{sub_bucket, SubWindows};
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    let mut subs = SubWindows::default();
    for (index, &millis) in latencies.iter().enumerate() {
        let sub = &mut subs[index % subs.len()];
        sub.requests += 1;
        sub.latency[sub_bucket((millis * 1000.0) as u64)] += 1;
    }
    WindowStats {
        requests: latencies.len() as u64,
        errors: 0,
        p50: Some(quantile(0.5)),
        p95: Some(quantile(0.95)),
        p99: Some(quantile(0.99)),
        max: sorted.last().copied(),
        values: ValueStats::default(),
        subs: Some(subs),
    }
}

/// 37 requests of a service that answers from a cache in about 1.5 ms and,
/// 2% of the time, from an external API in about 80 ms.
fn cached(rng: &mut Rng) -> Vec<f64> {
    (0..37)
        .map(|_| {
            if rng.uniform() < 0.02 {
                rng.jitter(80.0, 0.5)
            } else {
                rng.jitter(1.5, 0.4)
            }
        })
        .collect()
}

#[test]
fn two_slow_requests_of_a_few_dozen_are_not_a_latency_anomaly() {
    let config = DetectConfig::default();
    let mut rng = Rng(11);
    let mut detector = SeriesDetector::new(operation());
    feed(&mut detector, &config, 0, 360, |_| {
        window_of(&cached(&mut rng))
    });
    // Two windows in a row whose two slowest requests are slower than
    // anything in the last hour: the p95 is 2x beyond every baseline
    // window, yet two cache misses of 37 requests is what a 2% miss rate
    // gives one window in six.
    for index in 360..362 {
        let mut latencies = vec![1.5; 35];
        latencies.extend([900.0, 950.0]);
        let stats = window_of(&latencies);
        assert!(stats.p95.expect("p95") >= 900.0);
        let found = detector.observe(&config, start(index), WINDOW, &stats);
        assert!(found.is_empty(), "window {index}: {found:#?}");
    }
    // Every request thirty times slower (about 45 ms) is an anomaly.
    let slow: Vec<f64> = cached(&mut rng)
        .iter()
        .map(|millis| millis * 30.0)
        .collect();
    let found = detector.observe(&config, start(362), WINDOW, &window_of(&slow));
    assert!(
        found
            .iter()
            .any(|anomaly| anomaly.kind == AnomalyKind::Latency),
        "{found:#?}"
    );
}

/// The state a busy series keeps stops growing once its history is full,
/// and `state_bytes` (the `triage_detect_state_bytes` gauge) sees it grow
/// until then: the history, its sorted copy and the time-of-day profile
/// are bounded by configuration, not by how long the series lives.
#[test]
fn state_is_bounded_by_history_windows() {
    let config = DetectConfig {
        history_windows: 120,
        ..DetectConfig::default()
    };
    let mut rng = Rng(11);
    let mut detector = SeriesDetector::new(operation());
    let empty = detector.state_bytes();
    feed(&mut detector, &config, 0, 30, |_| busy(&mut rng));
    let early = detector.state_bytes();
    assert!(early > empty, "{early} <= {empty}");
    assert_eq!(detector.history.capacity(), 121, "reserved whole at once");
    // Past the history's limit and past a whole day of profile slots.
    feed(&mut detector, &config, 30, DAY + 120, |_| busy(&mut rng));
    let full = detector.state_bytes();
    assert!(full > early, "{full} <= {early}");
    assert_eq!(detector.history.len(), 120);
    feed(&mut detector, &config, DAY + 120, 2 * DAY, |_| {
        busy(&mut rng)
    });
    assert_eq!(detector.state_bytes(), full, "grew past its bounds");
    // The bound itself: the history (reserved whole at the first window),
    // its sorted values (grown a quarter at a time), the profile, the
    // sparse judge's rings.
    let history = (120 + 1) * std::mem::size_of::<WindowSummary>();
    let sorted = 6 * (120 + 120 / 4 + 8) * std::mem::size_of::<f32>();
    let profile = (SLOTS_PER_DAY as usize * PROFILE_DAYS) * std::mem::size_of::<SlotSummary>();
    assert!(
        full <= std::mem::size_of::<SeriesDetector>() + history + sorted + profile + 4_096,
        "{full} bytes"
    );
}
