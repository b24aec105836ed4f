use super::*;
use crate::model::{Anomaly, AnomalyKind, Severity};

const WINDOW: u64 = 10_000_000_000;

fn anomaly(kind: AnomalyKind, severe: bool) -> Anomaly {
    Anomaly {
        kind,
        severity: if severe {
            Severity::Critical
        } else {
            Severity::Warning
        },
        severe,
        measure: "p95".to_string(),
        current: 840.0,
        baseline: 95.0,
        unit: "ms".to_string(),
        summary: "p95 840 ms vs 95 ms baseline, 312 requests".to_string(),
        time_to_limit_secs: None,
    }
}

fn result(service: &str, name: &str, anomalies: Vec<Anomaly>) -> SeriesResult {
    SeriesResult {
        key: SeriesKey::new(SeriesKind::Operation, service, name),
        anomalies,
        exemplars: vec![0xabc],
        onset_unix_nanos: None,
    }
}

/// Feeds one window and returns the event names with their incident ids.
fn step(
    tracker: &mut IncidentTracker,
    index: i64,
    results: Vec<SeriesResult>,
) -> Vec<(String, String)> {
    let start = index as u64 * WINDOW;
    tracker
        .window(index, start, start + WINDOW, results)
        .into_iter()
        .map(|event| {
            let name = match &event {
                IncidentEvent::Opened(_) => "opened",
                IncidentEvent::Updated(_) => "updated",
                IncidentEvent::Resolved(_) => "resolved",
            };
            (name.to_string(), event.incident().id.clone())
        })
        .collect()
}

#[test]
fn opens_after_two_windows_and_resolves_after_three_normal() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    let latency = || {
        vec![result(
            "pay",
            "POST /pay",
            vec![anomaly(AnomalyKind::Latency, false)],
        )]
    };
    let normal = || vec![result("pay", "POST /pay", vec![])];
    assert!(
        step(&mut tracker, 100, latency()).is_empty(),
        "one window is not enough"
    );
    let opened = step(&mut tracker, 101, latency());
    assert_eq!(
        opened,
        vec![("opened".to_string(), "pay@1000".to_string())],
        "onset is the first anomalous window"
    );
    assert!(
        step(&mut tracker, 102, latency()).is_empty(),
        "same anomaly: no update event"
    );
    assert!(step(&mut tracker, 103, normal()).is_empty());
    assert!(step(&mut tracker, 104, normal()).is_empty());
    let resolved = step(&mut tracker, 105, normal());
    assert_eq!(
        resolved,
        vec![("resolved".to_string(), "pay@1000".to_string())]
    );
    assert!(tracker.open_incidents().is_empty());
}

#[test]
fn a_single_blip_never_opens_and_a_severe_one_opens_at_once() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    assert!(step(
        &mut tracker,
        1,
        vec![result(
            "a",
            "op",
            vec![anomaly(AnomalyKind::Latency, false)]
        )]
    )
    .is_empty());
    assert!(step(&mut tracker, 2, vec![result("a", "op", vec![])]).is_empty());
    assert!(step(
        &mut tracker,
        3,
        vec![result(
            "a",
            "op",
            vec![anomaly(AnomalyKind::Latency, false)]
        )]
    )
    .is_empty());
    let severe = step(
        &mut tracker,
        10,
        vec![result(
            "b",
            "op",
            vec![anomaly(AnomalyKind::ErrorRate, true)],
        )],
    );
    assert_eq!(severe, vec![("opened".to_string(), "b@100".to_string())]);
}

#[test]
fn kinds_on_one_service_are_one_incident() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    let both = || {
        vec![
            result(
                "pay",
                "POST /pay",
                vec![anomaly(AnomalyKind::Latency, true)],
            ),
            result(
                "pay",
                "GET /status",
                vec![anomaly(AnomalyKind::ErrorRate, true)],
            ),
        ]
    };
    let events = tracker.window(7, 70 * WINDOW / 10 * 10, 80 * WINDOW, both());
    assert_eq!(events.len(), 1);
    let incident = events[0].incident();
    assert_eq!(
        incident.kinds,
        vec![AnomalyKind::Latency, AnomalyKind::ErrorRate]
    );
    assert_eq!(
        incident.operations,
        vec!["GET /status".to_string(), "POST /pay".to_string()]
    );
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.exemplar_trace_ids, vec![format!("{:032x}", 0xabc)]);
    assert!(incident.summary.starts_with("pay "), "{}", incident.summary);
    // A new kind on the same service updates the incident.
    let mut more = both();
    more.push(SeriesResult {
        key: SeriesKey::new(SeriesKind::Edge, "pay", "postgres"),
        anomalies: vec![anomaly(AnomalyKind::TrafficSpike, true)],
        exemplars: vec![],
        onset_unix_nanos: None,
    });
    let events = step(&mut tracker, 8, more);
    assert_eq!(events[0].0, "updated");
    // Another service is another incident.
    let other = step(
        &mut tracker,
        9,
        vec![result(
            "cart",
            "GET /cart",
            vec![anomaly(AnomalyKind::Latency, true)],
        )],
    );
    assert_eq!(other[0].0, "opened");
    assert_eq!(tracker.open_incidents().len(), 2);
}

#[test]
fn events_serialize_as_tagged_json() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    let events = tracker.window(
        1,
        WINDOW,
        2 * WINDOW,
        vec![result("a", "op", vec![anomaly(AnomalyKind::Latency, true)])],
    );
    let json = serde_json::to_value(&events[0]).expect("serializes");
    assert_eq!(json["event"], "opened");
    assert_eq!(json["incident"]["service"], "a");
    assert_eq!(json["incident"]["state"], "open");
    assert_eq!(json["incident"]["kinds"][0], "latency");
    assert_eq!(
        json["incident"]["anomalies"][0]["summary"],
        "p95 840 ms vs 95 ms baseline, 312 requests"
    );
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_764_510_330_000_000_000), "2025-11-30T13:45:30Z");
}

#[test]
fn snapshots_from_before_refined_onsets_still_restore() {
    // A track as saved before `run_onset_unix_nanos` existed.
    let json = r#"{"series":{"kind":"operation","service":"pay","name":"POST /pay"},
        "anomalous_run":1,"normal_run":0,"firing":false,"run_start_unix_nanos":1000000000000}"#;
    let track: TrackSnapshot = serde_json::from_str(json).expect("old snapshot reads");
    assert_eq!(track.run_onset_unix_nanos, None);
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    tracker.restore(
        TrackerSnapshot {
            tracks: vec![track],
            open: Vec::new(),
        },
        10_000_000_000,
    );
    // The run continues: the onset is its first window's start.
    let events = tracker.window(
        101,
        1_010_000_000_000,
        1_020_000_000_000,
        vec![result(
            "pay",
            "POST /pay",
            vec![anomaly(AnomalyKind::Latency, false)],
        )],
    );
    let opened = events.first().expect("opened on the second window");
    assert_eq!(opened.incident().onset_unix_nanos, 1_000_000_000_000);
    assert_eq!(opened.incident().id, "pay@1000");
}

#[test]
fn a_refined_onset_moves_the_onset_but_not_the_id() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    let window = WINDOW;
    let mut first = result(
        "pay",
        "POST /pay",
        vec![anomaly(AnomalyKind::Latency, false)],
    );
    first.onset_unix_nanos = Some(100 * window + 6_000_000_000);
    assert!(tracker
        .window(100, 100 * window, 101 * window, vec![first])
        .is_empty());
    // The second window's own onset does not matter: the run began earlier.
    let mut second = result(
        "pay",
        "POST /pay",
        vec![anomaly(AnomalyKind::Latency, false)],
    );
    second.onset_unix_nanos = Some(101 * window + 2_000_000_000);
    let events = tracker.window(101, 101 * window, 102 * window, vec![second]);
    let incident = events.first().expect("opened").incident();
    assert_eq!(incident.onset_unix_nanos, 100 * window + 6_000_000_000);
    assert_eq!(incident.id, "pay@1000");
    // Saved and restored, the run keeps its refined onset.
    let saved = tracker.snapshot(window);
    let track = &saved.tracks[0];
    assert_eq!(
        track.run_onset_unix_nanos,
        Some(100 * window + 6_000_000_000)
    );
}

#[test]
fn traffic_spikes_never_page_but_ride_along_as_context() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    let spike = |severe| anomaly(AnomalyKind::TrafficSpike, severe);
    // A long, severe burst on every operation of two services opens nothing.
    for index in 1..=10 {
        let events = step(
            &mut tracker,
            index,
            vec![
                result("shop", "GET /", vec![spike(true)]),
                result("shop", "GET /cart", vec![spike(false)]),
                result("cart", "GET /cart", vec![spike(true)]),
            ],
        );
        assert!(events.is_empty(), "window {index}: {events:?}");
    }
    assert!(tracker.open_incidents().is_empty());
    assert_eq!(tracker.traffic_spikes(), 30);

    // When latency follows, latency opens the incident; the spike of a
    // sibling series is kept on it as a warning, and a series' own latency
    // is not displaced by its spike.
    let both = || {
        vec![
            result(
                "shop",
                "GET /",
                vec![spike(true), anomaly(AnomalyKind::Latency, false)],
            ),
            result("shop", "GET /cart", vec![spike(true)]),
        ]
    };
    assert!(step(&mut tracker, 11, both()).is_empty());
    assert_eq!(
        step(&mut tracker, 12, both()).len(),
        1,
        "latency opens after two windows"
    );
    let incident = tracker.open_incidents()[0].clone();
    assert_eq!(
        incident.kinds,
        vec![AnomalyKind::Latency, AnomalyKind::TrafficSpike]
    );
    assert_eq!(
        incident.severity,
        Severity::Warning,
        "a spike never escalates"
    );
    let by_series: BTreeMap<&str, AnomalyKind> = incident
        .anomalies
        .iter()
        .map(|held| (held.series.as_str(), held.anomaly.kind))
        .collect();
    assert_eq!(by_series["GET /"], AnomalyKind::Latency);
    assert_eq!(by_series["GET /cart"], AnomalyKind::TrafficSpike);

    // The spike going on does not keep the incident open once latency is
    // back to normal.
    let spike_only = || vec![result("shop", "GET /", vec![spike(true)])];
    assert!(step(&mut tracker, 13, spike_only()).is_empty());
    assert!(step(&mut tracker, 14, spike_only()).is_empty());
    assert_eq!(step(&mut tracker, 15, spike_only())[0].0, "resolved");
}

#[test]
fn traffic_drops_still_page() {
    let mut tracker = IncidentTracker::new(Hysteresis::default());
    let drop = || {
        vec![result(
            "shop",
            "GET /",
            vec![anomaly(AnomalyKind::TrafficDrop, false)],
        )]
    };
    assert!(step(&mut tracker, 1, drop()).is_empty());
    assert_eq!(step(&mut tracker, 2, drop())[0].0, "opened");
}
