//! For the receivers' tests: requests that decode into far more than their
//! size (issue #14), written byte by byte (building them as prost messages
//! would take the memory they are meant to exercise), and what a decoded
//! request holds on the heap, to check the decoding estimates against.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Exemplar, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::model::TraceBatch;
use crate::receiver::decode::schema::Message;
use crate::receiver::metric_batch::MetricBatch;

/// About the size of the OTLP/HTTP body of issue #14: 20 MiB.
pub(crate) const BOMB_BYTES: usize = 20 * 1024 * 1024;

fn varint(mut value: usize, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field.
fn field(number: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// `n` empty items of field `number`, each two bytes.
fn empty(number: u8, n: usize) -> Vec<u8> {
    [number << 3 | 2, 0].repeat(n)
}

/// A protobuf export request of `n` empty items (spans, gauge data points
/// or log records) in one resource and scope.
pub(crate) fn protobuf(request: Message, n: usize) -> Vec<u8> {
    let scope = match request {
        Message::ExportMetrics => {
            let gauge = field(5, &empty(1, n));
            field(2, &field(2, &gauge))
        }
        _ => field(2, &empty(2, n)),
    };
    field(1, &scope)
}

/// The OTLP/JSON form of [`protobuf`]: `{}` for each item.
pub(crate) fn json(request: Message, n: usize) -> String {
    let items = vec!["{}"; n].join(",");
    match request {
        Message::ExportMetrics => format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"gauge":{{"dataPoints":[{items}]}}}}]}}]}}]}}"#
        ),
        Message::ExportLogs => {
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{items}]}}]}}]}}"#)
        }
        _ => format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{items}]}}]}}]}}"#),
    }
}

/// How many empty items make a protobuf body of about `bytes`.
pub(crate) fn protobuf_items(bytes: usize) -> usize {
    bytes / 2 - 16
}

/// How many empty items make a JSON body of about `bytes`.
pub(crate) fn json_items(bytes: usize) -> usize {
    bytes / 3 - 64
}

// === What a decoded request holds ===
//
// The bytes its vectors (at their capacity) and strings own, without the
// allocator's rounding: what the estimates must not fall below.

fn list<T>(items: &Vec<T>, each: impl Fn(&T) -> usize) -> usize {
    items.capacity() * size_of::<T>() + items.iter().map(each).sum::<usize>()
}

fn any_value(value: &AnyValue) -> usize {
    match &value.value {
        Some(Value::StringValue(text)) => text.capacity(),
        Some(Value::BytesValue(bytes)) => bytes.capacity(),
        Some(Value::ArrayValue(array)) => list(&array.values, any_value),
        Some(Value::KvlistValue(pairs)) => list(&pairs.values, key_value),
        _ => 0,
    }
}

fn key_value(pair: &KeyValue) -> usize {
    pair.key.capacity() + pair.value.as_ref().map_or(0, any_value)
}

fn resource(resource: &Option<Resource>) -> usize {
    resource.as_ref().map_or(0, |resource| {
        list(&resource.attributes, key_value)
            + list(&resource.entity_refs, |entity| {
                entity.schema_url.capacity()
                    + entity.r#type.capacity()
                    + list(&entity.id_keys, String::capacity)
                    + list(&entity.description_keys, String::capacity)
            })
    })
}

fn scope(scope: &Option<InstrumentationScope>) -> usize {
    scope.as_ref().map_or(0, |scope| {
        scope.name.capacity() + scope.version.capacity() + list(&scope.attributes, key_value)
    })
}

fn span(span: &Span) -> usize {
    span.trace_id.capacity()
        + span.span_id.capacity()
        + span.trace_state.capacity()
        + span.parent_span_id.capacity()
        + span.name.capacity()
        + list(&span.attributes, key_value)
        + list(&span.events, |event| {
            event.name.capacity() + list(&event.attributes, key_value)
        })
        + list(&span.links, |link| {
            link.trace_id.capacity()
                + link.span_id.capacity()
                + link.trace_state.capacity()
                + list(&link.attributes, key_value)
        })
        + span
            .status
            .as_ref()
            .map_or(0, |status| status.message.capacity())
}

/// What a prost trace request holds.
pub(crate) fn traces_heap(request: &ExportTraceServiceRequest) -> usize {
    list(&request.resource_spans, |resource_spans| {
        resource(&resource_spans.resource)
            + resource_spans.schema_url.capacity()
            + list(&resource_spans.scope_spans, |scope_spans| {
                scope(&scope_spans.scope)
                    + scope_spans.schema_url.capacity()
                    + list(&scope_spans.spans, span)
            })
    })
}

fn exemplar(exemplar: &Exemplar) -> usize {
    exemplar.span_id.capacity()
        + exemplar.trace_id.capacity()
        + list(&exemplar.filtered_attributes, key_value)
}

fn metric(metric: &Metric) -> usize {
    let data = match &metric.data {
        Some(Data::Gauge(gauge)) => list(&gauge.data_points, |point| {
            list(&point.attributes, key_value) + list(&point.exemplars, exemplar)
        }),
        Some(Data::Sum(sum)) => list(&sum.data_points, |point| {
            list(&point.attributes, key_value) + list(&point.exemplars, exemplar)
        }),
        Some(Data::Histogram(histogram)) => list(&histogram.data_points, |point| {
            list(&point.attributes, key_value)
                + list(&point.exemplars, exemplar)
                + list(&point.bucket_counts, |_| 0)
                + list(&point.explicit_bounds, |_| 0)
        }),
        Some(Data::ExponentialHistogram(histogram)) => list(&histogram.data_points, |point| {
            let buckets = |buckets: &Option<_>| {
                buckets.as_ref().map_or(0, |buckets: &opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets| {
                    list(&buckets.bucket_counts, |_| 0)
                })
            };
            list(&point.attributes, key_value)
                + list(&point.exemplars, exemplar)
                + buckets(&point.positive)
                + buckets(&point.negative)
        }),
        Some(Data::Summary(summary)) => list(&summary.data_points, |point| {
            list(&point.attributes, key_value) + list(&point.quantile_values, |_| 0)
        }),
        None => 0,
    };
    metric.name.capacity()
        + metric.description.capacity()
        + metric.unit.capacity()
        + list(&metric.metadata, key_value)
        + data
}

/// What a prost metrics request holds.
pub(crate) fn metrics_heap(request: &ExportMetricsServiceRequest) -> usize {
    list(&request.resource_metrics, |resource_metrics| {
        resource(&resource_metrics.resource)
            + resource_metrics.schema_url.capacity()
            + list(&resource_metrics.scope_metrics, |scope_metrics| {
                scope(&scope_metrics.scope)
                    + scope_metrics.schema_url.capacity()
                    + list(&scope_metrics.metrics, metric)
            })
    })
}

/// What a prost logs request holds.
pub(crate) fn logs_heap(request: &ExportLogsServiceRequest) -> usize {
    list(&request.resource_logs, |resource_logs| {
        resource(&resource_logs.resource)
            + resource_logs.schema_url.capacity()
            + list(&resource_logs.scope_logs, |scope_logs| {
                scope(&scope_logs.scope)
                    + scope_logs.schema_url.capacity()
                    + list(&scope_logs.log_records, |record| {
                        record.severity_text.capacity()
                            + record.body.as_ref().map_or(0, any_value)
                            + list(&record.attributes, key_value)
                            + record.trace_id.capacity()
                            + record.span_id.capacity()
                            + record.event_name.capacity()
                    })
            })
    })
}

/// What the zero-copy reader's batch holds: its three vectors.
pub(crate) fn batch_heap(batch: &TraceBatch<'_>) -> usize {
    list(&batch.resources, |_| 0) + list(&batch.spans, |_| 0) + list(&batch.extras, |_| 0)
}

/// What the zero-copy metrics reader's batch holds: its eight vectors.
pub(crate) fn metric_batch_heap(batch: &MetricBatch<'_>) -> usize {
    list(&batch.resources, |_| 0)
        + list(&batch.resource_attributes, |_| 0)
        + list(&batch.metrics, |_| 0)
        + list(&batch.points, |_| 0)
        + list(&batch.attributes, |_| 0)
        + list(&batch.counts, |_| 0)
        + list(&batch.bounds, |_| 0)
        + list(&batch.exemplars, |_| 0)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use prost::Message as _;

    use super::*;
    use crate::receiver::decode::decode_json;

    #[test]
    fn bombs_are_the_requests_they_claim_to_be() {
        let traces =
            ExportTraceServiceRequest::decode(&protobuf(Message::ExportTraces, 300)[..]).unwrap();
        assert_eq!(traces.resource_spans[0].scope_spans[0].spans.len(), 300);
        let metrics =
            ExportMetricsServiceRequest::decode(&protobuf(Message::ExportMetrics, 300)[..])
                .unwrap();
        let metric = &metrics.resource_metrics[0].scope_metrics[0].metrics[0];
        assert!(matches!(&metric.data, Some(Data::Gauge(gauge)) if gauge.data_points.len() == 300));
        let logs =
            ExportLogsServiceRequest::decode(&protobuf(Message::ExportLogs, 300)[..]).unwrap();
        assert_eq!(logs.resource_logs[0].scope_logs[0].log_records.len(), 300);

        let traces: ExportTraceServiceRequest =
            decode_json(json(Message::ExportTraces, 3).as_bytes()).unwrap();
        assert_eq!(traces.resource_spans[0].scope_spans[0].spans.len(), 3);
        let metrics: ExportMetricsServiceRequest =
            decode_json(json(Message::ExportMetrics, 3).as_bytes()).unwrap();
        let metric = &metrics.resource_metrics[0].scope_metrics[0].metrics[0];
        assert!(matches!(&metric.data, Some(Data::Gauge(gauge)) if gauge.data_points.len() == 3));
        let logs: ExportLogsServiceRequest =
            decode_json(json(Message::ExportLogs, 3).as_bytes()).unwrap();
        assert_eq!(logs.resource_logs[0].scope_logs[0].log_records.len(), 3);

        let n = protobuf_items(BOMB_BYTES);
        let size = protobuf(Message::ExportTraces, n).len();
        assert!(size <= BOMB_BYTES && size > BOMB_BYTES - 64, "{size}");
        let size = protobuf(Message::ExportMetrics, n).len();
        assert!(size <= BOMB_BYTES, "{size}");
        let n = json_items(BOMB_BYTES);
        let size = json(Message::ExportTraces, n).len();
        assert!(size <= BOMB_BYTES && size > BOMB_BYTES - 200, "{size}");
        let size = json(Message::ExportMetrics, n).len();
        assert!(size <= BOMB_BYTES, "{size}");
    }
}
