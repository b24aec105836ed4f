use std::time::Duration;

use super::*;
use crate::model::ChangeFilter;

const SECOND: u64 = 1_000_000_000;

/// An arbitrary start of event time, a multiple of the 300 s flag window.
const T0: u64 = 1_700_000_100 * SECOND;

fn config() -> ChangesConfig {
    ChangesConfig {
        rollout_debounce: Duration::from_secs(120),
        instance_timeout: Duration::from_secs(60),
        flag_window: Duration::from_secs(300),
        flag_shift: 0.2,
        ..ChangesConfig::default()
    }
}

fn detector() -> ChangeDetector {
    ChangeDetector::new(Arc::new(ChangeLog::default()), &config())
}

fn changes(detector: &ChangeDetector) -> Vec<Change> {
    detector.log().list(&ChangeFilter::default())
}

/// One sighting: seconds after T0, version, instance.
type Sighting = (u64, Option<&'static str>, Option<&'static str>);

fn replay(sightings: &[Sighting]) -> Vec<Change> {
    let detector = detector();
    for (secs, version, instance) in sightings {
        detector.observe_resource("payment", *version, *instance, T0 + secs * SECOND);
    }
    changes(&detector)
}

/// Three pods at v1 report every 10 s for `until` seconds.
fn steady(version: &'static str, pods: &[&'static str], from: u64, until: u64) -> Vec<Sighting> {
    (from..until)
        .step_by(10)
        .flat_map(|secs| {
            pods.iter()
                .map(move |pod| (secs, Some(version), Some(*pod)))
        })
        .collect()
}

#[test]
fn versions_and_instances_present_at_start_are_the_baseline() {
    // Two versions and four pods show up in the first minute: a rollout in
    // progress when the collector started, not a change.
    let mut sightings = steady("v1", &["p-1", "p-2"], 0, 600);
    sightings.extend(steady("v2", &["p-3", "p-4"], 20, 600));
    sightings.sort_by_key(|(secs, _, _)| *secs);
    assert_eq!(replay(&sightings), vec![]);
}

#[test]
fn a_new_version_is_one_deploy_change() {
    let pods = ["payment-aaaa-1", "payment-aaaa-2"];
    let mut sightings = steady("v2.4.0", &pods, 0, 300);
    // A rolling update: the new version's pods come up while the old ones
    // still serve, then the old ones stop.
    sightings.extend(steady("v2.4.1", &["payment-bbbb-1"], 300, 900));
    sightings.extend(steady("v2.4.0", &pods[1..], 300, 330));
    sightings.extend(steady("v2.4.1", &["payment-bbbb-2"], 320, 900));
    sightings.sort_by_key(|(secs, _, _)| *secs);
    let found = replay(&sightings);
    assert_eq!(found.len(), 1, "{found:#?}");
    let deploy = &found[0];
    assert_eq!(deploy.kind, ChangeKind::Deploy);
    assert_eq!(deploy.source, ChangeSource::Telemetry);
    assert_eq!(deploy.version.as_deref(), Some("v2.4.1"));
    assert_eq!(deploy.time_unix_nanos, T0 + 300 * SECOND);
    assert_eq!(
        deploy.description,
        "payment: new version v2.4.1 (was v2.4.0)"
    );
}

#[test]
fn a_version_back_after_a_pause_is_a_rollback() {
    let mut sightings = steady("v1", &["a"], 0, 300);
    sightings.extend(steady("v2", &["a"], 300, 600));
    sightings.extend(steady("v1", &["a"], 600, 700));
    let found = replay(&sightings);
    let descriptions: Vec<&str> = found.iter().map(|c| c.description.as_str()).collect();
    assert_eq!(
        descriptions,
        [
            "payment: new version v2 (was v1)",
            "payment: version v1 is back (was v2)"
        ]
    );
}

/// Table: instance turnover without a version change, one change each.
#[test]
fn instance_turnover_is_one_change_per_episode() {
    struct Case {
        name: &'static str,
        before: &'static [&'static str],
        after: &'static [&'static str],
        kind: Option<ChangeKind>,
        description: &'static str,
    }
    let cases = [
        Case {
            name: "restart of every pod",
            before: &["p-a", "p-b", "p-c"],
            after: &["p-d", "p-e", "p-f"],
            kind: Some(ChangeKind::Deploy),
            description: "payment: rollout replaced instances (3 new, 3 gone, 3 running, version v1 unchanged)",
        },
        Case {
            name: "scale out",
            before: &["p-a", "p-b"],
            after: &["p-a", "p-b", "p-c", "p-d"],
            kind: Some(ChangeKind::Scale),
            description: "payment: scaled out from 2 to 4 instances",
        },
        Case {
            name: "scale in",
            before: &["p-a", "p-b", "p-c"],
            after: &["p-a"],
            kind: Some(ChangeKind::Scale),
            description: "payment: scaled in from 3 to 1 instances",
        },
        Case {
            name: "nothing changes",
            before: &["p-a", "p-b"],
            after: &["p-a", "p-b"],
            kind: None,
            description: "",
        },
    ];
    for case in cases {
        let mut sightings = steady("v1", case.before, 0, 300);
        sightings.extend(steady("v1", case.after, 300, 900));
        let found = replay(&sightings);
        match case.kind {
            None => assert!(found.is_empty(), "{}: {found:#?}", case.name),
            Some(kind) => {
                assert_eq!(found.len(), 1, "{}: {found:#?}", case.name);
                assert_eq!(found[0].kind, kind, "{}", case.name);
                assert_eq!(found[0].description, case.description, "{}", case.name);
                // The change is dated when the turnover began, not when it
                // was reported.
                assert!(
                    found[0].time_unix_nanos <= T0 + 300 * SECOND,
                    "{}: {}",
                    case.name,
                    found[0].time()
                );
            }
        }
    }
}

#[test]
fn a_rollout_with_a_new_version_is_reported_once() {
    let mut sightings = steady("v1", &["p-a", "p-b"], 0, 300);
    sightings.extend(steady("v2", &["p-c", "p-d"], 300, 900));
    let detector = detector();
    for (secs, version, instance) in &sightings {
        detector.observe_resource("payment", *version, *instance, T0 + secs * SECOND);
    }
    let found = changes(&detector);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].version.as_deref(), Some("v2"));
    assert_eq!(
        detector.counters().merged_rollouts.load(Ordering::Relaxed),
        1
    );
}

#[test]
fn a_quiet_instance_that_returns_is_not_a_change() {
    // p-b is silent for 90 s (longer than the instance timeout) and returns
    // before the rollout debounce: no arrival, no departure.
    let mut sightings = steady("v1", &["p-a", "p-b"], 0, 300);
    sightings.extend(steady("v1", &["p-a"], 300, 390));
    sightings.extend(steady("v1", &["p-a", "p-b"], 390, 900));
    assert_eq!(replay(&sightings), vec![]);
}

#[test]
fn advance_reports_a_rollout_of_a_service_that_went_quiet() {
    let detector = detector();
    for (secs, version, instance) in steady("v1", &["p-a"], 0, 300) {
        detector.observe_resource("payment", version, instance, T0 + secs * SECOND);
    }
    detector.observe_resource("payment", Some("v1"), Some("p-b"), T0 + 300 * SECOND);
    assert!(changes(&detector).is_empty());
    detector.advance(T0 + 360 * SECOND);
    assert!(changes(&detector).is_empty(), "still within the debounce");
    detector.advance(T0 + 421 * SECOND);
    let found = changes(&detector);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, ChangeKind::Scale);
}

/// Flag evaluations: (seconds after T0, variant), one per entry.
fn flags(evaluations: impl IntoIterator<Item = (u64, &'static str)>) -> Vec<Change> {
    let detector = detector();
    for (secs, variant) in evaluations {
        detector.observe_flag("cart", "new-checkout", variant, T0 + secs * SECOND);
    }
    changes(&detector)
}

/// `n` evaluations spread over [from, from + 300) s, every `every`-th one
/// serving `rare` and the rest `common`.
fn period(
    from: u64,
    n: u64,
    common: &'static str,
    rare: &'static str,
    every: u64,
) -> Vec<(u64, &'static str)> {
    (0..n)
        .map(|i| {
            let variant = if every > 0 && i % every == 0 {
                rare
            } else {
                common
            };
            (from + i * 300 / n, variant)
        })
        .collect()
}

#[test]
fn flag_changes() {
    // Periods are aligned to multiples of 300 s of event time; T0 is one.
    struct Case {
        name: &'static str,
        evaluations: Vec<(u64, &'static str)>,
        expected: &'static [(&'static str, &'static str)],
    }
    let cases = [
        Case {
            name: "variants of the baseline period are known",
            evaluations: [
                period(0, 100, "off", "on", 2),
                period(300, 100, "off", "on", 2),
            ]
            .concat(),
            expected: &[],
        },
        Case {
            name: "a new variant after the baseline",
            evaluations: [
                period(0, 100, "off", "off", 0),
                period(300, 100, "on", "on", 0),
            ]
            .concat(),
            expected: &[("on", "cart: flag new-checkout serves a new variant on")],
        },
        Case {
            name: "a rare variant becomes common",
            evaluations: [
                period(0, 100, "off", "on", 50),
                period(300, 100, "off", "on", 50),
                period(600, 100, "off", "on", 2),
            ]
            .concat(),
            expected: &[(
                "on",
                "cart: flag new-checkout variant on rose from 2% to 52% of evaluations",
            )],
        },
        Case {
            name: "a shift below the threshold",
            evaluations: [
                period(0, 100, "off", "on", 50),
                period(300, 100, "off", "on", 50),
                period(600, 100, "off", "on", 10),
            ]
            .concat(),
            expected: &[],
        },
        Case {
            name: "too few evaluations to judge shares",
            evaluations: [
                period(0, 10, "off", "on", 50),
                period(300, 10, "off", "on", 50),
                period(600, 10, "off", "on", 2),
            ]
            .concat(),
            expected: &[],
        },
    ];
    for case in cases {
        let found = flags(case.evaluations);
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|change| {
                assert_eq!(change.kind, ChangeKind::FeatureFlag);
                assert_eq!(change.key.as_deref(), Some("new-checkout"));
                (
                    change.value.as_deref().unwrap_or_default(),
                    change.description.as_str(),
                )
            })
            .collect();
        assert_eq!(got, case.expected, "{}", case.name);
    }
}

#[test]
fn kubernetes_events_are_attributed_and_deduplicated() {
    let detector = detector();
    // A known service: the pod's name starts with it.
    detector.observe_resource("payment-api", Some("v1"), None, T0);
    let event = |reason, kind, name, secs| K8sEvent {
        reason,
        message: "Back-off restarting failed container",
        object_kind: kind,
        object_name: name,
        service: None,
        time_unix_nanos: T0 + secs * SECOND,
    };
    assert!(detector.observe_k8s_event(&event(
        "BackOff",
        "Pod",
        "payment-api-7d9f8c6b5-x2k4q",
        10
    )));
    // The same reason again within the debounce: folded in.
    assert!(!detector.observe_k8s_event(&event(
        "BackOff",
        "Pod",
        "payment-api-7d9f8c6b5-x2k4q",
        40
    )));
    // Routine events are not changes.
    assert!(!detector.observe_k8s_event(&event(
        "Pulled",
        "Pod",
        "payment-api-7d9f8c6b5-x2k4q",
        50
    )));
    // An unknown workload is named from its pod name.
    assert!(detector.observe_k8s_event(&event("OOMKilling", "Pod", "ledger-6b7c9d8f4-bq2zt", 60)));
    assert!(detector.observe_k8s_event(&event("ScalingReplicaSet", "Deployment", "ledger", 70)));
    // Nodes belong to no service.
    assert!(!detector.observe_k8s_event(&event("NodeNotReady", "Node", "node-1", 80)));
    assert!(detector.observe_k8s_event(&event(
        "BackOff",
        "Pod",
        "payment-api-7d9f8c6b5-x2k4q",
        400
    )));
    let found = changes(&detector);
    let got: Vec<(&str, ChangeKind, Option<&str>)> = found
        .iter()
        .map(|change| (change.service.as_str(), change.kind, change.key.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("payment-api", ChangeKind::Infra, Some("BackOff")),
            ("ledger", ChangeKind::Infra, Some("OOMKilling")),
            ("ledger", ChangeKind::Scale, Some("ScalingReplicaSet")),
            ("payment-api", ChangeKind::Infra, Some("BackOff")),
        ]
    );
    assert_eq!(
        found[0].description,
        "payment-api: Kubernetes BackOff on Pod/payment-api-7d9f8c6b5-x2k4q: \
         Back-off restarting failed container"
    );
    assert_eq!(
        found[0].value.as_deref(),
        Some("Pod/payment-api-7d9f8c6b5-x2k4q")
    );
    assert_eq!(detector.counters().deduplicated.load(Ordering::Relaxed), 1);
}

#[test]
fn workload_names() {
    for (kind, name, expected) in [
        ("Pod", "payment-7d9f8c6b5-x2k4q", "payment"),
        ("Pod", "payment-api-5f4b8d7c9b-bq2zt", "payment-api"),
        ("Pod", "postgres-0", "postgres"),
        ("Pod", "node-exporter-z8k2m", "node-exporter"),
        ("Pod", "proxy", "proxy"),
        ("ReplicaSet", "payment-7d9f8c6b5", "payment"),
        ("ReplicaSet", "payment-worker", "payment-worker"),
        ("Deployment", "payment", "payment"),
    ] {
        assert_eq!(workload_name(kind, name), expected, "{kind} {name}");
    }
}

#[test]
fn everything_is_bounded() {
    let detector = detector();
    detector.observe_resource("payment", Some("v0"), Some("p-0"), T0);
    for i in 0..5_000u64 {
        let version = format!("v{i}");
        let instance = format!("p-{i}");
        detector.observe_resource(
            "payment",
            Some(&version),
            Some(&instance),
            T0 + (120 + i) * SECOND,
        );
        let variant = format!("x{i}");
        detector.observe_flag(
            "payment",
            &format!("flag-{}", i % 100),
            &variant,
            T0 + i * SECOND,
        );
    }
    let entry = detector.services.get("payment").expect("tracked");
    let state = entry.lock();
    assert!(state.versions.len() <= MAX_VERSIONS);
    assert!(state.instances.len() <= MAX_INSTANCES);
    assert!(state.flags.len() <= MAX_FLAG_KEYS);
    assert!(state
        .flags
        .iter()
        .all(|flag| flag.variants.len() <= MAX_VARIANTS));
    assert!(detector.counters().overflow.load(Ordering::Relaxed) > 0);
    drop(state);
    drop(entry);
    // New versions are still noticed once the version list is full.
    let before = changes(&detector).len();
    detector.observe_resource("payment", Some("v-final"), None, T0 + 9_000 * SECOND);
    assert_eq!(changes(&detector).len(), before + 1);
}

#[test]
fn a_flip_straddling_a_period_boundary_is_one_change() {
    // `off` only, then `on` only from 10 s before a period boundary: the new
    // variant is reported in one period, and its 100% share in the next is
    // the same flip.
    let mut evaluations: Vec<(u64, &str)> = (0..590).step_by(5).map(|secs| (secs, "off")).collect();
    evaluations.extend((590..1200).step_by(5).map(|secs| (secs, "on")));
    let found = flags(evaluations);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].value.as_deref(), Some("on"));
}

#[test]
fn api_tokens_compare_whole_and_stay_out_of_debug() {
    let token = ApiToken::new("s3cret\n").expect("token");
    assert!(token.matches("s3cret"));
    for wrong in ["s3cre", "s3cret!", "", "S3cret"] {
        assert!(!token.matches(wrong), "{wrong:?}");
    }
    assert!(ApiToken::new("  \n").is_none());
    assert!(!format!("{token:?}").contains("s3cret"));
}
