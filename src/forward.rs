//! Forwarding: every export request the receivers answered with success is
//! also sent, as received, to each configured upstream OTLP endpoint (an
//! OTel Collector, Jaeger, Tempo, a vendor's intake), so triage can sit in a
//! pipeline instead of at its end. docs/FORWARDING.md is the guide.
//!
//! - [`config`]: the `forward:` section (the Collector's `otlp` and
//!   `otlphttp` exporter keys).
//! - [`queue`]: each exporter's bounded queue (items and bytes), popped
//!   as batches.
//! - [`batch`]: which queued requests are merged, and the merged body.
//! - [`disk`]: the optional persistent queue (segment files).
//! - [`client`]: the gRPC and HTTP transports and the OTLP retry rules.
//! - [`tls`]: client TLS from the exporter's files.
//!
//! Invariants:
//!
//! - **Ingestion never waits for forwarding.** The receivers call
//!   [`Forwarder::accepted`] (through `receiver::Handoff`) on the decode
//!   pool after the sink has recorded the request; it only try-pushes the
//!   body (a `Bytes`, shared, not copied) into each exporter's queue. A full
//!   queue drops the request, counts its items in
//!   `triage_exporter_enqueue_failed_items_total` and logs (at most once
//!   every 10 s per exporter).
//! - **Forwarded as received, merged.** Protobuf bodies of one signal
//!   queued for one exporter are merged into one export request by
//!   concatenation (never decoded), up to `sending_queue.batch`'s sizes and
//!   never past 4 MiB by default; they wait at most `flush_timeout` for
//!   others. OTLP/JSON bodies go alone, as JSON over HTTP, and are decoded
//!   and re-encoded once as protobuf for a gRPC exporter (gRPC has no
//!   JSON). Compression is redone per the exporter's `compression`.
//! - **What was accepted, and only that.** A request is forwarded when the
//!   receiver answered it OK / 200, partial successes included (the items
//!   the receiver rejected go too: the body is not re-encoded; the upstream
//!   judges them itself). Refused requests (429/503, 400, 413) are not.
//! - **Dropped only when full or refused for good.** Retryable failures
//!   are retried, the whole batch, with exponential backoff and jitter
//!   (honouring `RetryInfo` / `Retry-After`) until `max_elapsed_time`;
//!   permanent failures are not retried. Both count every item of the
//!   batch in `triage_exporter_send_failed_items_total` by `reason`, and
//!   are logged.
//! - **Persistent queue.** With `sending_queue.storage`, a request is
//!   written and fsynced before it can be sent and deleted only once the
//!   batch holding it was accepted by the upstream (or refused for good); a
//!   restart sends what is left.

pub mod batch;
pub mod client;
pub mod config;
pub mod disk;
pub mod queue;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{ExporterConfig, ForwardConfig, Protocol};

use batch::{Batch, Limits};
use client::{Client, Failure, Prepared};
use disk::Disk;
use queue::{Item, Queue};

use crate::receiver::{Accepted, Handoff, Signal};
use crate::security::LoadError;

/// Items waiting in an exporter's queue (the Collector's
/// `otelcol_exporter_queue_size`), by `exporter`.
pub const QUEUE_SIZE: &str = "triage_exporter_queue_size";
/// Most items an exporter's queue holds (`otelcol_exporter_queue_capacity`).
pub const QUEUE_CAPACITY: &str = "triage_exporter_queue_capacity";
/// Request bytes waiting in an exporter's queue.
pub const QUEUE_BYTES: &str = "triage_exporter_queue_bytes";
/// Most request bytes an exporter's queue holds (`queue_size_mib`).
pub const QUEUE_CAPACITY_BYTES: &str = "triage_exporter_queue_capacity_bytes";
/// Items the upstream accepted, by `exporter` and `signal` (the
/// Collector's `otelcol_exporter_sent_spans`, `_metric_points`,
/// `_log_records`).
pub const SENT: &str = "triage_exporter_sent_items_total";
/// Items given up on after they were queued, by `exporter`, `signal` and
/// `reason`: `permanent` (a non-retryable error), `retries_exhausted`
/// (`max_elapsed_time` passed), `rejected` (the upstream's partial
/// success), `shutdown` (still queued, in memory, when the shutdown flush
/// ended). The Collector's `otelcol_exporter_send_failed_*`.
pub const SEND_FAILED: &str = "triage_exporter_send_failed_items_total";
/// Items that did not fit in the queue and were dropped, by `exporter` and
/// `signal` (the Collector's `otelcol_exporter_enqueue_failed_*`).
pub const ENQUEUE_FAILED: &str = "triage_exporter_enqueue_failed_items_total";
/// Attempts that failed with a retryable error and were retried, by
/// `exporter` and `signal` (export requests, that is batches, not items).
pub const RETRIES: &str = "triage_exporter_retries_total";
/// The batch sizes (kept in `telemetry`, which sets their buckets).
pub use crate::telemetry::{BATCH_SEND_SIZE, BATCH_SEND_SIZE_BYTES};
/// Writes of the persistent queue that failed, by `exporter`; the requests
/// are sent from memory instead.
pub const PERSIST_FAILED: &str = "triage_exporter_persist_failures_total";

const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];
const REASONS: [&str; 4] = ["permanent", "retries_exhausted", "rejected", "shutdown"];
/// Least time between two warnings of one kind from one exporter.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why forwarding could not start (names the config field).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A TLS file or header is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The persistent queue's directory cannot be used.
    #[error("{field}: cannot use {path} for the persistent queue: {error}")]
    Storage {
        field: String,
        path: String,
        error: std::io::Error,
    },
}

/// Every exporter, and the tasks sending for them.
pub struct Forwarder {
    exporters: Vec<Arc<Exporter>>,
    /// Senders and disk writers; they end when their queue is closed and
    /// empty, or when `abandon` is cancelled.
    tasks: JoinSet<()>,
    /// Stops the senders mid-retry at the end of the shutdown flush.
    abandon: CancellationToken,
}

/// One exporter: its queue, its client and its self-metrics.
struct Exporter {
    name: String,
    config: ExporterConfig,
    queue: Queue,
    client: Client,
    disk: Option<Arc<Disk>>,
    metrics: Metrics,
    /// Rate limits of the warnings.
    full_warned: RateLimit,
    failed_warned: RateLimit,
}

/// Counter handles of one exporter, made once, by signal.
struct Metrics {
    sent: [Counter; 3],
    enqueue_failed: [Counter; 3],
    retries: [Counter; 3],
    batch_items: [Histogram; 3],
    batch_bytes: [Histogram; 3],
    /// By signal, then by reason ([`REASONS`]).
    send_failed: [[Counter; 4]; 3],
    persist_failed: Counter,
}

/// A warning allowed at most once per [`LOG_EVERY`]; counts what it held
/// back.
#[derive(Default)]
struct RateLimit {
    /// Milliseconds since `start` of the last warning, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// Registers the descriptions (once per process).
pub fn describe_metrics() {
    describe_gauge!(
        QUEUE_SIZE,
        "Items waiting in the forwarding queue, by exporter."
    );
    describe_gauge!(
        QUEUE_CAPACITY,
        "Most items the forwarding queue holds, by exporter."
    );
    describe_gauge!(
        QUEUE_BYTES,
        Unit::Bytes,
        "Request bytes waiting in the forwarding queue, by exporter."
    );
    describe_gauge!(
        QUEUE_CAPACITY_BYTES,
        Unit::Bytes,
        "Most request bytes the forwarding queue holds, by exporter."
    );
    describe_counter!(SENT, "Items the upstream accepted, by exporter and signal.");
    describe_counter!(
        SEND_FAILED,
        "Items given up on after queueing, by exporter, signal and reason."
    );
    describe_counter!(
        ENQUEUE_FAILED,
        "Items dropped because the forwarding queue was full, by exporter and signal."
    );
    describe_counter!(
        RETRIES,
        "Forwarding requests retried after a retryable error, by exporter and signal."
    );
    describe_counter!(
        PERSIST_FAILED,
        "Failed writes of the persistent forwarding queue (sent from memory instead)."
    );
    describe_histogram!(
        BATCH_SEND_SIZE,
        "Items per forwarded export request (one batch), by exporter and signal."
    );
    describe_histogram!(
        BATCH_SEND_SIZE_BYTES,
        Unit::Bytes,
        "Bytes (decompressed) per forwarded export request, by exporter and signal."
    );
}

impl Forwarder {
    /// Sets every exporter up (TLS files, queue directories, requests left
    /// on disk by an earlier run) and starts its senders. `None` when no
    /// exporter is configured: nothing runs.
    pub fn start(config: &ForwardConfig) -> Result<Option<Forwarder>, ForwardError> {
        if config.exporters.is_empty() {
            return Ok(None);
        }
        describe_metrics();
        let abandon = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut exporters = Vec::with_capacity(config.exporters.len());
        for exporter_config in &config.exporters {
            let section = format!("forward.exporters.{}", exporter_config.name);
            let (exporter, backlog) = Exporter::new(exporter_config, &section)?;
            let exporter = Arc::new(exporter);
            if let Some(disk) = &exporter.disk {
                tasks.spawn(write_to_disk(
                    Arc::clone(&exporter),
                    Arc::clone(disk),
                    backlog,
                ));
            }
            for _ in 0..exporter_config.queue.num_consumers.get() {
                tasks.spawn(send_loop(Arc::clone(&exporter), abandon.clone()));
            }
            tracing::info!(
                exporter = %exporter.name,
                protocol = exporter.config.protocol.as_str(),
                endpoint = %exporter.config.endpoint,
                persistent = exporter.disk.is_some(),
                batch = ?exporter.config.queue.batch,
                "forwarding to an upstream"
            );
            exporters.push(exporter);
        }
        Ok(Some(Forwarder {
            exporters,
            tasks,
            abandon,
        }))
    }

    /// The receivers' side.
    pub fn handoff(&self) -> Arc<dyn Handoff> {
        Arc::new(Intake {
            exporters: self.exporters.clone(),
        })
    }

    /// Shutdown, after the receivers have drained: no more requests are
    /// queued; what is queued is sent for up to `timeout`; then the senders
    /// stop. What is left is counted as dropped (`shutdown`), except in a
    /// persistent queue, where it stays on disk for the next start.
    pub async fn finish(mut self, timeout: Duration) {
        for exporter in &self.exporters {
            exporter.queue.close();
        }
        let drained = tokio::time::timeout(timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.abandon.cancel();
            // Senders return at their next await; disk writers have
            // finished their last write by now or do so promptly.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while self.tasks.join_next().await.is_some() {}
            })
            .await;
        }
        for exporter in &self.exporters {
            let left = exporter.queue.drain();
            let mut lost = 0;
            for item in left {
                if item.segment.is_none() {
                    exporter.count_failed(item.signal, item.items, "shutdown");
                    lost += item.items;
                }
            }
            if lost > 0 {
                tracing::warn!(
                    exporter = %exporter.name,
                    items = lost,
                    "shutdown: items still queued in memory were dropped"
                );
            }
        }
    }
}

/// The receivers' handle: try-pushes into every exporter's queue.
struct Intake {
    exporters: Vec<Arc<Exporter>>,
}

impl Handoff for Intake {
    fn accepted(&self, request: Accepted) {
        let queued = tokio::time::Instant::now();
        for exporter in &self.exporters {
            let item = Item {
                signal: request.signal,
                format: request.format,
                body: request.body.clone(),
                items: request.items,
                queued,
                segment: None,
            };
            if let Err(item) = exporter.queue.try_push(item) {
                exporter.metrics.enqueue_failed[index(item.signal)].increment(item.items);
                exporter.full_warned.warn(|suppressed| {
                    let (items, bytes) = exporter.queue.len();
                    tracing::warn!(
                        exporter = %exporter.name,
                        signal = item.signal.as_str(),
                        dropped_items = item.items,
                        queued_items = items,
                        queued_bytes = bytes,
                        similar_since_last = suppressed,
                        "forwarding queue full: request dropped (upstream slow or down?)"
                    );
                });
            }
        }
    }
}

impl Exporter {
    fn new(
        config: &ExporterConfig,
        section: &str,
    ) -> Result<(Exporter, Vec<std::path::PathBuf>), ForwardError> {
        let client = Client::new(config, section)?;
        let (disk, backlog) = match &config.queue.storage {
            None => (None, Vec::new()),
            Some(dir) => {
                let (disk, backlog) = Disk::open(dir).map_err(|error| ForwardError::Storage {
                    field: format!("{section}.sending_queue.storage"),
                    path: dir.display().to_string(),
                    error,
                })?;
                (Some(Arc::new(disk)), backlog)
            }
        };
        let name = config.name.clone();
        let label = name.clone();
        let capacity_items = config.queue.queue_size.get() as u64;
        let capacity_bytes = config.queue.queue_size_bytes.get() as u64;
        gauge!(QUEUE_CAPACITY, "exporter" => label.clone()).set(capacity_items as f64);
        gauge!(QUEUE_CAPACITY_BYTES, "exporter" => label.clone()).set(capacity_bytes as f64);
        let queue = Queue::new(
            capacity_items,
            capacity_bytes,
            disk.is_some(),
            Limits::new(config.queue.batch.as_ref()),
            gauge!(QUEUE_SIZE, "exporter" => label.clone()),
            gauge!(QUEUE_BYTES, "exporter" => label.clone()),
        );
        // Created now so every series exists at 0 from the start.
        let by_signal = |name: &'static str| {
            SIGNALS.map(|signal| {
                let counter =
                    counter!(name, "exporter" => label.clone(), "signal" => signal.as_str());
                counter.increment(0);
                counter
            })
        };
        let sizes = |name: &'static str| {
            SIGNALS.map(
                |signal| histogram!(name, "exporter" => label.clone(), "signal" => signal.as_str()),
            )
        };
        let metrics = Metrics {
            sent: by_signal(SENT),
            enqueue_failed: by_signal(ENQUEUE_FAILED),
            retries: by_signal(RETRIES),
            batch_items: sizes(BATCH_SEND_SIZE),
            batch_bytes: sizes(BATCH_SEND_SIZE_BYTES),
            send_failed: SIGNALS.map(|signal| {
                REASONS.map(|reason| {
                    let counter = counter!(
                        SEND_FAILED,
                        "exporter" => label.clone(),
                        "signal" => signal.as_str(),
                        "reason" => reason
                    );
                    counter.increment(0);
                    counter
                })
            }),
            persist_failed: {
                let counter = counter!(PERSIST_FAILED, "exporter" => label.clone());
                counter.increment(0);
                counter
            },
        };
        Ok((
            Exporter {
                name,
                config: config.clone(),
                queue,
                client,
                disk,
                metrics,
                full_warned: RateLimit::default(),
                failed_warned: RateLimit::default(),
            },
            backlog,
        ))
    }

    /// Counts `items` of `signal` as given up for `reason`.
    fn count_failed(&self, signal: Signal, items: u64, reason: &'static str) {
        let reason_index = REASONS
            .iter()
            .position(|known| *known == reason)
            .unwrap_or(0);
        self.metrics.send_failed[index(signal)][reason_index].increment(items);
    }

    /// Counts `items` of `batch` as given up for `reason` and removes the
    /// whole batch from disk.
    fn give_up(&self, batch: &Batch, items: u64, reason: &'static str) {
        self.count_failed(batch.signal, items, reason);
        done(&batch.requests);
    }

    /// Sends one batch until it is accepted, refused for good, out of
    /// retries, or the shutdown flush ends.
    async fn deliver(&self, batch: Batch, abandon: &CancellationToken) {
        let signal = index(batch.signal);
        let (items, bytes) = (batch.items(), batch.bytes());
        self.metrics.batch_items[signal].record(items as f64);
        self.metrics.batch_bytes[signal].record(bytes as f64);
        let (signal_of, format, bodies) = (batch.signal, batch.format, batch.bodies());
        let prepared = if self.client.prepare_is_cheap(format, bodies.len(), bytes) {
            Ok(self.client.prepare(signal_of, format, &bodies))
        } else {
            let client = self.client.clone();
            tokio::task::spawn_blocking(move || client.prepare(signal_of, format, &bodies)).await
        };
        let prepared: Prepared = match prepared {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(message)) => {
                self.permanent(&batch, &message);
                return;
            }
            Err(error) => {
                self.permanent(&batch, &format!("cannot prepare the request: {error}"));
                return;
            }
        };
        let retry = &self.config.retry;
        let started = Instant::now();
        let mut interval = retry.initial_interval;
        loop {
            let sent = tokio::select! {
                sent = self.client.send(&prepared) => sent,
                () = abandon.cancelled() => return self.abandoned(batch),
            };
            match sent {
                Ok(delivered) => {
                    let rejected = delivered.rejected.min(items);
                    self.metrics.sent[signal].increment(items - rejected);
                    if rejected > 0 {
                        self.failed_warned.warn(|suppressed| {
                            tracing::warn!(
                                exporter = %self.name,
                                signal = batch.signal.as_str(),
                                rejected,
                                error = %delivered.message,
                                similar_since_last = suppressed,
                                "upstream rejected part of a forwarded request"
                            );
                        });
                        self.give_up(&batch, rejected, "rejected");
                    } else {
                        done(&batch.requests);
                    }
                    return;
                }
                Err(failure) if failure.retryable && retry.enabled => {
                    let wait = failure.retry_after.unwrap_or_else(|| jittered(interval));
                    if !retry.max_elapsed_time.is_zero()
                        && started.elapsed() + wait > retry.max_elapsed_time
                    {
                        self.failed_warned.warn(|suppressed| {
                            tracing::warn!(
                                exporter = %self.name,
                                signal = batch.signal.as_str(),
                                items,
                                requests = batch.requests.len(),
                                error = %failure.message,
                                similar_since_last = suppressed,
                                "forwarding gave up on a request after retrying for max_elapsed_time; dropped"
                            );
                        });
                        self.give_up(&batch, items, "retries_exhausted");
                        return;
                    }
                    self.metrics.retries[signal].increment(1);
                    tracing::debug!(exporter = %self.name, error = %failure.message, ?wait, "forwarding failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = abandon.cancelled() => return self.abandoned(batch),
                    }
                    interval = interval.mul_f64(1.5).min(retry.max_interval);
                }
                Err(failure) => {
                    self.permanent(&batch, &describe_failure(&failure, retry.enabled));
                    return;
                }
            }
        }
    }

    fn permanent(&self, batch: &Batch, message: &str) {
        let items = batch.items();
        self.failed_warned.warn(|suppressed| {
            tracing::warn!(
                exporter = %self.name,
                signal = batch.signal.as_str(),
                items,
                requests = batch.requests.len(),
                error = message,
                similar_since_last = suppressed,
                "upstream refused a forwarded request for good; dropped, not retried"
            );
        });
        self.give_up(batch, items, "permanent");
    }

    /// The shutdown flush ended while `batch` was being sent: its persisted
    /// requests stay on disk; those in memory are lost, and counted.
    fn abandoned(&self, batch: Batch) {
        let lost = batch
            .requests
            .iter()
            .filter(|request| request.segment.is_none())
            .map(|request| request.items)
            .sum();
        self.count_failed(batch.signal, lost, "shutdown");
    }
}

fn describe_failure(failure: &Failure, retry_enabled: bool) -> String {
    if failure.retryable && !retry_enabled {
        format!("{} (retry_on_failure is disabled)", failure.message)
    } else {
        failure.message.clone()
    }
}

/// Marks each request done in its segment (deleting a file with its
/// last).
fn done(requests: &[Item]) {
    let segments: Vec<_> = requests
        .iter()
        .filter_map(|request| request.segment.clone())
        .collect();
    if !segments.is_empty() {
        // Unlinking is brief, but it is file I/O: off the async workers.
        tokio::task::spawn_blocking(move || segments.iter().for_each(|segment| segment.done()));
    }
}

/// `interval` +/- 50% (the Collector's randomization factor), so that many
/// senders that failed together do not retry together.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(0.5 + unit)
}

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

/// One sender: takes batches from the queue until it is closed and empty.
async fn send_loop(exporter: Arc<Exporter>, abandon: CancellationToken) {
    loop {
        let batch = tokio::select! {
            batch = exporter.queue.pop() => batch,
            () = abandon.cancelled() => None,
        };
        let Some(batch) = batch else { return };
        exporter.deliver(batch, &abandon).await;
    }
}

/// The disk writer of a persistent queue: writes staged requests as
/// segments and makes them ready; reads segments left by an earlier run
/// back while the queue has room.
async fn write_to_disk(exporter: Arc<Exporter>, disk: Arc<Disk>, backlog: Vec<std::path::PathBuf>) {
    let mut backlog: std::collections::VecDeque<_> = backlog.into();
    if !backlog.is_empty() {
        tracing::info!(
            exporter = %exporter.name,
            segments = backlog.len(),
            "resuming the persistent forwarding queue"
        );
    }
    loop {
        while !backlog.is_empty() && exporter.queue.has_room_to_restore() {
            let Some(path) = backlog.pop_front() else {
                break;
            };
            let reader = Arc::clone(&disk);
            let loaded = tokio::task::spawn_blocking(move || {
                let loaded = reader.load(&path);
                (path, loaded)
            })
            .await;
            match loaded {
                Ok((_, Ok(items))) => exporter.queue.restore(items),
                Ok((path, Err(error))) => tracing::error!(
                    exporter = %exporter.name,
                    path = %path.display(),
                    %error,
                    "cannot read a segment of the persistent forwarding queue; it is left on disk"
                ),
                Err(error) => {
                    tracing::error!(exporter = %exporter.name, %error, "segment reader failed")
                }
            }
        }
        let staged = exporter.queue.take_staged();
        if staged.is_empty() {
            if exporter.queue.is_closed() {
                return;
            }
            if backlog.is_empty() {
                exporter.queue.staged_or_closed().await;
            } else {
                // Waiting for room to read the next old segment.
                tokio::select! {
                    () = exporter.queue.staged_or_closed() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            continue;
        }
        let writer = Arc::clone(&disk);
        let written = tokio::task::spawn_blocking(move || {
            let mut staged = staged;
            let result = writer.write(&mut staged);
            (staged, result)
        })
        .await;
        match written {
            Ok((staged, result)) => {
                if let Err(error) = result {
                    exporter.metrics.persist_failed.increment(1);
                    exporter.failed_warned.warn(|suppressed| {
                        tracing::error!(
                            exporter = %exporter.name,
                            %error,
                            similar_since_last = suppressed,
                            "cannot write the persistent forwarding queue; sending from memory"
                        );
                    });
                }
                exporter.queue.make_ready(staged);
            }
            Err(error) => {
                exporter.metrics.persist_failed.increment(1);
                tracing::error!(exporter = %exporter.name, %error, "persistent queue writer failed");
            }
        }
    }
}

// === impl RateLimit ===

impl RateLimit {
    /// Calls `log` with the number of warnings held back since the last
    /// one, unless one was logged within [`LOG_EVERY`].
    fn warn(&self, log: impl FnOnce(u64)) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        self.warn_at(START.get_or_init(Instant::now).elapsed(), log);
    }

    /// [`RateLimit::warn`] at `elapsed` since a fixed start.
    fn warn_at(&self, elapsed: Duration, log: impl FnOnce(u64)) {
        let now = elapsed.as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_held_back() {
        let limit = RateLimit::default();
        let mut logged = Vec::new();
        for second in 0..5 {
            limit.warn_at(Duration::from_secs(second), |suppressed| {
                logged.push(suppressed)
            });
        }
        assert_eq!(logged, [0], "one warning per interval");
        // The interval has passed: the next warning tells of the four.
        limit.warn_at(Duration::from_secs(10), |suppressed| {
            logged.push(suppressed)
        });
        limit.warn_at(Duration::from_secs(11), |suppressed| {
            logged.push(suppressed)
        });
        assert_eq!(logged, [0, 4]);
        assert_eq!(limit.suppressed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn jitter_stays_within_half_the_interval() {
        let interval = Duration::from_millis(1000);
        let draws: Vec<_> = (0..200).map(|_| jittered(interval)).collect();
        assert!(draws
            .iter()
            .all(|wait| (500..=1500).contains(&wait.as_millis())));
        // Not all the same: senders that failed together spread out.
        assert!(draws.iter().any(|wait| *wait != draws[0]));
    }
}
