//! Span analysis through the real receiver: the Rust OpenTelemetry SDK
//! exports traces (frontend -> payment -> database) over OTLP/gRPC to a real
//! collector, and the analysis must read back each service's own time, where
//! the errors started, the retried calls and the version that carries the
//! failures.
//!
//! Payment runs two versions (two SDK resources). Every fourth trace goes to
//! v2, whose database call fails: the error starts in payment (its database
//! has no traced child) and only propagates to the frontend.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tokio_util::sync::CancellationToken;

use triage::ingest::spans::{CallStats, SpanAnalyzer};
use triage::model::{SeriesKey, SeriesKind};
use triage::server::Server;
use triage::store::{SeriesStats, Store};

const TRACES: u64 = 20;
/// Every this many traces runs on payment v2 and fails.
const CANARY_EVERY: u64 = 4;
/// The trace whose frontend retries its call to payment twice.
const RETRIED_TRACE: u64 = 1;
const WAIT: Duration = Duration::from_secs(10);

fn provider(grpc: &str, service: &str, version: &str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(grpc)
        .with_timeout(Duration::from_secs(3))
        // Every span must arrive exactly once for the counts to hold.
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("build OTLP span exporter");
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("service.version", version.to_string()))
                .with_attribute(KeyValue::new("cloud.region", "eu-west-1"))
                .build(),
        )
        .with_simple_exporter(exporter)
        .build()
}

/// Emits the traces. The simple processor exports each span when it ends,
/// children before parents, as a real process does; it blocks, so this
/// runs on a blocking thread.
fn emit(frontend: SdkTracerProvider, v1: SdkTracerProvider, v2: SdkTracerProvider) {
    let frontend_tracer = frontend.tracer("analysis-test");
    let v1_tracer = v1.tracer("analysis-test");
    let v2_tracer = v2.tracer("analysis-test");
    let base = SystemTime::now() - Duration::from_secs(2);
    let ms = Duration::from_millis;
    for trace in 0..TRACES {
        let canary = trace % CANARY_EVERY == 0;
        let payment = if canary { &v2_tracer } else { &v1_tracer };
        let start = base + ms(trace);
        // frontend SERVER 0..100 ms.
        let root = frontend_tracer
            .span_builder("POST /checkout")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([KeyValue::new("http.route", "/checkout")])
            .start(&frontend_tracer);
        let root_cx = Context::current_with_span(root);
        let calls = if trace == RETRIED_TRACE { 3 } else { 1 };
        for call in 0..calls {
            // Retries come before the last call, 1 ms each.
            let call_start = if call + 1 < calls {
                start + ms(1 + call)
            } else {
                start + ms(10)
            };
            let client = frontend_tracer
                .span_builder("POST")
                .with_kind(SpanKind::Client)
                .with_start_time(call_start)
                .with_attributes([KeyValue::new("server.address", "payment.internal")])
                .start_with_context(&frontend_tracer, &root_cx);
            let client_cx = root_cx.with_span(client);
            if call + 1 < calls {
                let mut server = payment.build_with_context(
                    payment
                        .span_builder("POST /pay")
                        .with_kind(SpanKind::Server)
                        .with_start_time(call_start)
                        .with_attributes([KeyValue::new("http.route", "/pay")]),
                    &client_cx,
                );
                server.end_with_timestamp(call_start + ms(1));
                client_cx.span().end_with_timestamp(call_start + ms(1));
                continue;
            }
            // payment SERVER 15..55 ms, with a database call 20..50 ms.
            let server = payment.build_with_context(
                payment
                    .span_builder("POST /pay")
                    .with_kind(SpanKind::Server)
                    .with_start_time(start + ms(15))
                    .with_attributes([KeyValue::new("http.route", "/pay")]),
                &client_cx,
            );
            let server_cx = client_cx.with_span(server);
            let mut query = payment.build_with_context(
                payment
                    .span_builder("INSERT payments")
                    .with_kind(SpanKind::Client)
                    .with_start_time(start + ms(20))
                    .with_attributes([
                        KeyValue::new("db.system.name", "postgresql"),
                        KeyValue::new("db.namespace", "payments"),
                    ]),
                &server_cx,
            );
            if canary {
                query.set_status(Status::error("deadlock detected"));
                server_cx.span().set_status(Status::error("payment failed"));
                client_cx.span().set_status(Status::error("502"));
            }
            query.end_with_timestamp(start + ms(50));
            server_cx.span().end_with_timestamp(start + ms(55));
            client_cx.span().end_with_timestamp(start + ms(60));
        }
        if canary {
            root_cx.span().set_status(Status::error("checkout failed"));
        }
        root_cx.span().end_with_timestamp(start + ms(100));
    }
    for provider in [&frontend, &v1, &v2] {
        provider.force_flush().expect("force_flush");
        provider.shutdown().expect("shutdown");
    }
}

fn own(store: &Store, service: &str, operation: &str) -> Option<SeriesStats> {
    let key = SeriesKey::new(SeriesKind::Own, service, operation);
    store.stats(&key, 0, u64::MAX)
}

/// Polls until `check` holds, failing after `WAIT`.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_ms(what: &str, actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no latency"));
    assert!(
        (actual - expected).abs() <= expected * 0.02 + 0.01,
        "{what}: {actual} ms, expected {expected} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_time_local_errors_retries_and_drill_down_from_real_sdk_spans() {
    let server = Server::bind(crate::common::test_settings())
        .await
        .expect("bind test server");
    let grpc = format!("http://{}", server.addresses().grpc);
    let store = server.store();
    let spans: Arc<SpanAnalyzer> = server.spans();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    let frontend = provider(&grpc, "frontend", "3.0.0");
    let v1 = provider(&grpc, "payment", "v1");
    let v2 = provider(&grpc, "payment", "v2");
    tokio::task::spawn_blocking(move || emit(frontend, v1, v2))
        .await
        .expect("emitter does not panic");

    let canaries = TRACES.div_ceil(CANARY_EVERY);
    wait_until("every checkout analyzed", || {
        own(&store, "frontend", "POST /checkout").is_some_and(|stats| stats.requests == TRACES)
    })
    .await;
    wait_until("every payment analyzed", || {
        // The retried trace called payment twice more.
        own(&store, "payment", "POST /pay").is_some_and(|stats| stats.requests == TRACES + 2)
    })
    .await;

    // Payment: 40 ms spans of which the database took 30 (and two 1 ms
    // retried calls); its failures
    // start in payment (a database call with no traced child failed).
    let pay = own(&store, "payment", "POST /pay").expect("payment own series");
    assert_eq!(pay.errors, canaries, "payment's errors are its own");
    assert_ms("payment own p50", pay.p50, 10.0);
    // The operation series keeps the whole duration.
    let pay_total = store
        .stats(
            &SeriesKey::new(SeriesKind::Operation, "payment", "POST /pay"),
            0,
            u64::MAX,
        )
        .expect("payment operation series");
    assert_ms("payment total p50", pay_total.p50, 40.0);

    // Frontend: 100 ms, 50 of them waiting for payment; its failures are
    // payment's, propagated.
    let checkout = own(&store, "frontend", "POST /checkout").expect("frontend own series");
    assert_eq!(checkout.errors, 0, "frontend's errors are propagated");
    assert_ms("frontend own p50", checkout.p50, 50.0);
    let checkout_total = store
        .stats(
            &SeriesKey::new(SeriesKind::Operation, "frontend", "POST /checkout"),
            0,
            u64::MAX,
        )
        .expect("frontend operation series");
    assert_eq!(
        checkout_total.errors, canaries,
        "the symptom shows upstream"
    );

    // Retries: one parent called payment three times.
    let all = i64::MIN..i64::MAX;
    wait_until("calls counted", || {
        spans.edge_calls("frontend", "payment", all.clone()).parents == TRACES
    })
    .await;
    assert_eq!(
        spans.edge_calls("frontend", "payment", all.clone()),
        CallStats {
            calls: TRACES + 2,
            parents: TRACES,
            repeated: 2,
        }
    );

    // Drill-down: the failing payment spans all run v2, a quarter of the
    // traffic; the region is shared by everyone, so it has no lift.
    let lifts = spans.drill_down("payment", all.clone(), all.clone());
    let top = lifts.first().expect("a lift for payment");
    assert_eq!(
        (top.key.as_str(), top.value.as_str()),
        ("service.version", "v2"),
        "{lifts:#?}"
    );
    assert_eq!(top.bad_spans, canaries);
    assert!((top.bad_share - 1.0).abs() < 1e-9, "{top:?}");
    // Payment handled TRACES + 2 requests (the retried trace's extra two
    // on v1); v2 took the canaries.
    let v2_share = canaries as f64 / (TRACES + 2) as f64;
    assert!((top.baseline_share - v2_share).abs() < 1e-9, "{top:?}");
    assert!(top.lift > 3.0, "{top:?}");
    let region = lifts
        .iter()
        .find(|lift| lift.key == "cloud.region")
        .expect("region listed");
    assert!((region.lift - 1.0).abs() < 0.05, "{region:?}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stops")
        .expect("server task does not panic")
        .expect("server exits cleanly");
}
