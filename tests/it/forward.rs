//! Forwarding against real upstreams: a second triage instance, and an
//! OTLP/gRPC server in this file that fails on purpose. Every span sent to
//! the front instance is identified by its span id, so "nothing lost" is
//! checked id by id, and duplicates are told apart from losses. Batching
//! is on (the default) unless a test needs each received request to reach
//! the upstream as a request of its own.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};

use crate::common::collector::Collector;
use crate::common::{test_settings, TestServer};
use triage::forward::config::{BatchConfig, ExporterConfig, Protocol, RetryConfig};
use triage::model::SeriesKind;

/// Longest wait for anything to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

// === requests ===

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A request of `ids.len()` SERVER spans named `name`, span ids as given.
fn spans(
    service: &str,
    name: &str,
    ids: impl IntoIterator<Item = u64>,
) -> ExportTraceServiceRequest {
    let end = now_nanos() - 1_000_000_000;
    let spans = ids
        .into_iter()
        .map(|id| Span {
            trace_id: [id.to_be_bytes(), id.to_be_bytes()].concat(),
            span_id: id.to_be_bytes().to_vec(),
            name: name.to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: end - 5_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span_ids(request: &ExportTraceServiceRequest) -> Vec<u64> {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .filter_map(|span| {
            span.span_id
                .as_slice()
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
        })
        .collect()
}

/// An exporter to `address` over `protocol`, retrying quickly.
fn exporter(name: &str, protocol: Protocol, address: SocketAddr) -> ExporterConfig {
    let mut exporter = ExporterConfig::new(
        name,
        protocol,
        format!("http://{address}").parse().expect("URL"),
    );
    exporter.retry = RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_millis(500),
        max_elapsed_time: Duration::ZERO,
    };
    exporter.queue.num_consumers = 4.try_into().expect("non-zero");
    exporter
}

async fn front_with(exporter: ExporterConfig) -> TestServer {
    let mut settings = test_settings();
    settings.forward.exporters = vec![exporter];
    TestServer::start_with(settings).await
}

async fn send_grpc(address: SocketAddr, request: ExportTraceServiceRequest) {
    let mut client = TraceServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect to the front instance");
    client.export(request).await.expect("front accepts spans");
}

async fn metrics_text(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of the sample of `name` with every one of `labels`.
fn sample(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls the front's `/metrics` until the sample of `name` with `labels`
/// is `want` (the front counts an answer a moment after the upstream
/// recorded the request); fails after `PATIENCE`.
async fn wait_for_sample(admin: SocketAddr, name: &str, labels: &[&str], want: f64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exposition = metrics_text(admin).await;
        let got = sample(&exposition, name, labels);
        if got == Some(want) {
            return exposition;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {got:?}, want {want}:\n{exposition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it is true; fails after `PATIENCE`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === an upstream that fails on purpose ===

/// What the test upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Accepts everything.
    Accept,
    /// Fails the first attempt of every third request with UNAVAILABLE
    /// (half of them with a RetryInfo of 150 ms), refuses requests of spans
    /// named `poison` with INVALID_ARGUMENT and those named `exhausted`
    /// with RESOURCE_EXHAUSTED without RetryInfo (both permanent).
    Flaky,
    /// Fails the first attempt of every request with UNAVAILABLE, and
    /// refuses every request holding a span named `poison` with
    /// INVALID_ARGUMENT.
    FailOnce,
}

#[derive(Default)]
struct Seen {
    /// Span id -> times accepted.
    accepted: HashMap<u64, u32>,
    /// First span id of a request -> attempts, accepted or not.
    attempts: HashMap<u64, u32>,
    /// Requests that carried the gzip'd body's metadata header.
    with_header: u32,
    /// Span ids of each accepted request, in arrival order.
    requests: Vec<Vec<u64>>,
}

#[derive(Clone)]
struct Upstream {
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl TraceService for Upstream {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let header = request.metadata().get("x-tenant").is_some();
        let request = request.into_inner();
        let ids = span_ids(&request);
        let name = request
            .resource_spans
            .first()
            .and_then(|resource| resource.scope_spans.first())
            .and_then(|scope| scope.spans.first())
            .map(|span| span.name.clone())
            .unwrap_or_default();
        let poisoned = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| &scope.spans)
            .any(|span| span.name == "poison");
        let key = ids.first().copied().unwrap_or(0);
        let mut seen = self.seen.lock();
        if header {
            seen.with_header += 1;
        }
        let attempt = {
            let attempts = seen.attempts.entry(key).or_default();
            *attempts += 1;
            *attempts
        };
        if self.behaviour == Behaviour::Flaky {
            if name == "poison" {
                return Err(Status::invalid_argument("poison spans"));
            }
            if name == "exhausted" {
                return Err(Status::resource_exhausted("no RetryInfo: do not retry"));
            }
            if attempt == 1 && (key / 100) % 3 == 0 {
                if (key / 100) % 2 == 0 {
                    return Err(unavailable_with_retry_info(Duration::from_millis(150)));
                }
                return Err(Status::unavailable("try again"));
            }
        }
        if self.behaviour == Behaviour::FailOnce {
            if poisoned {
                return Err(Status::invalid_argument("poison spans"));
            }
            if attempt == 1 {
                return Err(Status::unavailable("try again"));
            }
        }
        for id in &ids {
            *seen.accepted.entry(*id).or_default() += 1;
        }
        seen.requests.push(ids);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// UNAVAILABLE with a `google.rpc.RetryInfo` detail.
fn unavailable_with_retry_info(delay: Duration) -> Status {
    use triage::receiver::admission::{ProtoDuration, RetryInfo, RETRY_INFO_TYPE};
    use triage::receiver::http::{AnyMsg, RpcStatus};
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: 0,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: Code::Unavailable as i32,
        message: "busy".into(),
        details: vec![AnyMsg {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(Code::Unavailable, "busy", status.encode_to_vec().into())
}

struct RunningUpstream {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
}

impl RunningUpstream {
    async fn start(listener: TcpListener, behaviour: Behaviour) -> RunningUpstream {
        let address = listener.local_addr().expect("upstream address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let service = TraceServiceServer::new(Upstream {
            behaviour,
            seen: Arc::clone(&seen),
        })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        RunningUpstream {
            address,
            seen,
            stop,
        }
    }

    fn accepted(&self) -> HashMap<u64, u32> {
        self.seen.lock().accepted.clone()
    }
}

impl Drop for RunningUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A free loopback port, for an upstream that starts later.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address")
}

/// Binds `address` again, retrying briefly (the port was freed just now).
async fn bind_again(address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot bind {address} again: {error}"),
        }
    }
}

// === the tests ===

/// A front triage forwards to a second triage over gRPC and over HTTP;
/// the upstream records every span (sent over gRPC, HTTP protobuf and HTTP
/// JSON) and every log record the front accepted.
#[tokio::test]
async fn a_second_triage_receives_every_accepted_span() {
    let upstream = TestServer::start().await;
    for (protocol, name) in [
        (Protocol::Grpc, "to-triage-grpc"),
        (Protocol::Http, "to-triage-http"),
    ] {
        let address = match protocol {
            Protocol::Grpc => upstream.addresses.grpc,
            Protocol::Http => upstream.addresses.http,
        };
        let front = front_with(exporter(name, protocol, address)).await;
        let service = format!("svc-{name}");
        // gRPC in: 5 requests of 20 spans.
        for request in 0..5u64 {
            send_grpc(
                front.addresses.grpc,
                spans(&service, "grpc-in", request * 100..request * 100 + 20),
            )
            .await;
        }
        // HTTP protobuf in: 30 spans; HTTP JSON in: 7 spans.
        let http = reqwest::Client::new();
        let protobuf = spans(&service, "http-in", 1000..1030).encode_to_vec();
        let answer = http
            .post(format!("{}/v1/traces", front.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(protobuf)
            .send()
            .await
            .expect("POST protobuf");
        assert_eq!(answer.status(), 200);
        let json = json_spans(&service, "json-in", 2000..2007);
        let answer = http
            .post(format!("{}/v1/traces", front.http_url()))
            .header("content-type", "application/json")
            .body(json)
            .send()
            .await
            .expect("POST JSON");
        assert_eq!(answer.status(), 200);
        // Logs too.
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![text("service.name", &service)],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..3)
                        .map(|_| LogRecord {
                            time_unix_nano: now_nanos() - 1_000_000_000,
                            severity_number: 17,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let answer = http
            .post(format!("{}/v1/logs", front.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(logs.encode_to_vec())
            .send()
            .await
            .expect("POST logs");
        assert_eq!(answer.status(), 200);

        let count = |kind, series: &str| {
            upstream
                .stats(kind, &service, series)
                .map_or(0, |stats| stats.requests)
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = (
                count(SeriesKind::Operation, "grpc-in"),
                count(SeriesKind::Operation, "http-in"),
                count(SeriesKind::Operation, "json-in"),
                count(SeriesKind::Log, "all"),
            );
            // Span id 0 (the first of the first request) is invalid: the
            // front rejected it in a partial success but forwarded the
            // request as received, and the upstream rejected it too.
            if got == (99, 30, 7, 3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: upstream has (grpc, http, json, logs) = {got:?}, want (99, 30, 7, 3)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The front's own counters agree.
        let label = format!("exporter=\"{name}\"");
        wait_for_sample(
            front.addresses.admin,
            "triage_exporter_sent_items_total",
            &[&label, "signal=\"traces\""],
            136.0,
        )
        .await;
        let exposition = wait_for_sample(
            front.addresses.admin,
            "triage_exporter_sent_items_total",
            &[&label, "signal=\"logs\""],
            3.0,
        )
        .await;
        assert_eq!(
            sample(&exposition, "triage_exporter_queue_size", &[&label]),
            Some(0.0)
        );
        assert_eq!(
            sample(&exposition, "triage_exporter_queue_capacity", &[&label]),
            Some(200_000.0)
        );
        for (reason, items) in [
            ("permanent", 0.0),
            ("retries_exhausted", 0.0),
            ("rejected", 1.0),
            ("shutdown", 0.0),
        ] {
            assert_eq!(
                sample(
                    &exposition,
                    "triage_exporter_send_failed_items_total",
                    &[&label, "signal=\"traces\"", &format!("reason=\"{reason}\"")]
                ),
                Some(items),
                "{reason}"
            );
        }
        front.stop().await;
    }
    upstream.stop().await;
}

/// OTLP/JSON of `spans(..)`: hex ids, integer enums, string int64s.
fn json_spans(service: &str, name: &str, ids: std::ops::Range<u64>) -> String {
    let end = now_nanos() - 1_000_000_000;
    let spans: Vec<_> = ids
        .map(|id| {
            serde_json::json!({
                "traceId": format!("{id:016x}{id:016x}"),
                "spanId": format!("{id:016x}"),
                "name": name,
                "kind": 2,
                "startTimeUnixNano": (end - 5_000_000).to_string(),
                "endTimeUnixNano": end.to_string(),
            })
        })
        .collect();
    serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": spans}],
        }]
    })
    .to_string()
}

/// The upstream fails a share of requests with UNAVAILABLE (some with
/// RetryInfo) and refuses some for good: every retryable failure arrives
/// in the end, exactly once; the permanent ones are tried once and counted
/// as dropped.
#[tokio::test]
async fn retryable_failures_arrive_and_permanent_ones_are_dropped() {
    let upstream = RunningUpstream::start(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        Behaviour::Flaky,
    )
    .await;
    let mut config = exporter("flaky", Protocol::Grpc, upstream.address);
    // The upstream tells requests apart by their first span: each received
    // request must reach it as a request of its own.
    config.queue.batch = None;
    config.headers = vec![triage::forward::config::Header {
        name: "x-tenant".into(),
        value: "team-a".into(),
    }];
    let front = front_with(config).await;
    // 30 requests of 10 spans: ids r*100 .. r*100+9.
    let mut expected = HashSet::new();
    for request in 0..30u64 {
        let ids = request * 100..request * 100 + 10;
        expected.extend(ids.clone());
        send_grpc(front.addresses.grpc, spans("flaky-svc", "ok", ids)).await;
    }
    // Two poisoned requests and one RESOURCE_EXHAUSTED without RetryInfo.
    send_grpc(
        front.addresses.grpc,
        spans("flaky-svc", "poison", 5000..5010),
    )
    .await;
    send_grpc(
        front.addresses.grpc,
        spans("flaky-svc", "poison", 5100..5105),
    )
    .await;
    send_grpc(
        front.addresses.grpc,
        spans("flaky-svc", "exhausted", 5200..5204),
    )
    .await;

    eventually("every retried span arrives", || {
        let accepted = upstream.accepted();
        expected.iter().all(|id| accepted.contains_key(id))
    })
    .await;
    let label = "exporter=\"flaky\"";
    // 10 + 5 poisoned spans and 4 exhausted ones.
    wait_for_sample(
        front.addresses.admin,
        "triage_exporter_send_failed_items_total",
        &[label, "signal=\"traces\"", "reason=\"permanent\""],
        19.0,
    )
    .await;
    let exposition = wait_for_sample(
        front.addresses.admin,
        "triage_exporter_sent_items_total",
        &[label, "signal=\"traces\""],
        300.0,
    )
    .await;
    {
        let seen = upstream.seen.lock();
        // Exactly once: the failed attempts recorded nothing.
        let duplicates: Vec<_> = seen.accepted.iter().filter(|(_, n)| **n > 1).collect();
        assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
        assert!(
            !seen.accepted.keys().any(|id| *id >= 5000),
            "refused spans were not recorded"
        );
        // Every third request failed once and was tried again; the refused
        // ones were tried once.
        for request in 0..30u64 {
            let attempts = seen.attempts[&(request * 100)];
            let want = if request % 3 == 0 { 2 } else { 1 };
            assert_eq!(attempts, want, "attempts of request {request}");
        }
        for key in [5000, 5100, 5200] {
            assert_eq!(
                seen.attempts[&key], 1,
                "a permanent error is not retried ({key})"
            );
        }
        assert_eq!(
            seen.with_header,
            30 + 10 + 3,
            "headers go with every request"
        );
    }
    assert_eq!(
        sample(
            &exposition,
            "triage_exporter_retries_total",
            &[label, "signal=\"traces\""]
        ),
        Some(10.0)
    );
    front.stop().await;
}

/// The upstream is down for 12 s while spans keep coming, then comes up:
/// every span arrives.
#[tokio::test]
async fn an_upstream_outage_loses_nothing() {
    let address = free_port();
    let front = front_with(exporter("outage", Protocol::Grpc, address)).await;
    let mut expected = HashSet::new();
    let outage = Instant::now();
    for request in 0..24u64 {
        let ids = request * 100..request * 100 + 5;
        expected.extend(ids.clone());
        send_grpc(front.addresses.grpc, spans("outage-svc", "op", ids)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The exporter has been failing and retrying all along.
    let exposition = metrics_text(front.addresses.admin).await;
    let retries = sample(
        &exposition,
        "triage_exporter_retries_total",
        &["exporter=\"outage\"", "signal=\"traces\""],
    )
    .unwrap_or(0.0);
    assert!(retries > 0.0, "no retries while the upstream was down");
    assert!(outage.elapsed() >= Duration::from_secs(12));
    let upstream = RunningUpstream::start(bind_again(address).await, Behaviour::Accept).await;
    eventually("every span sent during the outage arrives", || {
        let accepted = upstream.accepted();
        expected.iter().all(|id| accepted.contains_key(id))
    })
    .await;
    wait_for_sample(
        front.addresses.admin,
        "triage_exporter_sent_items_total",
        &["exporter=\"outage\"", "signal=\"traces\""],
        120.0,
    )
    .await;
    front.stop().await;
}

/// The real binary with a persistent queue, its upstream down: SIGKILLed
/// once every request is on disk, started again with the upstream up, it
/// sends every span, and the queue directory empties.
#[tokio::test]
async fn a_persistent_queue_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let queue_dir = dir.path().join("queue");
    let upstream_address = free_port();
    let config = dir.path().join("triage.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp:
    grpc: {{ endpoint: "127.0.0.1:0" }}
    http: {{ endpoint: "127.0.0.1:0" }}
admin: {{ endpoint: "127.0.0.1:0" }}
api: {{ endpoint: "127.0.0.1:0" }}
storage: {{ enabled: false }}
forward:
  exporters:
    durable:
      endpoint: "http://{upstream_address}"
      sending_queue: {{ num_consumers: 4, storage: "{}" }}
      retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s }}
"#,
            queue_dir.display()
        ),
    )
    .expect("write config");

    let collector = Collector::start(&config);
    let http = reqwest::Client::new();
    let mut expected = HashSet::new();
    for request in 0..20u64 {
        let ids = request * 100..request * 100 + 8;
        expected.extend(ids.clone());
        let answer = http
            .post(format!("http://{}/v1/traces", collector.http))
            .header("content-type", "application/x-protobuf")
            .body(spans("durable-svc", "op", ids).encode_to_vec())
            .send()
            .await
            .expect("POST spans");
        assert_eq!(answer.status(), 200);
    }
    // Every accepted request is in a segment before the kill.
    eventually("all 20 requests are on disk", || {
        records_on_disk(&queue_dir) == 20
    })
    .await;
    collector.kill();
    assert_eq!(records_on_disk(&queue_dir), 20, "SIGKILL lost segments");

    let upstream =
        RunningUpstream::start(bind_again(upstream_address).await, Behaviour::Accept).await;
    let collector = Collector::start(&config);
    eventually("every span queued before the SIGKILL arrives", || {
        let accepted = upstream.accepted();
        expected.iter().all(|id| accepted.contains_key(id))
    })
    .await;
    eventually("sent requests leave the disk", || {
        records_on_disk(&queue_dir) == 0
    })
    .await;
    drop(collector);
}

/// Requests in the segment files of a persistent queue directory (the
/// format of `triage::forward::disk`: an 8-byte magic, then records of an
/// 18-byte header whose first 4 bytes are the body length, and the body).
fn records_on_disk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut records = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("seg") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut rest = &bytes[8.min(bytes.len())..];
        while rest.len() >= 18 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 18 + len {
                break;
            }
            records += 1;
            rest = &rest[18 + len..];
        }
    }
    records
}

/// A queue that is full never makes the receivers wait: every request is
/// answered at once, and what does not fit is dropped and counted.
#[tokio::test]
async fn a_full_queue_drops_and_counts_without_slowing_ingestion() {
    let mut config = exporter("tiny", Protocol::Grpc, free_port());
    config.queue.queue_size = 10.try_into().expect("non-zero");
    config.queue.num_consumers = 1.try_into().expect("non-zero");
    let front = front_with(config).await;
    let mut client = TraceServiceClient::connect(front.grpc_url())
        .await
        .expect("connect to the front instance");
    for request in 0..5u64 {
        let started = Instant::now();
        client
            .export(spans(
                "tiny-svc",
                "op",
                request * 100 + 1..request * 100 + 9,
            ))
            .await
            .expect("accepted though the upstream is down");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {request} waited {:?}",
            started.elapsed()
        );
    }
    // One request of 8 spans in flight (retrying) and one queued at most;
    // the queue holds 10 items, so the other three or four were dropped.
    let exposition = metrics_text(front.addresses.admin).await;
    let dropped = sample(
        &exposition,
        "triage_exporter_enqueue_failed_items_total",
        &["exporter=\"tiny\"", "signal=\"traces\""],
    );
    assert!(
        matches!(dropped, Some(value) if value == 24.0 || value == 32.0),
        "dropped {dropped:?}\n{exposition}"
    );
    // Detection saw every span regardless.
    assert_eq!(
        front
            .stats(SeriesKind::Operation, "tiny-svc", "op")
            .map(|stats| stats.requests),
        Some(40)
    );
    front.stop().await;
}

/// An OTLP/HTTP upstream that answers the first attempt of every even
/// request 503 with `Retry-After: 1`, the first of every request divisible
/// by 5 with 429 (no header), and requests of spans named `poison` 400.
/// It records when each attempt came.
#[derive(Clone, Default)]
struct HttpUpstream {
    /// First span id of a request -> when each attempt arrived.
    attempts: Arc<Mutex<HashMap<u64, Vec<Instant>>>>,
    accepted: Arc<Mutex<HashMap<u64, u32>>>,
}

async fn http_upstream_export(
    axum::extract::State(upstream): axum::extract::State<HttpUpstream>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use std::io::Read;
    let body = if headers
        .get("content-encoding")
        .is_some_and(|value| value == "gzip")
    {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("gzip body");
        plain
    } else {
        body.to_vec()
    };
    let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("protobuf body");
    let ids = span_ids(&request);
    let key = ids.first().copied().unwrap_or(0);
    let poison = request.resource_spans[0].scope_spans[0].spans[0].name == "poison";
    let attempt = {
        let mut attempts = upstream.attempts.lock();
        let seen = attempts.entry(key).or_default();
        seen.push(Instant::now());
        seen.len()
    };
    if poison {
        return (axum::http::StatusCode::BAD_REQUEST, "poison").into_response();
    }
    if attempt == 1 && (key / 100) % 2 == 0 {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "busy",
        )
            .into_response();
    }
    if attempt == 1 && (key / 100) % 5 == 0 {
        return (axum::http::StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
    }
    let mut accepted = upstream.accepted.lock();
    for id in ids {
        *accepted.entry(id).or_default() += 1;
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// OTLP/HTTP: 503 and 429 are retried (503's `Retry-After` honoured over
/// the shorter backoff), 400 is not, and every retried span arrives once.
#[tokio::test]
async fn http_status_codes_are_retried_by_the_otlp_rules() {
    let upstream = HttpUpstream::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let router = axum::Router::new()
        .route("/v1/traces", axum::routing::post(http_upstream_export))
        .with_state(upstream.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let mut config = exporter("http-flaky", Protocol::Http, address);
    // As above: one upstream request per received request.
    config.queue.batch = None;
    let front = front_with(config).await;
    let mut expected = HashSet::new();
    for request in 1..=10u64 {
        let ids = request * 100..request * 100 + 4;
        expected.extend(ids.clone());
        send_grpc(front.addresses.grpc, spans("http-flaky-svc", "op", ids)).await;
    }
    send_grpc(
        front.addresses.grpc,
        spans("http-flaky-svc", "poison", 5000..5003),
    )
    .await;
    eventually("every retried span arrives", || {
        let accepted = upstream.accepted.lock();
        expected.iter().all(|id| accepted.contains_key(id))
    })
    .await;
    wait_for_sample(
        front.addresses.admin,
        "triage_exporter_send_failed_items_total",
        &["exporter=\"http-flaky\"", "reason=\"permanent\""],
        3.0,
    )
    .await;
    {
        let attempts = upstream.attempts.lock();
        for request in 1..=10u64 {
            let times = &attempts[&(request * 100)];
            let want = if request % 2 == 0 || request % 5 == 0 {
                2
            } else {
                1
            };
            assert_eq!(times.len(), want, "attempts of request {request}");
            if request % 2 == 0 {
                // Retry-After: 1, though the backoff would have been 50-150 ms.
                let waited = times[1] - times[0];
                assert!(
                    waited >= Duration::from_millis(950),
                    "request {request} retried after {waited:?}"
                );
            }
        }
        assert_eq!(attempts[&5000].len(), 1, "400 is not retried");
        assert!(
            upstream.accepted.lock().values().all(|n| *n == 1),
            "no duplicates"
        );
    }
    front.stop().await;
    server.abort();
}

/// With the upstream down: a request retried past `max_elapsed_time` is
/// dropped as `retries_exhausted`; one still being retried when the
/// shutdown flush ends is counted as `shutdown` (it was only in memory).
#[tokio::test]
async fn requests_given_up_are_counted_by_reason() {
    let down = free_port();
    let mut gives_up = exporter("gives-up", Protocol::Grpc, down);
    gives_up.retry.max_elapsed_time = Duration::from_millis(500);
    let forever = exporter("forever", Protocol::Grpc, down);
    let mut settings = test_settings();
    settings.forward.exporters = vec![gives_up, forever];
    settings.shutdown_timeout = Duration::from_secs(1);
    let front = TestServer::start_with(settings).await;
    send_grpc(front.addresses.grpc, spans("given-up-svc", "op", 1..4)).await;
    wait_for_sample(
        front.addresses.admin,
        "triage_exporter_send_failed_items_total",
        &["exporter=\"gives-up\"", "reason=\"retries_exhausted\""],
        3.0,
    )
    .await;
    front.stop().await;
    // The admin port is closed; the process's recorder still has the
    // figures the shutdown left.
    let exposition = triage::telemetry::render(&triage::telemetry::recorder());
    assert_eq!(
        sample(
            &exposition,
            "triage_exporter_send_failed_items_total",
            &[
                "exporter=\"forever\"",
                "signal=\"traces\"",
                "reason=\"shutdown\""
            ]
        ),
        Some(3.0),
        "{exposition}"
    );
    assert_eq!(
        sample(
            &exposition,
            "triage_exporter_sent_items_total",
            &["exporter=\"forever\"", "signal=\"traces\""]
        ),
        Some(0.0)
    );
}

// === batching ===

/// An exporter whose batches are sent when they hold `min_size` spans, and
/// not for a minute otherwise: what is merged is then known exactly.
fn merging(name: &str, address: SocketAddr, min_size: u64) -> ExporterConfig {
    let mut config = exporter(name, Protocol::Grpc, address);
    config.queue.batch = Some(BatchConfig {
        flush_timeout: Duration::from_secs(60),
        min_size,
        ..BatchConfig::default()
    });
    config
}

/// 200 requests of 5 spans, from 4 clients at once, reach the upstream as
/// 10 requests of 100 spans (min_size 100): every span exactly once.
#[tokio::test]
async fn many_small_requests_arrive_merged() {
    let upstream = RunningUpstream::start(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        Behaviour::Accept,
    )
    .await;
    let front = front_with(merging("merging", upstream.address, 100)).await;
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let address = front.addresses.grpc;
        clients.push(tokio::spawn(async move {
            let mut connection = TraceServiceClient::connect(format!("http://{address}"))
                .await
                .expect("connect to the front instance");
            for request in 0..50u64 {
                // Ids from 1: span id 0 is invalid.
                let first = 1 + (client * 50 + request) * 5;
                connection
                    .export(spans("merged-svc", "op", first..first + 5))
                    .await
                    .expect("front accepts spans");
            }
        }));
    }
    for client in clients {
        client.await.expect("client task");
    }
    let expected: HashSet<u64> = (1..=1000).collect();
    eventually("every span arrives", || {
        let accepted = upstream.accepted();
        expected.iter().all(|id| accepted.contains_key(id))
    })
    .await;
    {
        let seen = upstream.seen.lock();
        let sizes: Vec<usize> = seen.requests.iter().map(Vec::len).collect();
        assert_eq!(sizes, [100; 10], "requests upstream");
        assert!(
            seen.accepted.values().all(|times| *times == 1),
            "a span arrived twice"
        );
        assert_eq!(seen.accepted.len(), 1000);
    }
    let label = "exporter=\"merging\"";
    let exposition = wait_for_sample(
        front.addresses.admin,
        "triage_exporter_sent_items_total",
        &[label, "signal=\"traces\""],
        1000.0,
    )
    .await;
    // The batch sizes the front reports: 10 batches, 1,000 spans.
    let batches = |name: &str| sample(&exposition, name, &[label, "signal=\"traces\""]);
    assert_eq!(batches("triage_exporter_batch_send_size_count"), Some(10.0));
    assert_eq!(batches("triage_exporter_batch_send_size_sum"), Some(1000.0));
    front.stop().await;
}

/// With the default batch settings, a lone request far below `min_size`
/// is sent when its `flush_timeout` (200 ms) has passed, though nothing
/// else comes and the front keeps running.
#[tokio::test]
async fn a_lone_request_is_sent_at_the_flush_timeout() {
    let upstream = RunningUpstream::start(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        Behaviour::Accept,
    )
    .await;
    let config = exporter("lone", Protocol::Grpc, upstream.address);
    assert_eq!(config.queue.batch, Some(BatchConfig::default()));
    let front = front_with(config).await;
    let sent = Instant::now();
    send_grpc(front.addresses.grpc, spans("lone-svc", "op", 1..4)).await;
    eventually("the lone request arrives", || {
        upstream.accepted().len() == 3
    })
    .await;
    // For the record, not asserted: about the flush timeout.
    eprintln!(
        "a lone request reached the upstream after {:?}",
        sent.elapsed()
    );
    assert_eq!(upstream.seen.lock().requests.len(), 1);
    front.stop().await;
}

/// A batch that fails with a retryable error is retried whole and arrives
/// once; a batch the upstream refuses for good is dropped whole, every
/// item of every request in it counted. The queue is persistent: both
/// batches' requests leave the disk once they are done.
#[tokio::test]
async fn batches_are_retried_and_dropped_whole() {
    let upstream = RunningUpstream::start(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        Behaviour::FailOnce,
    )
    .await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = merging("whole", upstream.address, 50);
    config.queue.storage = Some(dir.path().join("queue"));
    let front = front_with(config).await;
    // Ten requests of 5 spans make one batch; the next ten, one of them
    // poisoned, the next.
    for request in 0..20u64 {
        let name = if request == 13 { "poison" } else { "op" };
        let first = 1 + request * 5;
        send_grpc(
            front.addresses.grpc,
            spans("whole-svc", name, first..first + 5),
        )
        .await;
    }
    let label = "exporter=\"whole\"";
    wait_for_sample(
        front.addresses.admin,
        "triage_exporter_send_failed_items_total",
        &[label, "signal=\"traces\"", "reason=\"permanent\""],
        50.0,
    )
    .await;
    let exposition = wait_for_sample(
        front.addresses.admin,
        "triage_exporter_sent_items_total",
        &[label, "signal=\"traces\""],
        50.0,
    )
    .await;
    {
        let seen = upstream.seen.lock();
        // The first batch: refused once, then accepted, each span once.
        assert_eq!(seen.attempts[&1], 2);
        let sizes: Vec<usize> = seen.requests.iter().map(Vec::len).collect();
        assert_eq!(sizes, [50]);
        assert!((1..=50).all(|id| seen.accepted.get(&id) == Some(&1)));
        // The second: refused for good, tried once, nothing of it kept.
        assert_eq!(seen.attempts[&51], 1);
        assert!(!seen.accepted.keys().any(|id| *id > 50));
    }
    assert_eq!(
        sample(
            &exposition,
            "triage_exporter_retries_total",
            &[label, "signal=\"traces\""]
        ),
        Some(1.0)
    );
    eventually("both batches leave the disk", || {
        records_on_disk(&dir.path().join("queue")) == 0
    })
    .await;
    front.stop().await;
}
