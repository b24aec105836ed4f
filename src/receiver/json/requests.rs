//! The scanning readers for OTLP/JSON metric and log requests.
//!
//! Metric points and log records are recorded from the prost types (the
//! protobuf path decodes into them too), so these readers build those types
//! directly from the scanned line, with no `serde_json::Value` in between
//! and only the members recording reads:
//!
//! - metrics: resource attributes; each metric's name, description, unit
//!   and data (gauge, sum, histogram, exponential histogram, summary) with
//!   every point field except exemplars;
//! - logs: each record's times, severity and body, and of the resource's
//!   and the record's attributes those log recording reads
//!   ([`log_attribute_read`]: the service and the Kubernetes event keys).
//!   Log lines carry a resource with a dozen or more attributes for every
//!   few records; building them all was most of the cost of reading them.
//!
//! Scopes, schema URLs, dropped counts, exemplars, metric metadata and log
//! record ids, flags and event names are skipped (checked, not kept).
//! Doubles follow the general decoder's rules: a non-finite value written as
//! a string (`"NaN"`, `"Infinity"`) reads as absent, except in quantiles and
//! bucket bounds, which keep it.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, AggregationTemporality, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::scan::{Scan, Scanner, Unreadable};
use super::traces::{ANY_VALUE, KEY_VALUE, RESOURCE};
use crate::model::log_attribute_read;

// Members in the order exporters write them (the protobuf declaration
// order), for `Scanner::object_in_order`.
const RESOURCE_METRICS: &[&str] = &["resource", "scopeMetrics", "schemaUrl"];
const SCOPE_METRICS: &[&str] = &["scope", "metrics", "schemaUrl"];
const RESOURCE_LOGS: &[&str] = &["resource", "scopeLogs", "schemaUrl"];
const SCOPE_LOGS: &[&str] = &["scope", "logRecords", "schemaUrl"];
const METRIC: &[&str] = &[
    "name",
    "description",
    "unit",
    "metadata",
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "summary",
];
const NUMBER_POINT: &[&str] = &[
    "attributes",
    "startTimeUnixNano",
    "timeUnixNano",
    "exemplars",
    "flags",
    "asDouble",
    "asInt",
];
const LOG_RECORD: &[&str] = &[
    "timeUnixNano",
    "observedTimeUnixNano",
    "severityNumber",
    "severityText",
    "body",
    "attributes",
    "droppedAttributesCount",
    "flags",
    "traceId",
    "spanId",
    "eventName",
];

/// Reads a JSON `ExportMetricsServiceRequest`; `None` when this reader
/// cannot (the general decoder then reads it or explains why not).
pub fn read_metrics(line: &str) -> Option<ExportMetricsServiceRequest> {
    let mut request = ExportMetricsServiceRequest::default();
    let mut seen = false;
    top_level(line, "resourceMetrics", &mut seen, |scanner| {
        let mut resource_metrics = ResourceMetrics::default();
        scanner.object_in_order(RESOURCE_METRICS, |scanner, member| match member {
            "resource" => {
                resource_metrics.resource = resource(scanner, all)?;
                Ok(())
            }
            "scopeMetrics" => scanner.array(|scanner| {
                let mut scope = ScopeMetrics::default();
                scanner.object_in_order(SCOPE_METRICS, |scanner, member| match member {
                    "metrics" => scanner.array(|scanner| {
                        scope.metrics.push(metric(scanner)?);
                        Ok(())
                    }),
                    _ => scanner.skip(),
                })?;
                resource_metrics.scope_metrics.push(scope);
                Ok(())
            }),
            _ => scanner.skip(),
        })?;
        request.resource_metrics.push(resource_metrics);
        Ok(())
    })?;
    seen.then_some(request)
}

/// Reads a JSON `ExportLogsServiceRequest`; `None` when this reader cannot.
pub fn read_logs(line: &str) -> Option<ExportLogsServiceRequest> {
    let mut request = ExportLogsServiceRequest::default();
    let mut seen = false;
    top_level(line, "resourceLogs", &mut seen, |scanner| {
        let mut resource_logs = ResourceLogs::default();
        scanner.object_in_order(RESOURCE_LOGS, |scanner, member| match member {
            "resource" => {
                resource_logs.resource = resource(scanner, log_attribute_read)?;
                Ok(())
            }
            "scopeLogs" => scanner.array(|scanner| {
                let mut scope = ScopeLogs::default();
                scanner.object_in_order(SCOPE_LOGS, |scanner, member| match member {
                    "logRecords" => scanner.array(|scanner| {
                        scope.log_records.push(log_record(scanner)?);
                        Ok(())
                    }),
                    _ => scanner.skip(),
                })?;
                resource_logs.scope_logs.push(scope);
                Ok(())
            }),
            _ => scanner.skip(),
        })?;
        request.resource_logs.push(resource_logs);
        Ok(())
    })?;
    seen.then_some(request)
}

/// Reads the top-level object, handing each item of its `list` member to
/// `item`; `seen` tells whether the member was there.
fn top_level<'a>(
    line: &'a str,
    list: &str,
    seen: &mut bool,
    mut item: impl FnMut(&mut Scanner<'a>) -> Scan<()>,
) -> Option<()> {
    let mut scanner = Scanner::new(line);
    scanner
        .object(|scanner, member| {
            if member == list {
                *seen = true;
                scanner.array(&mut item)
            } else {
                scanner.skip()
            }
        })
        .and_then(|()| scanner.end())
        .ok()
}

/// Every attribute key.
fn all(_: &str) -> bool {
    true
}

/// A resource, with the attributes whose key `keep` accepts.
fn resource(scanner: &mut Scanner<'_>, keep: fn(&str) -> bool) -> Scan<Option<Resource>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut resource = Resource::default();
    scanner.object_in_order(RESOURCE, |scanner, member| match member {
        "attributes" => attributes_kept(scanner, &mut resource.attributes, keep),
        _ => scanner.skip(),
    })?;
    Ok(Some(resource))
}

fn attributes(scanner: &mut Scanner<'_>, into: &mut Vec<KeyValue>) -> Scan<()> {
    attributes_kept(scanner, into, all)
}

/// The attributes whose key `keep` accepts (the others are checked and
/// skipped, their values not built).
fn attributes_kept(
    scanner: &mut Scanner<'_>,
    into: &mut Vec<KeyValue>,
    keep: fn(&str) -> bool,
) -> Scan<()> {
    scanner.array(|scanner| {
        let mut attribute = KeyValue::default();
        let (key, kept) = match scanner.compact_key() {
            Some(key) => {
                let kept = keep(key);
                if kept {
                    attribute.value = any_value(scanner)?;
                } else {
                    scanner.skip()?;
                }
                // A second key or value: the general decoder decides.
                scanner.close_object(|scanner, member| {
                    match member {
                        "key" | "value" => return Err(Unreadable),
                        "keyStrindex" => attribute.key_strindex = scanner.i32()?.unwrap_or(0),
                        _ => scanner.skip()?,
                    }
                    Ok(())
                })?;
                (key, kept)
            }
            None => {
                let mut key = None;
                scanner.object_in_order(KEY_VALUE, |scanner, member| {
                    match member {
                        "key" => key = Some(scanner.str()?.unwrap_or("")),
                        // A value written before its key is built: whether
                        // it is kept is not known yet.
                        "value" if key.is_some_and(|key| !keep(key)) => scanner.skip()?,
                        "value" => attribute.value = any_value(scanner)?,
                        "keyStrindex" => attribute.key_strindex = scanner.i32()?.unwrap_or(0),
                        _ => scanner.skip()?,
                    }
                    Ok(())
                })?;
                let key = key.unwrap_or("");
                (key, keep(key))
            }
        };
        if kept {
            attribute.key = key.to_owned();
            into.push(attribute);
        }
        Ok(())
    })
}

/// An `AnyValue` (`null` is absent). Bytes and dictionary references are
/// left to the general decoder.
fn any_value(scanner: &mut Scanner<'_>) -> Scan<Option<AnyValue>> {
    if let Some(text) = scanner.compact_string_value() {
        return Ok(Some(AnyValue {
            value: Some(Value::StringValue(text.to_owned())),
        }));
    }
    if scanner.null()? {
        return Ok(None);
    }
    let mut value = None;
    scanner.object_in_order(ANY_VALUE, |scanner, member| {
        let read = match member {
            "stringValue" => scanner
                .str()?
                .map(|text| Value::StringValue(text.to_owned())),
            "boolValue" => scanner.bool()?.map(Value::BoolValue),
            "intValue" => scanner.i64()?.map(Value::IntValue),
            "doubleValue" => finite_or_absent(scanner)?.map(Value::DoubleValue),
            "arrayValue" => {
                let mut values = Vec::new();
                scanner.object(|scanner, member| match member {
                    "values" => scanner.array(|scanner| {
                        values.push(any_value(scanner)?.unwrap_or_default());
                        Ok(())
                    }),
                    _ => scanner.skip(),
                })?;
                Some(Value::ArrayValue(ArrayValue { values }))
            }
            "kvlistValue" => {
                let mut values = Vec::new();
                scanner.object(|scanner, member| match member {
                    "values" => attributes(scanner, &mut values),
                    _ => scanner.skip(),
                })?;
                Some(Value::KvlistValue(KeyValueList { values }))
            }
            "bytesValue" | "stringValueStrindex" => return Err(Unreadable),
            _ => {
                scanner.skip()?;
                return Ok(());
            }
        };
        if read.is_some() {
            value = read;
        }
        Ok(())
    })?;
    Ok(Some(AnyValue { value }))
}

/// A double as the general decoder reads fields it normalizes: a
/// non-finite value (only writable as a string) is absent.
fn finite_or_absent(scanner: &mut Scanner<'_>) -> Scan<Option<f64>> {
    Ok(scanner.f64()?.filter(|value| value.is_finite()))
}

fn temporality(name: &str) -> Option<i32> {
    AggregationTemporality::from_str_name(name).map(|value| value as i32)
}

fn metric(scanner: &mut Scanner<'_>) -> Scan<Metric> {
    let mut metric = Metric::default();
    scanner.object_in_order(METRIC, |scanner, member| {
        let data = match member {
            "name" => {
                metric.name = scanner.str()?.unwrap_or("").to_owned();
                return Ok(());
            }
            "description" => {
                metric.description = scanner.str()?.unwrap_or("").to_owned();
                return Ok(());
            }
            "unit" => {
                metric.unit = scanner.str()?.unwrap_or("").to_owned();
                return Ok(());
            }
            "gauge" => gauge(scanner)?,
            "sum" => sum(scanner)?,
            "histogram" => histogram(scanner)?,
            "exponentialHistogram" => exponential_histogram(scanner)?,
            "summary" => summary(scanner)?,
            _ => return scanner.skip(),
        };
        // Two data members in one metric: left to the general decoder.
        if data.is_some() && metric.data.is_some() {
            return Err(Unreadable);
        }
        if data.is_some() {
            metric.data = data;
        }
        Ok(())
    })?;
    Ok(metric)
}

fn gauge(scanner: &mut Scanner<'_>) -> Scan<Option<Data>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut gauge = Gauge::default();
    scanner.object(|scanner, member| match member {
        "dataPoints" => number_points(scanner, &mut gauge.data_points),
        _ => scanner.skip(),
    })?;
    Ok(Some(Data::Gauge(gauge)))
}

fn sum(scanner: &mut Scanner<'_>) -> Scan<Option<Data>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut sum = Sum::default();
    scanner.object(|scanner, member| {
        match member {
            "dataPoints" => number_points(scanner, &mut sum.data_points)?,
            "aggregationTemporality" => {
                sum.aggregation_temporality = scanner.enumeration(temporality)?.unwrap_or(0)
            }
            "isMonotonic" => sum.is_monotonic = scanner.bool()?.unwrap_or(false),
            _ => scanner.skip()?,
        }
        Ok(())
    })?;
    Ok(Some(Data::Sum(sum)))
}

fn number_points(scanner: &mut Scanner<'_>, into: &mut Vec<NumberDataPoint>) -> Scan<()> {
    scanner.array(|scanner| {
        let mut point = NumberDataPoint::default();
        scanner.object_in_order(NUMBER_POINT, |scanner, member| {
            match member {
                "attributes" => attributes(scanner, &mut point.attributes)?,
                "startTimeUnixNano" => point.start_time_unix_nano = scanner.u64()?.unwrap_or(0),
                "timeUnixNano" => point.time_unix_nano = scanner.u64()?.unwrap_or(0),
                "flags" => point.flags = scanner.u32()?.unwrap_or(0),
                "asDouble" => {
                    if let Some(value) = finite_or_absent(scanner)? {
                        point.value = Some(number_data_point::Value::AsDouble(value));
                    }
                }
                "asInt" => {
                    if let Some(value) = scanner.i64()? {
                        point.value = Some(number_data_point::Value::AsInt(value));
                    }
                }
                _ => scanner.skip()?,
            }
            Ok(())
        })?;
        into.push(point);
        Ok(())
    })
}

fn u64_list(scanner: &mut Scanner<'_>, into: &mut Vec<u64>) -> Scan<()> {
    scanner.array(|scanner| {
        into.push(scanner.u64()?.ok_or(Unreadable)?);
        Ok(())
    })
}

fn histogram(scanner: &mut Scanner<'_>) -> Scan<Option<Data>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut histogram = Histogram::default();
    scanner.object(|scanner, member| {
        match member {
            "aggregationTemporality" => {
                histogram.aggregation_temporality = scanner.enumeration(temporality)?.unwrap_or(0)
            }
            "dataPoints" => scanner.array(|scanner| {
                let mut point = HistogramDataPoint::default();
                scanner.object(|scanner, member| {
                    match member {
                        "attributes" => attributes(scanner, &mut point.attributes)?,
                        "startTimeUnixNano" => {
                            point.start_time_unix_nano = scanner.u64()?.unwrap_or(0)
                        }
                        "timeUnixNano" => point.time_unix_nano = scanner.u64()?.unwrap_or(0),
                        "count" => point.count = scanner.u64()?.unwrap_or(0),
                        "sum" => point.sum = finite_or_absent(scanner)?,
                        "bucketCounts" => u64_list(scanner, &mut point.bucket_counts)?,
                        "explicitBounds" => scanner.array(|scanner| {
                            point
                                .explicit_bounds
                                .push(scanner.f64()?.ok_or(Unreadable)?);
                            Ok(())
                        })?,
                        "flags" => point.flags = scanner.u32()?.unwrap_or(0),
                        "min" => point.min = finite_or_absent(scanner)?,
                        "max" => point.max = finite_or_absent(scanner)?,
                        _ => scanner.skip()?,
                    }
                    Ok(())
                })?;
                histogram.data_points.push(point);
                Ok(())
            })?,
            _ => scanner.skip()?,
        }
        Ok(())
    })?;
    Ok(Some(Data::Histogram(histogram)))
}

fn buckets(scanner: &mut Scanner<'_>) -> Scan<Option<Buckets>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut buckets = Buckets::default();
    scanner.object(|scanner, member| {
        match member {
            "offset" => buckets.offset = scanner.i32()?.unwrap_or(0),
            "bucketCounts" => u64_list(scanner, &mut buckets.bucket_counts)?,
            _ => scanner.skip()?,
        }
        Ok(())
    })?;
    Ok(Some(buckets))
}

fn exponential_histogram(scanner: &mut Scanner<'_>) -> Scan<Option<Data>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut histogram = ExponentialHistogram::default();
    scanner.object(|scanner, member| {
        match member {
            "aggregationTemporality" => {
                histogram.aggregation_temporality = scanner.enumeration(temporality)?.unwrap_or(0)
            }
            "dataPoints" => scanner.array(|scanner| {
                let mut point = ExponentialHistogramDataPoint::default();
                scanner.object(|scanner, member| {
                    match member {
                        "attributes" => attributes(scanner, &mut point.attributes)?,
                        "startTimeUnixNano" => {
                            point.start_time_unix_nano = scanner.u64()?.unwrap_or(0)
                        }
                        "timeUnixNano" => point.time_unix_nano = scanner.u64()?.unwrap_or(0),
                        "count" => point.count = scanner.u64()?.unwrap_or(0),
                        "sum" => point.sum = finite_or_absent(scanner)?,
                        "scale" => point.scale = scanner.i32()?.unwrap_or(0),
                        "zeroCount" => point.zero_count = scanner.u64()?.unwrap_or(0),
                        "positive" => point.positive = buckets(scanner)?,
                        "negative" => point.negative = buckets(scanner)?,
                        "flags" => point.flags = scanner.u32()?.unwrap_or(0),
                        "min" => point.min = finite_or_absent(scanner)?,
                        "max" => point.max = finite_or_absent(scanner)?,
                        "zeroThreshold" => {
                            point.zero_threshold = finite_or_absent(scanner)?.unwrap_or(0.0)
                        }
                        _ => scanner.skip()?,
                    }
                    Ok(())
                })?;
                histogram.data_points.push(point);
                Ok(())
            })?,
            _ => scanner.skip()?,
        }
        Ok(())
    })?;
    Ok(Some(Data::ExponentialHistogram(histogram)))
}

fn summary(scanner: &mut Scanner<'_>) -> Scan<Option<Data>> {
    if scanner.null()? {
        return Ok(None);
    }
    let mut summary = Summary::default();
    scanner.object(|scanner, member| match member {
        "dataPoints" => scanner.array(|scanner| {
            let mut point = SummaryDataPoint::default();
            scanner.object(|scanner, member| {
                match member {
                    "attributes" => attributes(scanner, &mut point.attributes)?,
                    "startTimeUnixNano" => point.start_time_unix_nano = scanner.u64()?.unwrap_or(0),
                    "timeUnixNano" => point.time_unix_nano = scanner.u64()?.unwrap_or(0),
                    "count" => point.count = scanner.u64()?.unwrap_or(0),
                    "sum" => point.sum = finite_or_absent(scanner)?.unwrap_or(0.0),
                    "flags" => point.flags = scanner.u32()?.unwrap_or(0),
                    "quantileValues" => scanner.array(|scanner| {
                        let mut quantile = ValueAtQuantile::default();
                        scanner.object(|scanner, member| {
                            match member {
                                "quantile" => quantile.quantile = scanner.f64()?.unwrap_or(0.0),
                                "value" => quantile.value = scanner.f64()?.unwrap_or(0.0),
                                _ => scanner.skip()?,
                            }
                            Ok(())
                        })?;
                        point.quantile_values.push(quantile);
                        Ok(())
                    })?,
                    _ => scanner.skip()?,
                }
                Ok(())
            })?;
            summary.data_points.push(point);
            Ok(())
        }),
        _ => scanner.skip(),
    })?;
    Ok(Some(Data::Summary(summary)))
}

fn severity(name: &str) -> Option<i32> {
    SeverityNumber::from_str_name(name).map(|value| value as i32)
}

fn log_record(scanner: &mut Scanner<'_>) -> Scan<LogRecord> {
    let mut record = LogRecord::default();
    scanner.object_in_order(LOG_RECORD, |scanner, member| {
        match member {
            "timeUnixNano" => record.time_unix_nano = scanner.u64()?.unwrap_or(0),
            "observedTimeUnixNano" => record.observed_time_unix_nano = scanner.u64()?.unwrap_or(0),
            "severityNumber" => {
                record.severity_number = scanner.enumeration(severity)?.unwrap_or(0)
            }
            "severityText" => record.severity_text = scanner.str()?.unwrap_or("").to_owned(),
            "body" => record.body = any_value(scanner)?,
            "attributes" => attributes_kept(scanner, &mut record.attributes, log_attribute_read)?,
            _ => scanner.skip()?,
        }
        Ok(())
    })?;
    Ok(record)
}
