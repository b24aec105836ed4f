//! Change events: deploys, config changes, feature-flag flips, scaling and
//! infrastructure events, either posted by tools (`api`) or seen in the
//! telemetry (`detect`). Incidents are correlated with the changes that
//! happened just before them (`correlate`).
//!
//! This module owns the [`ChangeLog`], the one place every change is kept.
//! Invariants: the log holds at most its capacity (the oldest change is
//! dropped first, and counted); ids are assigned on record, increase, and
//! are never reused, also across a restore; nothing here does I/O, so the
//! HTTP handlers, the ingest path and replay all drive the same code.

pub mod api;
pub mod correlate;
pub mod detect;

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::detect::incident::rfc3339;

pub use correlate::{correlate, CorrelationInput};
pub use detect::{ChangeDetector, DetectorCounters, K8sEvent};

/// Changes kept in memory; older ones are dropped first.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What kind of change happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new version or a rollout of a service.
    Deploy,
    /// A configuration value changed.
    Config,
    /// A feature flag serves a new variant, or its variant shares shifted.
    FeatureFlag,
    /// Instances were added or removed without a new version.
    Scale,
    /// Something underneath the service: OOM kills, restarts, failing probes.
    Infra,
}

impl ChangeKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [ChangeKind; 5] = [
        ChangeKind::Deploy,
        ChangeKind::Config,
        ChangeKind::FeatureFlag,
        ChangeKind::Scale,
        ChangeKind::Infra,
    ];

    /// The name used in JSON, query parameters and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deploy => "deploy",
            ChangeKind::Config => "config",
            ChangeKind::FeatureFlag => "feature_flag",
            ChangeKind::Scale => "scale",
            ChangeKind::Infra => "infra",
        }
    }

    /// The kind named `text` (as [`ChangeKind::as_str`] writes it).
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

impl ChangeSource {
    /// The name used in JSON and self-metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSource::Api => "api",
            ChangeSource::Telemetry => "telemetry",
        }
    }
}

/// One change event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Assigned on record; 0 before.
    #[serde(default)]
    pub id: u64,
    /// The service that changed.
    pub service: String,
    /// What kind of change it is.
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
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// When the change happened, Unix nanoseconds.
    pub time_unix_nanos: u64,
    /// Where to read more (a pipeline run, a pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Who told us.
    pub source: ChangeSource,
}

impl Change {
    /// The change's time in RFC 3339.
    pub fn time(&self) -> String {
        rfc3339(self.time_unix_nanos)
    }
}

/// Which changes to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    /// Only this service's changes.
    pub service: Option<String>,
    /// Only changes of this kind.
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

/// Validated settings of change tracking (see `crate::config` for the YAML
/// side).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesConfig {
    /// How far before an incident's onset changes are correlated with it.
    pub lookback: Duration,
    /// Changes kept in memory; the oldest is dropped first.
    pub capacity: NonZeroUsize,
    /// Bearer token `POST /api/v1/changes` requires; `None` accepts any
    /// caller that can reach the admin port.
    pub api_token: Option<ApiToken>,
    /// Whether changes are inferred from the telemetry (versions, instances,
    /// flag variants, Kubernetes events).
    pub detect_from_telemetry: bool,
    /// A rollout or scaling is reported once no instance has come or gone
    /// for this long, as one change.
    pub rollout_debounce: Duration,
    /// An instance that sends nothing for this long has gone; also the
    /// start-up period whose versions and instances are the baseline.
    pub instance_timeout: Duration,
    /// Length of the periods whose flag-variant shares are compared; a key's
    /// first period is its baseline.
    pub flag_window: Duration,
    /// A variant that served under 5% of a key's evaluations in one period
    /// and serves at least this share in the next is a flag change.
    pub flag_shift: f64,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig {
            lookback: Duration::from_secs(30 * 60),
            capacity: NonZeroUsize::new(DEFAULT_CAPACITY).expect("non-zero"),
            api_token: None,
            detect_from_telemetry: true,
            rollout_debounce: Duration::from_secs(2 * 60),
            instance_timeout: Duration::from_secs(60),
            flag_window: Duration::from_secs(5 * 60),
            flag_shift: 0.2,
        }
    }
}

/// A bearer token, kept out of `Debug` output so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token; `None` when it is empty (after trimming a file's
    /// trailing newline), which would accept an empty `Bearer` header.
    pub fn new(token: &str) -> Option<ApiToken> {
        let token = token.trim();
        (!token.is_empty()).then(|| ApiToken(token.to_owned()))
    }

    /// Whether `given` is this token. The comparison takes the same time
    /// wherever the first difference is, so the token cannot be guessed
    /// byte by byte from response times.
    pub fn matches(&self, given: &str) -> bool {
        let (expected, given) = (self.0.as_bytes(), given.as_bytes());
        let mut difference = u8::from(expected.len() != given.len());
        for (i, byte) in expected.iter().enumerate() {
            difference |= byte ^ given.get(i).copied().unwrap_or(0);
        }
        difference == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ApiToken(<redacted>)")
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
    /// Changes recorded, by source (index: `ChangeSource as usize`), for the
    /// self-metrics; restored changes are not counted.
    by_source: [AtomicU64; 2],
}

/// Recorded changes buffered per subscriber before it lags.
const RECORDED_BUFFER: usize = 1024;

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog::new(DEFAULT_CAPACITY)
    }
}

impl ChangeLog {
    /// An empty log holding at most `capacity` changes (at least one).
    pub fn new(capacity: usize) -> Self {
        ChangeLog {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            recorded: broadcast::channel(RECORDED_BUFFER).0,
            by_source: [AtomicU64::new(0), AtomicU64::new(0)],
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
        self.by_source[change.source as usize].fetch_add(1, Ordering::Relaxed);
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

    /// The change with this id, if it is still held.
    pub fn get(&self, id: u64) -> Option<Change> {
        let inner = self.inner.lock();
        inner.changes.iter().find(|change| change.id == id).cloned()
    }

    /// Changes held.
    pub fn len(&self) -> usize {
        self.inner.lock().changes.len()
    }

    /// Whether no change is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }

    /// Changes recorded since start from `source` (restored ones excluded).
    pub fn recorded(&self, source: ChangeSource) -> u64 {
        self.by_source[source as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
