//! The zero-copy reader for `ExportMetricsServiceRequest` protobuf bytes:
//! [`MetricBatch::read`].
//!
//! Decoding a metrics request with prost allocates a `String` for every
//! attribute key and value, a `Vec` for every point's attributes, bucket
//! counts and exemplars, and frees it all again once recorded: most of the
//! cost of recording agent summaries and span metrics (issue #16). This
//! reader walks the wire format once and fills the batch's flat vectors
//! with borrowed views instead, so a request costs a few vectors, however
//! many points it holds.
//!
//! As the trace reader does, it reads and checks the whole request before
//! anything is recorded, so a malformed request is refused whole. Fields
//! it keeps are checked as prost checks them (wire types, lengths, UTF-8 of
//! strings, packed numbers); fields it leaves out are skipped by their wire
//! type, so it accepts every request prost decodes and a few more (invalid
//! UTF-8 in a description, say), and reads from a request prost decodes
//! exactly the batch [`MetricBatch::from_request`] views in prost's
//! result. Merging follows prost: see `receiver::metric_batch`.

use super::{error, Reader, WireError, WireType};
use crate::receiver::metric_batch::{
    Attribute, AttributeValue, DataKind, DataView, ExemplarView, MetricBatch, MetricView, Number,
    PointData, PointView, PositiveBuckets, ResourceMetricsView,
};

/// The lengths of a batch's point vectors, to drop what a metric's
/// replaced data added.
#[derive(Clone, Copy)]
struct Mark {
    points: usize,
    attributes: usize,
    counts: usize,
    bounds: usize,
    exemplars: usize,
}

impl<'a> MetricBatch<'a> {
    /// Reads an `ExportMetricsServiceRequest`.
    pub fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut batch = MetricBatch::default();
        let mut reader = Reader::new(bytes, "ExportMetricsServiceRequest");
        while let Some((number, wire_type)) = reader.field()? {
            if number == 1 {
                reader.expect(wire_type, WireType::Len)?;
                batch.resource_metrics(reader.len_delimited()?)?;
            } else {
                reader.skip(wire_type)?;
            }
        }
        Ok(batch)
    }

    fn resource_metrics(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        let attributes = self.resource_attributes.len();
        let metrics = self.metrics.len();
        let mut has_resource = false;
        let mut reader = Reader::new(bytes, "ResourceMetrics");
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                1 => {
                    reader.expect(wire_type, WireType::Len)?;
                    has_resource = true;
                    self.resource(reader.len_delimited()?)?;
                }
                2 => {
                    reader.expect(wire_type, WireType::Len)?;
                    self.scope_metrics(reader.len_delimited()?)?;
                }
                _ => reader.skip(wire_type)?,
            }
        }
        self.resources.push(ResourceMetricsView {
            has_resource,
            attributes: attributes..self.resource_attributes.len(),
            metrics: metrics..self.metrics.len(),
        });
        Ok(())
    }

    fn resource(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        let mut reader = Reader::new(bytes, "Resource");
        while let Some((number, wire_type)) = reader.field()? {
            if number == 1 {
                reader.expect(wire_type, WireType::Len)?;
                let attribute = key_value(reader.len_delimited()?)?;
                self.resource_attributes.push(attribute);
            } else {
                reader.skip(wire_type)?;
            }
        }
        Ok(())
    }

    fn scope_metrics(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        let mut reader = Reader::new(bytes, "ScopeMetrics");
        while let Some((number, wire_type)) = reader.field()? {
            if number == 2 {
                reader.expect(wire_type, WireType::Len)?;
                self.metric(reader.len_delimited()?)?;
            } else {
                reader.skip(wire_type)?;
            }
        }
        Ok(())
    }

    fn mark(&self) -> Mark {
        Mark {
            points: self.points.len(),
            attributes: self.attributes.len(),
            counts: self.counts.len(),
            bounds: self.bounds.len(),
            exemplars: self.exemplars.len(),
        }
    }

    fn truncate(&mut self, mark: Mark) {
        self.points.truncate(mark.points);
        self.attributes.truncate(mark.attributes);
        self.counts.truncate(mark.counts);
        self.bounds.truncate(mark.bounds);
        self.exemplars.truncate(mark.exemplars);
    }

    fn metric(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        let mut reader = Reader::new(bytes, "Metric");
        let mut metric = MetricView {
            name: "",
            unit: "",
            data: None,
        };
        // Nothing but the metric's data adds points, so its data are the
        // points added from here on.
        let mark = self.mark();
        while let Some((number, wire_type)) = reader.field()? {
            let kind = match number {
                1 => {
                    reader.expect(wire_type, WireType::Len)?;
                    metric.name = reader.string()?;
                    continue;
                }
                3 => {
                    reader.expect(wire_type, WireType::Len)?;
                    metric.unit = reader.string()?;
                    continue;
                }
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
            reader.expect(wire_type, WireType::Len)?;
            let body = reader.len_delimited()?;
            // The data oneof: the same kind again is merged into it, another
            // kind replaces it (and its points), as prost does.
            let data = match &mut metric.data {
                Some(data) if data.kind == kind => data,
                data => {
                    self.truncate(mark);
                    data.insert(DataView {
                        kind,
                        aggregation_temporality: 0,
                        is_monotonic: false,
                        points: mark.points..mark.points,
                    })
                }
            };
            self.data(body, data)?;
        }
        self.metrics.push(metric);
        Ok(())
    }

    /// Reads one occurrence of a metric's data into `data`.
    fn data(&mut self, bytes: &'a [u8], data: &mut DataView) -> Result<(), WireError> {
        let mut reader = Reader::new(bytes, "metric data");
        let has_temporality = matches!(
            data.kind,
            DataKind::Sum | DataKind::Histogram | DataKind::ExponentialHistogram
        );
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                1 => {
                    reader.expect(wire_type, WireType::Len)?;
                    let body = reader.len_delimited()?;
                    let point = match data.kind {
                        DataKind::Gauge | DataKind::Sum => self.number_point(body)?,
                        DataKind::Histogram => self.histogram_point(body)?,
                        DataKind::ExponentialHistogram => self.exponential_point(body)?,
                        DataKind::Summary => self.summary_point(body)?,
                    };
                    self.points.push(point);
                }
                2 if has_temporality => {
                    reader.expect(wire_type, WireType::Varint)?;
                    data.aggregation_temporality = reader.varint()? as i32;
                }
                3 if data.kind == DataKind::Sum => {
                    reader.expect(wire_type, WireType::Varint)?;
                    data.is_monotonic = reader.varint()? != 0;
                }
                _ => reader.skip(wire_type)?,
            }
        }
        data.points.end = self.points.len();
        Ok(())
    }

    fn attribute(&mut self, reader: &mut Reader<'a>, wire_type: WireType) -> Result<(), WireError> {
        reader.expect(wire_type, WireType::Len)?;
        let attribute = key_value(reader.len_delimited()?)?;
        self.attributes.push(attribute);
        Ok(())
    }

    fn number_point(&mut self, bytes: &'a [u8]) -> Result<PointView, WireError> {
        let mut reader = Reader::new(bytes, "NumberDataPoint");
        let mut point = PointView::new(self.attributes.len(), PointData::Number(None));
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                7 => self.attribute(&mut reader, wire_type)?,
                2 => point.start_time_unix_nano = fixed64(&mut reader, wire_type)?,
                3 => point.time_unix_nano = fixed64(&mut reader, wire_type)?,
                4 => {
                    let value = f64::from_bits(fixed64(&mut reader, wire_type)?);
                    point.data = PointData::Number(Some(Number::Double(value)));
                }
                6 => {
                    let value = fixed64(&mut reader, wire_type)? as i64;
                    point.data = PointData::Number(Some(Number::Int(value)));
                }
                8 => point.flags = uint32(&mut reader, wire_type)?,
                _ => reader.skip(wire_type)?,
            }
        }
        point.attributes.end = self.attributes.len();
        Ok(point)
    }

    fn histogram_point(&mut self, bytes: &'a [u8]) -> Result<PointView, WireError> {
        let mut reader = Reader::new(bytes, "HistogramDataPoint");
        let mut point = PointView::new(self.attributes.len(), PointData::Number(None));
        let (counts, bounds, exemplars) =
            (self.counts.len(), self.bounds.len(), self.exemplars.len());
        let (mut count, mut sum, mut min, mut max) = (0, None, None, None);
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                9 => self.attribute(&mut reader, wire_type)?,
                2 => point.start_time_unix_nano = fixed64(&mut reader, wire_type)?,
                3 => point.time_unix_nano = fixed64(&mut reader, wire_type)?,
                4 => count = fixed64(&mut reader, wire_type)?,
                5 => sum = Some(double(&mut reader, wire_type)?),
                6 => repeated_fixed64(&mut reader, wire_type, |value| self.counts.push(value))?,
                7 => repeated_fixed64(&mut reader, wire_type, |value| {
                    self.bounds.push(f64::from_bits(value))
                })?,
                8 => {
                    reader.expect(wire_type, WireType::Len)?;
                    let exemplar = exemplar(reader.len_delimited()?)?;
                    self.exemplars.push(exemplar);
                }
                10 => point.flags = uint32(&mut reader, wire_type)?,
                11 => min = Some(double(&mut reader, wire_type)?),
                12 => max = Some(double(&mut reader, wire_type)?),
                _ => reader.skip(wire_type)?,
            }
        }
        point.attributes.end = self.attributes.len();
        point.data = PointData::Histogram {
            count,
            sum,
            bucket_counts: counts..self.counts.len(),
            explicit_bounds: bounds..self.bounds.len(),
            min,
            max,
            exemplars: exemplars..self.exemplars.len(),
        };
        Ok(point)
    }

    fn exponential_point(&mut self, bytes: &'a [u8]) -> Result<PointView, WireError> {
        let mut reader = Reader::new(bytes, "ExponentialHistogramDataPoint");
        let mut point = PointView::new(self.attributes.len(), PointData::Number(None));
        let (counts, exemplars) = (self.counts.len(), self.exemplars.len());
        let (mut count, mut sum, mut scale, mut zero_count) = (0, None, 0, 0);
        // Only positive buckets add counts, so theirs are contiguous
        // however often the field comes.
        let mut positive_offset = None;
        let mut negative_count = 0u64;
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                1 => self.attribute(&mut reader, wire_type)?,
                2 => point.start_time_unix_nano = fixed64(&mut reader, wire_type)?,
                3 => point.time_unix_nano = fixed64(&mut reader, wire_type)?,
                4 => count = fixed64(&mut reader, wire_type)?,
                5 => sum = Some(double(&mut reader, wire_type)?),
                6 => scale = sint32(&mut reader, wire_type)?,
                7 => zero_count = fixed64(&mut reader, wire_type)?,
                8 => {
                    reader.expect(wire_type, WireType::Len)?;
                    let offset = positive_offset.unwrap_or(0);
                    positive_offset = Some(buckets(reader.len_delimited()?, offset, |n| {
                        self.counts.push(n)
                    })?);
                }
                9 => {
                    reader.expect(wire_type, WireType::Len)?;
                    buckets(reader.len_delimited()?, 0, |n| {
                        negative_count = negative_count.saturating_add(n)
                    })?;
                }
                10 => point.flags = uint32(&mut reader, wire_type)?,
                11 => {
                    reader.expect(wire_type, WireType::Len)?;
                    let exemplar = exemplar(reader.len_delimited()?)?;
                    self.exemplars.push(exemplar);
                }
                _ => reader.skip(wire_type)?,
            }
        }
        point.attributes.end = self.attributes.len();
        point.data = PointData::Exponential {
            count,
            sum,
            scale,
            zero_count,
            positive: positive_offset.map(|offset| PositiveBuckets {
                offset,
                counts: counts..self.counts.len(),
            }),
            negative_count,
            exemplars: exemplars..self.exemplars.len(),
        };
        Ok(point)
    }

    fn summary_point(&mut self, bytes: &'a [u8]) -> Result<PointView, WireError> {
        let mut reader = Reader::new(bytes, "SummaryDataPoint");
        let mut point = PointView::new(self.attributes.len(), PointData::Summary { sum: 0.0 });
        while let Some((number, wire_type)) = reader.field()? {
            match number {
                7 => self.attribute(&mut reader, wire_type)?,
                2 => point.start_time_unix_nano = fixed64(&mut reader, wire_type)?,
                3 => point.time_unix_nano = fixed64(&mut reader, wire_type)?,
                5 => {
                    point.data = PointData::Summary {
                        sum: double(&mut reader, wire_type)?,
                    }
                }
                8 => point.flags = uint32(&mut reader, wire_type)?,
                _ => reader.skip(wire_type)?,
            }
        }
        point.attributes.end = self.attributes.len();
        Ok(point)
    }
}

impl PointView {
    /// A point whose attributes start at `attributes` in the batch.
    fn new(attributes: usize, data: PointData) -> Self {
        PointView {
            attributes: attributes..attributes,
            start_time_unix_nano: 0,
            time_unix_nano: 0,
            flags: 0,
            data,
        }
    }
}

fn fixed64(reader: &mut Reader<'_>, wire_type: WireType) -> Result<u64, WireError> {
    reader.expect(wire_type, WireType::Fixed64)?;
    reader.fixed64()
}

fn double(reader: &mut Reader<'_>, wire_type: WireType) -> Result<f64, WireError> {
    fixed64(reader, wire_type).map(f64::from_bits)
}

/// A `uint32`: prost keeps the low 32 bits of the varint.
fn uint32(reader: &mut Reader<'_>, wire_type: WireType) -> Result<u32, WireError> {
    reader.expect(wire_type, WireType::Varint)?;
    Ok(reader.varint()? as u32)
}

/// A `sint32`: zigzag over the low 32 bits of the varint, as prost reads it.
fn sint32(reader: &mut Reader<'_>, wire_type: WireType) -> Result<i32, WireError> {
    reader.expect(wire_type, WireType::Varint)?;
    let value = reader.varint()? as u32;
    Ok(((value >> 1) as i32) ^ -((value & 1) as i32))
}

/// One element of a repeated `fixed64` or `double` field, or a packed run
/// of them (whose length must be a whole number of elements).
fn repeated_fixed64(
    reader: &mut Reader<'_>,
    wire_type: WireType,
    mut push: impl FnMut(u64),
) -> Result<(), WireError> {
    match wire_type {
        WireType::Fixed64 => push(reader.fixed64()?),
        WireType::Len => {
            let packed = reader.len_delimited()?;
            if packed.len() % 8 != 0 {
                return Err(error("packed field of a partial element", reader.context));
            }
            for chunk in packed.chunks_exact(8) {
                push(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            }
        }
        _ => return Err(error("field has the wrong wire type", reader.context)),
    }
    Ok(())
}

/// Reads one occurrence of an exponential histogram's `Buckets`, handing
/// each count to `push`; returns its offset (`offset`, the one read so far,
/// when this occurrence has none).
fn buckets(bytes: &[u8], mut offset: i32, mut push: impl FnMut(u64)) -> Result<i32, WireError> {
    let mut reader = Reader::new(bytes, "Buckets");
    while let Some((number, wire_type)) = reader.field()? {
        match (number, wire_type) {
            (1, _) => offset = sint32(&mut reader, wire_type)?,
            (2, WireType::Varint) => push(reader.varint()?),
            (2, WireType::Len) => {
                let mut packed = Reader::new(reader.len_delimited()?, "Buckets");
                while !packed.bytes.is_empty() {
                    push(packed.varint()?);
                }
            }
            (2, _) => return Err(error("field has the wrong wire type", "Buckets")),
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(offset)
}

/// Reads an `Exemplar`: its trace id and value.
fn exemplar(bytes: &[u8]) -> Result<ExemplarView<'_>, WireError> {
    let mut reader = Reader::new(bytes, "Exemplar");
    let mut exemplar = ExemplarView {
        trace_id: &[],
        value: None,
    };
    while let Some((number, wire_type)) = reader.field()? {
        match number {
            5 => {
                reader.expect(wire_type, WireType::Len)?;
                exemplar.trace_id = reader.len_delimited()?;
            }
            3 => exemplar.value = Some(Number::Double(double(&mut reader, wire_type)?)),
            6 => exemplar.value = Some(Number::Int(fixed64(&mut reader, wire_type)? as i64)),
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(exemplar)
}

/// Reads a `KeyValue`. A value given twice is merged, as prost merges it:
/// a later occurrence without a value keeps the earlier one.
fn key_value(bytes: &[u8]) -> Result<Attribute<'_>, WireError> {
    let mut reader = Reader::new(bytes, "KeyValue");
    let mut attribute = Attribute {
        key: "",
        value: AttributeValue::Empty,
    };
    while let Some((number, wire_type)) = reader.field()? {
        match number {
            1 => {
                reader.expect(wire_type, WireType::Len)?;
                attribute.key = reader.string()?;
            }
            2 => {
                reader.expect(wire_type, WireType::Len)?;
                attribute.value = any_value(reader.len_delimited()?, attribute.value)?;
            }
            _ => reader.skip(wire_type)?,
        }
    }
    Ok(attribute)
}

/// Reads an `AnyValue` over `value`, the one read so far.
fn any_value<'a>(
    bytes: &'a [u8],
    mut value: AttributeValue<'a>,
) -> Result<AttributeValue<'a>, WireError> {
    let mut reader = Reader::new(bytes, "AnyValue");
    while let Some((number, wire_type)) = reader.field()? {
        value = match (number, wire_type) {
            (1, WireType::Len) => AttributeValue::Str(reader.string()?),
            (2, WireType::Varint) => AttributeValue::Bool(reader.varint()? != 0),
            (3, WireType::Varint) => AttributeValue::Int(reader.varint()? as i64),
            (4, WireType::Fixed64) => AttributeValue::Double(f64::from_bits(reader.fixed64()?)),
            // An array or a key-value list: not read.
            (5 | 6, WireType::Len) => {
                reader.len_delimited()?;
                AttributeValue::Complex
            }
            (7, WireType::Len) => AttributeValue::Bytes(reader.len_delimited()?.len()),
            (8, WireType::Varint) => AttributeValue::Strindex(reader.varint()? as i32),
            (1..=8, _) => return Err(error("field has the wrong wire type", "AnyValue")),
            // A field this version does not know: skipped, the value kept.
            _ => {
                reader.skip(wire_type)?;
                value
            }
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
