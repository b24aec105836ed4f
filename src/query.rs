//! The gRPC query API (`triage.v1.TriageQuery`) and its command-line client.
//!
//! - [`pb`]: the prost/tonic code generated from `proto/triage/v1/*.proto`
//!   by `build.rs`, and the encoded descriptor set served by reflection.
//! - this module: conversion between the crate's types (incidents, changes,
//!   the [`view`] types) and the generated ones, both ways: the server
//!   converts to protobuf, the CLI converts responses back so that its JSON
//!   has the same shape as every other JSON `triage` writes.
//! - [`view`]: services, RED statistics and the topology as plain data,
//!   computed from the store's read API.
//! - [`service`]: the tonic service, authentication, health, reflection,
//!   TLS, and serving with a drain.
//! - [`client`] and [`cli`]: `triage query ...`.
//!
//! Invariant: protobuf types stop here. Nothing outside `query` sees a
//! `pb` type; conversions never panic on what a peer sent (an unknown enum
//! value or label is a [`ConvertError`]).

pub mod cli;
pub mod client;
pub mod config;
pub mod service;
pub mod view;

pub use config::ApiConfig;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{rfc3339, Incident, IncidentState, SeriesAnomaly};
use crate::model::{Anomaly, Severity};
use crate::model::{
    AttributeLift, BlastRadius, CorrelatedChange, Evidence, Hypothesis, Pattern, RootCause,
};
use crate::model::{Change, ChangeKind, ChangeSource};
use view::{
    EdgeStats, OperationStats, RedStats, ServiceStats, ServiceSummary, Topology, TopologyEdge,
    TopologyNode,
};

/// Code generated from `proto/triage/v1/*.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("triage.v1");

    /// The encoded `FileDescriptorSet` of the protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/triage_v1_descriptor.bin"));
}

/// A message from a peer that does not map onto the crate's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A label or enum value this build does not know (a newer server?).
    #[error("unknown {field} {value:?}")]
    Unknown {
        /// The field, e.g. `incident.kinds`.
        field: &'static str,
        /// What was sent.
        value: String,
    },
    /// A required message field was absent.
    #[error("missing {field}")]
    Missing {
        /// The field, e.g. `incident`.
        field: &'static str,
    },
}

/// What happened to an incident in one stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    /// The incident opened.
    Opened,
    /// Its anomalies, kinds or severity changed.
    Updated,
    /// It resolved.
    Resolved,
}

/// One stored incident event as the API serves it: its sequence number,
/// when it was recorded, and the incident as of then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increasing event id; a watch resumes after it.
    pub seq: u64,
    /// What happened.
    pub event: EventName,
    /// When triage recorded it, Unix nanoseconds.
    pub at_unix_nanos: u64,
    /// The same as RFC 3339.
    pub at: String,
    /// The incident as of this event.
    pub incident: Incident,
}

// === crate -> protobuf ===

/// The snake_case name serde gives a unit enum variant (`error_rate`), which
/// is what the API sends for open-ended kinds.
fn label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        // Only unit variants are passed here; anything else is a bug worth
        // seeing in the output rather than a panic.
        other => format!("{other:?}"),
    }
}

/// The reverse of [`label`].
fn parse_label<T: DeserializeOwned>(field: &'static str, text: &str) -> Result<T, ConvertError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        ConvertError::Unknown {
            field,
            value: text.to_owned(),
        }
    })
}

fn severity_to_proto(severity: Severity) -> i32 {
    match severity {
        Severity::Warning => pb::Severity::Warning as i32,
        Severity::Critical => pb::Severity::Critical as i32,
    }
}

fn severity_from_proto(value: i32) -> Result<Severity, ConvertError> {
    match pb::Severity::try_from(value) {
        Ok(pb::Severity::Warning) => Ok(Severity::Warning),
        Ok(pb::Severity::Critical) => Ok(Severity::Critical),
        _ => Err(ConvertError::Unknown {
            field: "severity",
            value: value.to_string(),
        }),
    }
}

/// The protobuf enum value of an incident state.
pub fn state_to_proto(state: IncidentState) -> pb::IncidentState {
    match state {
        IncidentState::Open => pb::IncidentState::Open,
        IncidentState::Resolved => pb::IncidentState::Resolved,
    }
}

/// An incident state from the wire; `Ok(None)` for UNSPECIFIED (no filter).
pub fn state_from_proto(value: i32) -> Result<Option<IncidentState>, ConvertError> {
    match pb::IncidentState::try_from(value) {
        Ok(pb::IncidentState::Unspecified) => Ok(None),
        Ok(pb::IncidentState::Open) => Ok(Some(IncidentState::Open)),
        Ok(pb::IncidentState::Resolved) => Ok(Some(IncidentState::Resolved)),
        Err(_) => Err(ConvertError::Unknown {
            field: "state",
            value: value.to_string(),
        }),
    }
}

fn event_to_proto(event: EventName) -> pb::EventKind {
    match event {
        EventName::Opened => pb::EventKind::Opened,
        EventName::Updated => pb::EventKind::Updated,
        EventName::Resolved => pb::EventKind::Resolved,
    }
}

fn event_from_proto(value: i32) -> Result<EventName, ConvertError> {
    match pb::EventKind::try_from(value) {
        Ok(pb::EventKind::Opened) => Ok(EventName::Opened),
        Ok(pb::EventKind::Updated) => Ok(EventName::Updated),
        Ok(pb::EventKind::Resolved) => Ok(EventName::Resolved),
        _ => Err(ConvertError::Unknown {
            field: "event.kind",
            value: value.to_string(),
        }),
    }
}

/// An empty string for "absent" on the wire, as proto3 strings have no null.
fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl From<&Incident> for pb::Incident {
    fn from(incident: &Incident) -> Self {
        pb::Incident {
            id: incident.id.clone(),
            state: state_to_proto(incident.state) as i32,
            service: incident.service.clone(),
            operations: incident.operations.clone(),
            kinds: incident.kinds.iter().map(label).collect(),
            severity: severity_to_proto(incident.severity),
            onset_unix_nanos: incident.onset_unix_nanos,
            onset: incident.onset.clone(),
            opened_unix_nanos: incident.opened_unix_nanos,
            resolved_unix_nanos: incident.resolved_unix_nanos,
            resolved: incident.resolved.clone().unwrap_or_default(),
            anomalies: incident.anomalies.iter().map(Into::into).collect(),
            exemplar_trace_ids: incident.exemplar_trace_ids.clone(),
            exemplar_trace_urls: incident.exemplar_trace_urls.clone(),
            summary: incident.summary.clone(),
            services: incident.services.clone(),
            root_causes: incident.root_causes.iter().map(Into::into).collect(),
            patterns: incident.patterns.iter().map(Into::into).collect(),
            changes: incident.changes.iter().map(Into::into).collect(),
            blast_radius: incident.blast_radius.as_ref().map(Into::into),
            hypotheses: incident.hypotheses.iter().map(Into::into).collect(),
        }
    }
}

impl From<&SeriesAnomaly> for pb::SeriesAnomaly {
    fn from(anomaly: &SeriesAnomaly) -> Self {
        pb::SeriesAnomaly {
            series_kind: anomaly.series_kind.clone(),
            series: anomaly.series.clone(),
            anomaly: Some((&anomaly.anomaly).into()),
        }
    }
}

impl From<&Anomaly> for pb::Anomaly {
    fn from(anomaly: &Anomaly) -> Self {
        pb::Anomaly {
            kind: label(&anomaly.kind),
            severity: severity_to_proto(anomaly.severity),
            severe: anomaly.severe,
            measure: anomaly.measure.clone(),
            current: anomaly.current,
            baseline: anomaly.baseline,
            unit: anomaly.unit.clone(),
            summary: anomaly.summary.clone(),
            time_to_limit_secs: anomaly.time_to_limit_secs,
        }
    }
}

impl From<&RootCause> for pb::RootCause {
    fn from(cause: &RootCause) -> Self {
        pb::RootCause {
            service: cause.service.clone(),
            operation: cause.operation.clone(),
            score: cause.score,
            reason: cause.reason.clone(),
        }
    }
}

impl From<&Pattern> for pb::Pattern {
    fn from(pattern: &Pattern) -> Self {
        pb::Pattern {
            kind: pattern.kind.as_str().to_owned(),
            subject: pattern.subject.clone(),
            detail: pattern.detail.clone(),
        }
    }
}

impl From<&CorrelatedChange> for pb::CorrelatedChange {
    fn from(change: &CorrelatedChange) -> Self {
        pb::CorrelatedChange {
            id: change.id,
            service: change.service.clone(),
            kind: change.kind.clone(),
            subject: change.subject.clone(),
            external_id: change.external_id.clone(),
            description: change.description.clone(),
            time_unix_nanos: change.time_unix_nanos,
            time: change.time.clone(),
            before_onset_secs: change.before_onset_secs,
            score: change.score,
            reason: change.reason.clone(),
        }
    }
}

impl From<&BlastRadius> for pb::BlastRadius {
    fn from(blast: &BlastRadius) -> Self {
        pb::BlastRadius {
            total_requests: blast.total_requests,
            affected_requests: blast.affected_requests,
            affected_share: blast.affected_share,
            services: blast.services.clone(),
            operations: blast.operations.clone(),
            entry_points: blast.entry_points.clone(),
            attributes: blast
                .attributes
                .iter()
                .map(|lift| pb::AttributeLift {
                    key: lift.key.clone(),
                    value: lift.value.clone(),
                    bad_share: lift.bad_share,
                    baseline_share: lift.baseline_share,
                    lift: lift.lift,
                    bad_spans: lift.bad_spans,
                })
                .collect(),
        }
    }
}

impl From<&Evidence> for pb::Evidence {
    fn from(evidence: &Evidence) -> Self {
        pb::Evidence {
            text: evidence.text.clone(),
            trace_ids: evidence.trace_ids.clone(),
        }
    }
}

impl From<&Hypothesis> for pb::Hypothesis {
    fn from(hypothesis: &Hypothesis) -> Self {
        pb::Hypothesis {
            kind: label(&hypothesis.kind),
            subject: hypothesis.subject.clone(),
            score: hypothesis.score,
            summary: hypothesis.summary.clone(),
            evidence_for: hypothesis.evidence_for.iter().map(Into::into).collect(),
            evidence_against: hypothesis.evidence_against.iter().map(Into::into).collect(),
            suggested_action: hypothesis.suggested_action.clone(),
        }
    }
}

impl From<&EventRecord> for pb::IncidentEvent {
    fn from(record: &EventRecord) -> Self {
        pb::IncidentEvent {
            seq: record.seq,
            kind: event_to_proto(record.event) as i32,
            at_unix_nanos: record.at_unix_nanos,
            at: record.at.clone(),
            incident: Some((&record.incident).into()),
        }
    }
}

impl From<&Change> for pb::Change {
    fn from(change: &Change) -> Self {
        pb::Change {
            id: change.id,
            service: change.service.clone(),
            kind: change.kind.as_str().to_owned(),
            version: change.version.clone(),
            key: change.key.clone(),
            value: change.value.clone(),
            description: change.description.clone(),
            time_unix_nanos: change.time_unix_nanos,
            time: change.time(),
            link: change.link.clone(),
            external_id: change.external_id.clone(),
            source: label(&change.source),
        }
    }
}

impl From<&RedStats> for pb::RedStats {
    fn from(stats: &RedStats) -> Self {
        pb::RedStats {
            requests: stats.requests,
            errors: stats.errors,
            error_rate: stats.error_rate,
            rate_per_second: stats.rate_per_second,
            p50_ms: stats.p50_ms,
            p95_ms: stats.p95_ms,
            p99_ms: stats.p99_ms,
            max_ms: stats.max_ms,
            from_unix_nanos: stats.from_unix_nanos,
            to_unix_nanos: stats.to_unix_nanos,
        }
    }
}

impl From<&ServiceSummary> for pb::ServiceSummary {
    fn from(summary: &ServiceSummary) -> Self {
        pb::ServiceSummary {
            name: summary.name.clone(),
            operations: summary.operations.clone(),
            callees: summary.callees.clone(),
        }
    }
}

impl From<&ServiceStats> for pb::GetServiceStatsResponse {
    fn from(stats: &ServiceStats) -> Self {
        pb::GetServiceStatsResponse {
            service: stats.service.clone(),
            since_unix_nanos: stats.since_unix_nanos,
            until_unix_nanos: stats.until_unix_nanos,
            total: Some((&stats.total).into()),
            operations: stats
                .operations
                .iter()
                .map(|operation| pb::OperationStats {
                    operation: operation.operation.clone(),
                    stats: Some((&operation.stats).into()),
                })
                .collect(),
            edges: stats
                .edges
                .iter()
                .map(|edge| pb::EdgeStats {
                    callee: edge.callee.clone(),
                    stats: Some((&edge.stats).into()),
                })
                .collect(),
        }
    }
}

impl From<&Topology> for pb::GetTopologyResponse {
    fn from(topology: &Topology) -> Self {
        pb::GetTopologyResponse {
            since_unix_nanos: topology.since_unix_nanos,
            until_unix_nanos: topology.until_unix_nanos,
            nodes: topology
                .nodes
                .iter()
                .map(|node| pb::TopologyNode {
                    service: node.service.clone(),
                    traced: node.traced,
                    stats: Some((&node.stats).into()),
                })
                .collect(),
            edges: topology
                .edges
                .iter()
                .map(|edge| pb::TopologyEdge {
                    caller: edge.caller.clone(),
                    callee: edge.callee.clone(),
                    call_rate_per_second: edge.call_rate_per_second,
                    error_rate: edge.error_rate,
                    caller_side: Some((&edge.caller_side).into()),
                    callee_side: edge.callee_side.as_ref().map(Into::into),
                })
                .collect(),
            // Set by the service when more pages follow.
            next_page_token: String::new(),
        }
    }
}

// === protobuf -> crate ===

impl TryFrom<pb::Incident> for Incident {
    type Error = ConvertError;

    fn try_from(incident: pb::Incident) -> Result<Self, ConvertError> {
        Ok(Incident {
            id: incident.id,
            state: state_from_proto(incident.state)?.ok_or(ConvertError::Missing {
                field: "incident.state",
            })?,
            service: incident.service,
            operations: incident.operations,
            kinds: incident
                .kinds
                .iter()
                .map(|kind| parse_label("incident.kinds", kind))
                .collect::<Result<_, _>>()?,
            severity: severity_from_proto(incident.severity)?,
            onset_unix_nanos: incident.onset_unix_nanos,
            onset: incident.onset,
            opened_unix_nanos: incident.opened_unix_nanos,
            resolved_unix_nanos: incident.resolved_unix_nanos,
            resolved: non_empty(incident.resolved),
            anomalies: incident
                .anomalies
                .into_iter()
                .map(SeriesAnomaly::try_from)
                .collect::<Result<_, _>>()?,
            exemplar_trace_ids: incident.exemplar_trace_ids,
            exemplar_trace_urls: incident.exemplar_trace_urls,
            summary: incident.summary,
            services: incident.services,
            root_causes: incident
                .root_causes
                .into_iter()
                .map(|cause| RootCause {
                    service: cause.service,
                    operation: cause.operation,
                    score: cause.score,
                    reason: cause.reason,
                })
                .collect(),
            patterns: incident
                .patterns
                .into_iter()
                .map(|pattern| {
                    Ok(Pattern {
                        kind: parse_label("pattern.kind", &pattern.kind)?,
                        subject: pattern.subject,
                        detail: pattern.detail,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
            changes: incident
                .changes
                .into_iter()
                .map(|change| CorrelatedChange {
                    id: change.id,
                    service: change.service,
                    kind: change.kind,
                    subject: change.subject,
                    external_id: change.external_id,
                    description: change.description,
                    time_unix_nanos: change.time_unix_nanos,
                    time: change.time,
                    before_onset_secs: change.before_onset_secs,
                    score: change.score,
                    reason: change.reason,
                })
                .collect(),
            blast_radius: incident.blast_radius.map(|blast| BlastRadius {
                total_requests: blast.total_requests,
                affected_requests: blast.affected_requests,
                affected_share: blast.affected_share,
                services: blast.services,
                operations: blast.operations,
                entry_points: blast.entry_points,
                attributes: blast
                    .attributes
                    .into_iter()
                    .map(|lift| AttributeLift {
                        key: lift.key,
                        value: lift.value,
                        bad_share: lift.bad_share,
                        baseline_share: lift.baseline_share,
                        lift: lift.lift,
                        bad_spans: lift.bad_spans,
                    })
                    .collect(),
            }),
            hypotheses: incident
                .hypotheses
                .into_iter()
                .map(|hypothesis| {
                    let evidence = |items: Vec<pb::Evidence>| {
                        items
                            .into_iter()
                            .map(|item| Evidence {
                                text: item.text,
                                trace_ids: item.trace_ids,
                            })
                            .collect()
                    };
                    Ok(Hypothesis {
                        kind: parse_label("hypothesis.kind", &hypothesis.kind)?,
                        subject: hypothesis.subject,
                        score: hypothesis.score,
                        summary: hypothesis.summary,
                        evidence_for: evidence(hypothesis.evidence_for),
                        evidence_against: evidence(hypothesis.evidence_against),
                        suggested_action: hypothesis.suggested_action,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        })
    }
}

impl TryFrom<pb::SeriesAnomaly> for SeriesAnomaly {
    type Error = ConvertError;

    fn try_from(anomaly: pb::SeriesAnomaly) -> Result<Self, ConvertError> {
        let inner = anomaly.anomaly.ok_or(ConvertError::Missing {
            field: "anomalies.anomaly",
        })?;
        Ok(SeriesAnomaly {
            series_kind: anomaly.series_kind,
            series: anomaly.series,
            anomaly: Anomaly {
                kind: parse_label("anomaly.kind", &inner.kind)?,
                severity: severity_from_proto(inner.severity)?,
                severe: inner.severe,
                measure: inner.measure,
                current: inner.current,
                baseline: inner.baseline,
                unit: inner.unit,
                summary: inner.summary,
                time_to_limit_secs: inner.time_to_limit_secs,
            },
        })
    }
}

impl TryFrom<pb::IncidentEvent> for EventRecord {
    type Error = ConvertError;

    fn try_from(event: pb::IncidentEvent) -> Result<Self, ConvertError> {
        let incident = event.incident.ok_or(ConvertError::Missing {
            field: "event.incident",
        })?;
        Ok(EventRecord {
            seq: event.seq,
            event: event_from_proto(event.kind)?,
            at_unix_nanos: event.at_unix_nanos,
            at: if event.at.is_empty() {
                rfc3339(event.at_unix_nanos)
            } else {
                event.at
            },
            incident: incident.try_into()?,
        })
    }
}

impl TryFrom<pb::Change> for Change {
    type Error = ConvertError;

    fn try_from(change: pb::Change) -> Result<Self, ConvertError> {
        Ok(Change {
            id: change.id,
            service: change.service,
            kind: ChangeKind::parse(&change.kind).ok_or(ConvertError::Unknown {
                field: "change.kind",
                value: change.kind.clone(),
            })?,
            version: change.version,
            key: change.key,
            value: change.value,
            description: change.description,
            time_unix_nanos: change.time_unix_nanos,
            link: change.link,
            external_id: change.external_id,
            source: parse_label::<ChangeSource>("change.source", &change.source)?,
        })
    }
}

impl From<pb::RedStats> for RedStats {
    fn from(stats: pb::RedStats) -> Self {
        RedStats {
            requests: stats.requests,
            errors: stats.errors,
            error_rate: stats.error_rate,
            rate_per_second: stats.rate_per_second,
            p50_ms: stats.p50_ms,
            p95_ms: stats.p95_ms,
            p99_ms: stats.p99_ms,
            max_ms: stats.max_ms,
            from_unix_nanos: stats.from_unix_nanos,
            to_unix_nanos: stats.to_unix_nanos,
        }
    }
}

impl From<pb::ServiceSummary> for ServiceSummary {
    fn from(summary: pb::ServiceSummary) -> Self {
        ServiceSummary {
            name: summary.name,
            operations: summary.operations,
            callees: summary.callees,
        }
    }
}

impl From<pb::GetServiceStatsResponse> for ServiceStats {
    fn from(stats: pb::GetServiceStatsResponse) -> Self {
        ServiceStats {
            service: stats.service,
            since_unix_nanos: stats.since_unix_nanos,
            until_unix_nanos: stats.until_unix_nanos,
            // An absent message is all zeros, which is what an empty range
            // would have sent.
            total: stats.total.map(Into::into).unwrap_or_default(),
            operations: stats
                .operations
                .into_iter()
                .map(|operation| OperationStats {
                    operation: operation.operation,
                    stats: operation.stats.map(Into::into).unwrap_or_default(),
                })
                .collect(),
            edges: stats
                .edges
                .into_iter()
                .map(|edge| EdgeStats {
                    callee: edge.callee,
                    stats: edge.stats.map(Into::into).unwrap_or_default(),
                })
                .collect(),
        }
    }
}

impl From<pb::GetTopologyResponse> for Topology {
    fn from(topology: pb::GetTopologyResponse) -> Self {
        Topology {
            since_unix_nanos: topology.since_unix_nanos,
            until_unix_nanos: topology.until_unix_nanos,
            nodes: topology
                .nodes
                .into_iter()
                .map(|node| TopologyNode {
                    service: node.service,
                    traced: node.traced,
                    stats: node.stats.map(Into::into).unwrap_or_default(),
                })
                .collect(),
            edges: topology
                .edges
                .into_iter()
                .map(|edge| TopologyEdge {
                    caller: edge.caller,
                    callee: edge.callee,
                    call_rate_per_second: edge.call_rate_per_second,
                    error_rate: edge.error_rate,
                    caller_side: edge.caller_side.map(Into::into).unwrap_or_default(),
                    callee_side: edge.callee_side.map(Into::into),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
