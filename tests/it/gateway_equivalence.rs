//! The same simulated traffic (a) as spans into one pipeline and (b) split
//! by trace id across three agents, whose window summaries feed one
//! gateway, gives the same incidents, origins and changes.
//!
//! Everything runs on event time, as replay does, so the comparison is
//! exact where it can be: the agents' summaries carry counts exactly, and
//! latency through exponential histograms (about 1% per value, so about
//! 2% on a quantile after the gateway's own buckets). What is compared:
//! each incident's services, kinds and first-ranked origin, the change
//! named first, and every change the change log holds (service, kind,
//! version or value). Onsets may differ by up to a window, and so may
//! which of a cascade's services the incident is named after: summaries
//! have no sub-windows. Metrics and logs go to the gateway as the agents forward
//! them; posted changes go to both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

use triage::agent::summary::summarize;
use triage::detect::DetectConfig;
use triage::model::ChangeFilter;
use triage::model::{Incident, IncidentEvent};
use triage::pipeline::{Pipeline, Settings};
use triage::receiver::Sink;
use triage::store::{ManualClock, Store};
use triage::tools::sim::{find_scenario, Simulator};

const AGENTS: usize = 3;

/// A pipeline on an event-time clock.
struct Node {
    pipeline: Pipeline,
    clock: Arc<ManualClock>,
    newest: u64,
}

impl Node {
    fn new(settings: &Settings) -> Node {
        let clock = Arc::new(ManualClock::new(0));
        let store = Arc::new(Store::with_clock(settings.store.clone(), clock.clone()));
        Node {
            pipeline: Pipeline::new(settings, store),
            clock,
            newest: 0,
        }
    }

    fn advance(&mut self, time: u64) {
        if time > self.newest {
            self.newest = time;
            self.clock.set(time);
        }
    }
}

/// An agent: its node and the newest window it summarised.
struct Agent {
    node: Node,
    sent: Option<i64>,
}

impl Agent {
    /// Sends the gateway every window closed since the last call.
    fn send(&mut self, index: usize, gateway: &mut Node, events: &mut Vec<IncidentEvent>) {
        let Some(closed) = self.node.pipeline.store().closed_through() else {
            return;
        };
        let first = self.sent.map_or(closed, |sent| sent + 1);
        for window in first..=closed {
            let summary = summarize(
                self.node.pipeline.store(),
                Some(self.node.pipeline.spans()),
                window,
                &format!("agent-{index}"),
            );
            for request in &summary.requests {
                let outcome = gateway.pipeline.ingest().metrics(request);
                assert_eq!(outcome.rejected, 0, "{outcome:?}");
            }
        }
        self.sent = Some(closed);
        events.extend(gateway.pipeline.tick(gateway.newest));
    }
}

/// The spans of `request` whose trace id falls to agent `index`.
fn share(request: &ExportTraceServiceRequest, index: usize) -> ExportTraceServiceRequest {
    let mut part = request.clone();
    for resource in &mut part.resource_spans {
        for scope in &mut resource.scope_spans {
            let spans = std::mem::take(&mut scope.spans);
            scope.spans = spans
                .into_iter()
                .filter(|span| {
                    let last = span.trace_id.last().copied().unwrap_or(0);
                    usize::from(last) % AGENTS == index
                })
                .collect();
        }
        resource
            .scope_spans
            .retain(|scope: &ScopeSpans| !scope.spans.is_empty());
    }
    part.resource_spans
        .retain(|resource| !resource.scope_spans.is_empty());
    part
}

fn newest_span(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .map(|span| span.end_time_unix_nano)
        .max()
        .unwrap_or(0)
}

/// The latest version of every incident opened.
fn incidents(events: Vec<IncidentEvent>) -> BTreeMap<String, Incident> {
    let mut latest = BTreeMap::new();
    for event in events {
        if let IncidentEvent::Opened(incident) | IncidentEvent::Updated(incident) = event {
            latest.insert(incident.id.clone(), incident);
        }
    }
    latest
}

/// What must agree: per incident, the services it covers, its kinds, its
/// first origin and its first-named change. Not the service the incident
/// is named after: that is the per-service incident that opened first, and
/// two services found anomalous in the same window may open in either
/// order when the window has no sub-windows.
fn outline(incidents: &BTreeMap<String, Incident>) -> Vec<String> {
    let mut lines: Vec<String> = incidents
        .values()
        .map(|incident| {
            let mut kinds: Vec<String> = incident
                .kinds
                .iter()
                .map(|kind| format!("{kind:?}"))
                .collect();
            kinds.sort();
            let mut services = incident.services.clone();
            services.sort();
            format!(
                "{} kinds={} origin={} change={}",
                services.join(","),
                kinds.join(","),
                incident
                    .root_causes
                    .first()
                    .map_or("-", |cause| cause.service.as_str()),
                incident
                    .changes
                    .first()
                    .map_or("-".to_owned(), |change| format!(
                        "{}:{}:{}",
                        change.service,
                        change.kind,
                        change.subject.as_deref().unwrap_or("")
                    )),
            )
        })
        .collect();
    lines.sort();
    lines
}

fn changes(pipeline: &Pipeline) -> BTreeSet<String> {
    pipeline
        .changes()
        .list(&ChangeFilter::default())
        .into_iter()
        .map(|change| {
            format!(
                "{} {:?} {}",
                change.service,
                change.kind,
                change.version.or(change.value).unwrap_or_default()
            )
        })
        .collect()
}

fn compare(scenario_name: &str) {
    let scenario = find_scenario(scenario_name).expect("a built-in scenario");
    let truth = scenario.truth();
    let mut settings = Settings {
        detect: DetectConfig::default(),
        ..Settings::default()
    };
    // The gateway closes a window only after the agents have sent it: its
    // lateness is the agents' plus a window.
    let agent_settings = settings.clone();
    settings.detect.lateness = agent_settings.detect.lateness + settings.store.window;

    let mut single = Node::new(&settings);
    let mut gateway = Node::new(&settings);
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|_| Agent {
            node: Node::new(&agent_settings),
            sent: None,
        })
        .collect();
    let (mut single_events, mut gateway_events) = (Vec::new(), Vec::new());
    let mut pending = truth.changes.clone();
    pending.sort_by_key(|change| change.time_unix_nanos);
    let mut pending = pending.into_iter().peekable();

    for batch in Simulator::new(scenario) {
        while let Some(change) =
            pending.next_if(|change| change.time_unix_nanos <= batch.time_unix_nanos)
        {
            single.pipeline.changes().record(change.clone());
            gateway.pipeline.changes().record(change);
        }
        if let Some(metrics) = &batch.metrics {
            for node in [&mut single, &mut gateway] {
                node.advance(batch.time_unix_nanos);
                node.pipeline.ingest().metrics(metrics);
            }
        }
        if let Some(logs) = &batch.logs {
            for node in [&mut single, &mut gateway] {
                node.advance(batch.time_unix_nanos);
                node.pipeline.ingest().logs(logs);
            }
        }
        if let Some(traces) = &batch.traces {
            let newest = newest_span(traces);
            single.advance(newest);
            single.pipeline.ingest().traces(traces);
            gateway.advance(newest);
            for (index, agent) in agents.iter_mut().enumerate() {
                agent.node.advance(newest);
                agent.node.pipeline.ingest().traces(&share(traces, index));
                agent.node.pipeline.tick(agent.node.newest);
            }
        }
        single_events.extend(single.pipeline.tick(single.newest));
        for (index, agent) in agents.iter_mut().enumerate() {
            agent.send(index, &mut gateway, &mut gateway_events);
        }
        gateway_events.extend(gateway.pipeline.tick(gateway.newest));
    }
    for (index, agent) in agents.iter_mut().enumerate() {
        agent.node.pipeline.finish(agent.node.newest);
        agent.send(index, &mut gateway, &mut gateway_events);
    }
    single_events.extend(single.pipeline.finish(single.newest));
    gateway_events.extend(gateway.pipeline.finish(gateway.newest));

    let single_incidents = incidents(single_events);
    let gateway_incidents = incidents(gateway_events);
    assert!(
        !single_incidents.is_empty(),
        "{scenario_name}: the fault opens an incident from spans"
    );
    assert_eq!(
        outline(&gateway_incidents),
        outline(&single_incidents),
        "{scenario_name}: incidents, kinds, origins and first changes"
    );
    assert_eq!(
        changes(&gateway.pipeline),
        changes(&single.pipeline),
        "{scenario_name}: the change log"
    );
    // Onsets within a window of each other.
    let window = settings.store.window.as_nanos() as i64;
    for (single, gateway) in single_incidents.values().zip(gateway_incidents.values()) {
        let gap = gateway.onset_unix_nanos as i64 - single.onset_unix_nanos as i64;
        assert!(
            gap.abs() <= window,
            "{scenario_name}: onsets {gap} ns apart"
        );
    }
}

#[test]
fn a_slow_leaf_seen_through_three_agents_is_the_same_incident() {
    compare("rca-cascade-slow");
}

#[test]
fn failing_leaf_seen_through_three_agents_is_the_same_incident() {
    compare("rca-cascade-errors");
}

#[test]
fn a_canary_seen_through_three_agents_is_the_same_incident_and_deploy() {
    compare("rca-canary");
}

#[test]
fn a_flag_flip_seen_through_three_agents_is_the_same_incident_and_flip() {
    compare("rca-flag-flip");
}
