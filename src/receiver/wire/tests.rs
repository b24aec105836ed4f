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

// --- disagreements with prost that the `protobuf` fuzz check found
// (docs/RELIABILITY.md, "Fuzzing") ---

/// A span whose bytes are `parts` one after the other: protobuf merges
/// them, as a sender may split a message.
fn merged(parts: &[Span]) -> Vec<u8> {
    let span: Vec<u8> = parts.iter().flat_map(Message::encode_to_vec).collect();
    let mut scope = vec![0x12];
    prost::encoding::encode_varint(span.len() as u64, &mut scope);
    scope.extend(span);
    let mut resource = vec![0x12];
    prost::encoding::encode_varint(scope.len() as u64, &mut resource);
    resource.extend(scope);
    let mut request = vec![0x0a];
    prost::encoding::encode_varint(resource.len() as u64, &mut request);
    request.extend(resource);
    request
}

/// The spans of a prost request's first scope, as recording reads them.
fn prost_spans(request: &ExportTraceServiceRequest) -> Vec<SpanView<'_>> {
    request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(span_view)
        .collect()
}

#[test]
fn groups_in_unknown_fields_are_skipped_as_prost_does() {
    let mut bytes = request(vec![rich_span(1)], Some("svc")).encode_to_vec();
    // Field 9 of the request: a group holding a varint and a nested group.
    bytes.extend([0x4b, 0x08, 0x01, 0x13, 0x14, 0x4c]);
    assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_ok());
    assert_eq!(TraceBatch::read(&bytes).unwrap().spans.len(), 1);
    // A group where a message is expected, one never ended, one ended by
    // another field's end, or an end alone: prost refuses each too.
    for bad in [
        &[0x0b, 0x0c][..],
        &[0x4b, 0x08, 0x01][..],
        &[0x4b, 0x54][..],
        &[0x4c][..],
    ] {
        assert!(ExportTraceServiceRequest::decode(bad).is_err(), "{bad:?}");
        assert!(TraceBatch::read(bad).is_err(), "{bad:?}");
    }
    // Nested past prost's recursion limit.
    let deep: Vec<u8> = [vec![0x4b; 101], vec![0x4c; 101]].concat();
    assert!(TraceBatch::read(&deep).is_err());
}

#[test]
fn a_status_given_twice_is_merged_as_prost_merges_it() {
    let mut failed = rich_span(1);
    failed.status = Some(Status {
        code: 2,
        ..Default::default()
    });
    let later = Span {
        status: Some(Status {
            message: "timeout".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = merged(&[failed, later]);
    let batch = TraceBatch::read(&bytes).unwrap();
    assert_eq!(batch.spans[0].status_code, 2);
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    assert_eq!(batch.spans, prost_spans(&decoded));
}

/// An attribute whose value comes twice, the second time empty: prost
/// merges the two and keeps the first value, and so does the reader (it
/// used to read the second over it, and lost an HTTP route).
#[test]
fn an_attribute_value_given_twice_is_merged_as_prost_merges_it() {
    fn field(number: u32, body: &[u8], out: &mut Vec<u8>) {
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
        prost::encoding::encode_varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let route = AnyValue {
        value: Some(Value::StringValue("/a".into())),
    };
    let mut pair = Vec::new();
    field(1, b"http.route", &mut pair);
    field(2, &route.encode_to_vec(), &mut pair);
    field(2, &[], &mut pair);
    let mut span = rich_span(1);
    span.attributes.clear();
    let mut span = span.encode_to_vec();
    field(9, &pair, &mut span);
    let (mut scope, mut resource, mut request) = (Vec::new(), Vec::new(), Vec::new());
    field(2, &span, &mut scope);
    field(2, &scope, &mut resource);
    field(1, &resource, &mut request);
    let batch = TraceBatch::read(&request).unwrap();
    assert_eq!(batch.spans[0].attributes.http_route, Some("/a"));
    let decoded = ExportTraceServiceRequest::decode(&request[..]).unwrap();
    assert_eq!(batch.spans, prost_spans(&decoded));
}

#[test]
fn a_flag_event_before_the_flag_attribute_does_not_lend_its_variant() {
    let mut evaluated = rich_span(1);
    evaluated.attributes.clear();
    evaluated.events = vec![Event {
        name: FLAG_EVENT.into(),
        attributes: vec![
            attribute("feature_flag.key", Value::StringValue("f".into())),
            attribute(
                "feature_flag.result.variant",
                Value::StringValue("on".into()),
            ),
        ],
        ..Default::default()
    }];
    let own = Span {
        attributes: vec![attribute(
            "feature_flag.key",
            Value::StringValue("g".into()),
        )],
        ..Default::default()
    };
    // Events (field 11) first, then the span's own attribute (field 9).
    let bytes = merged(&[evaluated, own]);
    let span = TraceBatch::read(&bytes).unwrap().spans[0];
    assert_eq!(span.attributes.feature_flag_key, Some("g"));
    assert_eq!(span.attributes.feature_flag_variant, None);
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    assert_eq!(vec![span], prost_spans(&decoded));
}

/// Found by libFuzzer (`protobuf` target, second run): an unknown field
/// after the string in an `AnyValue` turned the value into "other".
#[test]
fn an_unknown_field_after_a_value_keeps_the_value() {
    fn field(number: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }
    // AnyValue: string "eu-west-1", then field 12 as fixed32 (tag 0x65).
    let value = [&field(1, b"eu-west-1")[..], &[0x65, 1, 2, 3, 4]].concat();
    let key_value = [field(1, b"cloud.region"), field(2, &value)].concat();
    let bytes = field(1, &field(1, &field(1, &key_value)));

    let batch = TraceBatch::read(&bytes).unwrap();
    assert_eq!(
        batch.resources[0].attributes.cloud_region,
        Some("eu-west-1")
    );
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    let resource = decoded.resource_spans[0].resource.as_ref();
    assert_eq!(
        crate::receiver::decode::resource_attributes(resource),
        batch.resources[0].attributes
    );
}

#[test]
fn duplicate_service_names_read_the_same_as_prost_requests() {
    let mut request = request(vec![rich_span(1)], Some("first"));
    let resource = request.resource_spans[0].resource.as_mut().unwrap();
    resource.attributes.extend([
        attribute("service.name", Value::StringValue("last".into())),
        attribute("service.name", Value::IntValue(7)),
    ]);
    let bytes = request.encode_to_vec();
    let batch = TraceBatch::read(&bytes).unwrap();
    assert_eq!(batch.resources[0].service_name, Some("last"));
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
    let resource = decoded.resource_spans[0].resource.as_ref();
    assert_eq!(crate::receiver::decode::service_name(resource), "last");
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

// --- measure: the limits, checked before decoding ---

mod measure {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data,
        summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
        ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::trace::v1::span::Link;

    use super::*;
    use crate::receiver::decode::schema::Message as Schema;
    use crate::receiver::decode::test_support::{
        self, batch_heap, logs_heap, metrics_heap, traces_heap, BOMB_BYTES,
    };
    use crate::receiver::decode::{Limits, OverLimit};

    fn items_over(limit: usize, items: &'static str) -> OverLimit {
        OverLimit::TooManyItems { items, limit }
    }

    fn traces() -> ExportTraceServiceRequest {
        let mut spans: Vec<Span> = (0..40).map(rich_span).collect();
        spans.push(Span::default());
        spans[0].links.push(Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![attribute("a", Value::StringValue("b".into()))],
            ..Default::default()
        });
        request(spans, Some("checkout"))
    }

    fn metrics() -> ExportMetricsServiceRequest {
        let attributes = || {
            vec![
                attribute("http.route", Value::StringValue("/a".into())),
                attribute("state", Value::StringValue("idle".into())),
            ]
        };
        let number = |n: u64| NumberDataPoint {
            attributes: attributes(),
            time_unix_nano: n,
            exemplars: vec![Exemplar {
                span_id: vec![1; 8],
                trace_id: vec![2; 16],
                filtered_attributes: attributes(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let metric = |name: &str, data: Data| Metric {
            name: name.into(),
            unit: "ms".into(),
            data: Some(data),
            metadata: attributes(),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: attributes(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "gauge",
                            Data::Gauge(Gauge {
                                data_points: (0..20).map(number).collect(),
                            }),
                        ),
                        metric(
                            "histogram",
                            Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes: attributes(),
                                    bucket_counts: vec![1; 17],
                                    explicit_bounds: vec![0.5; 16],
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                        ),
                        metric(
                            "exponential",
                            Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    positive: Some(Buckets {
                                        offset: 3,
                                        bucket_counts: vec![0, 300, 1, 1 << 40, 5],
                                    }),
                                    negative: Some(Buckets {
                                        offset: 0,
                                        bucket_counts: vec![9; 33],
                                    }),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                        ),
                        metric(
                            "summary",
                            Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    quantile_values: vec![ValueAtQuantile::default(); 3],
                                    ..Default::default()
                                }],
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn logs() -> ExportLogsServiceRequest {
        let record = |n: u8| LogRecord {
            severity_text: "WARN".into(),
            body: Some(AnyValue {
                value: Some(Value::KvlistValue(
                    opentelemetry_proto::tonic::common::v1::KeyValueList {
                        values: vec![attribute("message", Value::StringValue("x".repeat(90)))],
                    },
                )),
            }),
            attributes: vec![attribute(
                "k8s.event.reason",
                Value::StringValue("Killing".into()),
            )],
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (0..30).map(record).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn estimates_cover_what_the_decoders_allocate() {
        let request = traces();
        let bytes = request.encode_to_vec();
        let measured = measure_views(&bytes, Limits::default()).expect("within the limits");
        assert_eq!(measured.items, 41);
        let keys = ExtraKeys::new(&["*.tenant", "ratio"]);
        let batch = TraceBatch::read_with(&bytes, &keys).expect("valid");
        assert!(measured.decoded_bytes >= batch_heap(&batch));

        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).expect("valid");
        let copied = measure_prost(&bytes, Schema::ExportTraces, Limits::default()).unwrap();
        assert_eq!(copied.items, 41);
        assert!(copied.decoded_bytes >= traces_heap(&decoded));
        // Read without copying, spans take far less than decoded by prost.
        assert!(measured.decoded_bytes * 2 < copied.decoded_bytes);

        let bytes = metrics().encode_to_vec();
        let decoded = ExportMetricsServiceRequest::decode(&bytes[..]).expect("valid");
        let measured = measure_prost(&bytes, Schema::ExportMetrics, Limits::default()).unwrap();
        assert_eq!(measured.items, 23);
        assert!(measured.decoded_bytes >= metrics_heap(&decoded));

        let bytes = logs().encode_to_vec();
        let decoded = ExportLogsServiceRequest::decode(&bytes[..]).expect("valid");
        let measured = measure_prost(&bytes, Schema::ExportLogs, Limits::default()).unwrap();
        assert_eq!(measured.items, 30);
        assert!(measured.decoded_bytes >= logs_heap(&decoded));
    }

    #[test]
    fn a_bomb_of_empty_items_is_refused_at_the_item_limit() {
        let n = test_support::protobuf_items(BOMB_BYTES);
        let bytes = test_support::protobuf(Schema::ExportTraces, n);
        assert_eq!(
            measure_views(&bytes, Limits::default()),
            Err(items_over(100_000, "spans"))
        );
        assert_eq!(
            measure_prost(&bytes, Schema::ExportTraces, Limits::default()),
            Err(items_over(100_000, "spans"))
        );
        for (request, items) in [
            (Schema::ExportMetrics, "metric data points"),
            (Schema::ExportLogs, "log records"),
        ] {
            let bytes = test_support::protobuf(request, n);
            assert_eq!(
                measure_prost(&bytes, request, Limits::default()),
                Err(items_over(100_000, items))
            );
        }
        // At the limit is within it.
        let bytes = test_support::protobuf(Schema::ExportTraces, 100_000);
        assert_eq!(
            measure_views(&bytes, Limits::default()).unwrap().items,
            100_000
        );
    }

    #[test]
    fn empty_containers_are_refused_at_the_memory_limit() {
        // No item at all: ten million empty resources.
        let bytes = [0x0a, 0x00].repeat(test_support::protobuf_items(BOMB_BYTES));
        assert!(matches!(
            measure_views(&bytes, Limits::default()),
            Err(OverLimit::TooLarge { limit, wire_bytes, .. })
                if limit == 64 << 20 && wire_bytes == bytes.len()
        ));
        for request in [
            Schema::ExportTraces,
            Schema::ExportMetrics,
            Schema::ExportLogs,
        ] {
            assert!(matches!(
                measure_prost(&bytes, request, Limits::default()),
                Err(OverLimit::TooLarge { .. })
            ));
        }
        // Empty attributes in one span: no item, a `KeyValue` each for prost.
        let span = [0x4a, 0x00].repeat(1 << 20);
        let scope = [&[0x12][..], &encode_len(&span)].concat();
        let resource = [&[0x12][..], &encode_len(&scope)].concat();
        let bytes = [&[0x0a][..], &encode_len(&resource)].concat();
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).expect("valid");
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 1);
        let tight = Limits {
            max_items: 10,
            max_decoded_bytes: traces_heap(&decoded) / 2,
        };
        assert!(matches!(
            measure_prost(&bytes, Schema::ExportTraces, tight),
            Err(OverLimit::TooLarge { .. })
        ));
    }

    /// A length prefix and the bytes.
    fn encode_len(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn packed_numbers_are_counted_as_decoded() {
        // Exponential histogram buckets: one byte per uint64 on the wire.
        let mut request = metrics();
        let Some(Data::ExponentialHistogram(histogram)) =
            &mut request.resource_metrics[0].scope_metrics[0].metrics[2].data
        else {
            panic!("the third metric is the exponential histogram");
        };
        histogram.data_points[0].positive = Some(Buckets {
            offset: 0,
            bucket_counts: vec![0; 1 << 20],
        });
        let bytes = request.encode_to_vec();
        let decoded = ExportMetricsServiceRequest::decode(&bytes[..]).expect("valid");
        let measured = measure_prost(&bytes, Schema::ExportMetrics, Limits::default()).unwrap();
        assert!(measured.decoded_bytes >= metrics_heap(&decoded));
        assert!(measured.decoded_bytes > 8 << 20, "{measured:?}");
    }

    #[test]
    fn malformed_framing_is_left_to_the_decoder() {
        for garbage in [
            &[0x0a, 0xff, 0xff][..],
            &[0x0b][..],
            &[0x00][..],
            &[0x0f][..],
        ] {
            assert!(measure_views(garbage, Limits::default()).is_ok());
            assert!(measure_prost(garbage, Schema::ExportMetrics, Limits::default()).is_ok());
        }
        // A malformed submessage is skipped, and what follows it counted.
        let mut bytes = vec![0x0a, 0x03, 0x12, 0x01, 0xff];
        bytes.extend(test_support::protobuf(Schema::ExportLogs, 3));
        let measured = measure_prost(&bytes, Schema::ExportLogs, Limits::default()).unwrap();
        assert_eq!(measured.items, 3);
    }

    #[test]
    fn unknown_groups_are_skipped_as_prost_does() {
        // Field 9, a group holding a varint, then three log records.
        let mut bytes = vec![0x4b, 0x08, 0x01, 0x4c];
        bytes.extend(test_support::protobuf(Schema::ExportLogs, 3));
        let decoded = ExportLogsServiceRequest::decode(&bytes[..]).expect("prost skips the group");
        assert_eq!(decoded.resource_logs[0].scope_logs[0].log_records.len(), 3);
        let measured = measure_prost(&bytes, Schema::ExportLogs, Limits::default()).unwrap();
        assert_eq!(measured.items, 3);
    }

    proptest! {
        /// On arbitrary bytes the walks never panic, and whatever prost
        /// decodes from them, the estimate covers.
        #[test]
        fn estimates_never_panic_and_cover_prost(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = measure_views(&bytes, Limits::default());
            let measured = measure_prost(&bytes, Schema::ExportTraces, Limits::default());
            if let Ok(decoded) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
                prop_assert!(measured.unwrap().decoded_bytes >= traces_heap(&decoded));
            }
            let measured = measure_prost(&bytes, Schema::ExportMetrics, Limits::default());
            if let Ok(decoded) = ExportMetricsServiceRequest::decode(bytes.as_slice()) {
                prop_assert!(measured.unwrap().decoded_bytes >= metrics_heap(&decoded));
            }
            let measured = measure_prost(&bytes, Schema::ExportLogs, Limits::default());
            if let Ok(decoded) = ExportLogsServiceRequest::decode(bytes.as_slice()) {
                prop_assert!(measured.unwrap().decoded_bytes >= logs_heap(&decoded));
            }
        }

        /// One byte of a valid request changed: whatever prost or the
        /// zero-copy reader still decode, the estimate covers.
        #[test]
        fn estimates_cover_mutated_requests(position in 0usize..4000, byte in any::<u8>()) {
            let mut bytes = metrics().encode_to_vec();
            let at = position % bytes.len();
            bytes[at] = byte;
            let measured = measure_prost(&bytes, Schema::ExportMetrics, Limits::default());
            if let Ok(decoded) = ExportMetricsServiceRequest::decode(bytes.as_slice()) {
                prop_assert!(measured.unwrap().decoded_bytes >= metrics_heap(&decoded));
            }
            let mut bytes = traces().encode_to_vec();
            let at = position % bytes.len();
            bytes[at] = byte;
            let measured = measure_views(&bytes, Limits::default());
            if let Ok(batch) = TraceBatch::read_with(&bytes, &ExtraKeys::new(&["*.tenant"])) {
                prop_assert!(measured.unwrap().decoded_bytes >= batch_heap(&batch));
            }
        }
    }
}
