//! Alertmanager delivery: which alerts are live and when they are sent
//! again ([`Tracker`]), and the v2 API request ([`AlertmanagerSink`]).
//!
//! Follows what Prometheus does, which is what Alertmanager users expect:
//!
//! - a firing alert is sent when its incident opens or changes, and again
//!   every `resend_interval`, with `endsAt` = send time + 4 x the interval,
//!   so Alertmanager resolves it by itself if triage goes away;
//! - a resolution is sent with `endsAt` = the resolve time, and again every
//!   interval for `resolved_resend_for`, for Alertmanagers that missed it;
//! - `endsAt` is worked out when the request is made, not when the alert is
//!   queued, so an alert that waited out an outage is not already expired.
//!
//! Invariant: an incident's alert keeps the labels of its first event for
//! its whole life (labels are the alert's identity in Alertmanager), so
//! updates replace it rather than add one. The one exception is severity
//! rising from warning to critical, which must reach the paging route: the
//! warning alert is resolved and a critical one with otherwise equal labels
//! fires. Severity never goes back down within an incident.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use super::client::{Client, SendError};
use super::mapping::{severity_name, Mapping};
use super::sender::Sink;
use crate::model::Severity;
use crate::model::{rfc3339, IncidentEvent, IncidentState};

/// Alerts per request: Prometheus's batch size.
const BATCH: usize = 64;

/// How far ahead of a send a firing alert's `endsAt` is, in resend
/// intervals: three sends may be missed before Alertmanager resolves it.
const ENDS_AT_INTERVALS: u32 = 4;

/// Identity of an alert: its labels, written out in order.
pub type AlertKey = Arc<str>;

/// An alert waiting to be sent; `endsAt` is filled in at send time.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAlert {
    /// The alert's identity; kept for the incident's life.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The latest annotations.
    pub annotations: Arc<BTreeMap<String, String>>,
    /// The incident's onset, Unix nanoseconds.
    pub starts_at_unix_nanos: u64,
    /// Link to the incident.
    pub generator_url: Arc<str>,
    /// Firing, or resolved at a time.
    pub status: AlertStatus,
}

/// Whether an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    /// Still firing: `endsAt` is set ahead of each send.
    Firing,
    /// Resolved at this time (Unix nanoseconds), which is its `endsAt`.
    Resolved {
        /// When the incident resolved.
        at_unix_nanos: u64,
    },
}

/// `endsAt` of an alert sent at `now_unix_nanos`.
pub fn ends_at(status: AlertStatus, now_unix_nanos: u64, resend_interval: Duration) -> u64 {
    match status {
        AlertStatus::Firing => {
            let ahead = resend_interval.saturating_mul(ENDS_AT_INTERVALS);
            now_unix_nanos.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX))
        }
        AlertStatus::Resolved { at_unix_nanos } => at_unix_nanos,
    }
}

/// The live alerts, and what to send when.
#[derive(Debug)]
pub struct Tracker {
    mapping: Mapping,
    /// How long a resolution keeps being re-sent.
    resolved_resend_for: Duration,
    /// Open incidents: the key and labels of their current alert.
    incidents: HashMap<String, Current>,
    /// Every alert still being sent, firing or recently resolved.
    alerts: BTreeMap<AlertKey, Tracked>,
}

/// The alert an open incident currently has.
#[derive(Debug)]
struct Current {
    key: AlertKey,
    labels: Arc<BTreeMap<String, String>>,
    severity: Severity,
}

/// An alert being sent, and since when it is resolved.
#[derive(Debug)]
struct Tracked {
    alert: PendingAlert,
    /// When the resolution was first handled (monotonic), which starts the
    /// `resolved_resend_for` period.
    resolved_since: Option<Instant>,
}

impl Tracker {
    /// A tracker labelling with `mapping` and re-sending resolutions for
    /// `resolved_resend_for`.
    pub fn new(mapping: Mapping, resolved_resend_for: Duration) -> Tracker {
        Tracker {
            mapping,
            resolved_resend_for,
            incidents: HashMap::new(),
            alerts: BTreeMap::new(),
        }
    }

    /// Alerts currently tracked (firing or being re-sent as resolved).
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// Whether no alert is tracked.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// Applies an incident event at `now` (monotonic) and `wall_unix_nanos`
    /// (used as the resolve time of an alert replaced on escalation).
    /// Returns the alerts to send now.
    pub fn apply(
        &mut self,
        event: &IncidentEvent,
        now: Instant,
        wall_unix_nanos: u64,
    ) -> Vec<(AlertKey, PendingAlert)> {
        let incident = event.incident();
        let resolved = matches!(event, IncidentEvent::Resolved(_))
            || incident.state == IncidentState::Resolved;
        let mut out = Vec::new();

        let labels = match self.incidents.get(&incident.id) {
            Some(current) if !resolved && incident.severity > current.severity => {
                // Escalation: retire the warning alert, fire a critical one.
                let mut raised = (*current.labels).clone();
                raised.insert("severity".into(), severity_name(incident.severity).into());
                let old_key = current.key.clone();
                if let Some(old) = self.alerts.get_mut(&old_key) {
                    old.alert.status = AlertStatus::Resolved {
                        at_unix_nanos: wall_unix_nanos.max(old.alert.starts_at_unix_nanos),
                    };
                    old.resolved_since = Some(now);
                    out.push((old_key, old.alert.clone()));
                }
                Arc::new(raised)
            }
            Some(current) => Arc::clone(&current.labels),
            None => Arc::new(self.mapping.labels(incident)),
        };
        let key: AlertKey = key_of(&labels);
        let annotations = Arc::new(self.mapping.annotations(incident, &labels));
        let status = if resolved {
            let at = incident.resolved_unix_nanos.unwrap_or(wall_unix_nanos);
            AlertStatus::Resolved {
                // Alertmanager refuses an alert that ends before it starts.
                at_unix_nanos: at.max(incident.onset_unix_nanos),
            }
        } else {
            AlertStatus::Firing
        };
        let alert = PendingAlert {
            labels: Arc::clone(&labels),
            annotations,
            starts_at_unix_nanos: incident.onset_unix_nanos,
            generator_url: self.mapping.generator_url(&incident.id).into(),
            status,
        };
        if resolved {
            self.incidents.remove(&incident.id);
        } else {
            let severity = match self.incidents.get(&incident.id) {
                Some(current) => current.severity.max(incident.severity),
                None => incident.severity,
            };
            self.incidents.insert(
                incident.id.clone(),
                Current {
                    key: Arc::clone(&key),
                    labels,
                    severity,
                },
            );
        }
        self.alerts.insert(
            Arc::clone(&key),
            Tracked {
                alert: alert.clone(),
                resolved_since: resolved.then_some(now),
            },
        );
        out.push((key, alert));
        out
    }

    /// The periodic re-send at `now`: every firing alert, and resolutions
    /// younger than `resolved_resend_for` (older ones are forgotten).
    pub fn resend(&mut self, now: Instant) -> Vec<(AlertKey, PendingAlert)> {
        let keep_for = self.resolved_resend_for;
        self.alerts
            .retain(|_, tracked| match tracked.resolved_since {
                Some(since) => now.saturating_duration_since(since) < keep_for,
                None => true,
            });
        self.alerts
            .iter()
            .map(|(key, tracked)| (Arc::clone(key), tracked.alert.clone()))
            .collect()
    }
}

/// The identity of a label set: `name="value"` pairs in name order, as
/// Alertmanager's own fingerprint would distinguish them.
fn key_of(labels: &BTreeMap<String, String>) -> AlertKey {
    let mut key = String::new();
    for (name, value) in labels {
        key.push_str(name);
        key.push('=');
        key.push_str(&format!("{value:?}"));
        key.push(',');
    }
    key.into()
}

/// One alert as `POST /api/v2/alerts` takes it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
}

/// The JSON body for `alerts` sent at `now_unix_nanos`.
pub fn request_body(
    alerts: &[&PendingAlert],
    now_unix_nanos: u64,
    resend_interval: Duration,
) -> Vec<u8> {
    let postable: Vec<PostableAlert<'_>> = alerts
        .iter()
        .map(|alert| PostableAlert {
            labels: &alert.labels,
            annotations: &alert.annotations,
            starts_at: timestamp(alert.starts_at_unix_nanos),
            ends_at: timestamp(
                ends_at(alert.status, now_unix_nanos, resend_interval)
                    .max(alert.starts_at_unix_nanos),
            ),
            generator_url: &alert.generator_url,
        })
        .collect();
    // Maps of strings and strings serialize infallibly.
    serde_json::to_vec(&postable).unwrap_or_default()
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(unix_nanos: u64) -> String {
    let seconds = rfc3339(unix_nanos);
    let millis = unix_nanos / 1_000_000 % 1_000;
    match seconds.strip_suffix('Z') {
        Some(whole) => format!("{whole}.{millis:03}Z"),
        None => seconds,
    }
}

/// Unix nanoseconds now, by the wall clock.
pub(crate) fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Posts alerts to one Alertmanager's v2 API.
#[derive(Debug)]
pub(crate) struct AlertmanagerSink {
    pub(crate) client: Client,
    pub(crate) resend_interval: Duration,
}

impl Sink for AlertmanagerSink {
    type Key = AlertKey;
    type Item = PendingAlert;
    const BATCH: usize = BATCH;
    const KIND: &'static str = "alertmanager";

    async fn send(&self, batch: &[&PendingAlert]) -> Result<(), SendError> {
        let body = request_body(batch, wall_now(), self.resend_interval);
        self.client.post_json(body).await
    }
}

#[cfg(test)]
mod tests;
