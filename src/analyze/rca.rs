//! Root-cause analysis over the detector's per-service incidents.
//!
//! The detection engine opens one incident per anomalous service. This
//! module turns those into what on-call engineers get:
//!
//! - **cascade grouping**: incidents of services connected in the dependency
//!   graph whose onsets are within `cascade_window` of each other become one
//!   incident (its id is the first member's id, so it is stable);
//! - **origin ranking**: every member is scored by evidence that the
//!   anomaly starts there — its own (exclusive) time rose, its errors
//!   originate locally, it stopped answering while callers still call, an
//!   untraced dependency of it (database, cache) or a call of it slowed
//!   while the callee did not, its saturation rules fired — and a member
//!   whose anomalous callee explains its symptom is ranked down;
//! - **patterns, blast radius, changes and hypotheses** (see
//!   [`super::explain`]).
//!
//! The analyzer is a state machine over incident events, like the tracker:
//! it reads the store, the span analysis and the change log but never a
//! clock, so a replay gives the same output every time.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::analyze::cohort::{self, CohortWatch};
use crate::analyze::context::{
    ranges, reason, Context, Graph, OriginEvidence, RcaConfig, MIN_BASELINE_WINDOWS,
};
use crate::model::RootCause;
use crate::model::{AnomalyKind, Severity};
use crate::model::{Incident, IncidentEvent, IncidentState, SeriesAnomaly};
use crate::model::{SeriesKey, SeriesKind};
use crate::store::Store;

/// Most exemplar trace ids a grouped incident carries.
const MAX_EXEMPLARS: usize = 8;
/// Fewest requests in a range for a latency or error comparison.
const MIN_REQUESTS: u64 = 20;
/// Fewest requests per window a service must have served before it can be
/// said to have stopped answering.
const MIN_DOWN_RATE: f64 = 2.0;
/// Evidence strength from which a candidate that opened no incident of its
/// own still counts as anomalous (so its callers inherit from it).
const ANOMALOUS_STRENGTH: f64 = 0.5;
/// For how many windows after opening an incident is ranked again at each
/// window close (two minutes of 10 s windows), events or not.
const REFRESH_WINDOWS: u64 = 12;

/// A cascade: the per-service incidents it is made of, and the incident
/// as delivered.
#[derive(Debug, Clone)]
struct Group {
    /// Member incidents, by member key (see [`member_key`]).
    members: BTreeMap<String, Incident>,
    incident: Incident,
    /// The last ranking made while the baseline before the onset was still
    /// in the store's ring; kept once it has rotated out.
    ranking: Vec<(String, OriginEvidence, f64)>,
    /// Cohort members that resolved while the group stays open: the version
    /// or variant was found failing during this incident, and stays
    /// evidence for its service (a bad version's failures can sink below
    /// what the comparison needs once it serves alone).
    past_cohorts: Vec<Incident>,
    /// Services found to have stopped answering during this incident: the
    /// finding stands even when a later look cannot repeat it (the calls
    /// to a dead callee may be named differently once nothing answers).
    stopped: BTreeSet<String>,
}

/// Groups per-service incidents into cascades and explains them.
#[derive(Debug, Default)]
pub struct Analyzer {
    config: RcaConfig,
    /// Open groups by id.
    groups: BTreeMap<String, Group>,
    /// Which group a member's open incident belongs to, by member key.
    member_of: BTreeMap<String, String>,
    /// Version and flag cohorts compared with their siblings; their
    /// incidents join the groups like the detector's.
    cohorts: CohortWatch,
    /// The last closed window young groups were looked at again for.
    refreshed: Option<i64>,
}

/// A member's key within the analysis: the detector's incidents are one
/// per service (`payment@…` -> `payment`), a cohort's names its cohort
/// (`payment/service.version=1.5.0@…` -> `payment/service.version=1.5.0`).
fn member_key(incident: &Incident) -> &str {
    match incident.id.rsplit_once('@') {
        Some((key, _)) if !key.is_empty() => key,
        _ => &incident.service,
    }
}

/// Requests, errors and p95 of a series over windows.
fn stats(store: &Store, key: &SeriesKey, range: &Range<i64>) -> Option<(u64, u64, Option<f64>)> {
    if range.is_empty() {
        return None;
    }
    let stats = store.stats_windows(key, range.start, range.end - 1)?;
    Some((stats.requests, stats.errors, stats.p95))
}

/// The largest rise of own time (p95 ratio) over the service's operations,
/// and the largest rise of the locally-originating error rate.
fn own_evidence(
    store: &Store,
    service: &str,
    now: &Range<i64>,
    before: &Range<i64>,
) -> (Option<f64>, Option<f64>) {
    let mut ratio: Option<f64> = None;
    let mut increase: Option<f64> = None;
    for key in store.series(service, SeriesKind::Own) {
        let (Some(current), Some(baseline)) = (stats(store, &key, now), stats(store, &key, before))
        else {
            continue;
        };
        if current.0 < MIN_REQUESTS || baseline.0 < MIN_REQUESTS {
            continue;
        }
        if let (Some(p95), Some(base)) = (current.2, baseline.2) {
            let r = p95 / base.max(1.0);
            ratio = Some(ratio.map_or(r, |old: f64| old.max(r)));
        }
        let rate = current.1 as f64 / current.0 as f64;
        let base_rate = baseline.1 as f64 / baseline.0 as f64;
        let rise = rate - base_rate;
        increase = Some(increase.map_or(rise, |old: f64| old.max(rise)));
    }
    (ratio, increase)
}

/// Fewest calls in the incident's windows for a slowed call to be compared
/// with the callee's own handling: few, because a call that went from
/// milliseconds to seconds says so in a handful, and the medians compared
/// do not move for one odd call.
const MIN_GAP_CALLS: u64 = 3;
/// Fewest calls in the baseline of such a comparison.
const MIN_GAP_BASELINE: u64 = 10;

/// How much slower (ms, medians) the calls from `caller` to `callee` got
/// while the callee's own handling of requests did not: the time is lost on
/// the way (the network between them, the callee's accept or connection
/// queue, a wait in the caller's client). `None` when the calls did not
/// slow by at least their own baseline and 50 ms, or the callee's server
/// side explains a third of it or more.
fn lost_on_the_way(
    store: &Store,
    caller: &str,
    callee: &str,
    now: &Range<i64>,
    before: &Range<i64>,
) -> Option<f64> {
    let median = |key: &SeriesKey, range: &Range<i64>, least: u64| {
        if range.is_empty() {
            return None;
        }
        let stats = store.stats_windows(key, range.start, range.end - 1)?;
        (stats.requests >= least).then_some(stats.p50?)
    };
    let edge = SeriesKey::new(SeriesKind::Edge, caller, callee);
    let (edge_now, edge_before) = (
        median(&edge, now, MIN_GAP_CALLS)?,
        median(&edge, before, MIN_GAP_BASELINE)?,
    );
    let added = edge_now - edge_before;
    if added < edge_before.max(50.0) {
        return None;
    }
    // The callee's own handling: the largest rise of the median over its
    // operations that served in both ranges.
    let mut served = false;
    let mut handling: f64 = 0.0;
    for key in store.series(callee, SeriesKind::Operation) {
        let (Some(current), Some(baseline)) = (
            median(&key, now, MIN_GAP_CALLS),
            median(&key, before, MIN_GAP_CALLS),
        ) else {
            continue;
        };
        served = true;
        handling = handling.max(current - baseline);
    }
    (served && handling < added / 3.0).then_some(added)
}

/// Requests per window of a set of series over `range` (0 when none).
fn rate(store: &Store, keys: &[SeriesKey], range: &Range<i64>) -> f64 {
    if range.is_empty() {
        return 0.0;
    }
    let requests: u64 = keys
        .iter()
        .filter_map(|key| stats(store, key, range))
        .map(|(requests, _, _)| requests)
        .sum();
    requests as f64 / (range.end - range.start) as f64
}

/// Whether `service` stopped answering while its callers kept calling it:
/// what it served fell to at most half its baseline while the calls its
/// traced callers made to it held at least half of theirs. A service whose
/// callers stopped calling (their requests fail earlier) is not down.
fn stopped_answering(
    store: &Store,
    graph: &Graph,
    service: &str,
    now: &Range<i64>,
    before: &Range<i64>,
) -> bool {
    let served = store.series(service, SeriesKind::Operation);
    let served_before = rate(store, &served, before);
    if served_before < MIN_DOWN_RATE {
        return false;
    }
    if rate(store, &served, now) > served_before * 0.5 {
        return false;
    }
    let calls: Vec<SeriesKey> = graph
        .callers(service)
        .filter(|caller| graph.is_service(caller) && caller.as_str() != service)
        .map(|caller| SeriesKey::new(SeriesKind::Edge, caller, service))
        .collect();
    let called_before = rate(store, &calls, before);
    called_before > 0.0 && rate(store, &calls, now) >= called_before * 0.5
}

fn is_kind(anomaly: &SeriesAnomaly, kinds: &[AnomalyKind]) -> bool {
    kinds.contains(&anomaly.anomaly.kind)
}

impl Analyzer {
    pub fn new(config: RcaConfig) -> Self {
        Analyzer {
            config,
            ..Analyzer::default()
        }
    }

    pub fn config(&self) -> &RcaConfig {
        &self.config
    }

    /// Open grouped incidents.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        self.groups.values().map(|group| &group.incident).collect()
    }

    /// Takes back open incidents after a restart (from storage): each comes
    /// back as a group of its services, so later per-service events join
    /// it instead of opening a new incident.
    pub fn restore(&mut self, open: Vec<Incident>) {
        for incident in open {
            if incident.state != IncidentState::Open {
                continue;
            }
            let mut members = BTreeMap::new();
            let services = if incident.services.is_empty() {
                vec![incident.service.clone()]
            } else {
                incident.services.clone()
            };
            for service in services {
                let mut member = incident.clone();
                member.service = service.clone();
                self.member_of.insert(service.clone(), incident.id.clone());
                members.insert(service, member);
            }
            self.groups.insert(
                incident.id.clone(),
                Group {
                    members,
                    incident,
                    ranking: Vec::new(),
                    past_cohorts: Vec::new(),
                    stopped: BTreeSet::new(),
                },
            );
        }
    }

    /// Turns the detector's per-service events into grouped, explained
    /// incident events.
    pub fn process(
        &mut self,
        events: Vec<IncidentEvent>,
        context: Context<'_>,
    ) -> Vec<IncidentEvent> {
        let mut events = events;
        if let Some(spans) = context.spans {
            events.extend(self.cohorts.evaluate(context.store, spans));
        }
        // Young incidents are looked at again each time a window closes:
        // the evidence (a callee that stopped answering, a hanging one)
        // grows after the opening, while their members may send no event.
        let closed = context.store.closed_through();
        let mut refresh: BTreeSet<String> = BTreeSet::new();
        if closed.is_some() && closed != self.refreshed {
            self.refreshed = closed;
            let window = context.store.config().window.as_nanos() as u64;
            let horizon = window.saturating_mul(REFRESH_WINDOWS);
            let now = closed.map_or(0, |index| context.store.window_start(index + 1));
            refresh.extend(
                self.groups
                    .iter()
                    .filter(|(_, group)| {
                        now.saturating_sub(group.incident.opened_unix_nanos) <= horizon
                    })
                    .map(|(id, _)| id.clone()),
            );
        }
        if events.is_empty() && refresh.is_empty() {
            return Vec::new();
        }
        let graph = Graph::new(context.store);
        // An update of an incident never seen open (after a restart without
        // storage) is taken as its opening.
        let events: Vec<IncidentEvent> = events
            .into_iter()
            .map(|event| match event {
                IncidentEvent::Updated(incident)
                    if !self.member_of.contains_key(member_key(&incident)) =>
                {
                    IncidentEvent::Opened(incident)
                }
                other => other,
            })
            .collect();
        let events = callees_first(events);
        let mut opened: BTreeSet<String> = BTreeSet::new();
        let mut touched: BTreeSet<String> = refresh;
        let mut resolved_at: BTreeMap<String, u64> = BTreeMap::new();
        for event in events {
            match event {
                IncidentEvent::Opened(incident) => {
                    let service = member_key(&incident).to_string();
                    let group_id = match self.join(&incident, &graph) {
                        Some(id) => id,
                        None => {
                            let id = incident.id.clone();
                            self.groups.insert(
                                id.clone(),
                                Group {
                                    members: BTreeMap::new(),
                                    incident: incident.clone(),
                                    ranking: Vec::new(),
                                    past_cohorts: Vec::new(),
                                    stopped: BTreeSet::new(),
                                },
                            );
                            opened.insert(id.clone());
                            id
                        }
                    };
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        group.members.insert(service.clone(), incident);
                    }
                    self.member_of.insert(service, group_id.clone());
                    touched.insert(group_id);
                }
                IncidentEvent::Updated(incident) => {
                    let service = member_key(&incident).to_string();
                    let Some(group_id) = self.member_of.get(&service).cloned() else {
                        continue;
                    };
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        group.members.insert(service, incident);
                    }
                    touched.insert(group_id);
                }
                IncidentEvent::Resolved(incident) => {
                    let service = member_key(&incident).to_string();
                    let Some(group_id) = self.member_of.remove(&service) else {
                        continue;
                    };
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        if let Some(member) = group.members.remove(&service) {
                            if is_cohort(&member) {
                                group.past_cohorts.push(member);
                            }
                        }
                        if group.members.is_empty() {
                            resolved_at.insert(
                                group_id.clone(),
                                incident
                                    .resolved_unix_nanos
                                    .unwrap_or(incident.opened_unix_nanos),
                            );
                        }
                    }
                    touched.insert(group_id);
                }
            }
        }

        let mut out = Vec::new();
        for group_id in touched {
            let Some(mut group) = self.groups.remove(&group_id) else {
                continue;
            };
            if let Some(&end) = resolved_at.get(&group_id) {
                let mut incident = group.incident;
                incident.state = IncidentState::Resolved;
                incident.resolved_unix_nanos = Some(end);
                incident.resolved = Some(crate::model::rfc3339(end));
                if !opened.contains(&group_id) {
                    out.push(IncidentEvent::Resolved(incident));
                }
                continue;
            }
            let before = group.incident.clone();
            let (incident, ranking) = self.build(&group_id, &group, context, &graph, &before);
            group.incident = incident;
            group.stopped.extend(
                ranking
                    .iter()
                    .filter(|(_, evidence, _)| evidence.down)
                    .map(|(service, _, _)| service.clone()),
            );
            group.ranking = ranking;
            if opened.contains(&group_id) {
                out.push(IncidentEvent::Opened(group.incident.clone()));
            } else if worth_update(&before, &group.incident) {
                out.push(IncidentEvent::Updated(group.incident.clone()));
            }
            self.groups.insert(group_id, group);
        }
        out
    }

    /// The open group a newly anomalous service joins: one with an onset
    /// within the cascade window and a member on the same service, or
    /// connected to it by a call that is itself anomalous (the caller's
    /// edge to the callee), or calling the same traced service with the
    /// calls to it anomalous in both. A shared caller is not enough: two faults
    /// behind one front end are two incidents unless the front end's calls
    /// show both.
    fn join(&self, incident: &Incident, graph: &Graph) -> Option<String> {
        let window = self.config.cascade_window.as_nanos() as u64;
        self.groups
            .iter()
            .filter(|(_, group)| {
                incident
                    .onset_unix_nanos
                    .abs_diff(group.incident.onset_unix_nanos)
                    <= window
                    && group.members.values().any(|member| {
                        member.service == incident.service
                            || propagates(graph, member, incident)
                            || propagates(graph, incident, member)
                            || same_degraded_callee(graph, member, incident)
                    })
            })
            .min_by_key(|(_, group)| group.incident.onset_unix_nanos)
            .map(|(id, _)| id.clone())
    }

    /// The delivered incident of a group: members merged, origins ranked,
    /// and the explanation.
    fn build(
        &self,
        id: &str,
        group: &Group,
        context: Context<'_>,
        graph: &Graph,
        before: &Incident,
    ) -> (Incident, Vec<(String, OriginEvidence, f64)>) {
        let members: Vec<&Incident> = group.members.values().collect();
        let mut incident = merge(id, &members);
        // An incident's severity never goes down while it is open: alerts
        // are escalated, never de-escalated (the resolution goes to the
        // alert at the highest severity reached).
        incident.severity = incident.severity.max(before.severity);
        // Evidence compares the incident with the windows before its onset;
        // once those have left the ring, the last ranking made with them
        // stands (a ranking against a baseline that is itself the outage
        // would be noise).
        let (_, baseline) = ranges(context.store, &incident);
        let ranked =
            if baseline.end - baseline.start < MIN_BASELINE_WINDOWS && !group.ranking.is_empty() {
                group.ranking.clone()
            } else {
                let mut evidence = members.clone();
                evidence.extend(
                    group
                        .past_cohorts
                        .iter()
                        .filter(|past| members.iter().any(|member| member.service == past.service)),
                );
                // A callee that is a member of another open group has its
                // own incident: the caller's slow calls to it are a symptom
                // of that fault, not a second origin of this one.
                let elsewhere: BTreeSet<&str> = self
                    .member_of
                    .iter()
                    .filter(|(_, group_id)| group_id.as_str() != id)
                    .map(|(service, _)| service.as_str())
                    .collect();
                rank(
                    context,
                    graph,
                    &evidence,
                    &incident,
                    &group.stopped,
                    &elsewhere,
                )
            };
        incident.root_causes = ranked
            .iter()
            .map(|(service, evidence, score)| RootCause {
                service: service.clone(),
                operation: evidence
                    .dependency
                    .as_ref()
                    .map(|(callee, _)| format!("-> {callee}")),
                score: *score,
                reason: reason(evidence),
            })
            .collect();
        let mut services: Vec<String> = incident
            .root_causes
            .iter()
            .map(|cause| cause.service.clone())
            .collect();
        for member in &members {
            if !services.contains(&member.service) {
                services.push(member.service.clone());
            }
        }
        incident.services = services;
        super::explain::explain(&mut incident, context, graph, &ranked, &self.config, before);
        incident.exemplar_trace_urls = self
            .config
            .trace_url
            .as_deref()
            .map(|template| crate::model::trace_links(template, &incident.exemplar_trace_ids))
            .unwrap_or_default();
        (incident, ranked)
    }
}

/// Whether a member is a cohort's incident (see [`cohort`]).
fn is_cohort(incident: &Incident) -> bool {
    !incident.anomalies.is_empty()
        && incident
            .anomalies
            .iter()
            .all(|anomaly| anomaly.series_kind == cohort::SERIES_KIND)
}

/// The events with the incidents opened together ordered callees first:
/// an incident whose degraded calls go to another one opening in the same
/// batch comes after it. Each caller then finds its callee's group to join,
/// instead of opening a group of its own that the callee joins only one of
/// (two pages for one slow database behind two callers). Other events keep
/// their order; a cycle keeps the order it came in.
fn callees_first(events: Vec<IncidentEvent>) -> Vec<IncidentEvent> {
    let opening: BTreeSet<String> = events
        .iter()
        .filter_map(|event| match event {
            IncidentEvent::Opened(incident) => Some(incident.service.clone()),
            _ => None,
        })
        .collect();
    if opening.len() < 2 {
        return events;
    }
    let calls_into = |incident: &Incident, pending: &BTreeSet<String>| {
        incident.anomalies.iter().any(|anomaly| {
            anomaly.series_kind == "edge"
                && anomaly.series != incident.service
                && pending.contains(&anomaly.series)
        })
    };
    // The opened ones are reordered among the places they held.
    let slots: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| matches!(event, IncidentEvent::Opened(_)))
        .map(|(at, _)| at)
        .collect();
    let mut events: Vec<Option<IncidentEvent>> = events.into_iter().map(Some).collect();
    let mut waiting: Vec<IncidentEvent> =
        slots.iter().filter_map(|at| events[*at].take()).collect();
    let mut pending = opening;
    for at in slots {
        let ready = waiting
            .iter()
            .position(|event| !calls_into(event.incident(), &pending));
        // A cycle: the first one goes, the order it came in.
        let event = waiting.remove(ready.unwrap_or(0));
        pending.remove(&event.incident().service);
        events[at] = Some(event);
    }
    events.into_iter().flatten().collect()
}

/// Whether `caller`'s incident shows its calls to `callee`'s service
/// degraded: the anomaly can travel between them.
/// Whether both incidents show their calls to one traced service degraded:
/// two callers of a failing callee are one fault, whether or not the callee
/// opened an incident of its own (a callee whose time is lost on the way to
/// it, or too quiet to be judged, may not).
fn same_degraded_callee(graph: &Graph, a: &Incident, b: &Incident) -> bool {
    let degraded = |incident: &Incident| -> BTreeSet<String> {
        incident
            .anomalies
            .iter()
            .filter(|anomaly| {
                anomaly.series_kind == "edge"
                    && anomaly.series != incident.service
                    && graph.is_service(&anomaly.series)
            })
            .map(|anomaly| anomaly.series.clone())
            .collect()
    };
    !degraded(a).is_disjoint(&degraded(b))
}

fn propagates(graph: &Graph, caller: &Incident, callee: &Incident) -> bool {
    graph
        .callees(&caller.service)
        .any(|name| *name == callee.service)
        && caller
            .anomalies
            .iter()
            .any(|anomaly| anomaly.series_kind == "edge" && anomaly.series == callee.service)
}

/// Whether an update is worth an event: what an on-call engineer acts on
/// changed, not every number.
fn worth_update(before: &Incident, after: &Incident) -> bool {
    before.kinds != after.kinds
        || before.severity != after.severity
        || before.services != after.services
        || before.operations != after.operations
        || before.root_causes.first().map(|cause| &cause.service)
            != after.root_causes.first().map(|cause| &cause.service)
        || before.changes.first().map(|change| change.id)
            != after.changes.first().map(|change| change.id)
        || before.patterns.len() != after.patterns.len()
        || before.hypotheses.first().map(|h| &h.subject)
            != after.hypotheses.first().map(|h| &h.subject)
}

/// The members' anomalies and numbers as one incident.
fn merge(id: &str, members: &[&Incident]) -> Incident {
    let first = members
        .iter()
        .min_by_key(|member| (member.onset_unix_nanos, member.id.clone()))
        .copied()
        .expect("a group has members");
    let mut incident = first.clone();
    incident.id = id.to_string();
    incident.state = IncidentState::Open;
    if members.len() == 1 {
        return incident;
    }
    let several = members.len() > 1;
    incident.onset_unix_nanos = members
        .iter()
        .map(|m| m.onset_unix_nanos)
        .min()
        .unwrap_or(0);
    incident.onset = crate::model::rfc3339(incident.onset_unix_nanos);
    incident.opened_unix_nanos = members
        .iter()
        .map(|m| m.opened_unix_nanos)
        .min()
        .unwrap_or(0);
    incident.kinds = members
        .iter()
        .flat_map(|m| m.kinds.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    incident.severity = members
        .iter()
        .map(|m| m.severity)
        .max()
        .unwrap_or(Severity::Warning);
    incident.operations = members
        .iter()
        .flat_map(|m| {
            m.operations.iter().map(move |op| {
                // Edges already name their caller.
                if several && !op.starts_with(&format!("{} -> ", m.service)) {
                    format!("{} {op}", m.service)
                } else {
                    op.clone()
                }
            })
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    incident.anomalies = members
        .iter()
        .flat_map(|m| {
            m.anomalies.iter().map(move |anomaly| {
                let mut anomaly = anomaly.clone();
                anomaly.series = format!("{}: {}", m.service, anomaly.series);
                anomaly
            })
        })
        .collect();
    let mut exemplars = Vec::new();
    for member in members {
        for trace in &member.exemplar_trace_ids {
            if !exemplars.contains(trace) && exemplars.len() < MAX_EXEMPLARS {
                exemplars.push(trace.clone());
            }
        }
    }
    incident.exemplar_trace_ids = exemplars;
    incident
}

/// Members ranked as origin candidates, best first, with their evidence and
/// a score in 0..1.
fn rank(
    context: Context<'_>,
    graph: &Graph,
    members: &[&Incident],
    incident: &Incident,
    stopped: &BTreeSet<String>,
    elsewhere: &BTreeSet<&str>,
) -> Vec<(String, OriginEvidence, f64)> {
    let store = context.store;
    let (now, before) = ranges(store, incident);
    // Candidates: the anomalous services, and the traced services their
    // degraded calls lead to. A callee can be the origin without opening
    // an incident of its own: too little traffic of its own to judge in a
    // window, or it hangs and its spans end late.
    let mut candidates: Vec<(&str, Vec<&Incident>)> = Vec::new();
    for member in members {
        match candidates
            .iter_mut()
            .find(|(service, _)| *service == member.service)
        {
            Some((_, incidents)) => incidents.push(member),
            None => candidates.push((member.service.as_str(), vec![*member])),
        }
    }
    for member in members {
        for anomaly in &member.anomalies {
            let callee = anomaly.series.as_str();
            if anomaly.series_kind == "edge"
                && is_kind(anomaly, &[AnomalyKind::Latency, AnomalyKind::ErrorRate])
                && graph.is_service(callee)
                && !elsewhere.contains(callee)
                && !candidates.iter().any(|(known, _)| *known == callee)
            {
                candidates.push((callee, Vec::new()));
            }
        }
    }
    let mut ranked = Vec::new();
    for (service, incidents) in &candidates {
        let service = *service;
        let mut evidence = OriginEvidence::default();
        let (ratio, increase) = own_evidence(store, service, &now, &before);
        evidence.own_time_ratio = ratio;
        evidence.local_error_increase = increase;
        evidence.down =
            stopped.contains(service) || stopped_answering(store, graph, service, &now, &before);
        let anomalies = incidents.iter().flat_map(|member| &member.anomalies);
        let mut degraded_calls = Vec::new();
        for anomaly in anomalies {
            // A version or flag failing names what changed; where it ran
            // (a pod, a node) is kept only when nothing changed.
            if anomaly.series_kind == cohort::SERIES_KIND {
                let change = |subject: &str| {
                    cohort::is_change(subject.split_once('=').map_or(subject, |(key, _)| key))
                };
                let better = match &evidence.cohort {
                    None => true,
                    Some((kept, _)) => !change(kept) && change(&anomaly.series),
                };
                if better {
                    evidence.cohort =
                        Some((anomaly.series.clone(), anomaly.anomaly.summary.clone()));
                }
            }
            if anomaly.series_kind == "edge"
                && is_kind(anomaly, &[AnomalyKind::Latency, AnomalyKind::ErrorRate])
            {
                degraded_calls.push((anomaly.series.clone(), anomaly.anomaly.summary.clone()));
            }
            if is_kind(anomaly, &[AnomalyKind::Saturation, AnomalyKind::Trend])
                && evidence.saturation.is_none()
            {
                evidence.saturation = Some(anomaly.anomaly.summary.clone());
            }
        }
        // Before the set of anomalous services is known, the first
        // degraded call stands in (it may be the service's own database).
        evidence.dependency = degraded_calls.first().cloned();
        ranked.push((
            service.to_string(),
            evidence,
            !incidents.is_empty(),
            degraded_calls,
        ));
    }
    // Calls that slowed on the way to a traced callee while its own
    // handling did not: the callee is where the time goes (its network, its
    // queue) when two or more callers see it, or when the one caller that
    // does sees nothing wrong with its other calls. Otherwise it stays the
    // caller's dependency problem (a wait in its own client).
    let mut unreached: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for (_, _, _, degraded) in &ranked {
        for (callee, _) in degraded {
            if !graph.is_service(callee) || unreached.contains_key(callee) {
                continue;
            }
            // Every caller of it counts, member of this incident or not.
            let callers: Vec<(String, f64)> = graph
                .callers(callee)
                .filter(|caller| *caller != callee)
                .filter_map(|caller| {
                    lost_on_the_way(store, caller, callee, &now, &before)
                        .map(|added| (caller.clone(), added))
                })
                .collect();
            if !callers.is_empty() {
                unreached.insert(callee.clone(), callers);
            }
        }
    }
    // The caller's calls to its other callees, where it made enough of
    // them: none of them slowed.
    let calls_elsewhere_fine = |caller: &str, callee: &str| {
        let mut compared = 0;
        for other in graph.callees(caller) {
            if other == callee || other == caller {
                continue;
            }
            let edge = SeriesKey::new(SeriesKind::Edge, caller, other);
            let median = |range: &Range<i64>, least: u64| {
                let stats = store.stats_windows(&edge, range.start, range.end.checked_sub(1)?)?;
                (stats.requests >= least).then_some(stats.p50?)
            };
            let (Some(current), Some(baseline)) = (
                median(&now, MIN_GAP_CALLS),
                median(&before, MIN_GAP_BASELINE),
            ) else {
                continue;
            };
            if current - baseline >= baseline.max(50.0) {
                return false;
            }
            compared += 1;
        }
        compared > 0
    };
    let mut found = Vec::new();
    for (callee, callers) in &unreached {
        let credible = callers.len() >= 2
            || callers
                .iter()
                .all(|(caller, _)| calls_elsewhere_fine(caller, callee));
        if !credible {
            continue;
        }
        let names: Vec<String> = callers.iter().map(|(caller, _)| caller.clone()).collect();
        let added = callers.iter().map(|(_, added)| *added).fold(0.0, f64::max);
        let summary = format!(
            "calls to it from {} slowed by {} while its own handling of them did not: \
             the time is lost on the way to it (its network, its connection or accept queue)",
            names.join(", "),
            crate::detect::series::format_ms(added),
        );
        found.push((callee.clone(), (names, summary)));
    }
    for (service, evidence, _, _) in ranked.iter_mut() {
        if let Some((_, found)) = found.iter().find(|(callee, _)| callee == service) {
            evidence.unreached = Some(found.clone());
        }
    }
    // Anomalous: opened an incident, or shows strong evidence of its own.
    let anomalous: BTreeSet<String> = ranked
        .iter()
        .filter(|(_, evidence, member, _)| *member || evidence.strength() >= ANOMALOUS_STRENGTH)
        .map(|(service, _, _, _)| service.clone())
        .collect();
    let ranked: Vec<(String, OriginEvidence)> = ranked
        .into_iter()
        .filter(|(service, _, _, _)| anomalous.contains(service))
        .map(|(service, mut evidence, _, degraded_calls)| {
            evidence.anomalous_callees = graph
                .callees(&service)
                .filter(|callee| **callee != service && anomalous.contains(callee.as_str()))
                .cloned()
                .collect();
            // A callee that is itself anomalous explains its callers'
            // symptom: errors a caller counts as local (a failing call with
            // no server child) come from a callee that is down or hangs, and
            // a slow call to an anomalous callee is not the caller's
            // dependency problem.
            evidence.dependency = degraded_calls
                .into_iter()
                .find(|(callee, _)| !anomalous.contains(callee.as_str()));
            (service, evidence)
        })
        .collect();
    let anomalous: BTreeSet<&str> = anomalous.iter().map(String::as_str).collect();
    // A caller whose callee is down or hangs has local-looking errors on
    // the calls to it (they fail or time out with no failing server
    // child); those belong to the callee.
    let down: BTreeSet<String> = ranked
        .iter()
        .filter(|(_, evidence)| {
            evidence.down || evidence.own_time_ratio.is_some_and(|ratio| ratio >= 2.0)
        })
        .map(|(service, _)| service.clone())
        .collect();
    let depth = |service: &str| graph.depth_below(service, &anomalous) as f64;
    let mut scored: Vec<(String, OriginEvidence, f64)> = ranked
        .into_iter()
        .map(|(service, evidence)| {
            let mut strength = evidence.strength();
            let inherits = evidence
                .anomalous_callees
                .iter()
                .any(|callee| callee != &service);
            if inherits {
                // Only what is clearly the service's own counts, and less.
                let own_only = OriginEvidence {
                    local_error_increase: evidence
                        .local_error_increase
                        .filter(|_| !evidence.anomalous_callees.iter().any(|c| down.contains(c))),
                    ..evidence.clone()
                };
                strength = own_only.strength() * 0.4;
                // Time lost before a request reaches the service is outside
                // its handling, so no callee of it explains that.
                if evidence.unreached.is_some() {
                    let unreached = OriginEvidence {
                        unreached: evidence.unreached.clone(),
                        ..OriginEvidence::default()
                    };
                    strength = strength.max(unreached.strength());
                }
            }
            let score = (0.15 + 0.8 * strength - 0.02 * depth(&service)).clamp(0.01, 1.0);
            (service, evidence, score)
        })
        .collect();
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    scored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::changes::ChangeLog;
    use crate::store::{Sample, StoreConfig};

    const SECOND: u64 = 1_000_000_000;
    const START: u64 = 1_700_000_000 * SECOND;

    fn incident(service: &str, onset_secs: u64) -> Incident {
        let onset = START + onset_secs * SECOND;
        let id = format!("{service}@{}", onset / SECOND);
        Incident {
            operations: vec!["GET /".to_string()],
            kinds: vec![AnomalyKind::Latency],
            anomalies: callee_of(service)
                .map(|callee| SeriesAnomaly {
                    series_kind: "edge".to_string(),
                    series: callee.to_string(),
                    anomaly: crate::model::Anomaly {
                        kind: AnomalyKind::Latency,
                        severity: Severity::Warning,
                        severe: false,
                        measure: "p95".to_string(),
                        current: 400.0,
                        baseline: 40.0,
                        unit: "ms".to_string(),
                        summary: "p95 400 ms vs 40 ms baseline".to_string(),
                        time_to_limit_secs: None,
                    },
                })
                .into_iter()
                .collect(),
            summary: format!("{service}: slow"),
            ..Incident::open(id, service, onset, onset + 20 * SECOND)
        }
    }

    /// What the analysis reads in these tests: the store, no span
    /// analysis, the (empty) change log.
    fn context<'a>(store: &'a Store, changes: &'a ChangeLog) -> Context<'a> {
        Context {
            store,
            spans: None,
            changes,
        }
    }

    /// The callee whose calls a test incident shows degraded.
    fn callee_of(service: &str) -> Option<&'static str> {
        match service {
            "frontend" => Some("checkout"),
            "checkout" => Some("payment"),
            _ => None,
        }
    }

    /// A store knowing frontend -> checkout -> payment, frontend -> search.
    fn store() -> Store {
        let store = Store::with_clock(
            StoreConfig::default(),
            std::sync::Arc::new(crate::store::ManualClock::new(0)),
        );
        let sample = Sample {
            end_unix_nanos: START,
            duration_nanos: 1_000_000,
            error: false,
            trace_id: 1,
        };
        for (caller, callee) in [
            ("frontend", "checkout"),
            ("checkout", "payment"),
            ("frontend", "search"),
        ] {
            let entry = store.service(caller);
            store.record_edge(&entry, callee, sample);
        }
        for service in ["frontend", "checkout", "payment", "search"] {
            let entry = store.service(service);
            store.record_operation(&entry, "GET /", sample);
        }
        store
    }

    fn opened(events: &[IncidentEvent]) -> Vec<&Incident> {
        events
            .iter()
            .filter_map(|event| match event {
                IncidentEvent::Opened(incident) => Some(incident),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn callers_opening_with_their_callee_join_its_incident() {
        // cart -> inventory <- catalog; cart and catalog do not call each
        // other.
        let store = store();
        let sample = Sample {
            end_unix_nanos: START,
            duration_nanos: 1_000_000,
            error: false,
            trace_id: 1,
        };
        for caller in ["cart", "catalog"] {
            let entry = store.service(caller);
            store.record_edge(&entry, "inventory", sample);
            store.record_operation(&entry, "GET /", sample);
        }
        let entry = store.service("inventory");
        store.record_operation(&entry, "GET /", sample);
        let changes = ChangeLog::default();
        let context = context(&store, &changes);
        let mut analyzer = Analyzer::new(RcaConfig::default());
        let caller = |service: &str| {
            let mut incident = incident(service, 0);
            incident.anomalies = self::incident("checkout", 0).anomalies;
            incident.anomalies[0].series = "inventory".to_string();
            IncidentEvent::Opened(incident)
        };
        // All three open in the same window, the callers first (by name):
        // each must find inventory's group, not open one of its own that
        // inventory then joins only one of.
        let events = analyzer.process(
            vec![
                caller("cart"),
                caller("catalog"),
                IncidentEvent::Opened(incident("inventory", 0)),
            ],
            context,
        );
        let opened = opened(&events);
        assert_eq!(opened.len(), 1, "one incident for one fault: {events:#?}");
        assert_eq!(analyzer.open_incidents().len(), 1);
        let all = analyzer.open_incidents()[0];
        assert_eq!(all.services.len(), 3, "{all:#?}");
    }

    #[test]
    fn connected_services_close_in_time_are_one_incident() {
        let store = store();
        let changes = ChangeLog::default();
        let context = context(&store, &changes);
        let mut analyzer = Analyzer::new(RcaConfig::default());
        let first = analyzer.process(vec![IncidentEvent::Opened(incident("payment", 0))], context);
        assert_eq!(opened(&first).len(), 1);
        let id = opened(&first)[0].id.clone();
        // checkout calls payment and starts 30 s later: same incident.
        let second = analyzer.process(
            vec![IncidentEvent::Opened(incident("checkout", 30))],
            context,
        );
        assert!(opened(&second).is_empty(), "{second:#?}");
        let IncidentEvent::Updated(grouped) = &second[0] else {
            panic!("an update: {second:#?}");
        };
        assert_eq!(grouped.id, id);
        assert_eq!(grouped.services.len(), 2);
        // frontend calls search, but frontend is not anomalous: its own
        // incident.
        let third = analyzer.process(vec![IncidentEvent::Opened(incident("search", 40))], context);
        assert_eq!(opened(&third).len(), 1);
        // frontend calls checkout but starts 10 minutes later: its own.
        let fourth = analyzer.process(
            vec![IncidentEvent::Opened(incident("frontend", 600))],
            context,
        );
        assert_eq!(opened(&fourth).len(), 1);
        assert_eq!(analyzer.open_incidents().len(), 3);
        // The group resolves when its last member does.
        let mut resolved = incident("payment", 0);
        resolved.state = IncidentState::Resolved;
        resolved.resolved_unix_nanos = Some(START + 300 * SECOND);
        let events = analyzer.process(vec![IncidentEvent::Resolved(resolved)], context);
        assert!(
            matches!(events[0], IncidentEvent::Updated(_)),
            "{events:#?}"
        );
        let mut resolved = incident("checkout", 30);
        resolved.state = IncidentState::Resolved;
        resolved.resolved_unix_nanos = Some(START + 320 * SECOND);
        let events = analyzer.process(vec![IncidentEvent::Resolved(resolved)], context);
        let IncidentEvent::Resolved(done) = &events[0] else {
            panic!("resolved: {events:#?}");
        };
        assert_eq!(done.id, id);
        assert_eq!(done.resolved_unix_nanos, Some(START + 320 * SECOND));
    }

    #[test]
    fn two_faults_behind_one_caller_are_two_incidents() {
        let store = store();
        let changes = ChangeLog::default();
        let context = context(&store, &changes);
        let mut analyzer = Analyzer::new(RcaConfig::default());
        // frontend's calls to checkout degrade; search fails on its own at
        // the same time, and frontend's calls to it show nothing.
        let events = analyzer.process(
            vec![
                IncidentEvent::Opened(incident("frontend", 0)),
                IncidentEvent::Opened(incident("checkout", 0)),
                IncidentEvent::Opened(incident("search", 0)),
            ],
            context,
        );
        let mut groups: Vec<Vec<String>> = opened(&events)
            .iter()
            .map(|incident| {
                let mut services = incident.services.clone();
                services.sort();
                services
            })
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            [vec!["checkout", "frontend"], vec!["search"]],
            "{events:#?}"
        );
    }

    #[test]
    fn a_caller_with_an_anomalous_callee_is_ranked_below_it() {
        let store = store();
        let changes = ChangeLog::default();
        let context = context(&store, &changes);
        let mut analyzer = Analyzer::new(RcaConfig::default());
        let events = analyzer.process(
            vec![
                IncidentEvent::Opened(incident("checkout", 0)),
                IncidentEvent::Opened(incident("payment", 10)),
            ],
            context,
        );
        let incident = opened(&events)[0];
        let ranked: Vec<&str> = incident
            .root_causes
            .iter()
            .map(|cause| cause.service.as_str())
            .collect();
        assert_eq!(ranked, ["payment", "checkout"], "{incident:#?}");
        assert!(incident.root_causes[1].reason.contains("payment"));
        assert!(!incident.hypotheses.is_empty());
    }

    /// A store whose calls `caller -> callee` take 40 ms for five minutes,
    /// then `slowed_ms` for the calls listed in `slowed` from second 300;
    /// every callee serves its requests in 30 ms throughout.
    fn calls_store(edges: &[(&str, &str)], slowed: &[(&str, &str)], slowed_ms: u64) -> Store {
        let store = Store::with_clock(
            StoreConfig::default(),
            std::sync::Arc::new(crate::store::ManualClock::new(START + 320 * SECOND)),
        );
        for second in (0..320).step_by(4) {
            for (index, (caller, callee)) in edges.iter().enumerate() {
                let end = START + second * SECOND + index as u64;
                let slow = second >= 300 && slowed.contains(&(*caller, *callee));
                let trace_id = u128::from(second * 100 + index as u64 + 1);
                let call = Sample {
                    end_unix_nanos: end,
                    duration_nanos: if slow { slowed_ms } else { 40 } * 1_000_000,
                    error: false,
                    trace_id,
                };
                store.record_edge(&store.service(caller), callee, call);
                let served = Sample {
                    duration_nanos: 30_000_000,
                    ..call
                };
                store.record_operation(&store.service(callee), "GET /", served);
            }
        }
        store
    }

    /// An incident of `service` at second 300 whose calls to `callees` are
    /// anomalous.
    fn slow_calls(service: &str, callees: &[&str]) -> Incident {
        let mut incident = incident(service, 300);
        incident.anomalies = callees
            .iter()
            .map(|callee| SeriesAnomaly {
                series_kind: "edge".to_string(),
                series: callee.to_string(),
                anomaly: crate::model::Anomaly {
                    kind: AnomalyKind::Latency,
                    severity: Severity::Warning,
                    severe: true,
                    measure: "p95".to_string(),
                    current: 2_000.0,
                    baseline: 40.0,
                    unit: "ms".to_string(),
                    summary: "p95 2000 ms vs 40 ms baseline".to_string(),
                    time_to_limit_secs: None,
                },
            })
            .collect();
        incident
    }

    fn first_cause(store: &Store, incidents: Vec<Incident>) -> (String, String) {
        let changes = ChangeLog::default();
        let mut analyzer = Analyzer::new(RcaConfig::default());
        let events = analyzer.process(
            incidents.into_iter().map(IncidentEvent::Opened).collect(),
            context(store, &changes),
        );
        let opened = opened(&events);
        assert_eq!(opened.len(), 1, "one fault, one incident: {opened:#?}");
        let cause = &opened[0].root_causes[0];
        (cause.service.clone(), cause.reason.clone())
    }

    #[test]
    fn calls_slowed_on_the_way_to_a_callee_from_two_callers_point_at_the_callee() {
        let edges = [("frontend", "checkout"), ("mobile", "checkout")];
        let store = calls_store(&edges, &edges, 2_000);
        let (origin, reason) = first_cause(
            &store,
            vec![
                slow_calls("frontend", &["checkout"]),
                slow_calls("mobile", &["checkout"]),
            ],
        );
        assert_eq!(origin, "checkout", "{reason}");
        assert!(reason.contains("lost on the way"), "{reason}");
    }

    #[test]
    fn one_caller_whose_other_calls_are_fine_points_at_the_callee() {
        let edges = [("frontend", "checkout"), ("frontend", "search")];
        let store = calls_store(&edges, &edges[..1], 2_000);
        let (origin, reason) = first_cause(&store, vec![slow_calls("frontend", &["checkout"])]);
        assert_eq!(origin, "checkout", "{reason}");
    }

    #[test]
    fn one_caller_whose_calls_all_slowed_is_its_own_problem() {
        // Every call frontend makes slowed while no callee's handling did:
        // the wait is in frontend's client (its pool, its network).
        let edges = [("frontend", "checkout"), ("frontend", "search")];
        let store = calls_store(&edges, &edges, 2_000);
        let (origin, reason) = first_cause(
            &store,
            vec![slow_calls("frontend", &["checkout", "search"])],
        );
        assert_eq!(origin, "frontend", "{reason}");
    }

    #[test]
    fn a_callee_whose_own_handling_slowed_too_is_not_unreached() {
        // The gap rule is for time lost between the two; when the callee's
        // handling explains the calls, its own evidence decides.
        let edges = [("frontend", "checkout"), ("mobile", "checkout")];
        let store = calls_store(&edges, &[], 40);
        for second in (300..320).step_by(4) {
            let sample = Sample {
                end_unix_nanos: START + second * SECOND + 7,
                duration_nanos: 2_000_000_000,
                error: false,
                trace_id: u128::from(second),
            };
            store.record_operation(&store.service("checkout"), "GET /", sample);
            store.record_edge(&store.service("frontend"), "checkout", sample);
            store.record_edge(&store.service("mobile"), "checkout", sample);
        }
        let now = 30..32;
        let before = 0..29;
        assert_eq!(
            lost_on_the_way(&store, "frontend", "checkout", &now, &before),
            None
        );
    }

    #[test]
    fn exemplar_traces_become_links_with_a_trace_url() {
        let store = store();
        let changes = ChangeLog::default();
        let mut analyzer = Analyzer::new(RcaConfig {
            trace_url: Some("http://jaeger:16686/trace/{trace_id}".to_owned()),
            ..RcaConfig::default()
        });
        let mut slow = incident("payment", 0);
        slow.exemplar_trace_ids = vec!["0af7651916cd43dd8448eb211c80319c".to_owned()];
        let events = analyzer.process(vec![IncidentEvent::Opened(slow)], context(&store, &changes));
        assert_eq!(
            opened(&events)[0].exemplar_trace_urls,
            ["http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c"]
        );
    }
}
