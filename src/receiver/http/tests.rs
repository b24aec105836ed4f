use std::io::Write;
use std::sync::Mutex;

use axum::http::Method;
use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse,
    metrics::v1::ExportMetricsServiceResponse,
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use tower::ServiceExt;

use super::*;
use crate::receiver::decode::schema::Message as Schema;
use crate::receiver::decode::test_support::{self, BOMB_BYTES};

/// A sink that records every request and rejects `reject` items of each.
#[derive(Default)]
struct RecordingSink {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    reject: u64,
}

impl RecordingSink {
    fn rejecting(reject: u64) -> Arc<Self> {
        Arc::new(RecordingSink {
            reject,
            ..RecordingSink::default()
        })
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            accepted: 1,
            rejected: self.reject,
            error_message: if self.reject > 0 {
                "invalid trace id".to_owned()
            } else {
                String::new()
            },
        }
    }

    fn n_requests(&self) -> usize {
        self.traces.lock().unwrap().len()
            + self.metrics.lock().unwrap().len()
            + self.logs.lock().unwrap().len()
    }

    fn only_traces(&self) -> ExportTraceServiceRequest {
        let traces = self.traces.lock().unwrap();
        assert_eq!(traces.len(), 1, "expected exactly one traces request");
        traces[0].clone()
    }

    fn only_metrics(&self) -> ExportMetricsServiceRequest {
        let metrics = self.metrics.lock().unwrap();
        assert_eq!(metrics.len(), 1, "expected exactly one metrics request");
        metrics[0].clone()
    }

    fn only_logs(&self) -> ExportLogsServiceRequest {
        let logs = self.logs.lock().unwrap();
        assert_eq!(logs.len(), 1, "expected exactly one logs request");
        logs[0].clone()
    }
}

impl Sink for RecordingSink {
    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
        self.traces.lock().unwrap().push(request.clone());
        self.outcome()
    }

    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        self.metrics.lock().unwrap().push(request.clone());
        self.outcome()
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
        self.logs.lock().unwrap().push(request.clone());
        self.outcome()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |value| value.to_str().unwrap())
    }

    fn rpc_status(&self) -> RpcStatus {
        assert_eq!(self.content_type(), PROTOBUF);
        RpcStatus::decode(self.body.clone()).expect("error body is a google.rpc.Status")
    }

    fn json(&self) -> Value {
        assert_eq!(self.content_type(), JSON);
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request {
    let mut builder = Request::builder().method(Method::POST).uri(path);
    for &(name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(body.into()).unwrap()
}

fn post_protobuf(path: &str, body: impl Into<Body>) -> Request {
    post(path, &[("content-type", PROTOBUF)], body)
}

fn post_json(path: &str, body: &str) -> Request {
    post(path, &[("content-type", JSON)], body.to_owned())
}

async fn call_with(sink: &Arc<RecordingSink>, config: HttpConfig, request: Request) -> Reply {
    let sink: Arc<dyn Sink> = sink.clone();
    let response = router(sink, config).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn call(sink: &Arc<RecordingSink>, request: Request) -> Reply {
    call_with(sink, HttpConfig::default(), request).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![string_attribute("service.name", "checkout")],
        ..Resource::default()
    })
}

fn traces_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0x5b; 16],
                    span_id: vec![0xee; 8],
                    name: "GET /cart".to_owned(),
                    kind: span::SpanKind::Server as i32,
                    start_time_unix_nano: 1_544_712_660_000_000_000,
                    end_time_unix_nano: 1_544_712_661_000_000_000,
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn metrics_request() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "db.client.connection.count".to_owned(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: 1_544_712_660_000_000_000,
                            value: Some(number_data_point::Value::AsInt(42)),
                            ..NumberDataPoint::default()
                        }],
                    })),
                    ..Metric::default()
                }],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

fn logs_request() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_544_712_660_300_000_000,
                    severity_number: 17,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("boom".to_owned())),
                    }),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// A one-span traces request; `span` is the body of the span object.
fn json_span(span: &str) -> String {
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{span}}}]}}]}}]}}"#)
}

/// A one-metric metrics request; `metric` is the body of the metric object.
fn json_metric(metric: &str) -> String {
    format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{{metric}}}]}}]}}]}}"#)
}

/// A one-record logs request; `record` is the body of the record object.
fn json_log(record: &str) -> String {
    format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{{record}}}]}}]}}]}}"#)
}

fn only_span(request: &ExportTraceServiceRequest) -> &Span {
    &request.resource_spans[0].scope_spans[0].spans[0]
}

fn only_metric(request: &ExportMetricsServiceRequest) -> &Metric {
    &request.resource_metrics[0].scope_metrics[0].metrics[0]
}

fn only_record(request: &ExportLogsServiceRequest) -> &LogRecord {
    &request.resource_logs[0].scope_logs[0].log_records[0]
}

const TRACE_ID_HEX: &str = "5B8EFFF798038103D269B633813FC60C";
const TRACE_ID: [u8; 16] = [
    0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c,
];
const SPAN_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74];

// --- protobuf ---

#[tokio::test]
async fn protobuf_traces_round_trip() {
    let sink = RecordingSink::rejecting(0);
    let request = traces_request();
    let reply = call(&sink, post_protobuf("/v1/traces", request.encode_to_vec())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), PROTOBUF);
    let response = ExportTraceServiceResponse::decode(reply.body).unwrap();
    assert_eq!(response.partial_success, None);
    assert_eq!(sink.only_traces(), request);
}

#[tokio::test]
async fn protobuf_metrics_round_trip() {
    let sink = RecordingSink::rejecting(0);
    let request = metrics_request();
    let reply = call(&sink, post_protobuf("/v1/metrics", request.encode_to_vec())).await;
    assert_eq!(reply.status, StatusCode::OK);
    let response = ExportMetricsServiceResponse::decode(reply.body).unwrap();
    assert_eq!(response.partial_success, None);
    assert_eq!(sink.only_metrics(), request);
}

#[tokio::test]
async fn protobuf_logs_round_trip() {
    let sink = RecordingSink::rejecting(0);
    let request = logs_request();
    let reply = call(&sink, post_protobuf("/v1/logs", request.encode_to_vec())).await;
    assert_eq!(reply.status, StatusCode::OK);
    let response = ExportLogsServiceResponse::decode(reply.body).unwrap();
    assert_eq!(response.partial_success, None);
    assert_eq!(sink.only_logs(), request);
}

#[tokio::test]
async fn malformed_protobuf_is_refused_with_a_status() {
    let sink = RecordingSink::rejecting(0);
    let reply = call(&sink, post_protobuf("/v1/traces", vec![0x0a, 0xff, 0x01])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let status = reply.rpc_status();
    assert_eq!(status.code, CODE_INVALID_ARGUMENT);
    assert!(
        status
            .message
            .starts_with("cannot decode ExportTraceServiceRequest as protobuf: "),
        "{}",
        status.message
    );
    assert_eq!(sink.n_requests(), 0);
}

#[tokio::test]
async fn empty_body_is_an_empty_request() {
    let sink = RecordingSink::rejecting(0);
    let reply = call(&sink, post_protobuf("/v1/metrics", Vec::new())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(sink.only_metrics(), ExportMetricsServiceRequest::default());

    let sink = RecordingSink::rejecting(0);
    let reply = call(&sink, post_json("/v1/logs", "")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), serde_json::json!({}));
    assert_eq!(sink.only_logs(), ExportLogsServiceRequest::default());

    let sink = RecordingSink::rejecting(0);
    let request = post(
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        Vec::new(),
    );
    assert_eq!(call(&sink, request).await.status, StatusCode::OK);
    assert_eq!(sink.only_traces(), ExportTraceServiceRequest::default());
}

// --- partial success ---

#[tokio::test]
async fn partial_success_in_protobuf() {
    let sink = RecordingSink::rejecting(2);
    let reply = call(
        &sink,
        post_protobuf("/v1/traces", traces_request().encode_to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let response = ExportTraceServiceResponse::decode(reply.body).unwrap();
    assert_eq!(
        response.partial_success,
        Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "invalid trace id".to_owned(),
        })
    );

    let reply = call(
        &sink,
        post_protobuf("/v1/metrics", metrics_request().encode_to_vec()),
    )
    .await;
    let response = ExportMetricsServiceResponse::decode(reply.body).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_data_points, 2);

    let reply = call(
        &sink,
        post_protobuf("/v1/logs", logs_request().encode_to_vec()),
    )
    .await;
    let response = ExportLogsServiceResponse::decode(reply.body).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_log_records, 2);
}

#[tokio::test]
async fn partial_success_in_json() {
    let sink = RecordingSink::rejecting(2);
    let reply = call(&sink, post_json("/v1/traces", "{}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        serde_json::json!({
            "partialSuccess": {"rejectedSpans": "2", "errorMessage": "invalid trace id"}
        })
    );
    let reply = call(&sink, post_json("/v1/metrics", "{}")).await;
    assert_eq!(reply.json()["partialSuccess"]["rejectedDataPoints"], "2");
    let reply = call(&sink, post_json("/v1/logs", "{}")).await;
    assert_eq!(reply.json()["partialSuccess"]["rejectedLogRecords"], "2");
}

#[tokio::test]
async fn full_success_in_json_is_an_empty_object() {
    let sink = RecordingSink::rejecting(0);
    let reply = call(&sink, post_json("/v1/traces", &json_span(r#""name":"a""#))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), JSON);
    assert_eq!(&reply.body[..], b"{}");
}

// --- OTLP/JSON ---

#[tokio::test]
async fn json_traces_with_upper_case_hex_and_int64_numbers() {
    let sink = RecordingSink::rejecting(0);
    let body = json_span(&format!(
        r#""traceId":"{TRACE_ID_HEX}","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19b7ec3c1b173",
               "name":"GET /cart","kind":2,
               "startTimeUnixNano":1544712660000000000,"endTimeUnixNano":1544712661000000000,
               "attributes":[{{"key":"http.response.status_code","value":{{"intValue":503}}}}],
               "status":{{"code":2,"message":"upstream failed"}}"#
    ));
    let reply = call(&sink, post_json("/v1/traces", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_traces();
    let span = only_span(&request);
    assert_eq!(span.trace_id, TRACE_ID);
    assert_eq!(span.span_id, SPAN_ID);
    assert_eq!(
        span.parent_span_id,
        [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
    );
    assert_eq!(span.kind, span::SpanKind::Server as i32);
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(
        span.attributes[0].value.as_ref().unwrap().value,
        Some(any_value::Value::IntValue(503))
    );
    let status = span.status.as_ref().unwrap();
    assert_eq!(status.code, 2);
    assert_eq!(status.message, "upstream failed");
}

#[tokio::test]
async fn json_traces_with_lower_case_hex_and_int64_strings() {
    let sink = RecordingSink::rejecting(0);
    let body = json_span(&format!(
        r#""traceId":"{}","spanId":"eee19b7ec3c1b174",
               "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
               "attributes":[{{"key":"n","value":{{"intValue":"-7"}}}}],
               "events":[{{"timeUnixNano":"1544712660500000000","name":"exception"}}]"#,
        TRACE_ID_HEX.to_lowercase()
    ));
    let reply = call(&sink, post_json("/v1/traces", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_traces();
    let span = only_span(&request);
    assert_eq!(span.trace_id, TRACE_ID);
    assert_eq!(span.span_id, SPAN_ID);
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(span.events[0].time_unix_nano, 1_544_712_660_500_000_000);
    assert_eq!(
        span.attributes[0].value.as_ref().unwrap().value,
        Some(any_value::Value::IntValue(-7))
    );
}

#[tokio::test]
async fn json_unknown_fields_are_ignored_at_every_level() {
    let sink = RecordingSink::rejecting(0);
    let body = r#"{
            "future": 1,
            "resourceSpans": [{
                "future": {"nested": [1, 2]},
                "resource": {"future": "x", "attributes": [
                    {"key": "service.name", "future": true,
                     "value": {"future": {"a": [null]}, "stringValue": "checkout"}}
                ]},
                "scopeSpans": [{
                    "future": [],
                    "scope": {"name": "lib", "future": 2.5},
                    "spans": [{
                        "traceId": "5b8efff798038103d269b633813fc60c",
                        "spanId": "eee19b7ec3c1b174",
                        "future": {"deep": {"deeper": []}},
                        "name": "n",
                        "status": {"code": 1, "future": 0},
                        "events": [{"name": "e", "future": 1}],
                        "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "future": 1}]
                    }]
                }]
            }]
        }"#;
    let reply = call(&sink, post_json("/v1/traces", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_traces();
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        resource.attributes,
        [string_attribute("service.name", "checkout")]
    );
    let span = only_span(&request);
    assert_eq!(span.name, "n");
    assert_eq!(span.events[0].name, "e");
    assert_eq!(span.links[0].trace_id, TRACE_ID);
}

#[tokio::test]
async fn json_missing_optional_fields_and_nulls_read_as_defaults() {
    let sink = RecordingSink::rejecting(0);
    let body = r#"{"resourceSpans":[
            {"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c"}]}]},
            {"resource":null,"scopeSpans":[{"scope":null,"spans":[
                {"traceId":null,"spanId":null,"name":null,"attributes":null,"status":null,
                 "startTimeUnixNano":null,"kind":null}
            ]}]},
            {"scopeSpans":null}
        ]}"#;
    let reply = call(&sink, post_json("/v1/traces", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_traces();
    assert_eq!(request.resource_spans.len(), 3);
    assert_eq!(only_span(&request).trace_id, TRACE_ID);
    assert_eq!(only_span(&request).span_id, Vec::<u8>::new());
    let second = &request.resource_spans[1];
    assert_eq!(second.resource, None);
    assert_eq!(second.scope_spans[0].spans[0], Span::default());
    assert!(request.resource_spans[2].scope_spans.is_empty());
}

#[tokio::test]
async fn json_enums_as_integers() {
    let sink = RecordingSink::rejecting(0);
    let body = json_span(r#""kind":3,"status":{"code":2}"#);
    assert_eq!(
        call(&sink, post_json("/v1/traces", &body)).await.status,
        StatusCode::OK
    );
    let request = sink.only_traces();
    assert_eq!(only_span(&request).kind, span::SpanKind::Client as i32);
    assert_eq!(only_span(&request).status.as_ref().unwrap().code, 2);

    let body = json_log(r#""severityNumber":17,"body":{"stringValue":"x"}"#);
    assert_eq!(
        call(&sink, post_json("/v1/logs", &body)).await.status,
        StatusCode::OK
    );
    assert_eq!(only_record(&sink.only_logs()).severity_number, 17);

    let body = json_metric(
        r#""name":"calls","sum":{"aggregationTemporality":2,"isMonotonic":true,
                "dataPoints":[{"asInt":"5","timeUnixNano":"10"}]}"#,
    );
    assert_eq!(
        call(&sink, post_json("/v1/metrics", &body)).await.status,
        StatusCode::OK
    );
    let request = sink.only_metrics();
    let Some(metric::Data::Sum(sum)) = &only_metric(&request).data else {
        panic!("expected a sum");
    };
    assert_eq!(sum.aggregation_temporality, 2);
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.data_points[0].value,
        Some(number_data_point::Value::AsInt(5))
    );
}

#[tokio::test]
async fn json_32_bit_integers_as_strings() {
    // The protobuf JSON mapping allows every integer as a string; the
    // derive only does so for 64-bit ones.
    let sink = RecordingSink::rejecting(0);
    let body =
        json_span(r#""kind":"2","flags":"257","droppedAttributesCount":"3","status":{"code":"2"}"#);
    let reply = call(&sink, post_json("/v1/traces", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_traces();
    let span = only_span(&request);
    assert_eq!(
        (span.kind, span.flags, span.dropped_attributes_count),
        (2, 257, 3)
    );
    assert_eq!(span.status.as_ref().unwrap().code, 2);
}

#[tokio::test]
async fn json_metrics_with_numbers_and_strings() {
    let sink = RecordingSink::rejecting(0);
    let body = json_metric(
        r#""name":"http.server.request.duration","unit":"s",
               "histogram":{"aggregationTemporality":"2","dataPoints":[{
                   "startTimeUnixNano":1,"timeUnixNano":"2","count":3,"sum":"1.5",
                   "bucketCounts":["1",2],"explicitBounds":[0.5],"min":0.1,"max":"NaN",
                   "exemplars":[{"traceId":"5B8EFFF798038103D269B633813FC60C","asDouble":"0.7"}]
               }]}"#,
    );
    let reply = call(&sink, post_json("/v1/metrics", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_metrics();
    let Some(metric::Data::Histogram(histogram)) = &only_metric(&request).data else {
        panic!("expected a histogram");
    };
    assert_eq!(histogram.aggregation_temporality, 2);
    let point = &histogram.data_points[0];
    assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (1, 2));
    assert_eq!(point.count, 3);
    assert_eq!(point.sum, Some(1.5));
    assert_eq!(point.bucket_counts, [1, 2]);
    assert_eq!(point.min, Some(0.1));
    // Non-finite doubles cannot be held in a `serde_json::Value`; they
    // read as absent.
    assert_eq!(point.max, None);
    assert_eq!(point.exemplars[0].trace_id, TRACE_ID);
    assert_eq!(
        point.exemplars[0].value,
        Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(0.7))
    );
}

#[tokio::test]
async fn json_logs() {
    let sink = RecordingSink::rejecting(0);
    let body = json_log(&format!(
        r#""timeUnixNano":1544712660300000000,"observedTimeUnixNano":"1544712660300000001",
               "severityNumber":10,"severityText":"Information",
               "traceId":"{TRACE_ID_HEX}","spanId":"eee19b7ec3c1b174",
               "body":{{"kvlistValue":{{"values":[{{"key":"a","value":{{"doubleValue":"2.5"}}}}]}}}}"#
    ));
    let reply = call(&sink, post_json("/v1/logs", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let request = sink.only_logs();
    let record = only_record(&request);
    assert_eq!(record.time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(record.observed_time_unix_nano, 1_544_712_660_300_000_001);
    assert_eq!(record.severity_number, 10);
    assert_eq!(
        (&record.trace_id[..], &record.span_id[..]),
        (&TRACE_ID[..], &SPAN_ID[..])
    );
    let Some(any_value::Value::KvlistValue(map)) = &record.body.as_ref().unwrap().value else {
        panic!("expected a kvlist body");
    };
    assert_eq!(
        map.values[0].value.as_ref().unwrap().value,
        Some(any_value::Value::DoubleValue(2.5))
    );
}

#[tokio::test]
async fn json_ids_of_wrong_length_or_zero_pass_through() {
    // Invalid ids are the sink's to count; they are not an HTTP error.
    let sink = RecordingSink::rejecting(0);
    let body = json_span(r#""traceId":"00000000000000000000000000000000","spanId":"abcd""#);
    let reply = call(&sink, post_json("/v1/traces", &body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let request = sink.only_traces();
    assert_eq!(only_span(&request).trace_id, [0; 16]);
    assert_eq!(only_span(&request).span_id, [0xab, 0xcd]);
}

#[tokio::test]
async fn json_ids_that_are_not_hex_are_refused() {
    for span in [
        r#""traceId":"zz8efff798038103d269b633813fc60c""#,
        r#""spanId":"eee19b7ec3c1b17""#,
        r#""traceId":5"#,
    ] {
        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_json("/v1/traces", &json_span(span))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{span}");
        let status = reply.json();
        assert_eq!(status["code"], CODE_INVALID_ARGUMENT, "{span}");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "cannot decode ExportTraceServiceRequest as JSON: \
                     resourceSpans[0].scopeSpans[0].spans[0]."
            ),
            "{message}"
        );
        assert_eq!(sink.n_requests(), 0);
    }
}

#[tokio::test]
async fn malformed_json_is_refused_with_a_json_status() {
    let sink = RecordingSink::rejecting(0);
    let reply = call(&sink, post_json("/v1/traces", r#"{"resourceSpans":[{"#)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let status = reply.json();
    assert_eq!(status["code"], CODE_INVALID_ARGUMENT);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot decode ExportTraceServiceRequest as JSON: ")
            && message.contains("line 1 column"),
        "{message}"
    );
    assert_eq!(status.as_object().unwrap().len(), 2, "no details: {status}");

    let reply = call(&sink, post_json("/v1/logs", "[1, 2]")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(sink.n_requests(), 0);
}

#[tokio::test]
async fn json_metric_with_bad_data_is_refused_not_emptied() {
    // The derive would decode this metric without its data, silently.
    let sink = RecordingSink::rejecting(0);
    let body = json_metric(r#""name":"m","gauge":{"dataPoints":[{"asInt":1,"timeUnixNano":1.5}]}"#);
    let reply = call(&sink, post_json("/v1/metrics", &body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(
            "cannot decode ExportMetricsServiceRequest as JSON: \
                 resourceMetrics[0].scopeMetrics[0].metrics[0].gauge: \
                 dataPoints[0].timeUnixNano: "
        ),
        "{message}"
    );
    assert_eq!(sink.n_requests(), 0);
}

#[tokio::test]
async fn json_metric_without_data_is_accepted() {
    let sink = RecordingSink::rejecting(0);
    let reply = call(
        &sink,
        post_json("/v1/metrics", &json_metric(r#""name":"m""#)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(only_metric(&sink.only_metrics()).data, None);
}

/// What the `opentelemetry-proto` derive does on its own, so that an
/// upgrade that changes it shows up here and the workarounds can go.
#[test]
fn derive_refuses_nulls_and_32_bit_strings_and_swallows_metric_data_errors() {
    let refused = [
        json_span(r#""name":null"#),
        json_span(r#""traceId":null"#),
        json_span(r#""kind":"2""#),
        json_span(r#""droppedAttributesCount":"3""#),
    ];
    for body in refused {
        assert!(
            serde_json::from_str::<ExportTraceServiceRequest>(&body).is_err(),
            "{body}"
        );
    }
    let emptied = json_metric(r#""name":"m","sum":{"aggregationTemporality":"2"}"#);
    let request: ExportMetricsServiceRequest = serde_json::from_str(&emptied).unwrap();
    assert_eq!(only_metric(&request).data, None);
    let upper_case = json_span(&format!(r#""traceId":"{TRACE_ID_HEX}""#));
    let request: ExportTraceServiceRequest = serde_json::from_str(&upper_case).unwrap();
    assert_eq!(only_span(&request).trace_id, TRACE_ID);
}

// --- compression and size limits ---

#[tokio::test]
async fn gzip_protobuf() {
    let sink = RecordingSink::rejecting(0);
    let request = traces_request();
    let body = gzip(&request.encode_to_vec());
    let http_request = post(
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        body,
    );
    assert_eq!(call(&sink, http_request).await.status, StatusCode::OK);
    assert_eq!(sink.only_traces(), request);
}

#[tokio::test]
async fn gzip_json() {
    let sink = RecordingSink::rejecting(0);
    let body = gzip(json_log(r#""severityNumber":9"#).as_bytes());
    let http_request = post(
        "/v1/logs",
        &[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("content-encoding", "GZIP"),
        ],
        body,
    );
    let reply = call(&sink, http_request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), JSON);
    assert_eq!(only_record(&sink.only_logs()).severity_number, 9);
}

#[tokio::test]
async fn identity_encoding_is_plain() {
    let sink = RecordingSink::rejecting(0);
    let http_request = post(
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "identity")],
        traces_request().encode_to_vec(),
    );
    assert_eq!(call(&sink, http_request).await.status, StatusCode::OK);
    assert_eq!(sink.only_traces(), traces_request());
}

#[tokio::test]
async fn corrupt_gzip_is_refused() {
    let sink = RecordingSink::rejecting(0);
    let mut body = gzip(&traces_request().encode_to_vec());
    let middle = body.len() / 2;
    body[middle..].iter_mut().for_each(|byte| *byte ^= 0x55);
    let http_request = post(
        "/v1/traces",
        &[("content-type", JSON), ("content-encoding", "gzip")],
        body,
    );
    let reply = call(&sink, http_request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("cannot decompress gzip body: "),
        "{message}"
    );

    let http_request = post(
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        b"not gzip at all".to_vec(),
    );
    let reply = call(&sink, http_request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.rpc_status().code, CODE_INVALID_ARGUMENT);
    assert_eq!(sink.n_requests(), 0);
}

#[tokio::test]
async fn gzip_bomb_is_refused() {
    // 64 MiB of zeros compress to about 64 KB.
    let bomb = gzip(&vec![0; 64 << 20]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let sink = RecordingSink::rejecting(0);
    let http_request = post(
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        bomb,
    );
    let reply = call(&sink, http_request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let status = reply.rpc_status();
    assert_eq!(status.code, CODE_RESOURCE_EXHAUSTED);
    assert_eq!(
        status.message,
        "request body is larger than 20971520 bytes (after decompression)"
    );
    assert_eq!(sink.n_requests(), 0);
}

#[test]
fn inflate_stops_at_the_limit() {
    // A 1 GiB bomb as 1024 gzip members of 1 MiB of zeros each (about
    // 1 MB). Refusing it must consume only the input needed to produce
    // the limit, not inflate the whole gigabyte.
    let member = gzip(&vec![0; 1 << 20]);
    let bomb = member.repeat(1024);
    let limit = 20 << 20;
    let mut unread = &bomb[..];
    assert!(matches!(
        inflate(&mut unread, limit),
        Err(Refusal::TooLarge { limit: 20_971_520 })
    ));
    let consumed = bomb.len() - unread.len();
    assert!(
        consumed < bomb.len() / 10,
        "consumed {consumed} of {}",
        bomb.len()
    );

    // At the limit exactly, the body is accepted.
    let exact = gzip(&vec![7; 1000]);
    assert_eq!(inflate(&exact[..], 1000).unwrap(), vec![7; 1000]);
    assert!(matches!(
        inflate(&exact[..], 999),
        Err(Refusal::TooLarge { .. })
    ));
}

#[tokio::test]
async fn raw_body_over_the_limit_is_refused() {
    let config = HttpConfig {
        max_request_body_size: 1024,
    };
    let sink = RecordingSink::rejecting(0);
    let body = vec![0x0a; 2048];
    let reply = call_with(
        &sink,
        config.clone(),
        post_protobuf("/v1/traces", body.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.rpc_status().code, CODE_RESOURCE_EXHAUSTED);

    // Without a Content-Length the limit is found while reading.
    let chunks = body
        .chunks(100)
        .map(|chunk| Ok::<_, io::Error>(Bytes::copy_from_slice(chunk)))
        .collect::<Vec<_>>();
    let streamed = Body::from_stream(tokio_stream::iter(chunks));
    let reply = call_with(
        &sink,
        config.clone(),
        post_json("/v1/logs", "").map(|_| streamed),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], CODE_RESOURCE_EXHAUSTED);

    // The compressed body is held to the limit too.
    let compressed = gzip(&body);
    let http_request = post(
        "/v1/traces",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        compressed,
    );
    let reply = call_with(&sink, config, http_request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(sink.n_requests(), 0);
}

// --- content negotiation and routing ---

#[tokio::test]
async fn unsupported_content_type_is_refused() {
    for content_type in [Some("text/plain"), Some("application/protobuf"), None] {
        let sink = RecordingSink::rejecting(0);
        let headers: Vec<_> = content_type
            .map(|value| ("content-type", value))
            .into_iter()
            .collect();
        let reply = call(
            &sink,
            post("/v1/traces", &headers, traces_request().encode_to_vec()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let status = reply.rpc_status();
        assert_eq!(status.code, CODE_INVALID_ARGUMENT);
        assert!(
            status.message.contains("application/x-protobuf")
                && status.message.contains("application/json"),
            "{}",
            status.message
        );
        assert_eq!(sink.n_requests(), 0);
    }
}

#[tokio::test]
async fn unsupported_content_encoding_is_refused() {
    let sink = RecordingSink::rejecting(0);
    let http_request = post(
        "/v1/traces",
        &[("content-type", JSON), ("content-encoding", "br")],
        "{}",
    );
    let reply = call(&sink, http_request).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status = reply.rpc_status();
    assert!(
        status.message.contains("\"br\"") && status.message.contains("gzip"),
        "{}",
        status.message
    );
    assert_eq!(sink.n_requests(), 0);
}

#[tokio::test]
async fn content_type_parameters_and_case_are_ignored() {
    let sink = RecordingSink::rejecting(0);
    let http_request = post(
        "/v1/traces",
        &[("content-type", "Application/X-Protobuf ; charset=binary")],
        traces_request().encode_to_vec(),
    );
    let reply = call(&sink, http_request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), PROTOBUF);
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let sink = RecordingSink::rejecting(0);
        let request = Request::builder()
            .method(method.clone())
            .uri("/v1/metrics")
            .body(Body::empty())
            .unwrap();
        let reply = call(&sink, request).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.headers.get(header::ALLOW).unwrap(), "POST");
    }
}

#[tokio::test]
async fn unknown_paths_are_not_found() {
    for path in ["/", "/v1/trace", "/v1/traces/extra", "/v2/logs"] {
        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_protobuf(path, Vec::new())).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
}

// --- decoding limits and the decode pool (issue #14) ---

async fn call_decoding(sink: &Arc<RecordingSink>, decoding: Decoding, request: Request) -> Reply {
    let sink: Arc<dyn Sink> = sink.clone();
    let response = router_with(sink, HttpConfig::default(), decoding)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

fn limits(max_items: usize, max_decoded_bytes: usize) -> Decoding {
    Decoding {
        limits: Limits {
            max_items,
            max_decoded_bytes,
        },
        pool: DecodePool::default(),
    }
}

const SIGNALS: [(&str, Schema, &str); 3] = [
    ("/v1/traces", Schema::ExportTraces, "spans"),
    ("/v1/metrics", Schema::ExportMetrics, "metric data points"),
    ("/v1/logs", Schema::ExportLogs, "log records"),
];

fn over_items(items: &str) -> String {
    format!(
        "request carries more than 100000 {items}, the limit per request (max_items); \
         send smaller batches"
    )
}

/// The bodies of issue #14: 20 MiB of empty items, about 20 KB gzipped.
#[tokio::test]
async fn a_gzip_bomb_of_empty_items_is_refused_before_decoding() {
    let sink = RecordingSink::rejecting(0);
    for (path, schema, items) in SIGNALS {
        let body = test_support::protobuf(schema, test_support::protobuf_items(BOMB_BYTES));
        let bomb = gzip(&body);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let headers = [("content-type", PROTOBUF), ("content-encoding", "gzip")];
        let reply = call(&sink, post(path, &headers, bomb)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        let status = reply.rpc_status();
        assert_eq!(status.code, CODE_INVALID_ARGUMENT);
        assert_eq!(status.message, over_items(items));

        let body = test_support::json(schema, test_support::json_items(BOMB_BYTES));
        let headers = [("content-type", JSON), ("content-encoding", "gzip")];
        let reply = call(&sink, post(path, &headers, gzip(body.as_bytes()))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            reply.json(),
            serde_json::json!({ "code": CODE_INVALID_ARGUMENT, "message": over_items(items) })
        );
    }
    assert_eq!(
        sink.n_requests(),
        0,
        "nothing of a refused request is recorded"
    );
    // The receiver goes on answering.
    let reply = call(
        &sink,
        post_protobuf("/v1/traces", traces_request().encode_to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(sink.only_traces(), traces_request());
}

#[tokio::test]
async fn items_up_to_the_limit_are_accepted() {
    let sink = RecordingSink::rejecting(0);
    let mut request = traces_request();
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans.push(spans[0].clone());
    spans.push(spans[0].clone());
    let body = request.encode_to_vec();
    let reply = call_decoding(&sink, limits(3, 1 << 20), post_protobuf("/v1/traces", body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(sink.only_traces(), request);

    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans.push(spans[0].clone());
    let json = serde_json::to_string(&request).unwrap();
    let reply = call_decoding(&sink, limits(3, 1 << 20), post_json("/v1/traces", &json)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["message"],
        "request carries more than 3 spans, the limit per request (max_items); \
         send smaller batches"
    );
}

#[tokio::test]
async fn a_request_whose_decoding_would_take_too_much_memory_is_refused() {
    // No item at all: a hundred thousand empty resources.
    let body = [0x0a, 0x00].repeat(100_000);
    let sink = RecordingSink::rejecting(0);
    for (path, _, _) in SIGNALS {
        let reply = call_decoding(
            &sink,
            limits(10, 1 << 20),
            post_protobuf(path, body.clone()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        let status = reply.rpc_status();
        assert_eq!(status.code, CODE_INVALID_ARGUMENT);
        assert_eq!(
            status.message,
            "decoding the request would take more than 1 MiB, the limit per request \
             (max_decoded_bytes), from 200000 bytes of protobuf; send smaller batches"
        );
    }
    assert_eq!(sink.n_requests(), 0);
    // Within the default limits the same body is an ordinary request.
    let reply = call(&sink, post_protobuf("/v1/logs", body)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// A sink whose logs wait until the test releases them (or 30 s pass, so
/// that a regression fails instead of hanging).
struct BlockingSink {
    inner: Arc<RecordingSink>,
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
    released: std::sync::atomic::AtomicBool,
}

impl Sink for BlockingSink {
    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
        self.inner.traces(request)
    }

    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        self.inner.metrics(request)
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
        }
        let wait = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(std::time::Duration::from_secs(30));
        self.released
            .store(wait.is_ok(), std::sync::atomic::Ordering::SeqCst);
        self.inner.logs(request)
    }
}

/// Decoding and recording run on the decode pool: while one request is
/// inside the sink, the (single-threaded) runtime goes on serving others.
#[tokio::test]
async fn a_request_being_decoded_does_not_hold_up_others() {
    let (entered, inside) = tokio::sync::oneshot::channel();
    let (release, waiting) = std::sync::mpsc::channel();
    let sink = Arc::new(BlockingSink {
        inner: RecordingSink::rejecting(0),
        entered: Mutex::new(Some(entered)),
        release: Mutex::new(waiting),
        released: std::sync::atomic::AtomicBool::new(false),
    });
    let decoding = Decoding {
        limits: Limits::default(),
        pool: DecodePool::new(std::num::NonZeroUsize::new(2).unwrap()),
    };
    let app = router_with(sink.clone(), HttpConfig::default(), decoding);
    let logs = post_protobuf("/v1/logs", logs_request().encode_to_vec());
    let first = tokio::spawn(app.clone().oneshot(logs));
    inside.await.unwrap();
    let metrics = post_protobuf("/v1/metrics", metrics_request().encode_to_vec());
    let second = app.oneshot(metrics).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert!(
        sink.released.load(std::sync::atomic::Ordering::SeqCst),
        "the metrics request was answered while the logs request was in the sink"
    );
}

// --- self-metrics ---

#[test]
fn requests_and_refusals_are_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let sink = RecordingSink::rejecting(0);
            call(
                &sink,
                post_protobuf("/v1/traces", traces_request().encode_to_vec()),
            )
            .await;
            call(&sink, post_json("/v1/traces", "{")).await;
            call(
                &sink,
                post("/v1/logs", &[("content-type", "text/plain")], "x"),
            )
            .await;
            let config = HttpConfig {
                max_request_body_size: 1,
            };
            call_with(&sink, config, post_json("/v1/metrics", "{}")).await;
            let http_request = post(
                "/v1/metrics",
                &[("content-type", JSON), ("content-encoding", "zstd")],
                "{}",
            );
            call(&sink, http_request).await;
            let spans = test_support::protobuf(Schema::ExportTraces, 4);
            call_decoding(
                &sink,
                limits(3, 1 << 20),
                post_protobuf("/v1/traces", spans),
            )
            .await;
        });
    });
    let rendered = handle.render();
    for line in [
        r#"triage_http_requests_total{signal="traces",status="200"} 1"#,
        r#"triage_http_requests_total{signal="traces",status="400"} 2"#,
        r#"triage_http_requests_total{signal="logs",status="415"} 1"#,
        r#"triage_http_requests_total{signal="metrics",status="413"} 1"#,
        r#"triage_http_requests_total{signal="metrics",status="415"} 1"#,
        r#"triage_receiver_refused_requests_total{transport="http",signal="traces",reason="decode"} 1"#,
        r#"triage_receiver_refused_requests_total{transport="http",signal="logs",reason="unsupported_media_type"} 1"#,
        r#"triage_receiver_refused_requests_total{transport="http",signal="metrics",reason="too_large"} 1"#,
        r#"triage_receiver_refused_requests_total{transport="http",signal="metrics",reason="unsupported_encoding"} 1"#,
        r#"triage_receiver_refused_requests_total{transport="http",signal="traces",reason="too_many_items"} 1"#,
    ] {
        assert!(rendered.contains(line), "missing {line} in:\n{rendered}");
    }
}

// --- admission: memory limit and decode queue (issue #14) ---

/// The retryable answer: 503, `Retry-After`, and a `google.rpc.Status`
/// UNAVAILABLE with a RetryInfo detail.
fn assert_retryable(reply: &Reply, reason_words: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers.get(header::RETRY_AFTER).unwrap(), "1");
    let status = reply.rpc_status();
    assert_eq!(status.code, crate::receiver::admission::CODE_UNAVAILABLE);
    assert!(status.message.contains(reason_words), "{}", status.message);
    assert_eq!(
        status.details[0].type_url,
        crate::receiver::admission::RETRY_INFO_TYPE
    );
}

async fn reply_of(response: Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn memory_over_the_limit_is_503_with_retry_after_and_nothing_is_recorded() {
    use crate::receiver::admission::{MemoryLimiter, QueueLimits};
    let sink = RecordingSink::rejecting(0);
    let memory = MemoryLimiter::off();
    let decoding = Decoding {
        limits: Limits::default(),
        pool: DecodePool::with_admission(
            std::num::NonZeroUsize::MIN,
            QueueLimits::default(),
            Arc::clone(&memory),
        ),
    };
    let app = router_with(sink.clone(), HttpConfig::default(), decoding);
    memory.force(Some(true));
    let refused = app
        .clone()
        .oneshot(post_protobuf(
            "/v1/traces",
            traces_request().encode_to_vec(),
        ))
        .await
        .unwrap();
    assert_retryable(&reply_of(refused).await, "over its memory limit");
    let json = app
        .clone()
        .oneshot(post_json("/v1/logs", "{}"))
        .await
        .unwrap();
    let json = reply_of(json).await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json.json()["code"], 14);
    assert_eq!(
        json.json()["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert_eq!(sink.n_requests(), 0);
    // Memory fell: accepted again.
    memory.force(Some(false));
    let accepted = app
        .oneshot(post_protobuf(
            "/v1/traces",
            traces_request().encode_to_vec(),
        ))
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(sink.n_requests(), 1);
}

/// With the only decoder busy and the queue full, a request is answered
/// 503 at once instead of waiting; the queued one is served afterwards.
#[tokio::test]
async fn a_full_decode_queue_is_answered_503_at_once() {
    use crate::receiver::admission::{MemoryLimiter, QueueLimits};
    let (entered, inside) = tokio::sync::oneshot::channel();
    let (release, waiting) = std::sync::mpsc::channel();
    let sink = Arc::new(BlockingSink {
        inner: RecordingSink::rejecting(0),
        entered: Mutex::new(Some(entered)),
        release: Mutex::new(waiting),
        released: std::sync::atomic::AtomicBool::new(false),
    });
    let queue = QueueLimits {
        max_requests: 1,
        ..QueueLimits::default()
    };
    let pool = DecodePool::with_admission(std::num::NonZeroUsize::MIN, queue, MemoryLimiter::off());
    let decoding = Decoding {
        limits: Limits::default(),
        pool: pool.clone(),
    };
    let app = router_with(sink.clone(), HttpConfig::default(), decoding);
    let logs = || post_protobuf("/v1/logs", logs_request().encode_to_vec());
    let first = tokio::spawn(app.clone().oneshot(logs()));
    inside.await.unwrap();
    let second = tokio::spawn(app.clone().oneshot(logs()));
    // Once the second waits in the queue, a third is refused before its
    // body is read.
    while pool.admit().is_ok() {
        tokio::task::yield_now().await;
    }
    let third = reply_of(app.clone().oneshot(logs()).await.unwrap()).await;
    assert_retryable(&third, "already waiting to be decoded");
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
}
