//! A zero-copy reader for `ExportTraceServiceRequest` protobuf bytes.
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

use std::ops::Range;

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
}

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
            _ => {
                return Err(error(
                    "unsupported wire type (groups are not allowed)",
                    self.context,
                ))
            }
        };
        Ok(Some((number, wire_type)))
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

/// A borrowed attribute value, for the few types recording reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Bytes, arrays, key-value lists, string-table references: not read.
    Other,
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

/// Reads an `AnyValue`.
fn any_value(bytes: &[u8]) -> Result<RawValue<'_>, WireError> {
    let mut reader = Reader::new(bytes, "AnyValue");
    let mut value = RawValue::Other(ValueRef::Other);
    while let Some((number, wire_type)) = reader.field()? {
        value = match (number, wire_type) {
            (1, WireType::Len) => RawValue::Str(reader.len_delimited()?),
            (2, WireType::Varint) => RawValue::Other(ValueRef::Bool(reader.varint()? != 0)),
            (3, WireType::Varint) => RawValue::Other(ValueRef::Int(reader.varint()? as i64)),
            (4, WireType::Fixed64) => {
                RawValue::Other(ValueRef::Double(f64::from_bits(reader.fixed64()?)))
            }
            (1..=4, _) => return Err(error("field has the wrong wire type", "AnyValue")),
            _ => {
                reader.skip(wire_type)?;
                RawValue::Other(ValueRef::Other)
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
                value = any_value(reader.len_delimited()?)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok((key, value))
}

/// The span attributes recording reads, borrowed from the request.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SpanAttributes<'a> {
    pub http_route: Option<&'a str>,
    pub http_status: Option<i64>,
    pub peer_service: Option<&'a str>,
    pub server_address: Option<&'a str>,
    pub db_system: Option<&'a str>,
    pub db_namespace: Option<&'a str>,
    pub messaging_destination: Option<&'a str>,
    /// `rpc.method`.
    pub rpc_method: Option<&'a str>,
    /// `feature_flag.key`, from the span's attributes or its first
    /// `feature_flag.evaluation` event.
    pub feature_flag_key: Option<&'a str>,
    /// `feature_flag.result.variant` (or the older `feature_flag.variant`),
    /// from the same place as the key.
    pub feature_flag_variant: Option<&'a str>,
}

impl<'a> SpanAttributes<'a> {
    /// Whether recording reads the attribute `key`.
    pub fn reads(key: &[u8]) -> bool {
        matches!(
            key,
            b"http.route"
                | b"http.response.status_code"
                | b"http.status_code"
                | b"peer.service"
                | b"server.address"
                | b"net.peer.name"
                | b"db.system.name"
                | b"db.system"
                | b"db.namespace"
                | b"db.name"
                | b"messaging.destination.name"
                | b"rpc.method"
                | b"feature_flag.key"
                | b"feature_flag.result.variant"
                | b"feature_flag.variant"
        )
    }

    /// Takes note of one attribute if recording reads it.
    pub fn note(&mut self, key: &[u8], value: ValueRef<'a>) {
        let text = match value {
            ValueRef::Str(text) => Some(text),
            _ => None,
        };
        match key {
            b"http.route" => self.http_route = text,
            b"http.response.status_code" | b"http.status_code" => {
                self.http_status = match value {
                    ValueRef::Int(code) => Some(code),
                    ValueRef::Str(text) => text.parse().ok(),
                    ValueRef::Double(code) => Some(code as i64),
                    _ => None,
                }
            }
            b"peer.service" => self.peer_service = text,
            b"server.address" | b"net.peer.name" => {
                self.server_address = self.server_address.or(text)
            }
            b"db.system.name" | b"db.system" => self.db_system = self.db_system.or(text),
            b"db.namespace" | b"db.name" => self.db_namespace = self.db_namespace.or(text),
            b"messaging.destination.name" => self.messaging_destination = text,
            b"rpc.method" => self.rpc_method = text,
            b"feature_flag.key" => self.feature_flag_key = text,
            b"feature_flag.result.variant" => self.feature_flag_variant = text,
            b"feature_flag.variant" => {
                self.feature_flag_variant = self.feature_flag_variant.or(text)
            }
            _ => {}
        }
    }

    /// Takes the flag of a `feature_flag.evaluation` event, unless the span
    /// already names one (its own attributes win; then the first event).
    pub fn note_flag_event(&mut self, key: Option<&'a str>, variant: Option<&'a str>) {
        if self.feature_flag_key.is_none() && key.is_some() {
            self.feature_flag_key = key;
            self.feature_flag_variant = variant;
        }
    }
}

/// Name of the span event that records a feature flag evaluation.
pub const FLAG_EVENT: &str = "feature_flag.evaluation";

/// Whether an event attribute key is one a flag evaluation is read from.
pub fn is_flag_key(key: &[u8]) -> bool {
    matches!(
        key,
        b"feature_flag.key" | b"feature_flag.result.variant" | b"feature_flag.variant"
    )
}

/// Resource attributes the analysis and change detection read, borrowed
/// from the request.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ResourceAttributes<'a> {
    /// `service.version`.
    pub service_version: Option<&'a str>,
    /// `service.instance.id`.
    pub service_instance_id: Option<&'a str>,
    /// `k8s.pod.name`.
    pub k8s_pod_name: Option<&'a str>,
    /// `host.name`.
    pub host_name: Option<&'a str>,
    /// `k8s.node.name`.
    pub k8s_node_name: Option<&'a str>,
    /// `cloud.region`.
    pub cloud_region: Option<&'a str>,
    /// `cloud.availability_zone`.
    pub cloud_availability_zone: Option<&'a str>,
    /// `deployment.environment.name`, or the older `deployment.environment`.
    pub deployment_environment: Option<&'a str>,
}

impl<'a> ResourceAttributes<'a> {
    /// Whether the reader keeps the resource attribute `key`.
    pub fn reads(key: &[u8]) -> bool {
        matches!(
            key,
            b"service.version"
                | b"service.instance.id"
                | b"k8s.pod.name"
                | b"host.name"
                | b"k8s.node.name"
                | b"cloud.region"
                | b"cloud.availability_zone"
                | b"deployment.environment.name"
                | b"deployment.environment"
        )
    }

    /// Takes note of one resource attribute if it is one of those read.
    /// Only string values are kept: these attributes are strings by
    /// convention.
    pub fn note(&mut self, key: &[u8], value: ValueRef<'a>) {
        let ValueRef::Str(text) = value else {
            return;
        };
        let text = Some(text);
        match key {
            b"service.version" => self.service_version = text,
            b"service.instance.id" => self.service_instance_id = text,
            b"k8s.pod.name" => self.k8s_pod_name = text,
            b"host.name" => self.host_name = text,
            b"k8s.node.name" => self.k8s_node_name = text,
            b"cloud.region" => self.cloud_region = text,
            b"cloud.availability_zone" => self.cloud_availability_zone = text,
            b"deployment.environment.name" => self.deployment_environment = text,
            // The older key yields to the newer one, whatever the order.
            b"deployment.environment" => {
                self.deployment_environment = self.deployment_environment.or(text)
            }
            _ => {}
        }
    }
}

/// Most extra attribute keys a reader looks for (`analyze.attributes`).
pub const MAX_EXTRA_KEYS: usize = 8;

/// One configured extra key: exact, or `*suffix` (e.g. `*.tenant`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExtraKey {
    Exact(Box<[u8]>),
    Suffix(Box<[u8]>),
}

/// The extra span attribute keys whose values the readers collect, at most
/// [`MAX_EXTRA_KEYS`]. A key is matched exactly, or, when it starts with
/// `*`, as a suffix (`*.tenant` matches `app.tenant` and `shop.tenant`).
/// With no keys the lookup is one branch per attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraKeys {
    keys: Vec<ExtraKey>,
    /// Shortest length a matching key can have: rejects most keys at once.
    min_len: usize,
}

impl ExtraKeys {
    /// No extra keys.
    pub fn none() -> Self {
        ExtraKeys::default()
    }

    /// The keys as configured; past [`MAX_EXTRA_KEYS`] the rest are ignored
    /// (configuration refuses more, so this only guards direct callers).
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        let keys: Vec<ExtraKey> = keys
            .iter()
            .take(MAX_EXTRA_KEYS)
            .map(|key| match key.as_ref().strip_prefix('*') {
                Some(suffix) => ExtraKey::Suffix(suffix.as_bytes().into()),
                None => ExtraKey::Exact(key.as_ref().as_bytes().into()),
            })
            .collect();
        let min_len = keys
            .iter()
            .map(|key| match key {
                ExtraKey::Exact(bytes) | ExtraKey::Suffix(bytes) => bytes.len(),
            })
            .min()
            .unwrap_or(usize::MAX);
        ExtraKeys { keys, min_len }
    }

    /// Whether there are no extra keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of extra keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The slot (position in the configured list) an attribute key matches.
    #[inline]
    pub fn slot(&self, key: &[u8]) -> Option<u8> {
        if key.len() < self.min_len {
            return None;
        }
        self.keys
            .iter()
            .position(|candidate| match candidate {
                ExtraKey::Exact(bytes) => key == &bytes[..],
                // The last byte first: most keys differ there, and it
                // spares a call to compare the rest.
                ExtraKey::Suffix(bytes) => match bytes.last() {
                    Some(last) => key.last() == Some(last) && key.ends_with(bytes),
                    None => true,
                },
            })
            .map(|slot| slot as u8)
    }
}

/// The value of an extra key on one span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtraValue<'a> {
    /// Index of the span in [`TraceBatch::spans`].
    pub span: u32,
    /// Which configured key matched ([`ExtraKeys::slot`]).
    pub slot: u8,
    /// The attribute's own key (a `*.tenant` pattern matches several).
    pub key: &'a [u8],
    pub value: ValueRef<'a>,
}

/// The fields of one span that recording reads.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub attributes: SpanAttributes<'a>,
}

/// Spans of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceView<'a> {
    /// `service.name`, if the resource has one.
    pub service_name: Option<&'a str>,
    /// The other resource attributes read.
    pub attributes: ResourceAttributes<'a>,
    /// This resource's spans in [`TraceBatch::spans`].
    pub spans: Range<usize>,
}

/// A whole trace request, read and checked, borrowing from its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceBatch<'a> {
    pub resources: Vec<ResourceView<'a>>,
    pub spans: Vec<SpanView<'a>>,
    /// Values of the configured extra keys, in span order (empty unless
    /// the batch was read with [`ExtraKeys`]).
    pub extras: Vec<ExtraValue<'a>>,
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
                    span.attributes.note_flag_event(key, variant);
                }
            }
            15 => {
                reader.expect(wire_type, WireType::Len)?;
                span.status_code = status_code(reader.len_delimited()?)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(span)
}

fn status_code(bytes: &[u8]) -> Result<i32, WireError> {
    let mut reader = Reader::new(bytes, "Status");
    let mut code = 0;
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

#[cfg(test)]
mod tests;
