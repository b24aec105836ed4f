use std::sync::Arc;
use std::time::Duration;

use super::*;

const KIND_INTERNAL: i32 = 1;
use crate::ingest::Ingest;
use crate::model::{ResourceAttributes, SpanAttributes};
use crate::store::ManualClock;

#[test]
fn own_time_subtracts_the_union_of_children() {
    let mut scratch = Vec::new();
    let mut own = |start, end, children: &[(u64, u64)]| {
        own_time(start, end, children.iter().copied(), &mut scratch)
    };
    // No children: all of it.
    assert_eq!(own(100, 200, &[]), 100);
    // Disjoint children.
    assert_eq!(own(0, 100, &[(10, 20), (50, 70)]), 70);
    // Overlapping (parallel calls) count once.
    assert_eq!(own(0, 100, &[(10, 40), (30, 60), (55, 58)]), 50);
    // Nested (a child inside another child's interval).
    assert_eq!(own(0, 100, &[(10, 90), (20, 30)]), 20);
    // Children sticking out of the parent (clock skew) are clipped.
    assert_eq!(own(100, 200, &[(50, 150), (190, 400)]), 40);
    // A child covering the parent entirely: no own time.
    assert_eq!(own(100, 200, &[(0, 1_000)]), 0);
    // Unsorted input, empty intervals.
    assert_eq!(own(0, 100, &[(60, 80), (5, 5), (0, 10)]), 70);
}

#[test]
fn error_origin_rules() {
    use ChildFailure::*;
    let cases: &[(bool, &[ChildFailure], Origin)] = &[
        (false, &[CallPropagated], Origin::Ok),
        (true, &[], Origin::Local),
        (true, &[CallLocal], Origin::Local),
        (true, &[CallPropagated], Origin::Propagated),
        (true, &[Handled], Origin::Propagated),
        (true, &[CallPropagated, CallLocal], Origin::Local),
        (true, &[CallUnknown], Origin::Unknown),
        (true, &[CallUnknown, CallPropagated], Origin::Unknown),
    ];
    for (failed, children, expected) in cases {
        assert_eq!(
            error_origin(*failed, children),
            *expected,
            "{failed} {children:?}"
        );
    }
}

/// A test harness: a store on a manual clock, an analyzer on it, and the
/// ingest path that feeds both.
struct Harness {
    clock: Arc<ManualClock>,
    store: Arc<Store>,
    spans: Arc<SpanAnalyzer>,
    ingest: Ingest,
}

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_000 * SECOND;

fn harness(config: SpanConfig) -> Harness {
    let clock = Arc::new(ManualClock::new(T0));
    let store_config = StoreConfig {
        window: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let spans = Arc::new(SpanAnalyzer::new(config, &store_config));
    let store = Arc::new(Store::with_clock(store_config, clock.clone()));
    Harness {
        ingest: Ingest::new(Arc::clone(&store)).with_spans(Arc::clone(&spans)),
        store,
        clock,
        spans,
    }
}

/// A span under construction. Ids are small numbers.
#[derive(Clone)]
struct TestSpan {
    service: &'static str,
    trace: u8,
    id: u8,
    parent: Option<u8>,
    kind: i32,
    name: &'static str,
    start: u64,
    end: u64,
    failed: bool,
    db: bool,
    version: Option<&'static str>,
    region: Option<&'static str>,
    peer: Option<&'static str>,
}

fn span(service: &'static str, id: u8, parent: Option<u8>, kind: i32) -> TestSpan {
    TestSpan {
        service,
        trace: 1,
        id,
        parent,
        kind,
        name: "op",
        start: T0 - SECOND,
        end: T0,
        failed: false,
        db: false,
        version: None,
        region: None,
        peer: None,
    }
}

impl TestSpan {
    fn times(mut self, start_ms: u64, end_ms: u64) -> Self {
        self.start = T0 - SECOND + start_ms * 1_000_000;
        self.end = T0 - SECOND + end_ms * 1_000_000;
        self
    }
    fn failed(mut self) -> Self {
        self.failed = true;
        self
    }
    fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

/// Owns the id bytes the borrowed views point into.
struct Ids {
    ids: Vec<([u8; 16], [u8; 8], [u8; 8])>,
}

fn ids(spans: &[TestSpan]) -> Ids {
    Ids {
        ids: spans
            .iter()
            .map(|span| {
                (
                    [span.trace; 16],
                    [span.id; 8],
                    [span.parent.unwrap_or(0); 8],
                )
            })
            .collect(),
    }
}

/// Feeds spans as one request, one resource per service, version and
/// region, in the order given.
fn feed(harness: &Harness, spans: &[TestSpan]) {
    let ids = ids(spans);
    let mut batch = TraceBatch::default();
    type Resource = (&'static str, Option<&'static str>, Option<&'static str>);
    let mut resources: Vec<Resource> = Vec::new();
    for span in spans {
        let resource = (span.service, span.version, span.region);
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    for (service, version, region) in resources {
        let first = batch.spans.len();
        for (span, (trace, id, parent)) in spans.iter().zip(&ids.ids) {
            if (span.service, span.version, span.region) != (service, version, region) {
                continue;
            }
            batch.spans.push(SpanView {
                trace_id: trace,
                span_id: id,
                parent_span_id: if span.parent.is_some() { parent } else { &[] },
                name: span.name,
                kind: span.kind,
                start_time_unix_nano: span.start,
                end_time_unix_nano: span.end,
                status_code: if span.failed { STATUS_ERROR } else { 0 },
                attributes: SpanAttributes {
                    db_system: span.db.then_some("postgresql"),
                    peer_service: span.peer,
                    ..SpanAttributes::default()
                },
            });
        }
        batch.resources.push(ResourceView {
            service_name: Some(service),
            attributes: ResourceAttributes {
                service_version: version,
                cloud_region: region,
                ..ResourceAttributes::default()
            },
            spans: first..batch.spans.len(),
        });
    }
    let outcome = harness.ingest.record_batch(&batch);
    assert_eq!(outcome.rejected, 0, "{}", outcome.error_message);
}

fn own_stats(harness: &Harness, service: &str, operation: &str) -> (u64, u64, Option<f64>) {
    let key = SeriesKey::new(SeriesKind::Own, service, operation);
    let stats = harness
        .store
        .stats(&key, 0, u64::MAX)
        .unwrap_or_else(|| panic!("no own series {service}/{operation}"));
    (stats.requests, stats.errors, stats.max)
}

#[test]
fn own_time_and_local_errors_through_the_buffer() {
    let harness = harness(SpanConfig::default());
    // frontend SERVER (0-100 ms) -> CLIENT (10-60 ms) -> payment SERVER
    // (15-55 ms) -> db CLIENT (20-50 ms, failing).
    feed(
        &harness,
        &[
            span("payment", 4, Some(3), KIND_CLIENT)
                .times(20, 50)
                .failed()
                .db_call(),
            span("payment", 3, Some(2), KIND_SERVER)
                .times(15, 55)
                .failed()
                .named("pay"),
            span("frontend", 2, Some(1), KIND_CLIENT)
                .times(10, 60)
                .failed(),
            span("frontend", 1, None, KIND_SERVER)
                .times(0, 100)
                .failed()
                .named("checkout"),
        ],
    );
    // payment: own 40 - 30 = 10 ms, error local (its database call failed
    // with no traced callee).
    let (requests, errors, max) = own_stats(&harness, "payment", "pay");
    assert_eq!((requests, errors), (1, 1));
    assert!((max.expect("latency") - 10.0).abs() < 0.5, "{max:?}");
    // frontend: own 100 - 50 = 50 ms, error propagated from payment.
    let (requests, errors, max) = own_stats(&harness, "frontend", "checkout");
    assert_eq!((requests, errors), (1, 0));
    assert!((max.expect("latency") - 50.0).abs() < 0.5, "{max:?}");
    assert_eq!(harness.spans.pending_len(), 0);
    assert!(harness.spans.buffer().is_empty(), "families were taken");
}

#[test]
fn a_failing_call_waits_for_its_callee_then_times_out_as_local() {
    let harness = harness(SpanConfig::default());
    // The callee's server span comes in a later request.
    feed(
        &harness,
        &[
            span("frontend", 2, Some(1), KIND_CLIENT)
                .times(10, 60)
                .failed(),
            span("frontend", 1, None, KIND_SERVER)
                .times(0, 100)
                .failed()
                .named("checkout"),
        ],
    );
    assert_eq!(harness.spans.pending_len(), 1);
    let key = SeriesKey::new(SeriesKind::Own, "frontend", "checkout");
    assert!(
        harness.store.stats(&key, 0, u64::MAX).is_none(),
        "judged only once the callee is known"
    );
    feed(
        &harness,
        &[span("payment", 3, Some(2), KIND_SERVER)
            .times(15, 55)
            .failed()
            .named("pay")],
    );
    harness.spans.expire(&harness.store);
    assert_eq!(
        own_stats(&harness, "frontend", "checkout").1,
        0,
        "propagated"
    );

    // Another trace whose callee never shows up: local after the wait.
    let mut lonely = [
        span("frontend", 12, Some(11), KIND_CLIENT)
            .times(10, 60)
            .failed(),
        span("frontend", 11, None, KIND_SERVER)
            .times(0, 100)
            .failed()
            .named("checkout"),
    ];
    for span in &mut lonely {
        span.trace = 2;
    }
    feed(&harness, &lonely);
    harness.spans.expire(&harness.store);
    assert_eq!(harness.spans.pending_len(), 1, "still within the wait");
    harness.clock.set(T0 + 6 * SECOND);
    harness.spans.expire(&harness.store);
    assert_eq!(harness.spans.pending_len(), 0);
    let (requests, errors, _) = own_stats(&harness, "frontend", "checkout");
    assert_eq!((requests, errors), (2, 1), "the lonely failure is local");
    assert_eq!(harness.spans.counters.timed_out.load(Ordering::Relaxed), 1);
}

#[test]
fn a_failing_call_to_a_healthy_callee_is_the_callers_own_error() {
    let harness = harness(SpanConfig::default());
    feed(
        &harness,
        &[
            span("payment", 3, Some(2), KIND_SERVER)
                .times(15, 55)
                .named("pay"),
            span("frontend", 2, Some(1), KIND_CLIENT)
                .times(10, 60)
                .failed(),
            span("frontend", 1, None, KIND_SERVER)
                .times(0, 100)
                .failed()
                .named("checkout"),
        ],
    );
    assert_eq!(own_stats(&harness, "frontend", "checkout").1, 1);
    assert_eq!(own_stats(&harness, "payment", "pay").1, 0);
}

#[test]
fn retries_are_repeated_calls_under_one_parent() {
    let harness = harness(SpanConfig::default());
    let mut spans = Vec::new();
    // Parent 1 calls payment three times (two retries) and the database
    // once; parent 10 calls payment once.
    for (id, start) in [(2u8, 0u64), (3, 20), (4, 40)] {
        spans.push(span("payment", id + 100, Some(id), KIND_SERVER).times(start + 1, start + 9));
        spans.push(span("frontend", id, Some(1), KIND_CLIENT).times(start, start + 10));
    }
    spans.push(
        span("frontend", 5, Some(1), KIND_CLIENT)
            .times(60, 70)
            .db_call(),
    );
    spans.push(span("frontend", 1, None, KIND_SERVER).times(0, 100));
    spans.push(span("payment", 111, Some(11), KIND_SERVER).times(1, 9));
    spans.push(span("frontend", 11, Some(10), KIND_CLIENT).times(0, 10));
    spans.push(span("frontend", 10, None, KIND_SERVER).times(0, 20));
    feed(&harness, &spans);
    let window = harness.store.window_index(T0);
    let calls = harness
        .spans
        .edge_calls("frontend", "payment", window - 1..window + 1);
    assert_eq!(
        calls,
        CallStats {
            calls: 4,
            parents: 2,
            repeated: 2
        }
    );
    let database = harness
        .spans
        .edge_calls("frontend", "postgresql", window - 1..window + 1);
    assert_eq!(
        database,
        CallStats {
            calls: 1,
            parents: 1,
            repeated: 0
        }
    );
    // Outside the windows asked for: nothing.
    assert_eq!(
        harness
            .spans
            .edge_calls("frontend", "payment", 0..window - 5),
        CallStats::default()
    );
}

#[test]
fn calls_wait_for_their_callee_name_within_the_pairing_timeout() {
    let harness = harness(SpanConfig::default());
    let mut caller = span("frontend", 2, Some(1), KIND_CLIENT).times(10, 60);
    caller.peer = Some("payment-lb");
    feed(
        &harness,
        &[caller, span("frontend", 1, None, KIND_SERVER).times(0, 100)],
    );
    // The own sample is recorded at once; the call waits for its name.
    assert_eq!(own_stats(&harness, "frontend", "op").0, 1);
    assert_eq!(harness.spans.pending_len(), 1);
    feed(
        &harness,
        &[span("payment", 3, Some(2), KIND_SERVER).times(15, 55)],
    );
    harness.spans.expire(&harness.store);
    let window = harness.store.window_index(T0);
    assert_eq!(
        harness
            .spans
            .edge_calls("frontend", "payment", window - 1..window + 1)
            .calls,
        1
    );
    assert_eq!(own_stats(&harness, "frontend", "op").0, 1, "not twice");
}

impl TestSpan {
    fn db_call(mut self) -> Self {
        self.db = true;
        self
    }
}

#[test]
fn sketch_error_bounds_and_boundedness() {
    let mut sketch = SpaceSaving::new(32);
    // 100,000 distinct values, plus three heavy hitters.
    let mut truth: HashMap<String, u64> = HashMap::new();
    let mut state: u64 = 42;
    for n in 0..200_000u64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let value = match n % 10 {
            0..=2 => "v1.4.2".to_string(),
            3 | 4 => "v1.4.1".to_string(),
            5 => "canary".to_string(),
            _ => format!("tenant-{}", state % 100_000),
        };
        *truth.entry(value.clone()).or_default() += 1;
        sketch.add(&value, value_hash(&value), 1);
    }
    assert_eq!(sketch.counters().len(), 32, "bounded");
    assert_eq!(sketch.total(), 200_000);
    let bound = sketch.total() / 32;
    for counter in sketch.counters() {
        let actual = truth[&counter.value];
        assert!(counter.count >= actual, "upper bound for {}", counter.value);
        assert!(
            counter.count - counter.error <= actual,
            "lower bound for {}",
            counter.value
        );
        assert!(counter.error <= bound);
    }
    // Every value above total / capacity holds a counter, with its share
    // within total / capacity of the truth.
    for heavy in ["v1.4.2", "v1.4.1", "canary"] {
        let counter = sketch
            .counters()
            .iter()
            .find(|counter| counter.value == heavy)
            .unwrap_or_else(|| panic!("{heavy} is kept"));
        assert!(counter.count - truth[heavy] <= bound);
    }
    // Merging two windows keeps the bounds.
    let mut other = SpaceSaving::new(32);
    other.add("v1.4.2", value_hash("v1.4.2"), 10);
    let mut merged = Merged::default();
    merged.add(&sketch);
    merged.add(&other);
    assert!(merged.upper("v1.4.2") >= truth["v1.4.2"] + 10);
    assert!(merged.lower("v1.4.2") <= truth["v1.4.2"] + 10);
    assert_eq!(merged.total, 200_010);
}

#[test]
fn drill_down_finds_the_version_and_region_that_carry_the_failures() {
    let config = SpanConfig {
        attributes: vec!["*.tenant".to_string()],
        ..SpanConfig::default()
    };
    let harness = harness(config);
    let mut id: u8 = 0;
    let mut next = || {
        id = id.wrapping_add(1);
        id
    };
    // Baseline window: v1 in two regions, all healthy.
    let mut baseline = Vec::new();
    for n in 0..40 {
        let mut root = span("payment", next(), None, KIND_SERVER).times(0, 10);
        root.trace = n + 1;
        root.version = Some("v1");
        root.region = Some(if n % 2 == 0 { "eu-west-1" } else { "us-east-1" });
        baseline.push(root);
    }
    feed(&harness, &baseline);
    // Bad window (the next one): v2 in eu-west-1 fails, v1 stays healthy.
    harness.clock.set(T0 + SECOND);
    let mut bad = Vec::new();
    for n in 0..40 {
        let mut root = span("payment", next(), None, KIND_SERVER).times(0, 10);
        root.start += SECOND;
        root.end += SECOND;
        root.trace = 100 + n;
        let canary = n % 4 == 0;
        root.version = Some(if canary { "v2" } else { "v1" });
        root.region = Some(if n % 2 == 0 { "eu-west-1" } else { "us-east-1" });
        root.failed = canary;
        bad.push(root);
    }
    feed(&harness, &bad);
    let window = harness.store.window_index(T0);
    assert_eq!(
        harness.spans.entry_spans("payment", window..window + 1),
        (40, 10)
    );
    let lifts = harness
        .spans
        .drill_down("payment", window..window + 1, window - 1..window);
    let top = lifts.first().expect("a lift");
    assert_eq!(
        (top.key.as_str(), top.value.as_str()),
        ("service.version", "v2")
    );
    assert_eq!(top.bad_spans, 10);
    assert!((top.bad_share - 1.0).abs() < 1e-9);
    assert_eq!(top.baseline_share, 0.0);
    assert!(top.lift > 10.0, "{top:?}");
    // The region all canaries ran in shows too, with a lift of 2.
    let region = lifts
        .iter()
        .find(|lift| lift.key == "cloud.region")
        .expect("region");
    assert_eq!(region.value, "eu-west-1");
    assert!((region.lift - 2.0).abs() < 0.1, "{region:?}");
    // Against the bad window itself: v2 carries all failures but a quarter
    // of the traffic.
    let same = harness
        .spans
        .drill_down("payment", window..window + 1, window..window + 1);
    assert_eq!(same[0].value, "v2");
    assert!((same[0].lift - 4.0).abs() < 0.2, "{:?}", same[0]);
    // Below the minimum count nothing is reported.
    assert!(harness
        .spans
        .drill_down("payment", window - 1..window, window - 1..window)
        .is_empty());
    assert!(harness
        .spans
        .drill_down("nobody", 0..i64::MAX, 0..1)
        .is_empty());
}

#[test]
fn drill_down_reads_flags_and_extra_keys() {
    let config = SpanConfig {
        attributes: vec!["*.tenant".to_string()],
        min_bad_spans: 3,
        ..SpanConfig::default()
    };
    let harness = harness(config);
    let trace = [9u8; 16];
    let ids: Vec<[u8; 8]> = (1..=20u8).map(|n| [n; 8]).collect();
    let mut batch = TraceBatch::default();
    for (n, id) in ids.iter().enumerate() {
        let failing = n % 5 == 0;
        batch.spans.push(SpanView {
            trace_id: &trace,
            span_id: id,
            parent_span_id: &[],
            name: "GET /cart",
            kind: KIND_SERVER,
            start_time_unix_nano: T0 - SECOND,
            end_time_unix_nano: T0 - SECOND / 2,
            status_code: if failing { STATUS_ERROR } else { 0 },
            attributes: SpanAttributes {
                feature_flag_key: Some("new-cart"),
                feature_flag_variant: Some(if failing { "on" } else { "off" }),
                ..SpanAttributes::default()
            },
        });
        batch.extras.push(crate::model::ExtraValue {
            span: n as u32,
            slot: 0,
            key: b"app.tenant",
            value: if failing {
                ValueRef::Str("acme")
            } else {
                ValueRef::Int(n as i64)
            },
        });
    }
    batch.resources.push(ResourceView {
        service_name: Some("cart"),
        attributes: ResourceAttributes::default(),
        spans: 0..20,
    });
    harness.ingest.record_batch(&batch);
    let window = harness.store.window_index(T0 - SECOND);
    let lifts = harness
        .spans
        .drill_down("cart", window..window + 1, window..window + 1);
    let keys: Vec<(&str, &str)> = lifts
        .iter()
        .map(|lift| (lift.key.as_str(), lift.value.as_str()))
        .collect();
    assert!(keys.contains(&("feature_flag.new-cart", "on")), "{keys:?}");
    // The key the pattern matched, not the pattern.
    assert!(keys.contains(&("app.tenant", "acme")), "{keys:?}");
}

#[test]
fn slow_spans_are_bad_past_twice_the_recent_p95() {
    let harness = harness(SpanConfig::default());
    // Six windows of 10 ms requests in the store's operation series.
    for back in 1..=6u64 {
        let service = harness.store.service("api");
        for n in 0..10u64 {
            harness.store.record_operation(
                &service,
                "op",
                Sample {
                    end_unix_nanos: T0 - back * SECOND + n,
                    duration_nanos: 10_000_000,
                    error: false,
                    trace_id: 1,
                },
            );
        }
    }
    let mut spans = Vec::new();
    for n in 0..10u8 {
        let mut root = span("api", n + 1, None, KIND_SERVER);
        root.trace = n + 1;
        // Half at 12 ms (fine), half at 50 ms (slow).
        let millis = if n % 2 == 0 { 12 } else { 50 };
        root.start = T0 + SECOND / 2 - millis * 1_000_000;
        root.end = T0 + SECOND / 2;
        spans.push(root);
    }
    feed(&harness, &spans);
    let window = harness.store.window_index(T0);
    assert_eq!(
        harness.spans.entry_spans("api", window..window + 1),
        (10, 5)
    );
}

#[test]
fn expiry_empties_the_buffer_and_counts() {
    let harness = harness(SpanConfig {
        trace_buffer_ttl: Duration::from_secs(30),
        ..SpanConfig::default()
    });
    // Children whose parent never comes.
    feed(
        &harness,
        &[
            span("a", 2, Some(1), KIND_INTERNAL),
            span("a", 3, Some(1), KIND_INTERNAL),
        ],
    );
    assert_eq!(harness.spans.buffer().len(), 2);
    harness.spans.expire(&harness.store);
    assert_eq!(harness.spans.buffer().len(), 2);
    harness.clock.set(T0 + 31 * SECOND);
    harness.spans.expire(&harness.store);
    assert!(harness.spans.buffer().is_empty());
    assert_eq!(
        harness
            .spans
            .buffer()
            .counters
            .expired
            .load(Ordering::Relaxed),
        2
    );
}
