//! No input can stop a task: the real `triage` binary is sent the delta
//! histogram that once panicked the detection tick (bucket counts of three
//! billion, twice in one window), and must stay ready, detect on, and
//! report its own metrics, alert delivery's included.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common::collector::Collector;

fn address(ready: &Value, field: &str) -> SocketAddr {
    ready["fields"][field]
        .as_str()
        .or_else(|| ready[field].as_str())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("ready line names the {field} address: {ready}"))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// The histogram from the report: delta, two points in one window, each
/// with a bucket count of three billion (u64 in OTLP/JSON is a string).
fn bomb(time: u64) -> Value {
    let point = |offset: u64| {
        json!({
            "timeUnixNano": (time + offset).to_string(),
            "count": "3000000000",
            "sum": 1.0,
            "bucketCounts": ["3000000000", "0"],
            "explicitBounds": [0.5],
        })
    };
    json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bomb"}}]},
        "scopeMetrics": [{"metrics": [{
            "name": "bomb.duration",
            "histogram": {"aggregationTemporality": 1, "dataPoints": [point(0), point(1_000)]},
        }]}],
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturating_histogram_cannot_stop_detection_and_alert_metrics_are_exported() {
    // An Alertmanager address that refuses connections: alerting is set up,
    // so its metrics exist from the start.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let config = format!(
        r#"
receivers:
  otlp:
    grpc: {{ endpoint: "127.0.0.1:0" }}
    http: {{ endpoint: "127.0.0.1:0" }}
admin: {{ endpoint: "127.0.0.1:0" }}
api: {{ endpoint: "127.0.0.1:0" }}
store: {{ window: 1s, windows: 30 }}
detect: {{ warmup_windows: 3, history_windows: 30, lateness: 1s }}
storage: {{ enabled: false }}
alerting:
  alertmanagers:
    - url: "http://{closed}"
shutdown_timeout: 5s
"#
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("triage.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut collector = Collector::start(&path);
    let ready = collector.ready.clone();
    let http = address(&ready, "http");
    let admin = address(&ready, "admin");
    let client = reqwest::Client::new();

    // Detection starts with the window before its first tick; data sent
    // in the very first windows may precede it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let response = client
        .post(format!("http://{http}/v1/metrics"))
        .json(&bomb(now_nanos()))
        .send()
        .await
        .expect("send the histogram");
    assert_eq!(response.status(), 200);
    // The window closes one window plus the lateness later; wait for three
    // more ticks past that.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let readyz = client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = readyz.status();
    collector.drain_log();
    let body = readyz.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body}\n{}", collector.log_text());
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    // The counter exists at zero per task from the start; no task panicked.
    let restarts: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("triage_task_restarts_total{"))
        .collect();
    assert!(!restarts.is_empty(), "{metrics}");
    assert!(
        restarts.iter().all(|line| line.ends_with(" 0")),
        "no task panicked: {restarts:?}\n{}",
        collector.log_text()
    );
    assert!(
        metrics.contains("triage_alerts_queue_capacity{"),
        "alert delivery's metrics are exported: {metrics}"
    );
    collector.drain_log();
    let log = collector.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
