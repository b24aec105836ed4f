use super::*;
use crate::model::IncidentState;
use crate::store::{ManualClock, Sample, StoreConfig, OVERFLOW};

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SECOND;

/// A store on a manual clock and an engine over it.
fn setup() -> (Store, Arc<ManualClock>, Engine) {
    let clock = Arc::new(ManualClock::new(START));
    let store = Store::with_clock(StoreConfig::default(), clock.clone());
    let engine = Engine::new(DetectConfig::default());
    (store, clock, engine)
}

/// Records one second of traffic on checkout -> payment ending at `second`:
/// `rate` requests with latency `millis` (+ a little deterministic jitter),
/// `errors` of them failing.
fn second_of_traffic(store: &Store, second: u64, rate: u64, millis: u64, errors: u64) {
    let payment = store.service("payment");
    for i in 0..rate {
        let jitter = (i * 7 + second * 13) % 5;
        let sample = Sample {
            end_unix_nanos: START + second * SECOND + i * (SECOND / rate.max(1)),
            duration_nanos: (millis + jitter) * 1_000_000,
            error: i < errors,
            trace_id: u128::from(second * 1_000 + i + 1),
        };
        store.record_operation(&payment, "POST /pay", sample);
    }
}

/// Runs `seconds` of traffic shaped by `shape(second) -> (rate, millis,
/// errors)`, advancing the engine each second; returns all events with the
/// second they came out at.
fn run(seconds: u64, shape: impl Fn(u64) -> (u64, u64, u64)) -> Vec<(u64, IncidentEvent)> {
    let (store, clock, mut engine) = setup();
    let mut events = Vec::new();
    for second in 0..seconds {
        let (rate, millis, errors) = shape(second);
        clock.set(START + (second + 1) * SECOND);
        second_of_traffic(&store, second, rate, millis, errors);
        for event in engine.advance(&store, START + (second + 1) * SECOND) {
            events.push((second, event));
        }
    }
    events
}

#[test]
fn steady_traffic_opens_nothing() {
    let events = run(1_200, |_| (20, 40, 0));
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn latency_shift_opens_then_resolves_an_incident() {
    // 15 minutes healthy, 3 minutes at 8x latency, then healthy again.
    let fault = 900..1_080;
    let events = run(1_500, |second| {
        if fault.contains(&second) {
            (20, 320, 0)
        } else {
            (20, 40, 0)
        }
    });
    let (opened_at, opened) = events.first().expect("an incident opened");
    let IncidentEvent::Opened(incident) = opened else {
        panic!("first event is an open: {opened:?}")
    };
    assert_eq!(incident.service, "payment");
    assert!(
        incident.kinds.contains(&crate::model::AnomalyKind::Latency),
        "{incident:#?}"
    );
    assert!(!incident.exemplar_trace_ids.is_empty());
    // Detected within the window, lateness and hysteresis: under a minute.
    let delay = opened_at - fault.start;
    assert!(delay <= 60, "opened {delay} s after the fault");
    assert!(incident.onset_unix_nanos >= START + fault.start * SECOND - 10 * SECOND);
    let resolved = events
        .iter()
        .find(|(_, event)| matches!(event, IncidentEvent::Resolved(_)))
        .expect("resolved after the fault stopped");
    assert!(resolved.0 >= fault.end);
    assert_eq!(resolved.1.incident().state, IncidentState::Resolved);
    assert_eq!(
        events
            .iter()
            .filter(|(_, event)| matches!(event, IncidentEvent::Opened(_)))
            .count(),
        1
    );
}

#[test]
fn a_service_that_goes_silent_is_a_traffic_drop() {
    let events = run(1_200, |second| {
        if second >= 900 {
            (0, 0, 0)
        } else {
            (20, 40, 0)
        }
    });
    let (_, opened) = events.first().expect("an incident opened");
    assert!(
        opened
            .incident()
            .kinds
            .contains(&crate::model::AnomalyKind::TrafficDrop),
        "{:#?}",
        opened.incident()
    );
}

#[test]
fn windows_close_once_in_order_and_mark_the_store() {
    let (store, clock, mut engine) = setup();
    clock.set(START + 100 * SECOND);
    assert!(engine.advance(&store, START + 100 * SECOND).is_empty());
    let closed = store.closed_through().expect("closed a window");
    // Watermark = now - 10 s lateness; the window ending at it is closed.
    assert_eq!(closed, store.window_index(START + 90 * SECOND) - 1);
    engine.advance(&store, START + 100 * SECOND);
    assert_eq!(store.closed_through(), Some(closed), "nothing closes twice");
    // A span for a closed window is recorded and counted as after-close.
    let payment = store.service("payment");
    store.record_operation(
        &payment,
        "op",
        Sample {
            end_unix_nanos: START + 20 * SECOND,
            duration_nanos: SECOND / 100,
            error: false,
            trace_id: 1,
        },
    );
    assert_eq!(
        store
            .counters
            .after_close_samples
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn skipping_moves_past_the_windows_a_failed_tick_was_closing() {
    let (store, _, mut engine) = setup();
    engine.advance(&store, START + 100 * SECOND);
    let closed = store.closed_through().expect("closed a window");
    // Three more windows (10 s each) reach the watermark; a tick closing
    // them failed, so they are given up rather than retried.
    let later = START + 130 * SECOND;
    assert_eq!(engine.skip_past(&store, later), 3);
    assert_eq!(store.closed_through(), Some(closed + 3));
    assert_eq!(
        engine.skip_past(&store, later),
        0,
        "nothing is skipped twice"
    );
    assert!(engine.advance(&store, later).is_empty());
    assert_eq!(store.closed_through(), Some(closed + 3), "nor closed again");
}

/// The first incident opened by `run`.
fn first_opened(events: &[(u64, IncidentEvent)]) -> &crate::model::Incident {
    events
        .iter()
        .find_map(|(_, event)| match event {
            IncidentEvent::Opened(incident) => Some(incident),
            _ => None,
        })
        .expect("an incident opened")
}

#[test]
fn a_slowdown_from_second_six_of_a_window_has_its_onset_there() {
    // The window [900 s, 910 s) turns slow at 906 s.
    let events = run(1_100, |second| {
        if second >= 906 {
            (20, 320, 0)
        } else {
            (20, 40, 0)
        }
    });
    let incident = first_opened(&events);
    assert_eq!(
        incident.onset_unix_nanos,
        START + 906 * SECOND,
        "{incident:#?}"
    );
    // The id keeps the window grid (see `detect::incident`).
    assert_eq!(incident.id, format!("payment@{}", START / SECOND + 900));
}

#[test]
fn errors_from_second_four_of_a_window_have_their_onset_there() {
    let events = run(1_100, |second| {
        if second >= 904 {
            (20, 40, 6)
        } else {
            (20, 40, 0)
        }
    });
    let incident = first_opened(&events);
    assert_eq!(
        incident.onset_unix_nanos,
        START + 904 * SECOND,
        "{incident:#?}"
    );
}

#[test]
fn own_series_are_bounded_by_operations_and_feed_evidence_not_incidents() {
    const T0: u64 = 1_000 * SECOND;
    let store = Store::with_clock(
        StoreConfig {
            window: Duration::from_secs(1),
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(T0)),
    );
    let service = store.service("api");
    let sample = Sample {
        end_unix_nanos: T0 - SECOND,
        duration_nanos: 1_000_000,
        error: true,
        trace_id: 5,
    };
    // Without an operation of that name, an own sample goes to the own
    // overflow series. Every series counts in the caps.
    store.record_span(&service, SeriesKind::Own, "nope", sample, T0);
    assert_eq!(store.n_series(), 1);
    assert_eq!(
        store.series("api", SeriesKind::Own)[0].name.as_ref(),
        OVERFLOW
    );
    store.record_operation(&service, "op", sample);
    store.record_span(&service, SeriesKind::Own, "op", sample, T0);
    assert_eq!(
        store.n_series(),
        3,
        "overflow, operation and its own series"
    );

    let mut engine = Engine::new(DetectConfig {
        lateness: Duration::from_secs(1),
        ..DetectConfig::default()
    });
    let window = store.window_index(T0 - SECOND);
    engine.close_through(&store, window);
    let own = SeriesKey::new(SeriesKind::Own, "api", "op");
    assert!(
        engine.evidence().contains_key(&own),
        "{:?}",
        engine.evidence()
    );
    assert!(engine.detector(&own).is_some());
    assert!(engine
        .incidents()
        .tracked_keys()
        .all(|key| key.kind != SeriesKind::Own));
}

#[test]
fn every_service_silent_at_once_is_one_no_data_condition_on_the_collector() {
    use crate::model::{AnomalyKind, COLLECTOR_SERVICE};
    let (store, clock, mut engine) = setup();
    let silent = 900..1_100;
    let mut events = Vec::new();
    for second in 0..1_300u64 {
        clock.set(START + (second + 1) * SECOND);
        if !silent.contains(&second) {
            second_of_traffic(&store, second, 20, 40, 0);
            let catalog = store.service("catalog");
            for i in 0..10 {
                let sample = Sample {
                    end_unix_nanos: START + second * SECOND + i * (SECOND / 10),
                    duration_nanos: 30_000_000,
                    error: false,
                    trace_id: u128::from(second * 100 + i + 1),
                };
                store.record_operation(&catalog, "GET /items", sample);
            }
        }
        events.extend(engine.advance(&store, START + (second + 1) * SECOND));
    }
    let opened: Vec<&Incident> = events
        .iter()
        .filter_map(|event| match event {
            IncidentEvent::Opened(incident) => Some(incident),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(opened[0].service, COLLECTOR_SERVICE);
    assert_eq!(opened[0].kinds, vec![AnomalyKind::NoData]);
    assert!(
        opened[0].summary.contains("2 services"),
        "{}",
        opened[0].summary
    );
    let resolved = events
        .iter()
        .any(|event| matches!(event, IncidentEvent::Resolved(incident) if incident.service == COLLECTOR_SERVICE));
    assert!(resolved, "resolves once spans arrive again: {events:#?}");
}

#[test]
fn a_service_at_one_request_in_fifteen_seconds_is_judged_and_its_incident_holds() {
    // Windows with no request at all sit between the slow ones, so two
    // consecutive anomalous windows never happen: the accumulated evidence
    // (which spans two windows or more by itself) must open the incident,
    // and a run in progress must go on through the empty windows.
    let fault = 1_800..2_100;
    let events = run(2_400, |second| {
        let rate = u64::from(second % 15 == 0);
        let millis = if fault.contains(&second) { 400 } else { 40 };
        (rate, millis, 0)
    });
    let opened: Vec<u64> = events
        .iter()
        .filter(|(_, event)| matches!(event, IncidentEvent::Opened(_)))
        .map(|(second, _)| *second)
        .collect();
    assert_eq!(opened.len(), 1, "one incident for one fault: {events:#?}");
    assert!(
        (fault.start..fault.start + 120).contains(&opened[0]),
        "found within two minutes of the fault: opened at {}",
        opened[0]
    );
    let resolved = events
        .iter()
        .find(|(_, event)| matches!(event, IncidentEvent::Resolved(_)))
        .map(|(second, _)| *second)
        .expect("it resolves once the fault is over");
    assert!(
        resolved >= fault.end,
        "held through the fault: resolved at {resolved}"
    );
}
