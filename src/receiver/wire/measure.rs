//! Walks a protobuf export request before it is decoded: counts its items
//! and estimates what decoding it will allocate, refusing it as soon as it
//! crosses the [`Limits`] (see `decode::limits`). The walk allocates nothing
//! and reads each byte at most once.
//!
//! Three decoders read protobuf requests, and they allocate differently:
//!
//! - prost ([`measure_prost`]: logs, and metrics for sinks that decode
//!   with prost) allocates every repeated message, string and repeated
//!   number; the walk follows `decode::schema` through every level prost
//!   decodes.
//! - the zero-copy trace reader ([`measure_views`], `TraceBatch::read_with`)
//!   borrows everything and allocates three vectors: one view per resource,
//!   one per span and, at most, one extra value per span attribute.
//! - the zero-copy metrics reader ([`measure_metric_views`],
//!   `MetricBatch::read`) borrows everything and allocates eight vectors:
//!   one view per resource, resource attribute, metric, data point and
//!   point attribute, one number per histogram bucket count and bound, one
//!   view per histogram exemplar.
//!
//! Invariant: the walk never stops earlier than the decoder it measures
//! for. Where the decoder would fail (framing it cannot read), the walk
//! stops too and lets the request through, and the decoder refuses it with
//! its own, precise message; everything before that point has been counted.
//! A submessage the walk cannot read is skipped as opaque bytes and the walk
//! goes on with its parent, since a decoder that does not look inside it
//! (the zero-copy reader skips attribute arrays, for one) goes on too.

use std::mem::size_of;

use super::{Reader, WireError, WireType};
use crate::model::{ExtraValue, ResourceView, SpanView};
use crate::receiver::decode::limits::{growth, heap, Budget, Limits, Measured, OverLimit};
use crate::receiver::decode::schema::{Field, Message};
use crate::receiver::metric_batch::{
    Attribute, DataKind, ExemplarView, MetricView, PointView, ResourceMetricsView,
};

/// prost's recursion limit: it refuses messages nested deeper.
const RECURSION_LIMIT: u32 = 100;

/// Why a walk stopped.
enum Stop {
    Over(OverLimit),
    /// Framing the decoder cannot read either.
    Malformed,
}

impl From<OverLimit> for Stop {
    fn from(over: OverLimit) -> Self {
        Stop::Over(over)
    }
}

impl From<WireError> for Stop {
    fn from(_: WireError) -> Self {
        Stop::Malformed
    }
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

/// Checks a protobuf request of type `root` (an `Export*ServiceRequest`)
/// against `limits` before prost decodes it.
pub fn measure_prost(bytes: &[u8], root: Message, limits: Limits) -> Result<Measured, OverLimit> {
    let mut budget = Budget::new(limits, root.items_name(), "protobuf", bytes.len());
    finish(message(bytes, root, &mut budget, 0), &budget)
}

/// Checks a protobuf `ExportTraceServiceRequest` against `limits` before the
/// zero-copy reader (`TraceBatch::read_with`) reads it.
pub fn measure_views(bytes: &[u8], limits: Limits) -> Result<Measured, OverLimit> {
    let mut budget = Budget::new(limits, "spans", "protobuf", bytes.len());
    let mut batch = Batch::default();
    finish(trace_request(bytes, &mut batch, &mut budget), &budget)
}

fn finish(walk: Result<(), Stop>, budget: &Budget) -> Result<Measured, OverLimit> {
    match walk {
        Err(Stop::Over(over)) => Err(over),
        Ok(()) | Err(Stop::Malformed) => Ok(budget.measured()),
    }
}

/// Walks a submessage; one the walk cannot read is opaque bytes to it.
fn nested(
    walk: impl FnOnce(&mut Budget) -> Result<(), Stop>,
    budget: &mut Budget,
) -> Result<(), OverLimit> {
    match walk(budget) {
        Err(Stop::Over(over)) => Err(over),
        Ok(()) | Err(Stop::Malformed) => Ok(()),
    }
}

// === prost ===

/// Walks one message as prost decodes it.
fn message(
    bytes: &[u8],
    message_type: Message,
    budget: &mut Budget,
    depth: u32,
) -> Result<(), Stop> {
    message_into(bytes, message_type, budget, depth, &mut [0; 16], Inline::No)
}

/// Whether a message's walk is an occurrence of a singular message field,
/// and whether its repeated fields' lengths are followed across all the
/// occurrences prost merges (see [`message_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inline {
    /// A request, or an element of a repeated field: a message of its own.
    No,
    /// An occurrence of a singular field whose lengths `lens` follows.
    Followed,
    /// An occurrence of a singular field inside another one: the lengths
    /// start from zero at each occurrence of the outer one, so growth is
    /// charged twice.
    Unfollowed,
}

/// Walks one occurrence of a message whose repeated fields already hold
/// `lens` elements: prost merges every occurrence of a singular message
/// field into one message, so their repeated fields grow one `Vec`.
///
/// Exact for a singular field given several times in one parent (`lens`
/// carries the lengths across its occurrences). One level further down (a
/// `value` given twice, each with an `array_value`), the inner message's
/// occurrences are spread over its parent's, and following them all
/// would need memory per level; there (`inline` is the parent's walk being
/// an occurrence of a singular field) each vector's growth is charged
/// twice. That is an upper bound: a vector holding all `n` elements of the
/// occurrences has a capacity below `2 n` (at least 4), and the
/// occurrences' own capacities add up to at least `n` (each at least 4).
fn message_into(
    bytes: &[u8],
    message_type: Message,
    budget: &mut Budget,
    depth: u32,
    lens: &mut [usize; 16],
    inline: Inline,
) -> Result<(), Stop> {
    if depth > RECURSION_LIMIT {
        return Err(Stop::Malformed);
    }
    let mut reader = Reader::new(bytes, "measure");
    // Elements so far of each repeated field, by field number (OTLP's
    // repeated fields are all numbered below 16): each is one `Vec`. And
    // the same for each singular message field's occurrences so far.
    let mut inline_lens = [[0usize; 16]; 16];
    let mut spare_lens = [0usize; 16];
    let mut spare = 0;
    // Vectors whose other occurrences are not followed are charged twice.
    let factor = if inline == Inline::Unfollowed { 2 } else { 1 };
    let grown = |len: usize, pushed: usize, size: usize| growth(len, pushed, size) * factor;
    // A singular field inside this one is followed only within this
    // occurrence when this is itself an occurrence of a singular field.
    let child_inline = if inline == Inline::No {
        Inline::Followed
    } else {
        Inline::Unfollowed
    };
    while let Some((number, wire_type)) = key(&mut reader)? {
        let len = lens.get_mut(number as usize).unwrap_or(&mut spare);
        match (message_type.field(number), wire_type) {
            (Field::Repeated(child), LEN) => {
                let body = reader.len_delimited()?;
                budget.charge(grown(*len, 1, child.size()))?;
                *len += 1;
                if child.is_item() {
                    budget.item()?;
                }
                nested(|budget| message(body, child, budget, depth + 1), budget)?;
            }
            (Field::Inline(child), LEN) => {
                let body = reader.len_delimited()?;
                let lens = inline_lens
                    .get_mut(number as usize)
                    .unwrap_or(&mut spare_lens);
                nested(
                    |budget| message_into(body, child, budget, depth + 1, lens, child_inline),
                    budget,
                )?;
            }
            (Field::Bytes, LEN) => budget.charge(heap(reader.len_delimited()?.len()))?,
            (Field::RepeatedBytes, LEN) => {
                let body = reader.len_delimited()?;
                budget.charge(grown(*len, 1, size_of::<String>()))?;
                *len += 1;
                budget.charge(heap(body.len()))?;
            }
            (Field::RepeatedNumber { varint }, LEN) => {
                // Packed: prost pushes each number into the `Vec`.
                let body = reader.len_delimited()?;
                let numbers = if varint {
                    body.iter().filter(|byte| **byte < 0x80).count()
                } else {
                    body.len() / 8
                };
                budget.charge(grown(*len, numbers, 8))?;
                *len += numbers;
            }
            (Field::RepeatedNumber { varint: true }, VARINT)
            | (Field::RepeatedNumber { varint: false }, FIXED64) => {
                skip(&mut reader, number, wire_type, depth)?;
                budget.charge(grown(*len, 1, 8))?;
                *len += 1;
            }
            // Scalars, unknown fields, and known fields of the wrong wire
            // type (which prost refuses).
            _ => skip(&mut reader, number, wire_type, depth)?,
        }
    }
    Ok(())
}

/// The next field's number and wire type, or `None` at the end. Unlike
/// [`Reader::field`], which skips a group itself, this returns it, for
/// [`skip`] to walk it at its depth.
fn key(reader: &mut Reader<'_>) -> Result<Option<(u64, u64)>, Stop> {
    if reader.bytes.is_empty() {
        return Ok(None);
    }
    let key = reader.varint()?;
    let (number, wire_type) = (key >> 3, key & 7);
    if number == 0 || wire_type > FIXED32 {
        return Err(Stop::Malformed);
    }
    Ok(Some((number, wire_type)))
}

/// Skips a field by its wire type, a group up to its end.
fn skip(reader: &mut Reader<'_>, number: u64, wire_type: u64, depth: u32) -> Result<(), Stop> {
    match wire_type {
        VARINT => drop(reader.varint()?),
        FIXED64 => drop(reader.take(8)?),
        LEN => drop(reader.len_delimited()?),
        FIXED32 => drop(reader.take(4)?),
        START_GROUP => {
            if depth >= RECURSION_LIMIT {
                return Err(Stop::Malformed);
            }
            loop {
                match key(reader)? {
                    Some((end, END_GROUP)) if end == number => break,
                    Some((_, END_GROUP)) | None => return Err(Stop::Malformed),
                    Some((inner, wire_type)) => skip(reader, inner, wire_type, depth + 1)?,
                }
            }
        }
        _ => return Err(Stop::Malformed),
    }
    Ok(())
}

// === zero-copy trace views ===

/// The lengths of the vectors a `TraceBatch` holds.
#[derive(Default)]
struct Batch {
    resources: usize,
    spans: usize,
    extras: usize,
}

/// Walks an `ExportTraceServiceRequest` as `TraceBatch::read_with` reads
/// it, skipping groups where the reader does ([`Reader::field`]).
fn trace_request(bytes: &[u8], batch: &mut Batch, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 1 && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            budget.charge(growth(batch.resources, 1, size_of::<ResourceView<'_>>()))?;
            batch.resources += 1;
            nested(|budget| resource_spans(body, batch, budget), budget)?;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(())
}

fn resource_spans(bytes: &[u8], batch: &mut Batch, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 2 && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            nested(|budget| scope_spans(body, batch, budget), budget)?;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(())
}

fn scope_spans(bytes: &[u8], batch: &mut Batch, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 2 && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            budget.item()?;
            budget.charge(growth(batch.spans, 1, size_of::<SpanView<'_>>()))?;
            batch.spans += 1;
            nested(|budget| span(body, batch, budget), budget)?;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(())
}

/// Counts a span's attributes: each may be a configured extra key's value.
fn span(bytes: &[u8], batch: &mut Batch, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 9 && wire_type == WireType::Len {
            budget.charge(growth(batch.extras, 1, size_of::<ExtraValue<'_>>()))?;
            batch.extras += 1;
        }
        reader.skip(wire_type)?;
    }
    Ok(())
}

// === zero-copy metric views ===

/// The lengths of the vectors a `MetricBatch` holds.
#[derive(Default)]
struct MetricLens {
    resources: usize,
    resource_attributes: usize,
    metrics: usize,
    points: usize,
    attributes: usize,
    counts: usize,
    bounds: usize,
    exemplars: usize,
}

/// Checks a protobuf `ExportMetricsServiceRequest` against `limits` before
/// the zero-copy reader (`MetricBatch::read`) reads it. The walk counts
/// every element the reader pushes, and never the ones a metric's replaced
/// data drops again, so it is an upper bound.
pub fn measure_metric_views(bytes: &[u8], limits: Limits) -> Result<Measured, OverLimit> {
    let items = Message::ExportMetrics.items_name();
    let mut budget = Budget::new(limits, items, "protobuf", bytes.len());
    let mut lens = MetricLens::default();
    finish(metrics_request(bytes, &mut lens, &mut budget), &budget)
}

/// Charges `pushed` more elements of `size` bytes onto a vector of `len`.
fn push(len: &mut usize, pushed: usize, size: usize, budget: &mut Budget) -> Result<(), Stop> {
    budget.charge(growth(*len, pushed, size))?;
    *len = len.saturating_add(pushed);
    Ok(())
}

fn metrics_request(bytes: &[u8], lens: &mut MetricLens, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 1 && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            push(
                &mut lens.resources,
                1,
                size_of::<ResourceMetricsView>(),
                budget,
            )?;
            nested(|budget| resource_metrics(body, lens, budget), budget)?;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(())
}

fn resource_metrics(bytes: &[u8], lens: &mut MetricLens, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        match (number, wire_type) {
            (1, WireType::Len) => {
                let body = reader.len_delimited()?;
                nested(|budget| resource(body, lens, budget), budget)?;
            }
            (2, WireType::Len) => {
                let body = reader.len_delimited()?;
                nested(|budget| scope_metrics(body, lens, budget), budget)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(())
}

fn resource(bytes: &[u8], lens: &mut MetricLens, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 1 && wire_type == WireType::Len {
            let size = size_of::<Attribute<'_>>();
            push(&mut lens.resource_attributes, 1, size, budget)?;
        }
        reader.skip(wire_type)?;
    }
    Ok(())
}

fn scope_metrics(bytes: &[u8], lens: &mut MetricLens, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 2 && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            push(&mut lens.metrics, 1, size_of::<MetricView<'_>>(), budget)?;
            nested(|budget| metric(body, lens, budget), budget)?;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(())
}

fn metric(bytes: &[u8], lens: &mut MetricLens, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        let kind = match number {
            5 => DataKind::Gauge,
            7 => DataKind::Sum,
            9 => DataKind::Histogram,
            10 => DataKind::ExponentialHistogram,
            11 => DataKind::Summary,
            _ => {
                reader.skip(wire_type)?;
                continue;
            }
        };
        if wire_type != WireType::Len {
            reader.skip(wire_type)?;
            continue;
        }
        let body = reader.len_delimited()?;
        nested(|budget| data(body, kind, lens, budget), budget)?;
    }
    Ok(())
}

fn data(
    bytes: &[u8],
    kind: DataKind,
    lens: &mut MetricLens,
    budget: &mut Budget,
) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        if number == 1 && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            budget.item()?;
            push(&mut lens.points, 1, size_of::<PointView>(), budget)?;
            nested(|budget| point(body, kind, lens, budget), budget)?;
        } else {
            reader.skip(wire_type)?;
        }
    }
    Ok(())
}

/// Counts what the reader keeps of one point: attributes, and of
/// histograms their counts, bounds and exemplars.
fn point(
    bytes: &[u8],
    kind: DataKind,
    lens: &mut MetricLens,
    budget: &mut Budget,
) -> Result<(), Stop> {
    let attributes = match kind {
        DataKind::Gauge | DataKind::Sum | DataKind::Summary => 7,
        DataKind::Histogram => 9,
        DataKind::ExponentialHistogram => 1,
    };
    let (counts, bounds, exemplars, positive) = match kind {
        DataKind::Histogram => (6, 7, 8, 0),
        DataKind::ExponentialHistogram => (0, 0, 11, 8),
        _ => (0, 0, 0, 0),
    };
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        let len = if number == attributes {
            (&mut lens.attributes, size_of::<Attribute<'_>>())
        } else if number == counts {
            (&mut lens.counts, size_of::<u64>())
        } else if number == bounds {
            (&mut lens.bounds, size_of::<f64>())
        } else if number == exemplars {
            (&mut lens.exemplars, size_of::<ExemplarView<'_>>())
        } else if number == positive && wire_type == WireType::Len {
            let body = reader.len_delimited()?;
            nested(|budget| buckets(body, lens, budget), budget)?;
            continue;
        } else {
            reader.skip(wire_type)?;
            continue;
        };
        let (len, size) = len;
        match wire_type {
            // Counts and bounds come packed, 8 bytes each; attributes
            // and exemplars are one message each.
            WireType::Len if number == counts || number == bounds => {
                let packed = reader.len_delimited()?.len() / 8;
                push(len, packed, size, budget)?;
            }
            WireType::Len => {
                reader.len_delimited()?;
                push(len, 1, size, budget)?;
            }
            WireType::Fixed64 if number == counts || number == bounds => {
                reader.fixed64()?;
                push(len, 1, size, budget)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(())
}

/// Counts an exponential histogram's positive bucket counts: one per
/// varint, packed or not.
fn buckets(bytes: &[u8], lens: &mut MetricLens, budget: &mut Budget) -> Result<(), Stop> {
    let mut reader = Reader::new(bytes, "measure");
    while let Some((number, wire_type)) = reader.field()? {
        match (number, wire_type) {
            (2, WireType::Len) => {
                let packed = reader.len_delimited()?;
                let n = packed.iter().filter(|byte| **byte < 0x80).count();
                push(&mut lens.counts, n, size_of::<u64>(), budget)?;
            }
            (2, WireType::Varint) => {
                reader.varint()?;
                push(&mut lens.counts, 1, size_of::<u64>(), budget)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(())
}
