//! The root-cause faults and their ground truth: each fault shows in the
//! generated telemetry the way its truth says (origin, who inherits it, the
//! change behind it, its scope), and the root-cause scenario set covers
//! every pattern.

use crate::model::PatternKind;
use crate::model::{ChangeKind, ChangeSource};

use super::*;

// === helpers ===

/// The spans of `scenario` (traces only), with its start.
fn traces(scenario: Scenario) -> (Vec<Row>, u64) {
    let start = scenario.start_unix_nanos;
    let batches: Vec<Batch> = Simulator::new(scenario)
        .with_signals(Signals::TRACES)
        .collect();
    (rows(&batches), start)
}

/// Children (CLIENT and PRODUCER spans) by (trace, parent span id).
pub(super) fn children(rows: &[Row]) -> HashMap<(Vec<u8>, Vec<u8>), Vec<&Row>> {
    let mut children: HashMap<(Vec<u8>, Vec<u8>), Vec<&Row>> = HashMap::new();
    for row in rows {
        if row.kind == SpanKind::Client as i32 || row.kind == SpanKind::Producer as i32 {
            children
                .entry((row.trace.clone(), row.parent.clone()))
                .or_default()
                .push(row);
        }
    }
    children
}

/// A span's own (exclusive) time: its duration less the time covered by
/// its outgoing calls.
pub(super) fn exclusive_ms(span: &Row, children: &HashMap<(Vec<u8>, Vec<u8>), Vec<&Row>>) -> f64 {
    let mut intervals: Vec<(u64, u64)> = children
        .get(&(span.trace.clone(), span.id.clone()))
        .map(|calls| {
            calls
                .iter()
                .map(|call| (call.start.max(span.start), call.end.min(span.end)))
                .filter(|(start, end)| start < end)
                .collect()
        })
        .unwrap_or_default();
    intervals.sort_unstable();
    let mut covered = 0;
    let mut reach = span.start;
    for (start, end) in intervals {
        if end > reach {
            covered += end - start.max(reach);
            reach = end;
        }
    }
    (span.end - span.start - covered) as f64 / 1e6
}

fn servers<'a>(rows: &[&'a Row], service: &str, name: Option<&str>) -> Vec<&'a Row> {
    rows.iter()
        .copied()
        .filter(|row| {
            row.service == service
                && (row.kind == SpanKind::Server as i32 || row.kind == SpanKind::Consumer as i32)
                && name.is_none_or(|name| row.name == name)
        })
        .collect()
}

fn median_ms(rows: &[&Row]) -> f64 {
    median(rows.iter().map(|row| row.duration_ms()).collect())
}

/// The single truth of a one-fault scenario.
fn only_truth(scenario: &Scenario) -> GroundTruth {
    let truth = scenario.truth().ground_truth;
    assert_eq!(truth.len(), 1, "{truth:#?}");
    truth.into_iter().next().expect("one truth")
}

/// The `feature_flag.evaluation` events of a span: (key, variant).
fn flag_events(row: &Row) -> Vec<(String, String)> {
    row.events
        .iter()
        .filter(|event| event.name == "feature_flag.evaluation")
        .map(|event| {
            (
                attr_str(&event.attributes, "feature_flag.key")
                    .unwrap_or_default()
                    .to_owned(),
                attr_str(&event.attributes, "feature_flag.result.variant")
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

// === cascades ===

#[test]
fn a_slow_leaf_cascades_to_callers_whose_own_time_stays_flat() {
    let scenario = scenario(180, 15.0, &[("slow:inventory:250", 90)]);
    let truth = only_truth(&scenario);
    assert_eq!(truth.origin, "inventory");
    assert_eq!(
        truth.affected,
        names(&["inventory", "cart", "catalog", "checkout", "frontend"])
    );
    assert_eq!(truth.pattern, None);

    let (rows, start) = traces(scenario);
    let calls = children(&rows);
    let (before, after) = split_at(&rows, start, 90);
    let own = |rows: &[&Row]| median(rows.iter().map(|row| exclusive_ms(row, &calls)).collect());

    // The origin: its own time rose by the delay.
    let (origin_before, origin_after) = (
        servers(&before, "inventory", None),
        servers(&after, "inventory", None),
    );
    assert!(own(&origin_after) - own(&origin_before) > 200.0);

    // Callers two and three levels up: slower by about the delay, own time
    // flat.
    for (service, operation) in [
        ("catalog", "GET /products/{id}"),
        ("cart", "oteldemo.CartService/AddItem"),
        ("checkout", "POST /api/checkout"),
        ("frontend", "GET /products/{id}"),
        ("frontend", "POST /checkout"),
    ] {
        let (then, now) = (
            servers(&before, service, Some(operation)),
            servers(&after, service, Some(operation)),
        );
        let rise = median_ms(&now) - median_ms(&then);
        assert!(rise > 200.0, "{service} {operation}: rose {rise:.0} ms");
        let (own_then, own_now) = (own(&then), own(&now));
        assert!(
            (own_now / own_then - 1.0).abs() < 0.15,
            "{service} {operation}: own time {own_then:.2} -> {own_now:.2} ms"
        );
    }
    // Services outside the truth's list do not move.
    for service in ["payment", "user", "pricing", "currency", "shipping"] {
        assert!(!truth.affected.contains(&service.to_string()));
        let (then, now) = (
            median_ms(&servers(&before, service, None)),
            median_ms(&servers(&after, service, None)),
        );
        assert!(
            (now / then - 1.0).abs() < 0.25,
            "{service}: {then} -> {now}"
        );
    }
}

#[test]
fn a_failing_leaf_fails_three_levels_of_callers_whose_errors_come_from_below() {
    let scenario = scenario(150, 15.0, &[("errors:currency", 60)]);
    let truth = only_truth(&scenario);
    assert_eq!(
        truth.affected,
        names(&["currency", "pricing", "checkout", "frontend"])
    );

    let (rows, start) = traces(scenario);
    let calls = children(&rows);
    let (before, after) = split_at(&rows, start, 60);
    let failing_child = |span: &Row| {
        calls
            .get(&(span.trace.clone(), span.id.clone()))
            .is_some_and(|calls| calls.iter().any(|call| call.error))
    };
    for service in &truth.affected {
        let then = servers(&before, service, None);
        let now = servers(&after, service, None);
        let ratio_now = error_ratio(&now);
        assert!(
            ratio_now > error_ratio(&then) + 0.02,
            "{service}: {} -> {ratio_now}",
            error_ratio(&then)
        );
        let failing: Vec<&&Row> = now.iter().filter(|row| row.error).collect();
        let propagated = failing.iter().filter(|row| failing_child(row)).count();
        if *service == truth.origin {
            // The origin's errors are its own.
            assert!(propagated * 100 <= failing.len(), "{service}: {propagated}");
        } else {
            // The callers' come from a failing call.
            assert!(
                propagated * 10 >= failing.len() * 9,
                "{service}: {propagated} of {}",
                failing.len()
            );
        }
    }
    for service in ["cart", "catalog", "inventory", "payment", "user"] {
        assert!(
            error_ratio(&servers(&after, service, None)) < 0.02,
            "{service}"
        );
    }
}

// === changes: deploys and flags ===

#[test]
fn a_bad_deploy_fails_only_on_the_new_version_and_its_new_pods() {
    let scenario = scenario(240, 20.0, &[("bad-deploy:payment", 60)]);
    let truth = only_truth(&scenario);
    let change = truth.change.clone().expect("a deploy causes it");
    assert_eq!(change.kind, ChangeKind::Deploy);
    assert_eq!(change.source, ChangeSource::Api);
    assert_eq!(change.service, "payment");
    assert_eq!(change.time_unix_nanos, truth.start_unix_nanos);
    let version = change.version.clone().expect("a version");
    assert_eq!(
        truth.scope,
        Some(ScopeAttribute {
            key: "service.version".into(),
            value: version.clone()
        })
    );
    assert_eq!(truth.pattern, Some(PatternKind::BadDeploy));

    let (rows, start) = traces(scenario);
    let (before, after) = split_at(&rows, start, 60);
    let payment_before = servers(&before, "payment", None);
    let payment_after = servers(&after, "payment", None);
    assert!(payment_before.iter().all(|row| row.version != version));
    let new: Vec<&Row> = payment_after
        .iter()
        .copied()
        .filter(|row| row.version == version)
        .collect();
    let old: Vec<&Row> = payment_after
        .iter()
        .copied()
        .filter(|row| row.version != version)
        .collect();
    // The telemetry shows the version change: the new version on new pods.
    let new_pods: BTreeSet<&str> = new.iter().map(|row| row.pod.as_str()).collect();
    let old_pods: BTreeSet<&str> = payment_before.iter().map(|row| row.pod.as_str()).collect();
    assert_eq!(new_pods.len(), 2);
    assert!(new_pods.is_disjoint(&old_pods));
    let first_new = new.iter().map(|row| row.start).min().expect("new spans");
    assert!(first_new >= change.time_unix_nanos && first_new < change.time_unix_nanos + 2 * SECOND);
    // Only the new version fails.
    let failing: Vec<&&Row> = payment_after.iter().filter(|row| row.error).collect();
    assert!(failing.len() >= 10);
    assert!(failing.iter().all(|row| row.version == version));
    assert!(error_ratio(&new) > 0.04 && error_ratio(&old) < 0.01);
}

#[test]
fn a_canary_serves_both_versions_and_only_the_canary_fails() {
    let scenario = scenario(180, 20.0, &[("canary:catalog", 60)]);
    let truth = only_truth(&scenario);
    let version = truth
        .change
        .as_ref()
        .and_then(|change| change.version.clone());
    let version = version.expect("a deploy causes it");
    assert_eq!(
        truth.scope.as_ref().map(|scope| &scope.value),
        Some(&version)
    );

    let (rows, start) = traces(scenario);
    let (_, after) = split_at(&rows, start, 60);
    let catalog = servers(&after, "catalog", None);
    let canary: Vec<&Row> = catalog
        .iter()
        .copied()
        .filter(|row| row.version == version)
        .collect();
    let stable: Vec<&Row> = catalog
        .iter()
        .copied()
        .filter(|row| row.version != version)
        .collect();
    let canary_pods: BTreeSet<&str> = canary.iter().map(|row| row.pod.as_str()).collect();
    assert_eq!(canary_pods.len(), 1, "one pod");
    let share = ratio(canary.len(), catalog.len());
    assert!((0.15..0.45).contains(&share), "canary share {share}");
    let failing = catalog.iter().filter(|row| row.error).count();
    let failing_canary = canary.iter().filter(|row| row.error).count();
    // A few failures elsewhere come from the baseline error rates.
    assert!(
        failing_canary * 5 >= failing * 4,
        "{failing_canary} of {failing}"
    );
    assert!(error_ratio(&canary) > 0.04 && error_ratio(&stable) < 0.01);
}

#[test]
fn a_flag_flip_moves_the_variant_share_and_the_new_variant_fails() {
    let mut scenario = scenario(180, 20.0, &[("flag-flip:checkout:new-checkout-flow", 60)]);
    scenario.benign_changes.push(BenignChange {
        at: Duration::from_secs(30),
        kind: BenignChangeKind::FlagFlip {
            service: "cart".into(),
            flag: "cart-recommendations".into(),
        },
    });
    let truth = only_truth(&scenario);
    let change = truth.change.clone().expect("a flag change causes it");
    assert_eq!(change.kind, ChangeKind::FeatureFlag);
    assert_eq!(change.key.as_deref(), Some("new-checkout-flow"));
    assert_eq!(change.value.as_deref(), Some("on"));
    assert_eq!(
        truth.scope.as_ref().map(|scope| scope.key.as_str()),
        Some("feature_flag.new-checkout-flow")
    );
    assert_eq!(truth.pattern, Some(PatternKind::FlagFlip));
    let changes = scenario.truth().changes;
    let posted: Vec<(&str, Option<&str>, u64)> = changes
        .iter()
        .map(|change| {
            (
                change.service.as_str(),
                change.key.as_deref(),
                (change.time_unix_nanos - scenario.start_unix_nanos) / SECOND,
            )
        })
        .collect();
    assert_eq!(
        posted,
        vec![
            ("cart", Some("cart-recommendations"), 30),
            ("checkout", Some("new-checkout-flow"), 60),
        ]
    );

    let (rows, start) = traces(scenario);
    let (before, after) = split_at(&rows, start, 60);
    let variant = |row: &Row, key: &str| {
        let events = flag_events(row);
        assert_eq!(events.len(), 1, "one evaluation per request: {events:?}");
        assert_eq!(events[0].0, key);
        events[0].1.clone()
    };
    let checkout_before = servers(&before, "checkout", None);
    assert!(checkout_before
        .iter()
        .all(|row| variant(row, "new-checkout-flow") == "off"));
    let checkout_after = servers(&after, "checkout", None);
    let (on, off): (Vec<&Row>, Vec<&Row>) = checkout_after
        .iter()
        .partition(|row| variant(row, "new-checkout-flow") == "on");
    let share = ratio(on.len(), checkout_after.len());
    assert!((0.35..0.65).contains(&share), "on share {share}");
    assert!(error_ratio(&on) > 0.15 && error_ratio(&off) < 0.03);

    // The harmless flag: flipped too, but both variants behave alike.
    let (_, cart_after) = split_at(&rows, start, 30);
    let cart = servers(&cart_after, "cart", None);
    let (on, off): (Vec<&Row>, Vec<&Row>) = cart
        .iter()
        .partition(|row| variant(row, "cart-recommendations") == "on");
    assert!((0.35..0.65).contains(&ratio(on.len(), cart.len())));
    assert!(error_ratio(&on) < 0.03 && error_ratio(&off) < 0.03);
    // Services without a flag carry no evaluation.
    assert!(rows
        .iter()
        .filter(|row| row.service == "payment")
        .all(|row| flag_events(row).is_empty()));
}

#[test]
fn posted_changes_show_in_the_telemetry_at_their_time() {
    // Random benign deploys, a planned one, a bad deploy with a rollback and
    // a harmless flag: every posted deploy's version serves from its time on.
    let mut scenario = Scenario {
        seed: 11,
        duration: Duration::from_secs(2 * 3600),
        entry_rate_per_sec: 2.0,
        faults: vec![Fault {
            kind: parse_fault("bad-deploy:payment").unwrap(),
            start: Duration::from_secs(100 * 60),
            duration: Some(Duration::from_secs(10 * 60)),
        }],
        daily_shape: false,
        ..Scenario::default()
    };
    scenario.benign_changes = vec![
        BenignChange {
            at: Duration::from_secs(5 * 60),
            kind: BenignChangeKind::Deploy {
                service: "cart".into(),
            },
        },
        BenignChange {
            at: Duration::from_secs(7 * 60),
            kind: BenignChangeKind::FlagFlip {
                service: "frontend".into(),
                flag: "product-page-v2".into(),
            },
        },
    ];
    let simulator = Simulator::new(scenario.clone());
    let changes = simulator.changes().to_vec();
    let deploys: Vec<_> = changes
        .iter()
        .filter(|change| change.kind == ChangeKind::Deploy)
        .collect();
    // The random ones, the planned one, the bad one and its rollback.
    assert!(deploys.len() >= 5, "{deploys:#?}");
    assert!(changes
        .windows(2)
        .all(|pair| pair[0].time_unix_nanos <= pair[1].time_unix_nanos));
    assert!(changes
        .iter()
        .all(|change| change.source == ChangeSource::Api && change.link.is_some()));
    let rollback = deploys
        .iter()
        .find(|change| change.description.starts_with("roll back"))
        .expect("a rollback");
    assert_eq!(rollback.service, "payment");
    assert_eq!(rollback.version.as_deref(), Some("1.4.1"));

    let rows = rows(&simulator.with_signals(Signals::TRACES).collect::<Vec<_>>());
    for change in &deploys {
        let version = change.version.as_deref().expect("deploys have versions");
        let seen = |from: u64, to: u64| {
            rows.iter().any(|row| {
                row.service == change.service
                    && row.version == version
                    && row.start >= from
                    && row.start < to
            })
        };
        let time = change.time_unix_nanos;
        assert!(
            seen(time, time + 10 * 60 * SECOND),
            "{} {version} not seen after {}",
            change.service,
            change.time()
        );
        let new = !change.description.starts_with("roll back");
        assert!(
            !new || !seen(0, time),
            "{} {version} seen before",
            change.service
        );
    }
    let flag_on = rows
        .iter()
        .filter(|row| flag_events(row).iter().any(|(_, variant)| variant == "on"))
        .map(|row| row.start)
        .min()
        .expect("the flag serves on");
    let flag_change = changes
        .iter()
        .find(|change| change.kind == ChangeKind::FeatureFlag)
        .expect("the flag change is posted");
    assert!(flag_on >= flag_change.time_unix_nanos);
}

// === retries and timeouts ===

/// A call from checkout to payment.
fn is_charge(row: &Row) -> bool {
    row.is("checkout", SpanKind::Client) && row.name == "oteldemo.PaymentService/Charge"
}

#[test]
fn a_retry_storm_repeats_client_spans_under_one_parent() {
    let scenario = scenario(150, 15.0, &[("retry-storm:checkout:payment", 60)]);
    let truth = only_truth(&scenario);
    assert_eq!(truth.origin, "payment");
    assert_eq!(
        truth.edge,
        Some(TruthEdge {
            caller: "checkout".into(),
            callee: "payment".into()
        })
    );
    assert_eq!(truth.pattern, Some(PatternKind::RetryStorm));

    let (rows, start) = traces(scenario);
    let (before, after) = split_at(&rows, start, 60);
    let per_parent = |rows: &[&Row]| {
        let mut counts: BTreeMap<(Vec<u8>, Vec<u8>), usize> = BTreeMap::new();
        for row in rows.iter().filter(|row| is_charge(row)) {
            *counts
                .entry((row.trace.clone(), row.parent.clone()))
                .or_default() += 1;
        }
        counts
    };
    let (then, now) = (per_parent(&before), per_parent(&after));
    assert!(then.values().all(|&count| count == 1));
    assert!(now.values().any(|&count| count >= 3));
    let calls_then = then.values().sum::<usize>() as f64 / then.len() as f64;
    let calls_now = now.values().sum::<usize>() as f64 / now.len() as f64;
    assert!(calls_now > 2.0 * calls_then, "{calls_then} -> {calls_now}");
}

#[test]
fn timeouts_pile_up_at_the_ceiling_while_a_missing_timeout_follows_the_callee() {
    let ceiling = fault::TIMEOUT_CEILING_MS;

    let with = scenario(150, 20.0, &[("timeouts:checkout:payment", 60)]);
    let truth = only_truth(&with);
    assert_eq!(truth.pattern, Some(PatternKind::TimeoutsFiring));
    assert_eq!(truth.origin, "payment");
    let (rows, start) = traces(with);
    let (before, after) = split_at(&rows, start, 60);
    // No timeouts before the fault.
    assert!(before
        .iter()
        .filter(|row| is_charge(row))
        .all(|row| row.duration_ms() < 1_000.0));
    let calls: Vec<&Row> = after.iter().copied().filter(|row| is_charge(row)).collect();
    assert!(calls.len() > 100);
    assert!(calls.iter().all(|row| row.duration_ms() <= ceiling + 0.001));
    let timed_out: Vec<&&Row> = calls
        .iter()
        .filter(|row| row.duration_ms() >= ceiling - 0.001)
        .collect();
    assert!(
        timed_out.len() * 2 > calls.len(),
        "{} of {}",
        timed_out.len(),
        calls.len()
    );
    for row in &timed_out {
        assert!(row.error);
        assert_eq!(attr_int(&row.attributes, "rpc.grpc.status_code"), Some(4));
        assert_eq!(row.str("error.type"), Some("DEADLINE_EXCEEDED"));
    }
    // The callee keeps working after the caller gave up.
    let payment = servers(&after, "payment", None);
    assert!(
        payment
            .iter()
            .filter(|row| row.duration_ms() > ceiling)
            .count()
            * 2
            > payment.len()
    );

    let without = scenario(150, 20.0, &[("missing-timeout:checkout:payment", 60)]);
    let truth = only_truth(&without);
    assert_eq!(truth.pattern, Some(PatternKind::MissingTimeout));
    assert_eq!(
        truth.edge.as_ref().map(|edge| edge.caller.as_str()),
        Some("checkout")
    );
    let (rows, start) = traces(without);
    let by_parent: HashMap<(&[u8], &[u8]), &Row> = rows
        .iter()
        .filter(|row| row.is("payment", SpanKind::Server))
        .map(|row| ((row.trace.as_slice(), row.parent.as_slice()), row))
        .collect();
    let (_, after) = split_at(&rows, start, 60);
    let calls: Vec<&Row> = after.iter().copied().filter(|row| is_charge(row)).collect();
    let durations: Vec<f64> = calls.iter().map(|row| row.duration_ms()).collect();
    assert!(median(durations.clone()) > 2_500.0);
    assert!(
        durations.iter().any(|&ms| ms > 6_000.0),
        "an unbounded tail"
    );
    assert!(calls
        .iter()
        .all(|row| attr_int(&row.attributes, "rpc.grpc.status_code") != Some(4)));
    // The caller waits for the whole of the callee's time.
    for call in &calls {
        let served = by_parent[&(call.trace.as_slice(), call.id.as_slice())];
        assert!(call.duration_ms() > served.duration_ms());
    }
}

// === scoped faults ===

#[test]
fn a_region_scoped_fault_fails_only_that_region() {
    let scenario = scenario(
        150,
        15.0,
        &[("errors:inventory@cloud.region=eu-west-1", 60)],
    );
    let truth = only_truth(&scenario);
    assert_eq!(
        truth.scope,
        Some(ScopeAttribute {
            key: "cloud.region".into(),
            value: "eu-west-1".into()
        })
    );
    let (rows, start) = traces(scenario);
    let (_, after) = split_at(&rows, start, 60);
    let inventory = servers(&after, "inventory", None);
    let (eu, us): (Vec<&Row>, Vec<&Row>) =
        inventory.iter().partition(|row| row.region == "eu-west-1");
    assert!(error_ratio(&eu) > 0.3, "{}", error_ratio(&eu));
    assert!(error_ratio(&us) < 0.02, "{}", error_ratio(&us));
}

#[test]
fn a_pod_scoped_fault_slows_only_that_pod() {
    let scenario = scenario(150, 15.0, &[("slow:cart:400@pod=1", 60)]);
    let truth = only_truth(&scenario);
    let scope = truth.scope.expect("scoped");
    assert_eq!(scope.key, "k8s.pod.name");
    assert!(scope.value.starts_with("cart-"));
    let (rows, start) = traces(scenario);
    let (before, after) = split_at(&rows, start, 60);
    let on_pod = |rows: &[&Row], pod: bool| -> Vec<Row> {
        servers(rows, "cart", None)
            .into_iter()
            .filter(|row| (row.pod == scope.value) == pod)
            .cloned()
            .collect()
    };
    let median_of = |rows: Vec<Row>| median(rows.iter().map(Row::duration_ms).collect());
    assert_eq!(
        servers(&before, "cart", None)
            .iter()
            .map(|row| row.pod.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
        4
    );
    assert!(median_of(on_pod(&before, true)) < 50.0);
    assert!(median_of(on_pod(&after, true)) > 400.0);
    assert!(median_of(on_pod(&after, false)) < 50.0);
}

#[test]
fn a_data_issue_fails_only_one_tenant_on_one_route() {
    let spec = "errors:catalog:/products/{id}@app.tenant=initech";
    let scenario = scenario(150, 15.0, &[(spec, 60)]);
    let truth = only_truth(&scenario);
    assert_eq!(truth.pattern, Some(PatternKind::DataIssue));
    assert_eq!(truth.operation.as_deref(), Some("GET /products/{id}"));
    assert_eq!(
        truth.scope,
        Some(ScopeAttribute {
            key: "app.tenant".into(),
            value: "initech".into()
        })
    );
    let (rows, start) = traces(scenario);
    // Every server span carries the tenant, from the start of the run.
    let server_rows: Vec<&Row> = rows
        .iter()
        .filter(|row| row.kind == SpanKind::Server as i32)
        .collect();
    assert!(server_rows
        .iter()
        .all(|row| row.str("app.tenant").is_some()));
    let initech = server_rows
        .iter()
        .filter(|row| row.str("app.tenant") == Some("initech"))
        .count();
    assert!((0.15..0.25).contains(&ratio(initech, server_rows.len())));

    let (_, after) = split_at(&rows, start, 60);
    let route = servers(&after, "catalog", Some("GET /products/{id}"));
    let bad = tenant(route.clone(), true);
    assert!(error_ratio(&bad) > 0.3, "{}", error_ratio(&bad));
    assert!(error_ratio(&tenant(route, false)) < 0.02);
    assert!(
        error_ratio(&tenant(
            servers(&after, "catalog", Some("GET /products")),
            true
        )) < 0.02
    );
    assert!(bad.iter().filter(|row| row.error).all(|row| {
        row.events.iter().any(|event| {
            attr_str(&event.attributes, "exception.type") == Some("DataIntegrityError")
        })
    }));
}

/// The rows whose trace is (or is not) of tenant initech.
fn tenant(rows: Vec<&Row>, initech: bool) -> Vec<&Row> {
    rows.into_iter()
        .filter(|row| (row.str("app.tenant") == Some("initech")) == initech)
        .collect()
}

// === the scenario set ===

#[test]
fn rca_scenarios_cover_every_pattern_and_scope_with_ground_truth() {
    let scenarios = rca_scenarios();
    let mut patterns = BTreeSet::new();
    let mut scopes = BTreeSet::new();
    for (name, scenario) in &scenarios {
        assert!(Simulator::try_new(scenario.clone()).is_ok(), "{name}");
        assert!(scenario.duration <= Duration::from_secs(20 * 60), "{name}");
        let all = scenario.truth();
        assert_eq!(all.ground_truth.len(), scenario.faults.len(), "{name}");
        for (fault, truth) in scenario.faults.iter().zip(&all.ground_truth) {
            assert!(
                fault.start >= Duration::from_secs(8 * 60),
                "{name}: warm-up"
            );
            assert_eq!(truth.fault, fault.kind.to_string());
            assert_eq!(truth.origin, fault.kind.service());
            assert_eq!(truth.affected.first(), Some(&truth.origin));
            patterns.extend(truth.pattern);
            scopes.extend(truth.scope.as_ref().map(|scope| scope.key.clone()));
            if let Some(change) = &truth.change {
                assert_eq!(change.source, ChangeSource::Api);
                assert!(all.changes.contains(change), "{name}: the cause is posted");
            }
            // Distractors: on other services, shortly before the fault.
            for benign in &scenario.benign_changes {
                let service = match &benign.kind {
                    BenignChangeKind::Deploy { service }
                    | BenignChangeKind::FlagFlip { service, .. } => service,
                };
                assert_ne!(service, &truth.origin, "{name}");
                assert!(
                    benign.at < fault.start && fault.start - benign.at <= Duration::from_secs(180)
                );
            }
        }
        // Every planned change is posted, with the harmful ones.
        let posted = all.changes.len();
        let causing = all
            .ground_truth
            .iter()
            .filter(|t| t.change.is_some())
            .count();
        assert_eq!(posted, scenario.benign_changes.len() + causing, "{name}");
        // The truth survives JSON.
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<ScenarioTruth>(&json).unwrap(), all);
    }
    let expected = [
        PatternKind::RetryStorm,
        PatternKind::TimeoutsFiring,
        PatternKind::MissingTimeout,
        PatternKind::PoolWait,
        PatternKind::ResourceContention,
        PatternKind::DataIssue,
        PatternKind::BadDeploy,
        PatternKind::FlagFlip,
        PatternKind::DependencyDown,
    ];
    for pattern in expected {
        assert!(patterns.contains(&pattern), "{pattern:?} missing");
    }
    for key in [
        "cloud.region",
        "k8s.pod.name",
        "service.version",
        "app.tenant",
        "feature_flag.new-checkout-flow",
    ] {
        assert!(scopes.contains(key), "{key} missing: {scopes:?}");
    }
    let find = |wanted: &str| {
        scenarios
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, scenario)| scenario.truth())
            .expect("scenario exists")
    };
    // Three levels of callers inherit the failing leaf.
    assert_eq!(find("rca-cascade-errors").ground_truth[0].affected.len(), 4);
    // Two faults with unrelated origins.
    let two = find("rca-two-faults").ground_truth;
    assert_eq!(two.len(), 2);
    assert_ne!(two[0].origin, two[1].origin);
    assert!(!two[0].affected.contains(&two[1].origin) && !two[1].affected.contains(&two[0].origin));
    // Changes and no fault.
    let quiet = find("rca-changes-only");
    assert!(quiet.ground_truth.is_empty() && quiet.changes.len() == 2);
    // Every set member is reachable by name, and a seed changes the pods.
    for (name, _) in &scenarios {
        let args = SimulateArgs {
            scenario_option: Some(name.to_string()),
            ..SimulateArgs::default()
        };
        assert!(args.to_scenario().is_ok(), "{name}");
    }
    let (_, pod) = scenarios
        .iter()
        .find(|(name, _)| *name == "rca-pod")
        .cloned()
        .expect("rca-pod");
    let mut reseeded = pod.clone();
    reseeded.seed = 2;
    assert_eq!(pod.truth(), pod.truth());
    assert_ne!(
        pod.truth().ground_truth[0].scope,
        reseeded.truth().ground_truth[0].scope
    );
}

// === determinism and conventions ===

/// Every newer feature at once, briefly.
fn everything(seed: u64) -> Scenario {
    let mut scenario = scenario(
        60,
        15.0,
        &[
            ("flag-flip:checkout:new-checkout-flow", 10),
            ("timeouts:checkout:payment", 10),
            ("errors:catalog@app.tenant=acme", 10),
            ("slow:cart:100@pod=0", 10),
            ("errors:inventory@cloud.region=us-east-1", 10),
            ("canary:user", 10),
            ("down:shipping", 10),
            ("retry-storm:frontend:cart", 10),
        ],
    );
    scenario.seed = seed;
    scenario.benign_changes.push(BenignChange {
        at: Duration::from_secs(5),
        kind: BenignChangeKind::Deploy {
            service: "pricing".into(),
        },
    });
    scenario
}

#[test]
fn new_faults_are_deterministic_per_seed() {
    assert_eq!(json_lines(everything(1)), json_lines(everything(1)));
    assert_ne!(json_lines(everything(1)), json_lines(everything(2)));
    assert_eq!(everything(1).truth(), everything(1).truth());
}

#[test]
fn failed_spans_carry_error_type_and_flags_follow_the_conventions() {
    let (rows, _) = traces(everything(3));
    let failed: Vec<&Row> = rows.iter().filter(|row| row.error).collect();
    assert!(failed.len() > 100);
    for row in &failed {
        assert!(
            row.str("error.type").is_some(),
            "{} {} {:?} has no error.type",
            row.service,
            row.name,
            row.kind
        );
    }
    // Each kind of failing span is there: server, client, database.
    let kinds: BTreeSet<i32> = failed.iter().map(|row| row.kind).collect();
    assert!(
        kinds.contains(&(SpanKind::Server as i32)) && kinds.contains(&(SpanKind::Client as i32))
    );
    for row in rows
        .iter()
        .filter(|row| row.service == "checkout" && row.kind == SpanKind::Server as i32)
    {
        let event = row
            .events
            .iter()
            .find(|event| event.name == "feature_flag.evaluation")
            .expect("checkout evaluates its flag");
        for key in [
            "feature_flag.key",
            "feature_flag.result.variant",
            "feature_flag.provider.name",
            "feature_flag.result.reason",
        ] {
            assert!(attr_str(&event.attributes, key).is_some(), "{key}");
        }
        assert!(event.time_unix_nano >= row.start && event.time_unix_nano <= row.end);
    }
}

#[tokio::test]
async fn simulate_writes_the_truth_next_to_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (out, truth) = (
        dir.path().join("run.jsonl"),
        dir.path().join("run.truth.json"),
    );
    let args = SimulateArgs {
        faults: vec!["canary:catalog".into()],
        fault_at: vec!["5s".into()],
        duration: Some("10s".into()),
        rate: Some(2.0),
        no_benign_deploys: true,
        out: Some(out.clone()),
        truth: Some(truth.clone()),
        ..SimulateArgs::default()
    };
    run_simulate(args).await.unwrap();
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    let written: ScenarioTruth = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    assert_eq!(written.ground_truth.len(), 1);
    assert_eq!(
        written.ground_truth[0].pattern,
        Some(PatternKind::BadDeploy)
    );
    assert_eq!(written.changes.len(), 1);
    assert_eq!(
        written.ground_truth[0].change.as_ref(),
        written.changes.first()
    );

    // Without a fault that fits, nothing is written.
    let args = SimulateArgs {
        faults: vec!["canary:nope".into()],
        fault_at: vec!["5s".into()],
        truth: Some(dir.path().join("never.json")),
        ..SimulateArgs::default()
    };
    assert!(run_simulate(args).await.is_err());
    assert!(!dir.path().join("never.json").exists());

    // Writing to a device (which cannot be synced) is not an error.
    if cfg!(unix) {
        let args = SimulateArgs {
            duration: Some("2s".into()),
            rate: Some(1.0),
            out: Some("/dev/null".into()),
            ..SimulateArgs::default()
        };
        run_simulate(args).await.unwrap();
    }
}
