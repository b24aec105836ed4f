//! The root-cause evaluation: the simulator's root-cause scenarios through
//! recording, detection and analysis (the replay path), scored against each
//! fault's ground truth.
//!
//! Per injected fault, the incident that covers it is the first one opened
//! at or after the fault's start whose services include the fault's origin
//! or a service it affects; it is scored as last delivered (its final
//! update). Scores:
//! - *origin*: the rank of the true origin among the incident's root-cause
//!   candidates (1 = ranked first);
//! - *change*: when a change caused the fault, whether it is listed first;
//! - *scope*: when the fault is confined to an attribute value (region,
//!   pod, version, flag variant, tenant), whether the blast radius lists
//!   that value first;
//! - *pattern*: whether the expected production pattern is named;
//! - *separate*: with several faults, whether each got its own incident.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::detect::DetectConfig;
use crate::model::{Incident, IncidentEvent};
use crate::pipeline;
use crate::receiver::decode::JsonRequest;
use crate::replay::Replay;
use crate::store::StoreConfig;
use crate::tools::sim::{GroundTruth, Scenario, Simulator};

/// How one injected fault was explained.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultScore {
    pub fault: String,
    pub origin: String,
    /// The incident that covers the fault, if any.
    pub incident: Option<String>,
    /// 1-based rank of the true origin among the root causes.
    pub origin_rank: Option<usize>,
    /// The top-ranked origin, for the table.
    pub ranked_first: Option<String>,
    /// `None` when no change caused the fault.
    pub change_first: Option<bool>,
    /// `None` when the fault is not scoped.
    pub scope_first: Option<bool>,
    /// What the blast radius listed first, for the table.
    pub first_attribute: Option<String>,
    /// `None` when no pattern is expected.
    pub pattern_named: Option<bool>,
    pub hypothesis: Option<String>,
}

/// One scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RcaOutcome {
    pub scenario: String,
    pub faults: Vec<FaultScore>,
    /// Incidents opened in the run (grouped, as delivered).
    pub incidents: usize,
    /// With several faults: whether each was covered by a different
    /// incident.
    pub separate: Option<bool>,
    /// Incidents opened before the first fault (or in a run without one).
    pub false_incidents: Vec<String>,
}

/// Runs one root-cause scenario.
pub fn run_rca_scenario(
    name: &str,
    scenario: Scenario,
    detect: &DetectConfig,
    store: &StoreConfig,
) -> RcaOutcome {
    let lateness = detect.lateness;
    let truth = scenario.truth();
    let simulator = Simulator::new(scenario);
    let mut replay = Replay::new(&pipeline::Settings {
        store: store.clone(),
        detect: detect.clone(),
        ..pipeline::Settings::default()
    });
    // Posted changes go in when the data clock reaches them, as a CI/CD
    // tool would post them.
    let mut pending = truth.changes.clone();
    pending.sort_by_key(|change| change.time_unix_nanos);
    let mut pending = pending.into_iter().peekable();
    let mut posted: Vec<(u64, crate::model::Change)> = Vec::new();

    // Latest delivered version of each incident, and when it opened.
    let mut latest: BTreeMap<String, Incident> = BTreeMap::new();
    let collect = |events: Vec<IncidentEvent>, latest: &mut BTreeMap<String, Incident>| {
        for event in events {
            match event {
                IncidentEvent::Opened(incident) | IncidentEvent::Updated(incident) => {
                    latest.insert(incident.id.clone(), incident);
                }
                IncidentEvent::Resolved(_) => {}
            }
        }
    };
    for batch in simulator {
        while let Some(change) =
            pending.next_if(|change| change.time_unix_nanos <= batch.time_unix_nanos)
        {
            let id = replay.record_change(change.clone());
            posted.push((id, change));
        }
        if let Some(metrics) = batch.metrics {
            let events = replay.feed(JsonRequest::Metrics(metrics));
            collect(events, &mut latest);
        }
        if let Some(traces) = batch.traces {
            let events = replay.feed(JsonRequest::Traces(traces));
            collect(events, &mut latest);
        }
        if let Some(logs) = batch.logs {
            let events = replay.feed(JsonRequest::Logs(logs));
            collect(events, &mut latest);
        }
    }
    let events = replay.finish();
    collect(events, &mut latest);

    let first_fault = truth
        .ground_truth
        .iter()
        .map(|fault| fault.start_unix_nanos)
        .min();
    let live_opened = |incident: &Incident| incident.opened_unix_nanos + lateness.as_nanos() as u64;
    let false_incidents = latest
        .values()
        .filter(|incident| first_fault.is_none_or(|start| live_opened(incident) < start))
        .map(|incident| format!("{} ({})", incident.id, incident.summary))
        .collect();
    let mut faults = Vec::new();
    for fault in &truth.ground_truth {
        faults.push(score(fault, &latest, &posted, live_opened));
    }
    let separate = (truth.ground_truth.len() > 1).then(|| {
        let covering: Vec<&Option<String>> = faults.iter().map(|f| &f.incident).collect();
        covering.iter().all(|id| id.is_some())
            && covering
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == covering.len()
    });
    RcaOutcome {
        scenario: name.to_string(),
        faults,
        incidents: latest.len(),
        separate,
        false_incidents,
    }
}

fn score(
    fault: &GroundTruth,
    incidents: &BTreeMap<String, Incident>,
    posted: &[(u64, crate::model::Change)],
    live_opened: impl Fn(&Incident) -> u64,
) -> FaultScore {
    let covers = |incident: &Incident| {
        incident.services.iter().any(|service| {
            *service == fault.origin || fault.affected.iter().any(|affected| affected == service)
        })
    };
    // The first incident covering the fault, preferring one that names
    // its origin among its services (two faults may open incidents in the
    // same window, and each is judged by its own).
    let incident = incidents
        .values()
        .filter(|incident| live_opened(incident) >= fault.start_unix_nanos && covers(incident))
        .min_by_key(|incident| {
            (
                !incident.services.contains(&fault.origin),
                incident.opened_unix_nanos,
                incident.id.clone(),
            )
        });
    let origin_rank = incident.and_then(|incident| {
        incident
            .root_causes
            .iter()
            .position(|cause| cause.service == fault.origin)
            .map(|index| index + 1)
    });
    let change_first = fault.change.as_ref().map(|change| {
        let id = posted
            .iter()
            .find(|(_, posted)| {
                posted.time_unix_nanos == change.time_unix_nanos
                    && posted.service == change.service
                    && posted.kind == change.kind
            })
            .map(|(id, _)| *id);
        incident
            .and_then(|incident| incident.changes.first())
            .is_some_and(|first| {
                Some(first.id) == id
                    || (first.service == change.service && first.kind == change.kind.as_str())
            })
    });
    let first_attribute = incident
        .and_then(|incident| incident.blast_radius.as_ref())
        .and_then(|blast| blast.attributes.first())
        .map(|lift| format!("{}={}", lift.key, lift.value));
    let scope_first = fault.scope.as_ref().map(|scope| {
        first_attribute.as_deref() == Some(format!("{}={}", scope.key, scope.value).as_str())
    });
    let pattern_named = fault.pattern.map(|pattern| {
        incident.is_some_and(|incident| incident.patterns.iter().any(|found| found.kind == pattern))
    });
    FaultScore {
        fault: fault.fault.clone(),
        origin: fault.origin.clone(),
        incident: incident.map(|incident| incident.id.clone()),
        origin_rank,
        ranked_first: incident
            .and_then(|incident| incident.root_causes.first())
            .map(|cause| cause.service.clone()),
        change_first,
        scope_first,
        first_attribute,
        pattern_named,
        hypothesis: incident
            .and_then(|incident| incident.hypotheses.first())
            .map(|hypothesis| format!("{} -> {}", hypothesis.summary, hypothesis.suggested_action)),
    }
}

/// Totals over outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct RcaSummary {
    pub faults: usize,
    pub covered: usize,
    pub origin_first: usize,
    pub origin_top3: usize,
    pub with_change: usize,
    pub change_first: usize,
    pub scoped: usize,
    pub scope_first: usize,
    pub with_pattern: usize,
    pub pattern_named: usize,
    pub multi_fault_runs: usize,
    pub separated: usize,
    pub false_incidents: usize,
}

pub fn summarize_rca(outcomes: &[RcaOutcome]) -> RcaSummary {
    let faults: Vec<&FaultScore> = outcomes.iter().flat_map(|o| &o.faults).collect();
    let count = |test: &dyn Fn(&FaultScore) -> bool| faults.iter().filter(|f| test(f)).count();
    RcaSummary {
        faults: faults.len(),
        covered: count(&|f| f.incident.is_some()),
        origin_first: count(&|f| f.origin_rank == Some(1)),
        origin_top3: count(&|f| f.origin_rank.is_some_and(|rank| rank <= 3)),
        with_change: count(&|f| f.change_first.is_some()),
        change_first: count(&|f| f.change_first == Some(true)),
        scoped: count(&|f| f.scope_first.is_some()),
        scope_first: count(&|f| f.scope_first == Some(true)),
        with_pattern: count(&|f| f.pattern_named.is_some()),
        pattern_named: count(&|f| f.pattern_named == Some(true)),
        multi_fault_runs: outcomes.iter().filter(|o| o.separate.is_some()).count(),
        separated: outcomes.iter().filter(|o| o.separate == Some(true)).count(),
        false_incidents: outcomes.iter().map(|o| o.false_incidents.len()).sum(),
    }
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!(
            "{part}/{whole} = {:.0}%",
            part as f64 * 100.0 / whole as f64
        )
    }
}

/// The results as a Markdown table, then the totals against the targets.
pub fn rca_table(outcomes: &[RcaOutcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | fault | true origin | ranked first | rank | change first | scope first (found) | pattern | first hypothesis |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mark = |value: Option<bool>| match value {
        None => "-",
        Some(true) => "yes",
        Some(false) => "**no**",
    };
    for outcome in outcomes {
        if outcome.faults.is_empty() {
            let _ = writeln!(
                out,
                "| {} | (none) | - | - | - | - | - | - | {} incidents |",
                outcome.scenario, outcome.incidents
            );
        }
        for fault in &outcome.faults {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                outcome.scenario,
                fault.fault,
                fault.origin,
                fault.ranked_first.as_deref().unwrap_or("**no incident**"),
                fault
                    .origin_rank
                    .map_or("-".to_string(), |rank| rank.to_string()),
                mark(fault.change_first),
                mark(fault.scope_first),
                fault.first_attribute.as_deref().unwrap_or("-"),
                mark(fault.pattern_named),
                fault
                    .hypothesis
                    .as_deref()
                    .unwrap_or("-")
                    .replace('|', "\\|"),
            );
        }
    }
    let summary = summarize_rca(outcomes);
    let _ = writeln!(
        out,
        "\ncovered by an incident {}; origin ranked first {} (target 90%); in the top three {} (target 98%); causing change listed first {} (target 90%); scoping value found first {} (target 90%); pattern named {}; simultaneous faults as separate incidents {}; false incidents {}",
        percent(summary.covered, summary.faults),
        percent(summary.origin_first, summary.faults),
        percent(summary.origin_top3, summary.faults),
        percent(summary.change_first, summary.with_change),
        percent(summary.scope_first, summary.scoped),
        percent(summary.pattern_named, summary.with_pattern),
        percent(summary.separated, summary.multi_fault_runs),
        summary.false_incidents,
    );
    for outcome in outcomes {
        for incident in &outcome.false_incidents {
            let _ = writeln!(out, "false incident in {}: {incident}", outcome.scenario);
        }
    }
    out
}
