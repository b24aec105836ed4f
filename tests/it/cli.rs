//! The `triage` binary as a user runs it: help, validate, example config,
//! start-up errors, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn triage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triage"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    // The developer's environment must not leak into what is tested.
    for variable in [
        "TRIAGE_CONFIG",
        "TRIAGE_GRPC_ENDPOINT",
        "TRIAGE_HTTP_ENDPOINT",
        "TRIAGE_ADMIN_ENDPOINT",
        "TRIAGE_LOG_LEVEL",
        "TRIAGE_LOG_FORMAT",
    ] {
        command.env_remove(variable);
    }
    command
}

fn output(command: &mut Command) -> (i32, String, String) {
    let output = command.output().expect("run triage");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_run_flag() {
    let (code, stdout, _) = output(triage().arg("--help"));
    assert_eq!(code, 0);
    for word in ["run", "validate", "example-config"] {
        assert!(stdout.contains(word), "--help mentions {word}:\n{stdout}");
    }
    let (code, stdout, _) = output(triage().args(["run", "--help"]));
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--grpc-endpoint",
        "--http-endpoint",
        "--admin-endpoint",
        "--log-level",
        "--log-format",
        "TRIAGE_GRPC_ENDPOINT",
    ] {
        assert!(
            stdout.contains(flag),
            "run --help mentions {flag}:\n{stdout}"
        );
    }
}

#[test]
fn help_lists_the_four_ports_at_their_defaults() {
    let (code, stdout, _) = output(triage().arg("--help"));
    assert_eq!(code, 0);
    let defaults = triage::config::Settings::default();
    for (what, address, flag) in [
        ("OTLP/gRPC", defaults.grpc.endpoint, "--grpc-endpoint"),
        ("OTLP/HTTP", defaults.http.endpoint, "--http-endpoint"),
        ("admin", defaults.admin.endpoint, "--admin-endpoint"),
        ("query API", defaults.api.endpoint, "--api-endpoint"),
    ] {
        let port = address.port().to_string();
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(&port))
            .unwrap_or_else(|| panic!("--help lists port {port} ({what}):\n{stdout}"));
        assert!(
            line.contains(what) && line.contains(flag),
            "{line:?} names {what} and {flag}"
        );
    }
}

/// The README's "Command line" block shows every subcommand `triage --help`
/// lists, so none is found only by accident.
#[test]
fn readme_command_line_lists_every_subcommand() {
    let (code, stdout, _) = output(triage().arg("--help"));
    assert_eq!(code, 0);
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        // Subcommands start at the indent; wrapped descriptions further in.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(commands.len() >= 9, "subcommands in --help:\n{stdout}");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let block = readme
        .split("## Command line")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("README has a Command line block");
    for name in commands {
        assert!(
            block.contains(&format!("triage {name}")),
            "README's Command line block lists `triage {name}`:\n{block}"
        );
    }
}

#[test]
fn every_config_in_deploy_validates() {
    let mut checked = 0;
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")).expect("deploy/")
    {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if !name.starts_with("triage") || !name.ends_with(".yaml") {
            continue;
        }
        let (code, stdout, stderr) = output(triage().arg("validate").arg("-c").arg(&path));
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        checked += 1;
    }
    assert!(checked >= 2, "found the gateway and sidecar configs");
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let (code, _, stderr) =
        output(triage().args(["validate", "-c", "tests/fixtures/config/invalid.yaml"]));
    assert_eq!(code, 1);
    let problems: Vec<&str> = stderr.lines().filter(|line| line.contains(": ")).collect();
    assert!(problems.len() >= 3, "several problems reported:\n{stderr}");
    assert!(stderr.contains("store."), "paths name the field:\n{stderr}");
}

#[test]
fn validate_names_a_missing_file() {
    let (code, _, stderr) = output(triage().args(["validate", "-c", "does/not/exist.yaml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("does/not/exist.yaml"), "{stderr}");
}

#[test]
fn example_config_is_the_documented_one_and_valid() {
    let (code, stdout, _) = output(triage().arg("example-config"));
    assert_eq!(code, 0);
    let documented = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config-example.yaml"),
    )
    .expect("docs/config-example.yaml");
    assert_eq!(
        stdout, documented,
        "regenerate with: triage example-config > docs/config-example.yaml"
    );
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    assert!(
        readme.contains(&documented),
        "README's config reference is the example config"
    );
}

#[test]
fn run_refuses_a_bad_flag_value_and_says_what_to_do() {
    let (code, _, stderr) = output(triage().args(["run", "--grpc-endpoint", "not-an-address"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("grpc-endpoint"), "{stderr}");
    assert!(stderr.contains("triage validate"), "{stderr}");
}

#[test]
fn environment_is_below_flags() {
    // An invalid environment value is overridden by a valid flag.
    let mut child = triage()
        .args([
            "run",
            "--grpc-endpoint",
            "127.0.0.1:0",
            "--http-endpoint",
            "127.0.0.1:0",
            "--admin-endpoint",
            "127.0.0.1:0",
            "--api-endpoint",
            "127.0.0.1:0",
        ])
        .env("TRIAGE_GRPC_ENDPOINT", "bogus")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let ready = wait_for_line(&mut child, "triage is ready");
    terminate(&child);
    let status = child.wait().expect("wait");
    assert!(ready.is_some(), "started with the flag's value");
    assert_eq!(status.code(), Some(0));
}

fn wait_for_line(child: &mut std::process::Child, needle: &str) -> Option<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = sender.send(line);
            }
        }
    });
    receiver.recv_timeout(Duration::from_secs(20)).ok()
}

fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut child = triage()
        .args([
            "run",
            "--grpc-endpoint",
            "127.0.0.1:0",
            "--http-endpoint",
            "127.0.0.1:0",
            "--admin-endpoint",
            "127.0.0.1:0",
            "--api-endpoint",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let ready = wait_for_line(&mut child, "triage is ready").expect("ready line");
    let line: serde_json::Value = serde_json::from_str(&ready).expect("JSON log line");
    assert!(
        line["grpc"]
            .as_str()
            .is_some_and(|address| address.starts_with("127.0.0.1:")),
        "{ready}"
    );
    let started = Instant::now();
    terminate(&child);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A port in use is reported once, with the listener and the address, and
/// not as "Address already in use: Address already in use".
#[test]
fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("address").to_string();
    let (code, _, stderr) = output(triage().args([
        "run",
        "--grpc-endpoint",
        &address,
        "--http-endpoint",
        "127.0.0.1:0",
        "--admin-endpoint",
        "127.0.0.1:0",
        "--api-endpoint",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ]));
    assert_eq!(code, 1, "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("triage: "))
        .unwrap_or_else(|| panic!("an error line:\n{stderr}"));
    assert!(
        line.contains(&format!("cannot listen on {address} for OTLP/gRPC")),
        "{line}"
    );
    assert_eq!(
        line.matches("Address already in use").count(),
        1,
        "each cause once: {line}"
    );
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr:?}");
}

/// Text logs written to a pipe (not a terminal) carry no colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let mut child = triage()
        .args([
            "run",
            "--grpc-endpoint",
            "127.0.0.1:0",
            "--http-endpoint",
            "127.0.0.1:0",
            "--admin-endpoint",
            "127.0.0.1:0",
            "--api-endpoint",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let ready = wait_for_line(&mut child, "triage is ready");
    terminate(&child);
    let status = child.wait().expect("wait");
    let ready = ready.expect("ready line");
    assert!(ready.contains(" INFO "), "a text log line: {ready:?}");
    assert!(!ready.contains('\u{1b}'), "no colour codes: {ready:?}");
    assert_eq!(status.code(), Some(0));
}
