//! The zero-copy metrics reader against prost: the same batch from every
//! request prost decodes (generated, merged from fragments, mutated, and
//! the merge rules written out), refused where prost refuses what it
//! reads, and measured at least at what it allocates.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum,
};
use proptest::prelude::*;
use prost::encoding::{encode_key, encode_varint, WireType as Wire};
use prost::Message;

use crate::receiver::decode::test_support::{self, metric_batch_heap, BOMB_BYTES};
use crate::receiver::decode::{Limits, OverLimit};
use crate::receiver::metric_batch::generate::{field, request_bytes, same};
use crate::receiver::metric_batch::{DataKind, MetricBatch, PointData};
use crate::receiver::wire::measure_metric_views;

/// Reads `bytes` both ways: when prost decodes them, the reader must read
/// the batch prost's request gives. Returns the reader's result.
fn check(bytes: &[u8]) -> Result<MetricBatch<'_>, String> {
    let ours = MetricBatch::read(bytes).map_err(|error| error.to_string());
    if let Ok(request) = ExportMetricsServiceRequest::decode(bytes) {
        let ours = ours
            .as_ref()
            .expect("the reader accepts what prost decodes");
        same(ours, &MetricBatch::from_request(&request)).unwrap();
        let measured = measure_metric_views(bytes, Limits::default()).expect("within");
        assert!(measured.items >= ours.points.len());
        assert!(measured.decoded_bytes >= metric_batch_heap(ours));
    }
    ours
}

/// A request of one resource and scope holding one metric's `bytes`.
fn one_metric(metric: &[u8]) -> Vec<u8> {
    let (mut scope, mut resource, mut request) = (Vec::new(), Vec::new(), Vec::new());
    field(2, metric, &mut scope);
    field(2, &scope, &mut resource);
    field(1, &resource, &mut request);
    request
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn point(time: u64, value: i64, labels: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: labels.iter().map(|(key, value)| text(key, value)).collect(),
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

fn sum(points: Vec<NumberDataPoint>, temporality: i32) -> Metric {
    Metric {
        name: "calls".into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

#[test]
fn a_metric_given_twice_is_merged_as_prost_merges_it() {
    // The same kind: points gathered, a temporality not given again kept.
    let mut metric = sum(vec![point(1, 1, &[("a", "x")])], 2).encode_to_vec();
    metric.extend(sum(vec![point(2, 2, &[("b", "y")])], 0).encode_to_vec());
    let bytes = one_metric(&metric);
    let batch = check(&bytes).unwrap();
    let data = batch.metrics[0].data.as_ref().unwrap();
    assert_eq!(data.kind, DataKind::Sum);
    assert_eq!(data.aggregation_temporality, 2);
    assert_eq!(batch.points(data).len(), 2);

    // Another kind: replaces the data, its points and their attributes.
    let gauge = Metric {
        name: "calls".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![point(3, 3, &[("c", "z")])],
        })),
        ..Default::default()
    };
    metric.extend(gauge.encode_to_vec());
    let bytes = one_metric(&metric);
    let batch = check(&bytes).unwrap();
    let data = batch.metrics[0].data.as_ref().unwrap();
    assert_eq!(data.kind, DataKind::Gauge);
    assert_eq!(batch.points.len(), 1);
    assert_eq!(
        batch.attributes.len(),
        1,
        "dropped points' attributes go too"
    );
    assert_eq!(batch.attributes[0].key, "c");
}

#[test]
fn an_attribute_value_given_twice_is_merged() {
    let string = AnyValue {
        value: Some(Value::StringValue("a".into())),
    };
    let int = AnyValue {
        value: Some(Value::IntValue(3)),
    };
    let read = |values: &[&AnyValue]| {
        let mut pair = Vec::new();
        field(1, b"k", &mut pair);
        for value in values {
            field(2, &value.encode_to_vec(), &mut pair);
        }
        let mut point = Vec::new();
        field(7, &pair, &mut point);
        let mut gauge = Vec::new();
        field(1, &point, &mut gauge);
        let mut metric = Vec::new();
        field(1, b"m", &mut metric);
        field(5, &gauge, &mut metric);
        let bytes = one_metric(&metric);
        let batch = check(&bytes).unwrap();
        format!("{:?}", batch.attributes[0].value)
    };
    let empty = AnyValue::default();
    assert_eq!(read(&[&string, &empty]), "Str(\"a\")");
    assert_eq!(read(&[&string, &int]), "Int(3)");
    assert_eq!(read(&[&empty]), "Empty");
    assert_eq!(read(&[]), "Empty");
}

/// A histogram's counts may come unpacked, and an exponential histogram's
/// positive buckets in several messages: all of them are read.
#[test]
fn unpacked_and_repeated_buckets_are_all_read() {
    let mut histogram_point = Vec::new();
    for count in [4u64, 5] {
        encode_key(6, Wire::SixtyFourBit, &mut histogram_point);
        histogram_point.extend(count.to_le_bytes());
    }
    let mut packed = Vec::new();
    packed.extend(6u64.to_le_bytes());
    field(6, &packed, &mut histogram_point);
    field(
        7,
        &[1.0f64.to_le_bytes(), 2.0f64.to_le_bytes()].concat(),
        &mut histogram_point,
    );
    let mut data = Vec::new();
    field(1, &histogram_point, &mut data);
    let mut metric = Vec::new();
    field(9, &data, &mut metric);
    let bytes = one_metric(&metric);
    let batch = check(&bytes).unwrap();
    let PointData::Histogram {
        bucket_counts,
        explicit_bounds,
        ..
    } = &batch.points[0].data
    else {
        panic!("a histogram point");
    };
    assert_eq!(batch.counts(bucket_counts), [4, 5, 6]);
    assert_eq!(batch.bounds(explicit_bounds), [1.0, 2.0]);

    let first = Buckets {
        offset: 3,
        bucket_counts: vec![1, 2],
    };
    let mut second = Vec::new();
    encode_key(2, Wire::Varint, &mut second);
    encode_varint(7, &mut second);
    let negative = Buckets {
        offset: 0,
        bucket_counts: vec![u64::MAX, 5],
    };
    let mut exponential_point = Vec::new();
    field(8, &first.encode_to_vec(), &mut exponential_point);
    field(9, &negative.encode_to_vec(), &mut exponential_point);
    field(8, &second, &mut exponential_point);
    let mut data = Vec::new();
    field(1, &exponential_point, &mut data);
    let mut metric = Vec::new();
    field(10, &data, &mut metric);
    let bytes = one_metric(&metric);
    let batch = check(&bytes).unwrap();
    let PointData::Exponential {
        positive,
        negative_count,
        ..
    } = &batch.points[0].data
    else {
        panic!("an exponential histogram point");
    };
    let positive = positive.as_ref().unwrap();
    assert_eq!(
        positive.offset, 3,
        "an occurrence without an offset keeps it"
    );
    assert_eq!(batch.counts(&positive.counts), [1, 2, 7]);
    assert_eq!(*negative_count, u64::MAX, "saturates");
}

/// Framing prost refuses in fields recording reads, the reader refuses.
#[test]
fn what_prost_refuses_in_what_is_read_is_refused() {
    let valid = one_metric(&sum(vec![point(1, 1, &[("a", "x")])], 1).encode_to_vec());
    assert!(check(&valid).is_ok());
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("truncated", valid[..valid.len() - 1].to_vec()));
    let mut bad_name = Vec::new();
    field(1, &[0xff, 0xfe], &mut bad_name);
    cases.push(("name not UTF-8", one_metric(&bad_name)));
    let mut bad_key = sum(vec![point(1, 1, &[("é", "x")])], 1).encode_to_vec();
    let at = bad_key
        .windows(2)
        .position(|pair| pair == "é".as_bytes())
        .unwrap();
    bad_key[at] = 0xff;
    cases.push(("key not UTF-8", one_metric(&bad_key)));
    let mut bad_time = Vec::new();
    encode_key(3, Wire::Varint, &mut bad_time);
    encode_varint(5, &mut bad_time);
    let mut data = Vec::new();
    field(1, &bad_time, &mut data);
    let mut metric = Vec::new();
    field(5, &data, &mut metric);
    cases.push(("time as a varint", one_metric(&metric)));
    let mut partial = Vec::new();
    field(6, &[0; 5], &mut partial);
    let mut data = Vec::new();
    field(1, &partial, &mut data);
    let mut metric = Vec::new();
    field(9, &data, &mut metric);
    cases.push(("packed counts of 5 bytes", one_metric(&metric)));
    for (what, bytes) in cases {
        assert!(
            ExportMetricsServiceRequest::decode(&bytes[..]).is_err(),
            "{what}: prost"
        );
        assert!(MetricBatch::read(&bytes).is_err(), "{what}: the reader");
    }

    // What the reader leaves out it does not check: a description that is
    // not UTF-8 is prost's error only.
    let mut metric = sum(vec![point(1, 1, &[])], 1).encode_to_vec();
    field(2, &[0xff], &mut metric);
    let bytes = one_metric(&metric);
    assert!(ExportMetricsServiceRequest::decode(&bytes[..]).is_err());
    assert_eq!(check(&bytes).unwrap().points.len(), 1);
}

#[test]
fn a_resource_without_attributes_is_not_no_resource() {
    let mut resource_metrics = Vec::new();
    field(1, &[], &mut resource_metrics);
    let mut request = Vec::new();
    field(1, &resource_metrics, &mut request);
    field(1, &[], &mut request);
    let batch = check(&request).unwrap();
    assert!(batch.resources[0].has_resource);
    assert!(!batch.resources[1].has_resource);
}

#[test]
fn exemplars_are_read_on_histograms_only() {
    let exemplar = opentelemetry_proto::tonic::metrics::v1::Exemplar {
        trace_id: vec![7; 16],
        value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(12.5)),
        ..Default::default()
    };
    let metric = Metric {
        name: "duration".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                exemplars: vec![exemplar.clone()],
                ..Default::default()
            }],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "duration".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                exemplars: vec![exemplar.clone()],
                ..Default::default()
            }],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    let mut gauge_point = point(1, 1, &[]);
    gauge_point.exemplars.push(exemplar);
    let gauge = Metric {
        name: "g".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![gauge_point],
        })),
        ..Default::default()
    };
    let mut scope = Vec::new();
    for metric in [metric, histogram, gauge] {
        field(2, &metric.encode_to_vec(), &mut scope);
    }
    let mut resource = Vec::new();
    field(2, &scope, &mut resource);
    let mut request = Vec::new();
    field(1, &resource, &mut request);
    let batch = check(&request).unwrap();
    assert_eq!(batch.exemplars.len(), 2);
    assert_eq!(batch.exemplars[0].trace_id, [7; 16]);
    assert_eq!(batch.exemplars[1].trace_id, [7; 16]);
}

#[test]
fn bombs_are_refused_before_reading() {
    let n = test_support::protobuf_items(BOMB_BYTES);
    let bomb = test_support::protobuf(crate::receiver::decode::schema::Message::ExportMetrics, n);
    assert_eq!(
        measure_metric_views(&bomb, Limits::default()),
        Err(OverLimit::TooManyItems {
            items: "metric data points",
            limit: 100_000,
        })
    );
    // No item at all: a hundred thousand empty resources.
    let empty = [0x0a, 0x00].repeat(100_000);
    let limits = Limits {
        max_items: 10,
        max_decoded_bytes: 1 << 20,
    };
    assert!(matches!(
        measure_metric_views(&empty, limits),
        Err(OverLimit::TooLarge { .. })
    ));
    // Within the limits, the estimate covers what the reader holds.
    let fits = test_support::protobuf(
        crate::receiver::decode::schema::Message::ExportMetrics,
        1000,
    );
    let measured = measure_metric_views(&fits, Limits::default()).unwrap();
    let batch = check(&fits).unwrap();
    assert_eq!(measured.items, 1000);
    assert!(measured.decoded_bytes >= metric_batch_heap(&batch));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Generated requests, some metrics in fragments prost merges: the
    /// reader reads prost's batch, within what the walk estimated.
    #[test]
    fn the_reader_reads_what_prost_decodes(bytes in request_bytes()) {
        prop_assert!(ExportMetricsServiceRequest::decode(&bytes[..]).is_ok());
        check(&bytes).unwrap();
    }

    /// One byte changed anywhere: never a panic, and the same batch
    /// whenever prost still decodes the request.
    #[test]
    fn single_byte_mutations(bytes in request_bytes(), position in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = bytes;
        if !bytes.is_empty() {
            let position = position % bytes.len();
            bytes[position] = byte;
        }
        let _ = check(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = check(&bytes);
        let _ = measure_metric_views(&bytes, Limits::default());
    }
}
