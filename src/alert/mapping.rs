//! How an incident becomes an Alertmanager alert: its labels (identity,
//! routing, grouping, inhibition) and annotations (what people read).
//!
//! Pure functions of the incident and the settings; no clock, no I/O.
//!
//! `alertname` names the incident's most important kind, in this order
//! (first match wins):
//!
//! | condition                              | alertname          |
//! | -------------------------------------- | ------------------ |
//! | the incident spans several services    | `Cascade`          |
//! | an error-rate anomaly                  | `ErrorRateAnomaly` |
//! | a traffic drop                         | `TrafficDrop`      |
//! | a latency anomaly                      | `LatencyAnomaly`   |
//! | saturation (pool, CPU, memory to limit)| `Saturation`       |
//! | error logs rising                      | `ErrorLogs`        |
//! | a traffic spike                        | `TrafficSpike`     |
//! | a metric level shift or trend          | `MetricAnomaly`    |
//!
//! Failed requests come first because users see them; a drop next because
//! it often means something is down; then slowness; then the causes and
//! side signals.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::config::fill_template;
use crate::model::{relative_to_onset, Incident};
use crate::model::{AnomalyKind, Severity};

/// Longest annotation kept, in bytes; longer text is cut at a character
/// boundary and marked. Alertmanager stores every annotation of every alert,
/// and chat and pager receivers truncate far earlier.
const MAX_ANNOTATION: usize = 4096;

/// Most hypotheses, anomalies or changes listed in one annotation.
const MAX_LISTED: usize = 10;

/// Kinds in order of importance, with their alert names; see the module docs.
const KIND_NAMES: &[(AnomalyKind, &str)] = &[
    (AnomalyKind::NoData, "TelemetryNoData"),
    (AnomalyKind::ErrorRate, "ErrorRateAnomaly"),
    (AnomalyKind::TrafficDrop, "TrafficDrop"),
    (AnomalyKind::Latency, "LatencyAnomaly"),
    (AnomalyKind::Saturation, "Saturation"),
    (AnomalyKind::ErrorLogs, "ErrorLogs"),
    (AnomalyKind::TrafficSpike, "TrafficSpike"),
    (AnomalyKind::LevelShift, "MetricAnomaly"),
    (AnomalyKind::Trend, "MetricAnomaly"),
];

/// `alertname` of an incident whose kinds are not known yet.
const FALLBACK_NAME: &str = "Anomaly";

/// Turns incidents into alert labels and annotations.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Added to every alert's labels (already checked not to clash).
    static_labels: BTreeMap<String, String>,
    /// `runbook_url` template, when configured.
    runbook: Option<String>,
    /// Base of `generatorURL`, without a trailing slash.
    base_url: String,
}

impl Mapping {
    /// A mapping adding `static_labels`, filling `runbook`, and linking to
    /// incidents under `base_url` (e.g. `http://127.0.0.1:8888`).
    pub fn new(
        static_labels: BTreeMap<String, String>,
        runbook: Option<String>,
        base_url: &str,
    ) -> Mapping {
        Mapping {
            static_labels,
            runbook,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The labels of the incident's alert. They identify the alert in
    /// Alertmanager, so the caller keeps the first set for the incident's
    /// whole life.
    pub fn labels(&self, incident: &Incident) -> BTreeMap<String, String> {
        let mut labels = self.static_labels.clone();
        let root_cause = root_cause_service(incident);
        let role = if root_cause == incident.service {
            "origin"
        } else {
            "symptom"
        };
        labels.insert("alertname".into(), alertname(incident).into());
        labels.insert("severity".into(), severity_name(incident.severity).into());
        labels.insert("service".into(), incident.service.clone());
        labels.insert("incident_id".into(), incident.id.clone());
        labels.insert("root_cause_service".into(), root_cause.to_owned());
        labels.insert("role".into(), role.into());
        if let Some(operation) = first_operation(incident) {
            labels.insert("operation".into(), operation);
        }
        // Alertmanager drops labels with empty values; dropping them here
        // keeps the alert's identity the same on both sides.
        labels.retain(|_, value| !value.is_empty());
        labels
    }

    /// The annotations of the incident's alert, from its latest state;
    /// `labels` are the alert's (kept) labels, used by the runbook template.
    pub fn annotations(
        &self,
        incident: &Incident,
        labels: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            if !value.is_empty() {
                annotations.insert(key.to_owned(), cap(value));
            }
        };
        put("summary", incident.summary.clone());
        put("description", description(incident));
        put("changes", changes(incident));
        put("blast_radius", blast_radius(incident));
        put("exemplar_trace_ids", incident.exemplar_trace_ids.join(", "));
        put("exemplar_traces", incident.exemplar_trace_urls.join(" "));
        put("suggested_action", suggested_action(incident));
        if let Some(template) = &self.runbook {
            let url = fill_template(template, |name| {
                percent_encode(labels.get(name).map(String::as_str).unwrap_or(""))
            });
            put("runbook_url", url);
        }
        annotations
    }

    /// Link to the incident in the admin/query API.
    pub fn generator_url(&self, incident_id: &str) -> String {
        format!(
            "{}/api/v1/incidents/{}",
            self.base_url,
            percent_encode(incident_id)
        )
    }
}

/// `alertname` of an incident; see the module docs for the order.
pub fn alertname(incident: &Incident) -> &'static str {
    if incident.services.len() > 1 {
        return "Cascade";
    }
    KIND_NAMES
        .iter()
        .find(|(kind, _)| incident.kinds.contains(kind))
        .map_or(FALLBACK_NAME, |(_, name)| name)
}

/// `warning` or `critical`.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The first ranked root cause's service, else the incident's own.
fn root_cause_service(incident: &Incident) -> &str {
    incident
        .root_causes
        .first()
        .map(|cause| cause.service.as_str())
        .filter(|service| !service.is_empty())
        .unwrap_or(&incident.service)
}

/// The most severe anomalous operation (or edge, as `caller -> callee`),
/// if any. In a cascade the series carry their service (`cart: GET /x`).
fn first_operation(incident: &Incident) -> Option<String> {
    incident
        .anomalies
        .iter()
        .find_map(|anomaly| {
            let (service, series) = match anomaly.series.split_once(": ") {
                Some((service, series)) => (service, series),
                None => (incident.service.as_str(), anomaly.series.as_str()),
            };
            match anomaly.series_kind.as_str() {
                "operation" if service == incident.service => Some(series.to_owned()),
                "operation" => Some(format!("{service}: {series}")),
                "edge" => Some(format!("{service} -> {series}")),
                _ => None,
            }
        })
        .or_else(|| incident.operations.first().cloned())
}

/// The ranked hypotheses, numbered, with their evidence; else the anomalies.
fn description(incident: &Incident) -> String {
    let mut text = String::new();
    if !incident.hypotheses.is_empty() {
        for (rank, hypothesis) in incident.hypotheses.iter().take(MAX_LISTED).enumerate() {
            let _ = writeln!(
                text,
                "{}. {} (score {:.2})",
                rank + 1,
                hypothesis.summary,
                hypothesis.score
            );
            for evidence in &hypothesis.evidence_for {
                let _ = writeln!(text, "   for: {}", evidence.text);
            }
            for evidence in &hypothesis.evidence_against {
                let _ = writeln!(text, "   against: {}", evidence.text);
            }
        }
    } else {
        for anomaly in incident.anomalies.iter().take(MAX_LISTED) {
            let _ = writeln!(
                text,
                "- {} {}: {}",
                anomaly.series_kind, anomaly.series, anomaly.anomaly.summary
            );
        }
        if incident.anomalies.len() > MAX_LISTED {
            let _ = writeln!(text, "- and {} more", incident.anomalies.len() - MAX_LISTED);
        }
    }
    text.trim_end().to_owned()
}

/// The correlated changes, most likely first.
fn changes(incident: &Incident) -> String {
    let mut text = String::new();
    for change in incident.changes.iter().take(MAX_LISTED) {
        let subject = change
            .subject
            .as_deref()
            .map(|subject| format!(" {subject}"))
            .unwrap_or_default();
        let reference = change
            .external_id
            .as_deref()
            .map(|id| format!(" [{id}]"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "- {} {}{}{}: {} at {}, {} (score {:.2}: {})",
            change.kind,
            change.service,
            subject,
            reference,
            change.description,
            change.time,
            relative_to_onset(change.before_onset_secs),
            change.score,
            change.reason
        );
    }
    text.trim_end().to_owned()
}

/// Who is hurt, with the numbers.
fn blast_radius(incident: &Incident) -> String {
    let Some(radius) = &incident.blast_radius else {
        return String::new();
    };
    let mut text = format!(
        "{:.1}% of requests affected ({} of {})",
        radius.affected_share * 100.0,
        radius.affected_requests,
        radius.total_requests
    );
    if !radius.services.is_empty() {
        let _ = write!(text, "; services: {}", radius.services.join(", "));
    }
    if !radius.entry_points.is_empty() {
        let _ = write!(text, "; entry points: {}", radius.entry_points.join(", "));
    }
    if !radius.operations.is_empty() {
        let listed: Vec<&str> = radius
            .operations
            .iter()
            .take(MAX_LISTED)
            .map(String::as_str)
            .collect();
        let _ = write!(text, "; operations: {}", listed.join(", "));
    }
    for lift in radius.attributes.iter().take(3) {
        let _ = write!(
            text,
            "; {}={} in {:.0}% of bad spans vs {:.0}% normally (x{:.1})",
            lift.key,
            lift.value,
            lift.bad_share * 100.0,
            lift.baseline_share * 100.0,
            lift.lift
        );
    }
    text
}

/// The top hypothesis' action, else a first step for the primary kind.
fn suggested_action(incident: &Incident) -> String {
    if let Some(action) = incident
        .hypotheses
        .first()
        .map(|hypothesis| hypothesis.suggested_action.trim())
        .filter(|action| !action.is_empty())
    {
        return action.to_owned();
    }
    let service = &incident.service;
    let primary = KIND_NAMES
        .iter()
        .map(|(kind, _)| *kind)
        .find(|kind| incident.kinds.contains(kind));
    let first_step = match primary {
        Some(AnomalyKind::ErrorRate) => format!(
            "Open the exemplar traces to see where {service}'s errors start; \
             roll back a change listed above if there is one."
        ),
        Some(AnomalyKind::NoData) => "No service sends telemetry any more: check the pipeline in \
             front of triage (SDK exporters, OTel Collectors, network, triage's own \
             receivers and /metrics refusals) before any one service."
            .to_owned(),
        Some(AnomalyKind::TrafficDrop) => format!(
            "Check that {service} and its callers are up and reachable \
             (recent deploys, health checks, load balancer, DNS)."
        ),
        Some(AnomalyKind::Latency) => format!(
            "Open the exemplar traces to find the slow span of {service}; \
             check its dependencies and resources."
        ),
        Some(AnomalyKind::Saturation) => format!(
            "Give {service} room (pool size, memory limit, CPU quota) \
             or shed load, then find what holds the resource."
        ),
        Some(AnomalyKind::ErrorLogs) => {
            format!("Read {service}'s error logs from the onset on.")
        }
        Some(AnomalyKind::TrafficSpike) => format!(
            "Find where {service}'s extra traffic comes from (retries, one client, \
             a batch job); rate-limit or scale out."
        ),
        Some(AnomalyKind::LevelShift | AnomalyKind::Trend) => {
            format!("Check what moved {service}'s metric and whether it was intended.")
        }
        None => return String::new(),
    };
    first_step
}

/// Cuts `text` to [`MAX_ANNOTATION`] bytes at a character boundary.
fn cap(mut text: String) -> String {
    if text.len() <= MAX_ANNOTATION {
        return text;
    }
    const MARK: &str = " [cut]";
    let mut end = MAX_ANNOTATION - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `@`
/// (legal in paths, and in every incident id).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
