//! Span metrics instead of spans: the OTel Collector's `spanmetrics` and
//! `servicegraph` connector output, sent over OTLP/gRPC by a protobuf
//! client to the real collector, shows up in the query API as the service
//! and edge series spans would have made, and a rise of the error rate in
//! the span metrics opens an incident.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio_util::sync::CancellationToken;

use crate::common::test_settings;
use triage::model::{AnomalyKind, IncidentEvent};
use triage::query::client::{Client, ClientConfig};
use triage::server::Server;

const WAIT: Duration = Duration::from_secs(30);
/// Requests per send (every 100 ms) on each series.
const PER_SEND: u64 = 10;
const DELTA: i32 = 1;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn count(attributes: Vec<KeyValue>, (start, time): (u64, u64), value: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(value as i64)),
        ..Default::default()
    }
}

fn delta_sum(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_string(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: DELTA,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn delta_histogram(
    name: &str,
    unit: &str,
    attributes: Vec<KeyValue>,
    interval: (u64, u64),
    bounds: &[f64],
    counts: Vec<u64>,
) -> Metric {
    Metric {
        name: name.to_string(),
        unit: unit.to_string(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes,
                start_time_unix_nano: interval.0,
                time_unix_nano: interval.1,
                count: counts.iter().sum(),
                bucket_counts: counts,
                explicit_bounds: bounds.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: DELTA,
        })),
        ..Default::default()
    }
}

/// One flush of the two connectors over `interval`, as a collector's
/// metrics pipeline exports it: spanmetrics per resource, servicegraph
/// on a resource of its own.
fn connector_output(interval: (u64, u64), failing: bool) -> ExportMetricsServiceRequest {
    let checkout = |status: &str| {
        vec![
            attribute("service.name", "checkout"),
            attribute("span.name", "POST /checkout"),
            attribute("span.kind", "SPAN_KIND_SERVER"),
            attribute("status.code", status),
        ]
    };
    let errors = if failing { PER_SEND / 2 } else { 0 };
    let pair = || {
        vec![
            attribute("client", "frontend"),
            attribute("server", "checkout"),
        ]
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        delta_sum(
                            "traces.span.metrics.calls",
                            vec![
                                count(checkout("STATUS_CODE_UNSET"), interval, PER_SEND - errors),
                                count(checkout("STATUS_CODE_ERROR"), interval, errors),
                            ],
                        ),
                        delta_histogram(
                            "traces.span.metrics.duration",
                            "ms",
                            checkout("STATUS_CODE_UNSET"),
                            interval,
                            &[2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0],
                            vec![0, 0, 0, 0, 0, PER_SEND, 0, 0],
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceMetrics {
                resource: Some(Resource::default()),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        delta_sum(
                            "traces_service_graph_request_total",
                            vec![count(pair(), interval, PER_SEND)],
                        ),
                        delta_sum(
                            "traces_service_graph_request_failed_total",
                            vec![count(pair(), interval, errors)],
                        ),
                        delta_histogram(
                            "traces_service_graph_request_client_seconds",
                            "s",
                            pair(),
                            interval,
                            &[0.01, 0.05, 0.1],
                            vec![0, PER_SEND, 0, 0],
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanmetrics_and_servicegraph_become_series_and_open_an_incident() {
    let mut settings = test_settings();
    settings.store.window = Duration::from_secs(1);
    settings.detect.warmup_windows = 5;
    settings.detect.lateness = Duration::from_secs(1);
    let server = Server::bind(settings).await.expect("bind");
    let addresses = server.addresses();
    let mut events = server.subscribe();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    // The connectors' flushes, every 100 ms, delta temporality.
    let failing = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let sender = {
        let (failing, stop) = (Arc::clone(&failing), stop.clone());
        let url = format!("http://{}", addresses.grpc);
        tokio::spawn(async move {
            let mut client = MetricsServiceClient::connect(url).await.expect("connect");
            let mut last = now_nanos();
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = now_nanos();
                let request = connector_output((last, now), failing.load(Ordering::Relaxed));
                let response = client.export(request).await.expect("export").into_inner();
                assert!(response.partial_success.is_none(), "{response:?}");
                last = now;
            }
        })
    };

    // The query API lists the service with its operation and the edge.
    let mut api = Client::connect(&ClientConfig {
        address: format!("http://{}", addresses.api),
        token: None,
        ca_cert: None,
        client_cert: None,
    })
    .await
    .expect("query API");
    let deadline = Instant::now() + WAIT;
    loop {
        let services = api.services().await.expect("services");
        let checkout = services.iter().find(|service| service.name == "checkout");
        let frontend = services.iter().find(|service| service.name == "frontend");
        if let (Some(checkout), Some(frontend)) = (checkout, frontend) {
            assert_eq!(checkout.operations, ["POST /checkout"]);
            assert_eq!(frontend.callees, ["checkout"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series never listed: {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = api.stats("checkout", 0).await.expect("stats");
    assert!(stats.total.requests >= PER_SEND, "{stats:?}");
    assert_eq!(stats.total.errors, 0);
    // (10, 50] ms stands at its geometric middle, 22.4 ms.
    let p50 = stats.total.p50_ms.expect("latency");
    assert!((20.0..25.0).contains(&p50), "p50 {p50}");
    let topology = api.topology(0).await.expect("topology");
    let edge = topology
        .edges
        .iter()
        .find(|edge| edge.caller == "frontend" && edge.callee == "checkout")
        .expect("frontend -> checkout");
    assert!(edge.caller_side.requests >= PER_SEND, "{edge:?}");

    // Past the warm-up (5 windows of 1 s), the error rate rises to 50%.
    tokio::time::sleep(Duration::from_secs(7)).await;
    failing.store(true, Ordering::Relaxed);
    let opened = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(IncidentEvent::Opened(incident)) => return incident,
                Ok(_) => continue,
                Err(error) => panic!("incident events ended: {error}"),
            }
        }
    })
    .await
    .expect("an incident opens");
    assert!(
        opened.services.iter().any(|service| service == "checkout"),
        "{opened:#?}"
    );
    assert!(
        opened.kinds.contains(&AnomalyKind::ErrorRate),
        "{opened:#?}"
    );

    stop.cancel();
    sender.await.expect("sender ends");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stops")
        .expect("no panic")
        .expect("clean exit");
}
