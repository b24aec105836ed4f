//! What root-cause analysis reads and shares between its steps: the
//! handles on the store, the span analysis and the change log
//! ([`Context`], [`Handles`]), its settings ([`RcaConfig`]), the call graph
//! of an incident's windows ([`Graph`]) and the evidence gathered for each
//! origin candidate ([`OriginEvidence`]). `rca` ranks with them and
//! `explain` writes them up; neither imports the other's internals.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::ingest::spans::SpanAnalyzer;
use crate::model::Incident;
use crate::store::changes::ChangeLog;
use crate::store::Store;

/// Fewest baseline windows (before the onset, still in the ring) for a
/// new ranking.
pub(crate) const MIN_BASELINE_WINDOWS: i64 = 6;

/// Settings of the root-cause analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct RcaConfig {
    /// Incidents on connected services with onsets this close belong to one
    /// cascade. Default 2 minutes: a slow or failing dependency shows in
    /// its callers within a few windows.
    pub cascade_window: Duration,
    /// How far before an incident's onset changes are considered.
    pub lookback: Duration,
    /// `alerting.trace_url`: a checked template with `{trace_id}` that
    /// turns each exemplar trace id into a link.
    pub trace_url: Option<String>,
}

impl Default for RcaConfig {
    fn default() -> Self {
        RcaConfig {
            cascade_window: Duration::from_secs(120),
            lookback: Duration::from_secs(30 * 60),
            trace_url: None,
        }
    }
}

/// What the analysis reads. Everything is shared with recording.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub store: &'a Store,
    pub spans: Option<&'a SpanAnalyzer>,
    pub changes: &'a ChangeLog,
}

/// Evidence that an anomaly starts in one service, each part 0..1.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OriginEvidence {
    pub own_time_ratio: Option<f64>,
    pub local_error_increase: Option<f64>,
    /// The service's traffic dropped while callers kept calling it.
    pub down: bool,
    /// An anomalous call to a callee that is not itself anomalous (an
    /// untraced database or a pool wait), with its name.
    pub dependency: Option<(String, String)>,
    pub saturation: Option<String>,
    /// Calls to the service slowed while its own handling of them did not:
    /// the time is lost on the way to it (its network, its connection or
    /// accept queue). The callers that see it and the words for it.
    pub unreached: Option<(Vec<String>, String)>,
    /// A version or flag variant of the service fails where its siblings
    /// do not (see [`super::cohort`]): its `key=value` and the summary.
    pub cohort: Option<(String, String)>,
    /// Anomalous callees within the incident.
    pub anomalous_callees: Vec<String>,
}

impl OriginEvidence {
    /// How strongly the service itself is the origin, before changes.
    pub(crate) fn strength(&self) -> f64 {
        let own = self
            .own_time_ratio
            .map(|ratio| ((ratio - 1.2) / 1.3).clamp(0.0, 1.0))
            .unwrap_or(0.0);
        let errors = self
            .local_error_increase
            .map(|increase| (increase / 0.05).clamp(0.0, 1.0))
            .unwrap_or(0.0);
        let down = if self.down { 1.0 } else { 0.0 };
        let dependency = if self.dependency.is_some() { 0.8 } else { 0.0 };
        let saturation = if self.saturation.is_some() { 0.7 } else { 0.0 };
        let unreached = if self.unreached.is_some() { 0.85 } else { 0.0 };
        let cohort = if self.cohort.is_some() { 0.9 } else { 0.0 };
        own.max(errors)
            .max(down)
            .max(dependency)
            .max(saturation)
            .max(unreached)
            .max(cohort)
    }
}

/// The incident's windows and the baseline before it, within the ring.
pub(crate) fn ranges(store: &Store, incident: &Incident) -> (Range<i64>, Range<i64>) {
    let onset = store.window_index(incident.onset_unix_nanos);
    let last = store
        .closed_through()
        .unwrap_or(onset)
        .max(onset)
        .max(store.window_index(incident.opened_unix_nanos.saturating_sub(1)));
    let ring = store.config().windows.get() as i64;
    let oldest = last - ring + 1;
    // Leave a window's gap before the onset: the first anomalous window's
    // neighbour is often half-affected.
    let baseline = oldest..(onset - 1).max(oldest);
    (onset..last + 1, baseline)
}

/// The evidence in words, with its numbers.
pub(crate) fn reason(evidence: &OriginEvidence) -> String {
    let mut parts = Vec::new();
    if evidence.down {
        parts.push("stopped answering while callers kept calling".to_string());
    }
    if let Some(ratio) = evidence.own_time_ratio.filter(|ratio| *ratio >= 1.3) {
        parts.push(format!("own (exclusive) time p95 x{ratio:.1}"));
    }
    if let Some(increase) = evidence.local_error_increase.filter(|rise| *rise >= 0.01) {
        parts.push(format!(
            "locally originating errors +{:.1} pp",
            increase * 100.0
        ));
    }
    if let Some((callee, summary)) = &evidence.dependency {
        parts.push(format!(
            "calls to {callee} degraded while {callee} itself is not anomalous ({summary})"
        ));
    }
    if let Some(summary) = &evidence.saturation {
        parts.push(format!("saturation: {summary}"));
    }
    if let Some((_, summary)) = &evidence.unreached {
        parts.push(summary.clone());
    }
    if let Some((_, summary)) = &evidence.cohort {
        parts.push(summary.clone());
    }
    if !evidence.anomalous_callees.is_empty() {
        parts.push(format!(
            "its callee{} {} {} anomalous too",
            if evidence.anomalous_callees.len() == 1 {
                ""
            } else {
                "s"
            },
            evidence.anomalous_callees.join(", "),
            if evidence.anomalous_callees.len() == 1 {
                "is"
            } else {
                "are"
            }
        ));
    }
    if parts.is_empty() {
        "anomalous, with no sign that a callee explains it".to_string()
    } else {
        parts.join("; ")
    }
}

/// The dependency graph from the store's edges (caller -> callee, callee
/// named as the caller sees it: a traced service or an untraced system).
#[derive(Debug, Default)]
pub(crate) struct Graph {
    callees: BTreeMap<String, BTreeSet<String>>,
    callers: BTreeMap<String, BTreeSet<String>>,
    services: BTreeSet<String>,
}

impl Graph {
    pub(crate) fn new(store: &Store) -> Self {
        let mut graph = Graph::default();
        for service in store.services() {
            graph.services.insert(service.to_string());
        }
        for edge in store.edges() {
            graph
                .callees
                .entry(edge.caller.to_string())
                .or_default()
                .insert(edge.callee.to_string());
            graph
                .callers
                .entry(edge.callee.to_string())
                .or_default()
                .insert(edge.caller.to_string());
        }
        graph
    }

    pub(crate) fn callees<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.callees.get(service).into_iter().flatten()
    }

    pub(crate) fn callers<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.callers.get(service).into_iter().flatten()
    }

    /// Whether `service` is traced (has its own spans), not just a callee
    /// name such as a database.
    pub(crate) fn is_service(&self, service: &str) -> bool {
        self.services.contains(service)
    }

    /// Services with no traced callers: where requests enter.
    pub(crate) fn entry_points(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|service| self.callers(service).all(|caller| !self.is_service(caller)))
            .cloned()
            .collect()
    }

    /// Every service calling `service`, directly or not, nearest first.
    pub(crate) fn upstream(&self, service: &str) -> Vec<String> {
        let mut seen = BTreeSet::from([service.to_string()]);
        let mut order = Vec::new();
        let mut frontier = vec![service.to_string()];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for callee in &frontier {
                for caller in self.callers(callee) {
                    if seen.insert(caller.clone()) {
                        order.push(caller.clone());
                        next.push(caller.clone());
                    }
                }
            }
            frontier = next;
        }
        order
    }

    /// How many anomalous services lie below `service` (its anomalous
    /// callees, transitively): a tie-breaker favouring the deepest.
    pub(crate) fn depth_below(&self, service: &str, anomalous: &BTreeSet<&str>) -> usize {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![service.to_string()];
        while let Some(current) = frontier.pop() {
            for callee in self.callees(&current) {
                if anomalous.contains(callee.as_str()) && seen.insert(callee.clone()) {
                    frontier.push(callee.clone());
                }
            }
        }
        seen.len()
    }
}

/// Shared handles the analysis needs, for the server and replay.
#[derive(Clone)]
pub struct Handles {
    pub store: Arc<Store>,
    pub spans: Option<Arc<SpanAnalyzer>>,
    pub changes: Arc<ChangeLog>,
}

impl Handles {
    pub fn context(&self) -> Context<'_> {
        Context {
            store: &self.store,
            spans: self.spans.as_deref(),
            changes: &self.changes,
        }
    }
}
