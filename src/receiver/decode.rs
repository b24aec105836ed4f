//! The general OTLP/JSON decoder, shared by the HTTP receiver and replay,
//! and what every receiver's decoding is held to: the [`Limits`] a request
//! is measured against before it is decoded (`limits`, `schema`), the pool
//! decoding runs on (`pool`), and the steps both transports take for each
//! export request (`export`).
//!
//! OTLP/JSON goes through `serde_json::Value` first so that
//! [`normalize_json`] can smooth over what the `opentelemetry-proto` serde
//! derive refuses, and so that [`check_metric_data`] can report errors that
//! the derive swallows; see those functions for the details. The fast
//! scanning readers of `receiver::json` fall back to this decoder for
//! anything they do not recognise, so it is the one that explains precisely
//! what is wrong with a document.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value as AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{
    ExtraKeys, ExtraValue, ResourceAttributes, ResourceView, SpanAttributes, SpanView, TraceBatch,
    ValueRef, FLAG_EVENT, UNKNOWN_SERVICE,
};

mod export;
pub(crate) mod limits;
mod pool;
pub mod schema;
#[cfg(test)]
pub(crate) mod test_support;

pub use export::{export_json, export_protobuf, Export, Refused};
pub use limits::{Limits, Measured, OverLimit, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_ITEMS};
pub use pool::{DecodePool, Decoding, PoolError, Ticket};

/// An export request that can be decoded from OTLP/JSON.
pub trait JsonExport: Default + DeserializeOwned {
    /// Reports decoding errors that the serde derive hides; `json` is the
    /// normalized document the request was decoded from.
    fn check_json(&self, _json: &Value) -> Result<(), String> {
        Ok(())
    }
}

impl JsonExport for ExportTraceServiceRequest {}

impl JsonExport for ExportLogsServiceRequest {}

impl JsonExport for ExportMetricsServiceRequest {
    fn check_json(&self, json: &Value) -> Result<(), String> {
        check_metric_data(self, json)
    }
}

/// Decodes OTLP/JSON; the error is a message naming where decoding failed.
pub fn decode_json<R: JsonExport>(body: &[u8]) -> Result<R, String> {
    if body.is_empty() {
        return Ok(R::default());
    }
    let mut json: Value = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    normalize_json(&mut json);
    let request: R = serde_path_to_error::deserialize(&json).map_err(|error| error.to_string())?;
    request.check_json(&json)?;
    Ok(request)
}

/// One decoded OTLP/JSON export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonRequest {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

/// Decodes one OTLP/JSON export request, telling the signal by its top-level
/// key (`resourceSpans`, `resourceMetrics`, `resourceLogs`): the lines the
/// OTel Collector's file exporter writes. Used by `triage replay`.
pub fn decode_json_any(line: &[u8]) -> Result<JsonRequest, String> {
    let mut json: Value = serde_json::from_slice(line).map_err(|error| error.to_string())?;
    let key = json
        .as_object()
        .and_then(|object| {
            ["resourceSpans", "resourceMetrics", "resourceLogs"]
                .into_iter()
                .find(|key| object.contains_key(*key))
        })
        .ok_or_else(|| {
            "not an OTLP export request: no resourceSpans, resourceMetrics or resourceLogs"
                .to_string()
        })?;
    normalize_json(&mut json);
    fn typed<R: JsonExport>(json: &Value) -> Result<R, String> {
        let request: R =
            serde_path_to_error::deserialize(json).map_err(|error| error.to_string())?;
        request.check_json(json)?;
        Ok(request)
    }
    Ok(match key {
        "resourceSpans" => JsonRequest::Traces(typed(&json)?),
        "resourceMetrics" => JsonRequest::Metrics(typed(&json)?),
        _ => JsonRequest::Logs(typed(&json)?),
    })
}

/// OTLP fields of 32-bit integer types (enums included). The derive reads
/// them with plain `i32`/`u32`, which refuse the string form that the
/// protobuf JSON mapping allows for every integer.
const INT32_FIELDS: &[&str] = &[
    "aggregationTemporality",
    "code",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "flags",
    "keyStrindex",
    "kind",
    "offset",
    "scale",
    "severityNumber",
];

/// OTLP fields of double type that the derive reads with a plain `f64`, which
/// refuses the string forms ("1.5", "NaN", "Infinity", "-Infinity") that the
/// protobuf JSON mapping allows. (`quantile` and `value` of `ValueAtQuantile`
/// already accept them.)
const DOUBLE_FIELDS: &[&str] = &[
    "asDouble",
    "doubleValue",
    "max",
    "min",
    "sum",
    "zeroThreshold",
];

/// Rewrites an OTLP/JSON document into what the `opentelemetry-proto` serde
/// derive accepts. Found by testing the derive (see the `derive_*` tests):
///
/// - `null` members are removed: the protobuf JSON mapping reads `null` as the
///   default value, the derive refuses it for strings, ids and lists.
/// - 32-bit integers and enums written as decimal strings become numbers.
/// - Doubles written as decimal strings become numbers; non-finite ones
///   ("NaN", "Infinity", "-Infinity") cannot be held in a `Value` and are
///   removed, so they read as absent (a point without a value, an unknown
///   histogram sum). Dropping them beats refusing the whole request.
///
/// Everything else already works in the derive: hex ids in either case,
/// 64-bit integers as strings or numbers, unknown fields. Object keys are
/// always OTLP field names (attribute keys are values), so matching on key
/// names cannot touch user data.
pub(crate) fn normalize_json(json: &mut Value) {
    match json {
        Value::Object(members) => members.retain(|key, member| {
            if let Value::String(text) = member {
                if INT32_FIELDS.contains(&key.as_str()) {
                    if let Ok(number) = text.parse::<i64>() {
                        *member = number.into();
                    }
                } else if DOUBLE_FIELDS.contains(&key.as_str()) {
                    match text.parse::<f64>() {
                        Ok(number) if number.is_finite() => *member = number.into(),
                        Ok(_) => return false,
                        Err(_) => {}
                    }
                }
            }
            normalize_json(member);
            !member.is_null()
        }),
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

/// Data fields of `Metric`, the members of its `data` oneof.
const METRIC_DATA_FIELDS: &[&str] = &[
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "summary",
];

/// Reports metrics whose data failed to decode. The derive reads `Metric.data`
/// through `#[serde(flatten)]` on an `Option`, and serde turns any error
/// inside a flattened `Option` into `None`: a metric with one bad data point
/// would silently arrive without data and its points would be lost uncounted.
/// So a metric that decoded without data but has a data member in the JSON is
/// decoded again on its own to find the error. This costs nothing for
/// requests that decode well.
///
/// The same swallowing hides bad `asInt`/`asDouble` values inside a point; a
/// point without a value is left to the sink, which must already handle it
/// (protobuf can express it too).
fn check_metric_data(request: &ExportMetricsServiceRequest, json: &Value) -> Result<(), String> {
    fn error_of<T: DeserializeOwned>(data: &Value) -> Option<String> {
        serde_path_to_error::deserialize::<_, T>(data)
            .err()
            .map(|error| error.to_string())
    }
    for (i, resource) in request.resource_metrics.iter().enumerate() {
        for (j, scope) in resource.scope_metrics.iter().enumerate() {
            for (k, metric) in scope.metrics.iter().enumerate() {
                if metric.data.is_some() {
                    continue;
                }
                // Indexing a `&Value` never panics; a missing member is `Null`.
                let metric_json = &json["resourceMetrics"][i]["scopeMetrics"][j]["metrics"][k];
                for &field in METRIC_DATA_FIELDS {
                    let Some(data) = metric_json.get(field) else {
                        continue;
                    };
                    let error = match field {
                        "gauge" => error_of::<Gauge>(data),
                        "sum" => error_of::<Sum>(data),
                        "histogram" => error_of::<Histogram>(data),
                        "exponentialHistogram" => error_of::<ExponentialHistogram>(data),
                        _ => error_of::<Summary>(data),
                    };
                    let error = error.unwrap_or_else(|| "cannot be decoded".to_owned());
                    return Err(format!(
                        "resourceMetrics[{i}].scopeMetrics[{j}].metrics[{k}].{field}: {error}"
                    ));
                }
            }
        }
    }
    Ok(())
}

// === Views of decoded requests ===
//
// Prost-decoded requests (OTLP/JSON, and anything that is not a protobuf
// trace request) are turned into the same borrowed views the zero-copy
// readers produce, so recording has one input type.

pub fn string_value(attribute: &KeyValue) -> Option<&str> {
    match attribute.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(value) => Some(value),
        _ => None,
    }
}

/// `service.name` of a resource, `unknown_service` when missing or empty.
pub fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|attribute| attribute.key == "service.name")
        })
        .and_then(string_value)
        .filter(|name| !name.is_empty())
        .unwrap_or(UNKNOWN_SERVICE)
}

/// A prost attribute value as the borrowed form recording reads.
pub fn value_ref(attribute: &KeyValue) -> ValueRef<'_> {
    match attribute
        .value
        .as_ref()
        .and_then(|value| value.value.as_ref())
    {
        Some(AnyValue::StringValue(text)) => ValueRef::Str(text),
        Some(AnyValue::IntValue(number)) => ValueRef::Int(*number),
        Some(AnyValue::DoubleValue(number)) => ValueRef::Double(*number),
        Some(AnyValue::BoolValue(flag)) => ValueRef::Bool(*flag),
        _ => ValueRef::Other,
    }
}

/// The fields of a decoded (JSON) span that recording reads; protobuf
/// requests get the same view from `wire` without decoding into prost types.
pub fn span_view(span: &Span) -> SpanView<'_> {
    let mut attributes = SpanAttributes::default();
    for attribute in &span.attributes {
        attributes.note(attribute.key.as_bytes(), value_ref(attribute));
    }
    for event in span.events.iter().filter(|event| event.name == FLAG_EVENT) {
        let text = |key: &str| {
            event
                .attributes
                .iter()
                .find(|attribute| attribute.key == key)
                .and_then(string_value)
        };
        let variant = text("feature_flag.result.variant").or_else(|| text("feature_flag.variant"));
        attributes.note_flag_event(text("feature_flag.key"), variant);
    }
    SpanView {
        trace_id: &span.trace_id,
        span_id: &span.span_id,
        parent_span_id: &span.parent_span_id,
        name: &span.name,
        kind: span.kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        status_code: span.status.as_ref().map_or(0, |status| status.code),
        attributes,
    }
}

/// The resource attributes a decoded (JSON) resource carries, as the
/// zero-copy reader borrows them.
pub fn resource_attributes(resource: Option<&Resource>) -> ResourceAttributes<'_> {
    let mut attributes = ResourceAttributes::default();
    for attribute in resource.iter().flat_map(|resource| &resource.attributes) {
        if ResourceAttributes::reads(attribute.key.as_bytes()) {
            attributes.note(attribute.key.as_bytes(), value_ref(attribute));
        }
    }
    attributes
}

/// Collects the values of the `extra` keys on a decoded span (the
/// counterpart of what the zero-copy readers do), as span `index`.
pub fn span_extras<'a>(
    span: &'a Span,
    extra: &ExtraKeys,
    index: u32,
    extras: &mut Vec<ExtraValue<'a>>,
) {
    if extra.is_empty() {
        return;
    }
    for attribute in &span.attributes {
        let key = attribute.key.as_bytes();
        if SpanAttributes::reads(key) {
            continue;
        }
        if let Some(slot) = extra.slot(key) {
            extras.push(ExtraValue {
                span: index,
                slot,
                key,
                value: value_ref(attribute),
            });
        }
    }
}

/// A decoded request as the zero-copy readers would have read it (for the
/// span analysis on the JSON path).
pub fn decoded_batch<'a>(
    request: &'a ExportTraceServiceRequest,
    extra: &ExtraKeys,
) -> TraceBatch<'a> {
    let mut batch = TraceBatch::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let first = batch.spans.len();
        for span in resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| &scope.spans)
        {
            span_extras(span, extra, batch.spans.len() as u32, &mut batch.extras);
            batch.spans.push(span_view(span));
        }
        batch.resources.push(ResourceView {
            service_name: Some(service_name(resource)),
            attributes: resource_attributes(resource),
            spans: first..batch.spans.len(),
        });
    }
    batch
}
