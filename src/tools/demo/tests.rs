use std::time::Duration;

use serde_json::json;

use super::*;

fn args(healthy: &str, duration: &str) -> DemoArgs {
    DemoArgs {
        fault: DEFAULT_FAULT.to_owned(),
        healthy: healthy.to_owned(),
        fault_for: None,
        duration: duration.to_owned(),
        rate: 200.0,
        seed: 1,
        json: false,
        any_ports: false,
        log_level: "error".to_owned(),
    }
}

fn error_text(args: &DemoArgs) -> String {
    match args.plan() {
        Ok(plan) => panic!("expected an error, got {plan:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn default_plan_leaves_a_healthy_tail_to_resolve_in() {
    let plan = args("30s", "100s").plan().expect("defaults are valid");
    assert_eq!(plan.healthy, Duration::from_secs(30));
    // 100 s - 30 s healthy - 30 s recovery.
    assert_eq!(plan.fault_for, Some(Duration::from_secs(40)));
    let scenario = plan.scenario(7_000_000_000);
    assert_eq!(scenario.start_unix_nanos, 7_000_000_000);
    assert_eq!(scenario.faults.len(), 1);
    assert_eq!(scenario.faults[0].start, Duration::from_secs(30));
    assert!(!scenario.benign_deploys && !scenario.daily_shape);
}

#[test]
fn short_plan_keeps_the_fault_to_the_end() {
    let plan = args("24s", "45s").plan().expect("valid");
    assert_eq!(plan.fault_for, None);
}

#[test]
fn bad_arguments_name_the_flag_and_a_fix() {
    assert!(error_text(&args("5s", "100s")).contains("--healthy 5s"));
    assert!(error_text(&args("30s", "35s")).contains("--duration 42s or more"));
    assert!(error_text(&args("30s", "2h")).contains("--duration 2h"));
    let mut bad_fault = args("30s", "100s");
    bad_fault.fault = "errors:nosuchservice".to_owned();
    assert!(error_text(&bad_fault).contains("nosuchservice"));
    let mut short_fault = args("30s", "100s");
    short_fault.fault_for = Some("3s".to_owned());
    assert!(error_text(&short_fault).contains("--fault-for 3s"));
    let mut bad_rate = args("30s", "100s");
    bad_rate.rate = f64::NAN;
    assert!(error_text(&bad_rate).contains("--rate"));
}

#[test]
fn settings_stay_on_loopback_and_off_disk() {
    let settings = demo_settings(false);
    for address in [
        settings.grpc.endpoint,
        settings.http.endpoint,
        settings.admin.endpoint,
        settings.api.endpoint,
    ] {
        assert!(address.ip().is_loopback(), "{address}");
    }
    assert!(!settings.storage.enabled);
    let any = demo_settings(true);
    assert_eq!(any.grpc.endpoint.port(), 0);
    assert_eq!(any.admin.endpoint.port(), 0);
    assert!(any.api.endpoint.ip().is_loopback());
    assert_eq!(settings.store.window, WINDOW);
    assert!(MIN_HEALTHY >= WINDOW * WARMUP_WINDOWS as u32);
}

#[test]
fn marks_are_in_time_order_with_the_posted_change() {
    let plan = args("30s", "100s").plan().expect("valid");
    let start = 1_000 * 1_000_000_000;
    let simulator = Simulator::new(plan.scenario(start));
    let marks = marks(&plan, simulator.changes(), start);
    assert!(marks.windows(2).all(|pair| pair[0].at <= pair[1].at));
    let deploy = marks
        .iter()
        .find(|mark| mark.change.is_some())
        .expect("a bad deploy posts its change");
    assert!(deploy.text.contains("deploy payment"), "{}", deploy.text);
    assert_eq!(deploy.at, Duration::from_secs(30));
    assert!(marks.iter().any(|mark| mark.text.starts_with("fault over")));
}

fn incident(state: &str, with_analysis: bool) -> Incident {
    let mut value = json!({
        "id": "payment@1736154030",
        "state": state,
        "service": "payment",
        "operations": ["oteldemo.PaymentService/Charge"],
        "kinds": ["latency", "error_rate"],
        "severity": "critical",
        "onset_unix_nanos": 1_736_154_030_000_000_000u64,
        "onset": "2025-01-06T09:00:30Z",
        "opened_unix_nanos": 1_736_154_036_000_000_000u64,
        "resolved_unix_nanos": null,
        "resolved": null,
        "anomalies": [],
        "exemplar_trace_ids": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "summary": "payment: p95 x3.1, errors 8%",
        "services": ["payment", "checkout"],
    });
    if state == "resolved" {
        value["resolved_unix_nanos"] = json!(1_736_154_090_000_000_000u64);
    }
    if with_analysis {
        value["root_causes"] = json!([
            {"service": "payment", "score": 0.9, "reason": "own time p95 x3"}
        ]);
        value["hypotheses"] = json!([{
            "kind": "change",
            "subject": "payment",
            "score": 0.8,
            "summary": "payment 1.4.3 is slower",
            "evidence_for": [{"text": "onset 4s after the rollout"}],
            "evidence_against": [],
            "suggested_action": "roll back payment to 1.4.2"
        }]);
        value["blast_radius"] = json!({
            "total_requests": 1000,
            "affected_requests": 120,
            "affected_share": 0.12,
            "services": ["payment", "checkout"],
            "operations": [],
            "entry_points": ["frontend"],
            "attributes": [],
        });
    }
    serde_json::from_value(value).expect("a valid incident")
}

#[test]
fn opened_incident_prints_its_analysis_once() {
    let mut printer = Printer::default();
    let opened = printer.lines(
        &IncidentEvent::Opened(incident("open", true)),
        Duration::from_secs(38),
    );
    assert_eq!(
        opened[0],
        "[ 38s] incident opened: payment@1736154030 [critical] services: payment, checkout"
    );
    let text = opened.join("\n");
    for expected in [
        "anomalies: latency, error_rate on oteldemo.PaymentService/Charge",
        "1. payment (score 0.90): own time p95 x3",
        "1. [change] payment 1.4.3 is slower (score 0.80)",
        "for: onset 4s after the rollout",
        "action: roll back payment to 1.4.2",
        "blast radius: 12.0% of requests (120 of 1000); entry points: frontend",
        "exemplar traces: 4bf92f3577b34da6a3ce929d0e0e4736",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // New numbers, same severity and analysis: nothing to print.
    let mut moved = incident("open", true);
    moved.summary = "payment: p95 x3.4, errors 9%".to_owned();
    let updated = printer.lines(&IncidentEvent::Updated(moved), Duration::from_secs(40));
    assert!(updated.is_empty(), "{updated:?}");

    // Swinging down to warning is not news either.
    let mut milder = incident("open", true);
    milder.severity = Severity::Warning;
    let updated = printer.lines(
        &IncidentEvent::Updated(milder.clone()),
        Duration::from_secs(41),
    );
    assert!(updated.is_empty(), "{updated:?}");

    // A new hypothesis: the analysis is printed again, not the anomalies.
    let mut changed = milder;
    changed.hypotheses[0].suggested_action = "turn the flag off".to_owned();
    let updated = printer.lines(&IncidentEvent::Updated(changed), Duration::from_secs(42));
    let text = updated.join("\n");
    assert!(text.contains("action: turn the flag off"), "{text}");
    assert!(!text.contains("exemplar traces"), "{text}");

    let resolved = printer.lines(
        &IncidentEvent::Resolved(incident("resolved", true)),
        Duration::from_secs(95),
    );
    assert!(resolved[0].contains("incident resolved: payment@1736154030"));
    assert!(resolved[1].contains("lasted 60s"), "{resolved:?}");
}

#[test]
fn escalation_is_printed_without_repeating_the_analysis() {
    let mut printer = Printer::default();
    let mut warning = incident("open", true);
    warning.severity = Severity::Warning;
    printer.lines(&IncidentEvent::Opened(warning), Duration::from_secs(36));
    let updated = printer.lines(
        &IncidentEvent::Updated(incident("open", true)),
        Duration::from_secs(38),
    );
    assert!(
        updated[0].contains("incident updated: payment@1736154030 [critical]"),
        "{updated:?}"
    );
    assert_eq!(updated.len(), 2, "headline and summary only: {updated:?}");
}

#[test]
fn incident_without_analysis_prints_what_it_has() {
    let mut printer = Printer::default();
    let mut bare = incident("open", false);
    bare.services.clear();
    let lines = printer.lines(&IncidentEvent::Opened(bare), Duration::from_secs(5));
    assert!(lines[0].ends_with("services: payment"), "{lines:?}");
    let text = lines.join("\n");
    assert!(!text.contains("hypotheses") && !text.contains("root causes"));
}
