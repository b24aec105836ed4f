//! The gRPC query API against a real collector: spans sent by the real Rust
//! OpenTelemetry SDK, incident events recorded into the server's history,
//! and three different clients reading them back:
//!
//! - the project's own tonic client (`triage::query::client`), and tonic's
//!   generated health client;
//! - Python grpcio with no generated code, discovering the API through
//!   server reflection (`tests/python/query_client.py`);
//! - the `triage query` command line, with `--json`.
//!
//! Plus bearer-token authentication, TLS, NOT_SERVING while draining, and a
//! watch that resumes from an event id with no gap and no duplicate.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanKind, Status as SpanStatus, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::common::{require_python, test_settings, TestServer};
use triage::model::Severity;
use triage::model::{rfc3339, Incident, IncidentEvent, IncidentState};
use triage::model::{SeriesKey, SeriesKind};
use triage::query::client::{Client, ClientConfig, ClientError};
use triage::query::pb;
use triage::query::pb::watch_incidents_request::Start;
use triage::query::EventName;
use triage::security::{AuthConfig, TlsConfig};

/// Bound on every wait for data, a stream message or a child process.
const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "s3cret-token";
/// Requests checkout serves; each calls payment once.
const CALLS: u64 = 30;
/// Of those, how many fail in checkout.
const FAILED: u64 = 3;

async fn start(token: Option<&str>) -> TestServer {
    let mut settings = test_settings();
    settings.api.auth = AuthConfig::tokens(token);
    TestServer::start_with(settings).await
}

fn provider(server: &TestServer, service: &str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .with_timeout(Duration::from_secs(3))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("OTLP exporter");
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_simple_exporter(exporter)
        .build()
}

/// checkout serves `GET /cart` CALLS times (FAILED of them fail) and calls
/// payment's `Charge` each time, through a CLIENT span that is the parent
/// of payment's SERVER span. Sent with the real Rust SDK over OTLP/gRPC.
async fn send_shop_traffic(server: &TestServer) {
    let checkout = provider(server, "checkout");
    let payment = provider(server, "payment");
    // The simple processor exports inside `end`, blocking: off the runtime.
    tokio::task::spawn_blocking(move || {
        let checkout_tracer = checkout.tracer("query-api-test");
        let payment_tracer = payment.tracer("query-api-test");
        let base = SystemTime::now() - Duration::from_secs(1);
        for call in 0..CALLS {
            let start = base + Duration::from_millis(call);
            let server_span = checkout_tracer
                .span_builder("GET /cart")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .start(&checkout_tracer);
            let server_cx = Context::current_with_span(server_span);
            let client_builder = checkout_tracer
                .span_builder("POST /charge")
                .with_kind(SpanKind::Client)
                .with_start_time(start + Duration::from_millis(1))
                .with_attributes([KeyValue::new("server.address", "10.0.0.9")]);
            let client = checkout_tracer.build_with_context(client_builder, &server_cx);
            let client_cx = server_cx.with_span(client);
            let charge_builder = payment_tracer
                .span_builder("Charge")
                .with_kind(SpanKind::Server)
                .with_start_time(start + Duration::from_millis(2));
            let mut charge = payment_tracer.build_with_context(charge_builder, &client_cx);
            charge.end_with_timestamp(start + Duration::from_millis(2 + call % 7));
            client_cx
                .span()
                .end_with_timestamp(start + Duration::from_millis(4 + call % 7));
            if call < FAILED {
                server_cx
                    .span()
                    .set_status(SpanStatus::error("cart failed"));
            }
            server_cx
                .span()
                .end_with_timestamp(start + Duration::from_millis(6 + call % 7));
        }
        checkout.shutdown().expect("flush checkout");
        payment.shutdown().expect("flush payment");
    })
    .await
    .expect("sending spans");
    server
        .wait_for(WAIT, |store| {
            let edge = SeriesKey::new(SeriesKind::Edge, "checkout", "payment");
            let charge = SeriesKey::new(SeriesKind::Operation, "payment", "Charge");
            let done = store
                .totals(&edge)
                .is_some_and(|totals| totals.requests == CALLS)
                && store
                    .totals(&charge)
                    .is_some_and(|totals| totals.requests == CALLS);
            done.then_some(())
        })
        .await;
}

fn incident(service: &str, onset_secs: u64, state: IncidentState) -> Incident {
    let onset = onset_secs * 1_000_000_000;
    let resolved = (state == IncidentState::Resolved).then_some(onset + 60_000_000_000);
    Incident {
        id: format!("{service}@{onset_secs}"),
        state,
        service: service.to_owned(),
        operations: vec!["Charge".to_owned()],
        kinds: Vec::new(),
        severity: Severity::Warning,
        onset_unix_nanos: onset,
        onset: rfc3339(onset),
        opened_unix_nanos: onset + 10_000_000_000,
        resolved_unix_nanos: resolved,
        resolved: resolved.map(rfc3339),
        anomalies: Vec::new(),
        exemplar_trace_ids: vec!["4bf92f3577b34da6a3ce929d0e0e4736".to_owned()],
        exemplar_trace_urls: vec![
            "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736".to_owned()
        ],
        summary: format!("{service}: p95 up"),
        services: vec![service.to_owned()],
        root_causes: Vec::new(),
        patterns: Vec::new(),
        changes: Vec::new(),
        blast_radius: None,
        hypotheses: Vec::new(),
    }
}

/// Records an incident event into the server's history (what detection
/// does), returning its seq.
fn record(server: &TestServer, event: IncidentEvent) -> u64 {
    let at = event.incident().opened_unix_nanos;
    server
        .history
        .record_event(&event, at)
        .expect("event recorded")
        .seq
}

/// payment@1000 opened then resolved; cart@2000 opened. Returns the seqs.
fn record_incidents(server: &TestServer) -> Vec<u64> {
    vec![
        record(
            server,
            IncidentEvent::Opened(incident("payment", 1_000, IncidentState::Open)),
        ),
        record(
            server,
            IncidentEvent::Opened(incident("cart", 2_000, IncidentState::Open)),
        ),
        record(
            server,
            IncidentEvent::Resolved(incident("payment", 1_000, IncidentState::Resolved)),
        ),
    ]
}

async fn client(server: &TestServer, token: Option<&str>) -> Client {
    Client::connect(&ClientConfig {
        address: server.api_url(),
        token: token.map(str::to_owned),
        ca_cert: None,
        client_cert: None,
    })
    .await
    .expect("connects")
}

async fn next_seq(received: &mut tokio::sync::mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("an event in time")
        .expect("watch open")
}

fn call_code(error: ClientError) -> Code {
    match error {
        ClientError::Call(status) => status.code(),
        other => panic!("expected a refused call, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_client_reads_stats_topology_incidents_and_changes() {
    let server = start(Some(TOKEN)).await;
    send_shop_traffic(&server).await;
    let seqs = record_incidents(&server);

    let mut anonymous = client(&server, None).await;
    assert_eq!(
        call_code(anonymous.services().await.expect_err("no token")),
        Code::Unauthenticated
    );
    let mut wrong = client(&server, Some("guess")).await;
    assert_eq!(
        call_code(wrong.services().await.expect_err("wrong token")),
        Code::Unauthenticated
    );

    let mut api = client(&server, Some(TOKEN)).await;
    let services = api.services().await.expect("services");
    let checkout = services
        .iter()
        .find(|service| service.name == "checkout")
        .expect("checkout listed");
    assert_eq!(checkout.operations, ["GET /cart"]);
    assert_eq!(checkout.callees, ["payment"]);
    assert!(services.iter().any(|service| service.name == "payment"));

    let stats = api.stats("checkout", 0).await.expect("stats");
    assert_eq!((stats.total.requests, stats.total.errors), (CALLS, FAILED));
    assert_eq!(stats.operations[0].operation, "GET /cart");
    assert_eq!(stats.edges[0].callee, "payment");
    assert_eq!(stats.edges[0].stats.requests, CALLS);
    // Server spans last 6..=12 ms.
    let p50 = stats.total.p50_ms.expect("latency");
    assert!((6.0..=12.5).contains(&p50), "{p50}");
    assert!(stats.total.rate_per_second > 0.0);
    assert_eq!(
        call_code(api.stats("nobody", 0).await.expect_err("unknown")),
        Code::NotFound
    );

    let topology = api.topology(0).await.expect("topology");
    let edge = topology
        .edges
        .iter()
        .find(|edge| edge.caller == "checkout" && edge.callee == "payment")
        .expect("checkout -> payment");
    assert_eq!(edge.caller_side.requests, CALLS);
    let callee_side = edge.callee_side.as_ref().expect("payment is traced");
    assert_eq!(callee_side.requests, CALLS);
    // The caller waits longer than the callee works (2 ms more each call).
    assert!(edge.caller_side.p50_ms > callee_side.p50_ms, "{edge:?}");

    // Paging: newest onset first, two per page.
    let mut request = pb::ListIncidentsRequest {
        page_size: 2,
        ..Default::default()
    };
    let (first, next) = api.incidents(request.clone()).await.expect("page 1");
    assert_eq!(
        first
            .iter()
            .map(|incident| incident.id.as_str())
            .collect::<Vec<_>>(),
        ["cart@2000", "payment@1000"]
    );
    assert!(next.is_none(), "two incidents fit one page of two");
    request.page_size = 1;
    let (first, next) = api.incidents(request.clone()).await.expect("page 1 of 2");
    request.page_token = next.expect("a second page");
    let (second, last) = api.incidents(request.clone()).await.expect("page 2");
    assert_eq!(
        (first[0].id.as_str(), second[0].id.as_str()),
        ("cart@2000", "payment@1000")
    );
    assert!(last.is_none());
    let (open, _) = api
        .incidents(pb::ListIncidentsRequest {
            state: pb::IncidentState::Open as i32,
            ..Default::default()
        })
        .await
        .expect("open ones");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, "cart@2000");

    let (payment, events) = api.incident("payment@1000").await.expect("incident");
    assert_eq!(payment.state, IncidentState::Resolved);
    assert_eq!(
        payment.exemplar_trace_urls,
        ["http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"],
        "trace links survive the gRPC API"
    );
    assert_eq!(
        events
            .iter()
            .map(|event| (event.seq, event.event))
            .collect::<Vec<_>>(),
        [(seqs[0], EventName::Opened), (seqs[2], EventName::Resolved)]
    );
    assert_eq!(
        call_code(api.incident("nope@1").await.expect_err("unknown")),
        Code::NotFound
    );

    // Changes: validated, recorded into the server's change log, listed.
    let error = api
        .record_change(pb::RecordChangeRequest {
            service: "payment".into(),
            kind: "rollout".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad kind");
    match error {
        ClientError::Call(status) => {
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(
                status.message().starts_with("kind:"),
                "{}",
                status.message()
            );
        }
        other => panic!("{other}"),
    }
    let change = api
        .record_change(pb::RecordChangeRequest {
            service: "payment".into(),
            kind: "deploy".into(),
            version: "v1.4.2".into(),
            ..Default::default()
        })
        .await
        .expect("recorded");
    assert!(server.changes.get(change.id).is_some(), "in the change log");
    let listed = api
        .changes(pb::ListChangesRequest {
            service: "payment".into(),
            ..Default::default()
        })
        .await
        .expect("listed");
    assert_eq!(listed, [change]);

    // Watch from the first event's id: the two later ones, then a live one,
    // nothing twice.
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = client(&server, Some(TOKEN)).await;
    let after = seqs[0];
    let watch = tokio::spawn(async move {
        watcher
            .watch(Some(Start::AfterSeq(after)), |event| {
                sender.send(event.seq).is_ok()
            })
            .await
    });
    assert_eq!(next_seq(&mut received).await, seqs[1]);
    assert_eq!(next_seq(&mut received).await, seqs[2]);
    let live = record(
        &server,
        IncidentEvent::Opened(incident("checkout", 3_000, IncidentState::Open)),
    );
    assert_eq!(next_seq(&mut received).await, live);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "no duplicates"
    );
    watch.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_turns_not_serving_while_draining() {
    let server = start(Some(TOKEN)).await;
    let channel = tonic::transport::Endpoint::from_shared(server.api_url())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel);
    for service in ["", "triage.v1.TriageQuery"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health needs no token")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "triage.v1.TriageQuery".to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    server.shutdown.cancel();
    let draining = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("a status");
    assert_eq!(draining.status, ServingStatus::NotServing as i32);
    // The stream then ends, so the server's shutdown does not wait for it.
    let ended = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("ends in time");
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    let result = tokio::time::timeout(WAIT, server.task)
        .await
        .expect("server stops in time")
        .expect("no panic");
    result.expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_token_from_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert_file = dir.path().join("api.crt");
    let key_file = dir.path().join("api.key");
    let token_file = dir.path().join("token");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");

    let mut settings = test_settings();
    settings.api.auth = AuthConfig {
        bearer_token_files: vec![token_file],
        ..AuthConfig::default()
    };
    settings.api.tls = Some(TlsConfig::new(cert_file.clone(), key_file));
    let server = TestServer::start_with(settings).await;
    let https = format!("https://{}", server.addresses.api);
    let mut api = Client::connect(&ClientConfig {
        address: https.clone(),
        token: Some(TOKEN.to_owned()),
        ca_cert: Some(cert_file.clone()),
        client_cert: None,
    })
    .await
    .expect("TLS handshake with the configured certificate");
    assert!(api.services().await.expect("services").is_empty());
    // HOST:PORT, as in api.endpoint, with a CA certificate means TLS too.
    let mut api = Client::connect(&ClientConfig {
        address: server.addresses.api.to_string(),
        token: Some(TOKEN.to_owned()),
        ca_cert: Some(cert_file),
        client_cert: None,
    })
    .await
    .expect("TLS to HOST:PORT when a CA certificate is given");
    assert!(api.services().await.expect("services").is_empty());

    // A plaintext client cannot talk to the TLS listener.
    let plaintext = tokio::time::timeout(WAIT, async {
        match Client::connect(&ClientConfig {
            address: server.api_url(),
            token: Some(TOKEN.to_owned()),
            ca_cert: None,
            client_cert: None,
        })
        .await
        {
            Ok(mut client) => client.services().await.map(|_| ()),
            Err(error) => Err(error),
        }
    })
    .await
    .expect("in time");
    assert!(plaintext.is_err());
    server.stop().await;

    // A missing key file fails start-up, naming the field and the file.
    let mut settings = test_settings();
    settings.api.tls = Some(TlsConfig::new(
        dir.path().join("api.crt"),
        dir.path().join("missing.key"),
    ));
    let error = match triage::server::Server::bind(settings).await {
        Ok(_) => panic!("bound without a key"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("api.tls.key_file"), "{error}");
    assert!(error.contains("missing.key"), "{error}");
}

// === the CLI ===

/// Runs `triage query ARGS` against `server`; returns (success, stdout,
/// stderr).
async fn triage_query(server: Option<&TestServer>, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triage"));
    command.arg("query").args(args).stdin(Stdio::null());
    for name in ["TRIAGE_API_ADDR", "TRIAGE_API_TOKEN", "TRIAGE_API_CA_CERT"] {
        command.env_remove(name);
    }
    // HOST:PORT, as api.endpoint is written; the test of a closed port
    // below gives a URL, which works too.
    if let Some(server) = server {
        command.args(["--addr", &server.addresses.api.to_string()]);
    }
    let output = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("triage query finishes in time")
        .expect("no panic")
        .expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn query_json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "--token", TOKEN]);
    let (ok, stdout, stderr) = triage_query(Some(server), &all).await;
    assert!(ok, "triage query {args:?} failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_json_and_tables() {
    let server = start(Some(TOKEN)).await;
    send_shop_traffic(&server).await;
    record_incidents(&server);

    let services = query_json(&server, &["services"]).await;
    let names: Vec<&str> = services
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|service| service["name"].as_str())
        .collect();
    assert_eq!(names, ["checkout", "payment"]);

    let stats = query_json(&server, &["stats", "checkout", "--since", "15m"]).await;
    assert_eq!(stats["total"]["requests"], CALLS);
    assert_eq!(stats["edges"][0]["callee"], "payment");

    let topology = query_json(&server, &["topology"]).await;
    assert_eq!(topology["edges"][0]["caller"], "checkout");
    assert_eq!(topology["edges"][0]["callee_side"]["requests"], CALLS);

    let incidents = query_json(&server, &["incidents"]).await;
    let ids: Vec<&str> = incidents
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|incident| incident["id"].as_str())
        .collect();
    assert_eq!(ids, ["cart@2000", "payment@1000"]);
    let open = query_json(&server, &["incidents", "--state", "open"]).await;
    assert_eq!(open.as_array().map(Vec::len), Some(1));

    let payment = query_json(&server, &["incident", "payment@1000"]).await;
    assert_eq!(payment["incident"]["state"], "resolved");
    assert_eq!(payment["events"][0]["event"], "opened");
    assert_eq!(payment["events"][1]["event"], "resolved");

    let mut api = client(&server, Some(TOKEN)).await;
    api.record_change(pb::RecordChangeRequest {
        service: "cart".into(),
        kind: "feature_flag".into(),
        key: "new-checkout".into(),
        value: "on".into(),
        ..Default::default()
    })
    .await
    .expect("recorded");
    let changes = query_json(&server, &["changes", "--service", "cart"]).await;
    assert_eq!(changes[0]["kind"], "feature_flag");
    assert_eq!(changes[0]["key"], "new-checkout");

    // Tables for people.
    let (ok, table, stderr) = triage_query(Some(&server), &["services", "--token", TOKEN]).await;
    assert!(ok, "{stderr}");
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains("checkout  1           payment"), "{table}");
    let (ok, table, stderr) = triage_query(
        Some(&server),
        &["incident", "payment@1000", "--token", TOKEN],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        table.starts_with("payment@1000  resolved  warning"),
        "{table}"
    );

    // Without the token, and for an unknown incident: non-zero, and why.
    let (ok, _, stderr) = triage_query(Some(&server), &["services"]).await;
    assert!(!ok);
    assert!(stderr.contains("TRIAGE_API_TOKEN"), "{stderr}");
    let (ok, _, stderr) =
        triage_query(Some(&server), &["incident", "nope@1", "--token", TOKEN]).await;
    assert!(!ok);
    assert!(stderr.contains("NotFound"), "{stderr}");
    // Hints name the CLI command to run, not the gRPC method behind it.
    let (ok, _, stderr) = triage_query(Some(&server), &["stats", "nosuch", "--token", TOKEN]).await;
    assert!(!ok);
    assert!(stderr.contains("`triage query services`"), "{stderr}");
    assert!(!stderr.contains("ListServices"), "{stderr}");

    // Nothing listening: advice on what to check.
    let closed = server.api_url();
    server.stop().await;
    let (ok, _, stderr) = triage_query(None, &["services", "--addr", &closed]).await;
    assert!(!ok);
    assert!(stderr.contains("Is `triage run` running"), "{stderr}");
    assert!(stderr.contains("api.endpoint"), "{stderr}");
}

// === a client that is not ours: Python grpcio with server reflection ===

/// A child process killed when dropped, so a failing test leaves nothing
/// running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_discovers_the_api_by_reflection() {
    let python = require_python();
    let server = start(Some(TOKEN)).await;
    send_shop_traffic(&server).await;
    let seqs = record_incidents(&server);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/query_client.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--addr", &server.addresses.api.to_string()])
        .args(["--token", TOKEN, "--service", "checkout"])
        .args(["--after-seq", &seqs[0].to_string(), "--expect-replay", "2"])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Child(command.spawn().expect("python starts"));
    let stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    let (lines, mut received) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Collected as it comes, so a failure can show what Python said.
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let collected = std::sync::Arc::clone(&errors);
    let stderr_reader = std::thread::spawn(move || {
        for line in BufReader::new(&mut stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut text) = collected.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    let said = |errors: &std::sync::Mutex<String>| {
        // Give the reader a moment to take in the last lines of a crash.
        std::thread::sleep(Duration::from_millis(200));
        errors.lock().map(|text| text.clone()).unwrap_or_default()
    };
    let mut next_line = async || -> Value {
        match tokio::time::timeout(WAIT, received.recv()).await {
            Ok(Some(line)) => serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line}")),
            outcome => panic!(
                "query_client.py gave no line ({outcome:?}); its stderr:\n{}",
                said(&errors)
            ),
        }
    };

    let ready = next_line().await;
    assert_eq!(ready["step"], "ready", "{ready}");
    let reflected = ready["reflected_services"].to_string();
    assert!(reflected.contains("triage.v1.TriageQuery"), "{reflected}");
    assert!(reflected.contains("grpc.health.v1.Health"), "{reflected}");
    assert_eq!(ready["health"]["(server)"], "SERVING");
    assert_eq!(ready["health"]["triage.v1.TriageQuery"], "SERVING");
    assert!(
        ready["unauthenticated"]
            .as_str()
            .is_some_and(|text| text.contains("bearer token")),
        "{ready}"
    );
    assert_eq!(
        ready["services"],
        serde_json::json!(["checkout", "payment"])
    );
    assert_eq!(ready["stats"]["requests"], CALLS);
    assert_eq!(ready["stats"]["errors"], FAILED);
    assert_eq!(ready["stats"]["operations"]["GET /cart"], CALLS);
    assert_eq!(ready["stats"]["edges"]["payment"], CALLS);
    assert_eq!(ready["edges"], serde_json::json!(["checkout -> payment"]));
    assert_eq!(
        ready["incidents"],
        serde_json::json!(["cart@2000", "payment@1000"])
    );
    assert_eq!(ready["first_incident_events"], serde_json::json!([seqs[1]]));
    assert!(
        ready["bad_kind"]
            .as_str()
            .is_some_and(|text| text.starts_with("kind:")),
        "{ready}"
    );
    assert_eq!(ready["change"]["kind"], "deploy");
    assert_eq!(ready["change"]["source"], "api");
    assert_eq!(ready["replayed"], serde_json::json!([seqs[1], seqs[2]]));

    // Published after the Python watch started: it must arrive there.
    let live = record(
        &server,
        IncidentEvent::Updated(incident("cart", 2_000, IncidentState::Open)),
    );
    let done = next_line().await;
    assert_eq!(done["step"], "done", "{done}");
    assert_eq!(done["live"]["seq"], live);
    assert_eq!(done["live"]["id"], "cart@2000");
    assert_eq!(done["live"]["kind"], "EVENT_KIND_UPDATED");
    assert_eq!(
        done["resumed_first"], live,
        "resuming replays only later events"
    );

    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .expect("no panic")
        .expect("python exits");
    let _ = stderr_reader.join();
    assert!(
        status.success(),
        "query_client.py failed:\n{}",
        said(&errors)
    );
    server.stop().await;
}

/// Alerts link here (`generatorURL`): the admin port serves an incident with
/// its events from the history.
#[tokio::test]
async fn the_admin_port_serves_an_incident_by_id() {
    let server = TestServer::start().await;
    record(
        &server,
        IncidentEvent::Opened(incident("payment", 1_700_000_000, IncidentState::Open)),
    );
    let url = format!("{}/api/v1/incidents/payment@1700000000", server.admin_url());
    let response = reqwest::get(&url).await.expect("admin answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["incident"]["id"], "payment@1700000000");
    assert_eq!(body["events"][0]["kind"], "opened");
    let missing = reqwest::get(format!("{}/api/v1/incidents/nope@1", server.admin_url()))
        .await
        .expect("admin answers");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    server.stop().await;
}

/// More services than a page: the client follows `next_page_token` to the
/// last page and gets every node and edge once (GetTopology paging).
#[tokio::test]
async fn the_client_follows_topology_pages() {
    let server = TestServer::start().await;
    let now = server.store.now_unix_nanos();
    let sample = triage::store::Sample {
        end_unix_nanos: now,
        duration_nanos: 2_000_000,
        error: false,
        trace_id: 1,
    };
    for n in 0..12 {
        let service = server.store.service(&format!("svc-{n:02}"));
        server.store.record_operation(&service, "GET /", sample);
        server.store.record_edge(&service, "db", sample);
    }
    let mut api = client(&server, None).await;
    let paged = api.topology_in_pages(0, 5).await.expect("topology pages");
    assert_eq!(paged.nodes.len(), 13, "12 services and db");
    assert_eq!(paged.edges.len(), 12);
    let whole = api.topology(0).await.expect("topology");
    assert_eq!(paged, whole);
    server.stop().await;
}
