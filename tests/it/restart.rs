//! History that survives a crash: the real `triage` binary learns a
//! baseline from real OpenTelemetry SDK traffic, opens an incident, is
//! killed with SIGKILL, and is started again on the same data directory.
//!
//! The restarted collector must have its baselines at once (ready, not
//! warming up), keep the incident open while the fault lasts (a collector
//! warming up would see nothing wrong and resolve it after `resolve_after`
//! windows), resolve that same incident when healthy traffic resumes, and
//! open no false incident for the time it was down.
//!
//! Everything is observed from outside, as a user would: the JSON log lines
//! and the history database, read with SQLite in read-only mode.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;

use crate::common::collector::Collector;

/// The service the traffic comes from, and its one operation.
const SERVICE: &str = "payment";
const OPERATION: &str = "POST /pay";
/// Time between spans: 50 requests per 1 s window.
const SPAN_EVERY: Duration = Duration::from_millis(20);
/// How long any one expected thing may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// Traffic shapes.
const HEALTHY: u8 = 0;
const FAILING: u8 = 1;

/// Detection scaled down to seconds: 1 s windows, 10 windows of warm-up,
/// judged 1 s after they end, snapshots every second.
fn config(data_dir: &Path) -> String {
    let mut yaml = format!(
        r#"
receivers:
  otlp:
    grpc: {{ endpoint: "127.0.0.1:0" }}
    http: {{ endpoint: "127.0.0.1:0" }}
admin: {{ endpoint: "127.0.0.1:0" }}
store: {{ window: 1s, windows: 30 }}
detect: {{ warmup_windows: 10, history_windows: 60, lateness: 1s }}
storage:
  data_dir: "{}"
  snapshot_interval: 1s
shutdown_timeout: 5s
"#,
        data_dir.display()
    );
    // The query API listens on its own port when this build has one; keep
    // it off the default port so parallel tests cannot collide.
    if example_config().contains("\napi:") {
        yaml.push_str("api: { endpoint: \"127.0.0.1:0\" }\n");
    }
    yaml
}

fn example_config() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_triage"))
        .arg("example-config")
        .output()
        .expect("run triage example-config");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A field of a JSON log line (tracing puts fields under `fields`).
fn field(line: &Value, name: &str) -> Value {
    let value = &line["fields"][name];
    if value.is_null() {
        line[name].clone()
    } else {
        value.clone()
    }
}

/// Real SDK traffic to one collector: a span every 20 ms through the OTLP
/// HTTP exporter, failing while `shape` says so.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(runtime: &tokio::runtime::Handle, http: SocketAddr, shape: Arc<AtomicU8>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let runtime = runtime.clone();
        let thread = std::thread::spawn(move || {
            // The exporter's reqwest client needs the runtime's context; the
            // simple processor exports inside `Span::end`, on this thread.
            let _context = runtime.enter();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("http://{http}/v1/traces"))
                .with_timeout(Duration::from_secs(2))
                .with_retry_policy(RetryPolicy::disabled())
                .build()
                .expect("build OTLP exporter");
            let provider = SdkTracerProvider::builder()
                .with_resource(Resource::builder().with_service_name(SERVICE).build())
                .with_simple_exporter(exporter)
                .build();
            let tracer = provider.tracer("restart-test");
            let mut next = Instant::now();
            let mut n: u64 = 0;
            while !stopping.load(Ordering::Relaxed) {
                let end = SystemTime::now();
                let millis = 20 + n % 7;
                let mut span = tracer
                    .span_builder(OPERATION)
                    .with_kind(SpanKind::Server)
                    .with_start_time(end - Duration::from_millis(millis))
                    .with_attributes([KeyValue::new("http.route", "/pay")])
                    .start(&tracer);
                if shape.load(Ordering::Relaxed) == FAILING {
                    span.set_status(Status::error("card processor unavailable"));
                }
                span.end_with_timestamp(end);
                n += 1;
                next += SPAN_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let _ = provider.shutdown();
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The history database, opened read-only as an operator would.
fn database(data_dir: &Path) -> Connection {
    let path: PathBuf = data_dir.join("triage.db");
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|error| panic!("open {} read-only: {error}", path.display()));
    connection
        .busy_timeout(Duration::from_secs(2))
        .expect("busy timeout");
    connection
}

/// Polls `probe` every 100 ms until it gives a value.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Windows the newest snapshot's detector for the operation has seen. The
/// baseline is stored as zlib-compressed JSON.
fn windows_learned(db: &Connection) -> Option<u64> {
    let compressed: Vec<u8> = db
        .query_row(
            "SELECT detector FROM snapshot_series
             WHERE snapshot_id = (SELECT MAX(id) FROM snapshots)
               AND kind = 'operation' AND service = ?1 AND name = ?2",
            [SERVICE, OPERATION],
            |row| row.get(0),
        )
        .optional()
        .ok()
        .flatten()?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .read_to_end(&mut json)
        .expect("a zlib-compressed baseline");
    let detector: Value = serde_json::from_slice(&json).expect("baseline JSON");
    detector["seen"].as_u64()
}

/// Every stored event: (seq, incident id, kind).
fn events(db: &Connection) -> Vec<(i64, String, String)> {
    let mut statement = db
        .prepare("SELECT seq, incident_id, kind FROM incident_events ORDER BY seq")
        .expect("prepare");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("query events")
        .collect::<Result<_, _>>()
        .expect("read events")
}

fn incident_state(db: &Connection, id: &str) -> Option<String> {
    db.query_row("SELECT state FROM incidents WHERE id = ?1", [id], |row| {
        row.get(0)
    })
    .optional()
    .expect("read incident")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_collector_comes_back_with_its_baselines_and_open_incident() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let config_path = dir.path().join("triage.yaml");
    std::fs::write(&config_path, config(&data_dir)).expect("write config");
    let runtime = tokio::runtime::Handle::current();
    let shape = Arc::new(AtomicU8::new(HEALTHY));

    tokio::task::spawn_blocking(move || {
        // --- first life: learn, then fail until an incident is open ---
        let first = Collector::start(&config_path);
        let traffic = Traffic::start(&runtime, first.http, Arc::clone(&shape));
        let db = wait_for("the database", || {
            data_dir
                .join("triage.db")
                .exists()
                .then(|| database(&data_dir))
        });
        wait_for("a learned baseline", || {
            windows_learned(&db).filter(|&seen| seen >= 12)
        });
        shape.store(FAILING, Ordering::Relaxed);
        let id: String = wait_for("an open incident", || {
            db.query_row(
                "SELECT id FROM incidents WHERE service = ?1 AND state = 'open'",
                [SERVICE],
                |row| row.get(0),
            )
            .optional()
            .ok()
            .flatten()
        });
        // A snapshot that already holds the open incident.
        wait_for("a snapshot with the incident", || {
            db.query_row(
                "SELECT 1 FROM snapshots, json_each(snapshots.incidents, '$.open') AS open
                 WHERE snapshots.id = (SELECT MAX(id) FROM snapshots)
                   AND json_extract(open.value, '$.incident.id') = ?1",
                [&id],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .ok()
            .flatten()
        });
        drop(traffic);
        first.kill();
        let before_restart = events(&db);
        assert_eq!(
            before_restart
                .last()
                .map(|(_, id, kind)| (id.as_str(), kind.as_str())),
            Some((id.as_str(), "opened")),
            "{before_restart:?}"
        );

        // --- second life: same data directory ---
        let mut second = Collector::start(&config_path);
        let restored = second.wait_for_log("restored detection baselines");
        assert_eq!(field(&restored, "open_incidents"), 1, "{restored}");
        let ready = field(&restored, "ready").as_u64().unwrap_or(0);
        assert!(
            ready >= 1,
            "restored detectors are ready at once: {restored}"
        );
        let reopened = second.wait_for_log("open incidents restored");
        assert!(
            field(&reopened, "open").to_string().contains(&id),
            "{reopened}"
        );

        // The fault goes on: the baselines see it, so the incident stays
        // open well past `resolve_after` windows.
        let traffic = Traffic::start(&runtime, second.http, Arc::clone(&shape));
        std::thread::sleep(Duration::from_secs(7));
        assert_eq!(incident_state(&db, &id).as_deref(), Some("open"));
        let during = events(&db);
        assert!(
            during[before_restart.len()..]
                .iter()
                .all(|(_, other, kind)| other == &id && kind == "updated"),
            "only updates of the same incident while the fault lasts: {during:?}"
        );

        // Healthy again: that same incident resolves, well before a new
        // warm-up could have finished.
        shape.store(HEALTHY, Ordering::Relaxed);
        let healthy_at = Instant::now();
        wait_for("the incident to resolve", || {
            (incident_state(&db, &id).as_deref() == Some("resolved")).then_some(())
        });
        assert!(
            healthy_at.elapsed() < Duration::from_secs(10),
            "resolved after {:?}",
            healthy_at.elapsed()
        );
        drop(traffic);
        let ids: Vec<String> = db
            .prepare("SELECT id FROM incidents")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("ids");
        assert_eq!(ids, vec![id.clone()], "no false incident from the restart");

        // A graceful stop writes a last snapshot.
        let newest_taken = |db: &Connection| -> u64 {
            db.query_row("SELECT MAX(taken_unix_nanos) FROM snapshots", [], |row| {
                row.get::<_, i64>(0)
            })
            .expect("newest snapshot") as u64
        };
        let stopping_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        second.drain_log();
        let status = second.terminate();
        assert!(status.success(), "{status:?}");
        assert!(newest_taken(&db) >= stopping_at, "a snapshot at shutdown");
    })
    .await
    .expect("scenario");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
