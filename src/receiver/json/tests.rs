use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::receiver::decode::span_view;

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

// === the scanning readers ===

pub(crate) mod scanning {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    };
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, ArrayValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::{attribute, request};
    use crate::model::{ExtraKeys, ValueRef};
    use crate::receiver::decode::{decode_json_any, JsonRequest};
    use crate::receiver::json::{read_logs, read_metrics, JsonTraces, ScannedTraces};

    /// The general decoder's metrics, without what the scanning reader
    /// skips (scopes, schema URLs, dropped counts, exemplars, metadata).
    pub(crate) fn general_metrics(line: &str) -> ExportMetricsServiceRequest {
        let Ok(JsonRequest::Metrics(mut request)) = decode_json_any(line.as_bytes()) else {
            panic!("the general decoder reads {line}");
        };
        for resource in &mut request.resource_metrics {
            resource.schema_url.clear();
            if let Some(resource) = &mut resource.resource {
                resource.dropped_attributes_count = 0;
                resource.entity_refs.clear();
            }
            for scope in &mut resource.scope_metrics {
                scope.scope = None;
                scope.schema_url.clear();
                for metric in &mut scope.metrics {
                    metric.metadata.clear();
                    match &mut metric.data {
                        Some(Data::Gauge(gauge)) => gauge
                            .data_points
                            .iter_mut()
                            .for_each(|p| p.exemplars.clear()),
                        Some(Data::Sum(sum)) => {
                            sum.data_points.iter_mut().for_each(|p| p.exemplars.clear())
                        }
                        Some(Data::Histogram(histogram)) => histogram
                            .data_points
                            .iter_mut()
                            .for_each(|p| p.exemplars.clear()),
                        Some(Data::ExponentialHistogram(histogram)) => histogram
                            .data_points
                            .iter_mut()
                            .for_each(|p| p.exemplars.clear()),
                        Some(Data::Summary(_)) | None => {}
                    }
                }
            }
        }
        request
    }

    /// The general decoder's logs, without what the scanning reader skips.
    pub(crate) fn general_logs(line: &str) -> ExportLogsServiceRequest {
        let Ok(JsonRequest::Logs(mut request)) = decode_json_any(line.as_bytes()) else {
            panic!("the general decoder reads {line}");
        };
        for resource in &mut request.resource_logs {
            resource.schema_url.clear();
            if let Some(resource) = &mut resource.resource {
                resource.dropped_attributes_count = 0;
                resource.entity_refs.clear();
            }
            for scope in &mut resource.scope_logs {
                scope.scope = None;
                scope.schema_url.clear();
                for record in &mut scope.log_records {
                    record.dropped_attributes_count = 0;
                    record.flags = 0;
                    record.trace_id.clear();
                    record.span_id.clear();
                    record.event_name.clear();
                }
            }
        }
        request
    }

    fn number(time: u64, value: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: vec![attribute("pool", Value::StringValue("main".into()))],
            start_time_unix_nano: 1,
            time_unix_nano: time,
            value: Some(value),
            ..Default::default()
        }
    }

    pub(crate) fn metrics_request() -> ExportMetricsServiceRequest {
        let metric = |name: &str, data: Data| Metric {
            name: name.into(),
            description: "what it is".into(),
            unit: "s".into(),
            data: Some(data),
            ..Default::default()
        };
        let complex = vec![
            attribute(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::IntValue(-3)),
                    }],
                }),
            ),
            attribute(
                "map",
                Value::KvlistValue(KeyValueList {
                    values: vec![attribute("on", Value::BoolValue(true))],
                }),
            ),
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", Value::StringValue("db".into()))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "gauge",
                            Data::Gauge(Gauge {
                                data_points: vec![
                                    number(5, number_data_point::Value::AsInt(-7)),
                                    number(6, number_data_point::Value::AsDouble(0.019511)),
                                ],
                            }),
                        ),
                        metric(
                            "total",
                            Data::Sum(Sum {
                                data_points: vec![number(7, number_data_point::Value::AsInt(9))],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            }),
                        ),
                        metric(
                            "latency",
                            Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes: complex,
                                    time_unix_nano: 8,
                                    count: 6,
                                    sum: Some(1.25),
                                    bucket_counts: vec![1, 2, 3],
                                    explicit_bounds: vec![0.1, 0.5],
                                    min: Some(0.01),
                                    max: Some(0.9),
                                    flags: 0,
                                    ..Default::default()
                                }],
                                aggregation_temporality: 1,
                            }),
                        ),
                        metric(
                            "exponential",
                            Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    time_unix_nano: 9,
                                    count: 4,
                                    sum: Some(3.5),
                                    scale: -2,
                                    zero_count: 1,
                                    positive: Some(Buckets {
                                        offset: -1,
                                        bucket_counts: vec![1, 1],
                                    }),
                                    negative: Some(Buckets {
                                        offset: 2,
                                        bucket_counts: vec![1],
                                    }),
                                    zero_threshold: 0.001,
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            }),
                        ),
                        metric(
                            "summary",
                            Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    time_unix_nano: 10,
                                    count: 3,
                                    sum: 4.5,
                                    quantile_values: vec![ValueAtQuantile {
                                        quantile: 0.99,
                                        value: 2.0,
                                    }],
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

    pub(crate) fn logs_request() -> ExportLogsServiceRequest {
        let body = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![
                    attribute("reason", Value::StringValue("BackOff".into())),
                    attribute("kind", Value::StringValue("Event".into())),
                ],
            })),
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        attribute("service.name", Value::StringValue("k8s".into())),
                        attribute("host.name", Value::StringValue("node-1".into())),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord {
                            time_unix_nano: 11,
                            observed_time_unix_nano: 12,
                            severity_number: 17,
                            severity_text: "ERROR".into(),
                            body: Some(AnyValue {
                                value: Some(Value::StringValue("boom".into())),
                            }),
                            ..Default::default()
                        },
                        LogRecord {
                            observed_time_unix_nano: 13,
                            attributes: vec![
                                attribute("http.route", Value::StringValue("/x".into())),
                                attribute("event.domain", Value::StringValue("k8s".into())),
                            ],
                            body: Some(body),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// `request` with only the attributes log recording reads, as the
    /// scanning log reader keeps them.
    pub(crate) fn as_log_recording_reads(
        mut request: ExportLogsServiceRequest,
    ) -> ExportLogsServiceRequest {
        use crate::model::log_attribute_read;
        for resource_logs in &mut request.resource_logs {
            if let Some(resource) = &mut resource_logs.resource {
                resource.attributes.retain(|kv| log_attribute_read(&kv.key));
            }
            for scope in &mut resource_logs.scope_logs {
                for record in &mut scope.log_records {
                    record.attributes.retain(|kv| log_attribute_read(&kv.key));
                }
            }
        }
        request
    }

    #[test]
    fn metrics_and_logs_read_what_the_general_decoder_reads() {
        let line = serde_json::to_string(&metrics_request()).expect("serializes");
        assert_eq!(read_metrics(&line), Some(general_metrics(&line)));
        assert_eq!(read_metrics(&line), Some(metrics_request()));
        let line = serde_json::to_string(&logs_request()).expect("serializes");
        assert_eq!(
            read_logs(&line),
            Some(as_log_recording_reads(general_logs(&line)))
        );
        assert_eq!(
            read_logs(&line),
            Some(as_log_recording_reads(logs_request()))
        );
        // Attributes log recording does not read are not kept, whichever
        // comes first in them, key or value.
        let request = read_logs(&line).expect("scans");
        let resource = request.resource_logs[0]
            .resource
            .as_ref()
            .expect("resource");
        assert_eq!(resource.attributes.len(), 1);
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records[1].attributes.len(), 1);
        let value_first = r#"{"resourceLogs":[{"resource":{"attributes":[
            {"value":{"stringValue":"a"},"key":"host.name"},
            {"value":{"stringValue":"cart"},"key":"service.name"}]},
            "scopeLogs":[{"logRecords":[{"timeUnixNano":"5"}]}]}]}"#;
        let request = read_logs(value_first).expect("scans");
        let resource = request.resource_logs[0]
            .resource
            .as_ref()
            .expect("resource");
        assert_eq!(resource.attributes.len(), 1);
        assert_eq!(resource.attributes[0].key, "service.name");
    }

    #[test]
    fn scanned_traces_read_what_the_serde_reader_reads() {
        let line = serde_json::to_string(&request()).expect("serializes");
        let keys = ExtraKeys::new(&["app.tenant"]);
        let scanned = ScannedTraces::read(&line, &keys).expect("scans");
        let slow = JsonTraces::read(line.as_bytes()).expect("serde reads");
        assert_eq!(scanned.batch(), slow.batch_with(&keys));
        assert_eq!(scanned.len(), 2);
    }

    #[test]
    fn every_otlp_json_form_is_accepted() {
        // Upper-case hex, enum names and numbers as strings, int64 as
        // numbers, null members, unknown members, a value before its key,
        // an event name after its attributes, members in any order.
        let line = r#"{"unknown":[{"x":null}],"resourceSpans":[{"scopeSpans":[{"spans":[{
            "attributes":[{"value":{"intValue":503},"key":"http.response.status_code"},
                          {"key":"http.route","value":{"stringValue":"/x"}}],
            "events":[{"attributes":[{"key":"feature_flag.key","value":{"stringValue":"f"}},
                                     {"key":"feature_flag.variant","value":{"stringValue":"on"}}],
                       "name":"feature_flag.evaluation"}],
            "traceId":"0102030405060708090A0B0C0D0E0F10","spanId":"AABBCCDDEEFF0011",
            "parentSpanId":null,"name":"GET /x","kind":"SPAN_KIND_SERVER",
            "startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000500000000",
            "status":{"code":"STATUS_CODE_ERROR","message":null},"links":[]}]}],
            "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]}}]}"#;
        let traces = ScannedTraces::read(line, &ExtraKeys::none()).expect("scans");
        let batch = traces.batch();
        let span = &batch.spans[0];
        assert_eq!(span.trace_id, &(1..=16).collect::<Vec<u8>>()[..]);
        assert_eq!(span.span_id, &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0x11]);
        assert!(span.parent_span_id.is_empty());
        assert_eq!((span.kind, span.status_code), (2, 2));
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            500_000_000
        );
        assert_eq!(span.attributes.http_status, Some(503));
        assert_eq!(span.attributes.http_route, Some("/x"));
        assert_eq!(span.attributes.feature_flag_key, Some("f"));
        assert_eq!(span.attributes.feature_flag_variant, Some("on"));
        assert_eq!(batch.resources[0].service_name, Some("a"));
        assert_eq!(batch.resources[0].spans, 0..1);

        let metrics = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m",
            "sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":true,
            "dataPoints":[{"timeUnixNano":"5","asDouble":"2.5","flags":"0"}]}},
            {"name":"h","histogram":{"aggregationTemporality":1,"dataPoints":[{"count":"2",
            "sum":"NaN","bucketCounts":["1",1],"explicitBounds":[0.5]}]}}]}]}]}"#;
        // Enum names are the protobuf JSON mapping's; the general decoder
        // takes numbers only (OTLP/JSON's rule), so it is compared on those.
        let numbered = metrics.replace(r#""AGGREGATION_TEMPORALITY_CUMULATIVE""#, "2");
        let request = read_metrics(metrics).expect("scans");
        assert_eq!(request, general_metrics(&numbered));
        let metric = &request.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Sum(sum)) = &metric[0].data else {
            panic!("a sum");
        };
        assert_eq!(sum.aggregation_temporality, 2);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(2.5))
        );
        let Some(Data::Histogram(histogram)) = &metric[1].data else {
            panic!("a histogram");
        };
        assert_eq!(histogram.data_points[0].sum, None, "NaN reads as absent");
        let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"severityNumber":"SEVERITY_NUMBER_WARN","timeUnixNano":7,"body":null}]}]}]}"#;
        let request = read_logs(logs).expect("scans");
        assert_eq!(
            request.resource_logs[0].scope_logs[0].log_records[0].severity_number,
            13
        );
    }

    /// The JSON twin of the protobuf reader's defect of the same name
    /// (docs/RELIABILITY.md, "Fuzzing"): "events" written before
    /// "attributes" lent the event's variant to the span's own flag.
    #[test]
    fn a_flag_event_before_the_flag_attribute_does_not_lend_its_variant() {
        let line = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "events":[{"name":"feature_flag.evaluation","attributes":[
                {"key":"feature_flag.key","value":{"stringValue":"f"}},
                {"key":"feature_flag.result.variant","value":{"stringValue":"on"}}]}],
            "attributes":[{"key":"feature_flag.key","value":{"stringValue":"g"}}]}]}]}]}"#;
        let keys = ExtraKeys::none();
        let scanned = ScannedTraces::read(line, &keys).expect("scans");
        let batch = scanned.batch();
        assert_eq!(batch.spans[0].attributes.feature_flag_key, Some("g"));
        assert_eq!(batch.spans[0].attributes.feature_flag_variant, None);
        let slow = JsonTraces::read(line.as_bytes()).expect("serde reads");
        assert_eq!(batch, slow.batch_with(&keys));
    }

    #[test]
    fn an_attribute_without_a_value_reads_as_in_protobuf() {
        // Found by the fuzzer: `"value"` misspelt, so the attribute has a
        // key and the empty value; the serde reader kept it as an extra
        // and the scanner dropped it.
        let keys = ExtraKeys::new(&["cloud.region", "app.tenant"]);
        let line = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[
            {"key":"cloud.region","vaLue":{"stringValue":"eu-west-1"}},
            {"key":"app.tenant","value":{"stringValue":"acme"}}]}]}]}]}"#;
        let scanned = ScannedTraces::read(line, &keys).expect("scans");
        let batch = scanned.batch();
        let slow = JsonTraces::read(line.as_bytes()).expect("serde reads");
        assert_eq!(batch, slow.batch_with(&keys));
        let values: Vec<ValueRef<'_>> = batch.extras.iter().map(|extra| extra.value).collect();
        assert_eq!(values, vec![ValueRef::Other, ValueRef::Str("acme")]);
    }

    #[test]
    fn what_the_scanners_cannot_read_is_left_to_the_slower_readers() {
        let keys = ExtraKeys::none();
        // An escape in a kept string: the serde reader unescapes it.
        let escaped = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"say \"hi\"",
            "traceId":"01020304050607080910111213141516","spanId":"0102030405060708"}]}]}]}"#;
        assert!(ScannedTraces::read(escaped, &keys).is_none());
        let slow = JsonTraces::read(escaped.as_bytes()).expect("serde reads");
        assert_eq!(slow.batch().spans[0].name, "say \"hi\"");
        // An escape in a skipped string is fine.
        let skipped =
            r#"{"resourceSpans":[{"scopeSpans":[{"scope":{"name":"a\nb"},"spans":[]}]}]}"#;
        assert!(ScannedTraces::read(skipped, &keys).is_some());
        for bad in [
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
            r#"{"resourceSpans":[],}"#,
            r#"{"resourceSpans":[]} x"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":1.5}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SERVER"}]}]}]}"#,
            r#"{"resourceMetrics":[]}"#,
        ] {
            assert!(ScannedTraces::read(bad, &keys).is_none(), "{bad}");
        }
        for bad in [
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[{"asInt":"x"}]}}]}]}]}"#,
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{},"sum":{}}]}]}]}"#,
            r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"k","value":{"bytesValue":"AA=="}}]}}]}"#,
            r#"{"resourceLogs":[]}"#,
        ] {
            assert!(read_metrics(bad).is_none(), "{bad}");
        }
        assert!(read_logs(
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-1}]}]}]}"#
        )
        .is_none());
        assert!(read_logs(r#"{"resourceMetrics":[]}"#).is_none());
        // An attribute written with a second key: the general readers
        // decide which one counts, for every signal.
        let twice = r#"{"key":"http.route","value":{"stringValue":"/a"},"key":"x"}"#;
        let spans = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{twice}]}}]}}]}}]}}"#
        );
        assert!(ScannedTraces::read(&spans, &keys).is_none());
        let metrics =
            format!(r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{twice}]}}}}]}}"#);
        assert!(read_metrics(&metrics).is_none());
        let logs = format!(r#"{{"resourceLogs":[{{"resource":{{"attributes":[{twice}]}}}}]}}"#);
        assert!(read_logs(&logs).is_none());
        // A value of a key nobody reads is still checked.
        let value = ScannedTraces::read(
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"x","value":{"intValue":"1"}}]}}]}"#,
            &keys,
        )
        .expect("scans");
        assert!(value.is_empty());
        assert_eq!(
            ScannedTraces::read(
                r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"app.tenant","value":{"boolValue":true}}]}]}]}]}"#,
                &ExtraKeys::new(&["app.tenant"]),
            )
            .expect("scans")
            .batch()
            .extras[0]
            .value,
            ValueRef::Bool(true)
        );
    }
}

// === measure: the limits, checked before decoding ===

mod measure {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    };
    use proptest::prelude::*;
    use serde_json::Value as Json;

    use super::*;
    use crate::receiver::decode::schema::Message as Schema;
    use crate::receiver::decode::test_support::{
        self, logs_heap, metrics_heap, traces_heap, BOMB_BYTES,
    };
    use crate::receiver::decode::{decode_json, Limits, OverLimit};
    use crate::receiver::json::measure;

    fn items_over(limit: usize, items: &'static str) -> OverLimit {
        OverLimit::TooManyItems { items, limit }
    }

    /// At least what a `serde_json::Value` holds: its vectors, strings and
    /// object entries (the B-tree nodes around them cannot be seen).
    fn json_heap(value: &Json) -> usize {
        match value {
            Json::String(text) => text.capacity(),
            Json::Array(items) => {
                items.capacity() * 32 + items.iter().map(json_heap).sum::<usize>()
            }
            Json::Object(members) => members
                .iter()
                .map(|(key, member)| key.capacity() + 56 + json_heap(member))
                .sum(),
            _ => 0,
        }
    }

    #[test]
    fn estimates_cover_the_value_tree_and_the_request() {
        let json = serde_json::to_string(&request()).expect("serializes");
        let measured = measure(json.as_bytes(), Schema::ExportTraces, Limits::default()).unwrap();
        assert_eq!(measured.items, 2);
        let decoded: ExportTraceServiceRequest = decode_json(json.as_bytes()).unwrap();
        let tree: Json = serde_json::from_str(&json).unwrap();
        assert!(measured.decoded_bytes >= json_heap(&tree) + traces_heap(&decoded));

        let json = serde_json::to_string(&scanning::metrics_request()).unwrap();
        let measured = measure(json.as_bytes(), Schema::ExportMetrics, Limits::default()).unwrap();
        let decoded: ExportMetricsServiceRequest = decode_json(json.as_bytes()).unwrap();
        let tree: Json = serde_json::from_str(&json).unwrap();
        assert!(measured.decoded_bytes >= json_heap(&tree) + metrics_heap(&decoded));

        let json = serde_json::to_string(&scanning::logs_request()).unwrap();
        let measured = measure(json.as_bytes(), Schema::ExportLogs, Limits::default()).unwrap();
        let decoded: ExportLogsServiceRequest = decode_json(json.as_bytes()).unwrap();
        let tree: Json = serde_json::from_str(&json).unwrap();
        assert!(measured.decoded_bytes >= json_heap(&tree) + logs_heap(&decoded));
    }

    #[test]
    fn a_bomb_of_empty_items_is_refused_at_the_item_limit() {
        let n = test_support::json_items(BOMB_BYTES);
        for (request, items) in [
            (Schema::ExportTraces, "spans"),
            (Schema::ExportMetrics, "metric data points"),
            (Schema::ExportLogs, "log records"),
        ] {
            let body = test_support::json(request, n);
            assert_eq!(
                measure(body.as_bytes(), request, Limits::default()),
                Err(items_over(100_000, items))
            );
        }
    }

    #[test]
    fn escaped_member_names_are_read_as_serde_json_reads_them() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"sp\u0061ns":[{},{},{}]}]}]}"#;
        let decoded: ExportTraceServiceRequest = decode_json(body.as_bytes()).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 3);
        let limits = Limits {
            max_items: 2,
            ..Limits::default()
        };
        assert_eq!(
            measure(body.as_bytes(), Schema::ExportTraces, limits),
            Err(items_over(2, "spans"))
        );
    }

    #[test]
    fn members_no_field_reads_still_cost_their_value_tree() {
        let junk = vec!["{}"; 400_000].join(",");
        let body = format!(r#"{{"resourceSpans":[],"junk":[{junk}]}}"#);
        let limits = Limits {
            max_decoded_bytes: 8 << 20,
            ..Limits::default()
        };
        assert!(matches!(
            measure(body.as_bytes(), Schema::ExportTraces, limits),
            Err(OverLimit::TooLarge { format: "JSON", .. })
        ));
    }

    #[test]
    fn values_nested_in_flattened_oneofs_count_once_per_copy() {
        // The same hundred strings, in one attribute array or nested ten
        // arrays deep: serde buffers each level's contents again.
        let strings = vec![r#"{"stringValue":"x"}"#; 100].join(",");
        let mut nested = strings.clone();
        for _ in 0..10 {
            nested = format!(r#"{{"arrayValue":{{"values":[{nested}]}}}}"#);
        }
        let flat = format!(r#"{{"arrayValue":{{"values":[{strings}]}}}}"#);
        let body = |value: &str| {
            format!(
                r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"a","value":{value}}}]}}}}]}}"#
            )
        };
        let flat = measure(
            body(&flat).as_bytes(),
            Schema::ExportTraces,
            Limits::default(),
        );
        let nested = measure(
            body(&nested).as_bytes(),
            Schema::ExportTraces,
            Limits::default(),
        );
        assert!(
            nested.unwrap().decoded_bytes > flat.unwrap().decoded_bytes * 2,
            "deeper values are copied more often"
        );
    }

    #[test]
    fn malformed_or_too_deep_json_is_left_to_the_decoder() {
        for body in [&b""[..], b"{", b"[1,", b"{\"a\" 1}", b"\"open", b"nul"] {
            assert!(measure(body, Schema::ExportLogs, Limits::default()).is_ok());
        }
        // Nested far deeper than serde_json reads: no stack overflow.
        let deep = "[".repeat(200_000);
        assert!(measure(deep.as_bytes(), Schema::ExportLogs, Limits::default()).is_ok());
        assert!(decode_json::<ExportLogsServiceRequest>(deep.as_bytes()).is_err());
    }

    proptest! {
        /// On arbitrary text the walk never panics, and whatever the
        /// general decoder builds from it, the estimate covers.
        #[test]
        fn estimates_never_panic_and_cover_the_decoder(text in r#"[\[\]{}",:a-z0-9\\ ]{0,80}"#) {
            let measured = measure(text.as_bytes(), Schema::ExportLogs, Limits::default());
            if let Ok(decoded) = decode_json::<ExportLogsServiceRequest>(text.as_bytes()) {
                prop_assert!(measured.unwrap().decoded_bytes >= logs_heap(&decoded));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = measure(&bytes, Schema::ExportMetrics, Limits::default());
        }
    }
}
