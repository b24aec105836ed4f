//! The layout of the OTLP export requests as far as decoding allocates:
//! which fields hold submessages, strings and repeated numbers, under their
//! protobuf numbers and OTLP/JSON names, and how large each message is in
//! Rust. The walkers that estimate a request's decoded size before decoding
//! it (`wire::measure`, `json::measure`) follow it.
//!
//! Written from `opentelemetry-proto` 0.33's generated types. Scalars are
//! left out (they live inside their message), and so is anything no decoder
//! reads; a field missing here is skipped by the walkers and counted only
//! as wire bytes (for JSON, as its `serde_json::Value`). A new OTLP field
//! that holds a submessage or a string must be added here, or requests made
//! of it would be underestimated.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, summary_data_point::ValueAtQuantile, Exemplar,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, Link},
    ResourceSpans, ScopeSpans, Span, Status,
};

/// An OTLP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    ExportTraces,
    ExportMetrics,
    ExportLogs,
    Resource,
    Scope,
    EntityRef,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
    NumberDataPoint,
    HistogramDataPoint,
    ExponentialHistogramDataPoint,
    Buckets,
    SummaryDataPoint,
    ValueAtQuantile,
    Exemplar,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
}

/// What a field of a message holds, as far as decoding allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// A submessage held inside its parent (an optional field or a oneof
    /// member): it allocates only what it holds itself.
    Inline(Message),
    /// A repeated submessage: one more element of a `Vec` each time.
    Repeated(Message),
    /// A string or bytes field: a copy of its contents.
    Bytes,
    /// A repeated string: a `String` in a `Vec`, and a copy of its contents.
    RepeatedBytes,
    /// A repeated 8-byte number: fixed64 or double, or uint64 written as
    /// varints (`varint`), packed or one per field.
    RepeatedNumber { varint: bool },
    /// Anything else: a scalar inside its message, or a field no decoder
    /// reads.
    Other,
}

use Field::{Bytes, Inline, Repeated, RepeatedBytes, RepeatedNumber};

/// `(number, JSON name, field)` of the fields of one message that allocate.
type Table = &'static [(u64, &'static str, Field)];

const EXPORT_TRACES: Table = &[(1, "resourceSpans", Repeated(Message::ResourceSpans))];
const EXPORT_METRICS: Table = &[(1, "resourceMetrics", Repeated(Message::ResourceMetrics))];
const EXPORT_LOGS: Table = &[(1, "resourceLogs", Repeated(Message::ResourceLogs))];
const RESOURCE: Table = &[
    (1, "attributes", Repeated(Message::KeyValue)),
    (3, "entityRefs", Repeated(Message::EntityRef)),
];
const SCOPE: Table = &[
    (1, "name", Bytes),
    (2, "version", Bytes),
    (3, "attributes", Repeated(Message::KeyValue)),
];
const ENTITY_REF: Table = &[
    (1, "schemaUrl", Bytes),
    (2, "type", Bytes),
    (3, "idKeys", RepeatedBytes),
    (4, "descriptionKeys", RepeatedBytes),
];
const KEY_VALUE: Table = &[(1, "key", Bytes), (2, "value", Inline(Message::AnyValue))];
const ANY_VALUE: Table = &[
    (1, "stringValue", Bytes),
    (5, "arrayValue", Inline(Message::ArrayValue)),
    (6, "kvlistValue", Inline(Message::KeyValueList)),
    (7, "bytesValue", Bytes),
];
const ARRAY_VALUE: Table = &[(1, "values", Repeated(Message::AnyValue))];
const KEY_VALUE_LIST: Table = &[(1, "values", Repeated(Message::KeyValue))];
const RESOURCE_SPANS: Table = &[
    (1, "resource", Inline(Message::Resource)),
    (2, "scopeSpans", Repeated(Message::ScopeSpans)),
    (3, "schemaUrl", Bytes),
];
const SCOPE_SPANS: Table = &[
    (1, "scope", Inline(Message::Scope)),
    (2, "spans", Repeated(Message::Span)),
    (3, "schemaUrl", Bytes),
];
const SPAN: Table = &[
    (1, "traceId", Bytes),
    (2, "spanId", Bytes),
    (3, "traceState", Bytes),
    (4, "parentSpanId", Bytes),
    (5, "name", Bytes),
    (9, "attributes", Repeated(Message::KeyValue)),
    (11, "events", Repeated(Message::Event)),
    (13, "links", Repeated(Message::Link)),
    (15, "status", Inline(Message::Status)),
];
const EVENT: Table = &[
    (2, "name", Bytes),
    (3, "attributes", Repeated(Message::KeyValue)),
];
const LINK: Table = &[
    (1, "traceId", Bytes),
    (2, "spanId", Bytes),
    (3, "traceState", Bytes),
    (4, "attributes", Repeated(Message::KeyValue)),
];
const STATUS: Table = &[(2, "message", Bytes)];
const RESOURCE_METRICS: Table = &[
    (1, "resource", Inline(Message::Resource)),
    (2, "scopeMetrics", Repeated(Message::ScopeMetrics)),
    (3, "schemaUrl", Bytes),
];
const SCOPE_METRICS: Table = &[
    (1, "scope", Inline(Message::Scope)),
    (2, "metrics", Repeated(Message::Metric)),
    (3, "schemaUrl", Bytes),
];
const METRIC: Table = &[
    (1, "name", Bytes),
    (2, "description", Bytes),
    (3, "unit", Bytes),
    (5, "gauge", Inline(Message::Gauge)),
    (7, "sum", Inline(Message::Sum)),
    (9, "histogram", Inline(Message::Histogram)),
    (
        10,
        "exponentialHistogram",
        Inline(Message::ExponentialHistogram),
    ),
    (11, "summary", Inline(Message::Summary)),
    (12, "metadata", Repeated(Message::KeyValue)),
];
const GAUGE: Table = &[(1, "dataPoints", Repeated(Message::NumberDataPoint))];
const SUM: Table = GAUGE;
const HISTOGRAM: Table = &[(1, "dataPoints", Repeated(Message::HistogramDataPoint))];
const EXPONENTIAL_HISTOGRAM: Table = &[(
    1,
    "dataPoints",
    Repeated(Message::ExponentialHistogramDataPoint),
)];
const SUMMARY: Table = &[(1, "dataPoints", Repeated(Message::SummaryDataPoint))];
const NUMBER_DATA_POINT: Table = &[
    (5, "exemplars", Repeated(Message::Exemplar)),
    (7, "attributes", Repeated(Message::KeyValue)),
];
const HISTOGRAM_DATA_POINT: Table = &[
    (6, "bucketCounts", RepeatedNumber { varint: false }),
    (7, "explicitBounds", RepeatedNumber { varint: false }),
    (8, "exemplars", Repeated(Message::Exemplar)),
    (9, "attributes", Repeated(Message::KeyValue)),
];
const EXPONENTIAL_HISTOGRAM_DATA_POINT: Table = &[
    (1, "attributes", Repeated(Message::KeyValue)),
    (8, "positive", Inline(Message::Buckets)),
    (9, "negative", Inline(Message::Buckets)),
    (11, "exemplars", Repeated(Message::Exemplar)),
];
const BUCKETS: Table = &[(2, "bucketCounts", RepeatedNumber { varint: true })];
const SUMMARY_DATA_POINT: Table = &[
    (6, "quantileValues", Repeated(Message::ValueAtQuantile)),
    (7, "attributes", Repeated(Message::KeyValue)),
];
const EXEMPLAR: Table = &[
    (4, "spanId", Bytes),
    (5, "traceId", Bytes),
    (7, "filteredAttributes", Repeated(Message::KeyValue)),
];
const RESOURCE_LOGS: Table = &[
    (1, "resource", Inline(Message::Resource)),
    (2, "scopeLogs", Repeated(Message::ScopeLogs)),
    (3, "schemaUrl", Bytes),
];
const SCOPE_LOGS: Table = &[
    (1, "scope", Inline(Message::Scope)),
    (2, "logRecords", Repeated(Message::LogRecord)),
    (3, "schemaUrl", Bytes),
];
const LOG_RECORD: Table = &[
    (3, "severityText", Bytes),
    (5, "body", Inline(Message::AnyValue)),
    (6, "attributes", Repeated(Message::KeyValue)),
    (9, "traceId", Bytes),
    (10, "spanId", Bytes),
    (12, "eventName", Bytes),
];

// === impl Message ===

impl Message {
    fn table(self) -> Table {
        match self {
            Message::ExportTraces => EXPORT_TRACES,
            Message::ExportMetrics => EXPORT_METRICS,
            Message::ExportLogs => EXPORT_LOGS,
            Message::Resource => RESOURCE,
            Message::Scope => SCOPE,
            Message::EntityRef => ENTITY_REF,
            Message::KeyValue => KEY_VALUE,
            Message::AnyValue => ANY_VALUE,
            Message::ArrayValue => ARRAY_VALUE,
            Message::KeyValueList => KEY_VALUE_LIST,
            Message::ResourceSpans => RESOURCE_SPANS,
            Message::ScopeSpans => SCOPE_SPANS,
            Message::Span => SPAN,
            Message::Event => EVENT,
            Message::Link => LINK,
            Message::Status => STATUS,
            Message::ResourceMetrics => RESOURCE_METRICS,
            Message::ScopeMetrics => SCOPE_METRICS,
            Message::Metric => METRIC,
            Message::Gauge => GAUGE,
            Message::Sum => SUM,
            Message::Histogram => HISTOGRAM,
            Message::ExponentialHistogram => EXPONENTIAL_HISTOGRAM,
            Message::Summary => SUMMARY,
            Message::NumberDataPoint => NUMBER_DATA_POINT,
            Message::HistogramDataPoint => HISTOGRAM_DATA_POINT,
            Message::ExponentialHistogramDataPoint => EXPONENTIAL_HISTOGRAM_DATA_POINT,
            Message::Buckets => BUCKETS,
            Message::SummaryDataPoint => SUMMARY_DATA_POINT,
            Message::ValueAtQuantile => &[],
            Message::Exemplar => EXEMPLAR,
            Message::ResourceLogs => RESOURCE_LOGS,
            Message::ScopeLogs => SCOPE_LOGS,
            Message::LogRecord => LOG_RECORD,
        }
    }

    /// The field numbered `number` on the wire.
    pub(crate) fn field(self, number: u64) -> Field {
        self.table()
            .iter()
            .find(|(entry, _, _)| *entry == number)
            .map_or(Field::Other, |(_, _, field)| *field)
    }

    /// The member named `name` in OTLP/JSON (lowerCamelCase, the only form
    /// the decoder reads).
    pub(crate) fn member(self, name: &[u8]) -> Field {
        self.table()
            .iter()
            .find(|(_, entry, _)| entry.as_bytes() == name)
            .map_or(Field::Other, |(_, _, field)| *field)
    }

    /// Whether the JSON decoder buffers the member `name` before reading it.
    /// The serde derive of `opentelemetry-proto` reads a oneof through
    /// `#[serde(flatten)]`, and serde copies every member of such a message
    /// that is not one of its plain fields (the oneof's members, unknown
    /// members) into a buffer first; a value inside `n` such messages is
    /// copied `n` times.
    pub(crate) fn buffers(self, name: &[u8]) -> bool {
        let plain: &[&str] = match self {
            Message::AnyValue => &[],
            Message::Metric => &["name", "description", "unit", "metadata"],
            Message::NumberDataPoint => &[
                "attributes",
                "startTimeUnixNano",
                "timeUnixNano",
                "exemplars",
                "flags",
            ],
            Message::Exemplar => &["filteredAttributes", "timeUnixNano", "spanId", "traceId"],
            _ => return false,
        };
        !plain.iter().any(|field| field.as_bytes() == name)
    }

    /// The size of the message's Rust (prost) type.
    pub(crate) fn size(self) -> usize {
        match self {
            Message::ExportTraces => size_of::<ExportTraceServiceRequest>(),
            Message::ExportMetrics => size_of::<ExportMetricsServiceRequest>(),
            Message::ExportLogs => size_of::<ExportLogsServiceRequest>(),
            Message::Resource => size_of::<Resource>(),
            Message::Scope => size_of::<InstrumentationScope>(),
            Message::EntityRef => size_of::<EntityRef>(),
            Message::KeyValue => size_of::<KeyValue>(),
            Message::AnyValue => size_of::<AnyValue>(),
            Message::ArrayValue => size_of::<ArrayValue>(),
            Message::KeyValueList => size_of::<KeyValueList>(),
            Message::ResourceSpans => size_of::<ResourceSpans>(),
            Message::ScopeSpans => size_of::<ScopeSpans>(),
            Message::Span => size_of::<Span>(),
            Message::Event => size_of::<Event>(),
            Message::Link => size_of::<Link>(),
            Message::Status => size_of::<Status>(),
            Message::ResourceMetrics => size_of::<ResourceMetrics>(),
            Message::ScopeMetrics => size_of::<ScopeMetrics>(),
            Message::Metric => size_of::<Metric>(),
            Message::Gauge => size_of::<Gauge>(),
            Message::Sum => size_of::<Sum>(),
            Message::Histogram => size_of::<Histogram>(),
            Message::ExponentialHistogram => size_of::<ExponentialHistogram>(),
            Message::Summary => size_of::<Summary>(),
            Message::NumberDataPoint => size_of::<NumberDataPoint>(),
            Message::HistogramDataPoint => size_of::<HistogramDataPoint>(),
            Message::ExponentialHistogramDataPoint => size_of::<ExponentialHistogramDataPoint>(),
            Message::Buckets => size_of::<Buckets>(),
            Message::SummaryDataPoint => size_of::<SummaryDataPoint>(),
            Message::ValueAtQuantile => size_of::<ValueAtQuantile>(),
            Message::Exemplar => size_of::<Exemplar>(),
            Message::ResourceLogs => size_of::<ResourceLogs>(),
            Message::ScopeLogs => size_of::<ScopeLogs>(),
            Message::LogRecord => size_of::<LogRecord>(),
        }
    }

    /// Whether the message is one of the items [`super::Limits::max_items`]
    /// counts: a span, a metric data point or a log record.
    pub(crate) fn is_item(self) -> bool {
        matches!(
            self,
            Message::Span
                | Message::NumberDataPoint
                | Message::HistogramDataPoint
                | Message::ExponentialHistogramDataPoint
                | Message::SummaryDataPoint
                | Message::LogRecord
        )
    }

    /// What the items of an export request are called, for messages.
    pub(crate) fn items_name(self) -> &'static str {
        match self {
            Message::ExportMetrics => "metric data points",
            Message::ExportLogs => "log records",
            _ => "spans",
        }
    }
}
