use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::receiver::ingest::span_view;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request() -> ExportTraceServiceRequest {
    let span = |n: u8| Span {
        trace_id: vec![0xab; 16],
        span_id: vec![n; 8],
        parent_span_id: if n > 1 { vec![1; 8] } else { Vec::new() },
        name: format!("GET /x/{n}"),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_123_000_000,
        attributes: vec![
            attribute("http.route", Value::StringValue("/x/{id}".into())),
            attribute("http.response.status_code", Value::IntValue(503)),
            attribute("db.system.name", Value::StringValue("redis".into())),
            attribute("other", Value::DoubleValue(1.5)),
            attribute("rpc.method", Value::StringValue("Get".into())),
            attribute("app.tenant", Value::StringValue("acme".into())),
        ],
        events: vec![opentelemetry_proto::tonic::trace::v1::span::Event {
            name: "feature_flag.evaluation".into(),
            attributes: vec![
                attribute("feature_flag.key", Value::StringValue("dark-mode".into())),
                attribute(
                    "feature_flag.result.variant",
                    Value::StringValue("on".into()),
                ),
            ],
            ..Default::default()
        }],
        status: Some(Status {
            code: 2,
            message: "x".into(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", Value::StringValue("svc".into())),
                    attribute("service.version", Value::StringValue("2.0.1".into())),
                    attribute("k8s.pod.name", Value::StringValue("pod-1".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(1), span(2)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn reads_what_the_general_path_reads() {
    let original = request();
    let json = serde_json::to_string(&original).expect("serializes");
    let traces = JsonTraces::read(json.as_bytes()).expect("fast path reads it");
    let batch = traces.batch();
    let expected: Vec<SpanView<'_>> = original.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(span_view)
        .collect();
    assert_eq!(batch.spans, expected);
    assert_eq!(batch.resources[0].service_name, Some("svc"));
    assert_eq!(batch.resources[0].attributes.service_version, Some("2.0.1"));
    assert_eq!(batch.resources[0].attributes.k8s_pod_name, Some("pod-1"));
    let span = &batch.spans[1].attributes;
    assert_eq!(span.feature_flag_key, Some("dark-mode"));
    assert_eq!(span.feature_flag_variant, Some("on"));
    assert_eq!(span.rpc_method, Some("Get"));
    let keys = ExtraKeys::new(&["app.tenant"]);
    let batch = traces.batch_with(&keys);
    let tenants: Vec<(u32, ValueRef<'_>)> = batch
        .extras
        .iter()
        .map(|extra| (extra.span, extra.value))
        .collect();
    assert_eq!(
        tenants,
        vec![(0, ValueRef::Str("acme")), (1, ValueRef::Str("acme"))]
    );
}

#[test]
fn otlp_json_rules() {
    // Upper-case hex, int64 as numbers and as strings, null, unknown fields.
    let line = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},
        "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"0102030405060708090A0B0C0D0E0F10","spanId":"AABBCCDDEEFF0011",
        "parentSpanId":null,"name":"op","kind":2,"startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000500000000",
        "unknownField":{"deep":[1,2]},"attributes":[{"key":"http.response.status_code","value":{"intValue":"500"}}]}]}]}]}"#;
    let traces = JsonTraces::read(line).expect("fast path reads it");
    let batch = traces.batch();
    let span = &batch.spans[0];
    assert_eq!(span.trace_id, &(1..=16).collect::<Vec<u8>>()[..]);
    assert_eq!(
        span.span_id,
        &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11]
    );
    assert!(span.parent_span_id.is_empty());
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        500_000_000
    );
    assert_eq!(span.attributes.http_status, Some(500));
}

#[test]
fn what_it_cannot_read_is_left_to_the_general_path() {
    assert!(JsonTraces::read(br#"{"resourceMetrics":[]}"#).is_none());
    assert!(JsonTraces::read(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#
    )
    .is_none());
    assert!(JsonTraces::read(b"not json").is_none());
}
