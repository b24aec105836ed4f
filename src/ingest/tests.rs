use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, Metric, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

use opentelemetry_proto::tonic::trace::v1::Span;

use super::*;
use crate::model::UNKNOWN_PEER;
use crate::model::{SeriesKey, SeriesKind};
use crate::store::{ManualClock, SeriesStats, StoreConfig};

const NOW: u64 = 1_700_000_000_000_000_000;

fn ingest() -> Ingest {
    let clock = Arc::new(ManualClock::new(NOW));
    Ingest::new(Arc::new(Store::with_clock(StoreConfig::default(), clock)))
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn resource(service: Option<&str>) -> Option<Resource> {
    Some(Resource {
        attributes: service
            .map(|name| string_attribute("service.name", name))
            .into_iter()
            .collect(),
        ..Default::default()
    })
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, kind: SpanKind, millis: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
        name: name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: NOW - 1_000_000_000 - millis * 1_000_000,
        end_time_unix_nano: NOW - 1_000_000_000,
        ..Default::default()
    }
}

fn traces(service: Option<&str>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn stats(ingest: &Ingest, kind: SeriesKind, service: &str, name: &str) -> Option<SeriesStats> {
    ingest
        .store()
        .stats(&SeriesKey::new(kind, service, name), 0, u64::MAX)
}

fn edges(ingest: &Ingest) -> Vec<(String, String)> {
    ingest
        .store()
        .edges()
        .into_iter()
        .map(|edge| (edge.caller.to_string(), edge.callee.to_string()))
        .collect()
}

#[test]
fn server_spans_are_named_by_route_and_5xx_is_an_error() {
    let ingest = ingest();
    let mut raw_path = span(1, 1, None, "GET", SpanKind::Server, 10);
    raw_path.attributes = vec![
        string_attribute("http.route", "/users/{id}"),
        int_attribute("http.response.status_code", 503),
    ];
    let mut named = span(1, 2, None, "GET /users/{id}", SpanKind::Server, 20);
    named.attributes = vec![
        string_attribute("http.route", "/users/{id}"),
        int_attribute("http.response.status_code", 200),
    ];
    let outcome = ingest.traces(&traces(Some("users"), vec![raw_path, named]));
    assert_eq!(
        outcome,
        Outcome {
            accepted: 2,
            rejected: 0,
            error_message: String::new()
        }
    );
    let by_route =
        stats(&ingest, SeriesKind::Operation, "users", "/users/{id}").expect("route series");
    assert_eq!((by_route.requests, by_route.errors), (1, 1));
    let by_name =
        stats(&ingest, SeriesKind::Operation, "users", "GET /users/{id}").expect("name series");
    assert_eq!((by_name.requests, by_name.errors), (1, 0));
}

#[test]
fn status_error_counts_and_missing_service_is_unknown() {
    let ingest = ingest();
    let mut failed = span(1, 1, None, "work", SpanKind::Internal, 5);
    failed.status = Some(Status {
        code: StatusCode::Error as i32,
        ..Default::default()
    });
    ingest.traces(&traces(
        None,
        vec![failed, span(1, 2, None, "work", SpanKind::Internal, 5)],
    ));
    let work = stats(&ingest, SeriesKind::Operation, UNKNOWN_SERVICE, "work").expect("series");
    assert_eq!((work.requests, work.errors), (2, 1));
}

#[test]
fn invalid_spans_are_rejected_and_the_rest_kept() {
    let ingest = ingest();
    let mut zero_trace = span(0, 1, None, "zero-trace", SpanKind::Server, 1);
    zero_trace.trace_id = vec![0; 16];
    let mut short_span_id = span(1, 2, None, "short-id", SpanKind::Server, 1);
    short_span_id.span_id = vec![1; 4];
    let mut backwards = span(1, 3, None, "backwards", SpanKind::Server, 1);
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let good = span(1, 4, None, "good", SpanKind::Server, 1);
    let outcome = ingest.traces(&traces(
        Some("s"),
        vec![zero_trace, short_span_id, backwards, good],
    ));
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.rejected, 3);
    assert!(
        outcome
            .error_message
            .starts_with("3 items rejected; first: span \"zero-trace\": invalid trace_id"),
        "{}",
        outcome.error_message
    );
    assert_eq!(
        ingest.store().operations("s"),
        vec![Arc::<str>::from("good")]
    );
}

#[test]
fn client_spans_pair_with_their_server_child_in_either_order() {
    let ingest = ingest();
    // Child first (the usual order: it ends first).
    let child = span(1, 2, Some(1), "POST /pay", SpanKind::Server, 8);
    ingest.traces(&traces(Some("payment"), vec![child]));
    let mut client = span(1, 1, None, "POST", SpanKind::Client, 10);
    client.attributes = vec![string_attribute("server.address", "payment.internal")];
    ingest.traces(&traces(Some("checkout"), vec![client]));
    // Client first.
    let mut client = span(2, 1, None, "POST", SpanKind::Client, 12);
    client.attributes = vec![string_attribute("server.address", "payment.internal")];
    ingest.traces(&traces(Some("checkout"), vec![client]));
    ingest.traces(&traces(
        Some("payment"),
        vec![span(2, 2, Some(1), "POST /pay", SpanKind::Server, 8)],
    ));

    assert_eq!(
        edges(&ingest),
        vec![("checkout".to_string(), "payment".to_string())]
    );
    let edge = stats(&ingest, SeriesKind::Edge, "checkout", "payment").expect("edge");
    assert_eq!(edge.requests, 2);
    // Client spans are calls, not operations of the caller.
    assert!(ingest.store().operations("checkout").is_empty());
    assert_eq!(ingest.store().pairing_len(), 0);
}

#[test]
fn unpaired_clients_fall_back_to_their_attributes() {
    let ingest = ingest();
    let mut database = span(1, 1, None, "SELECT orders", SpanKind::Client, 3);
    database.attributes = vec![
        string_attribute("db.system.name", "postgresql"),
        string_attribute("db.namespace", "orders"),
        string_attribute("server.address", "orders-db"),
    ];
    // Two caches with the same namespace stay two callees.
    let mut sessions = span(1, 5, None, "GET", SpanKind::Client, 1);
    sessions.attributes = vec![
        string_attribute("db.system.name", "redis"),
        string_attribute("db.namespace", "0"),
        string_attribute("server.address", "session-cache"),
    ];
    let mut carts = span(1, 6, None, "GET", SpanKind::Client, 1);
    carts.attributes = vec![
        string_attribute("db.system.name", "redis"),
        string_attribute("db.namespace", "0"),
        string_attribute("server.address", "cart-cache"),
    ];
    // A database named like its service is not an edge to itself.
    let mut own = span(1, 7, None, "SELECT", SpanKind::Client, 1);
    own.attributes = vec![
        string_attribute("db.system.name", "postgresql"),
        string_attribute("db.namespace", "api"),
    ];
    let mut queue = span(1, 2, None, "publish", SpanKind::Producer, 1);
    queue.attributes = vec![string_attribute("messaging.destination.name", "events")];
    let mut peer = span(1, 3, None, "GET", SpanKind::Client, 4);
    peer.attributes = vec![
        string_attribute("peer.service", "inventory"),
        string_attribute("server.address", "10.0.0.1"),
    ];
    let anonymous = span(1, 4, None, "GET", SpanKind::Client, 4);
    ingest.traces(&traces(
        Some("api"),
        vec![database, queue, peer, anonymous, sessions, carts, own],
    ));
    // Database and queue edges are named at once; the others wait for a child.
    assert_eq!(ingest.store().pairing_len(), 2);
    assert_eq!(ingest.store().flush_pairs(), 2);
    let callees: Vec<String> = edges(&ingest)
        .into_iter()
        .map(|(_, callee)| callee)
        .collect();
    assert_eq!(
        callees,
        vec![
            "cart-cache",
            "events",
            "inventory",
            "orders-db",
            "postgresql",
            "session-cache",
            UNKNOWN_PEER
        ]
    );
}

fn metrics_request(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(Some(service)),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number_point(seconds_ago: u64, value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: NOW - 3_600_000_000_000,
        time_unix_nano: NOW - seconds_ago * 1_000_000_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

#[test]
fn gauges_and_cumulative_sums() {
    let ingest = ingest();
    let used = vec![
        string_attribute("db.client.connection.state", "used"),
        string_attribute("pod", "a-1"),
    ];
    let gauge = Metric {
        name: "db.client.connection.count".to_string(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![
                number_point(3, 7.0, used.clone()),
                number_point(2, 9.0, used),
            ],
        })),
        ..Default::default()
    };
    let counter = |points| Metric {
        name: "requests".to_string(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: TEMPORALITY_CUMULATIVE,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    ingest.metrics(&metrics_request("db", vec![gauge]));
    // 10 -> 15 -> (restart) 3: deltas 5 and 3; the first point is the baseline.
    for (seconds_ago, value) in [(5, 10.0), (4, 15.0), (3, 3.0)] {
        let outcome = ingest.metrics(&metrics_request(
            "db",
            vec![counter(vec![number_point(seconds_ago, value, vec![])])],
        ));
        assert_eq!(outcome.rejected, 0);
    }
    let pool = stats(
        &ingest,
        SeriesKind::Metric,
        "db",
        "db.client.connection.count{db.client.connection.state=used}",
    )
    .expect("attributes outside the kept set are folded away");
    assert_eq!(
        (pool.values.points, pool.values.last, pool.values.max),
        (2, 9.0, 9.0)
    );
    let requests = stats(&ingest, SeriesKind::Metric, "db", "requests").expect("sum series");
    assert_eq!((requests.values.points, requests.values.sum), (2, 8.0));
}

#[test]
fn histograms_record_counts_and_quantile_estimates() {
    let ingest = ingest();
    let histogram = Metric {
        name: "http.server.request.duration".to_string(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: NOW - 1_000_000_000,
                count: 100,
                sum: Some(12.0),
                bucket_counts: vec![0, 90, 10, 0],
                explicit_bounds: vec![0.05, 0.1, 0.5],
                ..Default::default()
            }],
            aggregation_temporality: TEMPORALITY_DELTA,
        })),
        ..Default::default()
    };
    let exponential = Metric {
        name: "rpc.duration".to_string(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: NOW - 1_000_000_000,
                count: 10,
                sum: Some(30.0),
                scale: 0,
                zero_count: 0,
                positive: Some(Buckets {
                    offset: 1,
                    bucket_counts: vec![10],
                }),
                ..Default::default()
            }],
            aggregation_temporality: TEMPORALITY_DELTA,
        })),
        ..Default::default()
    };
    let outcome = ingest.metrics(&metrics_request("web", vec![histogram, exponential]));
    assert_eq!(outcome.accepted, 2);
    let duration = stats(
        &ingest,
        SeriesKind::Metric,
        "web",
        "http.server.request.duration",
    )
    .expect("series");
    assert_eq!(duration.requests, 100);
    let p50 = duration.p50.expect("estimate");
    assert!((p50 - 0.075).abs() < 0.001, "middle of (0.05, 0.1]: {p50}");
    let rpc = stats(&ingest, SeriesKind::Metric, "web", "rpc.duration").expect("series");
    // Bucket index 1 at scale 0 covers (2, 4]: its middle is 3.
    assert!((rpc.p50.expect("estimate") - 3.0).abs() < 0.05);
}

#[test]
fn unusable_metric_points_are_rejected() {
    let ingest = ingest();
    let unspecified = Metric {
        name: "x".to_string(),
        data: Some(Data::Sum(Sum {
            data_points: vec![number_point(1, 1.0, vec![])],
            aggregation_temporality: 0,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let empty = Metric {
        name: "y".to_string(),
        ..Default::default()
    };
    let outcome = ingest.metrics(&metrics_request("m", vec![unspecified, empty]));
    assert_eq!((outcome.accepted, outcome.rejected), (0, 2));
    assert!(outcome.error_message.contains("temporality"));
}

#[test]
fn logs_are_counted_by_severity() {
    let ingest = ingest();
    let record = |number: i32, text: &str| LogRecord {
        time_unix_nano: NOW - 1_000_000_000,
        severity_number: number,
        severity_text: text.to_string(),
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(Some("api")),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    record(9, "INFO"),
                    record(13, "WARN"),
                    record(17, "ERROR"),
                    record(0, "fatal"),
                    record(0, ""),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(ingest.logs(&request).accepted, 5);
    let all = stats(&ingest, SeriesKind::Log, "api", "all").expect("all");
    assert_eq!((all.requests, all.errors), (5, 2));
    assert_eq!(
        stats(&ingest, SeriesKind::Log, "api", "FATAL")
            .expect("fatal")
            .requests,
        1
    );
    assert_eq!(
        stats(&ingest, SeriesKind::Log, "api", "UNSPECIFIED")
            .expect("unspecified")
            .requests,
        1
    );
}

#[test]
fn up_down_counters_are_levels_and_pods_are_separate_streams() {
    let ingest = ingest();
    let pod = |name: &str, value: f64| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "db"),
                    string_attribute("k8s.pod.name", name),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "requests".to_string(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![number_point(2, value, vec![])],
                            aggregation_temporality: TEMPORALITY_CUMULATIVE,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "in_use".to_string(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![number_point(2, value / 100.0, vec![])],
                            aggregation_temporality: TEMPORALITY_CUMULATIVE,
                            is_monotonic: false,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    // Two pods with very different totals, interleaved: neither looks like a
    // reset of the other.
    for request in [pod("a", 1_000.0), pod("b", 10.0)] {
        ingest.metrics(&request);
    }
    let mut later = pod("a", 1_005.0);
    let mut later_b = pod("b", 12.0);
    for request in [&mut later, &mut later_b] {
        for metric in &mut request.resource_metrics[0].scope_metrics[0].metrics {
            if let Some(Data::Sum(sum)) = metric.data.as_mut() {
                sum.data_points[0].time_unix_nano += 1_000_000_000;
            }
        }
    }
    ingest.metrics(&later);
    ingest.metrics(&later_b);
    let requests = stats(&ingest, SeriesKind::Metric, "db", "requests").expect("series");
    assert_eq!(
        (requests.values.points, requests.values.sum),
        (2, 7.0),
        "deltas 5 and 2"
    );
    let in_use = stats(&ingest, SeriesKind::Metric, "db", "in_use").expect("series");
    assert_eq!(in_use.values.points, 4, "every up-down point is a level");
    assert_eq!(in_use.values.max, 10.05);
}

/// Regression: two delta points whose bucket counts are three billion each,
/// in one window, used to saturate the window's bucket while the
/// histogram's total kept adding; reading its quantiles then panicked
/// inside the detection tick and detection stopped for good.
#[test]
fn bucket_counts_past_u32_cannot_break_the_window() {
    let ingest = ingest();
    let point = |seconds_ago: u64| HistogramDataPoint {
        time_unix_nano: NOW - seconds_ago * 1_000_000_000,
        count: 3_000_000_000,
        sum: Some(f64::MAX),
        bucket_counts: vec![3_000_000_000, 0],
        explicit_bounds: vec![0.5],
        ..Default::default()
    };
    let histogram = Metric {
        name: "bomb".to_string(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![point(2), point(1)],
            aggregation_temporality: TEMPORALITY_DELTA,
        })),
        ..Default::default()
    };
    let outcome = ingest.metrics(&metrics_request("web", vec![histogram.clone(), histogram]));
    assert_eq!(outcome.accepted, 4);
    let bomb = stats(&ingest, SeriesKind::Metric, "web", "bomb").expect("series");
    assert_eq!(
        bomb.requests,
        4 * 3_000_000_000,
        "every count accounted for"
    );
    let p99 = bomb.p99.expect("quantiles read without panicking");
    assert!(p99 <= 0.5, "all in the first bucket: {p99}");
    // What the detection tick reads: every series' quantiles in the window.
    let index = ingest.store().window_index(NOW - 1_000_000_000);
    let snapshot = ingest.store().snapshot(index);
    assert!(snapshot
        .iter()
        .any(|series| series.key.name.as_ref() == "bomb"));
}

// === the two metric readers record alike ===

mod metric_readers {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::ingest::changes::ChangesConfig;
    use crate::ingest::spans::SpanConfig;
    use crate::model::ChangeFilter;
    use crate::receiver::metric_batch::generate::{request_bytes, NOW as POINTS_NOW};
    use crate::store::changes::ChangeLog;

    /// An ingest with span analysis and change detection, as pipelines
    /// build it, and its change log.
    fn full_ingest() -> (Ingest, Arc<ChangeLog>) {
        let clock = Arc::new(ManualClock::new(POINTS_NOW));
        let store = Arc::new(Store::with_clock(StoreConfig::default(), clock));
        let spans = Arc::new(SpanAnalyzer::new(SpanConfig::default(), store.config()));
        let log = Arc::new(ChangeLog::new(1000));
        let changes = Arc::new(ChangeDetector::new(
            Arc::clone(&log),
            &ChangesConfig::default(),
        ));
        let ingest = Ingest::new(store).with_spans(spans).with_changes(changes);
        (ingest, log)
    }

    /// What recording left: every window's series, with statistics and
    /// exemplars, and the changes inferred. In debug form, where NaN
    /// values compare equal.
    fn recorded(ingest: &Ingest, log: &ChangeLog) -> String {
        let store = ingest.store();
        let last = store.window_index(POINTS_NOW);
        let windows: Vec<_> = (last - 8..=last)
            .map(|index| store.snapshot(index))
            .collect();
        format!("{windows:?}\n{:?}", log.list(&ChangeFilter::default()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// A request recorded from its protobuf bytes (the receivers'
        /// zero-copy path) and from its prost decoding (the JSON path)
        /// gives the same outcome and the same series.
        #[test]
        fn protobuf_and_decoded_requests_record_alike(bytes in request_bytes()) {
            let request = ExportMetricsServiceRequest::decode(&bytes[..]).unwrap();
            let (decoded, decoded_log) = full_ingest();
            let (read, read_log) = full_ingest();
            // Twice, so cumulative streams have a baseline to take deltas of.
            for _ in 0..2 {
                let by_prost = decoded.metrics(&request);
                let by_reader = read.metrics_protobuf(&bytes).unwrap();
                prop_assert_eq!(by_prost, by_reader);
            }
            prop_assert_eq!(recorded(&decoded, &decoded_log), recorded(&read, &read_log));
        }
    }
}
