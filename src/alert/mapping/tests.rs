use serde_json::json;

use super::*;
use crate::alert::test_support::incident;
use crate::model::{
    BlastRadius, CorrelatedChange, Evidence, Hypothesis, HypothesisKind, RootCause,
};

fn mapping() -> Mapping {
    Mapping::new(
        BTreeMap::from([
            ("cluster".to_owned(), "prod-eu".to_owned()),
            ("environment".to_owned(), "production".to_owned()),
        ]),
        Some("https://runbooks.example/{alertname}?service={service}&op={operation}".to_owned()),
        "https://triage.example/",
    )
}

fn labels_of(incident: &Incident) -> Vec<(String, String)> {
    mapping().labels(incident).into_iter().collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn labels_of_a_single_service_incident() {
    assert_eq!(
        labels_of(&incident()),
        pairs(&[
            ("alertname", "ErrorRateAnomaly"),
            ("cluster", "prod-eu"),
            ("environment", "production"),
            ("incident_id", "payment@1733011390"),
            // The most severe anomaly's operation, not the first by name.
            ("operation", "POST /pay"),
            ("role", "origin"),
            ("root_cause_service", "payment"),
            ("service", "payment"),
            ("severity", "critical"),
        ])
    );
}

#[test]
fn a_symptom_names_its_root_cause() {
    let mut symptom = incident();
    symptom.service = "checkout".into();
    symptom.root_causes = vec![RootCause {
        service: "payment".into(),
        operation: None,
        score: 0.9,
        reason: "own time x6".into(),
    }];
    let labels = mapping().labels(&symptom);
    assert_eq!(labels["root_cause_service"], "payment");
    assert_eq!(labels["role"], "symptom");
    assert_eq!(labels["service"], "checkout");
}

#[test]
fn alertname_by_kind_in_order_of_importance() {
    let name = |kinds: serde_json::Value, services: &[&str]| {
        let mut incident = incident();
        incident.kinds = serde_json::from_value(kinds).expect("kinds");
        incident.services = services.iter().map(|s| s.to_string()).collect();
        alertname(&incident)
    };
    let one = &["payment"];
    assert_eq!(
        name(json!(["latency", "error_rate"]), one),
        "ErrorRateAnomaly"
    );
    assert_eq!(name(json!(["latency", "traffic_drop"]), one), "TrafficDrop");
    assert_eq!(
        name(json!(["saturation", "latency"]), one),
        "LatencyAnomaly"
    );
    assert_eq!(name(json!(["error_logs", "saturation"]), one), "Saturation");
    assert_eq!(
        name(json!(["traffic_spike", "error_logs"]), one),
        "ErrorLogs"
    );
    assert_eq!(
        name(json!(["level_shift", "traffic_spike"]), one),
        "TrafficSpike"
    );
    assert_eq!(name(json!(["trend"]), one), "MetricAnomaly");
    assert_eq!(name(json!(["level_shift"]), one), "MetricAnomaly");
    assert_eq!(name(json!([]), one), "Anomaly");
    assert_eq!(
        name(json!(["error_rate"]), &["payment", "checkout"]),
        "Cascade"
    );
}

#[test]
fn without_analysis_the_description_lists_the_anomalies() {
    let incident = incident();
    let annotations = mapping().annotations(&incident, &mapping().labels(&incident));
    assert_eq!(annotations["summary"], incident.summary);
    assert_eq!(
        annotations["description"],
        "- operation POST /pay: error rate 41% vs 1% baseline, 480 requests\n\
         - operation GET /status: p95 840 ms vs 95 ms baseline, 312 requests"
    );
    assert_eq!(
        annotations["exemplar_trace_ids"],
        "0000000000000000000000000000abcd, 00000000000000000000000000001234"
    );
    assert!(
        annotations["suggested_action"].contains("payment's errors"),
        "{}",
        annotations["suggested_action"]
    );
    assert_eq!(
        annotations["runbook_url"],
        "https://runbooks.example/ErrorRateAnomaly?service=payment&op=POST%20%2Fpay"
    );
    // Nothing to say: no empty annotations.
    assert!(!annotations.contains_key("changes"));
    assert!(!annotations.contains_key("blast_radius"));
    assert!(
        !annotations.contains_key("exemplar_traces"),
        "no trace_url configured"
    );
}

#[test]
fn exemplar_traces_are_links_when_the_analysis_made_them() {
    let mut incident = incident();
    incident.exemplar_trace_urls = crate::model::trace_links(
        "http://jaeger:16686/trace/{trace_id}",
        &incident.exemplar_trace_ids,
    );
    let annotations = mapping().annotations(&incident, &mapping().labels(&incident));
    assert_eq!(
        annotations["exemplar_traces"],
        "http://jaeger:16686/trace/0000000000000000000000000000abcd \
         http://jaeger:16686/trace/00000000000000000000000000001234"
    );
}

#[test]
fn with_analysis_the_annotations_carry_hypotheses_changes_and_blast_radius() {
    let mut incident = incident();
    incident.hypotheses = vec![
        Hypothesis {
            kind: HypothesisKind::Change,
            subject: "deploy 7".into(),
            score: 0.82,
            summary: "payment v1.4.2 broke POST /pay".into(),
            evidence_for: vec![Evidence {
                text: "errors began 40 s after the rollout".into(),
                trace_ids: vec![],
            }],
            evidence_against: vec![Evidence {
                text: "v1.4.2 pods are 50% of traffic but 98% of errors".into(),
                trace_ids: vec![],
            }],
            suggested_action: "Roll payment back to v1.4.1.".into(),
        },
        Hypothesis {
            kind: HypothesisKind::Origin,
            subject: "payment".into(),
            score: 0.31,
            summary: "payment's database is failing".into(),
            evidence_for: vec![],
            evidence_against: vec![],
            suggested_action: "Check the database.".into(),
        },
    ];
    incident.changes = vec![CorrelatedChange {
        id: 7,
        external_id: None,
        service: "payment".into(),
        kind: "deploy".into(),
        subject: Some("v1.4.2".into()),
        description: "rolled out by CI".into(),
        time_unix_nanos: 1_733_011_350_000_000_000,
        time: "2024-12-01T00:02:30Z".into(),
        before_onset_secs: 40.0,
        score: 0.9,
        reason: "same service, just before".into(),
    }];
    incident.blast_radius = Some(BlastRadius {
        total_requests: 1000,
        affected_requests: 412,
        affected_share: 0.412,
        services: vec!["payment".into(), "checkout".into()],
        operations: vec![],
        entry_points: vec!["frontend".into()],
        attributes: vec![],
    });
    let annotations = mapping().annotations(&incident, &mapping().labels(&incident));
    assert_eq!(
        annotations["description"],
        "1. payment v1.4.2 broke POST /pay (score 0.82)\n   \
         for: errors began 40 s after the rollout\n   \
         against: v1.4.2 pods are 50% of traffic but 98% of errors\n\
         2. payment's database is failing (score 0.31)"
    );
    assert_eq!(
        annotations["suggested_action"],
        "Roll payment back to v1.4.1."
    );
    assert_eq!(
        annotations["changes"],
        "- deploy payment v1.4.2: rolled out by CI at 2024-12-01T00:02:30Z, \
         40 s before onset (score 0.90: same service, just before)"
    );
    assert_eq!(
        annotations["blast_radius"],
        "41.2% of requests affected (412 of 1000); services: payment, checkout; \
         entry points: frontend"
    );
}

#[test]
fn long_annotations_are_cut_at_a_character_boundary() {
    let mut incident = incident();
    incident.summary = "é".repeat(5000);
    let annotations = mapping().annotations(&incident, &BTreeMap::new());
    let summary = &annotations["summary"];
    assert!(summary.len() <= MAX_ANNOTATION, "{}", summary.len());
    assert!(summary.ends_with(" [cut]"));
}

#[test]
fn the_generator_url_points_at_the_incident() {
    assert_eq!(
        mapping().generator_url("payment@1733011390"),
        "https://triage.example/api/v1/incidents/payment@1733011390"
    );
    assert_eq!(
        mapping().generator_url("svc a/b@1"),
        "https://triage.example/api/v1/incidents/svc%20a%2Fb@1"
    );
}

#[test]
fn an_edge_is_named_with_its_caller() {
    let operation = |service: &str, series: &str| {
        let mut incident = incident();
        incident.service = service.to_owned();
        incident.anomalies.truncate(1);
        incident.anomalies[0].series_kind = "edge".to_owned();
        incident.anomalies[0].series = series.to_owned();
        first_operation(&incident)
    };
    assert_eq!(
        operation("checkout", "payment").as_deref(),
        Some("checkout -> payment")
    );
    // In a cascade named after inventory, an edge of checkout's.
    assert_eq!(
        operation("inventory", "checkout: payment").as_deref(),
        Some("checkout -> payment")
    );
}
