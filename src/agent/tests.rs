//! A window summarised by one pipeline and recorded by another gives the
//! second the series, drill-down and call counts the spans gave the first.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

use super::summary::{exponential, summarize};
use crate::model::{SeriesKey, SeriesKind};
use crate::pipeline::{Pipeline, Settings};
use crate::receiver::Sink;
use crate::store::histogram::LatencyHistogram;
use crate::store::{ManualClock, Store};

const SECOND: u64 = 1_000_000_000;
/// The start of a window.
const START: u64 = 1_700_000_000 * SECOND;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn pipeline() -> (Pipeline, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let settings = Settings::default();
    let store = Arc::new(Store::with_clock(settings.store.clone(), clock.clone()));
    (Pipeline::new(&settings, store), clock)
}

fn resource(service: &str, version: &str, pod: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            attribute("service.name", service),
            attribute("service.version", version),
            attribute("k8s.pod.name", pod),
        ],
        ..Default::default()
    })
}

/// Trace `n`: frontend `GET /` calls cart `GET /cart`; every fifth fails
/// in cart (and so in frontend), latencies spread over 5..80 ms.
fn trace(n: u64) -> ExportTraceServiceRequest {
    let trace_id = (n + 1).to_be_bytes().repeat(2);
    let id = |k: u64| (n * 4 + k + 1).to_be_bytes().to_vec();
    let end = START + 100_000_000 + n * 10_000_000;
    let cart_ms = 5 + (n * 7) % 75;
    let failed = n.is_multiple_of(5);
    let status = || {
        failed.then(|| Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        })
    };
    let span =
        |span_id: Vec<u8>, parent: Vec<u8>, name: &str, kind: SpanKind, start: u64, end: u64| {
            Span {
                trace_id: trace_id.clone(),
                span_id,
                parent_span_id: parent,
                name: name.to_owned(),
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                status: status(),
                ..Default::default()
            }
        };
    let cart_end = end - 1_000_000;
    let cart_start = cart_end - cart_ms * 1_000_000;
    let mut client = span(
        id(1),
        id(0),
        "GET",
        SpanKind::Client,
        cart_start - 500_000,
        cart_end + 500_000,
    );
    client.attributes.push(attribute("peer.service", "cart"));
    let mut root = span(
        id(0),
        Vec::new(),
        "GET /",
        SpanKind::Server,
        cart_start - 2_000_000,
        end,
    );
    root.attributes.push(attribute("http.route", "/"));
    let cart = span(
        id(2),
        id(1),
        "GET /cart",
        SpanKind::Server,
        cart_start,
        cart_end,
    );
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource("frontend", "1.0", &format!("frontend-{}", n % 2)),
                scope_spans: vec![ScopeSpans {
                    spans: vec![client, root],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: resource(
                    "cart",
                    if n.is_multiple_of(3) { "2.0" } else { "1.9" },
                    "cart-0",
                ),
                scope_spans: vec![ScopeSpans {
                    spans: vec![cart],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

#[test]
fn a_summary_recorded_by_a_gateway_gives_the_agents_series_and_drill_down() {
    let (mut agent, agent_clock) = pipeline();
    for n in 0..200 {
        let outcome = agent.ingest().traces(&trace(n));
        assert_eq!(outcome.rejected, 0, "{outcome:?}");
    }
    agent_clock.set(START + 40 * SECOND);
    agent.tick(START + 40 * SECOND);
    let index = agent.store().window_index(START);
    let summary = summarize(agent.store(), Some(agent.spans()), index, "agent-1");
    assert_eq!(summary.requests.len(), 1);
    assert!(summary.points > 0);

    let (gateway, gateway_clock) = pipeline();
    gateway_clock.set(START + 20 * SECOND);
    for request in &summary.requests {
        let outcome = gateway.ingest().metrics(request);
        assert_eq!(outcome.rejected, 0, "{outcome:?}");
    }
    let series = [
        (SeriesKind::Operation, "frontend", "GET /"),
        (SeriesKind::Operation, "cart", "GET /cart"),
        (SeriesKind::Edge, "frontend", "cart"),
        (SeriesKind::Own, "frontend", "GET /"),
        (SeriesKind::Own, "cart", "GET /cart"),
    ];
    for (kind, service, name) in series {
        let key = SeriesKey::new(kind, service, name);
        let sent = agent
            .store()
            .stats_windows(&key, index, index)
            .expect("agent series");
        let got = gateway
            .store()
            .stats_windows(&key, index, index)
            .unwrap_or_else(|| panic!("gateway lacks {key:?}"));
        assert_eq!(
            (got.requests, got.errors),
            (sent.requests, sent.errors),
            "{key:?}"
        );
        for (a, b) in [
            (sent.p50, got.p50),
            (sent.p95, got.p95),
            (sent.p99, got.p99),
        ] {
            let (a, b) = (a.expect("agent latency"), b.expect("gateway latency"));
            assert!((b / a - 1.0).abs() < 0.025, "{key:?}: {a} vs {b}");
        }
        assert!(!agent.store().snapshot(index).is_empty());
    }
    // Own errors: cart's are local, frontend's are propagated.
    let own = |service: &str, name: &str| {
        gateway
            .store()
            .stats_windows(
                &SeriesKey::new(SeriesKind::Own, service, name),
                index,
                index,
            )
            .expect("own")
    };
    assert_eq!(own("cart", "GET /cart").errors, 40);
    assert_eq!(own("frontend", "GET /").errors, 0);

    // The drill-down, the cohorts and the call counts.
    let windows = index..index + 1;
    for service in ["frontend", "cart"] {
        assert_eq!(
            gateway.spans().entry_spans(service, windows.clone()),
            agent.spans().entry_spans(service, windows.clone()),
            "{service}"
        );
        assert_eq!(
            gateway.spans().cohorts(service, windows.clone()),
            agent.spans().cohorts(service, windows.clone()),
            "{service}"
        );
        assert_eq!(
            gateway
                .spans()
                .drill_down(service, windows.clone(), windows.clone()),
            agent
                .spans()
                .drill_down(service, windows.clone(), windows.clone()),
            "{service}"
        );
    }
    let calls = agent
        .spans()
        .edge_calls("frontend", "cart", windows.clone());
    assert_eq!(calls.calls, 200);
    assert_eq!(
        gateway.spans().edge_calls("frontend", "cart", windows),
        calls
    );
    // Exemplars: a failing trace of the window.
    let snapshot = gateway.store().snapshot(index);
    let cart = snapshot
        .iter()
        .find(|series| series.key == SeriesKey::new(SeriesKind::Operation, "cart", "GET /cart"))
        .expect("cart");
    assert!(!cart.exemplars.is_empty());
}

#[test]
fn exponential_buckets_hold_every_count_within_two_percent() {
    let mut histogram = LatencyHistogram::new();
    for (micros, n) in [(0, 3), (150, 10), (2_500, 40), (97_000, 5), (4_000_000, 1)] {
        histogram.record_n(micros, n);
    }
    let (scale, zero, offset, counts) = exponential(&histogram);
    assert_eq!(zero, 3);
    assert_eq!(counts.iter().sum::<u64>() + zero, histogram.len());
    assert!(counts.len() <= super::summary::MAX_EXPONENTIAL_BUCKETS);
    // Each value read back at its bucket's geometric middle.
    let base = 2f64.powf(2f64.powi(-scale));
    let mut seen = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        if *n > 0 {
            seen.push(base.powf(f64::from(offset) + i as f64 + 0.5));
        }
    }
    for (expected, got) in [0.15, 2.5, 97.0, 4000.0].iter().zip(&seen) {
        assert!(
            (got / expected - 1.0).abs() < 0.02 || scale < 5,
            "{expected} vs {got}"
        );
    }
    assert_eq!(seen.len(), 4);
}
