//! The admin listener (`/healthz`, `/readyz`, `/metrics`) and shutdown, against
//! the real collector.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::common::raw_codec::RawCodec;
use crate::common::{test_settings, TestServer};
use triage::model::SeriesKind;

const WAIT: Duration = Duration::from_secs(5);
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

fn trace_request(service: &str, operation: &str) -> ExportTraceServiceRequest {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
        - 1_000_000_000;
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![7; 8],
        name: operation.to_string(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: end - 5_000_000,
        end_time_unix_nano: end,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_string(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.to_string())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .expect("gRPC URL")
        .connect()
        .await
        .expect("connect to the OTLP/gRPC receiver")
}

async fn get(url: String) -> reqwest::Response {
    reqwest::get(&url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// Polls `/readyz` until it answers `expected`, or panics after `WAIT`.
async fn wait_readyz(server: &TestServer, expected: reqwest::StatusCode) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = get(format!("{}/readyz", server.admin_url())).await.status();
        if status == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz answered {status}, not {expected}, within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start().await;

    let healthz = get(format!("{}/healthz", server.admin_url())).await;
    assert_eq!(healthz.status(), reqwest::StatusCode::OK);
    wait_readyz(&server, reqwest::StatusCode::OK).await;

    TraceServiceClient::new(channel(&server).await)
        .export(trace_request("admin-metrics", "GET /metrics-test"))
        .await
        .expect("export accepted");
    server
        .wait_for(WAIT, |_| {
            server.stats(SeriesKind::Operation, "admin-metrics", "GET /metrics-test")
        })
        .await;

    let metrics = get(format!("{}/metrics", server.admin_url())).await;
    assert_eq!(metrics.status(), reqwest::StatusCode::OK);
    let content_type = metrics
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain"),
        "content type {content_type:?}"
    );
    let body = metrics.text().await.expect("/metrics body");
    for name in [
        "triage_store_series",
        "triage_receiver_accepted_items_total",
    ] {
        assert!(
            body.lines().any(|line| line.starts_with(name)),
            "{name} missing from /metrics:\n{body}"
        );
    }
    assert!(
        body.lines().any(
            |line| line.starts_with("triage_receiver_accepted_items_total{")
                && line.contains(r#"transport="grpc""#)
                && line.contains(r#"signal="traces""#)
        ),
        "accepted spans over gRPC are counted:\n{body}"
    );

    stop_within_timeout(server).await;
}

#[tokio::test]
async fn unknown_admin_path_is_not_found() {
    let server = TestServer::start().await;
    let response = get(format!("{}/nope", server.admin_url())).await;
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    stop_within_timeout(server).await;
}

/// Cancels the shutdown token and checks `run` returns Ok within the
/// configured shutdown timeout.
async fn stop_within_timeout(server: TestServer) {
    let timeout = test_settings().shutdown_timeout;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < timeout,
        "shutdown took {:?}, the timeout is {timeout:?}",
        started.elapsed()
    );
}

// === graceful shutdown with a request in flight ===

/// A request body that reports when the transport first asks it for data,
/// which happens only after the request's HTTP/2 stream has been opened.
struct ReportingBody {
    messages: ReceiverStream<Vec<u8>>,
    polled: Option<oneshot::Sender<()>>,
}

impl Stream for ReportingBody {
    type Item = Vec<u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        if let Some(polled) = self.polled.take() {
            let _ = polled.send(());
        }
        Pin::new(&mut self.messages).poll_next(cx)
    }
}

/// A request whose headers reached the collector before shutdown began, but
/// whose body arrives after, is still answered and recorded, and `run`
/// returns Ok once it is done.
#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    let server = TestServer::start().await;
    wait_readyz(&server, reqwest::StatusCode::OK).await;
    let channel = channel(&server).await;

    let (body_tx, body_rx) = mpsc::channel::<Vec<u8>>(1);
    let (polled_tx, polled_rx) = oneshot::channel();
    let body = ReportingBody {
        messages: ReceiverStream::new(body_rx),
        polled: Some(polled_tx),
    };
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let in_flight = tokio::spawn(async move {
        grpc.ready().await.expect("channel ready");
        grpc.client_streaming(
            tonic::Request::new(body),
            PathAndQuery::from_static(TRACE_EXPORT),
            RawCodec,
        )
        .await
    });
    polled_rx.await.expect("the request body is polled");

    // A second request on the same HTTP/2 connection, opened after the first:
    // once it is answered, the collector has read the first one's headers
    // too (frames on a connection are handled in order), so the first one is
    // in flight, not merely queued in the client.
    TraceServiceClient::new(channel)
        .export(trace_request("admin-drain", "GET /before"))
        .await
        .expect("request before shutdown accepted");

    server.shutdown.cancel();
    wait_readyz_draining(&server).await;

    let message = prost::Message::encode_to_vec(&trace_request("admin-drain", "GET /in-flight"));
    body_tx
        .send(message)
        .await
        .expect("the request body is still wanted");
    drop(body_tx);
    let response = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("the in-flight request is answered")
        .expect("request task does not panic")
        .expect("the in-flight request succeeds")
        .into_inner();
    assert_eq!(response.partial_success, None);

    let store = std::sync::Arc::clone(&server.store);
    stop_within_timeout(server).await;
    let key = triage::model::SeriesKey::new(SeriesKind::Operation, "admin-drain", "GET /in-flight");
    let stats = store
        .stats(&key, 0, u64::MAX)
        .expect("the in-flight span is recorded");
    assert_eq!(stats.requests, 1);
}

/// Waits until `/readyz` reports the collector as draining (503), which it
/// does as soon as shutdown begins. The admin listener stays up until the
/// OTLP listeners have drained, so this is observable.
async fn wait_readyz_draining(server: &TestServer) {
    wait_readyz(server, reqwest::StatusCode::SERVICE_UNAVAILABLE).await;
}

/// A damaged history database is moved aside at start; the collector is
/// ready (detection does not need the history) and `/readyz` says so.
#[tokio::test]
async fn readyz_reports_a_history_moved_aside() {
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join(triage::history::DB_FILE),
        b"this is not a SQLite database, but it is long enough to look like one's header",
    )
    .expect("write a damaged database");
    let mut settings = test_settings();
    settings.storage.enabled = true;
    settings.storage.data_dir = data.path().to_owned();
    let server = TestServer::start_with(settings).await;
    wait_readyz(&server, reqwest::StatusCode::OK).await;
    let body = get(format!("{}/readyz", server.admin_url()))
        .await
        .text()
        .await
        .expect("body");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(
        body.contains("warning: history: a damaged database was moved aside"),
        "{body}"
    );
    let moved = std::fs::read_dir(data.path())
        .expect("list")
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(moved, "the damaged file is kept beside the new one");
}

// === /metrics of a fresh process ===

/// The names the docs tell people to alert on: every `rate(triage_...[`
/// and `increase(triage_...[` in docs/ and deploy/, with its label
/// selector, plus the counters the docs say to watch "rising".
fn documented_alert_counters() -> Vec<(String, Vec<(String, String)>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = Vec::new();
    for dir in ["docs", "deploy"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("listing") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                texts.push(std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut found = Vec::new();
    for text in &texts {
        for function in ["rate(", "increase("] {
            for (at, _) in text.match_indices(function) {
                let rest = &text[at + function.len()..];
                let Some(name) = rest.strip_prefix("triage_").map(|_| {
                    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default()
                }) else {
                    continue;
                };
                let selector = rest[name.len()..]
                    .strip_prefix('{')
                    .and_then(|labels| labels.split('}').next())
                    .map(|labels| {
                        labels
                            .split(',')
                            .filter_map(|pair| pair.split_once('='))
                            .map(|(key, value)| {
                                (
                                    key.trim().to_owned(),
                                    value.trim().trim_matches('"').to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                found.push((name.to_owned(), selector));
            }
        }
    }
    for watched in [
        "triage_store_overflow_samples_total",
        "triage_alerts_dropped_total",
        "triage_history_write_errors_total",
        "triage_history_recovered_total",
        "triage_alerts_missed_events_total",
    ] {
        found.push((watched.to_owned(), Vec::new()));
    }
    found.sort();
    found.dedup();
    found
}

/// The sample lines of `name` in a Prometheus text body.
fn samples<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[tokio::test]
async fn metrics_of_a_fresh_process_have_process_build_and_alerted_counters() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("triage.yaml");
    // A webhook target, so that the per-target alert counters exist, and
    // a forwarding exporter, so that its counters do; neither is called,
    // since no incident opens and nothing is received.
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    \
             http: {{ endpoint: \"127.0.0.1:0\" }}\n\
             admin: {{ endpoint: \"127.0.0.1:0\" }}\napi: {{ endpoint: \"127.0.0.1:0\" }}\n\
             storage: {{ data_dir: \"{}\" }}\n\
             alerting:\n  webhooks:\n    - url: \"http://127.0.0.1:9/hook\"\n\
             forward:\n  exporters:\n    upstream: {{ endpoint: \"http://127.0.0.1:9\" }}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let collector = crate::common::collector::Collector::start(&config);
    let admin = collector.ready["admin"]
        .as_str()
        .expect("ready line names the admin address")
        .to_owned();
    let body = get(format!("http://{admin}/metrics"))
        .await
        .text()
        .await
        .expect("body");

    // The process, as every Prometheus client library names it.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let lines = samples(&body, name);
        assert_eq!(lines.len(), 1, "{name} in /metrics:\n{body}");
        let value: f64 = lines[0]
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} has a value: {}", lines[0]));
        assert!(value >= 0.0, "{}", lines[0]);
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} has a TYPE"
        );
    }
    let started: f64 = samples(&body, "process_start_time_seconds")[0]
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .expect("start time");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "started {started}, now {now}"
    );
    let build = samples(&body, "triage_build_info");
    assert_eq!(build.len(), 1, "{body}");
    assert!(
        build[0].contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build[0].ends_with(" 1"),
        "{}",
        build[0]
    );

    // Every counter the docs say to alert on, at zero before anything
    // happened.
    let counters = documented_alert_counters();
    assert!(
        counters.len() >= 8,
        "alert expressions in the docs: {counters:?}"
    );
    for (name, selector) in counters {
        let matching: Vec<&str> = samples(&body, &name)
            .into_iter()
            .filter(|line| {
                selector
                    .iter()
                    .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
            })
            .collect();
        assert!(
            !matching.is_empty(),
            "{name}{selector:?} is not in /metrics of a fresh collector:\n{body}"
        );
        assert!(
            matching.iter().all(|line| line.ends_with(" 0")),
            "{name} starts at zero: {matching:?}"
        );
    }
    collector.kill();
}
