//! Tests of the simulator: determinism, the shape of what it emits (pairing,
//! semantic conventions, valid OTLP JSON), and that every fault changes what
//! it should, and nothing before it starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;

use crate::receiver::decode::JsonRequest;

use super::*;

const SECOND: u64 = 1_000_000_000;

// === helpers ===

/// A quiet scenario (no daily shape, no benign deploys) of `seconds`, with
/// `faults` given as (spec, start second).
fn scenario(seconds: u64, rate: f64, faults: &[(&str, u64)]) -> Scenario {
    Scenario {
        seed: 7,
        duration: Duration::from_secs(seconds),
        entry_rate_per_sec: rate,
        faults: faults
            .iter()
            .map(|(spec, start)| Fault {
                kind: parse_fault(spec).unwrap(),
                start: Duration::from_secs(*start),
                duration: None,
            })
            .collect(),
        benign_deploys: false,
        daily_shape: false,
        ..Scenario::default()
    }
}

fn json_lines(scenario: Scenario) -> Vec<u8> {
    let mut out = Vec::new();
    write_json_lines(Simulator::new(scenario), &mut out).unwrap();
    out
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn attr_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key) {
        Some(any_value::Value::StringValue(text)) => Some(text),
        _ => None,
    }
}

fn attr_int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key) {
        Some(any_value::Value::IntValue(value)) => Some(*value),
        _ => None,
    }
}

/// One span, flattened with its resource.
#[derive(Debug, Clone)]
struct Row {
    service: String,
    version: String,
    pod: String,
    node: String,
    region: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    kind: i32,
    name: String,
    start: u64,
    end: u64,
    error: bool,
    attributes: Vec<KeyValue>,
    events: Vec<opentelemetry_proto::tonic::trace::v1::span::Event>,
}

impl Row {
    fn duration_ms(&self) -> f64 {
        (self.end - self.start) as f64 / 1e6
    }

    fn is(&self, service: &str, kind: SpanKind) -> bool {
        self.service == service && self.kind == kind as i32
    }

    fn str(&self, key: &str) -> Option<&str> {
        attr_str(&self.attributes, key)
    }
}

fn rows(batches: &[Batch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        let Some(traces) = &batch.traces else {
            continue;
        };
        for resource_spans in &traces.resource_spans {
            let resource = &resource_spans.resource.as_ref().unwrap().attributes;
            let service = attr_str(resource, "service.name").unwrap().to_owned();
            let version = attr_str(resource, "service.version").unwrap().to_owned();
            let pod = attr_str(resource, "k8s.pod.name").unwrap().to_owned();
            let node = attr_str(resource, "k8s.node.name").unwrap().to_owned();
            let region = attr_str(resource, "cloud.region").unwrap().to_owned();
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                rows.push(Row {
                    service: service.clone(),
                    version: version.clone(),
                    pod: pod.clone(),
                    node: node.clone(),
                    region: region.clone(),
                    trace: span.trace_id.clone(),
                    id: span.span_id.clone(),
                    parent: span.parent_span_id.clone(),
                    kind: span.kind,
                    name: span.name.clone(),
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    error: span.status.as_ref().is_some_and(|status| status.code == 2),
                    attributes: span.attributes.clone(),
                    events: span.events.clone(),
                });
            }
        }
    }
    rows
}

/// Metric points: (service, pod, metric name, point attributes, time, value).
/// Histograms give their count.
type Point = (String, String, String, Vec<KeyValue>, u64, f64);

fn points(batches: &[Batch]) -> Vec<Point> {
    let mut points = Vec::new();
    for metrics in batches.iter().filter_map(|batch| batch.metrics.as_ref()) {
        for resource_metrics in &metrics.resource_metrics {
            let resource = &resource_metrics.resource.as_ref().unwrap().attributes;
            let service = attr_str(resource, "service.name").unwrap().to_owned();
            let pod = attr_str(resource, "k8s.pod.name").unwrap().to_owned();
            for metric in resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
            {
                let mut push = |attributes: &Vec<KeyValue>, time: u64, value: f64| {
                    points.push((
                        service.clone(),
                        pod.clone(),
                        metric.name.clone(),
                        attributes.clone(),
                        time,
                        value,
                    ))
                };
                match metric.data.as_ref().unwrap() {
                    metric::Data::Gauge(gauge) => {
                        for point in &gauge.data_points {
                            push(&point.attributes, point.time_unix_nano, number(point));
                        }
                    }
                    metric::Data::Sum(sum) => {
                        for point in &sum.data_points {
                            push(&point.attributes, point.time_unix_nano, number(point));
                        }
                    }
                    metric::Data::Histogram(histogram) => {
                        for point in &histogram.data_points {
                            push(&point.attributes, point.time_unix_nano, point.count as f64);
                        }
                    }
                    other => panic!("unexpected metric data {other:?}"),
                }
            }
        }
    }
    points
}

fn number(point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsInt(value)) => value as f64,
        Some(number_data_point::Value::AsDouble(value)) => value,
        None => f64::NAN,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "no values to take the median of");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ratio(part: usize, whole: usize) -> f64 {
    assert!(whole > 0, "no samples");
    part as f64 / whole as f64
}

fn run(scenario: Scenario) -> (Vec<Batch>, u64) {
    let start = scenario.start_unix_nanos;
    (Simulator::new(scenario).collect(), start)
}

/// Splits rows into those that start before `at` seconds and those that
/// start after it (plus a second, for requests in flight at the change).
fn split_at(rows: &[Row], start: u64, at: u64) -> (Vec<&Row>, Vec<&Row>) {
    let cut = start + at * SECOND;
    let before = rows.iter().filter(|row| row.end < cut).collect();
    let after = rows
        .iter()
        .filter(|row| row.start >= cut + SECOND)
        .collect();
    (before, after)
}

// === determinism and shape ===

#[test]
fn same_seed_same_bytes_and_other_seed_other_bytes() {
    let base = scenario(40, 10.0, &[("latency:payment", 20)]);
    let first = json_lines(base.clone());
    let second = json_lines(base.clone());
    assert!(
        first.len() > 1_000_000,
        "too little output: {}",
        first.len()
    );
    assert!(first == second, "the same scenario gave different output");
    let other = json_lines(Scenario { seed: 8, ..base });
    assert!(first != other, "a different seed gave the same output");
}

#[test]
fn leaving_out_signals_changes_nothing_in_the_others() {
    let base = scenario(30, 10.0, &[("errors:cart", 10)]);
    let all: Vec<Batch> = Simulator::new(base.clone()).collect();
    let traces: Vec<Batch> = Simulator::new(base.clone())
        .with_signals(Signals::TRACES)
        .collect();
    let metrics: Vec<Batch> = Simulator::new(base)
        .with_signals(Signals {
            traces: false,
            metrics: true,
            logs: false,
        })
        .collect();
    for ((all, traces), metrics) in all.iter().zip(&traces).zip(&metrics) {
        assert_eq!(all.traces, traces.traces);
        assert_eq!(all.metrics, metrics.metrics);
        assert!(traces.metrics.is_none() && traces.logs.is_none());
        assert!(metrics.traces.is_none() && metrics.logs.is_none());
    }
    assert!(all.iter().any(|batch| batch.logs.is_some()));
}

#[test]
fn topology_is_wide_and_deep() {
    let simulator = Simulator::new(Scenario::default());
    let topology = simulator.topology();
    assert!(
        topology.services.len() >= 10,
        "{} services",
        topology.services.len()
    );
    assert!(topology.depth() >= 3, "depth {}", topology.depth());
    assert_eq!(
        topology.depth(),
        4,
        "frontend -> checkout -> pricing -> currency"
    );
    assert_eq!(topology.entry, "frontend");
    let kinds: BTreeSet<_> = topology
        .edges
        .iter()
        .map(|edge| format!("{:?}", edge.kind))
        .collect();
    for kind in ["Http", "Grpc", "Database", "Cache", "Messaging", "External"] {
        assert!(kinds.contains(kind), "no {kind} edge in {kinds:?}");
    }
    for edge in topology.edges.iter().filter(|edge| edge.kind.is_service()) {
        assert!(topology.service(&edge.caller).is_some(), "{edge:?}");
        assert!(topology.service(&edge.callee).is_some(), "{edge:?}");
    }
    // Recommendation is optional for the frontend, payment is not for checkout.
    let edge = |caller: &str, callee: &str| {
        topology
            .edges
            .iter()
            .find(|edge| edge.caller == caller && edge.callee == callee)
            .unwrap_or_else(|| panic!("no edge {caller} -> {callee}"))
    };
    assert!(edge("frontend", "recommendation").optional);
    assert!(!edge("checkout", "payment").optional);
    assert!(topology
        .callers("payment")
        .any(|edge| edge.caller == "checkout"));
    let protocols: BTreeSet<_> = topology.services.iter().map(|s| s.protocol).collect();
    assert!(protocols.contains("http") && protocols.contains("grpc"));
}

#[test]
fn every_client_span_has_one_server_child_in_the_callee() {
    let (batches, start) = run(scenario(60, 20.0, &[]));
    let rows = rows(&batches);
    let services: BTreeSet<&str> = topology()
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut children: HashMap<(&[u8], &[u8]), Vec<&Row>> = HashMap::new();
    for row in &rows {
        if row.kind == SpanKind::Server as i32 || row.kind == SpanKind::Consumer as i32 {
            children
                .entry((&row.trace, &row.parent))
                .or_default()
                .push(row);
        }
    }
    let by_id: HashMap<(&[u8], &[u8]), &Row> = rows
        .iter()
        .map(|row| ((&row.trace[..], &row.id[..]), row))
        .collect();
    let end = start + 60 * SECOND;
    let mut paired = 0;
    for row in &rows {
        let callee = row.str("server.address").unwrap_or_default();
        let to_service = row.kind == SpanKind::Client as i32 && services.contains(callee);
        let to_queue = row.kind == SpanKind::Producer as i32;
        if !(to_service || to_queue) {
            continue;
        }
        // A consumer may still be processing when the run ends.
        if to_queue && row.end + 5 * SECOND > end {
            continue;
        }
        let found = children
            .get(&(&row.trace[..], &row.id[..]))
            .map_or(&[][..], |v| &v[..]);
        assert_eq!(
            found.len(),
            1,
            "client span {} of {} has {} children",
            row.name,
            row.service,
            found.len()
        );
        let child = found[0];
        if to_service {
            assert_eq!(
                child.service, callee,
                "{} -> {}",
                row.service, child.service
            );
            assert_eq!(child.kind, SpanKind::Server as i32);
            assert_eq!(
                child.name, row.name,
                "client and server name the same operation"
            );
            assert!(
                child.start >= row.start && child.end <= row.end,
                "child outside its client"
            );
        } else {
            assert_eq!(child.kind, SpanKind::Consumer as i32);
            assert_eq!(child.service, "notification");
        }
        paired += 1;
    }
    assert!(paired > 3_000, "only {paired} pairs");
    // And the other way: every server span with a parent has its client in
    // the caller, in the same trace.
    for row in rows
        .iter()
        .filter(|row| row.kind == SpanKind::Server as i32)
    {
        if row.parent.is_empty() {
            assert_eq!(row.service, "frontend", "only the entry has root spans");
            continue;
        }
        let client = by_id
            .get(&(&row.trace[..], &row.parent[..]))
            .unwrap_or_else(|| panic!("server span {} has no client", row.name));
        assert_eq!(client.kind, SpanKind::Client as i32);
        assert_ne!(client.service, row.service);
    }
}

#[test]
fn spans_follow_semantic_conventions_and_batch_times() {
    let (batches, _) = run(scenario(40, 20.0, &[]));
    let mut previous = 0;
    let mut regions = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for batch in &batches {
        assert!(batch.time_unix_nanos > previous, "batches out of order");
        previous = batch.time_unix_nanos;
        let window = batch.time_unix_nanos..batch.time_unix_nanos + SECOND;
        for resource_spans in batch.traces.iter().flat_map(|t| &t.resource_spans) {
            let resource = &resource_spans.resource.as_ref().unwrap().attributes;
            for key in [
                "service.name",
                "service.version",
                "service.instance.id",
                "k8s.pod.name",
                "k8s.node.name",
                "host.name",
                "cloud.region",
                "deployment.environment.name",
            ] {
                assert!(attr_str(resource, key).is_some(), "resource without {key}");
            }
            regions.insert(attr_str(resource, "cloud.region").unwrap().to_owned());
            versions.insert(attr_str(resource, "service.version").unwrap().to_owned());
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                assert!(
                    window.contains(&span.end_time_unix_nano),
                    "span ends outside its batch"
                );
                assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
            }
        }
        for resource_logs in batch.logs.iter().flat_map(|l| &l.resource_logs) {
            for record in resource_logs.scope_logs.iter().flat_map(|s| &s.log_records) {
                assert!(
                    window.contains(&record.time_unix_nano),
                    "log outside its batch"
                );
            }
        }
    }
    assert_eq!(regions.len(), 2, "regions {regions:?}");
    assert!(versions.len() >= 8, "versions {versions:?}");

    let rows = rows(&batches);
    let deprecated = [
        "http.method",
        "http.status_code",
        "http.url",
        "db.system",
        "net.peer.name",
    ];
    let mut seen = BTreeSet::new();
    for row in &rows {
        for kv in &row.attributes {
            assert!(
                !deprecated.contains(&kv.key.as_str()),
                "deprecated key {}",
                kv.key
            );
        }
        let has = |key: &str| attr(&row.attributes, key).is_some();
        let kind = row.kind;
        if row.str("rpc.system").is_some() {
            assert_eq!(row.str("rpc.system"), Some("grpc"));
            for key in ["rpc.service", "rpc.method", "server.address"] {
                assert!(has(key), "{} without {key}", row.name);
            }
            assert!(attr_int(&row.attributes, "rpc.grpc.status_code").is_some());
            seen.insert("grpc");
        } else if row.str("db.system.name").is_some() {
            assert_eq!(kind, SpanKind::Client as i32);
            assert!(matches!(
                row.str("db.system.name"),
                Some("postgresql" | "redis")
            ));
            for key in [
                "db.namespace",
                "db.operation.name",
                "server.address",
                "server.port",
            ] {
                assert!(has(key), "{} without {key}", row.name);
            }
            seen.insert(row.str("db.system.name").unwrap());
        } else if row.str("messaging.system").is_some() {
            assert!(has("messaging.destination.name") && has("messaging.operation.type"));
            seen.insert("messaging");
        } else if kind == SpanKind::Server as i32 {
            for key in [
                "http.request.method",
                "http.route",
                "url.path",
                "url.scheme",
                "server.address",
            ] {
                assert!(has(key), "{} without {key}", row.name);
            }
            let code = attr_int(&row.attributes, "http.response.status_code").unwrap();
            assert_eq!(row.error, code >= 500, "status ERROR iff 5xx on the server");
            seen.insert("http");
        } else {
            assert_eq!(kind, SpanKind::Client as i32);
            for key in ["http.request.method", "server.address", "url.full"] {
                assert!(has(key), "{} without {key}", row.name);
            }
        }
    }
    for family in ["grpc", "http", "postgresql", "redis", "messaging"] {
        assert!(seen.contains(family), "no {family} spans");
    }

    let points = points(&batches);
    let names: BTreeSet<&str> = points.iter().map(|p| p.2.as_str()).collect();
    for name in [
        "process.memory.usage",
        "k8s.container.memory.limit",
        "process.cpu.utilization",
        "container.cpu.throttling_data.periods",
        "container.cpu.throttling_data.throttled_periods",
        "db.client.connection.count",
        "db.client.connection.max",
        "db.client.connection.pending_requests",
        "db.client.connection.wait_time",
        "http.server.request.duration",
    ] {
        assert!(names.contains(name), "no {name} metric");
    }
    // Metrics every 10 s, sums cumulative and monotonic.
    let times: BTreeSet<u64> = points.iter().map(|p| p.4).collect();
    assert_eq!(times.len(), 3, "metric times {times:?}");
    for batch in batches.iter().filter(|batch| batch.metrics.is_some()) {
        let metrics = batch.metrics.as_ref().unwrap();
        for metric in metrics
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            match metric.data.as_ref().unwrap() {
                metric::Data::Sum(sum) => {
                    assert!(sum.is_monotonic);
                    assert_eq!(
                        sum.aggregation_temporality,
                        AggregationTemporality::Cumulative as i32
                    );
                    assert!(sum
                        .data_points
                        .iter()
                        .all(|p| p.start_time_unix_nano < p.time_unix_nano));
                }
                metric::Data::Histogram(histogram) => {
                    assert_eq!(
                        histogram.aggregation_temporality,
                        AggregationTemporality::Cumulative as i32
                    );
                }
                metric::Data::Gauge(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let states: BTreeSet<&str> = points
        .iter()
        .filter(|p| p.2 == "db.client.connection.count")
        .filter_map(|p| attr_str(&p.3, "db.client.connection.state"))
        .collect();
    assert_eq!(states, BTreeSet::from(["idle", "used"]));

    // Logs: several severities, ERROR records tied to traces.
    let mut severities = BTreeSet::new();
    for record in batches
        .iter()
        .filter_map(|b| b.logs.as_ref())
        .flat_map(|l| &l.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
    {
        severities.insert(record.severity_text.clone());
    }
    assert!(severities.len() >= 3, "severities {severities:?}");
}

/// Checks one OTLP/JSON value: hex ids, decimal-string 64-bit integers,
/// integer enums.
fn check_otlp_json(value: &Value, key: &str) {
    let hex = |text: &str, len: usize| {
        text.len() == len
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                check_otlp_json(value, key);
            }
        }
        Value::Array(items) => {
            for item in items {
                check_otlp_json(item, key);
            }
        }
        Value::String(text) => match key {
            "traceId" => assert!(text.is_empty() || hex(text, 32), "traceId {text:?}"),
            "spanId" | "parentSpanId" => {
                assert!(text.is_empty() || hex(text, 16), "{key} {text:?}")
            }
            _ if key.ends_with("UnixNano") || matches!(key, "intValue" | "asInt" | "count") => {
                assert!(text.parse::<i128>().is_ok(), "{key} {text:?}")
            }
            _ => {}
        },
        Value::Number(_) => {
            assert!(
                !key.ends_with("UnixNano") && !matches!(key, "intValue" | "asInt" | "count"),
                "{key} must be a decimal string"
            );
        }
        Value::Null => panic!("{key} is null"),
        Value::Bool(_) => {}
    }
    if matches!(
        key,
        "kind" | "code" | "severityNumber" | "aggregationTemporality"
    ) {
        assert!(value.is_number(), "{key} must be an integer enum: {value}");
    }
}

#[test]
fn json_lines_are_valid_otlp_and_round_trip() {
    let base = scenario(25, 5.0, &[("errors:cart", 5)]);
    let text = String::from_utf8(json_lines(base.clone())).unwrap();
    let batches: Vec<Batch> = Simulator::new(base).collect();
    let mut traces = Vec::new();
    let mut metrics = Vec::new();
    let mut logs = Vec::new();
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        check_otlp_json(&value, "");
        // The collector's own JSON path (replay) reads it back identically.
        let decoded = crate::receiver::decode::decode_json_any(line.as_bytes()).unwrap();
        if value.get("resourceSpans").is_some() {
            let request = serde_json::from_str::<ExportTraceServiceRequest>(line).unwrap();
            assert!(matches!(&decoded, JsonRequest::Traces(same) if *same == request));
            traces.push(request);
        } else if value.get("resourceMetrics").is_some() {
            let request = serde_json::from_str::<ExportMetricsServiceRequest>(line).unwrap();
            assert!(matches!(&decoded, JsonRequest::Metrics(same) if *same == request));
            metrics.push(request);
        } else if value.get("resourceLogs").is_some() {
            let request = serde_json::from_str::<ExportLogsServiceRequest>(line).unwrap();
            assert!(matches!(&decoded, JsonRequest::Logs(same) if *same == request));
            logs.push(request);
        } else {
            panic!("unknown line {line}");
        }
    }
    let expected_traces: Vec<_> = batches.iter().filter_map(|b| b.traces.clone()).collect();
    let expected_metrics: Vec<_> = batches.iter().filter_map(|b| b.metrics.clone()).collect();
    let expected_logs: Vec<_> = batches.iter().filter_map(|b| b.logs.clone()).collect();
    assert_eq!(traces.len(), 25);
    assert_eq!(metrics.len(), 2);
    assert_eq!(traces, expected_traces);
    assert_eq!(metrics, expected_metrics);
    assert_eq!(logs, expected_logs);
}

// === faults ===

#[test]
fn latency_multiplies_the_target_server_time_from_the_fault_on() {
    let (batches, start) = run(scenario(240, 20.0, &[("latency:payment", 120)]));
    let rows = rows(&batches);
    let payment: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("payment", SpanKind::Server))
        .cloned()
        .collect();
    let (before, after) = split_at(&payment, start, 120);
    let early = median(
        before
            .iter()
            .filter(|r| r.end < start + 60 * SECOND)
            .map(|r| r.duration_ms())
            .collect(),
    );
    let late = median(
        before
            .iter()
            .filter(|r| r.start >= start + 60 * SECOND)
            .map(|r| r.duration_ms())
            .collect(),
    );
    let after = median(after.iter().map(|r| r.duration_ms()).collect());
    assert!(
        after >= 3.0 * late,
        "payment p50 {late:.1} ms -> {after:.1} ms"
    );
    assert!(
        late < 1.3 * early && early < 1.3 * late,
        "no change before the fault: {early} vs {late}"
    );
    // The caller inherits it: checkout's server time rises too.
    let checkout: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("checkout", SpanKind::Server))
        .cloned()
        .collect();
    let (before, after) = split_at(&checkout, start, 120);
    let before = median(before.iter().map(|r| r.duration_ms()).collect());
    let after = median(after.iter().map(|r| r.duration_ms()).collect());
    assert!(
        after > before + 100.0,
        "checkout p50 {before:.1} ms -> {after:.1} ms"
    );
}

fn error_ratio(rows: &[&Row]) -> f64 {
    ratio(rows.iter().filter(|row| row.error).count(), rows.len())
}

#[test]
fn errors_raise_the_error_ratio_of_the_service_or_one_route() {
    let (batches, start) = run(scenario(180, 20.0, &[("errors:cart", 90)]));
    let rows = rows(&batches);
    let cart: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("cart", SpanKind::Server))
        .cloned()
        .collect();
    let (before, after) = split_at(&cart, start, 90);
    let (before, after) = (error_ratio(&before), error_ratio(&after));
    assert!(
        before < 0.02 && after > 0.15,
        "cart errors {before:.3} -> {after:.3}"
    );
    // Propagated to the caller's server spans.
    let frontend: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("frontend", SpanKind::Server) && r.name.contains("/cart"))
        .cloned()
        .collect();
    let (_, after) = split_at(&frontend, start, 90);
    assert!(
        error_ratio(&after) > 0.15,
        "frontend /cart errors {}",
        error_ratio(&after)
    );

    let (batches, start) = run(scenario(
        180,
        20.0,
        &[("errors:catalog:/products/{id}", 90)],
    ));
    let endpoint_rows = self::rows(&batches);
    let route = |route: &str| -> Vec<Row> {
        endpoint_rows
            .iter()
            .filter(|r| r.is("catalog", SpanKind::Server) && r.str("http.route") == Some(route))
            .cloned()
            .collect()
    };
    let target = route("/products/{id}");
    let other = route("/products");
    let (before, after) = split_at(&target, start, 90);
    assert!(error_ratio(&before) < 0.02 && error_ratio(&after) > 0.15);
    let (_, after) = split_at(&other, start, 90);
    assert!(error_ratio(&after) < 0.02, "the other route stays healthy");
}

#[test]
fn down_service_emits_nothing_and_callers_time_out() {
    let (batches, start) = run(scenario(120, 20.0, &[("down:inventory", 60)]));
    let rows = rows(&batches);
    let inventory: Vec<Row> = rows
        .iter()
        .filter(|r| r.service == "inventory")
        .cloned()
        .collect();
    let (before, after) = split_at(&inventory, start, 60);
    assert!(before.len() > 500);
    assert!(
        after.is_empty(),
        "{} inventory spans while down",
        after.len()
    );
    let calls: Vec<Row> = rows
        .iter()
        .filter(|r| {
            r.kind == SpanKind::Client as i32 && r.str("server.address") == Some("inventory")
        })
        .cloned()
        .collect();
    let (before, after) = split_at(&calls, start, 60);
    assert!(error_ratio(&before) < 0.02);
    assert!(after.len() > 200);
    for call in &after {
        assert!(call.error, "a call to a down service succeeded");
        assert_eq!(call.str("error.type"), Some("timeout"));
        assert!(
            (call.duration_ms() - 1000.0).abs() < 1.0,
            "ends at the timeout"
        );
    }
    let points = points(&batches);
    assert!(!points
        .iter()
        .any(|p| p.0 == "inventory" && p.4 > start + 61 * SECOND));
}

#[test]
fn slow_dependency_cascades_to_callers() {
    let (batches, start) = run(scenario(180, 20.0, &[("slow-dependency:user", 90)]));
    let rows = rows(&batches);
    let median_of = |filter: &dyn Fn(&Row) -> bool| {
        let selected: Vec<Row> = rows.iter().filter(|r| filter(r)).cloned().collect();
        let (before, after) = split_at(&selected, start, 90);
        (
            median(before.iter().map(|r| r.duration_ms()).collect()),
            median(after.iter().map(|r| r.duration_ms()).collect()),
        )
    };
    let (before, after) = median_of(&|r| r.service == "user" && r.str("db.system.name").is_some());
    assert!(after > 5.0 * before, "user DB {before:.2} -> {after:.2} ms");
    let (before, after) = median_of(&|r| r.is("user", SpanKind::Server));
    assert!(
        after > 2.0 * before,
        "user server {before:.2} -> {after:.2} ms"
    );
    let (before, after) = median_of(&|r| {
        r.is("frontend", SpanKind::Client) && r.str("server.address") == Some("user")
    });
    assert!(
        after > 2.0 * before,
        "frontend -> user {before:.2} -> {after:.2} ms"
    );
    // Other services' databases are not affected.
    let (before, after) =
        median_of(&|r| r.service == "payment" && r.str("db.system.name").is_some());
    assert!(after < 1.5 * before);
}

#[test]
fn retry_storm_multiplies_calls_per_caller_request() {
    let (batches, start) = run(scenario(
        240,
        20.0,
        &[("retry-storm:checkout:payment", 120)],
    ));
    let rows = rows(&batches);
    // Payment SERVER spans per checkout SERVER span (through the CLIENT).
    let clients: HashMap<&[u8], &Row> = rows
        .iter()
        .filter(|r| r.is("checkout", SpanKind::Client))
        .map(|r| (&r.id[..], r))
        .collect();
    // checkout server span id -> (first call's start, payment server spans).
    let mut counts: BTreeMap<Vec<u8>, (u64, usize)> = BTreeMap::new();
    for server in rows.iter().filter(|r| r.is("payment", SpanKind::Server)) {
        let client = clients[&server.parent[..]];
        let entry = counts
            .entry(client.parent.clone())
            .or_insert((client.start, 0));
        entry.0 = entry.0.min(client.start);
        entry.1 += 1;
    }
    let cut = start + 120 * SECOND;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (time, n) in counts.values() {
        if *time < cut {
            before.push(*n as f64);
        } else if *time > cut + SECOND {
            after.push(*n as f64);
        }
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    assert!(
        mean(&before) < 1.05,
        "calls per checkout before {}",
        mean(&before)
    );
    assert!(
        mean(&after) > 2.0,
        "calls per checkout during the storm {}",
        mean(&after)
    );
    assert!(
        after.iter().any(|n| *n >= 4.0),
        "some calls retried 3+ times"
    );
    // The callee's traffic rises.
    let payment: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("payment", SpanKind::Server))
        .cloned()
        .collect();
    let (before, after) = split_at(&payment, start, 120);
    assert!(
        after.len() as f64 > 1.8 * before.len() as f64,
        "{} -> {}",
        before.len(),
        after.len()
    );
}

/// Least-squares slope of (time, value) points, per second.
fn slope(points: &[(u64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0 as f64 / 1e9).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points
        .iter()
        .map(|p| (p.0 as f64 / 1e9 - mean_t) * (p.1 - mean_v))
        .sum();
    let var: f64 = points
        .iter()
        .map(|p| (p.0 as f64 / 1e9 - mean_t).powi(2))
        .sum();
    cov / var
}

#[test]
fn memory_leak_grows_memory_towards_the_limit() {
    let (batches, start) = run(scenario(1200, 1.0, &[("memory-leak:cart", 600)]));
    let points = points(&batches);
    let memory = |from: u64, to: u64| -> Vec<(u64, f64)> {
        points
            .iter()
            .filter(|p| p.0 == "cart" && p.2 == "process.memory.usage")
            .filter(|p| p.4 >= start + from * SECOND && p.4 < start + to * SECOND)
            .map(|p| (p.4, p.5))
            .collect()
    };
    let before = slope(&memory(0, 600));
    let after = slope(&memory(610, 1200));
    // 312 MiB of headroom in two hours: about 45 KB/s.
    assert!(after > 30_000.0, "slope during the leak {after:.0} B/s");
    assert!(
        before.abs() < 10_000.0,
        "slope before the leak {before:.0} B/s"
    );
    let limit = points
        .iter()
        .find(|p| p.0 == "cart" && p.2 == "k8s.container.memory.limit")
        .unwrap()
        .5;
    assert!(memory(0, 1200).iter().all(|p| p.1 < limit));
}

#[test]
fn memory_leak_ends_in_oom_restarts() {
    let scenario = scenario(2 * 3600 + 1200, 0.0, &[("memory-leak:cart", 0)]);
    let metrics_only = Signals {
        traces: false,
        metrics: true,
        logs: false,
    };
    let batches: Vec<Batch> = Simulator::new(scenario)
        .with_signals(metrics_only)
        .collect();
    let points = points(&batches);
    let cart = |name: &str| -> Vec<f64> {
        points
            .iter()
            .filter(|p| p.0 == "cart" && p.2 == name)
            .map(|p| p.5)
            .collect()
    };
    let limit = cart("k8s.container.memory.limit")[0];
    let memory = cart("process.memory.usage");
    assert!(memory.iter().all(|value| *value < limit));
    assert!(
        memory.iter().any(|value| *value > 0.9 * limit),
        "gets close to the limit"
    );
    let restarts = cart("k8s.container.restart.count");
    assert_eq!(restarts.first(), Some(&0.0));
    assert!(restarts.iter().all(|count| *count <= 1.0));
    assert!(restarts.last() == Some(&1.0), "OOM-killed within 2h20m");
}

#[test]
fn pool_exhaustion_saturates_the_pool_and_slows_the_db_edge() {
    let (batches, start) = run(scenario(180, 20.0, &[("pool-exhaustion:catalog", 90)]));
    let points = points(&batches);
    let cut = start + 90 * SECOND;
    let catalog = |name: &str, state: Option<&str>| -> Vec<&Point> {
        points
            .iter()
            .filter(|p| p.0 == "catalog" && p.2 == name)
            .filter(|p| state.is_none() || attr_str(&p.3, "db.client.connection.state") == state)
            .collect()
    };
    let max = catalog("db.client.connection.max", None)[0].5;
    for point in catalog("db.client.connection.pending_requests", None) {
        assert_eq!(
            point.5 > 0.0,
            point.4 > cut,
            "pending at {}",
            (point.4 - start) / SECOND
        );
    }
    for point in catalog("db.client.connection.count", Some("used")) {
        assert_eq!(point.5 == max, point.4 > cut, "used {} of {max}", point.5);
    }
    let rows = rows(&batches);
    let db: Vec<Row> = rows
        .iter()
        .filter(|r| r.service == "catalog" && r.str("db.system.name") == Some("postgresql"))
        .cloned()
        .collect();
    let (before, after) = split_at(&db, start, 90);
    let before = median(before.iter().map(|r| r.duration_ms()).collect());
    let after = median(after.iter().map(|r| r.duration_ms()).collect());
    assert!(
        after > 10.0 * before,
        "catalog DB edge {before:.2} -> {after:.2} ms"
    );
    assert!(rows
        .iter()
        .any(|r| r.str("error.type") == Some("ConnectionPoolTimeout")));
    // The query time itself (connection use time) stays flat; the wait for
    // a connection is what grew.
    let mean_between = |name: &str, from: u64, to: u64| {
        let (mut count, mut sum) = (0.0, 0.0);
        for metrics in batches.iter().filter_map(|batch| batch.metrics.as_ref()) {
            for resource_metrics in &metrics.resource_metrics {
                let resource = &resource_metrics.resource.as_ref().unwrap().attributes;
                if attr_str(resource, "service.name") != Some("catalog") {
                    continue;
                }
                for metric in resource_metrics
                    .scope_metrics
                    .iter()
                    .flat_map(|s| &s.metrics)
                {
                    let Some(metric::Data::Histogram(histogram)) = &metric.data else {
                        continue;
                    };
                    if metric.name != name {
                        continue;
                    }
                    for point in &histogram.data_points {
                        let sign = if point.time_unix_nano == from {
                            -1.0
                        } else if point.time_unix_nano == to {
                            1.0
                        } else {
                            continue;
                        };
                        count += sign * point.count as f64;
                        sum += sign * point.sum.unwrap();
                    }
                }
            }
        }
        sum / count
    };
    let (first, last) = (start + 10 * SECOND, start + 170 * SECOND);
    let use_before = mean_between("db.client.connection.use_time", first, cut);
    let use_after = mean_between("db.client.connection.use_time", cut + 10 * SECOND, last);
    assert!(
        use_after < 1.3 * use_before && use_before < 1.3 * use_after,
        "use time {use_before} -> {use_after}"
    );
    let wait_before = mean_between("db.client.connection.wait_time", first, cut);
    let wait_after = mean_between("db.client.connection.wait_time", cut + 10 * SECOND, last);
    assert!(
        wait_after > 0.05 && wait_before < 0.001,
        "wait {wait_before} -> {wait_after}"
    );
}

#[test]
fn cpu_throttling_shows_in_throttled_periods_and_latency() {
    let (batches, start) = run(scenario(180, 20.0, &[("cpu-throttling:pricing", 90)]));
    let points = points(&batches);
    let cut = start + 90 * SECOND;
    // Per pod: (time, periods, throttled).
    let mut series: BTreeMap<&str, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for point in points.iter().filter(|p| p.0 == "pricing") {
        let entry = series
            .entry(&point.1)
            .or_default()
            .entry(point.4)
            .or_default();
        match point.2.as_str() {
            "container.cpu.throttling_data.periods" => entry.0 = point.5,
            "container.cpu.throttling_data.throttled_periods" => entry.1 = point.5,
            _ => {}
        }
    }
    assert!(!series.is_empty());
    for pod in series.values() {
        let samples: Vec<_> = pod.iter().collect();
        for pair in samples.windows(2) {
            let ((_, (p0, t0)), (time, (p1, t1))) = (pair[0], pair[1]);
            let throttled = (t1 - t0) / (p1 - p0);
            if *time > cut + 10 * SECOND {
                assert!(throttled >= 0.25, "throttled ratio {throttled:.2}");
            } else if *time <= cut {
                assert!(throttled < 0.05, "throttled ratio before {throttled:.2}");
            }
        }
    }
    let rows = rows(&batches);
    let pricing: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("pricing", SpanKind::Server))
        .cloned()
        .collect();
    let (before, after) = split_at(&pricing, start, 90);
    let before = median(before.iter().map(|r| r.duration_ms()).collect());
    let after = median(after.iter().map(|r| r.duration_ms()).collect());
    assert!(after > 1.5 * before, "pricing {before:.2} -> {after:.2} ms");
}

#[test]
fn bad_deploy_rolls_out_a_slower_failing_version() {
    let (batches, start) = run(scenario(240, 20.0, &[("bad-deploy:payment", 120)]));
    let rows = rows(&batches);
    let payment: Vec<Row> = rows
        .iter()
        .filter(|r| r.is("payment", SpanKind::Server))
        .cloned()
        .collect();
    let (before, _) = split_at(&payment, start, 120);
    let old: BTreeSet<&str> = before.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(old, BTreeSet::from(["1.4.1"]));
    let new: Vec<&Row> = payment.iter().filter(|r| r.version != "1.4.1").collect();
    assert!(!new.is_empty(), "no new version");
    assert!(new.iter().all(|r| r.start >= start + 120 * SECOND));
    assert_eq!(new[0].version, "1.5.0");
    let old_p50 = median(before.iter().map(|r| r.duration_ms()).collect());
    let new_p50 = median(new.iter().map(|r| r.duration_ms()).collect());
    assert!(new_p50 > 2.0 * old_p50, "{old_p50:.1} -> {new_p50:.1} ms");
    assert!(error_ratio(&new) > error_ratio(&before) + 0.04);
    // The rollout replaces every pod: by the end only the new version serves.
    let last: BTreeSet<&str> = payment
        .iter()
        .filter(|r| r.start > start + 200 * SECOND)
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(last, BTreeSet::from(["1.5.0"]));
}

#[test]
fn bad_deploy_with_a_duration_is_rolled_back() {
    let mut scenario = scenario(240, 5.0, &[]);
    scenario.faults.push(Fault {
        kind: FaultKind::BadDeploy {
            service: "payment".to_owned(),
        },
        start: Duration::from_secs(60),
        duration: Some(Duration::from_secs(90)),
    });
    let (batches, start) = run(scenario);
    let rows = rows(&batches);
    let late: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.service == "payment" && r.start > start + 210 * SECOND)
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(late, BTreeSet::from(["1.4.1"]));
}

// === traffic shape and deploys ===

#[test]
fn daily_shape_shows_in_entry_rates_and_benign_deploys_change_versions() {
    let scenario = Scenario {
        seed: 3,
        start_unix_nanos: 1_736_121_600 * SECOND, // midnight UTC
        duration: Duration::from_secs(86_400),
        entry_rate_per_sec: 0.1,
        ..Scenario::default()
    };
    let mut per_hour = [0u64; 24];
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for batch in Simulator::new(scenario).with_signals(Signals::TRACES) {
        let Some(traces) = &batch.traces else {
            continue;
        };
        let hour = (batch.time_unix_nanos / SECOND % 86_400 / 3600) as usize;
        for resource_spans in &traces.resource_spans {
            let resource = &resource_spans.resource.as_ref().unwrap().attributes;
            let service = attr_str(resource, "service.name").unwrap();
            let version = attr_str(resource, "service.version").unwrap();
            if !versions
                .get(service)
                .is_some_and(|set| set.contains(version))
            {
                versions
                    .entry(service.to_owned())
                    .or_default()
                    .insert(version.to_owned());
            }
            if service == "frontend" {
                per_hour[hour] += resource_spans
                    .scope_spans
                    .iter()
                    .flat_map(|s| &s.spans)
                    .filter(|span| span.parent_span_id.is_empty())
                    .count() as u64;
            }
        }
    }
    let peak = (0..24).max_by_key(|&h| per_hour[h]).unwrap();
    let trough = (0..24).min_by_key(|&h| per_hour[h]).unwrap();
    assert!((13..=19).contains(&peak), "peak at {peak}:00: {per_hour:?}");
    assert!(
        (1..=7).contains(&trough),
        "trough at {trough}:00: {per_hour:?}"
    );
    assert!(
        per_hour[peak] as f64 > 2.2 * per_hour[trough] as f64,
        "{per_hour:?}"
    );
    let deployed: usize = versions.values().map(|set| set.len() - 1).sum();
    assert!(
        deployed >= 10,
        "only {deployed} benign deploys in a day: {versions:?}"
    );
}

#[test]
fn benign_deploys_keep_clear_of_faults() {
    let faulty = [
        "memory-leak:cart",
        "bad-deploy:payment",
        "latency:catalog",
        "cpu-throttling:pricing",
        "errors:user",
        "slow-dependency:inventory",
    ];
    let scenario = Scenario {
        seed: 5,
        duration: Duration::from_secs(4 * 3600),
        entry_rate_per_sec: 0.5,
        faults: faulty
            .iter()
            .map(|spec| Fault {
                kind: parse_fault(spec).unwrap(),
                start: Duration::from_secs(3600),
                duration: None,
            })
            .collect(),
        ..Scenario::default()
    };
    let start = scenario.start_unix_nanos;
    let metrics_only = Signals {
        traces: false,
        metrics: true,
        logs: false,
    };
    // First time each (service, version) reports.
    let mut first_seen: BTreeMap<(String, String), u64> = BTreeMap::new();
    for batch in Simulator::new(scenario).with_signals(metrics_only) {
        for resource_metrics in batch.metrics.iter().flat_map(|m| &m.resource_metrics) {
            let resource = &resource_metrics.resource.as_ref().unwrap().attributes;
            let service = attr_str(resource, "service.name").unwrap().to_owned();
            let version = attr_str(resource, "service.version").unwrap().to_owned();
            first_seen
                .entry((service, version))
                .or_insert(batch.time_unix_nanos);
        }
    }
    let deploys: Vec<(&String, u64)> = first_seen
        .iter()
        .filter(|(_, time)| **time > start + 10 * SECOND)
        // The bad deploy's own version is the fault, not a benign deploy.
        .filter(|((service, version), _)| !(service == "payment" && version == "1.5.0"))
        .map(|((service, _), time)| (service, (time - start) / SECOND))
        .collect();
    assert!(deploys.len() >= 3, "{deploys:?}");
    for (service, second) in deploys {
        assert!(
            !faulty
                .iter()
                .any(|spec| spec.ends_with(&format!(":{service}")))
                || second < 2700,
            "{service} redeployed at {second}s while faulty"
        );
        assert!(
            !(2700..=3900).contains(&second),
            "{service} deployed at {second}s, next to the fault"
        );
    }
}

// === parsing and scenarios ===

#[test]
fn fault_specs_parse_and_explain_mistakes() {
    let cases = [
        (
            "latency:payment",
            FaultKind::Latency {
                service: "payment".into(),
                scope: None,
            },
        ),
        (
            "errors:checkout:/api/checkout",
            FaultKind::Errors {
                service: "checkout".into(),
                route: Some("/api/checkout".into()),
                scope: None,
            },
        ),
        (
            "errors:cart",
            FaultKind::Errors {
                service: "cart".into(),
                route: None,
                scope: None,
            },
        ),
        (
            "down:inventory",
            FaultKind::Down {
                service: "inventory".into(),
            },
        ),
        (
            "slow-dependency:user",
            FaultKind::SlowDependency {
                service: "user".into(),
            },
        ),
        (
            "retry-storm:checkout:payment",
            FaultKind::RetryStorm {
                caller: "checkout".into(),
                callee: "payment".into(),
            },
        ),
        (
            "memory-leak:cart",
            FaultKind::MemoryLeak {
                service: "cart".into(),
            },
        ),
        (
            "pool-exhaustion:catalog",
            FaultKind::PoolExhaustion {
                service: "catalog".into(),
            },
        ),
        (
            "cpu-throttling:pricing",
            FaultKind::CpuThrottling {
                service: "pricing".into(),
            },
        ),
        (
            "bad-deploy:payment",
            FaultKind::BadDeploy {
                service: "payment".into(),
            },
        ),
        (
            "slow:inventory:300",
            FaultKind::Slow {
                service: "inventory".into(),
                added_ms: 300,
                scope: None,
            },
        ),
        (
            "timeouts:checkout:payment",
            FaultKind::Timeouts {
                caller: "checkout".into(),
                callee: "payment".into(),
            },
        ),
        (
            "missing-timeout:checkout:payment",
            FaultKind::MissingTimeout {
                caller: "checkout".into(),
                callee: "payment".into(),
            },
        ),
        (
            "flag-flip:checkout:new-checkout-flow",
            FaultKind::FlagFlip {
                service: "checkout".into(),
                flag: "new-checkout-flow".into(),
            },
        ),
        (
            "canary:catalog",
            FaultKind::Canary {
                service: "catalog".into(),
            },
        ),
        (
            "errors:inventory@cloud.region=eu-west-1",
            FaultKind::Errors {
                service: "inventory".into(),
                route: None,
                scope: Some(Scope::Region("eu-west-1".into())),
            },
        ),
        (
            "slow:cart:400@pod=1",
            FaultKind::Slow {
                service: "cart".into(),
                added_ms: 400,
                scope: Some(Scope::Pod(1)),
            },
        ),
        (
            "errors:catalog:/products/{id}@app.tenant=initech",
            FaultKind::Errors {
                service: "catalog".into(),
                route: Some("/products/{id}".into()),
                scope: Some(Scope::Attribute {
                    key: "app.tenant".into(),
                    value: "initech".into(),
                }),
            },
        ),
        (
            "latency:payment@pod=0",
            FaultKind::Latency {
                service: "payment".into(),
                scope: Some(Scope::Pod(0)),
            },
        ),
    ];
    for (spec, expected) in cases {
        let parsed = parse_fault(spec).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(parsed.to_string(), spec, "Display gives the spec back");
    }
    // gRPC methods work as routes, short or qualified.
    assert!(parse_fault("errors:cart:GetCart").is_ok());
    assert!(parse_fault("errors:cart:oteldemo.CartService/AddItem").is_ok());

    let message = |spec: &str| parse_fault(spec).unwrap_err().to_string();
    assert!(
        message("latency:paymnt").contains("payment"),
        "lists the services"
    );
    assert!(
        message("errors:catalog:/nope").contains("/products/{id}"),
        "lists the routes"
    );
    assert!(message("retry-storm:payment:checkout").contains("does not call"));
    assert!(
        message("pool-exhaustion:cart").contains("catalog"),
        "lists pooled services"
    );
    assert!(message("slow-dependency:frontend").contains("user"));
    assert!(message("explode:cart").contains("latency:SERVICE"));
    assert!(message("latency").contains("KIND:SERVICE"));
    // The short scope keys read as the long ones.
    assert_eq!(
        parse_fault("errors:cart@region=eu-west-1")
            .unwrap()
            .to_string(),
        "errors:cart@cloud.region=eu-west-1"
    );
    assert_eq!(
        parse_fault("slow:cart").unwrap().to_string(),
        format!("slow:cart:{}", fault::SLOW_DEFAULT_MS)
    );
    assert!(message("errors:cart@cloud.region=mars").contains("eu-west-1"));
    assert!(message("errors:payment@pod=2").contains("0 to 1"));
    assert!(message("errors:cart@app.tenant=nobody").contains("initech"));
    assert!(message("errors:cart@service.version=9").contains("not a trace attribute"));
    assert!(message("errors:cart@tenant").contains("KEY=VALUE"));
    assert!(message("down:cart@pod=1").contains("takes no scope"));
    assert!(message("timeouts:payment:checkout").contains("does not call"));
    assert!(message("timeouts:checkout").contains("CALLER:CALLEE"));
    assert!(message("flag-flip:checkout").contains("SERVICE:FLAG"));
    assert!(message("flag-flip:checkout:bad key!").contains("flag key"));
    assert!(message("slow:cart:fast").contains("milliseconds"));
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    for bad in ["", "m", "5x", "-3", "1h-5m"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn named_scenarios_cover_every_fault_kind() {
    let scenarios = named_scenarios();
    let mut kinds = BTreeSet::new();
    for (name, scenario) in &scenarios {
        assert!(Simulator::try_new(scenario.clone()).is_ok(), "{name}");
        // The second shop's scenarios have their own test (tests/shop2.rs).
        if scenario.shop != Shop::First {
            assert!(name.starts_with("shop2-"), "{name}");
            continue;
        }
        for fault in &scenario.faults {
            assert!(fault.start < scenario.duration);
            assert!(
                fault.start >= Duration::from_secs(30 * 60),
                "{name}: detectors need warm-up"
            );
            kinds.insert(fault.kind.name());
        }
    }
    assert!(scenarios
        .iter()
        .any(|(name, s)| *name == "healthy" && s.faults.is_empty()));
    assert_eq!(kinds.len(), 9, "{kinds:?}");
}

#[test]
fn invalid_faults_are_rejected_or_skipped() {
    let mut scenario = scenario(5, 5.0, &[]);
    scenario.faults.push(Fault {
        kind: FaultKind::Latency {
            service: "nope".into(),
            scope: None,
        },
        start: Duration::ZERO,
        duration: None,
    });
    let error = Simulator::try_new(scenario.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("nope") && error.contains("payment"),
        "{error}"
    );
    // The lenient constructor runs without it.
    assert_eq!(Simulator::new(scenario).count(), 5);
}

#[test]
fn simulate_args_build_scenarios() {
    let args = SimulateArgs {
        faults: vec!["down:inventory".into(), "latency:payment".into()],
        fault_at: vec!["10m".into(), "20m".into()],
        fault_for: vec!["5m".into()],
        duration: Some("30m".into()),
        seed: Some(9),
        rate: Some(3.0),
        no_daily_shape: true,
        ..SimulateArgs::default()
    };
    let scenario = args.to_scenario().unwrap();
    assert_eq!(scenario.seed, 9);
    assert_eq!(scenario.duration, Duration::from_secs(1800));
    assert!(!scenario.daily_shape && scenario.benign_deploys);
    assert_eq!(scenario.faults.len(), 2);
    assert_eq!(scenario.faults[0].duration, Some(Duration::from_secs(300)));
    assert_eq!(scenario.faults[1].duration, None);

    let signals = SimulateArgs {
        signals: vec!["traces".into(), "logs".into()],
        ..SimulateArgs::default()
    };
    let signals = signals.to_signals().unwrap();
    assert!(signals.traces && signals.logs && !signals.metrics);
    assert!(SimulateArgs {
        signals: vec!["spans".into()],
        ..SimulateArgs::default()
    }
    .to_signals()
    .is_err());

    let named = SimulateArgs {
        scenario: Some("latency".into()),
        ..SimulateArgs::default()
    };
    assert_eq!(named.to_scenario().unwrap().faults.len(), 1);

    let error = |args: SimulateArgs| args.to_scenario().unwrap_err().to_string();
    assert!(error(SimulateArgs {
        scenario: Some("nope".into()),
        ..SimulateArgs::default()
    })
    .contains("healthy"));
    assert!(error(SimulateArgs {
        faults: vec!["down:cart".into()],
        ..SimulateArgs::default()
    })
    .contains("--fault-at"));
    assert!(error(SimulateArgs {
        faults: vec!["down:cart".into()],
        fault_at: vec!["2h".into()],
        ..SimulateArgs::default()
    })
    .contains("after the run ends"));
}

#[test]
fn realtime_shift_moves_every_timestamp() {
    let mut batch = Simulator::new(scenario(11, 5.0, &[])).nth(10).unwrap();
    let before = rows(std::slice::from_ref(&batch));
    output::shift_batch(&mut batch, 1_000);
    let after = rows(std::slice::from_ref(&batch));
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.start, old.start + 1_000);
        assert_eq!(new.end, old.end + 1_000);
    }
    let metrics = points(std::slice::from_ref(&batch));
    assert!(metrics.iter().all(|p| p.4 == batch.time_unix_nanos));
}

// === live OTLP ===

/// An OTLP/gRPC collector that counts what it receives.
#[derive(Debug, Clone, Default)]
struct Counting {
    spans: Arc<AtomicU64>,
    points: Arc<AtomicU64>,
    logs: Arc<AtomicU64>,
    /// End time of the last span received.
    last_end: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.spans
            .fetch_add(output::span_count(&request), Ordering::Relaxed);
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            self.last_end
                .store(span.end_time_unix_nano, Ordering::Relaxed);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.points.fetch_add(
            output::point_count(&request.into_inner()),
            Ordering::Relaxed,
        );
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.logs
            .fetch_add(output::log_count(&request.into_inner()), Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tokio::test]
async fn send_otlp_delivers_every_item_and_paces_realtime() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = Counting::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .add_service(MetricsServiceServer::new(collector.clone()))
        .add_service(LogsServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let summary = send_otlp(Simulator::new(scenario(21, 5.0, &[])), &endpoint, false)
        .await
        .unwrap();
    assert!(summary.spans > 500 && summary.data_points > 0 && summary.log_records > 0);
    assert_eq!(collector.spans.load(Ordering::Relaxed), summary.spans);
    assert_eq!(
        collector.points.load(Ordering::Relaxed),
        summary.data_points
    );
    assert_eq!(collector.logs.load(Ordering::Relaxed), summary.log_records);
    let simulated = collector.last_end.load(Ordering::Relaxed);
    assert!(
        simulated < DEFAULT_START_UNIX_NANOS + 21 * SECOND,
        "simulated times kept"
    );

    // Realtime: one batch per wall-clock second, stamped with the present.
    let started = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    send_otlp(Simulator::new(scenario(2, 5.0, &[])), &endpoint, true)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    let last = collector.last_end.load(Ordering::Relaxed);
    assert!(
        last >= wall && last < wall + 3 * SECOND,
        "re-stamped to now"
    );
    server.abort();
}

#[tokio::test]
async fn send_otlp_says_where_it_could_not_connect() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = send_otlp(Simulator::new(scenario(1, 1.0, &[])), &endpoint, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&endpoint) && error.contains("collector"),
        "{error}"
    );
    let error = send_otlp(Simulator::new(scenario(1, 1.0, &[])), "not a url", false)
        .await
        .unwrap_err();
    assert!(matches!(error, SimError::Connect { .. }), "{error}");
}

#[test]
fn large_requests_are_split_by_resource() {
    let batch = Simulator::new(scenario(3, 50.0, &[])).nth(2).unwrap();
    let resources = batch.traces.unwrap().resource_spans;
    let total: usize = resources.iter().map(prost::Message::encoded_len).sum();
    let count = resources.len();
    let requests = output::split(resources, total / 3, |resource_spans| {
        ExportTraceServiceRequest { resource_spans }
    });
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert_eq!(
        requests
            .iter()
            .map(|r| r.resource_spans.len())
            .sum::<usize>(),
        count
    );
}

mod rca;
mod readers;
mod shop2;
