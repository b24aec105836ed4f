//! The real Rust OpenTelemetry SDK, exporting over each OTLP protocol
//! (gRPC with and without gzip, HTTP protobuf, HTTP JSON), against the real
//! collector: what the SDK sends must read back unchanged from the store.
//!
//! Every scenario sends spans with explicit start and end times, so the
//! expected counts, error counts and latency quantiles are known exactly, and
//! a second service whose CLIENT spans are the parents of SERVER spans in the
//! first, so the pairing of client and server spans is exercised end to end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Compression, Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::common::TestServer;
use triage::model::SeriesKind;
use triage::store::Edge;

/// How long to wait for exported data to show up in the store. The simple
/// processor exports synchronously, so this is only a safety net.
const WAIT: Duration = Duration::from_secs(5);

/// Operation of the 100 SERVER spans with known latencies.
const OPERATION: &str = "GET /items";
/// Operation of the SERVER spans whose parents are the caller's CLIENT spans.
const CHILD_OPERATION: &str = "GET /stock";
/// Database host named by the DB client span (`server.address`).
const DATABASE: &str = "inventory-db";
/// Number of SERVER spans with latencies 1..=N ms.
const N_SPANS: u64 = 100;
/// Number of client/server span pairs between the caller and the service.
const N_CALLS: u64 = 5;

/// Wraps an OTLP exporter and keeps every export error, so that a test fails
/// with the exporter's own message ("404 Not Found", "connection refused")
/// instead of only timing out while waiting for data that never came.
#[derive(Debug)]
struct CheckedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    errors: Arc<Mutex<Vec<String>>>,
}

impl SpanExporter for CheckedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.errors
                .lock()
                .expect("errors lock")
                .push(error.to_string());
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    // The OTLP exporter takes `service.name` from the resource it is given
    // here; forgetting to forward it would send every span as unknown_service.
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Which exporter a scenario uses.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc { gzip: bool },
    Http(Protocol),
}

fn build_exporter(server: &TestServer, transport: Transport) -> opentelemetry_otlp::SpanExporter {
    // No retries: every span must arrive exactly once for the counts to hold.
    let built = match transport {
        Transport::Grpc { gzip } => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(server.grpc_url())
                .with_timeout(Duration::from_secs(3))
                .with_retry_policy(RetryPolicy::disabled());
            if gzip {
                builder.with_compression(Compression::Gzip).build()
            } else {
                builder.build()
            }
        }
        Transport::Http(protocol) => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(format!("{}/v1/traces", server.http_url()))
            .with_timeout(Duration::from_secs(3))
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
    };
    built.expect("build OTLP span exporter")
}

fn provider(
    server: &TestServer,
    transport: Transport,
    service: &str,
    errors: &Arc<Mutex<Vec<String>>>,
) -> SdkTracerProvider {
    let exporter = CheckedExporter {
        inner: build_exporter(server, transport),
        errors: Arc::clone(errors),
    };
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .with_simple_exporter(exporter)
        .build()
}

/// What a scenario sent, for the assertions.
struct Sent {
    /// Latencies of the `OPERATION` spans, in milliseconds.
    latencies_ms: Vec<u64>,
    errors: u64,
}

/// Emits the scenario's spans through two providers (the service, and a
/// caller of it) and shuts both down, which flushes them.
///
/// The simple span processor exports with a blocking `block_on` inside
/// `Span::end`, so this runs on a blocking thread; the exporters' tonic and
/// reqwest clients still find the test's Tokio runtime there.
fn emit_spans(service_provider: SdkTracerProvider, caller_provider: SdkTracerProvider) -> Sent {
    let service_tracer = service_provider.tracer("rust-sdk-test");
    let caller_tracer = caller_provider.tracer("rust-sdk-test");
    // Every span ends a little before now: the store files spans by end time,
    // and times far ahead of its clock would be clamped.
    let base = SystemTime::now() - Duration::from_secs(2);

    let mut sent = Sent {
        latencies_ms: Vec::new(),
        errors: 0,
    };
    for millis in 1..=N_SPANS {
        let start = base + Duration::from_millis(millis);
        let mut span = service_tracer
            .span_builder(OPERATION)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", "/items"),
            ])
            .start(&service_tracer);
        if millis % 14 == 0 {
            span.set_status(Status::error("handler failed"));
            sent.errors += 1;
        }
        span.end_with_timestamp(start + Duration::from_millis(millis));
        sent.latencies_ms.push(millis);
    }

    // Caller -> service: each CLIENT span is the parent of a SERVER span in
    // the service. The child ends (and is exported) first, as in real
    // systems. The client's own attributes name an address, not the service,
    // so an edge named after the service proves the pair was matched.
    for call in 0..N_CALLS {
        let start = base + Duration::from_millis(200 + 10 * call);
        let client = caller_tracer
            .span_builder("GET")
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("server.address", "10.0.0.7"),
            ])
            .start(&caller_tracer);
        let cx = Context::current_with_span(client);
        let child_builder = service_tracer
            .span_builder(CHILD_OPERATION)
            .with_kind(SpanKind::Server)
            .with_start_time(start + Duration::from_millis(1));
        let mut child = service_tracer.build_with_context(child_builder, &cx);
        child.end_with_timestamp(start + Duration::from_millis(4));
        cx.span()
            .end_with_timestamp(start + Duration::from_millis(5));
    }

    // A database call: recorded as an edge named after the database at once.
    let start = base + Duration::from_millis(300);
    let mut query = service_tracer
        .span_builder("SELECT inventory.items")
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.namespace", "inventory"),
            KeyValue::new("server.address", DATABASE),
            KeyValue::new("db.operation.name", "SELECT"),
        ])
        .start(&service_tracer);
    query.end_with_timestamp(start + Duration::from_millis(3));

    for provider in [&service_provider, &caller_provider] {
        provider.force_flush().expect("force_flush");
        provider.shutdown().expect("shutdown");
    }
    sent
}

/// The exact nearest-rank quantile (`permille` / 1000) of `values`.
fn nearest_rank(values: &[u64], permille: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (permille * sorted.len()).div_ceil(1000).max(1);
    sorted[rank - 1] as f64
}

/// Asserts a latency read back from the store is within the histogram's
/// precision (1% relative) plus 1 µs of the exact value, in milliseconds.
fn assert_latency(what: &str, actual: Option<f64>, expected_ms: f64) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no latency recorded"));
    let tolerance = expected_ms * 0.01 + 0.001;
    assert!(
        (actual - expected_ms).abs() <= tolerance,
        "{what}: read back {actual} ms, sent {expected_ms} ms (tolerance {tolerance} ms)"
    );
}

/// Runs the whole scenario over one transport and checks what the store holds.
async fn check_transport(server: &TestServer, transport: Transport, service: &str) {
    let caller = format!("{service}-caller");
    let errors = Arc::new(Mutex::new(Vec::new()));
    let service_provider = provider(server, transport, service, &errors);
    let caller_provider = provider(server, transport, &caller, &errors);
    let sent = tokio::task::spawn_blocking(move || emit_spans(service_provider, caller_provider))
        .await
        .expect("span emitter does not panic");
    {
        let errors = errors.lock().expect("errors lock");
        assert!(
            errors.is_empty(),
            "{transport:?}: {} of the exports failed; first: {}",
            errors.len(),
            errors[0]
        );
    }

    let n_latencies = sent.latencies_ms.len() as u64;
    let stats = server
        .wait_for(WAIT, |_| {
            server
                .stats(SeriesKind::Operation, service, OPERATION)
                .filter(|stats| stats.requests >= n_latencies)
        })
        .await;
    assert_eq!(stats.requests, N_SPANS, "{transport:?}: span count");
    assert_eq!(stats.errors, sent.errors, "{transport:?}: error count");
    assert_eq!(sent.errors, 7);
    assert_latency("p50", stats.p50, nearest_rank(&sent.latencies_ms, 500));
    assert_latency("p99", stats.p99, nearest_rank(&sent.latencies_ms, 990));
    assert_latency("max", stats.max, nearest_rank(&sent.latencies_ms, 1000));

    let children = server
        .wait_for(WAIT, |_| {
            server
                .stats(SeriesKind::Operation, service, CHILD_OPERATION)
                .filter(|stats| stats.requests >= N_CALLS)
        })
        .await;
    assert_eq!(
        children.requests, N_CALLS,
        "{transport:?}: child span count"
    );
    assert_eq!(children.errors, 0);
    assert_latency("child max", children.max, 3.0);

    // The paired edge is named after the service that answered, not after
    // the client span's `server.address`.
    let calls = server
        .wait_for(WAIT, |_| {
            server
                .stats(SeriesKind::Edge, &caller, service)
                .filter(|stats| stats.requests >= N_CALLS)
        })
        .await;
    assert_eq!(calls.requests, N_CALLS, "{transport:?}: paired edge count");
    assert_latency("edge max", calls.max, 5.0);
    let queries = server
        .wait_for(WAIT, |_| server.stats(SeriesKind::Edge, service, DATABASE))
        .await;
    assert_eq!(queries.requests, 1, "{transport:?}: database edge count");
    assert_latency("database edge max", queries.max, 3.0);

    let edges = server.store.edges();
    let edge = |caller: &str, callee: &str| Edge {
        caller: Arc::from(caller),
        callee: Arc::from(callee),
    };
    for expected in [edge(&caller, service), edge(service, DATABASE)] {
        assert!(
            edges.contains(&expected),
            "{transport:?}: edge {expected:?} missing from {edges:?}"
        );
    }
    assert!(
        !edges.contains(&edge(&caller, "10.0.0.7")),
        "{transport:?}: client spans were resolved from their attributes, not paired: {edges:?}"
    );
    assert!(
        server.store.series(service, SeriesKind::Operation).len() == 2,
        "{transport:?}: unexpected operations {:?}",
        server.store.operations(service)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_with_and_without_gzip() {
    let server = TestServer::start().await;
    check_transport(&server, Transport::Grpc { gzip: false }, "rust-sdk-grpc").await;
    check_transport(
        &server,
        Transport::Grpc { gzip: true },
        "rust-sdk-grpc-gzip",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_exporter() {
    let server = TestServer::start().await;
    check_transport(
        &server,
        Transport::Http(Protocol::HttpBinary),
        "rust-sdk-http-protobuf",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_exporter() {
    let server = TestServer::start().await;
    check_transport(
        &server,
        Transport::Http(Protocol::HttpJson),
        "rust-sdk-http-json",
    )
    .await;
    server.stop().await;
}
