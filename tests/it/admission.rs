//! Admission control (issue #14): over the memory limit, or with the decode
//! queue full, the OTLP receivers refuse export requests with answers that
//! exporters retry (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with
//! `Retry-After`), `/readyz` says so while staying 200, and nothing refused
//! is recorded. Loopback only; every wait bounded.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::common::collector::Collector;
use crate::common::test_settings;
use triage::model::{SeriesKey, SeriesKind};
use triage::receiver::admission::{RetryInfo, RETRY_INFO_TYPE};
use triage::receiver::http::RpcStatus;
use triage::server::Server;

/// `n` SERVER spans named `name` of `service`, ending a second ago.
fn spans(service: &str, name: &str, n: usize) -> ExportTraceServiceRequest {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 1_000_000_000;
    let spans = (0..n)
        .map(|i| Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: name.to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: end - 1_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
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

/// Checks a gRPC refusal: UNAVAILABLE with a RetryInfo detail.
fn assert_grpc_retryable(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = RpcStatus::decode(status.details()).expect("a google.rpc.Status");
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
    let retry = RetryInfo::decode(&details.details[0].value[..]).expect("RetryInfo");
    assert!(retry.retry_delay.expect("a delay").seconds >= 1);
}

/// Checks an HTTP refusal: 503 with `Retry-After` and a status body.
async fn assert_http_retryable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 14);
    assert_eq!(status.details[0].type_url, RETRY_INFO_TYPE);
}

async fn post_traces(
    http: &reqwest::Client,
    address: std::net::SocketAddr,
    body: Vec<u8>,
) -> reqwest::Response {
    http.post(format!("http://{address}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
}

/// The memory gate forced on (the real sampling is the next test): both
/// receivers refuse retryably and record nothing, `/readyz` warns and stays
/// 200, refusals are counted; forced off, the same requests are accepted.
#[tokio::test]
async fn over_the_memory_limit_otlp_is_refused_retryably_then_accepted() {
    let server = Server::bind(test_settings()).await.unwrap();
    let addresses = server.addresses();
    let store = server.store();
    let memory = server.memory_limiter();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    let http = reqwest::Client::new();
    let admin = format!("http://{}", addresses.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "ready within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    memory.force(Some(true));
    let mut grpc = TraceServiceClient::connect(format!("http://{}", addresses.grpc))
        .await
        .unwrap();
    let refused = grpc.export(spans("gated", "GET /", 3)).await.unwrap_err();
    assert_grpc_retryable(&refused);
    let body = spans("gated", "GET /", 4).encode_to_vec();
    assert_http_retryable(post_traces(&http, addresses.http, body.clone()).await).await;
    let ready = http.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(
        text.contains("warning: export requests are refused"),
        "{text}"
    );
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for transport in ["grpc", "http"] {
        let line = format!(
            "triage_receiver_refused_requests_total{{transport=\"{transport}\",signal=\"traces\",reason=\"memory_limit\"}}"
        );
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    let key = SeriesKey::new(SeriesKind::Operation, "gated", "GET /");
    assert!(store.stats(&key, 0, u64::MAX).is_none(), "nothing recorded");

    memory.force(Some(false));
    grpc.export(spans("gated", "GET /", 3)).await.unwrap();
    assert_eq!(post_traces(&http, addresses.http, body).await.status(), 200);
    let ready = http.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.text().await.unwrap(), "ready\n");
    assert_eq!(store.stats(&key, 0, u64::MAX).unwrap().requests, 7);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The real binary with a memory limit below its idle resident memory: the
/// sampler finds it over, logs the transition once, and both receivers
/// refuse; `/healthz` and `/readyz` answer 200.
#[tokio::test]
async fn the_real_resident_memory_over_a_tiny_limit_refuses_exports() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        r#"
receivers:
  otlp:
    memory_limit_mib: 2
    memory_check_interval: 50ms
    grpc: {{ endpoint: "127.0.0.1:0" }}
    http: {{ endpoint: "127.0.0.1:0" }}
admin: {{ endpoint: "127.0.0.1:0" }}
api: {{ endpoint: "127.0.0.1:0" }}
storage: {{ enabled: false }}
"#
    )
    .unwrap();
    let mut collector = Collector::start(config.path());
    let line = collector.wait_for_log("memory above the soft limit");
    let field = |line: &serde_json::Value, name: &str| {
        let value = &line["fields"][name];
        if value.is_null() {
            line[name].clone()
        } else {
            value.clone()
        }
    };
    assert!(field(&line, "resident_mib").as_u64().unwrap() > 2, "{line}");
    let address = |name: &str| -> std::net::SocketAddr {
        field(&collector.ready, name)
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (grpc_address, admin) = (address("grpc"), address("admin"));
    let http = reqwest::Client::new();
    let body = spans("real", "GET /", 2).encode_to_vec();
    assert_http_retryable(post_traces(&http, collector.http, body).await).await;
    let mut grpc = TraceServiceClient::connect(format!("http://{grpc_address}"))
        .await
        .unwrap();
    assert_grpc_retryable(&grpc.export(spans("real", "GET /", 2)).await.unwrap_err());
    for path in ["healthz", "readyz"] {
        let answer = http
            .get(format!("http://{admin}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "/{path}");
    }
    // Logged once, not per sample or request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.drain_log();
    let transitions = collector
        .seen
        .iter()
        .filter(|line| crate::common::collector::line_has(line, "memory above the soft limit"))
        .count();
    assert_eq!(transitions, 1);
}

/// Many requests at once against one decoder and a queue of 4: each is
/// answered, promptly, either 200 or 503 with `Retry-After`; some are
/// refused; and every span of every accepted request is recorded, none of
/// a refused one.
#[tokio::test]
async fn an_overload_is_answered_at_once_instead_of_queued() {
    let mut settings = test_settings();
    settings.admission.queue.max_requests = 4;
    settings.admission.queue.max_wait = Duration::from_millis(500);
    let server = crate::common::TestServer::start_with(settings).await;
    let http = reqwest::Client::new();
    let address = server.addresses.http;
    const N_REQUESTS: usize = 200;
    const SPANS: usize = 2_000;
    let body = spans("flood", "GET /", SPANS).encode_to_vec();
    let started = Instant::now();
    let answers = futures_join(
        (0..N_REQUESTS)
            .map(|_| {
                let (http, body) = (http.clone(), body.clone());
                tokio::spawn(async move {
                    let response = post_traces(&http, address, body).await;
                    let status = response.status().as_u16();
                    if status == 503 {
                        assert_http_retryable(response).await;
                    }
                    status
                })
            })
            .collect(),
    )
    .await;
    let elapsed = started.elapsed();
    let accepted = answers.iter().filter(|&&status| status == 200).count();
    let refused = answers.iter().filter(|&&status| status == 503).count();
    assert_eq!(accepted + refused, N_REQUESTS, "{answers:?}");
    assert!(refused > 0, "nothing refused in {elapsed:?}");
    assert!(accepted > 0);
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let key = SeriesKey::new(SeriesKind::Operation, "flood", "GET /");
    let recorded = server.store.stats(&key, 0, u64::MAX).unwrap().requests;
    assert_eq!(recorded, (accepted * SPANS) as u64);
    server.stop().await;
}

/// Awaits every task, in order.
async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// The same over gRPC, the transport of issue #14's overload: concurrent
/// calls on a few connections are each answered OK or UNAVAILABLE with
/// RetryInfo, some are refused, and exactly the accepted spans are recorded.
#[tokio::test]
async fn a_grpc_overload_is_answered_unavailable_instead_of_queued() {
    let mut settings = test_settings();
    settings.admission.queue.max_requests = 4;
    settings.admission.queue.max_wait = Duration::from_millis(500);
    let server = crate::common::TestServer::start_with(settings).await;
    const N_CALLS: usize = 120;
    const SPANS: usize = 2_000;
    let request = spans("grpc-flood", "GET /", SPANS);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            TraceServiceClient::connect(server.grpc_url())
                .await
                .unwrap()
                .max_encoding_message_size(usize::MAX),
        );
    }
    let started = Instant::now();
    let calls = (0..N_CALLS)
        .map(|n| {
            let mut client = clients[n % clients.len()].clone();
            let request = request.clone();
            tokio::spawn(async move {
                match client.export(request).await {
                    Ok(_) => true,
                    Err(status) => {
                        assert_grpc_retryable(&status);
                        false
                    }
                }
            })
        })
        .collect();
    let answers = futures_join(calls).await;
    let elapsed = started.elapsed();
    let accepted = answers.iter().filter(|&&ok| ok).count();
    assert!(
        accepted > 0 && accepted < N_CALLS,
        "{accepted} of {N_CALLS} in {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let key = SeriesKey::new(SeriesKind::Operation, "grpc-flood", "GET /");
    let recorded = server.store.stats(&key, 0, u64::MAX).unwrap().requests;
    assert_eq!(recorded, (accepted * SPANS) as u64);
    server.stop().await;
}
