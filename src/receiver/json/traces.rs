//! The scanning reader for OTLP/JSON trace requests.
//!
//! Walks a line with [`Scanner`] straight into the [`SpanView`]s recording
//! reads: nothing is allocated per span (ids are decoded into one buffer,
//! strings are borrowed from the line), every member recording does not
//! read is skipped (but checked). Members may come in any order: an
//! attribute's value written before its key is read again once the key is
//! known.

use super::scan::{IdRange, Scan, Scanner, Unreadable};
use crate::model::{
    is_flag_key, ExtraKeys, ExtraValue, ResourceAttributes, ResourceView, SpanAttributes, SpanView,
    TraceBatch, ValueRef, FLAG_EVENT,
};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

// Members in the order exporters write them (the protobuf declaration
// order), for `Scanner::object_in_order`.
pub(super) const RESOURCE: &[&str] = &["attributes", "droppedAttributesCount", "entityRefs"];
const RESOURCE_SPANS: &[&str] = &["resource", "scopeSpans", "schemaUrl"];
const SCOPE_SPANS: &[&str] = &["scope", "spans", "schemaUrl"];
const SPAN: &[&str] = &[
    "traceId",
    "spanId",
    "traceState",
    "parentSpanId",
    "flags",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "droppedAttributesCount",
    "events",
    "droppedEventsCount",
    "links",
    "droppedLinksCount",
    "status",
];
const STATUS: &[&str] = &["message", "code"];
pub(super) const KEY_VALUE: &[&str] = &["key", "value"];
/// One of these, whichever the value is.
pub(super) const ANY_VALUE: &[&str] = &[
    "stringValue",
    "intValue",
    "boolValue",
    "doubleValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
];

/// A span as scanned: its view without ids, and where its ids are.
#[derive(Debug, Clone, Copy)]
struct ScannedSpan<'a> {
    view: SpanView<'a>,
    trace_id: IdRange,
    span_id: IdRange,
    parent_span_id: IdRange,
}

/// A trace request scanned from one JSON line; [`ScannedTraces::batch`]
/// gives the views recording reads.
#[derive(Debug, Default)]
pub struct ScannedTraces<'a> {
    resources: Vec<ResourceView<'a>>,
    spans: Vec<ScannedSpan<'a>>,
    extras: Vec<ExtraValue<'a>>,
    /// Every decoded id, back to back.
    ids: Vec<u8>,
}

impl<'a> ScannedTraces<'a> {
    /// Scans a JSON `ExportTraceServiceRequest`, keeping the values of the
    /// `extra` attribute keys. `None` when this reader cannot read it (not
    /// a trace request, malformed, or a kept string with an escape): the
    /// caller falls back to a slower reader.
    pub fn read(line: &'a str, extra: &ExtraKeys) -> Option<Self> {
        // Exporters write 600 to 1,000 bytes of JSON per span: room for
        // most lines' spans and ids up front, instead of growing (and
        // copying) the vectors.
        let spans = line.len() / 512 + 1;
        let mut traces = ScannedTraces {
            spans: Vec::with_capacity(spans),
            ids: Vec::with_capacity(spans * 32),
            ..ScannedTraces::default()
        };
        let mut scanner = Scanner::new(line);
        let mut seen = false;
        scanner
            .object_in_order(&["resourceSpans"], |scanner, member| {
                if member == "resourceSpans" {
                    seen = true;
                    scanner.array(|scanner| traces.resource_spans(scanner, extra))
                } else {
                    scanner.skip()
                }
            })
            .and_then(|()| scanner.end())
            .ok()?;
        seen.then_some(traces)
    }

    /// The number of spans read.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no span was read.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The spans as the recorder reads them.
    pub fn batch(&self) -> TraceBatch<'_> {
        TraceBatch {
            resources: self.resources.clone(),
            spans: self
                .spans
                .iter()
                .map(|span| SpanView {
                    trace_id: span.trace_id.get(&self.ids),
                    span_id: span.span_id.get(&self.ids),
                    parent_span_id: span.parent_span_id.get(&self.ids),
                    ..span.view
                })
                .collect(),
            extras: self.extras.clone(),
        }
    }

    fn resource_spans(&mut self, scanner: &mut Scanner<'a>, extra: &ExtraKeys) -> Scan<()> {
        let first = self.spans.len();
        let mut service_name = None;
        let mut attributes = ResourceAttributes::default();
        scanner.object_in_order(RESOURCE_SPANS, |scanner, member| match member {
            "resource" => scanner.object_in_order(RESOURCE, |scanner, member| {
                if member != "attributes" {
                    return scanner.skip();
                }
                scanner.array(|scanner| {
                    key_value(scanner, |key, scanner| {
                        let key = key.as_bytes();
                        if key == b"service.name" {
                            if let ValueRef::Str(name) = value_ref(scanner)? {
                                service_name = Some(name);
                            }
                        } else if ResourceAttributes::reads(key) {
                            attributes.note(key, value_ref(scanner)?);
                        } else {
                            skip_any_value(scanner)?;
                        }
                        Ok(())
                    })
                })
            }),
            "scopeSpans" => scanner.array(|scanner| {
                scanner.object_in_order(SCOPE_SPANS, |scanner, member| {
                    if member == "spans" {
                        scanner.array(|scanner| self.span(scanner, extra))
                    } else {
                        scanner.skip()
                    }
                })
            }),
            _ => scanner.skip(),
        })?;
        self.resources.push(ResourceView {
            service_name,
            attributes,
            spans: first..self.spans.len(),
        });
        Ok(())
    }

    fn span(&mut self, scanner: &mut Scanner<'a>, extra: &ExtraKeys) -> Scan<()> {
        let index = self.spans.len() as u32;
        let mut span = ScannedSpan {
            view: SpanView::default(),
            trace_id: IdRange::default(),
            span_id: IdRange::default(),
            parent_span_id: IdRange::default(),
        };
        let ids = &mut self.ids;
        let extras = &mut self.extras;
        let view = &mut span.view;
        // The first flag event, applied once the span's own attributes are
        // all read, whichever order the members come in.
        let mut events = SpanAttributes::default();
        scanner.object_in_order(SPAN, |scanner, member| {
            match member {
                "traceId" => span.trace_id = scanner.hex_id(ids)?,
                "spanId" => span.span_id = scanner.hex_id(ids)?,
                "parentSpanId" => span.parent_span_id = scanner.hex_id(ids)?,
                "name" => view.name = scanner.str()?.unwrap_or(""),
                "kind" => view.kind = scanner.enumeration(span_kind)?.unwrap_or(0),
                "startTimeUnixNano" => view.start_time_unix_nano = scanner.u64()?.unwrap_or(0),
                "endTimeUnixNano" => view.end_time_unix_nano = scanner.u64()?.unwrap_or(0),
                "attributes" => scanner.array(|scanner| {
                    key_value(scanner, |key, scanner| {
                        let key = key.as_bytes();
                        if SpanAttributes::reads(key) {
                            view.attributes.note(key, value_ref(scanner)?);
                        } else if let Some(slot) = extra.slot(key) {
                            extras.push(ExtraValue {
                                span: index,
                                slot,
                                key,
                                value: value_ref(scanner)?,
                            });
                        } else {
                            skip_any_value(scanner)?;
                        }
                        Ok(())
                    })
                })?,
                "status" => scanner.object_in_order(STATUS, |scanner, member| {
                    if member == "code" {
                        view.status_code = scanner.enumeration(status_code)?.unwrap_or(0);
                        Ok(())
                    } else {
                        scanner.skip()
                    }
                })?,
                "events" => scanner.array(|scanner| event(scanner, &mut events))?,
                _ => scanner.skip()?,
            }
            Ok(())
        })?;
        view.attributes
            .note_flag_event(events.feature_flag_key, events.feature_flag_variant);
        self.spans.push(span);
        Ok(())
    }
}

fn span_kind(name: &str) -> Option<i32> {
    SpanKind::from_str_name(name).map(|kind| kind as i32)
}

fn status_code(name: &str) -> Option<i32> {
    StatusCode::from_str_name(name).map(|code| code as i32)
}

/// Reads a `KeyValue` object, calling `value` with its key and the scanner
/// at its value, which `value` must consume. A value written before its key
/// is skipped and read again from where it was.
pub(super) fn key_value<'a>(
    scanner: &mut Scanner<'a>,
    mut value: impl FnMut(&'a str, &mut Scanner<'a>) -> Scan<()>,
) -> Scan<()> {
    if let Some(key) = scanner.compact_key() {
        value(key, scanner)?;
        // A second key or value: the general readers decide.
        return scanner.close_object(|scanner, member| match member {
            "key" | "value" => Err(Unreadable),
            _ => scanner.skip(),
        });
    }
    let mut key = None;
    let mut early = None;
    let mut valued = false;
    scanner.object_in_order(KEY_VALUE, |scanner, member| match member {
        "key" => {
            let text = scanner.str()?.unwrap_or("");
            key = Some(text);
            match early.take() {
                Some(mut at) => value(text, &mut at),
                None => Ok(()),
            }
        }
        "value" => {
            valued = true;
            match key {
                Some(text) => value(text, scanner),
                None => {
                    early = Some(*scanner);
                    scanner.skip()
                }
            }
        }
        _ => scanner.skip(),
    })?;
    // A missing key is the empty key, a missing value the empty
    // `AnyValue`, as in protobuf.
    match (key, early) {
        (None, Some(mut at)) => value("", &mut at),
        (Some(text), _) if !valued => value(text, &mut Scanner::new("{}")),
        (None, None) if !valued => value("", &mut Scanner::new("{}")),
        _ => Ok(()),
    }
}

/// Skips an `AnyValue` (checking it), its member matched where expected.
fn skip_any_value(scanner: &mut Scanner<'_>) -> Scan<()> {
    if scanner.compact_string_value().is_some() {
        return Ok(());
    }
    scanner.object_in_order(ANY_VALUE, |scanner, _| scanner.skip())
}

/// An `AnyValue` as recording reads it: scalars, else `Other`.
fn value_ref<'a>(scanner: &mut Scanner<'a>) -> Scan<ValueRef<'a>> {
    if let Some(text) = scanner.compact_string_value() {
        return Ok(ValueRef::Str(text));
    }
    let mut value = ValueRef::Other;
    scanner.object_in_order(ANY_VALUE, |scanner, member| {
        match member {
            "stringValue" => {
                if let Some(text) = scanner.str()? {
                    value = ValueRef::Str(text);
                }
            }
            "intValue" => {
                if let Some(number) = scanner.i64()? {
                    value = ValueRef::Int(number);
                }
            }
            "doubleValue" => {
                if let Some(number) = scanner.f64()? {
                    value = ValueRef::Double(number);
                }
            }
            "boolValue" => {
                if let Some(flag) = scanner.bool()? {
                    value = ValueRef::Bool(flag);
                }
            }
            _ => scanner.skip()?,
        }
        Ok(())
    })?;
    Ok(value)
}

/// A span event: only a flag evaluation is noted (its name may come after
/// its attributes).
fn event<'a>(scanner: &mut Scanner<'a>, attributes: &mut SpanAttributes<'a>) -> Scan<()> {
    let mut name = None;
    let (mut key, mut variant, mut older) = (None, None, None);
    scanner.object(|scanner, member| match member {
        "name" => {
            name = scanner.str()?;
            Ok(())
        }
        "attributes" => scanner.array(|scanner| {
            key_value(scanner, |field, scanner| {
                if !is_flag_key(field.as_bytes()) {
                    return scanner.skip();
                }
                let text = match value_ref(scanner)? {
                    ValueRef::Str(text) => Some(text),
                    _ => None,
                };
                match field {
                    "feature_flag.key" => key = text,
                    "feature_flag.result.variant" => variant = text,
                    _ => older = text,
                }
                Ok(())
            })
        }),
        _ => scanner.skip(),
    })?;
    if name == Some(FLAG_EVENT) {
        attributes.note_flag_event(key, variant.or(older));
    }
    Ok(())
}
