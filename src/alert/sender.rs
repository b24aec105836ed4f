//! One delivery loop per target: takes batches from the target's queue and
//! posts them, retrying with exponential backoff while the target is
//! unreachable, and flushing what it can within a bound on shutdown.
//!
//! Invariant: an item leaves the queue only when it was accepted, refused
//! for good (counted as dropped, reason `rejected`), pushed out by newer
//! items when the queue is full (dropped, `queue_full`), or still waiting
//! when the shutdown flush ran out of time (dropped, `shutdown`). Nothing is
//! lost without a count.

use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::SendError;
use super::queue::Queue;
use crate::telemetry;

/// What a target does with a batch: the Alertmanager and webhook sides.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Identity of an item in the queue (a newer item replaces an older one
    /// with the same key).
    type Key: Hash + Eq + Clone + Send + 'static;
    /// What waits in the queue.
    type Item: Send + Sync + 'static;
    /// Most items per request.
    const BATCH: usize;
    /// `alertmanager` or `webhook`, the `sink` label of the self-metrics.
    const KIND: &'static str;
    /// Sends one batch. Items are borrowed: the batch stays with the
    /// delivery loop, so a failed one goes back to the queue uncloned.
    fn send(&self, batch: &[&Self::Item]) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// Exponential backoff between attempts while a target fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait; the doubling stops here.
    pub max: Duration,
}

impl Default for Backoff {
    /// 0.5 s doubling to 10 s: an Alertmanager back from a restart gets its
    /// alerts within 10 s, and one that stays down costs a request per 10 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1u32 << doublings)
            .min(self.max)
            .max(self.initial.min(self.max))
    }
}

/// A target's queue, shared between the dispatcher (which pushes) and the
/// target's delivery loop (which takes).
pub(crate) struct Outbox<K, T> {
    /// Items waiting. A plain mutex: pushes and takes are short and never
    /// held across an await.
    queue: Mutex<Queue<K, T>>,
    /// Wakes the delivery loop when something is pushed. `notify_one` keeps
    /// a permit when the loop is busy, so no push is missed.
    ready: Notify,
    /// The target's URL without credentials.
    name: String,
    metrics: OutboxMetrics,
}

/// The self-metric handles of one target, made once.
struct OutboxMetrics {
    queued: Gauge,
    sent: Counter,
    failed: Counter,
    dropped_full: Counter,
    dropped_rejected: Counter,
    dropped_shutdown: Counter,
}

impl<K: Hash + Eq + Clone, T> Outbox<K, T> {
    /// An empty outbox of `kind` (`alertmanager`, `webhook`) for `name`.
    pub(crate) fn new(kind: &'static str, name: String, capacity: NonZeroUsize) -> Self {
        let label =
            |metric: &'static str| counter!(metric, "sink" => kind, "target" => name.clone());
        let dropped = |reason: &'static str| counter!(telemetry::ALERTS_DROPPED, "sink" => kind, "target" => name.clone(), "reason" => reason);
        let metrics = OutboxMetrics {
            queued: gauge!(telemetry::ALERTS_QUEUED, "sink" => kind, "target" => name.clone()),
            sent: label(telemetry::ALERTS_SENT),
            failed: label(telemetry::ALERTS_SEND_FAILED),
            dropped_full: dropped("queue_full"),
            dropped_rejected: dropped("rejected"),
            dropped_shutdown: dropped("shutdown"),
        };
        gauge!(telemetry::ALERTS_QUEUE_CAPACITY, "sink" => kind, "target" => name.clone())
            .set(capacity.get() as f64);
        Outbox {
            queue: Mutex::new(Queue::new(capacity)),
            ready: Notify::new(),
            name,
            metrics,
        }
    }

    /// Queues items (replacing queued ones with the same key) and wakes the
    /// delivery loop. Overflow drops the oldest, counted.
    pub(crate) fn push(&self, items: impl IntoIterator<Item = (K, T)>) {
        let (dropped, len) = {
            let mut queue = self.queue.lock();
            let dropped: usize = items
                .into_iter()
                .map(|(key, item)| queue.push(key, item))
                .sum();
            (dropped, queue.len())
        };
        self.note_dropped(dropped);
        self.metrics.queued.set(len as f64);
        self.ready.notify_one();
    }

    /// Items waiting now.
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    fn take(&self, max: usize) -> Vec<(K, T)> {
        let mut queue = self.queue.lock();
        let batch = queue.take(max);
        self.metrics.queued.set(queue.len() as f64);
        batch
    }

    fn requeue(&self, batch: Vec<(K, T)>) {
        let (dropped, len) = {
            let mut queue = self.queue.lock();
            let dropped = queue.requeue(batch);
            (dropped, queue.len())
        };
        self.note_dropped(dropped);
        self.metrics.queued.set(len as f64);
    }

    fn note_dropped(&self, dropped: usize) {
        if dropped > 0 {
            self.metrics.dropped_full.increment(dropped as u64);
            tracing::warn!(target_url = %self.name, dropped, "alert queue full: dropped the oldest");
        }
    }
}

/// Delivers `outbox` to `sink` until `stop` is cancelled, then flushes for
/// at most `flush_for`.
pub(crate) async fn deliver<S: Sink>(
    sink: S,
    outbox: Arc<Outbox<S::Key, S::Item>>,
    backoff: Backoff,
    stop: CancellationToken,
    flush_for: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        let batch = outbox.take(S::BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = outbox.ready.notified() => continue,
            }
        }
        let n = batch.len() as u64;
        let items: Vec<&S::Item> = batch.iter().map(|(_, item)| item).collect();
        let result = tokio::select! {
            // A send in flight at shutdown is abandoned and retried by the
            // flush, under its deadline rather than the request timeout.
            _ = stop.cancelled() => None,
            result = sink.send(&items) => Some(result),
        };
        drop(items);
        match result {
            None => {
                outbox.requeue(batch);
                break;
            }
            Some(Ok(())) => {
                failures = 0;
                outbox.metrics.sent.increment(n);
            }
            Some(Err(SendError::Rejected(message))) => {
                failures = 0;
                outbox.metrics.dropped_rejected.increment(n);
                tracing::error!(sink = S::KIND, target_url = %outbox.name, alerts = n, %message, "target refused alerts; dropped");
            }
            Some(Err(SendError::Retryable(message))) => {
                failures = failures.saturating_add(1);
                outbox.metrics.failed.increment(n);
                outbox.requeue(batch);
                let wait = backoff.delay(failures);
                tracing::warn!(sink = S::KIND, target_url = %outbox.name, alerts = n, %message, retry_in = ?wait, "alert delivery failed; will retry");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    flush(&sink, &outbox, Instant::now() + flush_for).await;
}

/// Sends what is queued until the queue is empty, a send fails, or
/// `deadline` passes; counts what is left as dropped.
async fn flush<S: Sink>(sink: &S, outbox: &Outbox<S::Key, S::Item>, deadline: Instant) {
    loop {
        let batch = outbox.take(S::BATCH);
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let items: Vec<&S::Item> = batch.iter().map(|(_, item)| item).collect();
        match tokio::time::timeout_at(deadline, sink.send(&items)).await {
            Ok(Ok(())) => outbox.metrics.sent.increment(n),
            Ok(Err(SendError::Rejected(message))) => {
                outbox.metrics.dropped_rejected.increment(n);
                tracing::error!(sink = S::KIND, target_url = %outbox.name, %message, "target refused alerts; dropped");
            }
            failed => {
                if let Ok(Err(SendError::Retryable(_))) = failed {
                    outbox.metrics.failed.increment(n);
                }
                drop(items);
                let left = n + outbox.len() as u64;
                outbox.take(usize::MAX);
                outbox.metrics.dropped_shutdown.increment(left);
                tracing::warn!(sink = S::KIND, target_url = %outbox.name, alerts = left, "shutting down with alerts not delivered");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
