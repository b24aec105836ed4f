//! OTLP/gRPC conformance, with raw tonic clients against the real collector:
//! compression, the size limit, undecodable messages, partial success, empty
//! requests, and the three signals (traces, metrics, logs).
//!
//! The status codes matter because OTLP clients decide from them whether to
//! retry: an oversized message must be RESOURCE_EXHAUSTED (not tonic's
//! OUT_OF_RANGE, which clients retry forever) and an undecodable one
//! INVALID_ARGUMENT (not INTERNAL).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span,
};
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::raw_codec::RawCodec;
use crate::common::{test_settings, TestServer};
use triage::model::SeriesKind;

const WAIT: Duration = Duration::from_secs(5);
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

// === request builders ===

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string_attribute("service.name", service)],
        ..Default::default()
    })
}

/// A SERVER span with distinct ids derived from `n`, ending shortly before now.
fn server_span(name: &str, n: u8, duration_ms: u64) -> Span {
    let end = now_nanos() - 1_000_000_000;
    Span {
        trace_id: vec![n.wrapping_add(1); 16],
        span_id: vec![n.wrapping_add(1); 8],
        name: name.to_string(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: end - duration_ms * 1_000_000,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn trace_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A request of one span carrying an attribute of `size` bytes of `byte`.
fn padded_request(service: &str, size: usize, byte: u8) -> ExportTraceServiceRequest {
    let mut span = server_span("padded", 1, 1);
    let padding = String::from_utf8(vec![byte; size]).expect("ASCII padding");
    span.attributes.push(string_attribute("padding", &padding));
    trace_request(service, vec![span])
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .expect("gRPC URL")
        .connect()
        .await
        .expect("connect to the OTLP/gRPC receiver")
}

async fn trace_client(server: &TestServer) -> TraceServiceClient<Channel> {
    TraceServiceClient::new(channel(server).await).max_encoding_message_size(usize::MAX)
}

async fn admin_metrics(server: &TestServer) -> String {
    let response = reqwest::get(format!("{}/metrics", server.admin_url()))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.text().await.expect("/metrics body")
}

/// The value of the first sample of `name` whose labels include every one of
/// `labels`, from a Prometheus text exposition.
fn sample_value(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

// === a codec that sends bytes verbatim ===

async fn export_raw(
    server: &TestServer,
    body: Vec<u8>,
) -> Result<ExportTraceServiceResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(server).await);
    grpc.ready().await.expect("channel ready");
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(TRACE_EXPORT),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

// === traces ===

#[tokio::test]
async fn gzip_request_is_accepted_and_recorded() {
    let server = TestServer::start().await;
    let mut client = trace_client(&server)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let spans = (0..10).map(|n| server_span("GET /gzip", n, 5)).collect();
    let response = client
        .export(trace_request("grpc-gzip", spans))
        .await
        .expect("gzip export accepted")
        .into_inner();
    assert_eq!(response.partial_success, None);
    let stats = server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Operation, "grpc-gzip", "GET /gzip")
        })
        .await;
    assert_eq!(stats.requests, 10);
    assert_eq!(stats.errors, 0);
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let mut settings = test_settings();
    settings.grpc.max_recv_msg_size = 64 * 1024;
    let server = TestServer::start_with(settings).await;

    // Over the limit on the wire.
    let status = trace_client(&server)
        .await
        .export(padded_request("grpc-limits", 100 * 1024, b'x'))
        .await
        .expect_err("an oversized message is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "plain: {status:?}");

    // Small on the wire (a megabyte of one letter compresses to about a
    // kilobyte), over the limit once inflated: the limit applies after
    // decompression.
    let request = padded_request("grpc-limits", 1024 * 1024, b'a');
    let status = trace_client(&server)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(request)
        .await
        .expect_err("a message that inflates past the limit is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "gzip: {status:?}");
    assert!(
        server
            .store
            .series("grpc-limits", SeriesKind::Operation)
            .is_empty(),
        "nothing of a refused request is recorded"
    );

    // A refused request does not take the listener down.
    let response = trace_client(&server)
        .await
        .export(trace_request(
            "grpc-limits",
            vec![server_span("small", 1, 1)],
        ))
        .await
        .expect("a request within the limit is accepted");
    assert_eq!(response.into_inner().partial_success, None);

    let exposition = admin_metrics(&server).await;
    let refused = sample_value(
        &exposition,
        "triage_receiver_refused_requests_total",
        &[
            r#"reason="too_large""#,
            r#"transport="grpc""#,
            r#"signal="traces""#,
        ],
    );
    assert!(
        refused.is_some_and(|count| count >= 2.0),
        "two too_large refusals counted; /metrics has:\n{exposition}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let server = TestServer::start().await;
    // Field 1 (resource_spans), length-delimited, then a truncated varint length.
    let status = export_raw(&server, vec![0x0a, 0xff, 0xff])
        .await
        .expect_err("an undecodable message is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The same codec with a valid message works, so the refusal was about
    // the bytes and not the client.
    let valid =
        prost::Message::encode_to_vec(&trace_request("grpc-raw", vec![server_span("raw", 1, 1)]));
    let response = export_raw(&server, valid)
        .await
        .expect("a valid raw message is accepted");
    assert_eq!(response.partial_success, None);
    server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Operation, "grpc-raw", "raw")
        })
        .await;

    let exposition = admin_metrics(&server).await;
    assert!(
        sample_value(
            &exposition,
            "triage_receiver_refused_requests_total",
            &[r#"reason="decode""#, r#"transport="grpc""#],
        )
        .is_some_and(|count| count >= 1.0),
        "the decode refusal is counted; /metrics has:\n{exposition}"
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_spans_are_a_partial_success() {
    let server = TestServer::start().await;
    let mut client = trace_client(&server).await;

    let mut spans: Vec<Span> = (0..3).map(|n| server_span("GET /partial", n, 2)).collect();
    let mut zero_trace_id = server_span("GET /partial", 10, 2);
    zero_trace_id.trace_id = vec![0; 16];
    let mut short_span_id = server_span("GET /partial", 11, 2);
    short_span_id.span_id = vec![1; 4];
    spans.push(zero_trace_id);
    spans.push(short_span_id);

    let response = client
        .export(trace_request("grpc-partial", spans))
        .await
        .expect("a partial success is answered OK")
        .into_inner();
    let partial = response.partial_success.expect("partial_success is set");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        !partial.error_message.is_empty(),
        "the rejection is explained"
    );

    let stats = server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Operation, "grpc-partial", "GET /partial")
        })
        .await;
    assert_eq!(stats.requests, 3, "the valid spans are recorded");

    // A fully valid request leaves partial_success unset.
    let spans = (20..25)
        .map(|n| server_span("GET /partial", n, 2))
        .collect();
    let response = client
        .export(trace_request("grpc-partial", spans))
        .await
        .expect("a valid request is accepted")
        .into_inner();
    assert_eq!(response.partial_success, None);
    let stats = server
        .wait_for(WAIT, |_| {
            server
                .stats(SeriesKind::Operation, "grpc-partial", "GET /partial")
                .filter(|stats| stats.requests >= 8)
        })
        .await;
    assert_eq!(stats.requests, 8);
    server.stop().await;
}

#[tokio::test]
async fn empty_request_is_ok() {
    let server = TestServer::start().await;
    let response = trace_client(&server)
        .await
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("an empty request is a success")
        .into_inner();
    assert_eq!(response.partial_success, None);

    // A resource with no spans at all is empty too.
    let response = trace_client(&server)
        .await
        .export(trace_request("grpc-empty", Vec::new()))
        .await
        .expect("a request without spans is a success")
        .into_inner();
    assert_eq!(response.partial_success, None);
    assert!(server
        .store
        .series("grpc-empty", SeriesKind::Operation)
        .is_empty());
    server.stop().await;
}

// === metrics and logs ===

fn metrics_request(service: &str, metric: Metric) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number_point(start: u64, time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn cumulative_sum(name: &str, point: NumberDataPoint) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn metrics_are_recorded() {
    let server = TestServer::start().await;
    let mut client = MetricsServiceClient::new(channel(&server).await);
    let service = "grpc-metrics";
    let now = now_nanos();
    let second = 1_000_000_000;

    let gauge = Metric {
        name: "queue.depth".to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![number_point(0, now - 5 * second, 42.0)],
        })),
        ..Default::default()
    };

    // A cumulative counter: 10 (the baseline), 15 (+5), then the process
    // restarts (new start time) and reports 3 (+3).
    let started = now - 60 * second;
    let restarted = now - 3 * second;
    let counter_points = [
        number_point(started, now - 8 * second, 10.0),
        number_point(started, now - 6 * second, 15.0),
        number_point(restarted, now - 2 * second, 3.0),
    ];

    let histogram = Metric {
        name: "http.server.request.duration".to_string(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: now - 10 * second,
                time_unix_nano: now - second,
                count: 6,
                sum: Some(2.4),
                bucket_counts: vec![1, 2, 2, 1],
                explicit_bounds: vec![0.1, 0.5, 1.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };

    let mut requests = vec![metrics_request(service, gauge)];
    requests.extend(
        counter_points
            .into_iter()
            .map(|point| metrics_request(service, cumulative_sum("jobs.processed", point))),
    );
    requests.push(metrics_request(service, histogram));
    for request in requests {
        let response = client
            .export(request)
            .await
            .expect("metrics export accepted")
            .into_inner();
        assert_eq!(response.partial_success, None);
    }

    let gauge = server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Metric, service, "queue.depth")
        })
        .await;
    assert_eq!(gauge.values.points, 1);
    assert_eq!(gauge.values.last, 42.0);

    let counter = server
        .wait_for(WAIT, |_| {
            server
                .stats(SeriesKind::Metric, service, "jobs.processed")
                .filter(|stats| stats.values.points >= 2)
        })
        .await;
    assert_eq!(
        counter.values.points, 2,
        "the baseline point yields no delta"
    );
    assert_eq!(counter.values.sum, 8.0, "deltas 5 and, after the reset, 3");
    assert_eq!(counter.values.min, 3.0);
    assert_eq!(counter.values.max, 5.0);

    let distribution = server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Metric, service, "http.server.request.duration")
        })
        .await;
    assert_eq!(distribution.requests, 6, "histogram observation count");
    assert_eq!(distribution.values.sum, 2.4, "histogram sum");
    server.stop().await;
}

#[tokio::test]
async fn logs_are_counted_by_severity() {
    let server = TestServer::start().await;
    let mut client = LogsServiceClient::new(channel(&server).await);
    let service = "grpc-logs";
    let now = now_nanos();
    let records = [(9, "INFO"), (13, "WARN"), (17, "ERROR"), (21, "FATAL")]
        .into_iter()
        .map(|(number, text)| LogRecord {
            time_unix_nano: now - 1_000_000_000,
            severity_number: number,
            severity_text: text.to_string(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("a {text} record"))),
            }),
            ..Default::default()
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let response = client
        .export(request)
        .await
        .expect("logs export accepted")
        .into_inner();
    assert_eq!(response.partial_success, None);

    let all = server
        .wait_for(WAIT, |_| server.stats(SeriesKind::Log, service, "all"))
        .await;
    assert_eq!(all.requests, 4);
    assert_eq!(all.errors, 2, "ERROR and FATAL records are errors");
    for (class, errors) in [("INFO", 0), ("WARN", 0), ("ERROR", 1), ("FATAL", 1)] {
        let stats = server
            .stats(SeriesKind::Log, service, class)
            .unwrap_or_else(|| panic!("log series {class} exists"));
        assert_eq!(
            (stats.requests, stats.errors),
            (1, errors),
            "log series {class}"
        );
    }
    server.stop().await;
}

// A span with status ERROR counts as a failed request of its operation.
#[tokio::test]
async fn error_status_spans_are_counted_as_errors() {
    let server = TestServer::start().await;
    let mut spans: Vec<Span> = (0..4).map(|n| server_span("GET /status", n, 3)).collect();
    spans[0].status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: StatusCode::Error as i32,
        message: "boom".to_string(),
    });
    trace_client(&server)
        .await
        .export(trace_request("grpc-status", spans))
        .await
        .expect("export accepted");
    let stats = server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Operation, "grpc-status", "GET /status")
        })
        .await;
    assert_eq!((stats.requests, stats.errors), (4, 1));
    server.stop().await;
}
