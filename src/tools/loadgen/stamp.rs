//! Pre-encoded trace requests, stamped afresh for each send.
//!
//! triage judges spans by event time: a span that ended more than
//! `detect.lateness` before the newest data is late, and one older than the
//! ring is dropped. So a request cannot be sent twice as it was encoded;
//! its timestamps must say "now". Encoding once and patching on the way out
//! costs a few word writes per span instead of a protobuf encode: every
//! `start_time_unix_nano`/`end_time_unix_nano` is a `fixed64`, always eight
//! bytes at a fixed offset, so [`Template`] finds those offsets once by
//! walking the wire format, and [`StampCodec`] copies the bytes into the
//! gRPC frame with each timestamp moved by a shift. The trace, span and
//! parent ids (eight of their bytes) are XORed with a per-send nonce on the
//! way, so every send is new traces with the same parent/child links, as a
//! real service would send, not the same span ids again and again.
//!
//! The alternative, a few batches pre-encoded per second of the run, would
//! cost memory in proportion to rate x duration (100k spans/s for ten
//! minutes is 60 M spans) and still repeat ids.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// An encoded request and where its timestamps and ids are.
#[derive(Debug)]
pub struct Template {
    bytes: Bytes,
    /// Sorted by offset; none overlap.
    patches: Vec<Patch>,
    /// Spans in the request.
    pub spans: u64,
}

#[derive(Debug, Clone, Copy)]
struct Patch {
    offset: usize,
    field: Field,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    /// A `fixed64` Unix-nanosecond time: the shift is added.
    Time,
    /// The first eight bytes of an id: XORed with the nonce.
    Id,
}

/// One send of a template: how far to move its times, and the nonce for
/// its ids.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub template: Arc<Template>,
    /// Nanoseconds added to every timestamp.
    pub shift: u64,
    /// XORed into every id; its top bit must be clear (see `mix::id64`).
    pub nonce: u64,
}

/// The request's wire format was not what [`Template::new`] expects (it
/// encoded it itself, so this is a bug, not bad input).
#[derive(Debug, thiserror::Error)]
#[error("cannot index the encoded request at byte {offset}: {reason}")]
pub struct WireError {
    offset: usize,
    reason: &'static str,
}

// === impl Template ===

impl Template {
    pub fn new(request: &ExportTraceServiceRequest) -> Result<Template, WireError> {
        let bytes = Bytes::from(request.encode_to_vec());
        let mut patches = Vec::new();
        let mut spans = 0;
        // ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans = 2,
        // ScopeSpans.spans = 2.
        for_each_field(&bytes, 0, bytes.len(), &mut |number, value| {
            if number != 1 {
                return Ok(());
            }
            let (start, end) = value.span()?;
            for_each_field(&bytes, start, end, &mut |number, value| {
                if number != 2 {
                    return Ok(());
                }
                let (start, end) = value.span()?;
                for_each_field(&bytes, start, end, &mut |number, value| {
                    if number != 2 {
                        return Ok(());
                    }
                    spans += 1;
                    let (start, end) = value.span()?;
                    for_each_field(&bytes, start, end, &mut |number, value| {
                        match (number, value) {
                            // trace_id, span_id, parent_span_id
                            (1 | 2 | 4, Value::Length(start, end)) if end - start >= 8 => patches
                                .push(Patch {
                                    offset: start,
                                    field: Field::Id,
                                }),
                            // start_time_unix_nano, end_time_unix_nano
                            (7 | 8, Value::Fixed64(offset)) => patches.push(Patch {
                                offset,
                                field: Field::Time,
                            }),
                            _ => {}
                        }
                        Ok(())
                    })
                })
            })
        })?;
        patches.sort_by_key(|patch| patch.offset);
        Ok(Template {
            bytes,
            patches,
            spans,
        })
    }

    /// The request as sent with `shift` and `nonce`, into `out`.
    pub fn write(&self, shift: u64, nonce: u64, out: &mut impl BufMut) {
        let mut at = 0;
        for patch in &self.patches {
            out.put_slice(&self.bytes[at..patch.offset]);
            let mut word = [0; 8];
            word.copy_from_slice(&self.bytes[patch.offset..patch.offset + 8]);
            let word = u64::from_le_bytes(word);
            out.put_u64_le(match patch.field {
                Field::Time => word.wrapping_add(shift),
                Field::Id => word ^ nonce,
            });
            at = patch.offset + 8;
        }
        out.put_slice(&self.bytes[at..]);
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A field's value, as positions in the buffer.
#[derive(Debug, Clone, Copy)]
enum Value {
    Varint,
    /// Offset of the eight bytes.
    Fixed64(usize),
    Length(usize, usize),
    Fixed32,
}

impl Value {
    fn span(self) -> Result<(usize, usize), WireError> {
        match self {
            Value::Length(start, end) => Ok((start, end)),
            _ => Err(WireError {
                offset: 0,
                reason: "a message field is not length-delimited",
            }),
        }
    }
}

/// Calls `visit` with each field of the message in `bytes[start..end]`.
fn for_each_field(
    bytes: &[u8],
    start: usize,
    end: usize,
    visit: &mut dyn FnMut(u64, Value) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut at = start;
    while at < end {
        let key = varint(bytes, &mut at, end)?;
        let value = match key & 7 {
            0 => {
                varint(bytes, &mut at, end)?;
                Value::Varint
            }
            1 => {
                let offset = at;
                at = take(at, 8, end)?;
                Value::Fixed64(offset)
            }
            2 => {
                let length = varint(bytes, &mut at, end)? as usize;
                let offset = at;
                at = take(at, length, end)?;
                Value::Length(offset, at)
            }
            5 => {
                at = take(at, 4, end)?;
                Value::Fixed32
            }
            _ => {
                return Err(WireError {
                    offset: at,
                    reason: "unknown wire type",
                })
            }
        };
        visit(key >> 3, value)?;
    }
    Ok(())
}

fn take(at: usize, length: usize, end: usize) -> Result<usize, WireError> {
    at.checked_add(length)
        .filter(|next| *next <= end)
        .ok_or(WireError {
            offset: at,
            reason: "field runs past its message",
        })
}

fn varint(bytes: &[u8], at: &mut usize, end: usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).filter(|_| *at < end).ok_or(WireError {
            offset: *at,
            reason: "truncated varint",
        })?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError {
        offset: *at,
        reason: "varint longer than ten bytes",
    })
}

// === impl StampCodec ===

/// A gRPC codec that sends a [`Stamped`] template and decodes the answer
/// as a trace export response.
#[derive(Debug, Clone, Copy, Default)]
pub struct StampCodec;

impl Codec for StampCodec {
    type Encode = Stamped;
    type Decode = ExportTraceServiceResponse;
    type Encoder = StampCodec;
    type Decoder = StampCodec;

    fn encoder(&mut self) -> Self::Encoder {
        StampCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        StampCodec
    }
}

impl Encoder for StampCodec {
    type Item = Stamped;
    type Error = Status;

    fn encode(&mut self, item: Stamped, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.template.write(item.shift, item.nonce, dst);
        Ok(())
    }
}

impl Decoder for StampCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable response: {error}")))
    }
}
