//! Change events: deploys, config changes, feature-flag flips, scaling and
//! infrastructure events, either posted by tools or seen in the telemetry.
//! Incidents are correlated with the changes that happened just before them.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::detect::incident::rfc3339;

/// Changes kept in memory; older ones are dropped first.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Deploy,
    Config,
    FeatureFlag,
    Scale,
    Infra,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 5] = [
        ChangeKind::Deploy,
        ChangeKind::Config,
        ChangeKind::FeatureFlag,
        ChangeKind::Scale,
        ChangeKind::Infra,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deploy => "deploy",
            ChangeKind::Config => "config",
            ChangeKind::FeatureFlag => "feature_flag",
            ChangeKind::Scale => "scale",
            ChangeKind::Infra => "infra",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Where a change was learnt from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// Posted by a tool (HTTP or gRPC API).
    Api,
    /// Inferred from telemetry (new version, pod turnover, flag variants,
    /// Kubernetes events in logs).
    Telemetry,
}

/// One change event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Assigned on record; 0 before.
    #[serde(default)]
    pub id: u64,
    pub service: String,
    pub kind: ChangeKind,
    /// The new version (deploy) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The flag or config key when the change is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The flag variant or config value after the change, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub description: String,
    /// When the change happened, Unix nanoseconds.
    pub time_unix_nanos: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub source: ChangeSource,
}

impl Change {
    pub fn time(&self) -> String {
        rfc3339(self.time_unix_nanos)
    }
}

/// Which changes to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub service: Option<String>,
    pub kind: Option<ChangeKind>,
    /// Inclusive lower bound, Unix nanoseconds.
    pub since_unix_nanos: Option<u64>,
    /// Exclusive upper bound, Unix nanoseconds.
    pub until_unix_nanos: Option<u64>,
}

impl ChangeFilter {
    fn matches(&self, change: &Change) -> bool {
        self.service
            .as_deref()
            .is_none_or(|service| service == change.service)
            && self.kind.is_none_or(|kind| kind == change.kind)
            && self
                .since_unix_nanos
                .is_none_or(|since| change.time_unix_nanos >= since)
            && self
                .until_unix_nanos
                .is_none_or(|until| change.time_unix_nanos < until)
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// In the order recorded.
    changes: VecDeque<Change>,
    dropped: u64,
}

/// A bounded, thread-safe log of changes. Recording is rare (deploys, flag
/// flips), so one mutex is enough.
#[derive(Debug)]
pub struct ChangeLog {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Every recorded change (with its id), for whoever persists or streams
    /// them. Sending never blocks; without subscribers it is a no-op.
    recorded: broadcast::Sender<Change>,
}

/// Recorded changes buffered per subscriber before it lags.
const RECORDED_BUFFER: usize = 1024;

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog::new(DEFAULT_CAPACITY)
    }
}

impl ChangeLog {
    pub fn new(capacity: usize) -> Self {
        ChangeLog {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            recorded: broadcast::channel(RECORDED_BUFFER).0,
        }
    }

    /// Changes as they are recorded (not restored ones).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.recorded.subscribe()
    }

    /// Records a change, assigns and returns its id. The oldest change is
    /// dropped when the log is full.
    pub fn record(&self, mut change: Change) -> u64 {
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        change.id = id;
        if inner.changes.len() >= self.capacity {
            inner.changes.pop_front();
            inner.dropped += 1;
        }
        inner.changes.push_back(change.clone());
        drop(inner);
        let _ = self.recorded.send(change);
        id
    }

    /// Restores a change with its id (from storage); later ids continue
    /// after it.
    pub fn restore(&self, change: Change) {
        let mut inner = self.inner.lock();
        inner.next_id = inner.next_id.max(change.id + 1);
        if inner.changes.len() >= self.capacity {
            inner.changes.pop_front();
        }
        inner.changes.push_back(change);
    }

    /// Matching changes, oldest first by time (ties by id).
    pub fn list(&self, filter: &ChangeFilter) -> Vec<Change> {
        let inner = self.inner.lock();
        let mut found: Vec<Change> = inner
            .changes
            .iter()
            .filter(|change| filter.matches(change))
            .cloned()
            .collect();
        found.sort_by_key(|change| (change.time_unix_nanos, change.id));
        found
    }

    pub fn get(&self, id: u64) -> Option<Change> {
        let inner = self.inner.lock();
        inner.changes.iter().find(|change| change.id == id).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(service: &str, kind: ChangeKind, at: u64) -> Change {
        Change {
            id: 0,
            service: service.to_string(),
            kind,
            version: None,
            key: None,
            value: None,
            description: String::new(),
            time_unix_nanos: at,
            link: None,
            source: ChangeSource::Api,
        }
    }

    #[test]
    fn ids_are_assigned_and_filters_apply() {
        let log = ChangeLog::new(10);
        let a = log.record(change("payment", ChangeKind::Deploy, 30));
        let b = log.record(change("cart", ChangeKind::Config, 10));
        assert_eq!((a, b), (1, 2));
        let all = log.list(&ChangeFilter::default());
        assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), vec![2, 1]);
        let payment = log.list(&ChangeFilter {
            service: Some("payment".into()),
            ..ChangeFilter::default()
        });
        assert_eq!(payment.len(), 1);
        let window = log.list(&ChangeFilter {
            since_unix_nanos: Some(11),
            until_unix_nanos: Some(31),
            ..ChangeFilter::default()
        });
        assert_eq!(window.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(log.get(2).unwrap().service, "cart");
    }

    #[test]
    fn full_log_drops_oldest() {
        let log = ChangeLog::new(2);
        for at in 0..3 {
            log.record(change("a", ChangeKind::Deploy, at));
        }
        assert_eq!(log.len(), 2);
        assert_eq!(log.dropped(), 1);
        assert!(log.get(1).is_none());
        log.restore(Change {
            id: 40,
            ..change("b", ChangeKind::Scale, 9)
        });
        assert_eq!(log.record(change("c", ChangeKind::Infra, 10)), 41);
    }
}
