//! The change log: the one place every change event is kept, whether a
//! tool posted it (`admin::changes`) or the ingest path inferred it from
//! the telemetry (`ingest::changes`). Analysis reads it to correlate
//! incidents with the changes just before them (`analyze::correlate`).
//!
//! Invariants: the log holds at most its capacity (the oldest change is
//! dropped first, and counted); ids are assigned on record, increase, and
//! are never reused, also across a restore; nothing here does I/O, so the
//! HTTP handlers, the ingest path and replay all drive the same code.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::model::{Change, ChangeFilter, ChangeSource};

/// Changes kept in memory; older ones are dropped first.
pub const DEFAULT_CAPACITY: usize = 10_000;

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

/// How many of the newest changes [`ChangeLog::record_once`] compares with.
pub const RECENT_DUPLICATES: usize = 256;

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
    pub fn record(&self, change: Change) -> u64 {
        let inner = self.inner.lock();
        self.insert(inner, change)
    }

    /// Inserts under the lock taken by the caller, then lets it go before
    /// telling subscribers.
    fn insert(&self, mut inner: parking_lot::MutexGuard<'_, Inner>, mut change: Change) -> u64 {
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

    /// Records a change unless the same one is among the newest
    /// [`RECENT_DUPLICATES`]: one with the same service and external id,
    /// or, without ids, the same service, kind, subject and time (a change
    /// announced by every pod of a service, or a retried export). Returns
    /// the new id, or `None` for a duplicate.
    pub fn record_once(&self, change: Change) -> Option<u64> {
        let inner = self.inner.lock();
        {
            let same = |known: &Change| {
                known.service == change.service
                    && match (&known.external_id, &change.external_id) {
                        (Some(a), Some(b)) => a == b,
                        (None, None) => {
                            known.kind == change.kind
                                && known.version == change.version
                                && known.key == change.key
                                && known.value == change.value
                                && known.time_unix_nanos == change.time_unix_nanos
                        }
                        _ => false,
                    }
            };
            if inner.changes.iter().rev().take(RECENT_DUPLICATES).any(same) {
                return None;
            }
        }
        Some(self.insert(inner, change))
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
