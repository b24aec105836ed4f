//! Metric export requests as recording reads them: views of every
//! resource, metric and data point, borrowed from the request and kept in
//! a few flat vectors per request, so that reading a data point allocates
//! nothing of its own.
//!
//! Two readers make a [`MetricBatch`], and recording (`ingest`) reads only
//! batches, so a request is recorded alike whichever way it came:
//!
//! - [`MetricBatch::read`] (in `wire::metrics`) reads protobuf bytes
//!   without decoding them into prost types: the OTLP receivers' path.
//! - [`MetricBatch::from_request`] views an `ExportMetricsServiceRequest`
//!   that was decoded (OTLP/JSON, or a sink that decodes with prost).
//!
//! Both give the same batch for every request prost decodes (the
//! `metrics_protobuf` fuzz target and the equivalence tests check it).
//!
//! What a batch keeps: every resource's attributes (`service.name`, and
//! all of them for the cumulative streams' identity), each metric's name,
//! unit, kind, temporality and monotonicity, and of each data point its
//! attributes, times, flags and values; for histograms the counts, bounds,
//! sum, min and max, and the exemplars' trace ids and values. What it
//! leaves out: descriptions, scopes, metadata, summary quantiles, the
//! exemplars of gauges and sums, exemplars' attributes and span ids, and
//! the contents of array, key-value-list and bytes attribute values (a
//! bytes value keeps its length).
//!
//! A message given twice is merged as prost merges it: a singular field
//! keeps its last value, repeated ones gather every element, and a
//! metric's data given as another kind replaces the earlier one.
//!
//! Invariants: every range indexes the batch's own vectors, and a point's
//! [`PointData`] is of its metric's [`DataKind`]. The accessors do not
//! trust either: a range out of bounds reads as empty.

use std::ops::Range;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets as ProstBuckets, metric::Data,
    number_data_point, Exemplar, NumberDataPoint,
};

/// A borrowed attribute value, as recording formats and compares it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttributeValue<'a> {
    /// No value (a `KeyValue` without one, or an empty `AnyValue`).
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Bytes: only their length is kept.
    Bytes(usize),
    /// An array or a key-value list: not read.
    Complex,
    /// A reference into a string table (profiles).
    Strindex(i32),
}

/// One attribute: its key and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attribute<'a> {
    pub key: &'a str,
    pub value: AttributeValue<'a>,
}

/// A number data point's value, or an exemplar's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Double(f64),
    Int(i64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Double(value) => value,
            Number::Int(value) => value as f64,
        }
    }
}

/// A metric's kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// One `ResourceMetrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceMetricsView {
    /// Whether it has a `resource` at all: one without attributes still
    /// names its cumulative streams apart from none.
    pub has_resource: bool,
    /// Its resource's attributes in [`MetricBatch::resource_attributes`].
    pub attributes: Range<usize>,
    /// Its metrics (of every scope) in [`MetricBatch::metrics`].
    pub metrics: Range<usize>,
}

/// One `Metric`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricView<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub data: Option<DataView>,
}

/// A metric's data: its kind, what applies to all its points, and the
/// points.
#[derive(Debug, Clone, PartialEq)]
pub struct DataView {
    pub kind: DataKind,
    /// `aggregation_temporality` of sums and histograms; 0 otherwise.
    pub aggregation_temporality: i32,
    /// `is_monotonic` of a sum; false otherwise.
    pub is_monotonic: bool,
    /// Its points in [`MetricBatch::points`].
    pub points: Range<usize>,
}

/// One data point of any kind.
#[derive(Debug, Clone, PartialEq)]
pub struct PointView {
    /// Its attributes in [`MetricBatch::attributes`].
    pub attributes: Range<usize>,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub flags: u32,
    pub data: PointData,
}

/// What a data point holds besides attributes, times and flags.
#[derive(Debug, Clone, PartialEq)]
pub enum PointData {
    /// A gauge's or a sum's point.
    Number(Option<Number>),
    Histogram {
        count: u64,
        sum: Option<f64>,
        /// In [`MetricBatch::counts`].
        bucket_counts: Range<usize>,
        /// In [`MetricBatch::bounds`].
        explicit_bounds: Range<usize>,
        min: Option<f64>,
        max: Option<f64>,
        /// In [`MetricBatch::exemplars`].
        exemplars: Range<usize>,
    },
    Exponential {
        count: u64,
        sum: Option<f64>,
        scale: i32,
        zero_count: u64,
        positive: Option<PositiveBuckets>,
        /// The negative buckets' counts added up (saturating): recording
        /// reads durations and values at or above zero only.
        negative_count: u64,
        /// In [`MetricBatch::exemplars`].
        exemplars: Range<usize>,
    },
    Summary {
        sum: f64,
    },
}

/// An exponential histogram's positive buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct PositiveBuckets {
    pub offset: i32,
    /// In [`MetricBatch::counts`].
    pub counts: Range<usize>,
}

/// An exemplar of a histogram point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExemplarView<'a> {
    pub trace_id: &'a [u8],
    pub value: Option<Number>,
}

/// A whole metrics request, read and checked, borrowing from its bytes or
/// from its decoded form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricBatch<'a> {
    pub resources: Vec<ResourceMetricsView>,
    pub resource_attributes: Vec<Attribute<'a>>,
    pub metrics: Vec<MetricView<'a>>,
    pub points: Vec<PointView>,
    pub attributes: Vec<Attribute<'a>>,
    /// Bucket counts of histograms and exponential histograms.
    pub counts: Vec<u64>,
    /// Explicit bounds of histograms.
    pub bounds: Vec<f64>,
    pub exemplars: Vec<ExemplarView<'a>>,
}

/// `items[range]`, or nothing when the range is not within `items`.
fn slice<'s, T>(items: &'s [T], range: &Range<usize>) -> &'s [T] {
    items.get(range.clone()).unwrap_or(&[])
}

impl<'a> MetricBatch<'a> {
    /// The attributes of a resource.
    pub fn resource_attributes(&self, resource: &ResourceMetricsView) -> &[Attribute<'a>] {
        slice(&self.resource_attributes, &resource.attributes)
    }

    /// The metrics of a resource.
    pub fn metrics_of(&self, resource: &ResourceMetricsView) -> &[MetricView<'a>] {
        slice(&self.metrics, &resource.metrics)
    }

    /// The points of a metric's data.
    pub fn points(&self, data: &DataView) -> &[PointView] {
        slice(&self.points, &data.points)
    }

    /// The attributes of a point.
    pub fn attributes(&self, point: &PointView) -> &[Attribute<'a>] {
        slice(&self.attributes, &point.attributes)
    }

    /// Counts (histogram buckets) in `range`.
    pub fn counts(&self, range: &Range<usize>) -> &[u64] {
        slice(&self.counts, range)
    }

    /// Explicit bounds in `range`.
    pub fn bounds(&self, range: &Range<usize>) -> &[f64] {
        slice(&self.bounds, range)
    }

    /// Exemplars in `range`.
    pub fn exemplars(&self, range: &Range<usize>) -> &[ExemplarView<'a>] {
        slice(&self.exemplars, range)
    }

    /// Every data point of the batch.
    pub fn n_points(&self) -> usize {
        self.points.len()
    }
}

// === Views of a decoded request ===

fn attribute(pair: &KeyValue) -> Attribute<'_> {
    use any_value::Value;
    let value = match pair.value.as_ref().and_then(|value| value.value.as_ref()) {
        None => AttributeValue::Empty,
        Some(Value::StringValue(text)) => AttributeValue::Str(text),
        Some(Value::BoolValue(flag)) => AttributeValue::Bool(*flag),
        Some(Value::IntValue(number)) => AttributeValue::Int(*number),
        Some(Value::DoubleValue(number)) => AttributeValue::Double(*number),
        Some(Value::BytesValue(bytes)) => AttributeValue::Bytes(bytes.len()),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => AttributeValue::Complex,
        Some(Value::StringValueStrindex(index)) => AttributeValue::Strindex(*index),
    };
    Attribute {
        key: &pair.key,
        value,
    }
}

fn exemplar_view(exemplar: &Exemplar) -> ExemplarView<'_> {
    ExemplarView {
        trace_id: &exemplar.trace_id,
        value: exemplar.value.map(|value| match value {
            exemplar::Value::AsDouble(value) => Number::Double(value),
            exemplar::Value::AsInt(value) => Number::Int(value),
        }),
    }
}

impl<'a> MetricBatch<'a> {
    /// The batch of a decoded request.
    pub fn from_request(request: &'a ExportMetricsServiceRequest) -> Self {
        let mut batch = MetricBatch::default();
        for resource_metrics in &request.resource_metrics {
            let attributes = batch.resource_attributes.len();
            let metrics = batch.metrics.len();
            let resource = resource_metrics.resource.as_ref();
            for pair in resource.iter().flat_map(|resource| &resource.attributes) {
                batch.resource_attributes.push(attribute(pair));
            }
            for metric in resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|scope| &scope.metrics)
            {
                let data = metric.data.as_ref().map(|data| batch.decoded_data(data));
                batch.metrics.push(MetricView {
                    name: &metric.name,
                    unit: &metric.unit,
                    data,
                });
            }
            batch.resources.push(ResourceMetricsView {
                has_resource: resource.is_some(),
                attributes: attributes..batch.resource_attributes.len(),
                metrics: metrics..batch.metrics.len(),
            });
        }
        batch
    }

    fn decoded_data(&mut self, data: &'a Data) -> DataView {
        let first = self.points.len();
        let (kind, aggregation_temporality, is_monotonic) = match data {
            Data::Gauge(gauge) => {
                self.decoded_number_points(&gauge.data_points);
                (DataKind::Gauge, 0, false)
            }
            Data::Sum(sum) => {
                self.decoded_number_points(&sum.data_points);
                (DataKind::Sum, sum.aggregation_temporality, sum.is_monotonic)
            }
            Data::Histogram(histogram) => {
                for point in &histogram.data_points {
                    let bucket_counts = self.counts.len()..{
                        self.counts.extend_from_slice(&point.bucket_counts);
                        self.counts.len()
                    };
                    let explicit_bounds = self.bounds.len()..{
                        self.bounds.extend_from_slice(&point.explicit_bounds);
                        self.bounds.len()
                    };
                    let exemplars = self.push_decoded_exemplars(&point.exemplars);
                    self.push_decoded_point(
                        &point.attributes,
                        (point.start_time_unix_nano, point.time_unix_nano),
                        point.flags,
                        PointData::Histogram {
                            count: point.count,
                            sum: point.sum,
                            bucket_counts,
                            explicit_bounds,
                            min: point.min,
                            max: point.max,
                            exemplars,
                        },
                    );
                }
                (
                    DataKind::Histogram,
                    histogram.aggregation_temporality,
                    false,
                )
            }
            Data::ExponentialHistogram(histogram) => {
                for point in &histogram.data_points {
                    let positive = point.positive.as_ref().map(|buckets| PositiveBuckets {
                        offset: buckets.offset,
                        counts: self.counts.len()..{
                            self.counts.extend_from_slice(&buckets.bucket_counts);
                            self.counts.len()
                        },
                    });
                    let negative_count =
                        point.negative.as_ref().map_or(0, |buckets: &ProstBuckets| {
                            buckets
                                .bucket_counts
                                .iter()
                                .fold(0u64, |total, n| total.saturating_add(*n))
                        });
                    let exemplars = self.push_decoded_exemplars(&point.exemplars);
                    self.push_decoded_point(
                        &point.attributes,
                        (point.start_time_unix_nano, point.time_unix_nano),
                        point.flags,
                        PointData::Exponential {
                            count: point.count,
                            sum: point.sum,
                            scale: point.scale,
                            zero_count: point.zero_count,
                            positive,
                            negative_count,
                            exemplars,
                        },
                    );
                }
                (
                    DataKind::ExponentialHistogram,
                    histogram.aggregation_temporality,
                    false,
                )
            }
            Data::Summary(summary) => {
                for point in &summary.data_points {
                    self.push_decoded_point(
                        &point.attributes,
                        (point.start_time_unix_nano, point.time_unix_nano),
                        point.flags,
                        PointData::Summary { sum: point.sum },
                    );
                }
                (DataKind::Summary, 0, false)
            }
        };
        DataView {
            kind,
            aggregation_temporality,
            is_monotonic,
            points: first..self.points.len(),
        }
    }

    fn decoded_number_points(&mut self, points: &'a [NumberDataPoint]) {
        for point in points {
            let value = point.value.map(|value| match value {
                number_data_point::Value::AsDouble(value) => Number::Double(value),
                number_data_point::Value::AsInt(value) => Number::Int(value),
            });
            self.push_decoded_point(
                &point.attributes,
                (point.start_time_unix_nano, point.time_unix_nano),
                point.flags,
                PointData::Number(value),
            );
        }
    }

    fn push_decoded_point(
        &mut self,
        attributes: &'a [KeyValue],
        (start_time_unix_nano, time_unix_nano): (u64, u64),
        flags: u32,
        data: PointData,
    ) {
        let first = self.attributes.len();
        self.attributes.extend(attributes.iter().map(attribute));
        self.points.push(PointView {
            attributes: first..self.attributes.len(),
            start_time_unix_nano,
            time_unix_nano,
            flags,
            data,
        });
    }

    fn push_decoded_exemplars(&mut self, exemplars: &'a [Exemplar]) -> Range<usize> {
        let first = self.exemplars.len();
        self.exemplars.extend(exemplars.iter().map(exemplar_view));
        first..self.exemplars.len()
    }
}

#[cfg(test)]
pub(crate) mod generate;
