//! Decode + record throughput of OTLP trace requests (the zero-copy reader the
//! receivers use, then recording), next to a bare prost decode of the same
//! bytes (the reference), prost decode + record, and decode + record with
//! the span analysis on.
//!
//! Requests: 512 spans each, ~300 bytes and 6 attributes per span, spread over
//! 20 services x 50 operations; 90% SERVER spans, 10% database CLIENT spans.
//! Run: `cargo bench --bench ingest`. Figures: docs/PERFORMANCE.md.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

use triage::ingest::spans::{SpanAnalyzer, SpanConfig};
use triage::ingest::Ingest;
use triage::model::TraceBatch;
use triage::pipeline::WallClock;
use triage::receiver::Sink;
use triage::store::{Store, StoreConfig};

const SPANS_PER_REQUEST: usize = 512;
const SERVICES: usize = 20;
const OPERATIONS: usize = 50;
const SERVICES_PER_REQUEST: usize = 4;
const REQUESTS: usize = 40;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.to_string()))
}

/// A deterministic pseudo-random sequence (xorshift), so every run benches
/// the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn request(number: usize, rng: &mut Rng, now: u64) -> ExportTraceServiceRequest {
    let per_service = SPANS_PER_REQUEST / SERVICES_PER_REQUEST;
    let resource_spans = (0..SERVICES_PER_REQUEST)
        .map(|slot| {
            let service = (number * SERVICES_PER_REQUEST + slot) % SERVICES;
            let spans = (0..per_service)
                .map(|_| {
                    let operation = rng.next() as usize % OPERATIONS;
                    let millis = 1 + rng.next() % 500;
                    let end = now - rng.next() % 5_000_000_000;
                    let database = rng.next().is_multiple_of(10);
                    let failed = rng.next().is_multiple_of(50);
                    let attributes = if database {
                        vec![
                            text("db.system.name", "postgresql"),
                            text("db.namespace", "orders"),
                            text("db.operation.name", "SELECT"),
                            text("server.address", "orders-db.internal"),
                            attribute("server.port", Value::IntValue(5432)),
                            text("db.query.summary", "SELECT orders"),
                        ]
                    } else {
                        vec![
                            text("http.request.method", "GET"),
                            text(
                                "http.route",
                                &format!("/api/v1/resource-{operation}/{{id}}"),
                            ),
                            attribute(
                                "http.response.status_code",
                                Value::IntValue(if failed { 500 } else { 200 }),
                            ),
                            text("url.scheme", "https"),
                            text("server.address", "api.example.internal"),
                            text("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                        ]
                    };
                    Span {
                        trace_id: rng.next().to_be_bytes().repeat(2),
                        span_id: rng.next().to_be_bytes().to_vec(),
                        parent_span_id: rng.next().to_be_bytes().to_vec(),
                        name: if database {
                            "SELECT orders".to_string()
                        } else {
                            format!("GET /api/v1/resource-{operation}/{{id}}")
                        },
                        kind: if database {
                            SpanKind::Client
                        } else {
                            SpanKind::Server
                        } as i32,
                        start_time_unix_nano: end - millis * 1_000_000,
                        end_time_unix_nano: end,
                        attributes,
                        status: failed.then(|| Status {
                            code: 2,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", &format!("service-{service:02}")),
                        text("service.version", "1.4.2"),
                        text(
                            "k8s.pod.name",
                            &format!("service-{service:02}-7d9f8b6c5-x2x4q"),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn encoded_requests() -> Vec<Vec<u8>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    (0..REQUESTS)
        .map(|number| request(number, &mut rng, now).encode_to_vec())
        .collect()
}

fn bench(criterion: &mut Criterion) {
    let requests = encoded_requests();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    eprintln!(
        "{} requests x {} spans, {:.0} bytes per span",
        REQUESTS,
        SPANS_PER_REQUEST,
        bytes as f64 / (REQUESTS * SPANS_PER_REQUEST) as f64
    );
    let store = Arc::new(Store::with_clock(
        StoreConfig::default(),
        Arc::new(WallClock),
    ));
    let ingest = Ingest::new(Arc::clone(&store));
    // Warm the store so the measurement is the steady state (series exist).
    for encoded in &requests {
        let request = ExportTraceServiceRequest::decode(encoded.as_slice()).expect("valid request");
        ingest.traces(&request);
    }

    let mut group = criterion.benchmark_group("traces");
    group.throughput(Throughput::Elements((REQUESTS * SPANS_PER_REQUEST) as u64));
    group.bench_function("bare_prost_decode", |bencher| {
        bencher.iter(|| {
            for encoded in &requests {
                let request =
                    ExportTraceServiceRequest::decode(encoded.as_slice()).expect("valid request");
                criterion::black_box(&request);
            }
        })
    });
    group.bench_function("zero_copy_read", |bencher| {
        bencher.iter(|| {
            for encoded in &requests {
                let batch = TraceBatch::read(encoded).expect("valid request");
                criterion::black_box(&batch);
            }
        })
    });
    group.bench_function("decode_and_record", |bencher| {
        bencher.iter(|| {
            for encoded in &requests {
                let outcome = ingest.traces_protobuf(encoded).expect("valid request");
                criterion::black_box(outcome);
            }
        })
    });
    // With the span analysis on (own time, local errors, retries,
    // drill-down). The spans' parents never arrive here, so the trace buffer
    // fills up and stays full: every span pays a buffer lookup.
    let analyzed_store = Arc::new(Store::with_clock(
        StoreConfig::default(),
        Arc::new(WallClock),
    ));
    let analyzer = Arc::new(SpanAnalyzer::new(
        SpanConfig::default(),
        analyzed_store.config(),
    ));
    let analyzed = Ingest::new(Arc::clone(&analyzed_store)).with_spans(Arc::clone(&analyzer));
    for encoded in &requests {
        analyzed.traces_protobuf(encoded).expect("valid request");
    }
    group.bench_function("decode_and_record_with_analysis", |bencher| {
        bencher.iter(|| {
            for encoded in &requests {
                let outcome = analyzed.traces_protobuf(encoded).expect("valid request");
                criterion::black_box(outcome);
            }
        })
    });
    // The same recording after a full prost decode (the JSON path's shape),
    // to show what the zero-copy reader saves.
    group.bench_function("prost_decode_and_record", |bencher| {
        bencher.iter(|| {
            for encoded in &requests {
                let request =
                    ExportTraceServiceRequest::decode(encoded.as_slice()).expect("valid request");
                criterion::black_box(ingest.traces(&request));
            }
        })
    });
    group.finish();
    eprintln!(
        "store after bench: {} series, {} histogram bytes",
        store.n_series(),
        store.histogram_bytes()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
