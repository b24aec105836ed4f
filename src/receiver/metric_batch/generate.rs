//! For tests: metrics requests of every shape recording reads, as
//! proptest strategies, and their protobuf bytes with metrics given in
//! fragments that prost merges (a field given twice, a data kind replaced
//! by another), so the zero-copy reader is compared with prost on more
//! than the canonical encoding.

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point, Exemplar,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::MetricBatch;

/// Around 2023-11-14, ten-second windows: the times of generated points.
pub(crate) const NOW: u64 = 1_700_000_000_000_000_000;

/// Keys recording reads, and one it does not.
const KEYS: &[&str] = &[
    "service.name",
    "span.name",
    "span.kind",
    "status.code",
    "peer.service",
    "http.route",
    "triage.series",
    "triage.key",
    "triage.value",
    "triage.outcome",
    "triage.count",
    "client",
    "server",
    "response_code",
    "reporter",
    "source_canonical_service",
    "destination_canonical_service",
    "other",
];

/// String values recording compares against, and plain names.
const TEXTS: &[&str] = &[
    "",
    "checkout",
    "payment",
    "GET /cart",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "STATUS_CODE_ERROR",
    "STATUS_CODE_UNSET",
    "own",
    "bad",
    "all",
    "calls",
    "service.version",
    "503",
    "destination",
    "é",
];

/// Metric names: every family recording recognises, and others.
const NAMES: &[&str] = &[
    "traces.span.metrics.calls",
    "traces.span.metrics.duration",
    "calls",
    "duration",
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_client_seconds",
    "istio_requests_total",
    "istio_request_duration_milliseconds",
    "request_total",
    "response_latency_ms",
    "triage.summary.entry_spans",
    "triage.summary.edge_calls",
    "queue.depth",
    "",
];

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(TEXTS).prop_map(str::to_string)
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -5.0f64..500.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-0.0),
    ]
}

fn any_value() -> impl Strategy<Value = Option<AnyValue>> {
    let value = prop_oneof![
        6 => text().prop_map(Value::StringValue),
        1 => any::<bool>().prop_map(Value::BoolValue),
        2 => (-600i64..600).prop_map(Value::IntValue),
        1 => double().prop_map(Value::DoubleValue),
        1 => vec(any::<u8>(), 0..4).prop_map(Value::BytesValue),
        1 => Just(Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(Value::IntValue(1)),
            }],
        })),
        1 => Just(Value::KvlistValue(KeyValueList::default())),
        1 => (0i32..9).prop_map(Value::StringValueStrindex),
    ];
    prop_oneof![
        8 => value.prop_map(|value| Some(AnyValue { value: Some(value) })),
        1 => Just(Some(AnyValue { value: None })),
        1 => Just(None),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (prop::sample::select(KEYS), any_value()).prop_map(|(key, value)| KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
        0..7,
    )
}

/// A point's start and end: within a few windows before [`NOW`], or none.
fn times() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        4 => (0u64..30, 1u64..12).prop_map(|(start, length)| {
            let start = NOW - 60_000_000_000 + start * 1_000_000_000;
            (start, start + length * 1_000_000_000)
        }),
        1 => Just((0, 0)),
    ]
}

fn flags() -> impl Strategy<Value = u32> {
    prop_oneof![8 => Just(0u32), 1 => Just(1u32), 1 => Just(2u32)]
}

fn exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    let trace_id = prop_oneof![
        3 => any::<[u8; 16]>().prop_map(|id| id.to_vec()),
        1 => Just(vec![0; 16]),
        1 => vec(any::<u8>(), 0..4),
    ];
    let value = prop_oneof![
        Just(None),
        double().prop_map(|value| Some(exemplar::Value::AsDouble(value))),
        (0i64..100).prop_map(|value| Some(exemplar::Value::AsInt(value))),
    ];
    vec(
        (trace_id, value).prop_map(|(trace_id, value)| Exemplar {
            trace_id,
            value,
            span_id: vec![1; 8],
            ..Default::default()
        }),
        0..3,
    )
}

fn number_points() -> impl Strategy<Value = Vec<NumberDataPoint>> {
    let value = prop_oneof![
        Just(None),
        (0i64..100).prop_map(|value| Some(number_data_point::Value::AsInt(value))),
        double().prop_map(|value| Some(number_data_point::Value::AsDouble(value))),
    ];
    vec(
        (attributes(), times(), flags(), value, exemplars()).prop_map(
            |(attributes, (start, time), flags, value, exemplars)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                flags,
                value,
                exemplars,
            },
        ),
        0..4,
    )
}

fn histogram_points() -> impl Strategy<Value = Vec<HistogramDataPoint>> {
    let buckets = (vec(0.5f64..200.0, 0..5), any::<bool>()).prop_flat_map(|(mut bounds, off)| {
        bounds.sort_by(f64::total_cmp);
        let n = bounds.len() + if off { 0 } else { 1 };
        (Just(bounds), vec(0u64..50, n))
    });
    let extremes = (
        prop::option::of(double()),
        prop::option::of(double()),
        prop::option::of(double()),
    );
    vec(
        (
            attributes(),
            times(),
            flags(),
            buckets,
            extremes,
            exemplars(),
        )
            .prop_map(
                |(
                    attributes,
                    (start, time),
                    flags,
                    (bounds, counts),
                    (sum, min, max),
                    exemplars,
                )| {
                    HistogramDataPoint {
                        attributes,
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        count: counts.iter().sum(),
                        sum,
                        bucket_counts: counts,
                        explicit_bounds: bounds,
                        exemplars,
                        flags,
                        min,
                        max,
                    }
                },
            ),
        0..3,
    )
}

fn buckets() -> impl Strategy<Value = Option<Buckets>> {
    prop::option::of(
        (-5i32..40, vec(prop_oneof![0u64..9, Just(u64::MAX)], 0..12)).prop_map(
            |(offset, bucket_counts)| Buckets {
                offset,
                bucket_counts,
            },
        ),
    )
}

fn exponential_points() -> impl Strategy<Value = Vec<ExponentialHistogramDataPoint>> {
    vec(
        (
            attributes(),
            times(),
            flags(),
            (-3i32..8, 0u64..9, prop::option::of(double())),
            (buckets(), buckets()),
            exemplars(),
        )
            .prop_map(
                |(
                    attributes,
                    (start, time),
                    flags,
                    (scale, zero_count, sum),
                    (positive, negative),
                    exemplars,
                )| ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count: zero_count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    flags,
                    exemplars,
                    ..Default::default()
                },
            ),
        0..3,
    )
}

fn summary_points() -> impl Strategy<Value = Vec<SummaryDataPoint>> {
    vec(
        (attributes(), times(), double()).prop_map(|(attributes, (start, time), sum)| {
            SummaryDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: 3,
                sum,
                ..Default::default()
            }
        }),
        0..3,
    )
}

fn data() -> impl Strategy<Value = Option<Data>> {
    let temporality = 0i32..4;
    prop_oneof![
        1 => Just(None),
        2 => number_points().prop_map(|data_points| Some(Data::Gauge(Gauge { data_points }))),
        4 => (number_points(), temporality.clone(), any::<bool>()).prop_map(
            |(data_points, aggregation_temporality, is_monotonic)| Some(Data::Sum(Sum {
                data_points,
                aggregation_temporality,
                is_monotonic,
            }))
        ),
        2 => (histogram_points(), temporality.clone()).prop_map(
            |(data_points, aggregation_temporality)| Some(Data::Histogram(Histogram {
                data_points,
                aggregation_temporality,
            }))
        ),
        3 => (exponential_points(), temporality).prop_map(
            |(data_points, aggregation_temporality)| {
                Some(Data::ExponentialHistogram(ExponentialHistogram {
                    data_points,
                    aggregation_temporality,
                }))
            }
        ),
        1 => summary_points().prop_map(|data_points| Some(Data::Summary(Summary { data_points }))),
    ]
}

fn metric() -> impl Strategy<Value = Metric> {
    (
        prop::sample::select(NAMES),
        prop::sample::select(&["", "ms", "s"][..]),
        data(),
    )
        .prop_map(|(name, unit, data)| Metric {
            name: name.to_string(),
            unit: unit.to_string(),
            description: "what it counts".to_string(),
            data,
            ..Default::default()
        })
}

/// A metric in one to three fragments, each a whole `Metric` of its own:
/// prost merges them into one.
fn fragments() -> impl Strategy<Value = Vec<Metric>> {
    prop_oneof![
        6 => metric().prop_map(|metric| vec![metric]),
        1 => vec(metric(), 2..4),
    ]
}

/// A resource: none, or some attributes (and a service name, mostly).
fn resource() -> impl Strategy<Value = Option<Resource>> {
    let service = prop::option::of(text().prop_map(|name| KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(name)),
        }),
        ..Default::default()
    }));
    prop_oneof![
        1 => Just(None),
        6 => (service, attributes()).prop_map(|(service, mut attributes)| {
            attributes.extend(service);
            Some(Resource {
                attributes,
                ..Default::default()
            })
        }),
    ]
}

/// The protobuf bytes of an `ExportMetricsServiceRequest`: resources of
/// scopes of metrics, each metric in fragments.
pub(crate) fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec((resource(), vec(vec(fragments(), 0..4), 1..3)), 0..3).prop_map(|resources| {
        let mut request = Vec::new();
        for (resource, scopes) in resources {
            let mut resource_metrics = Vec::new();
            if let Some(resource) = resource {
                field(1, &resource.encode_to_vec(), &mut resource_metrics);
            }
            for metrics in scopes {
                let mut scope = Vec::new();
                for fragments in metrics {
                    let metric: Vec<u8> =
                        fragments.iter().flat_map(Message::encode_to_vec).collect();
                    field(2, &metric, &mut scope);
                }
                field(2, &scope, &mut resource_metrics);
            }
            field(1, &resource_metrics, &mut request);
        }
        request
    })
}

/// Appends a length-delimited field.
pub(crate) fn field(number: u32, body: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Whether two batches hold the same views. Compared in their debug form,
/// where a NaN equals a NaN (`PartialEq` says it does not).
pub(crate) fn same(ours: &MetricBatch<'_>, theirs: &MetricBatch<'_>) -> Result<(), String> {
    let (ours, theirs) = (format!("{ours:#?}"), format!("{theirs:#?}"));
    if ours == theirs {
        Ok(())
    } else {
        Err(format!("the batches differ:\n{ours}\n---\n{theirs}"))
    }
}
