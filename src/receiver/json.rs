//! A fast reader for OTLP/JSON trace requests, borrowing from the input.
//!
//! The general JSON path (`receiver::http::decode_json_any`) builds a
//! `serde_json::Value`, normalizes it and deserializes prost types: thorough,
//! and about a hundred times slower than the protobuf path. Replays of large
//! files need better, so trace lines are first read by this typed, borrowing
//! reader straight into the same [`SpanView`]s the protobuf path makes. It
//! follows the OTLP/JSON rules: hex ids in either case, 64-bit integers as
//! strings or numbers, enums as integers, unknown fields ignored, `null` as
//! absent. Anything it does not accept falls back to the general path, which
//! either reads it or explains the error precisely.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use crate::model::{
    is_flag_key, ExtraKeys, ExtraValue, ResourceAttributes, ResourceView, SpanAttributes, SpanView,
    TraceBatch, ValueRef, FLAG_EVENT,
};

/// A 64-bit integer written as a JSON number or a decimal string.
#[derive(Debug, Clone, Copy, Default)]
struct Int64(i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Int64, E> {
                Ok(Int64(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Int64, E> {
                // fixed64 timestamps fit in i64 until the year 2262.
                i64::try_from(value).map(Int64).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Int64, E> {
                value.parse().map(Int64).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// A hex id, decoded. Empty when absent.
#[derive(Debug, Clone, Copy, Default)]
struct HexId {
    bytes: [u8; 16],
    len: usize,
}

impl HexId {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl Visitor<'_> for HexVisitor {
            type Value = HexId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex id of at most 16 bytes")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<HexId, E> {
                let mut id = HexId::default();
                if !value.len().is_multiple_of(2) || value.len() > 32 {
                    return Err(E::custom("invalid hex id length"));
                }
                id.len = value.len() / 2;
                hex::decode_to_slice(value, &mut id.bytes[..id.len]).map_err(E::custom)?;
                Ok(id)
            }
            fn visit_unit<E: de::Error>(self) -> Result<HexId, E> {
                Ok(HexId::default())
            }
        }
        deserializer.deserialize_any(HexVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AnyValueJson<'a> {
    #[serde(borrow)]
    string_value: Option<Cow<'a, str>>,
    int_value: Option<Int64>,
    double_value: Option<f64>,
    bool_value: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyValueJson<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow, default)]
    value: Option<AnyValueJson<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct StatusJson {
    code: Option<i32>,
}

/// A span event: only flag evaluations are looked into.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EventJson<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SpanJson<'a> {
    trace_id: Option<HexId>,
    span_id: Option<HexId>,
    parent_span_id: Option<HexId>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    kind: Option<i32>,
    start_time_unix_nano: Option<Int64>,
    end_time_unix_nano: Option<Int64>,
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
    status: Option<StatusJson>,
    #[serde(borrow)]
    events: Option<Vec<EventJson<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeSpansJson<'a> {
    #[serde(borrow)]
    spans: Option<Vec<SpanJson<'a>>>,
    scope: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceJson<'a> {
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceSpansJson<'a> {
    #[serde(borrow)]
    resource: Option<ResourceJson<'a>>,
    #[serde(borrow)]
    scope_spans: Option<Vec<ScopeSpansJson<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct TracesJson<'a> {
    #[serde(borrow)]
    resource_spans: Option<Vec<ResourceSpansJson<'a>>>,
}

fn value_ref<'a>(value: &'a Option<AnyValueJson<'_>>) -> ValueRef<'a> {
    match value {
        Some(AnyValueJson {
            string_value: Some(text),
            ..
        }) => ValueRef::Str(text),
        Some(AnyValueJson {
            int_value: Some(Int64(number)),
            ..
        }) => ValueRef::Int(*number),
        Some(AnyValueJson {
            double_value: Some(number),
            ..
        }) => ValueRef::Double(*number),
        Some(AnyValueJson {
            bool_value: Some(flag),
            ..
        }) => ValueRef::Bool(*flag),
        _ => ValueRef::Other,
    }
}

fn id_bytes(id: &Option<HexId>) -> &[u8] {
    id.as_ref().map_or(&[], HexId::as_slice)
}

/// A trace request read from JSON, owning what the borrowed views need.
pub struct JsonTraces<'a> {
    parsed: TracesJson<'a>,
}

impl<'a> JsonTraces<'a> {
    /// Reads a JSON `ExportTraceServiceRequest`; `None` when this reader
    /// cannot (the caller then uses the general path).
    pub fn read(line: &'a [u8]) -> Option<Self> {
        let parsed: TracesJson<'a> = serde_json::from_slice(line).ok()?;
        parsed.resource_spans.as_ref()?;
        Some(JsonTraces { parsed })
    }

    /// The spans as the recorder reads them.
    pub fn batch(&self) -> TraceBatch<'_> {
        self.batch_with(&ExtraKeys::none())
    }

    /// The spans as the recorder reads them, with the values of the `extra`
    /// attribute keys in [`TraceBatch::extras`].
    pub fn batch_with(&self, extra: &ExtraKeys) -> TraceBatch<'_> {
        let mut batch = TraceBatch::default();
        for resource in self.parsed.resource_spans.iter().flatten() {
            let first = batch.spans.len();
            let mut service_name = None;
            let mut resource_attributes = ResourceAttributes::default();
            for attribute in resource
                .resource
                .iter()
                .flat_map(|resource| resource.attributes.iter().flatten())
            {
                let key = attribute.key.as_bytes();
                if key == b"service.name" {
                    if let ValueRef::Str(name) = value_ref(&attribute.value) {
                        service_name = Some(name);
                    }
                } else if ResourceAttributes::reads(key) {
                    resource_attributes.note(key, value_ref(&attribute.value));
                }
            }
            for span in resource
                .scope_spans
                .iter()
                .flatten()
                .flat_map(|scope| scope.spans.iter().flatten())
            {
                let mut attributes = SpanAttributes::default();
                let index = batch.spans.len() as u32;
                for attribute in span.attributes.iter().flatten() {
                    let key = attribute.key.as_bytes();
                    if SpanAttributes::reads(key) {
                        attributes.note(key, value_ref(&attribute.value));
                    } else if let Some(slot) = extra.slot(key) {
                        batch.extras.push(ExtraValue {
                            span: index,
                            slot,
                            key,
                            value: value_ref(&attribute.value),
                        });
                    }
                }
                for event in span
                    .events
                    .iter()
                    .flatten()
                    .filter(|event| event.name.as_deref() == Some(FLAG_EVENT))
                {
                    let (mut key, mut variant, mut older) = (None, None, None);
                    for attribute in event.attributes.iter().flatten() {
                        let name = attribute.key.as_bytes();
                        if !is_flag_key(name) {
                            continue;
                        }
                        let text = match value_ref(&attribute.value) {
                            ValueRef::Str(text) => Some(text),
                            _ => None,
                        };
                        match name {
                            b"feature_flag.key" => key = text,
                            b"feature_flag.result.variant" => variant = text,
                            _ => older = text,
                        }
                    }
                    attributes.note_flag_event(key, variant.or(older));
                }
                batch.spans.push(SpanView {
                    trace_id: id_bytes(&span.trace_id),
                    span_id: id_bytes(&span.span_id),
                    parent_span_id: id_bytes(&span.parent_span_id),
                    name: span.name.as_deref().unwrap_or(""),
                    kind: span.kind.unwrap_or(0),
                    start_time_unix_nano: span.start_time_unix_nano.unwrap_or_default().0 as u64,
                    end_time_unix_nano: span.end_time_unix_nano.unwrap_or_default().0 as u64,
                    status_code: span
                        .status
                        .as_ref()
                        .and_then(|status| status.code)
                        .unwrap_or(0),
                    attributes,
                });
            }
            batch.resources.push(ResourceView {
                service_name,
                attributes: resource_attributes,
                spans: first..batch.spans.len(),
            });
        }
        batch
    }
}

mod measure;
mod requests;
mod scan;
mod traces;

pub use measure::measure;
pub use requests::{read_logs, read_metrics};
pub use traces::ScannedTraces;

#[cfg(test)]
pub(crate) mod tests;
