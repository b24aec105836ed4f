use super::*;
use crate::model::AnomalyKind;
use crate::model::{HypothesisKind, PatternKind};

/// An incident with every field filled, so a round trip checks them all.
pub(crate) fn full_incident() -> Incident {
    Incident {
        id: "payment@1733011390".into(),
        state: IncidentState::Resolved,
        service: "payment".into(),
        operations: vec!["Charge".into(), "-> postgres".into()],
        kinds: vec![AnomalyKind::Latency, AnomalyKind::ErrorRate],
        severity: Severity::Critical,
        onset_unix_nanos: 1_733_011_390_000_000_000,
        onset: rfc3339(1_733_011_390_000_000_000),
        opened_unix_nanos: 1_733_011_400_000_000_000,
        resolved_unix_nanos: Some(1_733_011_500_000_000_000),
        resolved: Some(rfc3339(1_733_011_500_000_000_000)),
        anomalies: vec![SeriesAnomaly {
            series_kind: "operation".into(),
            series: "Charge".into(),
            anomaly: Anomaly {
                kind: AnomalyKind::Latency,
                severity: Severity::Critical,
                severe: true,
                measure: "p95".into(),
                current: 840.0,
                baseline: 95.0,
                unit: "ms".into(),
                summary: "p95 840 ms vs 95 ms baseline".into(),
                time_to_limit_secs: Some(12.5),
            },
        }],
        exemplar_trace_ids: vec!["0af7651916cd43dd8448eb211c80319c".into()],
        exemplar_trace_urls: vec![
            "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c".into()
        ],
        summary: "payment Charge: p95 840 ms".into(),
        services: vec!["payment".into(), "checkout".into()],
        root_causes: vec![RootCause {
            service: "payment".into(),
            operation: Some("Charge".into()),
            score: 0.9,
            reason: "own time x6".into(),
        }],
        patterns: vec![Pattern {
            kind: PatternKind::PoolWait,
            subject: "payment".into(),
            detail: "pool 100% used".into(),
        }],
        changes: vec![CorrelatedChange {
            id: 3,
            external_id: None,
            service: "payment".into(),
            kind: "deploy".into(),
            subject: Some("v1.4.2".into()),
            description: "payment v1.4.2".into(),
            time_unix_nanos: 1_733_011_350_000_000_000,
            time: rfc3339(1_733_011_350_000_000_000),
            before_onset_secs: 40.0,
            score: 0.8,
            reason: "40 s before".into(),
        }],
        blast_radius: Some(BlastRadius {
            total_requests: 1000,
            affected_requests: 300,
            affected_share: 0.3,
            services: vec!["payment".into()],
            operations: vec!["payment Charge".into()],
            entry_points: vec!["frontend".into()],
            attributes: vec![AttributeLift {
                key: "cloud.region".into(),
                value: "eu-west-1".into(),
                bad_share: 0.9,
                baseline_share: 0.3,
                lift: 3.0,
                bad_spans: 270,
            }],
        }),
        hypotheses: vec![Hypothesis {
            kind: HypothesisKind::Change,
            subject: "3".into(),
            score: 0.8,
            summary: "the v1.4.2 deploy".into(),
            evidence_for: vec![Evidence {
                text: "latency rose 40 s after".into(),
                trace_ids: vec!["0af7651916cd43dd8448eb211c80319c".into()],
            }],
            evidence_against: vec![Evidence {
                text: "errors unchanged".into(),
                trace_ids: Vec::new(),
            }],
            suggested_action: "roll back payment to v1.4.1".into(),
        }],
    }
}

#[test]
fn incidents_round_trip_through_protobuf() {
    let incident = full_incident();
    let wire = pb::Incident::from(&incident);
    assert_eq!(wire.kinds, ["latency", "error_rate"]);
    assert_eq!(wire.state, pb::IncidentState::Resolved as i32);
    assert_eq!(wire.patterns[0].kind, "pool_wait");
    assert_eq!(wire.hypotheses[0].kind, "change");
    assert_eq!(Incident::try_from(wire).expect("converts back"), incident);

    let mut open = full_incident();
    open.state = IncidentState::Open;
    open.resolved = None;
    open.resolved_unix_nanos = None;
    open.blast_radius = None;
    let wire = pb::Incident::from(&open);
    assert_eq!(wire.resolved, "");
    assert_eq!(Incident::try_from(wire).expect("converts back"), open);
}

#[test]
fn events_and_changes_round_trip() {
    let record = EventRecord {
        seq: 42,
        event: EventName::Updated,
        at_unix_nanos: 1_733_011_410_000_000_000,
        at: rfc3339(1_733_011_410_000_000_000),
        incident: full_incident(),
    };
    let wire = pb::IncidentEvent::from(&record);
    assert_eq!(wire.kind, pb::EventKind::Updated as i32);
    assert_eq!(EventRecord::try_from(wire).expect("converts"), record);

    let change = Change {
        id: 7,
        service: "cart".into(),
        kind: ChangeKind::FeatureFlag,
        version: None,
        key: Some("new-checkout".into()),
        value: Some("on".into()),
        description: "flag on".into(),
        time_unix_nanos: 5_000_000_000,
        link: Some("https://ci.example/run/1".into()),
        external_id: None,
        source: ChangeSource::Api,
    };
    let wire = pb::Change::from(&change);
    assert_eq!(
        (wire.kind.as_str(), wire.source.as_str()),
        ("feature_flag", "api")
    );
    assert_eq!(wire.time, "1970-01-01T00:00:05Z");
    assert_eq!(Change::try_from(wire).expect("converts"), change);
}

#[test]
fn unknown_values_from_the_wire_are_errors_not_panics() {
    let mut wire = pb::Incident::from(&full_incident());
    wire.kinds.push("solar_flare".into());
    assert_eq!(
        Incident::try_from(wire),
        Err(ConvertError::Unknown {
            field: "incident.kinds",
            value: "solar_flare".into()
        })
    );
    let mut wire = pb::Incident::from(&full_incident());
    wire.severity = 99;
    assert!(Incident::try_from(wire).is_err());
    let mut wire = pb::Incident::from(&full_incident());
    wire.state = pb::IncidentState::Unspecified as i32;
    assert_eq!(
        Incident::try_from(wire),
        Err(ConvertError::Missing {
            field: "incident.state"
        })
    );
    let mut wire = pb::Incident::from(&full_incident());
    wire.anomalies[0].anomaly = None;
    assert!(Incident::try_from(wire).is_err());
    assert_eq!(state_from_proto(7).map_err(|_| ()), Err(()));
    assert_eq!(state_from_proto(0), Ok(None));
}

#[test]
fn view_types_round_trip() {
    let stats = view::ServiceStats {
        service: "checkout".into(),
        since_unix_nanos: 1,
        until_unix_nanos: 2,
        total: view::RedStats {
            requests: 10,
            errors: 1,
            error_rate: 0.1,
            rate_per_second: 1.0,
            p50_ms: Some(5.0),
            p95_ms: None,
            p99_ms: Some(9.0),
            max_ms: Some(10.0),
            from_unix_nanos: 3,
            to_unix_nanos: 4,
        },
        operations: vec![view::OperationStats {
            operation: "GET /".into(),
            stats: view::RedStats::default(),
        }],
        edges: vec![view::EdgeStats {
            callee: "payment".into(),
            stats: view::RedStats::default(),
        }],
    };
    let wire = pb::GetServiceStatsResponse::from(&stats);
    assert_eq!(view::ServiceStats::from(wire), stats);

    let topology = view::Topology {
        since_unix_nanos: 0,
        until_unix_nanos: 9,
        nodes: vec![view::TopologyNode {
            service: "db".into(),
            traced: false,
            stats: view::RedStats::default(),
        }],
        edges: vec![view::TopologyEdge {
            caller: "a".into(),
            callee: "db".into(),
            call_rate_per_second: 2.0,
            error_rate: 0.5,
            caller_side: view::RedStats::default(),
            callee_side: None,
        }],
    };
    let wire = pb::GetTopologyResponse::from(&topology);
    assert_eq!(view::Topology::from(wire), topology);
}
