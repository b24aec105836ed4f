//! A small, fast version of the detection evaluation (`triage eval`): a few
//! simulated faults at a low rate, through the real recording and detection.
//! The full suite and its figures are in docs/EVALUATION.md.

use std::time::Duration;

use triage::detect::DetectConfig;
use triage::store::StoreConfig;
use triage::tools::eval::{run_scenario, Outcome};
use triage::tools::sim::{parse_fault, Fault, Scenario};

const MINUTE: Duration = Duration::from_secs(60);

/// 15 minutes at 6 entry requests/s, the fault (if any) from minute 11.
fn scenario(fault: Option<&str>) -> Scenario {
    scenario_from(fault, 11 * MINUTE)
}

/// 15 minutes at 6 entry requests/s, the fault (if any) from `start`.
fn scenario_from(fault: Option<&str>, start: Duration) -> Scenario {
    Scenario {
        duration: 15 * MINUTE,
        entry_rate_per_sec: 6.0,
        faults: fault
            .map(|spec| Fault {
                kind: parse_fault(spec).expect("valid fault spec"),
                start,
                duration: None,
            })
            .into_iter()
            .collect(),
        ..Scenario::default()
    }
}

fn run(name: &str, fault: Option<&str>) -> Outcome {
    run_scenario(
        name,
        scenario(fault),
        &DetectConfig::default(),
        &StoreConfig::default(),
    )
}

#[test]
fn errors_on_a_service_are_detected_within_a_minute() {
    let outcome = run("errors", Some("errors:cart"));
    assert!(outcome.detected, "{outcome:#?}");
    assert!(
        outcome.time_to_detect_secs.expect("detected") <= 60.0,
        "{outcome:#?}"
    );
}

#[test]
fn a_service_going_down_is_detected_within_a_minute() {
    let outcome = run("down", Some("down:inventory"));
    assert!(outcome.detected, "{outcome:#?}");
    assert!(
        outcome.time_to_detect_secs.expect("detected") <= 60.0,
        "{outcome:#?}"
    );
}

#[test]
fn latency_on_a_service_is_detected_within_a_minute() {
    let outcome = run("latency", Some("latency:payment"));
    assert!(outcome.detected, "{outcome:#?}");
    assert!(
        outcome.time_to_detect_secs.expect("detected") <= 60.0,
        "{outcome:#?}"
    );
}

#[test]
fn a_fault_from_second_six_of_a_window_has_its_onset_within_a_sub_window() {
    // Minute 11 and 6 s: the middle of a 10 s window, so the window start
    // alone would be 6 s early.
    for spec in ["errors:cart", "down:inventory"] {
        let outcome = run_scenario(
            spec,
            scenario_from(Some(spec), 11 * MINUTE + Duration::from_secs(6)),
            &DetectConfig::default(),
            &StoreConfig::default(),
        );
        assert!(outcome.detected, "{outcome:#?}");
        let error = outcome.onset_error_secs.expect("detected");
        assert!(
            error.abs() <= 2.0,
            "onset {error} s from the fault: {outcome:#?}"
        );
    }
}

#[test]
fn healthy_traffic_opens_no_incident() {
    let outcome = run("healthy", None);
    assert!(
        outcome.false_incidents.is_empty(),
        "{:#?}",
        outcome.false_incidents
    );
}

/// One root-cause scenario through recording, detection and analysis.
fn run_rca(name: &str) -> triage::tools::eval::RcaOutcome {
    let scenario = triage::tools::sim::find_scenario(name).expect("a built-in scenario");
    triage::tools::eval::run_rca_scenario(
        name,
        scenario,
        &DetectConfig::default(),
        &StoreConfig::default(),
    )
}

#[test]
fn a_slow_leaf_is_ranked_first_above_the_callers_that_inherit_it() {
    let outcome = run_rca("rca-cascade-slow");
    let fault = &outcome.faults[0];
    assert!(fault.incident.is_some(), "{outcome:#?}");
    assert_eq!(fault.origin_rank, Some(1), "{outcome:#?}");
    assert!(outcome.false_incidents.is_empty(), "{outcome:#?}");
}

#[test]
fn a_failing_leaf_three_levels_down_is_ranked_first() {
    let outcome = run_rca("rca-cascade-errors");
    assert_eq!(outcome.faults[0].origin_rank, Some(1), "{outcome:#?}");
}

#[test]
fn a_down_leaf_is_ranked_first() {
    let outcome = run_rca("rca-cascade-down");
    assert_eq!(outcome.faults[0].origin_rank, Some(1), "{outcome:#?}");
}

#[test]
fn a_canary_is_found_by_its_version_and_its_deploy_is_named_first() {
    let outcome = run_rca("rca-canary");
    let fault = &outcome.faults[0];
    assert_eq!(fault.origin_rank, Some(1), "{outcome:#?}");
    assert_eq!(fault.change_first, Some(true), "{outcome:#?}");
    assert_eq!(fault.scope_first, Some(true), "{outcome:#?}");
    assert_eq!(fault.pattern_named, Some(true), "{outcome:#?}");
}

#[test]
fn a_flag_flip_is_found_by_its_variant_and_the_flip_is_named_first() {
    let outcome = run_rca("rca-flag-flip");
    let fault = &outcome.faults[0];
    assert_eq!(fault.origin_rank, Some(1), "{outcome:#?}");
    assert_eq!(fault.change_first, Some(true), "{outcome:#?}");
    assert_eq!(fault.scope_first, Some(true), "{outcome:#?}");
}

#[test]
fn two_simultaneous_faults_are_two_incidents_each_with_its_origin_first() {
    let outcome = run_rca("rca-two-faults");
    assert_eq!(outcome.separate, Some(true), "{outcome:#?}");
    for fault in &outcome.faults {
        assert_eq!(fault.origin_rank, Some(1), "{outcome:#?}");
    }
}
