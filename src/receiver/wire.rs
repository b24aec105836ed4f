//! A zero-copy reader for `ExportTraceServiceRequest` protobuf bytes (and,
//! in `metrics`, one for `ExportMetricsServiceRequest`).
//!
//! Decoding a request into owned prost types allocates a `String` or `Vec`
//! for every id, name, attribute key and value: most of the cost of ingest.
//! Recording needs only a few fields of each span, so this reader walks the
//! protobuf wire format and borrows them (`&str`, `&[u8]`) from the request
//! buffer. Nothing is allocated per span.
//!
//! The whole request is read and checked first, into a [`TraceBatch`], before
//! anything is recorded, so a malformed request is refused whole, as a prost
//! decode would refuse it. Every field's wire structure is checked (tags,
//! wire types, lengths within bounds); strings are checked to be UTF-8 where
//! triage reads them (span names, `service.name`, the attribute values it
//! keeps). Other fields are skipped by their wire type, so a request whose
//! only fault is invalid UTF-8 in a field triage ignores is accepted.
//!
//! Besides what recording needs, the reader borrows what the span analysis
//! and change detection read: a few resource attributes (version, instance,
//! pod, host, node, region, zone, environment), `rpc.method`, the feature
//! flag a span evaluated (span attributes, or the first span event named
//! `feature_flag.evaluation`; other events are skipped unread), and the values
//! of up to [`MAX_EXTRA_KEYS`] configured attribute keys ([`ExtraKeys`]).

use crate::model::{
    is_flag_key, ExtraKeys, ExtraValue, ResourceAttributes, ResourceView, SpanAttributes, SpanView,
    TraceBatch, ValueRef, FLAG_EVENT,
};
use thiserror::Error;

/// A protobuf wire-format error, with what was being read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid protobuf: {message} (in {context})")]
pub struct WireError {
    message: &'static str,
    context: &'static str,
}

fn error(message: &'static str, context: &'static str) -> WireError {
    WireError { message, context }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
    /// A group (a proto2 encoding OTLP never uses), already skipped by
    /// [`Reader::field`]: prost skips one in a field it does not know and
    /// refuses one in a field it reads, as `Reader::expect` does.
    Group,
}

/// Groups nested deeper than this are refused (prost's recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    context: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], context: &'static str) -> Self {
        Reader { bytes, context }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for (i, byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 9 && *byte > 1 {
                    return Err(error("varint overflows 64 bits", self.context));
                }
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(error("truncated or overlong varint", self.context))
    }

    /// The next field's number and wire type, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, WireType)>, WireError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(error("field number 0", self.context));
        }
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            3 => {
                self.skip_group(number, 0)?;
                WireType::Group
            }
            4 => return Err(error("end of a group that was not started", self.context)),
            _ => return Err(error("invalid wire type", self.context)),
        };
        Ok(Some((number, wire_type)))
    }

    /// Skips the fields of a group up to its end, as prost skips a group
    /// in a field it does not know; `depth` groups enclose this one.
    fn skip_group(&mut self, number: u64, depth: u32) -> Result<(), WireError> {
        if depth >= MAX_GROUP_DEPTH {
            return Err(error("groups nested too deep", self.context));
        }
        loop {
            if self.bytes.is_empty() {
                return Err(error("group without an end", self.context));
            }
            let key = self.varint()?;
            let inner = key >> 3;
            if inner == 0 {
                return Err(error("field number 0", self.context));
            }
            match key & 7 {
                0 => drop(self.varint()?),
                1 => drop(self.take(8)?),
                2 => drop(self.len_delimited()?),
                5 => drop(self.take(4)?),
                3 => self.skip_group(inner, depth + 1)?,
                4 if inner == number => return Ok(()),
                4 => return Err(error("group ends with another group's end", self.context)),
                _ => return Err(error("invalid wire type", self.context)),
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(error(
                "field runs past the end of its message",
                self.context,
            ));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| error("length too large", self.context))?;
        self.take(len)
    }

    fn fixed64(&mut self) -> Result<u64, WireError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn skip(&mut self, wire_type: WireType) -> Result<(), WireError> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.take(8).map(drop),
            WireType::Fixed32 => self.take(4).map(drop),
            WireType::Len => self.len_delimited().map(drop),
            WireType::Group => Ok(()),
        }
    }

    /// Reads a field of the expected wire type with `read`, or fails.
    fn expect(&self, actual: WireType, expected: WireType) -> Result<(), WireError> {
        if actual == expected {
            Ok(())
        } else {
            Err(error("field has the wrong wire type", self.context))
        }
    }

    fn string(&mut self) -> Result<&'a str, WireError> {
        let bytes = self.len_delimited()?;
        std::str::from_utf8(bytes).map_err(|_| error("string is not valid UTF-8", self.context))
    }
}

/// An `AnyValue` as read from the wire: strings are checked for UTF-8 only
/// when recording reads them (see [`SpanAttributes::reads`]).
#[derive(Debug, Clone, Copy)]
enum RawValue<'a> {
    Str(&'a [u8]),
    Other(ValueRef<'a>),
}

impl<'a> RawValue<'a> {
    fn checked(self) -> Result<ValueRef<'a>, WireError> {
        match self {
            RawValue::Str(bytes) => std::str::from_utf8(bytes)
                .map(ValueRef::Str)
                .map_err(|_| error("string is not valid UTF-8", "AnyValue")),
            RawValue::Other(value) => Ok(value),
        }
    }
}

/// Reads an `AnyValue` over `value`, the one read so far (a `KeyValue`'s
/// value given twice is merged: an occurrence without one keeps it).
fn any_value<'a>(bytes: &'a [u8], mut value: RawValue<'a>) -> Result<RawValue<'a>, WireError> {
    let mut reader = Reader::new(bytes, "AnyValue");
    while let Some((number, wire_type)) = reader.field()? {
        value = match (number, wire_type) {
            (1, WireType::Len) => RawValue::Str(reader.len_delimited()?),
            (2, WireType::Varint) => RawValue::Other(ValueRef::Bool(reader.varint()? != 0)),
            (3, WireType::Varint) => RawValue::Other(ValueRef::Int(reader.varint()? as i64)),
            (4, WireType::Fixed64) => {
                RawValue::Other(ValueRef::Double(f64::from_bits(reader.fixed64()?)))
            }
            (1..=4, _) => return Err(error("field has the wrong wire type", "AnyValue")),
            // An array, a key-value list or bytes: a value recording does
            // not read.
            (5..=7, _) => {
                reader.skip(wire_type)?;
                RawValue::Other(ValueRef::Other)
            }
            // A field this version does not know: prost skips it and keeps
            // the value read so far.
            _ => {
                reader.skip(wire_type)?;
                value
            }
        };
    }
    Ok(value)
}

/// Reads a `KeyValue`: its key bytes and its value.
fn key_value(bytes: &[u8]) -> Result<(&[u8], RawValue<'_>), WireError> {
    let mut reader = Reader::new(bytes, "KeyValue");
    let mut key: &[u8] = &[];
    let mut value = RawValue::Other(ValueRef::Other);
    while let Some((number, wire_type)) = reader.field()? {
        match number {
            1 => {
                reader.expect(wire_type, WireType::Len)?;
                key = reader.len_delimited()?;
            }
            2 => {
                reader.expect(wire_type, WireType::Len)?;
                value = any_value(reader.len_delimited()?, value)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok((key, value))
}

impl<'a> TraceBatch<'a> {
    /// Reads an `ExportTraceServiceRequest`.
    pub fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        Self::read_with(bytes, &ExtraKeys::none())
    }

    /// Reads an `ExportTraceServiceRequest`, collecting the values of the
    /// `extra` attribute keys into [`TraceBatch::extras`].
    pub fn read_with(bytes: &'a [u8], extra: &ExtraKeys) -> Result<Self, WireError> {
        let mut batch = TraceBatch::default();
        let mut reader = Reader::new(bytes, "ExportTraceServiceRequest");
        while let Some((number, wire_type)) = reader.field()? {
            if number == 1 {
                reader.expect(wire_type, WireType::Len)?;
                batch.resource_spans(reader.len_delimited()?, extra)?;
            } else {
                reader.skip(wire_type)?;
            }
        }
        Ok(batch)
    }

    fn resource_spans(&mut self, bytes: &'a [u8], extra: &ExtraKeys) -> Result<(), WireError> {
        let first = self.spans.len();
        let mut service_name = None;
        let mut attributes = ResourceAttributes::default();
        let mut reader = Reader::new(bytes, "ResourceSpans");
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                1 => {
                    reader.expect(wire_type, WireType::Len)?;
                    service_name =
                        resource(reader.len_delimited()?, &mut attributes)?.or(service_name);
                }
                2 => {
                    reader.expect(wire_type, WireType::Len)?;
                    self.scope_spans(reader.len_delimited()?, extra)?;
                }
                _ => reader.skip(wire_type)?,
            }
        }
        self.resources.push(ResourceView {
            service_name,
            attributes,
            spans: first..self.spans.len(),
        });
        Ok(())
    }

    fn scope_spans(&mut self, bytes: &'a [u8], extra: &ExtraKeys) -> Result<(), WireError> {
        let mut reader = Reader::new(bytes, "ScopeSpans");
        while let Some((number, wire_type)) = reader.field()? {
            if number == 2 {
                reader.expect(wire_type, WireType::Len)?;
                let index = self.spans.len() as u32;
                let view = span(reader.len_delimited()?, extra, index, &mut self.extras)?;
                self.spans.push(view);
            } else {
                reader.skip(wire_type)?;
            }
        }
        Ok(())
    }
}

/// Reads a `Resource`: returns its `service.name` and notes the other
/// attributes read into `attributes`.
fn resource<'a>(
    bytes: &'a [u8],
    attributes: &mut ResourceAttributes<'a>,
) -> Result<Option<&'a str>, WireError> {
    let mut reader = Reader::new(bytes, "Resource");
    let mut service_name = None;
    while let Some((number, wire_type)) = reader.field()? {
        if number == 1 {
            reader.expect(wire_type, WireType::Len)?;
            let (key, value) = key_value(reader.len_delimited()?)?;
            if key == b"service.name" {
                if let ValueRef::Str(name) = value.checked()? {
                    service_name = Some(name);
                }
            } else if ResourceAttributes::reads(key) {
                attributes.note(key, value.checked()?);
            }
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(service_name)
}

/// Reads a span `Event` far enough to see whether it is a flag evaluation,
/// and if so, its flag key and variant.
#[allow(clippy::type_complexity)] // two borrowed optional strings, nothing more
fn flag_event(bytes: &[u8]) -> Result<Option<(Option<&str>, Option<&str>)>, WireError> {
    let mut reader = Reader::new(bytes, "Event");
    let mut is_flag = false;
    while let Some((number, wire_type)) = reader.field()? {
        if number == 2 {
            reader.expect(wire_type, WireType::Len)?;
            is_flag = reader.len_delimited()? == FLAG_EVENT.as_bytes();
        } else {
            reader.skip(wire_type)?;
        }
    }
    if !is_flag {
        return Ok(None);
    }
    // Second pass over the attributes, only for the rare flag events.
    let mut reader = Reader::new(bytes, "Event");
    let (mut key, mut variant, mut older) = (None, None, None);
    while let Some((number, wire_type)) = reader.field()? {
        if number == 3 && wire_type == WireType::Len {
            let (name, value) = key_value(reader.len_delimited()?)?;
            if is_flag_key(name) {
                let text = match value.checked()? {
                    ValueRef::Str(text) => Some(text),
                    _ => None,
                };
                match name {
                    b"feature_flag.key" => key = text,
                    b"feature_flag.result.variant" => variant = text,
                    _ => older = text,
                }
            }
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(Some((key, variant.or(older))))
}

fn span<'a>(
    bytes: &'a [u8],
    extra: &ExtraKeys,
    index: u32,
    extras: &mut Vec<ExtraValue<'a>>,
) -> Result<SpanView<'a>, WireError> {
    let mut reader = Reader::new(bytes, "Span");
    let mut span = SpanView::default();
    // The first flag event, applied once the span's own attributes are all
    // read, whichever order the fields come in, as the prost path does.
    let mut events = SpanAttributes::default();
    while let Some((number, wire_type)) = reader.field()? {
        match number {
            1 => {
                reader.expect(wire_type, WireType::Len)?;
                span.trace_id = reader.len_delimited()?;
            }
            2 => {
                reader.expect(wire_type, WireType::Len)?;
                span.span_id = reader.len_delimited()?;
            }
            4 => {
                reader.expect(wire_type, WireType::Len)?;
                span.parent_span_id = reader.len_delimited()?;
            }
            5 => {
                reader.expect(wire_type, WireType::Len)?;
                span.name = reader.string()?;
            }
            6 => {
                reader.expect(wire_type, WireType::Varint)?;
                span.kind = reader.varint()? as i32;
            }
            7 => {
                reader.expect(wire_type, WireType::Fixed64)?;
                span.start_time_unix_nano = reader.fixed64()?;
            }
            8 => {
                reader.expect(wire_type, WireType::Fixed64)?;
                span.end_time_unix_nano = reader.fixed64()?;
            }
            9 => {
                reader.expect(wire_type, WireType::Len)?;
                let (key, value) = key_value(reader.len_delimited()?)?;
                if SpanAttributes::reads(key) {
                    span.attributes.note(key, value.checked()?);
                } else if !extra.is_empty() {
                    if let Some(slot) = extra.slot(key) {
                        extras.push(ExtraValue {
                            span: index,
                            slot,
                            key,
                            value: value.checked()?,
                        });
                    }
                }
            }
            11 => {
                reader.expect(wire_type, WireType::Len)?;
                if let Some((key, variant)) = flag_event(reader.len_delimited()?)? {
                    events.note_flag_event(key, variant);
                }
            }
            15 => {
                reader.expect(wire_type, WireType::Len)?;
                span.status_code = status_code(reader.len_delimited()?, span.status_code)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    span.attributes
        .note_flag_event(events.feature_flag_key, events.feature_flag_variant);
    Ok(span)
}

/// The code of a `Status`; `code` is the one read so far, kept when this
/// one has none, since a message field given twice is merged.
fn status_code(bytes: &[u8], mut code: i32) -> Result<i32, WireError> {
    let mut reader = Reader::new(bytes, "Status");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 3 {
            reader.expect(wire_type, WireType::Varint)?;
            code = reader.varint()? as i32;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(code)
}

mod measure;
mod metrics;

pub use measure::{measure_metric_views, measure_prost, measure_views};

#[cfg(test)]
mod tests;
