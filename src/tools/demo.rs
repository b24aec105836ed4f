//! `triage demo`: the collector and the built-in simulator in one process,
//! so a newcomer sees a fault found and explained in under two minutes with
//! nothing to install or configure.
//!
//! It runs the regular [`Server`] with settings scaled down to seconds
//! ([`demo_settings`]: 2 s windows, a 20 s warm-up), points the simulated
//! shop ([`crate::tools::sim`]) at its OTLP/gRPC port in real time, injects one
//! fault after a healthy period, records the change events the shop's CI/CD
//! would post, and prints every incident event as it happens.
//!
//! Invariants: it listens on loopback only (the default ports when they are
//! free, ports the OS picks otherwise); it writes nothing to disk (storage
//! is disabled); it ends by itself after `--duration`, or when `shutdown` is
//! cancelled, and always drains the server before returning.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::model::Change;
use crate::model::Severity;
use crate::model::{Incident, IncidentEvent};
use crate::server::{Addresses, Server, ServerError};
use crate::tools::sim::{self, Fault, FaultKind, Scenario, SimError, Simulator};

/// The fault injected unless `--fault` names another: a new version of
/// payment that is slower and fails more, rolled out pod by pod. It shows
/// every part of an incident: the origin, the symptoms upstream, the deploy
/// that caused it and the rollback to try.
pub const DEFAULT_FAULT: &str = "bad-deploy:payment";

/// Length of a store window in the demo. Short, so that warm-up and
/// detection fit in a minute; long enough to hold tens of requests per
/// operation at the demo's rate.
const WINDOW: Duration = Duration::from_secs(2);
/// Windows a series must be seen for before it may alert: ten, the
/// fewest a baseline is judged from at all.
const WARMUP_WINDOWS: usize = 10;
/// The shortest healthy period: the warm-up plus two windows, so that the
/// baselines hold some settled windows when the fault starts.
const MIN_HEALTHY: Duration = Duration::from_secs(2 * (WARMUP_WINDOWS as u64 + 2));
/// Time a fault needs to be seen: the windows of the hysteresis plus the
/// allowed lateness, with some slack. A shorter fault phase cannot show an
/// incident.
const MIN_FAULT_PHASE: Duration = Duration::from_secs(12);
/// How long the healthy tail lasts when `--fault-for` is not given: enough
/// for the incident to resolve (three normal windows and the lateness).
const DEFAULT_RECOVERY: Duration = Duration::from_secs(30);
/// Longest demo: it is a demo, and the simulator keeps no more history.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How long the server may take to drain when the demo ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Watch triage find a fault: the collector on localhost, a simulated shop
/// of 12 services sending it live OTLP, a fault injected after a healthy
/// period, and every incident printed as it opens, changes and resolves.
///
/// Examples:
///   triage demo
///   triage demo --fault errors:payment --healthy 25s --duration 60s
///   triage demo --fault slow:inventory:250 --json
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The fault to inject (specs as in `triage simulate --list`), e.g.
    /// errors:payment, latency:catalog, down:inventory, slow:cart:400.
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_FAULT)]
    pub fault: String,
    /// Healthy traffic before the fault starts; at least 24s, which the
    /// baselines need.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub healthy: String,
    /// How long the fault lasts before traffic is healthy again (default:
    /// until 30s before the end, so the incident can resolve, or to the end
    /// when the demo is short).
    #[arg(long = "fault-for", value_name = "DURATION")]
    pub fault_for: Option<String>,
    /// Length of the whole demo; it then stops by itself.
    #[arg(long, value_name = "DURATION", default_value = "100s")]
    pub duration: String,
    /// Entry requests per second of the simulated shop (about 13 spans
    /// each). The demo's 2 s windows need tens of requests per operation.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 200.0)]
    pub rate: f64,
    /// Random seed of the simulated traffic.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Print each incident event as one JSON line (as `triage replay`
    /// does) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Listen on ports the OS picks (printed at the start) instead of the
    /// default ones, e.g. next to a running collector.
    #[arg(long)]
    pub any_ports: bool,
    /// Log filter for the collector's own logs on stderr (default: errors
    /// only, so that the incidents stand out).
    #[arg(long, value_name = "FILTER", default_value = "error")]
    pub log_level: String,
}

/// The demo's arguments, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoPlan {
    /// The fault to inject.
    pub fault: FaultKind,
    /// When the fault starts, from the start of the traffic.
    pub healthy: Duration,
    /// How long the fault lasts (`None`: to the end).
    pub fault_for: Option<Duration>,
    /// Length of the demo.
    pub duration: Duration,
    /// Entry requests per second.
    pub rate: f64,
    /// Seed of the simulated traffic.
    pub seed: u64,
    /// Listen on OS-chosen ports rather than the default ones.
    pub any_ports: bool,
}

/// Why the demo could not run or stopped early.
#[derive(Debug, Error)]
pub enum DemoError {
    /// An argument is unusable; the message says which and what would do.
    #[error("{0}")]
    Args(String),
    /// The fault spec or a duration does not parse, or the simulator cannot
    /// send.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The collector could not start or failed while serving. Its message
    /// says so (and printed as a chain, a prefix here would repeat it).
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The collector stopped before the demo ended.
    #[error("the collector stopped unexpectedly")]
    ServerStopped,
    /// Writing the output failed (e.g. a closed pipe). The cause is part of
    /// the message and deliberately not a `source()` (hence the `From` impl
    /// below): printed as a chain (`{:#}`) it would appear twice.
    #[error("cannot write the demo's output: {0}")]
    Output(std::io::Error),
}

impl From<std::io::Error> for DemoError {
    fn from(error: std::io::Error) -> Self {
        DemoError::Output(error)
    }
}

/// What a demo run saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    /// Incidents opened.
    pub opened: usize,
    /// Incidents resolved.
    pub resolved: usize,
    /// Seconds from the fault's start to the first incident opened after
    /// it, when one opened.
    pub time_to_detect_secs: Option<f64>,
    /// Whether the demo was stopped (Ctrl-C) before its end.
    pub interrupted: bool,
}

// === impl DemoArgs ===

impl DemoArgs {
    /// Checks the arguments; every error says what to give instead.
    pub fn plan(&self) -> Result<DemoPlan, DemoError> {
        let fault = sim::parse_fault(&self.fault)?;
        let healthy = sim::parse_duration(&self.healthy)?;
        let duration = sim::parse_duration(&self.duration)?;
        if healthy < MIN_HEALTHY {
            return Err(DemoError::Args(format!(
                "--healthy {}: baselines need at least {}s of healthy traffic before the fault",
                self.healthy,
                MIN_HEALTHY.as_secs()
            )));
        }
        if duration > MAX_DURATION {
            return Err(DemoError::Args(format!(
                "--duration {}: the demo runs at most {}s; use `triage run` and `triage simulate` for longer runs",
                self.duration,
                MAX_DURATION.as_secs()
            )));
        }
        if duration < healthy + MIN_FAULT_PHASE {
            return Err(DemoError::Args(format!(
                "--duration {}: the fault needs at least {}s after the healthy period to be detected \
                 (use --duration {}s or more)",
                self.duration,
                MIN_FAULT_PHASE.as_secs(),
                (healthy + MIN_FAULT_PHASE).as_secs()
            )));
        }
        let fault_for = match &self.fault_for {
            Some(text) => {
                let fault_for = sim::parse_duration(text)?;
                if fault_for < MIN_FAULT_PHASE {
                    return Err(DemoError::Args(format!(
                        "--fault-for {text}: a fault shorter than {}s ends before it can be detected",
                        MIN_FAULT_PHASE.as_secs()
                    )));
                }
                Some(fault_for)
            }
            // Leave a healthy tail for the incident to resolve in, when
            // the fault phase stays long enough to be seen.
            None => duration
                .checked_sub(healthy + DEFAULT_RECOVERY)
                .filter(|fault_for| *fault_for >= 2 * MIN_FAULT_PHASE),
        };
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > 10_000.0 {
            return Err(DemoError::Args(format!(
                "--rate {}: give entry requests per second between 1 and 10000, e.g. --rate 200",
                self.rate
            )));
        }
        Ok(DemoPlan {
            fault,
            healthy,
            fault_for,
            duration,
            rate: self.rate,
            seed: self.seed,
            any_ports: self.any_ports,
        })
    }
}

// === impl DemoPlan ===

impl DemoPlan {
    /// The simulated run: flat traffic starting at `start_unix_nanos`, no
    /// random deploys (they would only distract), the one fault.
    pub fn scenario(&self, start_unix_nanos: u64) -> Scenario {
        Scenario {
            seed: self.seed,
            start_unix_nanos,
            duration: self.duration,
            entry_rate_per_sec: self.rate,
            faults: vec![Fault {
                kind: self.fault.clone(),
                start: self.healthy,
                duration: self.fault_for,
            }],
            benign_deploys: false,
            daily_shape: false,
            benign_changes: Vec::new(),
            shop: sim::Shop::First,
        }
    }
}

/// The collector's settings for the demo: loopback listeners (the default
/// ports when free, unless `any_ports`), windows and warm-up in seconds, no
/// storage.
pub fn demo_settings(any_ports: bool) -> Settings {
    let mut settings = Settings::default();
    let listen = |default: SocketAddr| {
        if any_ports {
            any_port()
        } else {
            free_or_any(default)
        }
    };
    settings.grpc.endpoint = listen(settings.grpc.endpoint);
    settings.http.endpoint = listen(settings.http.endpoint);
    settings.admin.endpoint = listen(settings.admin.endpoint);
    settings.api.endpoint = listen(settings.api.endpoint);
    settings.store.window = WINDOW;
    settings.detect.warmup_windows = WARMUP_WINDOWS;
    settings.detect.history_windows = 60;
    // The simulator sends each second as soon as it is over, with no
    // exporter queue in between: one window of lateness is plenty.
    settings.detect.lateness = WINDOW;
    settings.detect.seasonality = false;
    // Versions seen in the first seconds are the baseline; a deploy a
    // minute in must still count as a change, and be reported quickly.
    settings.changes.instance_timeout = Duration::from_secs(10);
    settings.changes.rollout_debounce = Duration::from_secs(10);
    settings.changes.flag_window = Duration::from_secs(20);
    settings.storage.enabled = false;
    settings.shutdown_timeout = Duration::from_secs(5);
    settings
}

/// `address` on 127.0.0.1 when that port is free, else port 0 (the OS
/// picks). The check races with other programs; [`run`] falls back to
/// port 0 everywhere if binding still fails.
fn free_or_any(address: SocketAddr) -> SocketAddr {
    let loopback = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, address.port()));
    match TcpListener::bind(loopback) {
        Ok(_) => loopback,
        Err(_) => any_port(),
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
}

/// Binds the demo's server, on the default ports when possible.
async fn bind(settings: Settings) -> Result<Server, ServerError> {
    match Server::bind(settings.clone()).await {
        Ok(server) => Ok(server),
        Err(ServerError::Bind { .. }) => {
            // A port was taken between the check and the bind.
            let mut settings = settings;
            settings.grpc.endpoint = any_port();
            settings.http.endpoint = any_port();
            settings.admin.endpoint = any_port();
            settings.api.endpoint = any_port();
            Server::bind(settings).await
        }
        Err(error) => Err(error),
    }
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Something the demo announces at a set time: a phase of the traffic, or
/// a change the shop's CI/CD posts.
struct Mark {
    at: Duration,
    text: String,
    change: Option<Change>,
}

fn marks(plan: &DemoPlan, changes: &[Change], start_unix_nanos: u64) -> Vec<Mark> {
    let mut marks = vec![Mark {
        at: plan.healthy,
        text: format!("fault injected: {}", plan.fault),
        change: None,
    }];
    if let Some(fault_for) = plan.fault_for {
        marks.push(Mark {
            at: plan.healthy + fault_for,
            text: "fault over: the traffic is healthy again".to_owned(),
            change: None,
        });
    }
    for change in changes {
        let at = Duration::from_nanos(change.time_unix_nanos.saturating_sub(start_unix_nanos));
        let what = change.version.as_deref().or(change.key.as_deref());
        marks.push(Mark {
            at,
            text: format!(
                "CI/CD posts a change: {} {}{}",
                change.kind.as_str(),
                change.service,
                what.map(|what| format!(" {what}")).unwrap_or_default()
            ),
            change: Some(change.clone()),
        });
    }
    marks.sort_by_key(|mark| mark.at);
    marks
}

/// Runs the demo until its duration is over or `shutdown` is cancelled,
/// writing to `out`.
pub async fn run(
    plan: &DemoPlan,
    json: bool,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<DemoSummary, DemoError> {
    let server = bind(demo_settings(plan.any_ports)).await?;
    let addresses = server.addresses();
    let changes = server.changes();
    let mut events = server.subscribe();
    let stop_server = CancellationToken::new();
    let mut server_task = tokio::spawn(server.run(stop_server.clone()));
    write_banner(out, plan, &addresses)?;

    // Whole seconds, as `triage simulate --start now` uses.
    let start_unix_nanos = now_unix_nanos() / 1_000_000_000 * 1_000_000_000;
    let simulator = Simulator::try_new(plan.scenario(start_unix_nanos))?;
    let posted = simulator.changes().to_vec();
    let endpoint = format!("http://{}", addresses.grpc);
    let started = Instant::now();
    let mut sender = tokio::spawn(async move { sim::send_otlp(simulator, &endpoint, true).await });
    let mut sender_done = false;

    let marks = marks(plan, &posted, start_unix_nanos);
    let mut next_mark = 0;
    let deadline = started + plan.duration;
    let fault_at = started + plan.healthy;
    let mut printer = Printer::default();
    let mut summary = DemoSummary::default();
    let outcome = loop {
        let mark_at = marks.get(next_mark).map(|mark| started + mark.at);
        tokio::select! {
            _ = shutdown.cancelled() => {
                summary.interrupted = true;
                break Ok(());
            }
            _ = tokio::time::sleep_until(deadline) => break Ok(()),
            _ = tokio::time::sleep_until(mark_at.unwrap_or(deadline)), if mark_at.is_some() => {
                let mark = &marks[next_mark];
                next_mark += 1;
                if let Some(change) = &mark.change {
                    changes.record(change.clone());
                }
                writeln!(out, "{} {}", stamp(started.elapsed()), mark.text)?;
                out.flush()?;
            }
            received = events.recv() => match received {
                Ok(event) => {
                    let elapsed = started.elapsed();
                    if let IncidentEvent::Opened(_) = &event {
                        summary.opened += 1;
                        let now = Instant::now();
                        if now >= fault_at && summary.time_to_detect_secs.is_none() {
                            summary.time_to_detect_secs = Some((now - fault_at).as_secs_f64());
                        }
                    }
                    if let IncidentEvent::Resolved(_) = &event {
                        summary.resolved += 1;
                    }
                    if json {
                        serde_json::to_writer(&mut *out, &event).map_err(std::io::Error::from)?;
                        writeln!(out)?;
                    } else {
                        for line in printer.lines(&event, elapsed) {
                            writeln!(out, "{line}")?;
                        }
                    }
                    out.flush()?;
                }
                Err(RecvError::Lagged(missed)) => {
                    writeln!(out, "{} ({missed} incident events skipped: the output fell behind)", stamp(started.elapsed()))?;
                }
                Err(RecvError::Closed) => break Err(DemoError::ServerStopped),
            },
            sent = &mut sender, if !sender_done => {
                sender_done = true;
                match sent {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => break Err(DemoError::Sim(error)),
                    Err(_) => break Err(DemoError::Args("the traffic generator failed".to_owned())),
                }
            }
            served = &mut server_task => {
                break Err(match served {
                    Ok(Err(error)) => DemoError::Server(error),
                    _ => DemoError::ServerStopped,
                });
            }
        }
    };

    // Stop the traffic first, so the drain does not wait for it.
    sender.abort();
    stop_server.cancel();
    if outcome.is_ok() {
        match tokio::time::timeout(DRAIN_TIMEOUT, server_task).await {
            Ok(Ok(Err(error))) => return Err(DemoError::Server(error)),
            Ok(_) => {}
            Err(_) => tracing::warn!("the collector did not drain in time"),
        }
    }
    outcome?;
    if !json {
        write_summary(out, &summary, started.elapsed())?;
    }
    Ok(summary)
}

fn write_banner(
    out: &mut (dyn Write + Send),
    plan: &DemoPlan,
    addresses: &Addresses,
) -> std::io::Result<()> {
    writeln!(out, "triage demo: a simulated shop of 12 services sends live OTLP to a collector on this machine.")?;
    writeln!(out, "  OTLP/gRPC  {}", addresses.grpc)?;
    writeln!(out, "  OTLP/HTTP  {}", addresses.http)?;
    writeln!(
        out,
        "  query API  {}   (in another terminal: triage query --addr {} incidents)",
        addresses.api, addresses.api
    )?;
    writeln!(
        out,
        "  admin      http://{}/metrics, /healthz, /readyz",
        addresses.admin
    )?;
    let fault_for = plan
        .fault_for
        .map(|fault_for| format!(" for {}s", fault_for.as_secs()))
        .unwrap_or_default();
    writeln!(
        out,
        "Healthy traffic at {} requests/s while baselines warm up ({}s windows); {} at {}s{}; the demo ends at {}s (Ctrl-C stops it).",
        plan.rate,
        WINDOW.as_secs(),
        plan.fault,
        plan.healthy.as_secs(),
        fault_for,
        plan.duration.as_secs()
    )?;
    out.flush()
}

fn write_summary(
    out: &mut (dyn Write + Send),
    summary: &DemoSummary,
    elapsed: Duration,
) -> std::io::Result<()> {
    let ending = if summary.interrupted {
        "stopped"
    } else {
        "over"
    };
    let detected = match summary.time_to_detect_secs {
        Some(secs) => format!("; the first incident opened {secs:.0}s after the fault started"),
        None if summary.interrupted => String::new(),
        None => "; no incident opened after the fault (try a longer --duration)".to_owned(),
    };
    writeln!(
        out,
        "{} demo {ending}: {} incidents opened, {} resolved{detected}.",
        stamp(elapsed),
        summary.opened,
        summary.resolved
    )?;
    out.flush()
}

/// `[ 38s]`: seconds since the traffic started.
fn stamp(elapsed: Duration) -> String {
    format!("[{:>3}s]", elapsed.as_secs())
}

/// The snake_case name serde gives a unit enum variant.
fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "?".to_owned(),
    }
}

/// Turns incident events into text. Updates are printed when the incident
/// escalates or its analysis changes, not for new numbers: those move every
/// window, and the severity may swing back and forth with them.
#[derive(Debug, Default)]
struct Printer {
    /// Per incident id, the highest severity printed and the analysis last
    /// printed (as JSON, to compare).
    printed: HashMap<String, (Severity, String)>,
}

/// Indent of detail lines, under the text after the stamp.
const INDENT: &str = "        ";

impl Printer {
    fn lines(&mut self, event: &IncidentEvent, elapsed: Duration) -> Vec<String> {
        let incident = event.incident();
        let services = if incident.services.is_empty() {
            incident.service.clone()
        } else {
            incident.services.join(", ")
        };
        let what = match event {
            IncidentEvent::Opened(_) => "opened",
            IncidentEvent::Updated(_) => "updated",
            IncidentEvent::Resolved(_) => "resolved",
        };
        let mut lines = vec![format!(
            "{} incident {what}: {} [{}] services: {services}",
            stamp(elapsed),
            incident.id,
            name(&incident.severity)
        )];
        match event {
            IncidentEvent::Resolved(_) => {
                self.printed.remove(&incident.id);
                if let Some(resolved) = incident.resolved_unix_nanos {
                    let lasted = resolved.saturating_sub(incident.onset_unix_nanos) / 1_000_000_000;
                    lines.push(format!("{INDENT}lasted {lasted}s from its onset"));
                }
            }
            IncidentEvent::Opened(_) => {
                lines.push(format!("{INDENT}{}", incident.summary));
                describe_anomalies(incident, &mut lines);
                describe_analysis(incident, &mut lines);
                self.printed.insert(
                    incident.id.clone(),
                    (incident.severity, analysis_key(incident)),
                );
            }
            IncidentEvent::Updated(_) => {
                let analysis = analysis_key(incident);
                let (highest, last) = self
                    .printed
                    .get(&incident.id)
                    .map(|(severity, analysis)| (Some(*severity), Some(analysis)))
                    .unwrap_or_default();
                let escalated = highest.is_none_or(|highest| incident.severity > highest);
                let new_analysis = last != Some(&analysis);
                if !escalated && !new_analysis {
                    return Vec::new();
                }
                lines.push(format!("{INDENT}{}", incident.summary));
                if new_analysis {
                    describe_analysis(incident, &mut lines);
                }
                let highest =
                    highest.map_or(incident.severity, |highest| highest.max(incident.severity));
                self.printed
                    .insert(incident.id.clone(), (highest, analysis));
            }
        }
        lines
    }
}

/// What of an incident is worth printing again when it changes.
fn analysis_key(incident: &Incident) -> String {
    serde_json::to_string(&(
        &incident.services,
        &incident.root_causes,
        &incident.patterns,
        &incident.changes,
        &incident.hypotheses,
    ))
    .unwrap_or_default()
}

/// What is anomalous, and traces that show it.
fn describe_anomalies(incident: &Incident, lines: &mut Vec<String>) {
    let kinds: Vec<String> = incident.kinds.iter().map(name).collect();
    if !kinds.is_empty() {
        lines.push(format!(
            "{INDENT}anomalies: {} on {}",
            kinds.join(", "),
            incident.operations.join(", ")
        ));
    }
    if !incident.exemplar_trace_ids.is_empty() {
        let shown: Vec<&str> = incident
            .exemplar_trace_ids
            .iter()
            .take(3)
            .map(String::as_str)
            .collect();
        lines.push(format!("{INDENT}exemplar traces: {}", shown.join(", ")));
    }
}

/// The root-cause analysis: origins, patterns, changes, hypotheses with
/// their actions, blast radius; one item per line.
fn describe_analysis(incident: &Incident, lines: &mut Vec<String>) {
    if !incident.root_causes.is_empty() {
        lines.push(format!("{INDENT}root causes, most likely first:"));
        for (rank, cause) in incident.root_causes.iter().enumerate() {
            let operation = cause
                .operation
                .as_deref()
                .map(|operation| format!(" {operation}"))
                .unwrap_or_default();
            lines.push(format!(
                "{INDENT}  {}. {}{operation} (score {:.2}): {}",
                rank + 1,
                cause.service,
                cause.score,
                cause.reason
            ));
        }
    }
    for pattern in &incident.patterns {
        lines.push(format!(
            "{INDENT}pattern {} on {}: {}",
            pattern.kind.as_str(),
            pattern.subject,
            pattern.detail
        ));
    }
    if !incident.changes.is_empty() {
        lines.push(format!("{INDENT}changes around the onset:"));
        for change in &incident.changes {
            lines.push(format!(
                "{INDENT}  - {} {}: {} ({}; {})",
                change.kind,
                change.service,
                change.description,
                crate::model::relative_to_onset(change.before_onset_secs),
                change.reason
            ));
        }
    }
    if !incident.hypotheses.is_empty() {
        lines.push(format!("{INDENT}hypotheses:"));
        for (rank, hypothesis) in incident.hypotheses.iter().enumerate() {
            lines.push(format!(
                "{INDENT}  {}. [{}] {} (score {:.2})",
                rank + 1,
                name(&hypothesis.kind),
                hypothesis.summary,
                hypothesis.score
            ));
            for evidence in &hypothesis.evidence_for {
                lines.push(format!("{INDENT}       for: {}", evidence.text));
            }
            for evidence in &hypothesis.evidence_against {
                lines.push(format!("{INDENT}       against: {}", evidence.text));
            }
            if !hypothesis.suggested_action.is_empty() {
                lines.push(format!(
                    "{INDENT}       action: {}",
                    hypothesis.suggested_action
                ));
            }
        }
    }
    if let Some(blast) = &incident.blast_radius {
        let mut text = format!(
            "{INDENT}blast radius: {:.1}% of requests ({} of {})",
            blast.affected_share * 100.0,
            blast.affected_requests,
            blast.total_requests
        );
        if !blast.entry_points.is_empty() {
            text.push_str(&format!(
                "; entry points: {}",
                blast.entry_points.join(", ")
            ));
        }
        let attributes: Vec<String> = blast
            .attributes
            .iter()
            .take(3)
            .map(|lift| format!("{}={} (x{:.1})", lift.key, lift.value, lift.lift))
            .collect();
        if !attributes.is_empty() {
            text.push_str(&format!("; concentrated on {}", attributes.join(", ")));
        }
        lines.push(text);
    }
}

#[cfg(test)]
mod tests;
