//! `triage query ...`: the query API from the command line. Tables for
//! people by default; `--json` prints one JSON document per command (JSON
//! lines for `watch`) in the same shapes as the crate's other JSON output.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::client::{Client, ClientConfig, ClientError};
use super::pb;
use super::view::{RedStats, ServiceStats, ServiceSummary, Topology};
use super::EventRecord;
use crate::model::Change;
use crate::model::{rfc3339, Incident, IncidentState};

/// Most incidents `triage query incidents` pages through by default.
const DEFAULT_INCIDENT_LIMIT: usize = 50;

/// `triage query`: options shared by every query command.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Address of the query API, HOST:PORT as in api.endpoint of `triage
    /// run`; TLS when --ca-cert is given. A URL works too: http://HOST:PORT,
    /// or https://HOST:PORT for a TLS listener.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "TRIAGE_API_ADDR",
        default_value = "127.0.0.1:4320"
    )]
    pub addr: String,
    /// Bearer token, when the API requires one (api.auth).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "TRIAGE_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM file of the CA that signed the API's certificate (https).
    #[arg(long, global = true, value_name = "FILE", env = "TRIAGE_API_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, when the API requires one
    /// (api.tls.client_ca_file); with --client-key.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TRIAGE_API_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TRIAGE_API_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Print JSON (one document; one line per event for `watch`).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to query.
    #[command(subcommand)]
    pub command: QueryCommand,
}

/// The query commands.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Services seen in the telemetry, with their operations and callees.
    Services,
    /// RED statistics of one service, per operation and outgoing edge.
    Stats {
        /// The service.
        service: String,
        /// How far back, e.g. 15m (default: everything the store holds).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
    /// The dependency graph with call rates, error rates and latencies.
    Topology {
        /// How far back, e.g. 15m (default: everything the store holds).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
    /// Incidents, newest first.
    Incidents {
        /// Only open or only resolved incidents.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only incidents covering this service.
        #[arg(long)]
        service: Option<String>,
        /// Only incidents whose onset is in the last DURATION, e.g. 24h.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = DEFAULT_INCIDENT_LIMIT)]
        limit: usize,
    },
    /// One incident: anomalies, root causes, hypotheses, changes, blast
    /// radius, exemplars and its events.
    Incident {
        /// Its id, e.g. payment@1733011390.
        id: String,
    },
    /// Change events (deploys, config, flags, scaling, infra), oldest first.
    Changes {
        /// Only changes of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only changes of this kind (deploy, config, feature_flag, scale, infra).
        #[arg(long)]
        kind: Option<String>,
        /// Only changes in the last DURATION, e.g. 1h.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
    /// Follow incident events as they happen (Ctrl-C to stop).
    Watch {
        /// First replay stored events after this event id (seq), e.g. the
        /// last one a previous watch printed.
        #[arg(long, value_name = "SEQ", conflicts_with = "since")]
        from_id: Option<u64>,
        /// First replay events recorded in the last DURATION, e.g. 1h.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
}

/// `--state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Still open.
    Open,
    /// Resolved.
    Resolved,
}

/// Why `triage query` failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Talking to the API failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A `--since` value is not a duration.
    #[error("--since: {0}")]
    Since(String),
    /// stdout could not be written (e.g. a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// The JSON encoder failed.
    #[error("cannot encode JSON: {0}")]
    Json(serde_json::Error),
}

// The two causes above are part of their messages and deliberately not
// `source()`s (so no `#[from]`): printed as a chain (`{:#}`) they would
// appear twice.

impl From<std::io::Error> for QueryError {
    fn from(error: std::io::Error) -> Self {
        QueryError::Output(error)
    }
}

impl From<serde_json::Error> for QueryError {
    fn from(error: serde_json::Error) -> Self {
        QueryError::Json(error)
    }
}

/// Runs one query command, printing to stdout.
pub async fn run(args: QueryArgs) -> Result<(), QueryError> {
    let config = ClientConfig {
        address: args.addr.clone(),
        token: args.token.clone(),
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone().zip(args.client_key.clone()),
    };
    let mut client = Client::connect(&config).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let json = args.json;
    match args.command {
        QueryCommand::Services => {
            let services = client.services().await?;
            if json {
                print_json(&mut out, &services)?;
            } else {
                write!(out, "{}", services_table(&services))?;
            }
        }
        QueryCommand::Stats { service, since } => {
            let stats = client
                .stats(&service, since_nanos(since.as_deref())?)
                .await?;
            if json {
                print_json(&mut out, &stats)?;
            } else {
                write!(out, "{}", stats_table(&stats))?;
            }
        }
        QueryCommand::Topology { since } => {
            let topology = client.topology(since_nanos(since.as_deref())?).await?;
            if json {
                print_json(&mut out, &topology)?;
            } else {
                write!(out, "{}", topology_table(&topology))?;
            }
        }
        QueryCommand::Incidents {
            state,
            service,
            since,
            limit,
        } => {
            let mut request = pb::ListIncidentsRequest {
                state: match state {
                    None => pb::IncidentState::Unspecified,
                    Some(StateArg::Open) => pb::IncidentState::Open,
                    Some(StateArg::Resolved) => pb::IncidentState::Resolved,
                } as i32,
                service: service.unwrap_or_default(),
                since_unix_nanos: since_nanos(since.as_deref())?,
                until_unix_nanos: 0,
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
            };
            let mut incidents = Vec::new();
            loop {
                let (page, next) = client.incidents(request.clone()).await?;
                incidents.extend(page);
                match next {
                    Some(token) if incidents.len() < limit => request.page_token = token,
                    _ => break,
                }
            }
            incidents.truncate(limit);
            if json {
                print_json(&mut out, &incidents)?;
            } else {
                write!(out, "{}", incidents_table(&incidents))?;
            }
        }
        QueryCommand::Incident { id } => {
            let (incident, events) = client.incident(&id).await?;
            if json {
                print_json(
                    &mut out,
                    &serde_json::json!({ "incident": incident, "events": events }),
                )?;
            } else {
                write!(out, "{}", incident_report(&incident, &events))?;
            }
        }
        QueryCommand::Changes {
            service,
            kind,
            since,
        } => {
            let changes = client
                .changes(pb::ListChangesRequest {
                    service: service.unwrap_or_default(),
                    kind: kind.unwrap_or_default(),
                    since_unix_nanos: since_nanos(since.as_deref())?,
                    until_unix_nanos: 0,
                    limit: 0,
                })
                .await?;
            if json {
                print_json(&mut out, &changes)?;
            } else {
                write!(out, "{}", changes_table(&changes))?;
            }
        }
        QueryCommand::Watch { from_id, since } => {
            let start = match (from_id, since) {
                (Some(seq), _) => Some(pb::watch_incidents_request::Start::AfterSeq(seq)),
                (None, Some(since)) => Some(pb::watch_incidents_request::Start::SinceUnixNanos(
                    since_nanos(Some(&since))?,
                )),
                (None, None) => None,
            };
            let mut failed = None;
            client
                .watch(start, |event| {
                    let line = if json {
                        serde_json::to_string(&event).map_err(QueryError::from)
                    } else {
                        Ok(event_line(&event))
                    };
                    // Flushed per event: someone is watching, or a pipe
                    // feeds a bot.
                    let written = line.and_then(|line| {
                        writeln!(out, "{line}")?;
                        out.flush()?;
                        Ok(())
                    });
                    match written {
                        Ok(()) => true,
                        Err(error) => {
                            failed = Some(error);
                            false
                        }
                    }
                })
                .await?;
            if let Some(error) = failed {
                return Err(error);
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), QueryError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// `--since 15m` as Unix nanoseconds (now minus the duration); 0 without.
fn since_nanos(since: Option<&str>) -> Result<u64, QueryError> {
    let Some(text) = since else {
        return Ok(0);
    };
    let back = crate::validate::parse_duration(text).map_err(QueryError::Since)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    // A duration longer than the epoch is "everything": 1, not 0, because 0
    // means "not given" on the wire and both mean the same here.
    Ok(now.saturating_sub(back.as_nanos() as u64).max(1))
}

// === tables ===

/// Left-aligned columns sized to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut row = String::new();
        for (index, cell) in cells.enumerate() {
            if index > 0 {
                row.push_str("  ");
            }
            let pad = widths[index].saturating_sub(cell.chars().count());
            row.push_str(cell);
            row.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(row.trim_end());
        text.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    text
}

fn millis(value: Option<f64>) -> String {
    match value {
        Some(ms) if ms >= 100.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{ms:.1}ms"),
        None => "-".to_owned(),
    }
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn red_cells(stats: &RedStats) -> Vec<String> {
    vec![
        format!("{:.2}", stats.rate_per_second),
        stats.requests.to_string(),
        percent(stats.error_rate),
        millis(stats.p50_ms),
        millis(stats.p95_ms),
        millis(stats.p99_ms),
    ]
}

const RED_HEADER: [&str; 6] = ["REQ/S", "REQUESTS", "ERRORS", "P50", "P95", "P99"];

fn services_table(services: &[ServiceSummary]) -> String {
    if services.is_empty() {
        return "no services yet: nothing has sent spans, metrics or logs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|service| {
            vec![
                service.name.clone(),
                service.operations.len().to_string(),
                service.callees.join(", "),
            ]
        })
        .collect();
    table(&["SERVICE", "OPERATIONS", "CALLS"], &rows)
}

fn stats_table(stats: &ServiceStats) -> String {
    let mut header = vec!["", "NAME"];
    header.extend(RED_HEADER);
    let mut rows = Vec::new();
    let mut total = vec!["total".to_owned(), stats.service.clone()];
    total.extend(red_cells(&stats.total));
    rows.push(total);
    for operation in &stats.operations {
        let mut row = vec!["operation".to_owned(), operation.operation.clone()];
        row.extend(red_cells(&operation.stats));
        rows.push(row);
    }
    for edge in &stats.edges {
        let mut row = vec!["calls".to_owned(), format!("-> {}", edge.callee)];
        row.extend(red_cells(&edge.stats));
        rows.push(row);
    }
    let range = if stats.total.requests == 0 {
        "no requests in the range".to_owned()
    } else {
        format!(
            "{} .. {}",
            rfc3339(stats.total.from_unix_nanos),
            rfc3339(stats.total.to_unix_nanos)
        )
    };
    format!("{} ({range})\n{}", stats.service, table(&header, &rows))
}

fn topology_table(topology: &Topology) -> String {
    let mut header = vec!["CALLER", "CALLEE", "CALLS/S", "ERRORS", "P95 CALLER"];
    header.push("P95 CALLEE");
    let rows: Vec<Vec<String>> = topology
        .edges
        .iter()
        .map(|edge| {
            vec![
                edge.caller.clone(),
                edge.callee.clone(),
                format!("{:.2}", edge.call_rate_per_second),
                percent(edge.error_rate),
                millis(edge.caller_side.p95_ms),
                millis(edge.callee_side.as_ref().and_then(|side| side.p95_ms)),
            ]
        })
        .collect();
    let untraced: Vec<&str> = topology
        .nodes
        .iter()
        .filter(|node| !node.traced)
        .map(|node| node.service.as_str())
        .collect();
    let mut text = format!(
        "{} services, {} edges\n",
        topology.nodes.len(),
        topology.edges.len()
    );
    if !rows.is_empty() {
        text.push_str(&table(&header, &rows));
    }
    if !untraced.is_empty() {
        text.push_str(&format!("not traced: {}\n", untraced.join(", ")));
    }
    text
}

fn state_name(state: IncidentState) -> &'static str {
    match state {
        IncidentState::Open => "open",
        IncidentState::Resolved => "resolved",
    }
}

fn incidents_table(incidents: &[Incident]) -> String {
    if incidents.is_empty() {
        return "no incidents\n".to_owned();
    }
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|incident| {
            vec![
                incident.id.clone(),
                state_name(incident.state).to_owned(),
                super::label(&incident.severity),
                incident.onset.clone(),
                incident.summary.clone(),
            ]
        })
        .collect();
    table(&["ID", "STATE", "SEVERITY", "ONSET", "SUMMARY"], &rows)
}

fn incident_report(incident: &Incident, events: &[EventRecord]) -> String {
    let mut text = format!(
        "{}  {}  {}\n{}\nonset {}",
        incident.id,
        state_name(incident.state),
        super::label(&incident.severity),
        incident.summary,
        incident.onset
    );
    if let Some(resolved) = &incident.resolved {
        text.push_str(&format!(", resolved {resolved}"));
    }
    text.push('\n');
    if incident.services.len() > 1 {
        text.push_str(&format!("services: {}\n", incident.services.join(", ")));
    }
    if !incident.anomalies.is_empty() {
        text.push_str("\nanomalies:\n");
        for anomaly in &incident.anomalies {
            text.push_str(&format!(
                "  {} {}: {}\n",
                anomaly.series_kind, anomaly.series, anomaly.anomaly.summary
            ));
        }
    }
    if !incident.root_causes.is_empty() {
        text.push_str("\nroot causes:\n");
        for cause in &incident.root_causes {
            let operation = cause
                .operation
                .as_deref()
                .map(|operation| format!(" {operation}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "  {:.2} {}{operation}: {}\n",
                cause.score, cause.service, cause.reason
            ));
        }
    }
    if !incident.hypotheses.is_empty() {
        text.push_str("\nhypotheses:\n");
        for (rank, hypothesis) in incident.hypotheses.iter().enumerate() {
            text.push_str(&format!(
                "  {}. [{:.2}] {}\n",
                rank + 1,
                hypothesis.score,
                hypothesis.summary
            ));
            for evidence in &hypothesis.evidence_for {
                text.push_str(&format!("     + {}\n", evidence.text));
            }
            for evidence in &hypothesis.evidence_against {
                text.push_str(&format!("     - {}\n", evidence.text));
            }
            if !hypothesis.suggested_action.is_empty() {
                text.push_str(&format!("     fix: {}\n", hypothesis.suggested_action));
            }
        }
    }
    if !incident.patterns.is_empty() {
        text.push_str("\npatterns:\n");
        for pattern in &incident.patterns {
            text.push_str(&format!(
                "  {} on {}: {}\n",
                pattern.kind.as_str(),
                pattern.subject,
                pattern.detail
            ));
        }
    }
    if !incident.changes.is_empty() {
        text.push_str("\nchanges around the onset:\n");
        for change in &incident.changes {
            text.push_str(&format!(
                "  #{} {} {} ({}): {}\n",
                change.id,
                change.service,
                change.kind,
                crate::model::relative_to_onset(change.before_onset_secs),
                change.description
            ));
        }
    }
    if let Some(blast) = &incident.blast_radius {
        text.push_str(&format!(
            "\nblast radius: {} of {} requests ({}), services {}\n",
            blast.affected_requests,
            blast.total_requests,
            percent(blast.affected_share),
            blast.services.join(", ")
        ));
        for lift in &blast.attributes {
            text.push_str(&format!(
                "  {}={}: {} of bad spans vs {} of baseline\n",
                lift.key,
                lift.value,
                percent(lift.bad_share),
                percent(lift.baseline_share)
            ));
        }
    }
    if !incident.exemplar_trace_urls.is_empty() {
        text.push_str("\nexemplar traces:\n");
        for url in &incident.exemplar_trace_urls {
            text.push_str(&format!("  {url}\n"));
        }
    } else if !incident.exemplar_trace_ids.is_empty() {
        text.push_str(&format!(
            "\nexemplar traces: {}\n",
            incident.exemplar_trace_ids.join(" ")
        ));
    }
    if !events.is_empty() {
        text.push_str("\nevents:\n");
        for event in events {
            text.push_str(&format!(
                "  #{} {} {}\n",
                event.seq,
                event.at,
                super::label(&event.event)
            ));
        }
    }
    text
}

fn changes_table(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|change| {
            let subject = change
                .version
                .clone()
                .or_else(|| change.key.clone())
                .unwrap_or_default();
            vec![
                change.id.to_string(),
                change.time(),
                change.service.clone(),
                change.kind.as_str().to_owned(),
                subject,
                change.description.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "TIME", "SERVICE", "KIND", "SUBJECT", "DESCRIPTION"],
        &rows,
    )
}

fn event_line(event: &EventRecord) -> String {
    format!(
        "#{} {} {:<8} {} {}",
        event.seq,
        event.at,
        super::label(&event.event),
        event.incident.id,
        event.incident.summary
    )
}

#[cfg(test)]
mod tests;
