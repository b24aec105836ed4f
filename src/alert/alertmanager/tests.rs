use super::*;
use crate::alert::test_support::{incident, resolved};
use crate::model::Incident;

const SECOND: u64 = 1_000_000_000;
const MINUTE: Duration = Duration::from_secs(60);

fn tracker() -> Tracker {
    Tracker::new(
        Mapping::new(BTreeMap::new(), None, "http://127.0.0.1:8888"),
        Duration::from_secs(15 * 60),
    )
}

fn opened(incident: &Incident) -> IncidentEvent {
    IncidentEvent::Opened(incident.clone())
}

fn updated(incident: &Incident) -> IncidentEvent {
    IncidentEvent::Updated(incident.clone())
}

#[test]
fn firing_alerts_end_four_intervals_after_each_send() {
    let now = 1_733_011_400 * SECOND;
    assert_eq!(
        ends_at(AlertStatus::Firing, now, MINUTE),
        now + 240 * SECOND
    );
    assert_eq!(
        ends_at(AlertStatus::Firing, now, Duration::from_millis(250)),
        now + SECOND
    );
    // Resolved alerts end when they resolved, whenever they are sent.
    let at = 1_733_011_300 * SECOND;
    let status = AlertStatus::Resolved { at_unix_nanos: at };
    assert_eq!(ends_at(status, now, MINUTE), at);
    assert_eq!(ends_at(status, now + 3_600 * SECOND, MINUTE), at);
    // No overflow near the end of time.
    assert_eq!(ends_at(AlertStatus::Firing, u64::MAX - 1, MINUTE), u64::MAX);
}

#[test]
fn the_request_body_is_what_alertmanager_takes() {
    let mut tracker = tracker();
    let incident = incident();
    let due = tracker.apply(&opened(&incident), Instant::now(), 0);
    let sent_at = 1_733_011_420 * SECOND + 250_000_000;
    let body = request_body(&[&due[0].1], sent_at, MINUTE);
    let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let alert = &parsed[0];
    assert_eq!(alert["labels"]["alertname"], "ErrorRateAnomaly");
    assert_eq!(alert["labels"]["incident_id"], "payment@1733011390");
    assert_eq!(alert["startsAt"], "2024-12-01T00:03:10.000Z");
    assert_eq!(alert["endsAt"], "2024-12-01T00:07:40.250Z");
    assert_eq!(
        alert["generatorURL"],
        "http://127.0.0.1:8888/api/v1/incidents/payment@1733011390"
    );
    assert_eq!(alert["annotations"]["summary"], incident.summary);
}

#[test]
fn updates_keep_the_labels_of_the_first_event() {
    let mut tracker = tracker();
    let mut incident = incident();
    let now = Instant::now();
    let first = tracker.apply(&opened(&incident), now, 0);
    // New kinds and a new most-severe operation would change alertname and
    // operation if labels were recomputed.
    incident.kinds = vec![crate::model::AnomalyKind::TrafficDrop];
    incident.anomalies.reverse();
    incident.summary = "payment: traffic dropped".into();
    let second = tracker.apply(&updated(&incident), now, 0);
    assert_eq!(second.len(), 1);
    assert_eq!(first[0].0, second[0].0, "same identity");
    assert_eq!(second[0].1.labels["alertname"], "ErrorRateAnomaly");
    assert_eq!(
        second[0].1.annotations["summary"],
        "payment: traffic dropped"
    );
    assert_eq!(tracker.len(), 1);
}

#[test]
fn escalation_to_critical_replaces_the_warning_alert() {
    let mut tracker = tracker();
    let mut incident = incident();
    incident.severity = Severity::Warning;
    let now = Instant::now();
    let warning = tracker.apply(&opened(&incident), now, 0);
    assert_eq!(warning[0].1.labels["severity"], "warning");

    incident.severity = Severity::Critical;
    let escalated_at = 1_733_011_500 * SECOND;
    let due = tracker.apply(&updated(&incident), now, escalated_at);
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].0, warning[0].0);
    assert_eq!(
        due[0].1.status,
        AlertStatus::Resolved {
            at_unix_nanos: escalated_at
        }
    );
    assert_eq!(due[1].1.labels["severity"], "critical");
    assert_eq!(due[1].1.status, AlertStatus::Firing);
    // Everything else about the identity is the same.
    let mut without_severity = (*due[1].1.labels).clone();
    without_severity.insert("severity".into(), "warning".into());
    assert_eq!(without_severity, *warning[0].1.labels);

    // Severity never goes back down within an incident.
    incident.severity = Severity::Warning;
    let due = tracker.apply(&updated(&incident), now, escalated_at);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.labels["severity"], "critical");
}

#[test]
fn resends_firing_alerts_and_resolutions_for_their_period() {
    let mut tracker = tracker();
    let start = Instant::now();
    let incident = incident();
    tracker.apply(&opened(&incident), start, 0);
    let due = tracker.resend(start + MINUTE);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.status, AlertStatus::Firing);

    let resolved_at = incident.onset_unix_nanos + 120 * SECOND;
    let resolved_seen = start + 2 * MINUTE;
    let due = tracker.apply(&resolved(incident.clone(), resolved_at), resolved_seen, 0);
    assert_eq!(
        due[0].1.status,
        AlertStatus::Resolved {
            at_unix_nanos: resolved_at
        }
    );
    // Re-sent for 15 minutes after the resolution, then forgotten.
    for minute in 1..15 {
        let due = tracker.resend(resolved_seen + MINUTE * minute);
        assert_eq!(due.len(), 1, "minute {minute}");
        assert_eq!(
            due[0].1.status,
            AlertStatus::Resolved {
                at_unix_nanos: resolved_at
            }
        );
    }
    assert!(tracker.resend(resolved_seen + MINUTE * 15).is_empty());
    assert!(tracker.is_empty());
}

#[test]
fn a_resolution_never_ends_before_the_alert_starts() {
    let mut tracker = tracker();
    let incident = incident();
    let due = tracker.apply(
        &resolved(incident.clone(), incident.onset_unix_nanos - SECOND),
        Instant::now(),
        0,
    );
    assert_eq!(
        due[0].1.status,
        AlertStatus::Resolved {
            at_unix_nanos: incident.onset_unix_nanos
        }
    );
}

#[test]
fn timestamps_have_milliseconds() {
    assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        timestamp(1_733_011_390 * SECOND + 7_000_000),
        "2024-12-01T00:03:10.007Z"
    );
}
