//! The second shop (`stays`): its topology shares nothing with the first,
//! its traffic has quiet and busy services, bursts, a daily and a weekly
//! shape, heavy tails, retries and timeouts, benign deploys and
//! configuration changes announced in logs; and each of its faults shows in
//! the data where it should (the slow version only on its pods, the noisy
//! neighbour only on one node's pods, an endpoint fault only on that
//! endpoint). These tests look at the generated data only, never at
//! detection.

use super::rca::{children, exclusive_ms};
use super::*;

use crate::model::{ChangeKind, PatternKind};
use crate::tools::sim::engine::shape_factor;
use crate::tools::sim::model::{model_of, DailyShape};

const MINUTE: u64 = 60;

/// A quiet second-shop scenario (flat traffic, no benign changes) of
/// `seconds` at `rate`, with `faults` as (spec, start second).
fn shop2(seconds: u64, rate: f64, faults: &[(&str, u64)]) -> Scenario {
    Scenario {
        seed: 11,
        duration: Duration::from_secs(seconds),
        entry_rate_per_sec: rate,
        faults: faults
            .iter()
            .map(|(spec, start)| Fault {
                kind: parse_fault_in(Shop::Second, spec).unwrap(),
                start: Duration::from_secs(*start),
                duration: None,
            })
            .collect(),
        benign_deploys: false,
        daily_shape: false,
        shop: Shop::Second,
        ..Scenario::default()
    }
}

fn traces(scenario: Scenario) -> (Vec<Row>, u64) {
    let start = scenario.start_unix_nanos;
    let batches: Vec<Batch> = Simulator::new(scenario)
        .with_signals(Signals::TRACES)
        .collect();
    (rows(&batches), start)
}

fn server_rows<'a>(rows: &'a [Row], service: &str, name: Option<&str>) -> Vec<&'a Row> {
    rows.iter()
        .filter(|row| {
            row.service == service
                && (row.kind == SpanKind::Server as i32 || row.kind == SpanKind::Consumer as i32)
                && name.is_none_or(|name| row.name == name)
        })
        .collect()
}

fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 * q) as usize).min(values.len() - 1)]
}

fn p95_ms(rows: &[&Row]) -> f64 {
    quantile(rows.iter().map(|row| row.duration_ms()).collect(), 0.95)
}

fn errors(rows: &[&Row]) -> f64 {
    ratio(rows.iter().filter(|row| row.error).count(), rows.len())
}

/// Rows of `rows` that end before second `at` or start a second after it.
fn before_after<'a>(rows: &[&'a Row], start: u64, at: u64) -> (Vec<&'a Row>, Vec<&'a Row>) {
    let cut = start + at * SECOND;
    (
        rows.iter().copied().filter(|row| row.end < cut).collect(),
        rows.iter()
            .copied()
            .filter(|row| row.start >= cut + SECOND)
            .collect(),
    )
}

#[test]
fn the_second_shop_shares_nothing_with_the_first() {
    let first = topology_of(Shop::First);
    let second = topology_of(Shop::Second);
    assert_eq!(second.services.len(), 15);
    assert_eq!(second.entry, "edge-gateway");
    assert_eq!(
        second.entries,
        [
            "edge-gateway",
            "webhook-receiver",
            "backoffice",
            "reporting"
        ]
    );
    assert_eq!(first.entries, ["frontend"]);
    let names = |topology: &Topology| -> BTreeSet<String> {
        topology
            .services
            .iter()
            .flat_map(|service| {
                std::iter::once(service.name.clone())
                    .chain(service.dependencies.iter().cloned())
                    .chain(service.routes.iter().cloned())
            })
            .collect()
    };
    let shared: Vec<String> = names(first).intersection(&names(second)).cloned().collect();
    assert!(shared.is_empty(), "shared names: {shared:?}");
    assert!(second.depth() >= 4, "depth {}", second.depth());
    // A database (or index) per stateful service, caches, external APIs,
    // a queue.
    let kinds: BTreeSet<String> = second
        .edges
        .iter()
        .map(|edge| format!("{:?}", edge.kind))
        .collect();
    for kind in ["Http", "Grpc", "Messaging", "Database", "Cache", "External"] {
        assert!(kinds.contains(kind), "{kinds:?}");
    }
    assert!(second
        .edges
        .iter()
        .any(|edge| edge.caller == "search" && edge.callee == "search-es"));
    // Other regions, cloud and namespace on the resources.
    let (rows, _) = traces(shop2(3, 10.0, &[]));
    assert!(rows
        .iter()
        .all(|row| row.region == "europe-west4" || row.region == "asia-southeast1"));
    assert!(rows
        .iter()
        .all(|row| row.node.starts_with("gke-stays-prod-")));
    let batches: Vec<Batch> = Simulator::new(shop2(2, 10.0, &[])).collect();
    let resource = &batches[1].traces.as_ref().unwrap().resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(attr_str(resource, "cloud.provider"), Some("gcp"));
    assert_eq!(attr_str(resource, "k8s.namespace.name"), Some("stays"));
}

#[test]
fn second_shop_output_is_deterministic_and_unlike_the_first() {
    let a = json_lines(shop2(20, 10.0, &[("noisy-neighbour:search", 5)]));
    let b = json_lines(shop2(20, 10.0, &[("noisy-neighbour:search", 5)]));
    assert_eq!(a, b);
    let first = json_lines(Scenario {
        shop: Shop::First,
        ..shop2(20, 10.0, &[])
    });
    assert_ne!(a, first);
}

/// Quiet and busy services, fan-outs, heavy tails, and roots in every
/// service with traffic of its own.
#[test]
fn the_second_shop_has_quiet_and_busy_services_and_heavy_tails() {
    let seconds = 300;
    let (rows, _) = traces(shop2(seconds, 40.0, &[]));
    let rate = |service: &str| server_rows(&rows, service, None).len() as f64 / seconds as f64;
    let rates: BTreeMap<&str, f64> = topology_of(Shop::Second)
        .services
        .iter()
        .map(|service| (service.name.as_str(), rate(&service.name)))
        .collect();
    assert!(rates["rate-engine"] > 60.0, "{rates:?}");
    assert!(rates["edge-gateway"] > 30.0, "{rates:?}");
    for (service, low, high) in [
        ("reporting", 0.1, 0.35),
        ("backoffice", 0.15, 0.45),
        ("webhook-receiver", 0.3, 1.0),
        ("payments-adapter", 0.6, 2.5),
    ] {
        let rate = rates[service];
        assert!((low..high).contains(&rate), "{service}: {rate:.2}/s");
    }
    // Roots in the entry and in each service with traffic of its own.
    let roots: BTreeSet<&str> = rows
        .iter()
        .filter(|row| row.parent.is_empty())
        .map(|row| row.service.as_str())
        .collect();
    assert_eq!(
        roots,
        BTreeSet::from([
            "backoffice",
            "edge-gateway",
            "reporting",
            "webhook-receiver"
        ])
    );
    // A search fans out to 3 to 6 quotes.
    let calls = children(&rows);
    let searches = server_rows(&rows, "search", Some("GET /search"));
    let fan_outs: Vec<usize> = searches
        .iter()
        .filter(|row| !row.error)
        .map(|row| {
            calls
                .get(&(row.trace.clone(), row.id.clone()))
                .map_or(0, |calls| {
                    calls
                        .iter()
                        .filter(|call| call.str("rpc.method") == Some("Quote"))
                        .count()
                })
        })
        .collect();
    assert!(fan_outs.iter().all(|n| (3..=6).contains(n)), "{fan_outs:?}");
    assert!(fan_outs.contains(&3) && fan_outs.contains(&6));
    // Heavy tails: the slowest searches and payment-provider calls are
    // many times the median.
    let durations: Vec<f64> = searches.iter().map(|row| row.duration_ms()).collect();
    let (p50, p999) = (quantile(durations.clone(), 0.5), quantile(durations, 0.999));
    assert!(
        p999 > 4.0 * p50,
        "search p50 {p50:.1} ms, p99.9 {p999:.1} ms"
    );
    let paygate: Vec<f64> = rows
        .iter()
        .filter(|row| row.str("server.address") == Some("api.paygate.example"))
        .map(Row::duration_ms)
        .collect();
    assert!(
        quantile(paygate.clone(), 0.99) > 2.5 * quantile(paygate, 0.5),
        "paygate tail"
    );
}

/// Clients retry failed calls, and give up at their deadline with an
/// error: the gateway retries a search once, cutting it at 2.5 s.
#[test]
fn clients_retry_failed_calls_and_give_up_at_their_deadline() {
    // Searches 60x slower: most outlast the gateway's 2.5 s deadline.
    let (rows, start) = traces(shop2(40, 5.0, &[("slowdown:search:60:/search", 10)]));
    let (_, after) = before_after(&rows.iter().collect::<Vec<_>>(), start, 10);
    let calls: Vec<&Row> = after
        .iter()
        .copied()
        .filter(|row| {
            row.is("edge-gateway", SpanKind::Client) && row.str("server.address") == Some("search")
        })
        .collect();
    let timed_out: Vec<&Row> = calls
        .iter()
        .copied()
        .filter(|row| row.str("error.type") == Some("timeout"))
        .collect();
    assert!(timed_out.len() > 10, "{} timeouts", timed_out.len());
    for row in &timed_out {
        assert!(row.error);
        assert!(
            (row.duration_ms() - 2_500.0).abs() < 1.0,
            "{}",
            row.duration_ms()
        );
    }
    // Each timed-out first attempt is followed by a retry under the same
    // parent, marked as a resend.
    let retries = calls
        .iter()
        .filter(|row| attr_int(&row.attributes, "http.request.resend_count") == Some(1))
        .count();
    assert!(retries > 5, "{retries} retries");
    let mut per_parent: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
    for row in &calls {
        *per_parent
            .entry((row.trace.as_slice(), row.parent.as_slice()))
            .or_default() += 1;
    }
    assert!(per_parent.values().all(|&n| n <= 2));
    assert!(per_parent.values().any(|&n| n == 2));
    // Before the fault, searches answer well within the deadline.
    let (before, _) = before_after(&rows.iter().collect::<Vec<_>>(), start, 10);
    assert!(before
        .iter()
        .all(|row| row.str("error.type") != Some("timeout")));
}

#[test]
fn the_second_shop_has_two_daily_peaks_and_quieter_weekends() {
    let hour = 3_600 * SECOND;
    // Monday 2025-01-06 00:00 UTC.
    let monday = DEFAULT_START_UNIX_NANOS - 9 * hour;
    let at = |day: u64, h: f64| {
        shape_factor(
            DailyShape::TwoPeaks,
            model_of(Shop::Second).traffic.weekly,
            monday + day * 24 * hour + (h * 3600.0) as u64 * SECOND,
        )
    };
    let night = at(0, 4.0);
    let lunch = at(0, 11.5);
    let afternoon = at(0, 15.5);
    let evening = at(0, 19.5);
    assert!((0.4..0.6).contains(&night), "{night}");
    assert!(
        lunch > afternoon && evening > lunch,
        "{lunch} {afternoon} {evening}"
    );
    assert!(evening > 3.0 * night);
    // The day's mean is about 1.
    let mean = (0..24 * 60).map(|m| at(1, m as f64 / 60.0)).sum::<f64>() / (24.0 * 60.0);
    assert!((0.9..1.1).contains(&mean), "{mean}");
    // Saturday and Sunday are lower than a weekday at the same hour.
    assert!(at(5, 19.5) < 0.8 * at(2, 19.5));
    assert!(at(6, 12.0) < 0.7 * at(2, 12.0));
    // No step at midnight: the weekly factor eases in.
    for day in 0..7 {
        for minute in (21 * 60)..(27 * 60) {
            let (a, b) = (
                at(day, minute as f64 / 60.0),
                at(day, (minute + 1) as f64 / 60.0),
            );
            assert!(
                (a - b).abs() < 0.01,
                "day {day} minute {minute}: {a} -> {b}"
            );
        }
    }

    // The generated traffic follows it: entry requests on a Monday at 04:00
    // against 19:30, and on a Saturday at 19:30.
    let entries = |day: u64, h: f64| {
        let scenario = Scenario {
            start_unix_nanos: monday + day * 24 * hour + (h * 3600.0) as u64 * SECOND,
            daily_shape: true,
            ..shop2(60, 4.0, &[])
        };
        let (rows, _) = traces(scenario);
        rows.iter()
            .filter(|row| row.parent.is_empty() && row.service == "edge-gateway")
            .count() as f64
    };
    let (night, evening, saturday) = (entries(0, 4.0), entries(0, 19.5), entries(5, 19.5));
    assert!(evening > 2.8 * night, "{night} -> {evening}");
    assert!(saturday < 0.85 * evening, "{evening} -> {saturday}");
}

#[test]
fn bursts_last_20_to_70_seconds_at_1_3_to_1_8_times_the_rate() {
    let scenario = shop2(6 * 3600, 40.0, &[]);
    let mut simulator = Simulator::new(scenario);
    let rates = simulator.engine.entry_rates(6 * 3600);
    let mut bursts = Vec::new();
    let mut second = 0;
    while second < rates.len() {
        if rates[second] > 40.0 + 1e-9 {
            let begin = second;
            while second < rates.len() && rates[second] > 40.0 + 1e-9 {
                second += 1;
            }
            bursts.push((second - begin, rates[begin] / 40.0));
        } else {
            second += 1;
        }
    }
    // About one every 15 minutes.
    assert!((12..=40).contains(&bursts.len()), "{bursts:?}");
    for &(length, factor) in &bursts {
        // Two bursts can follow each other directly.
        assert!((20..=140).contains(&length), "{bursts:?}");
        assert!((1.3..=1.8).contains(&factor), "{bursts:?}");
    }
    assert!(bursts.iter().any(|&(length, _)| length >= 50));
    // The first shop keeps its own short bursts.
    let mut first = Simulator::new(Scenario {
        shop: Shop::First,
        ..shop2(6 * 3600, 20.0, &[])
    });
    let longest = first
        .engine
        .entry_rates(6 * 3600)
        .split(|rate| *rate <= 20.0 + 1e-9)
        .map(<[f64]>::len)
        .max()
        .unwrap_or(0);
    assert!((5..=40).contains(&longest), "{longest}");

    // In the data: the busiest 20 s of an hour of entry traffic stand out.
    let (rows, start) = traces(shop2(3_600, 6.0, &[]));
    let mut windows = vec![0usize; 180];
    for row in rows
        .iter()
        .filter(|row| row.parent.is_empty() && row.service == "edge-gateway")
    {
        windows[((row.start - start) / SECOND / 20).min(179) as usize] += 1;
    }
    let typical = median(windows.iter().map(|&n| n as f64).collect());
    let busiest = windows.iter().copied().max().unwrap_or(0) as f64;
    assert!(busiest > 1.3 * typical, "{typical} -> {busiest}");
}

/// Benign deploys roll new versions out pod by pod without changing
/// behaviour, and benign configuration changes are announced in a log
/// record by every pod of the service; both are posted as changes.
#[test]
fn benign_deploys_and_config_changes_happen_without_faults() {
    let scenario = Scenario {
        benign_deploys: true,
        ..shop2(3 * 3600, 1.0, &[])
    };
    let simulator = Simulator::new(scenario.clone());
    let changes = simulator.changes().to_vec();
    let deploys: Vec<&Change> = changes
        .iter()
        .filter(|change| change.kind == ChangeKind::Deploy)
        .collect();
    let configs: Vec<&Change> = changes
        .iter()
        .filter(|change| change.kind == ChangeKind::Config)
        .collect();
    assert!(deploys.len() >= 4, "{deploys:#?}");
    assert!(configs.len() >= 3, "{configs:#?}");
    assert!(changes
        .windows(2)
        .all(|pair| pair[0].time_unix_nanos <= pair[1].time_unix_nanos));
    let batches: Vec<Batch> = simulator.collect();

    // Every config change: one log record per pod of the service, within a
    // few seconds, with the key and value.
    let mut logs: Vec<(String, String, String, u64)> = Vec::new();
    for batch in &batches {
        for resource_logs in batch.logs.iter().flat_map(|logs| &logs.resource_logs) {
            let resource = &resource_logs.resource.as_ref().unwrap().attributes;
            let service = attr_str(resource, "service.name").unwrap().to_owned();
            let pod = attr_str(resource, "k8s.pod.name").unwrap().to_owned();
            for record in resource_logs.scope_logs.iter().flat_map(|s| &s.log_records) {
                if let Some(key) = attr_str(&record.attributes, "config.key") {
                    let value = attr_str(&record.attributes, "config.value").unwrap();
                    assert_eq!(record.severity_text, "INFO");
                    logs.push((
                        service.clone(),
                        pod.clone(),
                        format!("{key}={value}"),
                        record.time_unix_nano,
                    ));
                }
            }
        }
    }
    let topology = topology_of(Shop::Second);
    for change in &configs {
        let setting = format!(
            "{}={}",
            change.key.as_deref().unwrap(),
            change.value.as_deref().unwrap()
        );
        let records: Vec<_> = logs
            .iter()
            .filter(|(service, _, text, time)| {
                *service == change.service
                    && *text == setting
                    && *time >= change.time_unix_nanos
                    && *time < change.time_unix_nanos + 30 * SECOND
            })
            .collect();
        let pods = topology.service(&change.service).unwrap().pods;
        assert_eq!(records.len(), pods, "{change:?}: {records:?}");
        let distinct: BTreeSet<&String> = records.iter().map(|(_, pod, _, _)| pod).collect();
        assert_eq!(distinct.len(), pods);
    }

    // Every deploy: the new version serves from its time on, on new pods
    // only, and fails no more than the old one did.
    let rows = rows(&batches);
    for deploy in &deploys {
        let version = deploy.version.as_deref().unwrap();
        let spans: Vec<&Row> = rows
            .iter()
            .filter(|row| row.service == deploy.service && row.version == version)
            .collect();
        if spans.is_empty() {
            // A quiet service may see no request before the run ends.
            continue;
        }
        assert!(spans.iter().all(|row| row.end >= deploy.time_unix_nanos));
        let before: BTreeSet<&str> = rows
            .iter()
            .filter(|row| row.service == deploy.service && row.end < deploy.time_unix_nanos)
            .map(|row| row.pod.as_str())
            .collect();
        assert!(spans.iter().all(|row| !before.contains(row.pod.as_str())));
    }
    let served: Vec<&Row> = rows
        .iter()
        .filter(|row| row.kind == SpanKind::Server as i32)
        .collect();
    assert!(errors(&served) < 0.01, "{}", errors(&served));
}

/// Four faults at once on separate services, each where it should be:
/// a slow new version of reviews only on its pods, search slower only on
/// one node, listing's batch endpoint slower (p95 about +40%) and auth's
/// ValidateToken failing 1 point more, their sibling endpoints unchanged.
#[test]
fn second_shop_faults_show_only_where_they_act() {
    let at = 150;
    let scenario = shop2(
        300,
        40.0,
        &[
            ("slow-deploy:reviews", at),
            ("noisy-neighbour:search", at),
            ("slowdown:listing:1.4:/listings/batch", at),
            ("error-rate:auth:1:ValidateToken", at),
        ],
    );
    let truth = scenario.truth();
    let (rows, start) = traces(scenario);
    let calls = children(&rows);
    let own = |rows: &[&Row]| median(rows.iter().map(|row| exclusive_ms(row, &calls)).collect());

    // The slow version: only its pods, only after the fault, 3x own time,
    // no more errors.
    let version = truth.ground_truth[0].scope.as_ref().unwrap();
    assert_eq!(version.key, "service.version");
    assert_eq!(truth.ground_truth[0].pattern, Some(PatternKind::BadDeploy));
    let reviews = server_rows(&rows, "reviews", Some("GET /listings/{id}/reviews"));
    let (old_pods, _) = before_after(&reviews, start, at);
    let old_pods: BTreeSet<&str> = old_pods.iter().map(|row| row.pod.as_str()).collect();
    let (new, old): (Vec<&Row>, Vec<&Row>) = reviews
        .iter()
        .copied()
        .filter(|row| row.start >= start + at * SECOND)
        .partition(|row| row.version == version.value);
    assert!(
        new.len() > 100 && old.len() > 20,
        "{} {}",
        new.len(),
        old.len()
    );
    assert!(new.iter().all(|row| !old_pods.contains(row.pod.as_str())));
    assert!(old.iter().all(|row| old_pods.contains(row.pod.as_str())));
    let ratio_new = own(&new) / own(&old);
    assert!(
        (2.5..3.5).contains(&ratio_new),
        "reviews new/old {ratio_new:.2}"
    );
    assert!(errors(&new) < 0.01);

    // The noisy neighbour: search's pods on one node only.
    let node = truth.ground_truth[1].scope.as_ref().unwrap();
    assert_eq!(node.key, "k8s.node.name");
    let search = server_rows(&rows, "search", Some("GET /search"));
    let (before, after) = before_after(&search, start, at);
    let on = |rows: &[&Row], on_node: bool| -> f64 {
        let picked: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|row| (row.node == node.value) == on_node)
            .collect();
        assert!(picked.len() > 50, "{}", picked.len());
        own(&picked)
    };
    let slowed = on(&after, true) / on(&before, true);
    let elsewhere = on(&after, false) / on(&before, false);
    assert!(
        (2.0..3.0).contains(&slowed),
        "search on the node x{slowed:.2}"
    );
    assert!(
        (0.85..1.15).contains(&elsewhere),
        "search elsewhere x{elsewhere:.2}"
    );
    let search_pods_on_node: BTreeSet<&str> = search
        .iter()
        .filter(|row| row.node == node.value)
        .map(|row| row.pod.as_str())
        .collect();
    let search_pods: BTreeSet<&str> = search.iter().map(|row| row.pod.as_str()).collect();
    assert!(search_pods_on_node.len() < search_pods.len());
    // Other services on that node are not slowed.
    let neighbours: Vec<&Row> = rows
        .iter()
        .filter(|row| {
            row.node == node.value
                && row.kind == SpanKind::Server as i32
                && row.service == "rate-engine"
        })
        .collect();
    if neighbours.len() > 200 {
        let (before, after) = before_after(&neighbours, start, at);
        let change = own(&after) / own(&before);
        assert!(
            (0.85..1.15).contains(&change),
            "rate-engine on the node x{change:.2}"
        );
    }

    // The endpoint latency: listing's batch p95 up about 40%, its other
    // endpoint's own time unchanged.
    assert_eq!(
        truth.ground_truth[2].operation.as_deref(),
        Some("POST /listings/batch")
    );
    let batch = server_rows(&rows, "listing", Some("POST /listings/batch"));
    let (before, after) = before_after(&batch, start, at);
    let rise = p95_ms(&after) / p95_ms(&before);
    assert!((1.25..1.6).contains(&rise), "batch p95 x{rise:.2}");
    let get = server_rows(&rows, "listing", Some("GET /listings/{id}"));
    let (before, after) = before_after(&get, start, at);
    let flat = own(&after) / own(&before);
    assert!(
        (0.85..1.15).contains(&flat),
        "GET /listings/{{id}} own x{flat:.2}"
    );

    // The endpoint errors: ValidateToken +1 point, IssueToken unchanged.
    let validate = server_rows(&rows, "auth", Some("stays.auth.v1.Auth/ValidateToken"));
    let (before, after) = before_after(&validate, start, at);
    assert!(errors(&before) < 0.005, "{}", errors(&before));
    let raised = errors(&after);
    assert!(
        (0.006..0.02).contains(&raised),
        "ValidateToken errors {raised}"
    );
    let issue = server_rows(&rows, "auth", Some("stays.auth.v1.Auth/IssueToken"));
    let (_, after) = before_after(&issue, start, at);
    assert!(errors(&after) < 0.01);
}

/// Faults on services of 0.2-0.3 requests/s: errors 0.1% -> 20%, p95 x3.
#[test]
fn low_rate_services_fail_and_slow_down_visibly() {
    let at = 15 * MINUTE;
    let (rows, start) = traces(shop2(
        30 * MINUTE,
        1.0,
        &[
            ("error-rate:backoffice:20", at),
            ("slowdown:reporting:3", at),
        ],
    ));
    let backoffice = server_rows(&rows, "backoffice", None);
    let (before, after) = before_after(&backoffice, start, at);
    assert!(before.len() > 150 && after.len() > 150);
    assert!(errors(&before) < 0.02, "{}", errors(&before));
    let raised = errors(&after);
    assert!((0.13..0.28).contains(&raised), "backoffice errors {raised}");

    let reporting = server_rows(&rows, "reporting", None);
    let (before, after) = before_after(&reporting, start, at);
    assert!(before.len() > 100 && after.len() > 100);
    let rise = p95_ms(&after) / p95_ms(&before);
    assert!((2.0..4.0).contains(&rise), "reporting p95 x{rise:.2}");
    // Their callees are unaffected.
    let ledger = server_rows(&rows, "ledger", Some("stays.ledger.v1.Ledger/GetBalances"));
    let (before, after) = before_after(&ledger, start, at);
    let median_change = median(after.iter().map(|r| r.duration_ms()).collect())
        / median(before.iter().map(|r| r.duration_ms()).collect());
    assert!((0.7..1.4).contains(&median_change), "{median_change}");
}

#[test]
fn second_shop_faults_parse_against_its_own_services() {
    assert!(parse_fault_in(Shop::Second, "latency:search").is_ok());
    assert!(parse_fault_in(Shop::First, "latency:search").is_err());
    assert!(parse_fault_in(Shop::Second, "latency:payment").is_err());
    for (spec, _) in SHOP2_FAULTS {
        for part in spec.split(" + ") {
            let part = part.split(' ').next().unwrap();
            let kind = parse_fault_in(Shop::Second, part).unwrap();
            assert_eq!(kind.to_string(), part, "spec round trip");
        }
    }
    let message = |spec: &str| parse_fault_in(Shop::Second, spec).unwrap_err().to_string();
    assert!(message("slowdown:listing").contains("slowdown:listing:1.4"));
    assert!(message("slowdown:listing:fast").contains("not a number"));
    assert!(message("error-rate:auth:0").contains("above 0"));
    assert!(message("error-rate:auth:1:/nope").contains("ValidateToken"));
    assert!(message("noisy-neighbour:nobody").contains("edge-gateway"));
}

#[test]
fn shop2_scenarios_cover_the_new_faults_with_ground_truth() {
    let scenarios = shop2_scenarios();
    let named = named_scenarios();
    let mut kinds = BTreeSet::new();
    for (name, scenario) in &scenarios {
        assert!(name.starts_with("shop2-"));
        assert_eq!(scenario.shop, Shop::Second);
        assert!(named.iter().any(|(known, _)| known == name), "{name}");
        assert!(find_scenario(name).is_some());
        let simulator = Simulator::try_new(scenario.clone()).unwrap();
        assert_eq!(simulator.ground_truth().len(), scenario.faults.len());
        for fault in &scenario.faults {
            assert!(fault.start >= Duration::from_secs(30 * 60), "{name}");
            kinds.insert(fault.kind.name());
        }
        let truth = simulator.ground_truth();
        match *name {
            "shop2-noisy-neighbour" => {
                assert_eq!(truth[0].scope.as_ref().unwrap().key, "k8s.node.name")
            }
            "shop2-slow-deploy" => {
                assert_eq!(truth[0].scope.as_ref().unwrap().key, "service.version");
                assert!(truth[0].change.is_some());
            }
            "shop2-endpoint-latency" | "shop2-endpoint-errors" => {
                assert!(truth[0].operation.is_some())
            }
            "shop2-two-faults" => assert_eq!(truth.len(), 2),
            "shop2-error-burst" => assert!(truth[0].end_unix_nanos.is_some()),
            _ => {}
        }
    }
    let healthy = &scenarios
        .iter()
        .find(|(name, _)| *name == "shop2-healthy")
        .unwrap()
        .1;
    assert!(healthy.faults.is_empty());
    assert!(healthy.duration >= Duration::from_secs(4 * 3600));
    assert!(healthy.benign_deploys && healthy.daily_shape);
    for kind in [
        "slow-deploy",
        "slowdown",
        "error-rate",
        "noisy-neighbour",
        "down",
        "slow-dependency",
        "errors",
    ] {
        assert!(kinds.contains(kind), "{kinds:?}");
    }
}

#[test]
fn simulate_args_select_the_shop() {
    let args = SimulateArgs {
        shop: Some("second".to_owned()),
        faults: vec!["noisy-neighbour:search".to_owned()],
        fault_at: vec!["10m".to_owned()],
        ..SimulateArgs::default()
    };
    let scenario = args.to_scenario().unwrap();
    assert_eq!(scenario.shop, Shop::Second);
    assert_eq!(scenario.entry_rate_per_sec, 40.0);
    let first = SimulateArgs {
        faults: vec!["noisy-neighbour:search".to_owned()],
        fault_at: vec!["10m".to_owned()],
        ..SimulateArgs::default()
    };
    assert!(
        first.to_scenario().is_err(),
        "search is not a first-shop service"
    );
    let named = SimulateArgs {
        scenario: Some("shop2-down".to_owned()),
        ..SimulateArgs::default()
    };
    assert_eq!(named.to_scenario().unwrap().shop, Shop::Second);
    let conflicting = SimulateArgs {
        shop: Some("first".to_owned()),
        ..named
    };
    assert!(conflicting.to_scenario().is_err());
    let unknown = SimulateArgs {
        shop: Some("third".to_owned()),
        ..SimulateArgs::default()
    };
    assert!(unknown.to_scenario().is_err());
}
