//! `triage demo` through the real binary: the collector and the simulator
//! start, the injected fault opens an incident on the faulty service within
//! the time bound, and Ctrl-C (SIGINT) stops the demo cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The whole test's bound: 24 s of healthy traffic, detection within a few
/// windows, and the drain.
const BOUND: Duration = Duration::from_secs(60);

fn triage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triage"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// Kills the child if the test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_opens_an_incident_on_the_faulty_service_and_stops_on_sigint() {
    let started = Instant::now();
    let mut child = triage()
        .args([
            "demo",
            "--healthy",
            "24s",
            "--duration",
            "50s",
            "--any-ports",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start triage demo");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut child = Guard(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut seen = Vec::new();
    let opened = loop {
        let left = BOUND.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains("incident opened: payment@")
                    || (line.contains("incident opened:")
                        && line
                            .split("services: ")
                            .nth(1)
                            .is_some_and(|services| services.split(", ").any(|s| s == "payment")));
                seen.push(line.clone());
                if found {
                    break line;
                }
            }
            Err(_) => panic!(
                "no incident opened on payment within {BOUND:?}; output:\n{}",
                seen.join("\n")
            ),
        }
    };
    let output = seen.join("\n");
    assert!(
        output.contains("OTLP/gRPC  127.0.0.1:"),
        "the banner names the loopback listeners:\n{output}"
    );
    let injected = seen
        .iter()
        .position(|line| line.contains("fault injected: bad-deploy:payment"))
        .unwrap_or_else(|| panic!("the fault is announced:\n{output}"));
    assert!(
        injected < seen.len() - 1,
        "the incident opens after the fault: {opened}"
    );

    // Ctrl-C: the demo stops early, says so, and exits 0.
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let stopped = loop {
        let left = BOUND.saturating_sub(started.elapsed()) + Duration::from_secs(10);
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("demo stopped") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no 'demo stopped' line after SIGINT; output:\n{}",
                seen.join("\n")
            ),
        }
    };
    assert!(stopped.contains("incidents opened"), "{stopped}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.0.try_wait().expect("wait for triage") {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "triage demo did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "a stopped demo exits 0");
    assert!(started.elapsed() < BOUND + Duration::from_secs(15));
}

#[test]
fn demo_rejects_a_healthy_period_too_short_for_baselines() {
    let output = triage()
        .args(["demo", "--healthy", "5s"])
        .output()
        .expect("run triage demo");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--healthy 5s"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing starts on bad arguments");
}
