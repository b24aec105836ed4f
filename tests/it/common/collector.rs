//! The real `triage` binary as a child process, with its JSON log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one expected log line may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running collector; killed when dropped so a failing test leaves no
/// process behind.
pub struct Collector {
    child: Child,
    pub http: SocketAddr,
    /// The `triage is ready` log line (it names every bound address).
    pub ready: Value,
    /// JSON log lines from stderr, as they come.
    lines: mpsc::Receiver<Value>,
    /// Lines read so far, for failure messages and later checks.
    pub seen: Vec<Value>,
}

impl Collector {
    pub fn start(config: &Path) -> Collector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
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
            http: "127.0.0.1:0".parse().expect("address"),
            ready: Value::Null,
            lines,
            seen: Vec::new(),
        };
        let ready = collector.wait_for_log("triage is ready");
        collector.http = ready["http"]
            .as_str()
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("ready line names the HTTP address: {ready}"));
        collector.ready = ready;
        collector
    }

    /// Waits for a log line whose message contains `message`.
    pub fn wait_for_log(&mut self, message: &str) -> Value {
        if let Some(found) = self.seen.iter().find(|line| line_has(line, message)) {
            return found.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line_has(&line, message) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line {message:?} within {PATIENCE:?}; got:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// The log lines that have arrived so far.
    pub fn drain_log(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub fn log_text(&self) -> String {
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL: no drain, no final snapshot, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL triage");
        self.child.wait().expect("wait for triage");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "triage did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn line_has(line: &Value, message: &str) -> bool {
    match line {
        Value::Object(_) => line["fields"]["message"]
            .as_str()
            .or_else(|| line["message"].as_str())
            .is_some_and(|text| text.contains(message)),
        Value::String(text) => text.contains(message),
        _ => false,
    }
}
