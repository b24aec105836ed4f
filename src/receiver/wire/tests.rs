use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::receiver::decode::span_view;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>, service: Option<&str>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: service
                    .map(|name| attribute("service.name", Value::StringValue(name.to_string())))
                    .into_iter()
                    .chain([
                        attribute("host.name", Value::StringValue("h".into())),
                        attribute("service.version", Value::StringValue("1.4.2".into())),
                        attribute("deployment.environment", Value::StringValue("old".into())),
                        attribute(
                            "deployment.environment.name",
                            Value::StringValue("prod".into()),
                        ),
                        attribute("cloud.region", Value::StringValue("eu-west-1".into())),
                        attribute("k8s.pod.name", Value::IntValue(7)),
                    ])
                    .collect(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn rich_span(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n.wrapping_add(1); 8],
        parent_span_id: vec![n.wrapping_add(2); 8],
        trace_state: "vendor=1".to_string(),
        name: format!("GET /item/{n}"),
        kind: 2,
        start_time_unix_nano: 1_000 + u64::from(n),
        end_time_unix_nano: 9_000_000 + u64::from(n),
        attributes: vec![
            attribute("http.route", Value::StringValue("/item/{id}".into())),
            attribute("http.response.status_code", Value::IntValue(503)),
            attribute("server.address", Value::StringValue("api".into())),
            attribute("db.system.name", Value::StringValue("postgresql".into())),
            attribute("db.namespace", Value::StringValue("orders".into())),
            attribute("peer.service", Value::StringValue("inventory".into())),
            attribute(
                "messaging.destination.name",
                Value::StringValue("events".into()),
            ),
            attribute("ratio", Value::DoubleValue(0.5)),
            attribute("rpc.method", Value::StringValue("GetItem".into())),
            attribute("app.tenant", Value::StringValue("acme".into())),
            attribute("shop.tenant", Value::IntValue(42)),
            attribute("flag", Value::BoolValue(true)),
            attribute("blob", Value::BytesValue(vec![1, 2, 3])),
        ],
        events: vec![
            Event {
                name: "exception".into(),
                attributes: vec![attribute(
                    "feature_flag.key",
                    Value::StringValue("not-a-flag-event".into()),
                )],
                ..Default::default()
            },
            Event {
                name: "feature_flag.evaluation".into(),
                attributes: vec![
                    attribute(
                        "feature_flag.key",
                        Value::StringValue("new-checkout".into()),
                    ),
                    attribute("feature_flag.variant", Value::StringValue("old".into())),
                    attribute(
                        "feature_flag.result.variant",
                        Value::StringValue("on".into()),
                    ),
                ],
                ..Default::default()
            },
        ],
        status: Some(Status {
            code: 2,
            message: "boom".into(),
        }),
        flags: 0x301,
        ..Default::default()
    }
}

#[test]
fn reads_what_prost_decodes() {
    let original = request(
        vec![rich_span(1), rich_span(7), Span::default()],
        Some("checkout"),
    );
    let bytes = original.encode_to_vec();
    let batch = TraceBatch::read(&bytes).expect("valid request");
    assert_eq!(batch.resources.len(), 1);
    assert_eq!(batch.resources[0].service_name, Some("checkout"));
    assert_eq!(batch.resources[0].spans, 0..3);
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("prost decodes it");
    let expected: Vec<SpanView<'_>> = decoded.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(span_view)
        .collect();
    assert_eq!(batch.spans, expected);
    let span = &batch.spans[0].attributes;
    assert_eq!(span.rpc_method, Some("GetItem"));
    assert_eq!(span.feature_flag_key, Some("new-checkout"));
    assert_eq!(span.feature_flag_variant, Some("on"));
    let resource = &batch.resources[0].attributes;
    assert_eq!(resource.service_version, Some("1.4.2"));
    assert_eq!(resource.deployment_environment, Some("prod"));
    assert_eq!(resource.cloud_region, Some("eu-west-1"));
    assert_eq!(resource.host_name, Some("h"));
    // Not a string: not kept.
    assert_eq!(resource.k8s_pod_name, None);
    assert_eq!(
        crate::receiver::decode::resource_attributes(decoded.resource_spans[0].resource.as_ref()),
        *resource
    );
    assert!(batch.extras.is_empty(), "no extra keys asked for");
}

#[test]
fn span_attributes_win_over_flag_events() {
    let mut span = rich_span(1);
    span.attributes.push(attribute(
        "feature_flag.key",
        Value::StringValue("from-attributes".into()),
    ));
    let bytes = request(vec![span], Some("s")).encode_to_vec();
    let batch = TraceBatch::read(&bytes).expect("valid");
    assert_eq!(
        batch.spans[0].attributes.feature_flag_key,
        Some("from-attributes")
    );
}

#[test]
fn extra_keys_exact_and_suffix() {
    let bytes = request(vec![rich_span(1), rich_span(2)], Some("s")).encode_to_vec();
    let keys = ExtraKeys::new(&["*.tenant", "ratio", "http.route"]);
    let batch = TraceBatch::read_with(&bytes, &keys).expect("valid");
    let found: Vec<(u32, u8, ValueRef<'_>)> = batch
        .extras
        .iter()
        .map(|extra| (extra.span, extra.slot, extra.value))
        .collect();
    // `http.route` is read anyway, so it is never an extra.
    assert_eq!(
        found,
        vec![
            (0, 1, ValueRef::Double(0.5)),
            (0, 0, ValueRef::Str("acme")),
            (0, 0, ValueRef::Int(42)),
            (1, 1, ValueRef::Double(0.5)),
            (1, 0, ValueRef::Str("acme")),
            (1, 0, ValueRef::Int(42)),
        ]
    );
    // The prost path finds the same values.
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
    let mut extras = Vec::new();
    for (index, span) in decoded.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .enumerate()
    {
        crate::receiver::decode::span_extras(span, &keys, index as u32, &mut extras);
    }
    assert_eq!(extras, batch.extras);
    assert_eq!(keys.slot(b"x"), None);
    assert_eq!(ExtraKeys::none().slot(b"app.tenant"), None);
}

#[test]
fn missing_service_name_and_empty_request() {
    let bytes = request(vec![rich_span(3)], None).encode_to_vec();
    assert_eq!(
        TraceBatch::read(&bytes).expect("valid").resources[0].service_name,
        None
    );
    assert_eq!(
        TraceBatch::read(&[]).expect("empty is valid"),
        TraceBatch::default()
    );
}

#[test]
fn malformed_bytes_are_refused() {
    let bytes = request(vec![rich_span(1)], Some("s")).encode_to_vec();
    // Truncated anywhere inside the message.
    for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
        assert!(TraceBatch::read(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    for garbage in [
        &[0x0a, 0xff, 0xff][..],
        &[0x0b][..],
        &[0x00][..],
        &[0x0a, 0x02, 0x12][..],
    ] {
        let error = TraceBatch::read(garbage).expect_err("garbage");
        assert!(error.to_string().starts_with("invalid protobuf"), "{error}");
    }
    // A span name that is not UTF-8.
    let mut span = rich_span(1);
    span.name = "x".into();
    let mut bytes = request(vec![span], Some("s")).encode_to_vec();
    // Field 5 (name), length-delimited, one byte long: tag 0x2a, length 1.
    let at = bytes
        .windows(3)
        .position(|window| window == [0x2a, 0x01, b'x'])
        .expect("name field");
    bytes[at + 2] = 0xff;
    assert!(TraceBatch::read(&bytes).is_err());
}

proptest! {
    /// On arbitrary bytes the reader never panics, and whenever prost can
    /// decode them, the reader accepts them too.
    #[test]
    fn never_panics_and_accepts_what_prost_accepts(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ours = TraceBatch::read(&bytes);
        if ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok() {
            prop_assert!(ours.is_ok(), "{:?}", ours);
        }
    }

    /// Mutating one byte of a valid request: the reader either refuses it or
    /// reads a batch, and never panics.
    #[test]
    fn single_byte_mutations(position in 0usize..400, byte in any::<u8>()) {
        let mut bytes = request(vec![rich_span(1), rich_span(2)], Some("svc")).encode_to_vec();
        let position = position % bytes.len();
        bytes[position] = byte;
        let _ = TraceBatch::read(&bytes);
    }
}
