//! RED metrics from the spanmetrics and servicegraph connectors, Istio and
//! Linkerd land in the series spans would have made.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point, Exemplar,
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::ingest::Ingest;
use crate::model::{SeriesKey, SeriesKind};
use crate::receiver::Sink;
use crate::store::{ManualClock, SeriesStats, Store, StoreConfig};

const NOW: u64 = 1_700_000_000_000_000_000;
/// The start of a 10 s window well before `NOW`.
const WINDOW: u64 = NOW - NOW % 10_000_000_000 - 60_000_000_000;
const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;

fn ingest() -> Ingest {
    let clock = Arc::new(ManualClock::new(NOW));
    Ingest::new(Arc::new(Store::with_clock(StoreConfig::default(), clock)))
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attributes(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(key, value)| attribute(key, value))
        .collect()
}

fn request(service: Option<&str>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: service
                    .map(|name| attribute("service.name", name))
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn count_point(labels: &[(&str, &str)], start: u64, time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn sum(name: &str, temporality: i32, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn histogram(
    name: &str,
    unit: &str,
    temporality: i32,
    labels: &[(&str, &str)],
    (start, time): (u64, u64),
    bounds: &[f64],
    counts: &[u64],
) -> Metric {
    Metric {
        name: name.to_string(),
        unit: unit.to_string(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attributes(labels),
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: counts.iter().sum(),
                bucket_counts: counts.to_vec(),
                explicit_bounds: bounds.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: temporality,
        })),
        ..Default::default()
    }
}

fn stats(ingest: &Ingest, kind: SeriesKind, service: &str, name: &str) -> Option<SeriesStats> {
    ingest
        .store()
        .stats(&SeriesKey::new(kind, service, name), 0, u64::MAX)
}

const SERVER: [(&str, &str); 4] = [
    ("service.name", "checkout"),
    ("span.name", "POST /checkout"),
    ("span.kind", "SPAN_KIND_SERVER"),
    ("status.code", "STATUS_CODE_UNSET"),
];
const SERVER_ERROR: [(&str, &str); 4] = [
    ("service.name", "checkout"),
    ("span.name", "POST /checkout"),
    ("span.kind", "SPAN_KIND_SERVER"),
    ("status.code", "STATUS_CODE_ERROR"),
];

#[test]
fn names_are_recognised_with_and_without_the_namespace() {
    assert_eq!(
        recognise("traces.span.metrics.calls"),
        Some((Family::SpanMetrics, Role::Requests))
    );
    assert_eq!(
        recognise("calls"),
        Some((Family::SpanMetrics, Role::Requests))
    );
    assert_eq!(
        recognise("span.metrics.duration"),
        Some((Family::SpanMetrics, Role::Latency))
    );
    assert_eq!(
        recognise("traces_service_graph_request_failed_total"),
        Some((Family::ServiceGraph, Role::Failures))
    );
    assert_eq!(
        recognise("traces_service_graph_request_client"),
        Some((Family::ServiceGraph, Role::Latency))
    );
    assert_eq!(
        recognise("istio_requests_total"),
        Some((Family::Istio, Role::Requests))
    );
    assert_eq!(
        recognise("response_latency_ms"),
        Some((Family::Linkerd, Role::Latency))
    );
    assert_eq!(recognise("recalls"), None);
    assert_eq!(recognise("http.server.request.duration_extra"), None);
}

#[test]
fn delta_spanmetrics_become_the_operation_series_of_the_service() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let outcome = ingest.metrics(&request(
        Some("collector"),
        vec![
            sum(
                "traces.span.metrics.calls",
                DELTA,
                vec![
                    count_point(&SERVER, WINDOW, end, 90.0),
                    count_point(&SERVER_ERROR, WINDOW, end, 10.0),
                ],
            ),
            histogram(
                "traces.span.metrics.duration",
                "ms",
                DELTA,
                &SERVER,
                (WINDOW, end),
                &[10.0, 100.0, 1000.0],
                &[0, 90, 0, 0],
            ),
        ],
    ));
    assert_eq!(outcome.rejected, 0, "{outcome:?}");
    // `service.name` of the point, not of the resource (the collector's).
    let stats = stats(&ingest, SeriesKind::Operation, "checkout", "POST /checkout")
        .expect("operation series");
    assert_eq!((stats.requests, stats.errors), (100, 10));
    // The whole window, and only it.
    let window = ingest.store().window_index(WINDOW);
    assert_eq!(stats.windows, Some((window, window)));
    // The bucket (10, 100] ms stands at its geometric middle, 31.6 ms.
    let p50 = stats.p50.expect("latencies");
    assert!((p50 - 31.6).abs() < 0.5, "p50 {p50}");
    assert!(ingest
        .store()
        .services()
        .iter()
        .all(|name| &**name != "collector"
            || ingest
                .store()
                .series("collector", SeriesKind::Metric)
                .is_empty()));
}

#[test]
fn cumulative_calls_become_deltas_and_the_first_point_is_a_baseline() {
    let ingest = ingest();
    let start = WINDOW - 3_600_000_000_000;
    for (time, ok, failed) in [
        (WINDOW - 5_000_000_000, 1000.0, 5.0),
        (WINDOW + 5_000_000_000, 1100.0, 25.0),
    ] {
        let outcome = ingest.metrics(&request(
            Some("checkout"),
            vec![sum(
                "calls",
                CUMULATIVE,
                vec![
                    count_point(&SERVER, start, time, ok),
                    count_point(&SERVER_ERROR, start, time, failed),
                ],
            )],
        ));
        assert_eq!(outcome.rejected, 0);
    }
    let stats = stats(&ingest, SeriesKind::Operation, "checkout", "POST /checkout")
        .expect("operation series");
    assert_eq!((stats.requests, stats.errors), (120, 20));
}

#[test]
fn client_spanmetrics_with_a_peer_become_edges_and_without_one_stay_metrics() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let client = [
        ("service.name", "frontend"),
        ("span.name", "GET"),
        ("span.kind", "SPAN_KIND_CLIENT"),
        ("status.code", "STATUS_CODE_ERROR"),
        ("peer.service", "cart"),
    ];
    ingest.metrics(&request(
        None,
        vec![sum(
            "calls",
            DELTA,
            vec![count_point(&client, WINDOW, end, 4.0)],
        )],
    ));
    let edge = stats(&ingest, SeriesKind::Edge, "frontend", "cart").expect("edge");
    assert_eq!((edge.requests, edge.errors), (4, 4));

    // A `duration` metric that is not span metrics stays a metric.
    ingest.metrics(&request(
        Some("batch"),
        vec![histogram(
            "duration",
            "s",
            DELTA,
            &[("job", "nightly")],
            (WINDOW, end),
            &[1.0],
            &[1, 1],
        )],
    ));
    assert!(ingest.store().operations("batch").is_empty());
    assert_eq!(ingest.store().series("batch", SeriesKind::Metric).len(), 1);
}

#[test]
fn servicegraph_metrics_become_edges_with_client_latency() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let pair = [
        ("client", "frontend"),
        ("server", "cart"),
        ("connection_type", ""),
    ];
    ingest.metrics(&request(
        None,
        vec![
            sum(
                "traces_service_graph_request_total",
                DELTA,
                vec![count_point(&pair, WINDOW, end, 50.0)],
            ),
            sum(
                "traces_service_graph_request_failed_total",
                DELTA,
                vec![count_point(&pair, WINDOW, end, 5.0)],
            ),
            histogram(
                "traces_service_graph_request_client_seconds",
                "",
                DELTA,
                &pair,
                (WINDOW, end),
                &[0.1, 0.4],
                &[0, 0, 50],
            ),
            // The server side is not the edge's latency (spans record the
            // client's duration on an edge).
            histogram(
                "traces_service_graph_request_server_seconds",
                "",
                DELTA,
                &pair,
                (WINDOW, end),
                &[0.001],
                &[50, 0],
            ),
        ],
    ));
    let edge = stats(&ingest, SeriesKind::Edge, "frontend", "cart").expect("edge");
    assert_eq!((edge.requests, edge.errors), (50, 5));
    // The open last bucket stands at its lower bound: 400 ms.
    assert_eq!(edge.p50, Some(400.0));
}

#[test]
fn istio_counts_source_reports_once_and_5xx_as_errors() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let labels = |reporter: &'static str, code: &'static str| {
        vec![
            ("reporter", reporter),
            ("source_workload", "frontend-v1"),
            ("source_canonical_service", "frontend"),
            ("destination_canonical_service", "reviews"),
            ("destination_service_name", "reviews.default.svc"),
            ("response_code", code),
        ]
    };
    ingest.metrics(&request(
        None,
        vec![
            sum(
                "istio_requests_total",
                DELTA,
                vec![
                    count_point(&labels("source", "200"), WINDOW, end, 30.0),
                    count_point(&labels("source", "503"), WINDOW, end, 3.0),
                    count_point(&labels("destination", "200"), WINDOW, end, 30.0),
                ],
            ),
            histogram(
                "istio_request_duration_milliseconds",
                "",
                DELTA,
                &labels("source", "200"),
                (WINDOW, end),
                &[5.0, 10.0],
                &[0, 30, 0],
            ),
        ],
    ));
    let edge = stats(&ingest, SeriesKind::Edge, "frontend", "reviews").expect("edge");
    assert_eq!((edge.requests, edge.errors), (33, 3));
    let p50 = edge.p50.expect("latency");
    assert!((p50 - 7.07).abs() < 0.1, "p50 {p50}");
}

#[test]
fn linkerd_outbound_requests_and_failed_responses_become_an_edge() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let outbound = [
        ("direction", "outbound"),
        ("deployment", "web"),
        ("dst_deployment", "books"),
    ];
    let failed = [
        ("direction", "outbound"),
        ("deployment", "web"),
        ("dst_deployment", "books"),
        ("classification", "failure"),
    ];
    let succeeded = [
        ("direction", "outbound"),
        ("deployment", "web"),
        ("dst_deployment", "books"),
        ("classification", "success"),
    ];
    let inbound = [
        ("direction", "inbound"),
        ("deployment", "books"),
        ("dst_deployment", "books"),
    ];
    ingest.metrics(&request(
        None,
        vec![
            sum(
                "request_total",
                DELTA,
                vec![
                    count_point(&outbound, WINDOW, end, 40.0),
                    count_point(&inbound, WINDOW, end, 40.0),
                ],
            ),
            sum(
                "response_total",
                DELTA,
                vec![
                    count_point(&failed, WINDOW, end, 8.0),
                    count_point(&succeeded, WINDOW, end, 32.0),
                ],
            ),
        ],
    ));
    let edge = stats(&ingest, SeriesKind::Edge, "web", "books").expect("edge");
    assert_eq!((edge.requests, edge.errors), (40, 8));
    assert!(stats(&ingest, SeriesKind::Edge, "books", "books").is_none());
}

#[test]
fn exponential_histograms_and_exemplars_reach_the_window() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let trace = [7u8; 16];
    // Scale 3: base 2^(1/8). Bucket 53 holds (2^(53/8), 2^(54/8)] ms, about
    // (98.7, 107.6] ms.
    let metric = Metric {
        name: "traces.span.metrics.duration".to_string(),
        unit: "ms".to_string(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                attributes: attributes(&SERVER),
                start_time_unix_nano: WINDOW,
                time_unix_nano: end,
                count: 20,
                scale: 3,
                positive: Some(Buckets {
                    offset: 53,
                    bucket_counts: vec![20],
                }),
                exemplars: vec![Exemplar {
                    trace_id: trace.to_vec(),
                    value: Some(
                        opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(104.0),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            aggregation_temporality: DELTA,
        })),
        ..Default::default()
    };
    ingest.metrics(&request(Some("checkout"), vec![metric]));
    let key = SeriesKey::new(SeriesKind::Operation, "checkout", "POST /checkout");
    let stats = ingest.store().stats(&key, 0, u64::MAX).expect("series");
    let p50 = stats.p50.expect("latency");
    assert!((p50 - 103.1).abs() < 1.0, "p50 {p50}");
    let window = ingest.store().window_index(WINDOW);
    let snapshot = ingest.store().snapshot(window);
    let found = snapshot
        .iter()
        .find(|snapshot| snapshot.key == key)
        .expect("snapshot");
    assert_eq!(found.exemplars, vec![u128::from_be_bytes(trace)]);
}

#[test]
fn own_summaries_land_on_the_own_series() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let mut own = SERVER.to_vec();
    own.push((SERIES_ATTRIBUTE, "own"));
    ingest.metrics(&request(
        Some("checkout"),
        vec![sum(
            "calls",
            DELTA,
            vec![
                count_point(&SERVER, WINDOW, end, 10.0),
                count_point(&own, WINDOW, end, 10.0),
            ],
        )],
    ));
    for kind in [SeriesKind::Operation, SeriesKind::Own] {
        let stats = stats(&ingest, kind, "checkout", "POST /checkout").expect("series");
        assert_eq!(stats.requests, 10, "{kind:?}");
    }
}

#[test]
fn a_point_without_its_series_attributes_is_rejected_not_misfiled() {
    let ingest = ingest();
    let end = WINDOW + 10_000_000_000;
    let outcome = ingest.metrics(&request(
        None,
        vec![sum(
            "traces_service_graph_request_total",
            DELTA,
            vec![
                count_point(&[("client", "a"), ("server", "b")], WINDOW, end, 1.0),
                count_point(&[("client", "a")], WINDOW, end, 1.0),
            ],
        )],
    ));
    assert_eq!((outcome.accepted, outcome.rejected), (1, 1), "{outcome:?}");
}

#[test]
fn representative_values() {
    // Geometric middle of a bounded bucket.
    assert!((explicit_value(&[1.0, 100.0], 1, None, None) - 10.0).abs() < 1e-9);
    // Open first bucket: half its bound, or between min and it.
    assert_eq!(explicit_value(&[8.0], 0, None, None), 4.0);
    assert!((explicit_value(&[8.0], 0, Some(2.0), None) - 4.0).abs() < 1e-9);
    // Open last bucket: its bound, or between it and max.
    assert_eq!(explicit_value(&[8.0], 1, None, None), 8.0);
    assert!((explicit_value(&[8.0], 1, None, Some(32.0)) - 16.0).abs() < 1e-9);
    // Scale 0: bucket 3 is (8, 16].
    assert!((exponential_value(0, 3) - 8.0 * 2f64.sqrt()).abs() < 1e-9);
    assert_eq!(micros_per_unit(Family::ServiceGraph, "x", ""), 1e6);
    assert_eq!(micros_per_unit(Family::SpanMetrics, "x_seconds", ""), 1e6);
    assert_eq!(micros_per_unit(Family::SpanMetrics, "x", "s"), 1e6);
    assert_eq!(micros_per_unit(Family::Istio, "x", ""), 1e3);
}
