//! Tests of the batching rules and of the merged body.

use super::*;
use crate::forward::config::MAX_BATCH_BYTES;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn traces(service: &str, ids: std::ops::Range<u64>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans: ids
                    .map(|id| Span {
                        trace_id: [id.to_be_bytes(), id.to_be_bytes()].concat(),
                        span_id: id.to_be_bytes().to_vec(),
                        name: format!("op-{id}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn item(items: u64, bytes: usize, format: BodyFormat) -> Item {
    Item {
        signal: Signal::Traces,
        format,
        body: Bytes::from(vec![0; bytes]),
        items,
        queued: tokio::time::Instant::now(),
        segment: None,
    }
}

fn limits(min_items: u64, max_items: u64, max_bytes: u64) -> Limits {
    Limits {
        flush_timeout: Duration::from_millis(200),
        min_items,
        min_bytes: u64::MAX,
        max_items,
        max_bytes,
    }
}

/// Items per batch taken from `waiting` until it is empty.
fn batches(waiting: &mut VecDeque<Item>, limits: &Limits) -> Vec<Vec<u64>> {
    std::iter::from_fn(|| take(waiting, limits))
        .map(|batch| batch.requests.iter().map(|request| request.items).collect())
        .collect()
}

#[test]
fn merged_protobuf_decodes_as_the_concatenation_of_the_requests() {
    let requests = [
        traces("a", 0..3),
        traces("b", 3..4),
        ExportTraceServiceRequest::default(),
        traces("c", 4..10),
    ];
    let bodies: Vec<Bytes> = requests
        .iter()
        .map(|request| Bytes::from(request.encode_to_vec()))
        .collect();
    let merged = ExportTraceServiceRequest::decode(merge(&bodies)).unwrap();
    let expected: Vec<ResourceSpans> = requests
        .iter()
        .flat_map(|request| request.resource_spans.clone())
        .collect();
    assert_eq!(merged.resource_spans, expected);
    assert_eq!(merged.resource_spans.len(), 3);

    // Metrics and logs: the same field number, the same rule.
    let points = |name: &str, n: usize| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(name),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: (0..n)
                            .map(|value| NumberDataPoint {
                                value: Some(number_data_point::Value::AsInt(value as i64)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (first, second) = (points("x", 2), points("y", 5));
    let merged = ExportMetricsServiceRequest::decode(merge(&[
        first.encode_to_vec().into(),
        second.encode_to_vec().into(),
    ]))
    .unwrap();
    assert_eq!(
        merged.resource_metrics,
        [first.resource_metrics, second.resource_metrics].concat()
    );
    let records = |name: &str| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(name),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_number: 17,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (first, second) = (records("p"), records("q"));
    let merged = ExportLogsServiceRequest::decode(merge(&[
        first.encode_to_vec().into(),
        second.encode_to_vec().into(),
    ]))
    .unwrap();
    assert_eq!(
        merged.resource_logs,
        [first.resource_logs, second.resource_logs].concat()
    );
}

#[test]
fn one_body_is_not_copied() {
    let body = Bytes::from(vec![1, 2, 3]);
    assert_eq!(merge(std::slice::from_ref(&body)).as_ptr(), body.as_ptr());
    assert!(merge(&[]).is_empty());
}

#[test]
fn batches_stop_at_the_minimum_and_never_pass_the_maximum() {
    // min 10 items: 4 + 4 + 4 reaches it; the rest make the next batch.
    let mut waiting: VecDeque<_> = (0..5).map(|_| item(4, 10, BodyFormat::Protobuf)).collect();
    assert_eq!(
        batches(&mut waiting, &limits(10, u64::MAX, u64::MAX)),
        [vec![4, 4, 4], vec![4, 4]]
    );
    // max 9 items: 4 + 4, never 12.
    let mut waiting: VecDeque<_> = (0..5).map(|_| item(4, 10, BodyFormat::Protobuf)).collect();
    assert_eq!(
        batches(&mut waiting, &limits(100, 9, u64::MAX)),
        [vec![4, 4], vec![4, 4], vec![4]]
    );
    // max 25 bytes: two bodies of 10, never three.
    let mut waiting: VecDeque<_> = (0..3).map(|_| item(1, 10, BodyFormat::Protobuf)).collect();
    let taken = take(&mut waiting, &limits(100, u64::MAX, 25)).unwrap();
    assert_eq!(
        (taken.requests.len(), taken.bytes(), taken.items()),
        (2, 20, 2)
    );
}

#[test]
fn a_request_over_the_maximum_is_sent_alone() {
    let mut waiting: VecDeque<_> = [
        item(1, 10, BodyFormat::Protobuf),
        item(50, 100, BodyFormat::Protobuf),
        item(1, 10, BodyFormat::Protobuf),
    ]
    .into();
    // max 20 items / 60 bytes: the big request can join nothing and
    // nothing can join it, but it is sent.
    assert_eq!(
        batches(&mut waiting, &limits(1000, 20, 60)),
        [vec![1], vec![50], vec![1]]
    );
}

#[test]
fn json_requests_go_alone_and_end_a_batch() {
    let mut waiting: VecDeque<_> = [
        item(1, 10, BodyFormat::Protobuf),
        item(2, 10, BodyFormat::Protobuf),
        item(3, 10, BodyFormat::Json),
        item(4, 10, BodyFormat::Json),
        item(5, 10, BodyFormat::Protobuf),
    ]
    .into();
    let limits = limits(1000, u64::MAX, u64::MAX);
    let formats: Vec<_> = std::iter::from_fn(|| take(&mut waiting, &limits))
        .map(|batch| (batch.format, batch.items()))
        .collect();
    assert_eq!(
        formats,
        [
            (BodyFormat::Protobuf, 3),
            (BodyFormat::Json, 3),
            (BodyFormat::Json, 4),
            (BodyFormat::Protobuf, 5)
        ]
    );
}

#[test]
fn without_batching_every_request_goes_alone() {
    let mut waiting: VecDeque<_> = (0..3).map(|_| item(1, 10, BodyFormat::Protobuf)).collect();
    assert!(Limits::NONE.reached(0, 0));
    assert_eq!(
        batches(&mut waiting, &Limits::NONE),
        [vec![1], vec![1], vec![1]]
    );
}

#[test]
fn limits_follow_the_config() {
    let defaults = Limits::new(Some(&BatchConfig::default()));
    assert_eq!(
        defaults,
        Limits {
            flush_timeout: Duration::from_millis(200),
            min_items: 8192,
            min_bytes: u64::MAX,
            max_items: u64::MAX,
            max_bytes: MAX_BATCH_BYTES,
        }
    );
    let bytes = Limits::new(Some(&BatchConfig {
        sizer: Sizer::Bytes,
        min_size: 1000,
        max_size: 16 << 20,
        ..BatchConfig::default()
    }));
    assert_eq!(
        (
            bytes.min_items,
            bytes.min_bytes,
            bytes.max_items,
            bytes.max_bytes
        ),
        (u64::MAX, 1000, u64::MAX, 16 << 20)
    );
    assert_eq!(Limits::new(None), Limits::NONE);
}
