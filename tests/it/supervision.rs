//! No input can stop a task: the real `triage` binary is sent the delta
//! histogram that once panicked the detection tick (bucket counts of three
//! billion, twice in one window), and must stay ready, detect on, and
//! report its own metrics, alert delivery's included.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

struct Collector {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    fn start(config: &str) -> (Collector, Value) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("triage.yaml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn triage");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value =
                    serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
                if sender.send(value).is_err() {
                    return;
                }
            }
        });
        let mut collector = Collector {
            child,
            lines,
            seen: Vec::new(),
        };
        let ready = collector.wait_for("triage is ready");
        (collector, ready)
    }

    fn wait_for(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {message:?}: {:?}", self.seen));
            self.seen.push(line.clone());
            if line.to_string().contains(message) {
                return line;
            }
        }
    }

    fn log_text(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

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
    let (mut collector, ready) = Collector::start(&config);
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
    assert!(
        !metrics.contains("triage_task_restarts_total{"),
        "no task panicked:\n{}",
        collector.log_text()
    );
    assert!(
        metrics.contains("triage_alerts_queue_capacity{"),
        "alert delivery's metrics are exported: {metrics}"
    );
    let log = collector.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
