//! The incident: the product's central type. Detection opens, updates and
//! resolves incidents; analysis fills their root cause, patterns, blast
//! radius, changes and hypotheses; alerting, the query API and the history
//! deliver them. Plain data, serialisable, with no behaviour beyond
//! building and comparing.

use serde::{Deserialize, Serialize};

use super::{rfc3339, BlastRadius, CorrelatedChange, Hypothesis, Pattern, RootCause};
use super::{Anomaly, AnomalyKind, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Resolved,
}

/// An anomaly as carried by an incident: which series, and what was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesAnomaly {
    /// `operation`, `edge`, `metric` or `log`.
    pub series_kind: String,
    pub series: String,
    #[serde(flatten)]
    pub anomaly: Anomaly,
}

/// One incident, as delivered to consumers (alerts, API, storage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id: the service and the start of the first anomalous window
    /// (Unix seconds), e.g. `payment@1733011390`; see the module docs for
    /// why it is not the refined onset.
    pub id: String,
    pub state: IncidentState,
    pub service: String,
    /// Operations and edges (`-> callee`) of the service that are anomalous.
    pub operations: Vec<String>,
    pub kinds: Vec<AnomalyKind>,
    pub severity: Severity,
    /// When the anomaly began, Unix nanoseconds and RFC 3339: the first
    /// anomalous window, refined to its first anomalous sub-window where
    /// the sub-windows tell.
    pub onset_unix_nanos: u64,
    pub onset: String,
    /// End of the window in which the incident opened.
    pub opened_unix_nanos: u64,
    /// End of the window in which it resolved.
    pub resolved_unix_nanos: Option<u64>,
    pub resolved: Option<String>,
    /// The latest anomaly of each series involved, most severe first.
    pub anomalies: Vec<SeriesAnomaly>,
    /// Trace ids (hex) of slow or failing spans of the anomalous series.
    pub exemplar_trace_ids: Vec<String>,
    /// The same traces as links, when `alerting.trace_url` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exemplar_trace_urls: Vec<String>,
    /// One line for people.
    pub summary: String,
    /// Every service the incident covers (more than one for a cascade),
    /// origin candidates first.
    #[serde(default)]
    pub services: Vec<String>,
    /// Ranked candidate origins.
    #[serde(default)]
    pub root_causes: Vec<RootCause>,
    /// Named production patterns found (retry storm, pool wait, ...).
    #[serde(default)]
    pub patterns: Vec<Pattern>,
    /// Change events before the onset, most likely cause first.
    #[serde(default)]
    pub changes: Vec<CorrelatedChange>,
    #[serde(default)]
    pub blast_radius: Option<BlastRadius>,
    /// One to three ranked explanations with evidence and an action.
    #[serde(default)]
    pub hypotheses: Vec<Hypothesis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "incident", rename_all = "snake_case")]
pub enum IncidentEvent {
    Opened(Incident),
    Updated(Incident),
    Resolved(Incident),
}

impl IncidentEvent {
    pub fn incident(&self) -> &Incident {
        match self {
            IncidentEvent::Opened(incident)
            | IncidentEvent::Updated(incident)
            | IncidentEvent::Resolved(incident) => incident,
        }
    }
}

impl Incident {
    /// An open incident of `service` with nothing found yet: no kinds,
    /// anomalies or analysis, warning severity, an empty summary.
    pub fn open(id: String, service: &str, onset_unix_nanos: u64, opened_unix_nanos: u64) -> Self {
        Incident {
            id,
            state: IncidentState::Open,
            service: service.to_string(),
            operations: Vec::new(),
            kinds: Vec::new(),
            severity: Severity::Warning,
            onset_unix_nanos,
            onset: rfc3339(onset_unix_nanos),
            opened_unix_nanos,
            resolved_unix_nanos: None,
            resolved: None,
            anomalies: Vec::new(),
            exemplar_trace_ids: Vec::new(),
            exemplar_trace_urls: Vec::new(),
            summary: String::new(),
            services: vec![service.to_string()],
            root_causes: Vec::new(),
            patterns: Vec::new(),
            changes: Vec::new(),
            blast_radius: None,
            hypotheses: Vec::new(),
        }
    }
}

/// Links to `trace_ids` by a trace URL template (`alerting.trace_url`,
/// checked to hold `{trace_id}` and no other placeholder).
pub fn trace_links(template: &str, trace_ids: &[String]) -> Vec<String> {
    trace_ids
        .iter()
        .map(|trace_id| template.replace("{trace_id}", trace_id))
        .collect()
}
