use super::*;
use crate::model::Severity;
use crate::store::window::sub_bucket;

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SECOND;
const WINDOW: u64 = 10 * SECOND;

fn anomaly(kind: AnomalyKind, measure: &str, baseline: f64) -> Anomaly {
    Anomaly {
        kind,
        severity: Severity::Warning,
        severe: false,
        measure: measure.to_owned(),
        current: 0.0,
        baseline,
        unit: String::new(),
        summary: String::new(),
        time_to_limit_secs: None,
    }
}

/// A sub-window of `requests` requests, `errors` failed, all taking
/// `millis`.
fn sub(requests: u32, errors: u32, millis: f64) -> SubWindow {
    let mut sub = SubWindow {
        requests,
        errors,
        ..SubWindow::default()
    };
    sub.latency[sub_bucket((millis * 1000.0) as u64)] = requests as u16;
    sub
}

/// Sub-windows: `before` until second `fault_secs`, `after` from then on.
fn split(fault_secs: u64, before: SubWindow, after: SubWindow) -> SubWindows {
    std::array::from_fn(|index| {
        if (index as u64) * 2 >= fault_secs {
            after
        } else {
            before
        }
    })
}

fn onset(anomalies: &[Anomaly], subs: &SubWindows) -> u64 {
    refine(
        &DetectConfig::default(),
        anomalies,
        Some(subs),
        None,
        START,
        WINDOW,
    )
}

/// The onset when the window before had `previous`.
fn onset_after(anomalies: &[Anomaly], previous: &SubWindows, subs: &SubWindows) -> u64 {
    refine(
        &DetectConfig::default(),
        anomalies,
        Some(subs),
        Some(previous),
        START,
        WINDOW,
    )
}

#[test]
fn latency_from_second_six_is_placed_at_second_six() {
    // 40 ms before, 300 ms from second 6; baseline p95 60 ms.
    let subs = split(6, sub(40, 0, 40.0), sub(40, 0, 300.0));
    let found = onset(&[anomaly(AnomalyKind::Latency, "p95", 60.0)], &subs);
    assert_eq!(found, START + 6 * SECOND);
}

#[test]
fn latency_is_placed_when_normal_requests_share_the_baseline_bucket() {
    // Every normal request takes about the baseline p95 (a narrow
    // distribution): they fill the log2 bucket the baseline lies in, and
    // must not count as slow.
    let subs = split(6, sub(40, 0, 44.0), sub(40, 0, 120.0));
    let found = onset(&[anomaly(AnomalyKind::Latency, "p95", 44.0)], &subs);
    assert_eq!(found, START + 6 * SECOND);
}

#[test]
fn errors_from_second_six_are_placed_at_second_six() {
    let subs = split(6, sub(50, 0, 40.0), sub(50, 12, 40.0));
    let found = onset(&[anomaly(AnomalyKind::ErrorRate, "error rate", 0.2)], &subs);
    assert_eq!(found, START + 6 * SECOND);
}

#[test]
fn a_traffic_drop_from_second_four_is_placed_at_second_four() {
    // 10 requests/s baseline, nothing from second 4 on.
    let subs = split(4, sub(20, 0, 40.0), sub(0, 0, 40.0));
    let found = onset(
        &[anomaly(AnomalyKind::TrafficDrop, "requests/s", 10.0)],
        &subs,
    );
    assert_eq!(found, START + 4 * SECOND);
}

#[test]
fn an_anomaly_from_the_window_start_stays_there() {
    let subs = split(0, sub(50, 0, 40.0), sub(50, 12, 40.0));
    let found = onset(&[anomaly(AnomalyKind::ErrorRate, "error rate", 0.2)], &subs);
    assert_eq!(found, START);
}

#[test]
fn too_few_requests_fall_back_to_the_window_start() {
    // Two requests per sub-window: ten in the window, too few to place a
    // latency change (the detector itself needs 20).
    let subs = split(6, sub(2, 0, 40.0), sub(2, 0, 300.0));
    let found = onset(&[anomaly(AnomalyKind::Latency, "p95", 60.0)], &subs);
    assert_eq!(found, START);
    assert_eq!(
        refine(
            &DetectConfig::default(),
            &[anomaly(AnomalyKind::Latency, "p95", 60.0)],
            None,
            None,
            START,
            WINDOW
        ),
        START,
        "no sub-windows, no refinement"
    );
}

#[test]
fn one_noisy_sub_window_does_not_move_the_onset_earlier() {
    // A sub-window at second 0 with 2 errors of 50 (noise at a 0.2%
    // baseline, but not impossible), then the real fault from second 6.
    let mut subs = split(6, sub(50, 0, 40.0), sub(50, 15, 40.0));
    subs[0].errors = 2;
    let found = onset(&[anomaly(AnomalyKind::ErrorRate, "error rate", 0.2)], &subs);
    assert_eq!(found, START + 6 * SECOND);
}

#[test]
fn the_earliest_onset_of_several_anomalies_counts() {
    let mut subs = split(6, sub(50, 0, 40.0), sub(50, 0, 300.0));
    // Errors from second 2.
    for sub in subs.iter_mut().skip(1) {
        sub.errors = 15;
    }
    let found = onset(
        &[
            anomaly(AnomalyKind::Latency, "p95", 60.0),
            anomaly(AnomalyKind::ErrorRate, "error rate", 0.2),
        ],
        &subs,
    );
    assert_eq!(found, START + 2 * SECOND);
}

#[test]
fn metric_anomalies_keep_the_window_start() {
    let subs = split(6, sub(50, 0, 40.0), sub(50, 15, 300.0));
    let found = onset(
        &[anomaly(
            AnomalyKind::LevelShift,
            "process.memory.usage",
            1e6,
        )],
        &subs,
    );
    assert_eq!(found, START);
}

#[test]
fn slower_than_interpolates_inside_the_threshold_bucket() {
    // 100 requests at 40 ms: bucket [32, 64) ms. Above 32 ms: all; above
    // 64 ms: none; above 45.25 ms (the log middle): about half.
    let sub = sub(100, 0, 40.0);
    assert_eq!(slower_than(&sub, 32_000.0), 100.0);
    assert_eq!(slower_than(&sub, 64_000.0), 0.0);
    let half = slower_than(&sub, 32_000.0 * std::f64::consts::SQRT_2);
    assert!((half - 50.0).abs() < 0.01, "{half}");
}

#[test]
fn a_fault_late_in_the_window_before_is_placed_there() {
    // Errors from second 6 of the window before (too little of it for that
    // window to be judged anomalous), and all through this one.
    let errors = anomaly(AnomalyKind::ErrorRate, "error rate", 0.2);
    let previous = split(6, sub(10, 0, 40.0), sub(10, 4, 40.0));
    let subs = split(0, sub(10, 4, 40.0), sub(10, 4, 40.0));
    assert_eq!(
        onset_after(std::slice::from_ref(&errors), &previous, &subs),
        START - 4 * SECOND
    );
    // A normal window before leaves the onset at the window start.
    let normal = split(0, sub(10, 0, 40.0), sub(10, 0, 40.0));
    assert_eq!(
        onset_after(std::slice::from_ref(&errors), &normal, &subs),
        START
    );
    // And one error in it (noise) does not pull the onset back either.
    let mut noisy = normal;
    noisy[4].errors = 1;
    assert_eq!(onset_after(&[errors], &noisy, &subs), START);
}
