//! The collector fed by the real OpenTelemetry Python SDK, over OTLP/gRPC and
//! OTLP/HTTP (protobuf).
//!
//! `tests/python/send_spans.py` sends a small deterministic topology (a
//! frontend calling a backend that queries a database) and prints what it
//! sent; this test checks that the collector turned it into the right RED
//! series: request and error counts, latency quantiles within HDR precision,
//! and edges named after the service that answered, not the address called.
//!
//! The interpreter is the project's venv (`scripts/test-deps.sh` creates
//! it), or `TRIAGE_TEST_PYTHON`. Without it the test fails and says how to
//! create it.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::common::{require_python, TestServer};
use triage::model::{SeriesKey, SeriesKind};
use triage::store::{SeriesStats, Store};

/// Bound on one run of the script: start-up, sending, and the exporters'
/// own retries (10 s) if the collector does not answer.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on waiting for the collector to have recorded what was sent. Edges
/// can wait for the pairing timeout (5 s) when a client span's child is late.
const DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// What the script reports it sent (see `send_spans.py`).
#[derive(Debug, Deserialize)]
pub(crate) struct Summary {
    protocol: String,
    frontend: String,
    backend: String,
    checkout: Checkout,
    pay: Pay,
    db: Db,
    /// Spans each service's exporter delivered.
    exported: BTreeMap<String, u64>,
}

/// The frontend's `GET /checkout` SERVER spans.
#[derive(Debug, Deserialize)]
struct Checkout {
    name: String,
    route: String,
    count: u64,
    errors: u64,
    durations_ns: Vec<u64>,
}

/// Frontend CLIENT spans to `server_address`, each the parent of a backend
/// SERVER span.
#[derive(Debug, Deserialize)]
struct Pay {
    name: String,
    route: String,
    calls: u64,
    server_address: String,
}

/// Backend CLIENT spans to a database.
#[derive(Debug, Deserialize)]
struct Db {
    calls: u64,
    system: String,
    namespace: String,
    /// `server.address` of the database: the edge's callee.
    address: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_become_red_series_and_paired_edges() {
    let python = require_python();
    let server = TestServer::start().await;

    let grpc = send_spans(&python, "grpc", server.addresses.grpc, "grpc").await;
    check_recorded(&server, &grpc).await;

    let http = send_spans(&python, "http/protobuf", server.addresses.http, "http").await;
    check_recorded(&server, &http).await;

    server.stop().await;
}

/// What `send_spans.py` needs to export over TLS with a client
/// certificate and a bearer token.
pub(crate) struct Tls {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub token: String,
}

/// Runs `send_spans.py` against `endpoint` and returns what it sent; panics
/// with the script's output if it fails or hangs.
async fn send_spans(python: &Path, protocol: &str, endpoint: SocketAddr, suffix: &str) -> Summary {
    send_spans_with(python, protocol, endpoint, suffix, None).await
}

/// As [`send_spans`], over TLS when `tls` is given.
pub(crate) async fn send_spans_with(
    python: &Path,
    protocol: &str,
    endpoint: SocketAddr,
    suffix: &str,
    tls: Option<&Tls>,
) -> Summary {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_spans.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args(["--protocol", protocol, "--suffix", suffix])
        .arg("--endpoint")
        .arg(endpoint.to_string());
    if let Some(tls) = tls {
        command
            .arg("--ca-file")
            .arg(&tls.ca)
            .arg("--client-cert")
            .arg(&tls.client_cert)
            .arg("--client-key")
            .arg(&tls.client_key)
            // Through the environment, not the command line, as a real
            // deployment would pass a secret.
            .env("TRIAGE_TEST_TOKEN", &tls.token)
            // requests lets these override the CA a session is given
            // (the exporter's certificate_file): a machine-wide bundle
            // would hide the test's CA.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE");
    }
    command
        // Loopback is never proxied, and the developer's own OTEL_* settings
        // must not redirect or disable the exporters.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }

    let run = run_with_timeout(command, SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!(
            "send_spans.py --protocol {protocol} did not finish within {SCRIPT_TIMEOUT:?}\n\
             --- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
        )
    });
    assert!(
        status.success(),
        "send_spans.py --protocol {protocol} to {endpoint} failed ({status})\n\
         --- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
    );
    let summary: Summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("send_spans.py printed no valid summary: {error}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
    });
    assert_eq!(summary.protocol, protocol);
    summary
}

/// What a child process printed, and how it exited (`None`: killed at the
/// timeout).
struct Run {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion or kills it after `timeout`.
///
/// Tokio's `process` feature is not enabled in this crate, so this uses
/// `std::process`: the pipes are drained on blocking threads (a child that
/// fills a pipe would otherwise stall) and the exit is polled, which keeps
/// the runtime's two workers free for the collector under test.
async fn run_with_timeout(
    mut command: std::process::Command,
    timeout: Duration,
) -> std::io::Result<Run> {
    let mut child = command.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Killing closes the pipes, so the readers below still finish
            // and show what the child printed before it hung.
            child.kill()?;
            child.wait()?;
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(Run {
        status,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
    })
}

/// Reads a pipe to its end on a blocking thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error only shortens the diagnostic output.
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits until the collector has recorded everything `summary` says was
/// sent, then checks counts, quantiles and edges.
pub(crate) async fn check_recorded(server: &TestServer, summary: &Summary) {
    let protocol = &summary.protocol;
    let frontend = summary.frontend.as_str();
    let backend = summary.backend.as_str();
    assert_eq!(
        summary.exported.values().sum::<u64>(),
        summary.checkout.count + 2 * summary.pay.calls + summary.db.calls,
        "{protocol}: the script's own totals disagree: {summary:?}"
    );

    // HTTP SERVER spans are named by route unless the name already ends
    // with it, as `GET /checkout` and `POST /pay` do.
    assert!(summary.checkout.name.ends_with(&summary.checkout.route));
    assert!(summary.pay.name.ends_with(&summary.pay.route));
    let checkout = (
        SeriesKind::Operation,
        frontend,
        summary.checkout.name.as_str(),
    );
    let pay = (SeriesKind::Operation, backend, summary.pay.name.as_str());
    // Paired with its child, a client span names the child's service; a
    // database call names the database.
    let pay_edge = (SeriesKind::Edge, frontend, backend);
    let db_edge = (SeriesKind::Edge, backend, summary.db.address.as_str());
    let expected = [
        (checkout, summary.checkout.count),
        (pay, summary.pay.calls),
        (pay_edge, summary.pay.calls),
        (db_edge, summary.db.calls),
    ];

    eprintln!("{protocol}: waiting for {expected:?}");
    let stats = server
        .wait_for(DATA_TIMEOUT, |store| {
            let stats: Vec<SeriesStats> = expected
                .iter()
                .map(|&((kind, service, name), _)| series_stats(store, kind, service, name))
                .collect::<Option<_>>()?;
            let complete = stats
                .iter()
                .zip(&expected)
                .all(|(stats, (_, count))| stats.requests >= *count);
            complete.then_some(stats)
        })
        .await;
    for (stats, ((kind, service, name), count)) in stats.iter().zip(&expected) {
        assert_eq!(
            stats.requests,
            *count,
            "{protocol}: requests of {} series {service}/{name}",
            kind.as_str()
        );
    }
    let [checkout_stats, pay_stats, pay_edge_stats, db_edge_stats] = &stats[..] else {
        unreachable!("one stats per expected series");
    };
    assert_eq!(
        checkout_stats.errors, summary.checkout.errors,
        "{protocol}: checkout errors"
    );
    assert_eq!(pay_stats.errors, 0, "{protocol}: pay errors");
    assert_eq!(pay_edge_stats.errors, 0, "{protocol}: pay edge errors");
    assert_eq!(db_edge_stats.errors, 0, "{protocol}: db edge errors");
    check_quantiles(protocol, checkout_stats, &summary.checkout.durations_ns);

    // Every call is already counted on the paired edge, so none can still be
    // waiting to expire under the address the client named (or `unknown`).
    let edges = server.store.edges();
    let callees = |caller: &str| -> Vec<Arc<str>> {
        edges
            .iter()
            .filter(|edge| &*edge.caller == caller)
            .map(|edge| Arc::clone(&edge.callee))
            .collect()
    };
    assert_eq!(
        callees(frontend),
        [Arc::from(backend)],
        "{protocol}: edges of {frontend}"
    );
    assert_eq!(
        callees(backend),
        [Arc::from(summary.db.address.as_str())],
        "{protocol}: edges of {backend} (database {}, namespace {} is detail, not a callee)",
        summary.db.system,
        summary.db.namespace
    );
    assert!(
        edges.iter().all(|edge| *edge.callee != *summary.pay.server_address),
        "{protocol}: an edge names the client's address instead of the service that answered: {edges:?}"
    );
}

fn series_stats(store: &Store, kind: SeriesKind, service: &str, name: &str) -> Option<SeriesStats> {
    store.stats(&SeriesKey::new(kind, service, name), 0, u64::MAX)
}

/// Checks the series' quantiles (milliseconds) against the exact ones of the
/// durations sent, within HDR precision: 2 significant digits is under 1%,
/// plus 1 µs because the store records whole microseconds.
fn check_quantiles(protocol: &str, stats: &SeriesStats, durations_ns: &[u64]) {
    let mut sorted = durations_ns.to_vec();
    sorted.sort_unstable();
    let quantiles = [
        ("p50", stats.p50, exact_quantile(&sorted, 0.50)),
        ("p90", stats.p90, exact_quantile(&sorted, 0.90)),
        ("p95", stats.p95, exact_quantile(&sorted, 0.95)),
        ("p99", stats.p99, exact_quantile(&sorted, 0.99)),
        ("max", stats.max, exact_quantile(&sorted, 1.0)),
    ];
    for (label, recorded, exact_ns) in quantiles {
        let recorded = recorded.unwrap_or_else(|| panic!("{protocol}: checkout has no {label}"));
        let exact = exact_ns as f64 / 1e6;
        let tolerance = exact * 0.01 + 0.001;
        assert!(
            (recorded - exact).abs() <= tolerance,
            "{protocol}: checkout {label} is {recorded} ms, exact {exact} ms (tolerance {tolerance} ms)"
        );
    }
}

/// The nearest-rank quantile HDR histograms report: the value at rank
/// `ceil(q * n)` (at least 1) of the sorted values.
fn exact_quantile(sorted: &[u64], quantile: f64) -> u64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
