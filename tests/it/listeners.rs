//! Listeners that defend themselves (issue #14, items 3 and 5): slowloris,
//! idle and over-the-cap connections are closed by the server, slow uploads
//! are answered 408, the admin port keeps answering while an OTLP port is
//! full, and running out of file descriptors does not end a listener.
//!
//! Timeouts are set to a second or so and every wait is bounded generously;
//! nothing asserts how fast the server was beyond "within the bound".

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{test_settings, TestServer};

/// The longest any test waits for the server to close a connection.
const BOUND: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface and an empty SETTINGS frame: what a gRPC
/// client sends first.
const H2_GREETING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads until the server closes `stream` (end-of-file or reset) and returns
/// what it sent; panics if it is still open after `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let reading = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, reading)
        .await
        .unwrap_or_else(|_| panic!("the server did not close the connection within {bound:?}"));
    received
}

/// Whether `stream` is still open: no end-of-file or reset within `wait`
/// (what the server sent meanwhile, such as its HTTP/2 SETTINGS, is
/// skipped).
async fn still_open(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let reading = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, reading).await.is_err()
}

async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.expect("connect")
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.admin_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn healthz(server: &TestServer) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!("{}/healthz", server.admin_url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("GET /healthz answers")
        .status()
}

#[tokio::test]
async fn a_slowloris_on_otlp_http_is_closed_after_the_header_timeout() {
    let mut settings = test_settings();
    settings.http.connections.read_header_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(settings).await;

    let mut slow = connect(server.addresses.http).await;
    slow.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: triage\r\n")
        .await
        .expect("write");
    // A header line now and then, never the blank line that ends them.
    let trickle = async {
        for n in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow
                .write_all(format!("X-Slow-{n}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::time::timeout(BOUND, trickle)
        .await
        .expect("trickling ends");
    closed_within(&mut slow, BOUND).await;

    let exposition = metrics(&server).await;
    let header = sample(
        &exposition,
        "triage_listener_timeouts_total",
        &["listener=\"otlp_http\"", "kind=\"header\""],
    );
    assert!(header.is_some_and(|count| count >= 1.0), "{exposition}");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_on_every_listener() {
    let mut settings = test_settings();
    settings.http.connections.read_header_timeout = Duration::from_secs(1);
    settings.grpc.connections.read_header_timeout = Duration::from_secs(1);
    settings.admin.connections.read_header_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(settings).await;
    for address in [
        server.addresses.http,
        server.addresses.grpc,
        server.addresses.admin,
    ] {
        let mut silent = connect(address).await;
        closed_within(&mut silent, BOUND).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_while_healthz_answers() {
    let mut settings = test_settings();
    settings.http.connections.max_connections = 8.try_into().expect("non-zero");
    settings.grpc.connections.max_connections = 8.try_into().expect("non-zero");
    // Long enough that the held connections outlive the test.
    settings.http.connections.read_header_timeout = Duration::from_secs(60);
    settings.grpc.connections.read_header_timeout = Duration::from_secs(60);
    let server = TestServer::start_with(settings).await;

    let mut held = Vec::new();
    for address in [server.addresses.http, server.addresses.grpc] {
        for _ in 0..8 {
            held.push(connect(address).await);
        }
    }
    // Give the server time to accept the held ones, so the next ones are
    // the ones over the cap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for address in [server.addresses.http, server.addresses.grpc] {
        for _ in 0..20 {
            let mut refused = connect(address).await;
            closed_within(&mut refused, BOUND).await;
        }
    }
    assert_eq!(healthz(&server).await, reqwest::StatusCode::OK);
    for stream in &mut held {
        assert!(still_open(stream, Duration::from_millis(10)).await);
    }

    let exposition = metrics(&server).await;
    for listener in ["otlp_http", "otlp_grpc"] {
        let label = format!("listener=\"{listener}\"");
        let refused = sample(
            &exposition,
            "triage_listener_refused_connections_total",
            &[&label, "reason=\"connection_limit\""],
        );
        assert!(refused.is_some_and(|count| count >= 20.0), "{exposition}");
        assert!(
            sample(&exposition, "triage_listener_max_connections", &[&label]).is_some(),
            "{exposition}"
        );
        assert!(
            sample(&exposition, "triage_listener_connections", &[&label]).is_some(),
            "{exposition}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_http_connection_is_closed_after_the_idle_timeout() {
    let mut settings = test_settings();
    settings.http.connections.idle_timeout = Duration::from_secs(1);
    // Longer than the test: only the idle timeout can close it.
    settings.http.connections.read_header_timeout = Duration::from_secs(60);
    let server = TestServer::start_with(settings).await;

    let mut client = connect(server.addresses.http).await;
    client
        .write_all(b"GET /v1/traces HTTP/1.1\r\nHost: triage\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answered = closed_within(&mut client, BOUND).await;
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 405"), "{answered}");
    assert!(started.elapsed() < Duration::from_secs(60));
    server.stop().await;
}

#[tokio::test]
async fn http1_keep_alive_waits_count_against_the_header_timeout() {
    // hyper starts the header timer as soon as an HTTP/1.1 connection is
    // ready for its next request, so a keep-alive connection idle for
    // read_header_timeout is closed even when idle_timeout is longer. The
    // docs say so; this keeps them honest if hyper changes.
    let mut settings = test_settings();
    settings.http.connections.idle_timeout = Duration::from_secs(60);
    settings.http.connections.read_header_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(settings).await;

    let mut client = connect(server.addresses.http).await;
    client
        .write_all(b"GET /v1/traces HTTP/1.1\r\nHost: triage\r\n\r\n")
        .await
        .expect("write");
    let answered = closed_within(&mut client, BOUND).await;
    assert!(answered.starts_with(b"HTTP/1.1 405"));
    server.stop().await;
}

#[tokio::test]
async fn a_slow_upload_is_answered_408_and_closed() {
    let mut settings = test_settings();
    settings.http.read_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(settings).await;

    let mut upload = connect(server.addresses.http).await;
    upload
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: triage\r\n\
              Content-Type: application/x-protobuf\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await
        .expect("write headers");
    upload.write_all(&[0u8; 1000]).await.expect("write some");
    let answered = closed_within(&mut upload, BOUND).await;
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");
    assert!(
        answered.contains("content-type: application/x-protobuf"),
        "an OTLP error body: {answered}"
    );

    // The same on a JSON request, with a JSON Status.
    let mut upload = connect(server.addresses.http).await;
    upload
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: triage\r\n\
              Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"resourceSpans\":[",
        )
        .await
        .expect("write");
    let answered = closed_within(&mut upload, BOUND).await;
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");
    assert!(answered.contains("\"code\":4"), "{answered}");

    let exposition = metrics(&server).await;
    let body = sample(
        &exposition,
        "triage_listener_timeouts_total",
        &["listener=\"otlp_http\"", "kind=\"body\""],
    );
    assert!(body.is_some_and(|count| count >= 2.0), "{exposition}");

    // A request whose body arrives in time is untouched.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn grpc_connections_over_the_cap_are_refused_and_idle_ones_closed() {
    let mut settings = test_settings();
    settings.grpc.connections.max_connections = 2.try_into().expect("non-zero");
    settings.grpc.connections.idle_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(settings).await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = connect(server.addresses.grpc).await;
        client.write_all(H2_GREETING).await.expect("greet");
        held.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect(server.addresses.grpc).await;
    let answered = closed_within(&mut refused, BOUND).await;
    assert!(answered.is_empty(), "closed before a word: {answered:?}");

    // Greeted but no call for the idle timeout: closed, permits returned.
    for client in &mut held {
        closed_within(client, BOUND).await;
    }
    let endpoint = format!("http://{}", server.addresses.grpc);
    let mut client = TraceServiceClient::connect(endpoint)
        .await
        .expect("connect once the idle ones are gone");
    client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("an export is served");
    server.stop().await;
}

#[tokio::test]
async fn grpc_calls_spread_past_the_idle_timeout_all_succeed() {
    let mut settings = test_settings();
    settings.grpc.connections.idle_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(settings).await;
    let endpoint = format!("http://{}", server.addresses.grpc);
    let mut client = TraceServiceClient::connect(endpoint)
        .await
        .expect("connect");
    // Calls spread over three idle timeouts on one connection: each one
    // resets the clock, and none of them fails.
    for _ in 0..6 {
        client
            .export(ExportTraceServiceRequest::default())
            .await
            .expect("export");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.stop().await;
}

// === out of file descriptors, in a child process ===

/// Starts the real binary with an open-files limit of `limit` (soft and
/// hard), every listener on a free loopback port, and JSON logs; returns
/// it with its stderr lines arriving on a channel.
fn start_limited(
    limit: u64,
    config: &std::path::Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(env!("CARGO_BIN_EXE_triage"))
        .args(["run", "--config"])
        .arg(config)
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn triage under prlimit");
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// The next line on `lines` containing `needle`, waiting at most `bound`.
fn line_with(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    bound: Duration,
) -> Option<String> {
    let deadline = Instant::now() + bound;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_logged_counted_and_survived() {
    crate::common::require_command("prlimit", "util-linux");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("triage.yaml");
    let mut file = std::fs::File::create(&config).expect("config file");
    write!(
        file,
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    \
         http: {{ endpoint: \"127.0.0.1:0\", read_header_timeout: 60s }}\n\
         admin: {{ endpoint: \"127.0.0.1:0\" }}\napi: {{ endpoint: \"127.0.0.1:0\" }}\n\
         storage: {{ enabled: false }}\n"
    )
    .expect("write config");
    // Enough for start-up (the runtime, four listeners, stdio), and a few
    // connections more.
    let (mut child, lines) = start_limited(64, &config);
    let ready = line_with(&lines, "triage is ready", Duration::from_secs(20)).expect("ready");
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("JSON log line");
    let address = |key: &str| -> SocketAddr {
        ready[key]
            .as_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("{key} address in {ready}"))
    };
    let (http, admin) = (address("http"), address("admin"));

    // More connections than descriptors left: the kernel completes them,
    // the server cannot accept them all.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(connect(http).await);
    }
    let logged = line_with(&lines, "out of file descriptors", BOUND);
    assert!(logged.is_some(), "EMFILE logged");
    drop(flood);

    // Once the flood is gone, every listener answers again.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + BOUND;
    let metrics = loop {
        let attempt = client.get(format!("http://{admin}/metrics")).send().await;
        if let Ok(response) = attempt {
            if response.status().is_success() {
                break response.text().await.expect("body");
            }
        }
        assert!(Instant::now() < deadline, "admin answers after the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let errors = sample(
        &metrics,
        "triage_listener_accept_errors_total",
        &["listener=\"otlp_http\"", "kind=\"fd_limit\""],
    );
    assert!(errors.is_some_and(|count| count >= 1.0), "{metrics}");
    let healthz = client
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert!(healthz.status().is_success());
    let export = client
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .expect("the OTLP/HTTP listener survived");
    assert!(export.status().is_success());

    let _ = child.kill();
    let _ = child.wait();
}
