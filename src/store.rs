//! The RED store: every series `triage` knows, in event-time windows.
//!
//! A series is identified by a [`SeriesKey`]: its kind (operation, dependency
//! edge, metric, log severity), its service and a name (operation, callee,
//! metric key or severity). Each series owns a [`window::Ring`] of windows of
//! request and error counts and a latency histogram
//! ([`histogram::LatencyHistogram`]).
//!
//! # Concurrency
//!
//! There is no global lock on the recording path. Services live in a
//! `DashMap` (sharded read-write locks, read-locked only for the lookup), each
//! service holds one `DashMap` per series kind, and each series has its own
//! mutex that is held only while a sample is added (tens of nanoseconds).
//! Lookups borrow the `&str` from the decoded request, so a sample of an
//! existing series allocates nothing. Readers take the same short per-series
//! lock to copy or merge windows; ingestion of other series goes on meanwhile.
//!
//! # Bounds
//!
//! The number of series is capped in total and per service. A sample that
//! would create a series past a cap is recorded in its service's overflow
//! series ([`OVERFLOW`]) of the same kind, so totals are conserved; a service
//! that would be created past the total cap goes to the overflow service.
//! Idle series are dropped by [`Store::sweep`].

// No clock and no I/O here: see clippy.toml and tests/it/walls.rs.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod changes;
pub mod config;
pub mod histogram;
pub mod metric;
pub mod pairing;
pub mod window;

pub use config::*;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use self::histogram::LatencyHistogram;
use self::metric::CumulativeTracker;
use self::pairing::PairingBuffer;
use self::window::{Exemplars, Ring, SubWindows, Totals, ValueStats, SUB_WINDOWS, VALUE_SCALE};
use crate::model::{SeriesKey, SeriesKind, UNKNOWN_PEER};
use crate::telemetry;

/// Name of the series (and service) that samples past a cardinality cap are
/// folded into.
pub const OVERFLOW: &str = "__overflow__";

/// One span's contribution to a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Event time: the span's end, in Unix nanoseconds.
    pub end_unix_nanos: u64,
    pub duration_nanos: u64,
    pub error: bool,
    /// The span's trace id (0 when unknown), kept as an exemplar when the
    /// span is the slowest or a failing one of its window.
    pub trace_id: u128,
}

/// Requests already counted elsewhere (span metrics, service-graph and
/// service-mesh metrics, agent summaries), for one operation, edge or own
/// series: what [`Store::record_red`] adds to a window at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedPoint<'a> {
    /// Event time, Unix nanoseconds: the window (and sub-window) it lands in.
    pub time: u64,
    pub requests: u64,
    /// Failed requests. They may arrive without their requests (a
    /// `failed` counter is a separate metric), so they are not capped by
    /// `requests` here.
    pub errors: u64,
    /// Latencies as (microseconds, how many).
    pub latencies: &'a [(u64, u64)],
    /// Exemplars as (latency in microseconds, failed, trace id).
    pub exemplars: &'a [(u64, bool, u128)],
}

/// Where "now" comes from. Live mode uses the wall clock; tests and replay
/// drive time themselves.
pub trait Clock: Send + Sync + 'static {
    fn now_unix_nanos(&self) -> u64;
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_unix_nanos: u64) -> Self {
        ManualClock(AtomicU64::new(now_unix_nanos))
    }

    pub fn set(&self, now_unix_nanos: u64) {
        self.0.store(now_unix_nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_unix_nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A concurrent map keyed by names taken from telemetry. foldhash is several
/// times faster than the default SipHash on short keys and is seeded per
/// process, so crafted names cannot be aimed at one shard.
type NameMap<V> = DashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// One series: its key, its windows and when it last saw a sample.
#[derive(Debug)]
pub struct Series {
    pub key: SeriesKey,
    /// The windows. Locked only while one sample (or one read) is applied.
    ring: Mutex<Ring>,
    /// Store-clock time of the last sample, for the idle TTL.
    last_seen: AtomicU64,
}

/// A service and its series, one map per kind.
#[derive(Debug)]
pub struct ServiceEntry {
    pub name: Arc<str>,
    series: [NameMap<Arc<Series>>; SeriesKind::ALL.len()],
    /// Series of this service, for the per-service cap (own-time series
    /// are not counted: they are bounded by the operation series).
    n_series: AtomicUsize,
    /// Store-clock time of the last lookup, so the sweep never removes a
    /// service a request is recording into.
    last_seen: AtomicU64,
}

impl ServiceEntry {
    fn new(name: Arc<str>) -> Self {
        ServiceEntry {
            name,
            series: Default::default(),
            n_series: AtomicUsize::new(0),
            last_seen: AtomicU64::new(0),
        }
    }
}

/// Counters the store keeps about itself; read by the self-metrics exporter.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Samples recorded into an overflow series because a cap was reached.
    pub overflow_samples: AtomicU64,
    /// Samples older than their series' ring (counted in totals, not windows).
    pub late_samples: AtomicU64,
    /// Samples whose event time was ahead of the clock by more than a window
    /// and were recorded in the current window instead.
    pub future_samples: AtomicU64,
    /// Series dropped after being idle longer than the TTL.
    pub expired_series: AtomicU64,
    /// Samples that arrived for a window detection had already closed. They
    /// are recorded (totals stay exact) but detection did not see them.
    pub after_close_samples: AtomicU64,
}

/// Statistics of one series over a time range (merged windows).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesStats {
    /// First and last window index merged (inclusive), if any window matched.
    pub windows: Option<(i64, i64)>,
    pub requests: u64,
    pub errors: u64,
    /// `errors / requests`, 0 when there were no requests.
    pub error_rate: f64,
    /// Latency quantiles in milliseconds (spans) or the metric's unit
    /// (distributions); `None` when nothing with a latency was recorded.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Gauge/sum points in the range.
    pub values: ValueStats,
}

/// One series' window, as handed to detection.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSnapshot {
    pub key: SeriesKey,
    pub stats: SeriesStats,
    /// Trace ids of the slowest and of failing spans of the window.
    pub exemplars: Vec<u128>,
    /// The window's sub-windows (span and log series), for placing an
    /// onset inside the window.
    pub subs: Option<SubWindows>,
}

fn window_stats(window: &window::Window, index: i64) -> SeriesStats {
    let histogram = Some(&window.histogram).filter(|histogram| !histogram.is_empty());
    let [p50, p90, p95, p99] = latency_quantiles(histogram);
    SeriesStats {
        windows: Some((index, index)),
        requests: window.requests,
        errors: window.errors,
        error_rate: if window.requests == 0 {
            0.0
        } else {
            window.errors as f64 / window.requests as f64
        },
        p50,
        p90,
        p95,
        p99,
        max: histogram.map(|histogram| histogram.max() as f64 / VALUE_SCALE),
        values: window.values,
    }
}

/// Adds `histogram` to `merged` (a copy of it, the first time).
fn merge_into(merged: &mut Option<LatencyHistogram>, histogram: &LatencyHistogram) {
    if histogram.is_empty() {
        return;
    }
    match merged {
        None => *merged = Some(histogram.clone()),
        Some(total) => total.merge(histogram),
    }
}

/// The p50, p90, p95 and p99 of a latency histogram, scaled to
/// milliseconds (spans) or the metric's unit, read in one pass over its
/// counts; all `None` for no histogram or an empty one.
fn latency_quantiles(histogram: Option<&LatencyHistogram>) -> [Option<f64>; 4] {
    const QUANTILES: [f64; 4] = [0.50, 0.90, 0.95, 0.99];
    let Some(histogram) = histogram.filter(|histogram| !histogram.is_empty()) else {
        return [None; 4];
    };
    histogram
        .value_at_quantiles(QUANTILES)
        .map(|value| Some(value as f64 / VALUE_SCALE))
}

/// A dependency edge as listed by [`Store::edges`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub caller: Arc<str>,
    pub callee: Arc<str>,
}

/// The RED store. Cheap to share behind an `Arc`.
pub struct Store {
    config: StoreConfig,
    window_nanos: u64,
    /// Length of a sub-window (`window_nanos / SUB_WINDOWS`, at least 1).
    sub_nanos: u64,
    clock: Arc<dyn Clock>,
    services: NameMap<Arc<ServiceEntry>>,
    /// Series across all services, for the total cap.
    n_series: AtomicUsize,
    pub counters: StoreCounters,
    pub(crate) pairing: PairingBuffer,
    pub(crate) cumulative: CumulativeTracker,
    /// Interned peer names of client spans waiting in the pairing buffer,
    /// so that buffering a span does not allocate its fallback callee name.
    names: NameMap<()>,
    unknown_peer: Arc<str>,
    /// The newest window detection has closed (`i64::MIN` before the first).
    closed_through: AtomicI64,
}

/// Bound on interned peer names; past it new names resolve to `unknown`.
const MAX_INTERNED_NAMES: usize = 50_000;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("n_services", &self.services.len())
            .field("n_series", &self.n_series.load(Ordering::Relaxed))
            .finish()
    }
}

impl Store {
    /// A store whose "now" (pairing expiry, sweeping, the read API's
    /// defaults) comes from `clock`: the wall clock in live mode
    /// (`pipeline::WallClock`), the newest event time in replay.
    pub fn with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        let window_nanos = (config.window.as_nanos() as u64).max(1);
        let pairing = PairingBuffer::new(config.pairing_capacity.get(), config.pairing_timeout);
        Store {
            window_nanos,
            sub_nanos: (window_nanos / SUB_WINDOWS as u64).max(1),
            clock,
            services: NameMap::default(),
            n_series: AtomicUsize::new(0),
            counters: StoreCounters::default(),
            pairing,
            cumulative: CumulativeTracker::default(),
            names: NameMap::default(),
            unknown_peer: Arc::from(UNKNOWN_PEER),
            closed_through: AtomicI64::new(i64::MIN),
            config,
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn now_unix_nanos(&self) -> u64 {
        self.clock.now_unix_nanos()
    }

    /// The window number an event time falls in.
    pub fn window_index(&self, unix_nanos: u64) -> i64 {
        (unix_nanos / self.window_nanos) as i64
    }

    /// Start of window `index`, in Unix nanoseconds.
    pub fn window_start(&self, index: i64) -> u64 {
        (index.max(0) as u64).saturating_mul(self.window_nanos)
    }

    /// Number of series currently held (own-time series, bounded by the
    /// operation series, are not counted).
    pub fn n_series(&self) -> usize {
        self.n_series.load(Ordering::Relaxed)
    }

    /// The entry of a service, created on first use. Past the total cap a new
    /// service resolves to the overflow service.
    pub fn service(&self, name: &str) -> Arc<ServiceEntry> {
        let now = self.clock.now_unix_nanos();
        if let Some(entry) = self.services.get(name) {
            entry.last_seen.store(now, Ordering::Relaxed);
            return Arc::clone(entry.value());
        }
        let name = if self.n_series() >= self.config.max_series.get() {
            OVERFLOW
        } else {
            name
        };
        let entry = match self.services.entry(Arc::from(name)) {
            dashmap::Entry::Occupied(occupied) => Arc::clone(occupied.get()),
            dashmap::Entry::Vacant(vacant) => {
                let entry = Arc::new(ServiceEntry::new(Arc::clone(vacant.key())));
                vacant.insert(Arc::clone(&entry));
                entry
            }
        };
        entry.last_seen.store(now, Ordering::Relaxed);
        entry
    }

    /// Records one span of `service` on its operation series.
    pub fn record_operation(&self, service: &ServiceEntry, operation: &str, sample: Sample) {
        let now = self.clock.now_unix_nanos();
        self.record_span(service, SeriesKind::Operation, operation, sample, now);
    }

    /// Records one call from `service` to `callee` on the edge series.
    pub fn record_edge(&self, service: &ServiceEntry, callee: &str, sample: Sample) {
        let now = self.clock.now_unix_nanos();
        self.record_span(service, SeriesKind::Edge, callee, sample, now);
    }

    /// Records one span on a series of `kind` (operation or edge), with the
    /// store-clock time `now` read once per request by the caller: the
    /// batch form of [`Store::record_operation`] and [`Store::record_edge`].
    pub fn record_span(
        &self,
        service: &ServiceEntry,
        kind: SeriesKind,
        name: &str,
        sample: Sample,
        now: u64,
    ) {
        let (index, sub) = self.event_slot(sample.end_unix_nanos, now);
        let latency = sample.duration_nanos / 1_000;
        self.with_series(service, kind, name, now, |ring| {
            ring.record_span(index, sub, latency, sample.error, sample.trace_id)
        });
    }

    /// Records pre-aggregated requests on a series of `kind` (operation,
    /// edge or own), as the spans they summarise would have been.
    pub fn record_red(
        &self,
        service: &ServiceEntry,
        kind: SeriesKind,
        name: &str,
        point: &RedPoint<'_>,
    ) {
        let now = self.clock.now_unix_nanos();
        let (index, sub) = self.event_slot(point.time, now);
        self.with_series(service, kind, name, now, |ring| {
            ring.record_red(index, sub, point)
        });
    }

    /// Records `count` log records (`errors` of them at ERROR or above) at
    /// `time` on the log series `name` of `service`.
    pub fn record_logs(
        &self,
        service: &ServiceEntry,
        name: &str,
        time: u64,
        count: u64,
        errors: u64,
    ) {
        let now = self.clock.now_unix_nanos();
        let (index, sub) = self.event_slot(time, now);
        self.with_series(service, SeriesKind::Log, name, now, |ring| {
            ring.record(index, sub, count, errors, None)
        });
    }

    /// Records a gauge value or a sum delta on the metric series `name`.
    pub fn record_value(&self, service: &ServiceEntry, name: &str, time: u64, value: f64) {
        let now = self.clock.now_unix_nanos();
        let index = self.event_window(time, now);
        self.with_series(service, SeriesKind::Metric, name, now, |ring| {
            ring.record_value(index, value, time)
        });
    }

    /// Records a distribution: `count` observations summing to `sum`, given as
    /// (representative value in the metric's unit, count) pairs.
    pub fn record_distribution(
        &self,
        service: &ServiceEntry,
        name: &str,
        time: u64,
        count: u64,
        sum: f64,
        buckets: &[(f64, u64)],
    ) {
        let now = self.clock.now_unix_nanos();
        let index = self.event_window(time, now);
        let scaled = buckets
            .iter()
            .map(|&(value, n)| ((value.max(0.0) * VALUE_SCALE).round() as u64, n));
        self.with_series(service, SeriesKind::Metric, name, now, |ring| {
            ring.record_distribution(index, count, sum, time, scaled)
        });
    }

    /// The window for an event time. Times more than one window ahead of the
    /// clock (skewed clocks, bad data) are recorded in the current window
    /// rather than wiping a slot of the ring, and counted.
    fn event_window(&self, unix_nanos: u64, now: u64) -> i64 {
        self.event_slot(unix_nanos, now).0
    }

    /// The window and the sub-window an event time falls in (see
    /// [`Store::event_window`]; a time from the future is placed at `now`).
    fn event_slot(&self, unix_nanos: u64, now: u64) -> (i64, usize) {
        let time = if unix_nanos > now.saturating_add(self.window_nanos) {
            self.counters.future_samples.fetch_add(1, Ordering::Relaxed);
            now
        } else {
            unix_nanos
        };
        let index = self.window_index(time);
        if index <= self.closed_through.load(Ordering::Relaxed) {
            self.counters
                .after_close_samples
                .fetch_add(1, Ordering::Relaxed);
        }
        let sub = ((time % self.window_nanos) / self.sub_nanos) as usize;
        (index, sub.min(SUB_WINDOWS - 1))
    }

    /// Marks windows up to `index` as closed by detection: samples for them
    /// from now on are counted in `after_close_samples`.
    pub fn mark_closed(&self, index: i64) {
        self.closed_through.fetch_max(index, Ordering::Relaxed);
    }

    /// The newest window marked closed, if any.
    pub fn closed_through(&self) -> Option<i64> {
        let index = self.closed_through.load(Ordering::Relaxed);
        (index != i64::MIN).then_some(index)
    }

    /// Finds (or creates, within the caps) the series and applies `apply` to
    /// its ring under the series lock. `apply` returns false for late samples.
    fn with_series(
        &self,
        service: &ServiceEntry,
        kind: SeriesKind,
        name: &str,
        now: u64,
        apply: impl FnOnce(&mut Ring) -> bool,
    ) {
        let map = &service.series[kind.index()];
        let recorded = if let Some(series) = map.get(name) {
            series.last_seen.store(now, Ordering::Relaxed);
            apply(&mut series.ring.lock())
        } else {
            let series = self.create_series(service, kind, name);
            series.last_seen.store(now, Ordering::Relaxed);
            let recorded = apply(&mut series.ring.lock());
            recorded
        };
        if !recorded {
            self.counters.late_samples.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Slow path: a series that does not exist yet. Returns the overflow
    /// series of the service when a cap is reached.
    fn create_series(&self, service: &ServiceEntry, kind: SeriesKind, name: &str) -> Arc<Series> {
        let map = &service.series[kind.index()];
        // An own-time series also needs its operation's series: at most one
        // per operation (plus one overflow). Every kind counts in the caps,
        // which bound memory.
        let has_operation = kind != SeriesKind::Own
            || service.series[SeriesKind::Operation.index()].contains_key(name);
        let within_caps = name != OVERFLOW
            && has_operation
            && self.n_series() < self.config.max_series.get()
            && service.n_series.load(Ordering::Relaxed) < self.config.max_series_per_service.get();
        let name = if within_caps {
            name
        } else {
            // A span whose operation overflowed was counted there already.
            if has_operation {
                self.counters
                    .overflow_samples
                    .fetch_add(1, Ordering::Relaxed);
            }
            OVERFLOW
        };
        match map.entry(Arc::from(name)) {
            dashmap::Entry::Occupied(occupied) => Arc::clone(occupied.get()),
            dashmap::Entry::Vacant(vacant) => {
                // Counted under the shard's write lock, so each series is counted once.
                self.n_series.fetch_add(1, Ordering::Relaxed);
                service.n_series.fetch_add(1, Ordering::Relaxed);
                let series = Arc::new(Series {
                    key: SeriesKey {
                        kind,
                        service: Arc::clone(&service.name),
                        name: Arc::clone(vacant.key()),
                    },
                    ring: Mutex::new(Ring::new(self.config.windows.get())),
                    last_seen: AtomicU64::new(0),
                });
                vacant.insert(Arc::clone(&series));
                series
            }
        }
    }

    /// A shared copy of a peer name (bounded; see [`MAX_INTERNED_NAMES`]).
    pub fn intern(&self, name: &str) -> Arc<str> {
        if let Some(entry) = self.names.get(name) {
            return Arc::clone(entry.key());
        }
        if self.names.len() >= MAX_INTERNED_NAMES {
            return Arc::clone(&self.unknown_peer);
        }
        let name: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&name), ());
        name
    }

    /// Client spans in the pairing buffer waiting for their child.
    pub fn pairing_len(&self) -> usize {
        self.pairing.len()
    }

    /// Pairing counters (paired, expired, full), for self-metrics.
    pub fn pairing_counters(&self) -> &pairing::PairingCounters {
        &self.pairing.counters
    }

    /// Resolves client spans that waited longer than the pairing timeout to
    /// the callee named by their own attributes. Returns how many.
    pub fn expire_pairs(&self) -> usize {
        let resolved = self.pairing.expire(self.clock.now_unix_nanos());
        self.record_resolved(resolved)
    }

    /// Resolves every waiting client span now (at shutdown, or at the end of
    /// a replay). Returns how many.
    pub fn flush_pairs(&self) -> usize {
        let resolved = self.pairing.flush();
        self.record_resolved(resolved)
    }

    fn record_resolved(&self, resolved: Vec<pairing::Resolved>) -> usize {
        let n = resolved.len();
        for edge in resolved {
            let caller = self.service(&edge.caller);
            self.record_edge(&caller, &edge.callee, edge.sample);
        }
        n
    }

    /// Mirrors the store's own counters into self-metrics; called on each
    /// scrape of `/metrics`.
    pub fn report_gauges(&self) {
        metrics::gauge!(telemetry::STORE_SERIES).set(self.n_series() as f64);
        metrics::gauge!(telemetry::STORE_SERVICES).set(self.services().len() as f64);
        metrics::gauge!(telemetry::STORE_HISTOGRAM_BYTES).set(self.histogram_bytes() as f64);
        metrics::gauge!(telemetry::PAIRING_SIZE).set(self.pairing_len() as f64);
        let counters = &self.counters;
        metrics::counter!(telemetry::STORE_OVERFLOW)
            .absolute(counters.overflow_samples.load(Ordering::Relaxed));
        metrics::counter!(telemetry::STORE_LATE)
            .absolute(counters.late_samples.load(Ordering::Relaxed));
        metrics::counter!(telemetry::STORE_FUTURE)
            .absolute(counters.future_samples.load(Ordering::Relaxed));
        metrics::counter!(telemetry::STORE_EXPIRED)
            .absolute(counters.expired_series.load(Ordering::Relaxed));
        let pairing = self.pairing_counters();
        for (result, value) in [
            ("paired", &pairing.paired),
            ("expired_client", &pairing.expired_clients),
            ("expired_child", &pairing.expired_children),
            ("full", &pairing.full),
        ] {
            metrics::counter!(telemetry::PAIRING_RESULTS, "result" => result)
                .absolute(value.load(Ordering::Relaxed));
        }
    }

    /// Drops series idle longer than the TTL and services left without
    /// series. Returns the number of series dropped.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_unix_nanos();
        let ttl = self.config.series_ttl.as_nanos() as u64;
        let mut dropped = 0;
        for service in self.services.iter() {
            for map in &service.series {
                map.retain(|_, series| {
                    let idle = now.saturating_sub(series.last_seen.load(Ordering::Relaxed));
                    let keep = idle <= ttl;
                    if !keep {
                        dropped += 1;
                        service.n_series.fetch_sub(1, Ordering::Relaxed);
                    }
                    keep
                });
            }
        }
        // A service is removed only once idle for a whole TTL as well, so an
        // ingest request that has just looked it up keeps recording into it.
        self.services.retain(|_, service| {
            service.n_series.load(Ordering::Relaxed) > 0
                || now.saturating_sub(service.last_seen.load(Ordering::Relaxed)) <= ttl
        });
        self.cumulative.sweep(now.saturating_sub(ttl));
        if self.names.len() >= MAX_INTERNED_NAMES {
            self.names.clear();
        }
        self.n_series.fetch_sub(dropped, Ordering::Relaxed);
        self.counters
            .expired_series
            .fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    // === read API ===

    /// Names of all services, sorted.
    pub fn services(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .services
            .iter()
            .map(|entry| Arc::clone(entry.key()))
            .collect();
        names.sort();
        names
    }

    /// Keys of a service's series of one kind, sorted by name.
    pub fn series(&self, service: &str, kind: SeriesKind) -> Vec<SeriesKey> {
        let Some(entry) = self.services.get(service) else {
            return Vec::new();
        };
        let mut keys: Vec<SeriesKey> = entry.series[kind.index()]
            .iter()
            .map(|series| series.key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Operation names of a service, sorted.
    pub fn operations(&self, service: &str) -> Vec<Arc<str>> {
        self.series(service, SeriesKind::Operation)
            .into_iter()
            .map(|key| key.name)
            .collect()
    }

    /// All dependency edges, sorted.
    pub fn edges(&self) -> Vec<Edge> {
        let mut edges: BTreeSet<Edge> = BTreeSet::new();
        for service in self.services.iter() {
            for callee in service.series[SeriesKind::Edge.index()].iter() {
                edges.insert(Edge {
                    caller: Arc::clone(&service.name),
                    callee: Arc::clone(callee.key()),
                });
            }
        }
        edges.into_iter().collect()
    }

    fn find(&self, key: &SeriesKey) -> Option<Arc<Series>> {
        let service = self.services.get(&*key.service)?;
        let series = service.series[key.kind.index()].get(&*key.name)?;
        Some(Arc::clone(series.value()))
    }

    /// Lifetime totals of a series (including late samples).
    pub fn totals(&self, key: &SeriesKey) -> Option<Totals> {
        Some(self.find(key)?.ring.lock().totals)
    }

    /// Statistics of a series over the windows whose start lies in
    /// `[from_unix_nanos, to_unix_nanos)`.
    pub fn stats(
        &self,
        key: &SeriesKey,
        from_unix_nanos: u64,
        to_unix_nanos: u64,
    ) -> Option<SeriesStats> {
        let from = self.window_index(from_unix_nanos);
        let to = self.window_index(to_unix_nanos.saturating_sub(1));
        self.stats_windows(key, from, to)
    }

    /// Requests of a series over windows `from..=to` and its latency at
    /// quantile `q` over them (scaled as in [`SeriesStats`]; `None` without
    /// latencies): what [`Store::stats_windows`] gives for one quantile,
    /// without the rest.
    pub fn quantile_windows(
        &self,
        key: &SeriesKey,
        from: i64,
        to: i64,
        q: f64,
    ) -> Option<(u64, Option<f64>)> {
        let series = self.find(key)?;
        let mut requests = 0;
        let mut merged: Option<LatencyHistogram> = None;
        let ring = series.ring.lock();
        for window in ring.windows(from, to) {
            requests += window.requests;
            merge_into(&mut merged, &window.histogram);
        }
        let value = merged
            .filter(|histogram| !histogram.is_empty())
            .map(|histogram| histogram.value_at_quantile(q) as f64 / VALUE_SCALE);
        Some((requests, value))
    }

    /// Statistics of a series over windows `from..=to` (window indices).
    pub fn stats_windows(&self, key: &SeriesKey, from: i64, to: i64) -> Option<SeriesStats> {
        let series = self.find(key)?;
        let mut requests = 0;
        let mut errors = 0;
        let mut values = ValueStats::default();
        let mut merged: Option<LatencyHistogram> = None;
        let mut range: Option<(i64, i64)> = None;
        {
            let ring = series.ring.lock();
            for window in ring.windows(from, to) {
                let index = window.index.unwrap_or_default();
                range = Some(match range {
                    None => (index, index),
                    Some((first, _)) => (first, index),
                });
                requests += window.requests;
                errors += window.errors;
                values.merge(&window.values);
                merge_into(&mut merged, &window.histogram);
            }
        }
        let [p50, p90, p95, p99] = latency_quantiles(merged.as_ref());
        Some(SeriesStats {
            windows: range,
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50,
            p90,
            p95,
            p99,
            max: merged
                .as_ref()
                .filter(|histogram| !histogram.is_empty())
                .map(|histogram| histogram.max() as f64 / VALUE_SCALE),
            values,
        })
    }

    /// Every series with data in window `index`, with its statistics and
    /// exemplar trace ids, sorted by key (so that replays are deterministic).
    pub fn snapshot(&self, index: i64) -> Vec<WindowSnapshot> {
        // The series are sorted first (a pointer each), so that each
        // snapshot (several hundred bytes) is moved once, not by the sort.
        let mut series: Vec<Arc<Series>> = Vec::with_capacity(self.n_series());
        for service in self.services.iter() {
            for map in &service.series {
                series.extend(map.iter().map(|entry| Arc::clone(entry.value())));
            }
        }
        series.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        series
            .iter()
            .filter_map(|series| {
                let ring = series.ring.lock();
                let window = ring.window(index)?;
                Some(WindowSnapshot {
                    key: series.key.clone(),
                    stats: window_stats(window, index),
                    exemplars: ring
                        .exemplars(index)
                        .map(Exemplars::trace_ids)
                        .unwrap_or_default(),
                    subs: ring.subs(index).copied(),
                })
            })
            .collect()
    }

    /// The sub-windows of a series' window `index`, if the ring still holds
    /// that window and it recorded spans or log records.
    pub fn subs(&self, key: &SeriesKey, index: i64) -> Option<SubWindows> {
        let series = self.find(key)?;
        let ring = series.ring.lock();
        ring.subs(index).copied()
    }

    /// Merged latency histogram of a series over windows `from..=to`, in
    /// scaled units (microseconds for spans); for detection.
    pub fn histogram(&self, key: &SeriesKey, from: i64, to: i64) -> Option<LatencyHistogram> {
        let series = self.find(key)?;
        let ring = series.ring.lock();
        let mut merged: Option<LatencyHistogram> = None;
        for window in ring.windows(from, to) {
            merge_into(&mut merged, &window.histogram);
        }
        merged
    }

    /// Bytes held by histograms across all series (walks every series: for
    /// the self-metric on scrape and for benchmarks, not for the hot path).
    pub fn histogram_bytes(&self) -> usize {
        let mut bytes = 0;
        for service in self.services.iter() {
            for map in &service.series {
                for series in map.iter() {
                    bytes += series.ring.lock().histogram_bytes();
                }
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests;
