//! Span-level analysis for root cause: what a service did itself, as
//! opposed to what it inherited from the services it called.
//!
//! It runs on the ingest path over every span (when `Ingest::with_spans` is
//! given an analyzer) and owns four things:
//!
//! - **Own (exclusive) time.** A span's own time is its duration minus the
//!   union of its children's intervals (clipped to the span). Children are
//!   found in the [`buffer::TraceBuffer`], where every span with a parent
//!   waits under (trace id, parent span id) until its parent arrives. The
//!   children of a service's span are the same process's client and
//!   internal spans, which end first and are exported before or with their
//!   parent, so they are normally there. A child arriving after its parent
//!   (in a later request) is not counted: the parent's own time is then
//!   overstated, and the child expires from the buffer (counted).
//! - **Locally-originating errors.** A failing span's error originates
//!   locally when none of its children failed. A failing call whose callee's
//!   server span failed is propagated; a failing call whose callee answered
//!   without failing, or that has no traced callee (a database, a broker, an
//!   untraced service), is local to the caller. A failing handled child
//!   (INTERNAL, or a SERVER span nested in the same trace) accounts for its
//!   own error in its own series. When a failing call's server-side child
//!   has not arrived yet, the parent waits (at most the store's pairing
//!   timeout, like the pairing buffer) before it is judged.
//!
//!   Both are recorded in the store as [`SeriesKind::Own`] series, named by
//!   operation (duration = own time, errors = local errors), so they get
//!   windows, exemplars and the detectors' baselines like any series.
//! - **Retries.** Per edge (caller -> callee) and window: calls, distinct
//!   parent spans, and repeated calls (calls beyond the first to the same
//!   callee under one parent). The callee is named like the store's edges:
//!   the service of the server-side child when it arrives within the pairing
//!   timeout, else what the client span names itself.
//! - **Attribute drill-down.** Per service and window, for the entry spans
//!   (SERVER, CONSUMER and root spans) and a fixed set of attribute keys plus
//!   the configured extra keys: how many spans and how many *bad* spans
//!   (failed, or slower than twice the operation's p95 over the previous
//!   [`SLOW_HISTORY`] windows) carry each value. Values are counted in
//!   Space-Saving sketches ([`sketch`]) of `sketch_size` counters per key, so
//!   memory is bounded whatever the cardinality.
//!
//! Windows are the store's (`store.window_index`), kept in rings as long as
//! the store's. Everything is driven by the store's clock, so a replay gives
//! the same results every time. Nothing here sees protobuf types: input is
//! the receivers' borrowed [`TraceBatch`].

pub mod buffer;
pub mod config;
pub mod sketch;
pub mod summary;

pub use config::SpanConfig;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::ingest::spans::buffer::{Child, FamilyKey, TraceBuffer};
use crate::ingest::spans::sketch::{clip, value_hash, Merged, SpaceSaving};
use crate::model::AttributeLift;
use crate::model::UNKNOWN_SERVICE;
use crate::model::{invalid_span, operation_name, peer};
use crate::model::{ExtraKeys, ResourceView, SpanView, TraceBatch, ValueRef};
use crate::model::{SeriesKey, SeriesKind};
use crate::store::{Sample, ServiceEntry, Store, StoreConfig, OVERFLOW};

/// Span kinds as the OTLP proto numbers them.
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
const KIND_PRODUCER: i32 = 4;
const KIND_CONSUMER: i32 = 5;

/// `Status.code` ERROR.
const STATUS_ERROR: i32 = 2;

/// Windows before a span's own whose p95 sets the "slow" threshold.
pub const SLOW_HISTORY: i64 = 6;

/// A span is slow (bad) above this multiple of its operation's recent p95.
pub const SLOW_FACTOR: f64 = 2.0;

/// Requests the recent windows need before slowness is judged at all.
const SLOW_MIN_REQUESTS: u64 = 20;

/// Callees kept per caller per window; more fold into [`OVERFLOW`].
const MAX_CALLEES: usize = 256;

/// Cached slow thresholds per service before the cache starts over.
const MAX_THRESHOLDS: usize = 4_096;

/// How often (store-clock time) the buffer and idle services are swept.
const SWEEP_EVERY_NANOS: u64 = 1_000_000_000;

/// The attribute keys the drill-down always looks at: first the resource's,
/// then the span's. `feature_flag` stands for every flag: its values are
/// `key=variant`, reported as key `feature_flag.<key>`.
pub const DRILL_DOWN_KEYS: [&str; 11] = [
    "service.version",
    "service.instance.id",
    "k8s.pod.name",
    "host.name",
    "k8s.node.name",
    "cloud.region",
    "cloud.availability_zone",
    "deployment.environment.name",
    "http.route",
    "rpc.method",
    "feature_flag",
];

/// The [`DRILL_DOWN_KEYS`] whose values are compared with each other by
/// [`SpanAnalyzer::cohorts`]: `service.version`, `service.instance.id`,
/// `k8s.pod.name`, `host.name`, `k8s.node.name`,
/// `cloud.availability_zone` and the flags.
const COHORT_KEYS: [usize; 7] = [0, 1, 2, 3, 4, 6, FLAG_KEY];

/// Index of the first span-level key in [`DRILL_DOWN_KEYS`].
const FIRST_SPAN_KEY: usize = 8;
const ROUTE_KEY: usize = 8;
const RPC_KEY: usize = 9;
const FLAG_KEY: usize = 10;

/// Separates a flag's key from its variant inside a sketch value.
const FLAG_SEPARATOR: char = '\u{1f}';

/// Calls on one edge over some windows (see [`SpanAnalyzer::edge_calls`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Client spans from the caller to the callee.
    pub calls: u64,
    /// Distinct parent spans those calls were made under.
    pub parents: u64,
    /// Calls beyond the first to the callee under the same parent.
    pub repeated: u64,
}

impl CallStats {
    fn add(&mut self, other: CallStats) {
        self.calls += other.calls;
        self.parents += other.parents;
        self.repeated += other.repeated;
    }
}

/// Counters of the analysis, for self-metrics and tests.
#[derive(Debug, Default)]
pub struct SpanCounters {
    /// Handled spans analyzed (own time recorded).
    pub analyzed: AtomicU64,
    /// Parents that waited for a callee's server span.
    pub deferred: AtomicU64,
    /// Of those, judged after the wait ran out.
    pub timed_out: AtomicU64,
    /// Spans too old for the drill-down's or the calls' window ring.
    pub late: AtomicU64,
}

/// Where a failing span's error started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The span did not fail.
    Ok,
    /// In the span's own service.
    Local,
    /// In a callee (or a nested handled span, which counts it itself).
    Propagated,
    /// A failing call whose server-side child has not arrived yet.
    Unknown,
}

/// What became of one failing child of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildFailure {
    /// A handled (INTERNAL/SERVER/CONSUMER) child: its own series has it.
    Handled,
    /// A call that failed on the caller's side (no traced callee, or the
    /// callee answered without failing).
    CallLocal,
    /// A call whose callee's server span failed.
    CallPropagated,
    /// A call whose callee's server span has not been seen (yet).
    CallUnknown,
}

/// The origin of a span's error from what its failing children show.
pub fn error_origin(failed: bool, children: &[ChildFailure]) -> Origin {
    if !failed {
        Origin::Ok
    } else if children.is_empty() || children.contains(&ChildFailure::CallLocal) {
        Origin::Local
    } else if children.contains(&ChildFailure::CallUnknown) {
        Origin::Unknown
    } else {
        Origin::Propagated
    }
}

/// Own time of a span over `[start, end]`: its duration minus the union of
/// the children's intervals, clipped to it. `intervals` is scratch space.
pub fn own_time(
    start: u64,
    end: u64,
    children: impl Iterator<Item = (u64, u64)>,
    intervals: &mut Vec<(u64, u64)>,
) -> u64 {
    intervals.clear();
    intervals.extend(
        children
            .map(|(from, to)| (from.max(start), to.min(end)))
            .filter(|(from, to)| from < to),
    );
    intervals.sort_unstable();
    let mut covered = 0;
    let mut current: Option<(u64, u64)> = None;
    for &(from, to) in intervals.iter() {
        current = match current {
            Some((open, close)) if from <= close => Some((open, close.max(to))),
            Some((open, close)) => {
                covered += close - open;
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    if let Some((open, close)) = current {
        covered += close - open;
    }
    end.saturating_sub(start).saturating_sub(covered)
}

fn failed(span: &SpanView<'_>) -> bool {
    span.status_code == STATUS_ERROR
        || (span.kind == KIND_SERVER && span.attributes.http_status.is_some_and(|code| code >= 500))
}

fn is_call(kind: i32) -> bool {
    kind == KIND_CLIENT || kind == KIND_PRODUCER
}

/// Spans a service handled: they get an own-time series.
fn is_handled(kind: i32) -> bool {
    !is_call(kind)
}

/// Entry spans: what a service was asked to do. The drill-down counts them.
fn is_entry(span: &SpanView<'_>) -> bool {
    matches!(span.kind, KIND_SERVER | KIND_CONSUMER)
        || (span.parent_span_id.is_empty() && span.kind != KIND_CLIENT)
}

fn trace_id(span: &SpanView<'_>) -> u128 {
    u128::from_be_bytes(span.trace_id.try_into().unwrap_or_default())
}

fn span_id(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or_default())
}

/// One value of a cohort key (a version, a flag, a pod, a node...) and how
/// its spans fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// `service.version`, `feature_flag.<flag>`, or where the spans ran
    /// (`k8s.pod.name`, `k8s.node.name`, ...).
    pub key: String,
    pub value: String,
    pub spans: u64,
    /// Spans that failed or were slow.
    pub bad: u64,
    /// Spans slower than their operation's recent median (about half of
    /// them while nothing changes): a small slowdown of one cohort shows
    /// here long before its spans pass the slow threshold.
    pub slower: u64,
}

/// The sketches of one attribute key in one window: all spans, bad spans,
/// and for the cohort keys ([`COHORT_KEYS`]) the spans slower than their
/// operation's recent median.
#[derive(Debug, Clone)]
struct KeySketches {
    all: SpaceSaving,
    bad: SpaceSaving,
    slower: Option<SpaceSaving>,
}

#[derive(Debug, Default)]
struct DrillWindow {
    index: Option<i64>,
    spans: u64,
    bad: u64,
    /// One entry per key (fixed keys, then the extra keys); allocated when
    /// the key is first seen.
    keys: Vec<Option<KeySketches>>,
}

impl DrillWindow {
    fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<Option<KeySketches>>()
            + self
                .keys
                .iter()
                .flatten()
                .map(|sketches| {
                    sketches.all.heap_bytes()
                        + sketches.bad.heap_bytes()
                        + sketches.slower.as_ref().map_or(0, SpaceSaving::heap_bytes)
                })
                .sum::<usize>()
    }

    fn reset(&mut self, index: i64) {
        self.index = Some(index);
        self.spans = 0;
        self.bad = 0;
        for sketches in self.keys.iter_mut().flatten() {
            sketches.all.clear();
            sketches.bad.clear();
            if let Some(slower) = &mut sketches.slower {
                slower.clear();
            }
        }
    }

    /// Counts `spans` spans with `value` for `key`, `bad` of them bad and
    /// `slower` of them slower than their operation's median (kept for the
    /// cohort keys only).
    fn add(&mut self, key: usize, value: &str, spans: u64, bad: u64, slower: u64, size: usize) {
        if self.keys.len() <= key {
            self.keys.resize_with(key + 1, || None);
        }
        let sketches = self.keys[key].get_or_insert_with(|| KeySketches {
            all: SpaceSaving::new(size),
            bad: SpaceSaving::new(size),
            slower: COHORT_KEYS.contains(&key).then(|| SpaceSaving::new(size)),
        });
        let value = clip(value);
        let hash = value_hash(value);
        sketches.all.add(value, hash, spans);
        sketches.bad.add(value, hash, bad);
        if let Some(sketch) = &mut sketches.slower {
            sketch.add(value, hash, slower);
        }
    }
}

#[derive(Debug, Default)]
struct DrillState {
    windows: Vec<DrillWindow>,
    /// Operation (hashed) -> (window it was computed for, slow threshold in
    /// nanoseconds, `u64::MAX` when unknown).
    thresholds: HashMap<u64, (i64, Thresholds)>,
}

#[derive(Debug, Default)]
struct CallWindow {
    index: Option<i64>,
    callees: Vec<(Arc<str>, CallStats)>,
}

/// Per-service state. Each part has its own short mutex, taken once per
/// request (drill-down) or once per parent (calls).
#[derive(Debug, Default)]
struct ServiceState {
    drill: Mutex<DrillState>,
    calls: Mutex<Vec<CallWindow>>,
    /// Store-clock time of the last span, for the idle sweep.
    last_seen: AtomicU64,
}

/// Finds the ring slot of `index`, resetting it when it held an older
/// window; `None` when it holds a newer one (the index is too old).
fn ring_slot<T>(
    ring: &mut Vec<T>,
    n: usize,
    index: i64,
    current: impl Fn(&T) -> Option<i64>,
    reset: impl Fn(&mut T, i64),
) -> Option<&mut T>
where
    T: Default,
{
    if ring.len() < n {
        ring.resize_with(n, T::default);
    }
    let position = index.rem_euclid(n as i64) as usize;
    let entry = &mut ring[position];
    match current(entry) {
        Some(held) if held == index => Some(entry),
        Some(held) if held > index => None,
        _ => {
            reset(entry, index);
            Some(entry)
        }
    }
}

/// A handled span whose judgment waits for a callee's server span.
#[derive(Debug)]
struct PendingParent {
    key: FamilyKey,
    service: Arc<str>,
    operation: Arc<str>,
    /// The own-time sample, when it waits too (failing spans whose origin
    /// is unknown); `None` when it was recorded already.
    sample: Option<Sample>,
    failed: bool,
    /// Window the calls are counted in.
    window: i64,
    /// Store-clock time it started waiting.
    since: u64,
}

/// Scratch buffers reused from span to span within a request.
#[derive(Default)]
struct Scratch {
    children: Vec<Child>,
    remote: Vec<Child>,
    intervals: Vec<(u64, u64)>,
    failures: Vec<ChildFailure>,
    groups: Vec<(Arc<str>, u64)>,
}

/// What the children of a parent showed.
struct Judgment {
    origin: Origin,
    /// Every call's callee is known (server-side child seen, or none
    /// expected).
    complete: bool,
}

/// The span analyzer. Cheap to share behind an `Arc`; see the module
/// documentation for what it owns.
pub struct SpanAnalyzer {
    config: SpanConfig,
    extra: ExtraKeys,
    /// The store's window length and ring size.
    window_nanos: u64,
    n_windows: usize,
    /// How long a parent waits for a callee's server span (the store's
    /// pairing timeout).
    wait_nanos: u64,
    /// Services idle this long are forgotten (the store's series TTL).
    idle_nanos: u64,
    buffer: TraceBuffer,
    /// Parents waiting for a callee's server span; bounded by the trace
    /// buffer's capacity (past it, parents are judged at once).
    pending: Mutex<Vec<PendingParent>>,
    services: DashMap<Arc<str>, Arc<ServiceState>, foldhash::fast::RandomState>,
    /// Store-clock time of the next buffer sweep.
    next_sweep: AtomicU64,
    pub counters: SpanCounters,
}

impl std::fmt::Debug for SpanAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanAnalyzer")
            .field("config", &self.config)
            .field("buffered", &self.buffer.len())
            .field("services", &self.services.len())
            .finish()
    }
}

impl SpanAnalyzer {
    /// An analyzer for spans recorded into a store configured as `store`.
    pub fn new(config: SpanConfig, store: &StoreConfig) -> Self {
        SpanAnalyzer {
            extra: ExtraKeys::new(&config.attributes),
            window_nanos: (store.window.as_nanos() as u64).max(1),
            n_windows: store.windows.get(),
            wait_nanos: store.pairing_timeout.as_nanos() as u64,
            idle_nanos: store.series_ttl.as_nanos() as u64,
            buffer: TraceBuffer::new(
                config.trace_buffer_capacity.get(),
                config.trace_buffer_ttl.as_nanos() as u64,
            ),
            pending: Mutex::new(Vec::new()),
            services: DashMap::default(),
            next_sweep: AtomicU64::new(0),
            counters: SpanCounters::default(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SpanConfig {
        &self.config
    }

    /// The extra attribute keys the readers should collect.
    pub fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    /// The trace buffer (for its counters and size).
    pub fn buffer(&self) -> &TraceBuffer {
        &self.buffer
    }

    /// Parents waiting for a callee's server span.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Bytes the span analysis holds: the trace buffer, the parents
    /// waiting, and per service the drill-down sketches, slow thresholds and
    /// call counts of its window rings. Takes each lock for a moment and
    /// allocates nothing: the figure behind `triage_span_analysis_bytes`.
    pub fn state_bytes(&self) -> usize {
        let pending = self.pending.lock().capacity() * std::mem::size_of::<PendingParent>();
        let services: usize = self
            .services
            .iter()
            .map(|entry| {
                let state = entry.value();
                let drill = {
                    let drill = state.drill.lock();
                    drill.windows.capacity() * std::mem::size_of::<DrillWindow>()
                        + drill
                            .windows
                            .iter()
                            .map(DrillWindow::heap_bytes)
                            .sum::<usize>()
                        // hashbrown: one control byte per bucket.
                        + drill.thresholds.capacity()
                            * (std::mem::size_of::<(u64, (i64, u64))>() + 1)
                };
                let calls = {
                    let calls = state.calls.lock();
                    calls.capacity() * std::mem::size_of::<CallWindow>()
                        + calls
                            .iter()
                            .map(|window| {
                                window.callees.capacity()
                                    * std::mem::size_of::<(Arc<str>, CallStats)>()
                            })
                            .sum::<usize>()
                };
                entry.key().len() + std::mem::size_of::<ServiceState>() + drill + calls
            })
            .sum();
        self.buffer.heap_bytes() + pending + services
    }

    /// The window of an event time, as the store files it (times more than
    /// a window ahead of the clock count in the current window).
    fn window_of(&self, store: &Store, time: u64, now: u64) -> i64 {
        if time > now.saturating_add(self.window_nanos) {
            store.window_index(now)
        } else {
            store.window_index(time)
        }
    }

    fn state(&self, service: &Arc<str>, now: u64) -> Arc<ServiceState> {
        let state = match self.services.get(service) {
            Some(state) => Arc::clone(state.value()),
            None => Arc::clone(
                self.services
                    .entry(Arc::clone(service))
                    .or_default()
                    .value(),
            ),
        };
        state.last_seen.store(now, Ordering::Relaxed);
        state
    }

    // === ingest ===

    /// Analyzes the spans of one request. `now` is the store-clock time the
    /// request is recorded at. Spans ingest rejects are skipped.
    pub fn observe(&self, store: &Store, batch: &TraceBatch<'_>, now: u64) {
        let services: Vec<Arc<ServiceEntry>> = batch
            .resources
            .iter()
            .map(|resource| {
                store.service(
                    resource
                        .service_name
                        .filter(|name| !name.is_empty())
                        .unwrap_or(UNKNOWN_SERVICE),
                )
            })
            .collect();
        let usable = |span: &SpanView<'_>| invalid_span(span).is_none();
        // Children first, so that a parent finds children that came later
        // in the same request.
        for (resource, service) in batch.resources.iter().zip(&services) {
            for span in batch.spans.get(resource.spans.clone()).unwrap_or_default() {
                if span.parent_span_id.len() != 8 || !usable(span) {
                    continue;
                }
                let key = FamilyKey {
                    trace_id: trace_id(span),
                    parent_span_id: span_id(span.parent_span_id),
                };
                self.buffer.add(key, child(store, span, &service.name), now);
            }
        }
        let mut scratch = Scratch::default();
        for (resource, service) in batch.resources.iter().zip(&services) {
            let spans = batch.spans.get(resource.spans.clone()).unwrap_or_default();
            for span in spans {
                if is_handled(span.kind) && usable(span) {
                    self.analyze(store, service, span, now, &mut scratch);
                }
            }
            self.drill(store, service, resource, batch, now);
        }
        if self.pending.lock().len() > self.config.trace_buffer_capacity.get() {
            // Too many waiting: judge them all now rather than grow.
            self.resolve_pending(store, now, true);
        }
    }

    /// Own time, local errors and calls of one handled span.
    fn analyze(
        &self,
        store: &Store,
        service: &ServiceEntry,
        span: &SpanView<'_>,
        now: u64,
        scratch: &mut Scratch,
    ) {
        self.counters.analyzed.fetch_add(1, Ordering::Relaxed);
        let key = FamilyKey {
            trace_id: trace_id(span),
            parent_span_id: span_id(span.span_id),
        };
        self.buffer.copy(key, &mut scratch.children);
        let own = own_time(
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            scratch
                .children
                .iter()
                .map(|child| (child.start, child.end)),
            &mut scratch.intervals,
        );
        let span_failed = failed(span);
        let judgment = self.judge(key.trace_id, span_failed, scratch);
        let mut sample = Sample {
            end_unix_nanos: span.end_time_unix_nano,
            duration_nanos: own,
            error: false,
            trace_id: key.trace_id,
        };
        let operation = operation_name(span);
        let window = self.window_of(store, span.end_time_unix_nano, now);
        let waits_for_origin = judgment.origin == Origin::Unknown;
        if !waits_for_origin {
            sample.error = judgment.origin == Origin::Local;
            store.record_span(service, SeriesKind::Own, operation, sample, now);
        }
        if judgment.complete && !waits_for_origin {
            self.count_calls(store, &service.name, key, window, now, scratch);
            return;
        }
        self.counters.deferred.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().push(PendingParent {
            key,
            service: Arc::clone(&service.name),
            operation: store.intern(operation),
            sample: waits_for_origin.then_some(sample),
            failed: span_failed,
            window,
            since: now,
        });
    }

    /// Looks at the children in `scratch.children` (and the server-side
    /// children of the calls among them).
    fn judge(&self, trace_id: u128, span_failed: bool, scratch: &mut Scratch) -> Judgment {
        scratch.failures.clear();
        let mut complete = true;
        for child in &scratch.children {
            if child.handled {
                if child.failed {
                    scratch.failures.push(ChildFailure::Handled);
                }
                continue;
            }
            let remote = if child.untraced {
                None
            } else {
                let key = FamilyKey {
                    trace_id,
                    parent_span_id: child.span_id,
                };
                if self.buffer.copy(key, &mut scratch.remote) {
                    Some(scratch.remote.iter().any(|remote| remote.failed))
                } else {
                    complete = false;
                    None
                }
            };
            if child.failed {
                scratch.failures.push(match (child.untraced, remote) {
                    (true, _) | (false, Some(false)) => ChildFailure::CallLocal,
                    (false, Some(true)) => ChildFailure::CallPropagated,
                    (false, None) => ChildFailure::CallUnknown,
                });
            }
        }
        Judgment {
            origin: error_origin(span_failed, &scratch.failures),
            complete,
        }
    }

    /// Counts the calls among a parent's children per callee, then drops
    /// the parent's family and its calls' families from the buffer.
    fn count_calls(
        &self,
        store: &Store,
        caller: &Arc<str>,
        key: FamilyKey,
        window: i64,
        now: u64,
        scratch: &mut Scratch,
    ) {
        scratch.children.clear();
        self.buffer.take(key, &mut scratch.children);
        scratch.groups.clear();
        for child in scratch.children.iter().filter(|child| !child.handled) {
            scratch.remote.clear();
            let call = FamilyKey {
                trace_id: key.trace_id,
                parent_span_id: child.span_id,
            };
            self.buffer.take(call, &mut scratch.remote);
            let callee = match scratch.remote.first() {
                Some(server) => Arc::clone(&server.service),
                None => child
                    .peer
                    .clone()
                    .unwrap_or_else(|| store.intern(crate::model::UNKNOWN_PEER)),
            };
            match scratch.groups.iter_mut().find(|(name, _)| *name == callee) {
                Some((_, calls)) => *calls += 1,
                None => scratch.groups.push((callee, 1)),
            }
        }
        if scratch.groups.is_empty() {
            return;
        }
        let state = self.state(caller, now);
        let mut ring = state.calls.lock();
        let Some(slot) = ring_slot(
            &mut ring,
            self.n_windows,
            window,
            |slot: &CallWindow| slot.index,
            |slot, index| {
                slot.index = Some(index);
                slot.callees.clear();
            },
        ) else {
            self.counters.late.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for (callee, calls) in scratch.groups.drain(..) {
            let stats = CallStats {
                calls,
                parents: 1,
                repeated: calls - 1,
            };
            let position = slot.callees.iter().position(|(name, _)| *name == callee);
            match position {
                Some(position) => slot.callees[position].1.add(stats),
                None if slot.callees.len() < MAX_CALLEES => slot.callees.push((callee, stats)),
                None => {
                    let overflow = store.intern(OVERFLOW);
                    match slot.callees.iter_mut().find(|(name, _)| *name == overflow) {
                        Some((_, total)) => total.add(stats),
                        None => slot.callees.push((overflow, stats)),
                    }
                }
            }
        }
    }

    /// Judges waiting parents whose callees have arrived, or all that
    /// waited longer than the pairing timeout (every one when `all`).
    fn resolve_pending(&self, store: &Store, now: u64, all: bool) {
        let waiting = std::mem::take(&mut *self.pending.lock());
        if waiting.is_empty() {
            return;
        }
        let mut scratch = Scratch::default();
        let mut still = Vec::new();
        for parent in waiting {
            self.buffer.copy(parent.key, &mut scratch.children);
            let judgment = self.judge(parent.key.trace_id, parent.failed, &mut scratch);
            let timed_out = all || now.saturating_sub(parent.since) >= self.wait_nanos;
            let ready = judgment.complete && judgment.origin != Origin::Unknown;
            if !ready && !timed_out {
                still.push(parent);
                continue;
            }
            if !ready {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(mut sample) = parent.sample {
                // A failing call whose callee never showed up has no traced
                // callee: the caller's side failed.
                sample.error = matches!(judgment.origin, Origin::Local | Origin::Unknown);
                let service = store.service(&parent.service);
                store.record_span(&service, SeriesKind::Own, &parent.operation, sample, now);
            }
            self.count_calls(
                store,
                &parent.service,
                parent.key,
                parent.window,
                now,
                &mut scratch,
            );
        }
        if !still.is_empty() {
            self.pending.lock().extend(still);
        }
    }

    /// Attribute counts of one resource's entry spans.
    fn drill(
        &self,
        store: &Store,
        service: &ServiceEntry,
        resource: &ResourceView<'_>,
        batch: &TraceBatch<'_>,
        now: u64,
    ) {
        let Some(spans) = batch.spans.get(resource.spans.clone()) else {
            return;
        };
        let sketch_size = self.config.sketch_size.get();
        let state = self.state(&service.name, now);
        let mut drill = state.drill.lock();
        let DrillState {
            windows,
            thresholds,
        } = &mut *drill;
        // Spans, bad and slower spans per window of this resource, for its
        // resource-level values.
        let mut tallies: Vec<(i64, u64, u64, u64)> = Vec::new();
        let mut flag = String::new();
        let mut number = String::new();
        for (offset, span) in spans.iter().enumerate() {
            if !is_entry(span) || invalid_span(span).is_some() {
                continue;
            }
            let window = self.window_of(store, span.end_time_unix_nano, now);
            let operation = operation_name(span);
            let threshold = slow_threshold(store, thresholds, &service.name, operation, window);
            let duration = span.end_time_unix_nano - span.start_time_unix_nano;
            let bad = failed(span) || duration > threshold.slow;
            let slower = u64::from(duration > threshold.median);
            let Some(slot) = ring_slot(
                windows,
                self.n_windows,
                window,
                |slot: &DrillWindow| slot.index,
                DrillWindow::reset,
            ) else {
                self.counters.late.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            slot.spans += 1;
            slot.bad += u64::from(bad);
            match tallies.iter_mut().find(|(index, ..)| *index == window) {
                Some((_, n, n_bad, n_slower)) => {
                    *n += 1;
                    *n_bad += u64::from(bad);
                    *n_slower += slower;
                }
                None => tallies.push((window, 1, u64::from(bad), slower)),
            }
            let bad = u64::from(bad);
            let attributes = &span.attributes;
            if let Some(route) = attributes.http_route {
                slot.add(ROUTE_KEY, route, 1, bad, slower, sketch_size);
            }
            if let Some(method) = attributes.rpc_method {
                slot.add(RPC_KEY, method, 1, bad, slower, sketch_size);
            }
            if let (Some(key), Some(variant)) =
                (attributes.feature_flag_key, attributes.feature_flag_variant)
            {
                flag.clear();
                flag.push_str(key);
                flag.push(FLAG_SEPARATOR);
                flag.push_str(variant);
                slot.add(FLAG_KEY, &flag, 1, bad, slower, sketch_size);
            }
            let index = (resource.spans.start + offset) as u32;
            let first = batch.extras.partition_point(|extra| extra.span < index);
            for extra in batch.extras[first..]
                .iter()
                .take_while(|extra| extra.span == index)
            {
                let value = match extra_text(extra.value, &mut number) {
                    Some(value) => value,
                    None => continue,
                };
                let key = DRILL_DOWN_KEYS.len() + usize::from(extra.slot);
                if self.is_pattern(extra.slot) {
                    // A pattern matches several keys: keep which one, as
                    // flags keep their key.
                    let Ok(name) = std::str::from_utf8(extra.key) else {
                        continue;
                    };
                    let both = format!("{name}{FLAG_SEPARATOR}{value}");
                    slot.add(key, &both, 1, bad, slower, sketch_size);
                } else {
                    slot.add(key, value, 1, bad, slower, sketch_size);
                }
            }
        }
        let values = resource_values(resource);
        for (window, n, bad, slower) in tallies {
            let Some(slot) = ring_slot(
                windows,
                self.n_windows,
                window,
                |slot: &DrillWindow| slot.index,
                DrillWindow::reset,
            ) else {
                continue;
            };
            for (key, value) in values.iter().enumerate() {
                if let Some(value) = value {
                    slot.add(key, value, n, bad, slower, sketch_size);
                }
            }
        }
    }

    // === upkeep ===

    /// Judges parents whose wait is over and, about once a second of store
    /// time, drops expired buffer entries and idle services. Called by the
    /// server's upkeep and after every replayed line.
    pub fn expire(&self, store: &Store) {
        let now = store.now_unix_nanos();
        self.resolve_pending(store, now, false);
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        self.next_sweep
            .store(now.saturating_add(SWEEP_EVERY_NANOS), Ordering::Relaxed);
        self.buffer.expire(now);
        self.services.retain(|_, state| {
            now.saturating_sub(state.last_seen.load(Ordering::Relaxed)) <= self.idle_nanos
        });
    }

    /// Judges every waiting parent now (shutdown, end of a replay).
    pub fn flush(&self, store: &Store) {
        self.resolve_pending(store, store.now_unix_nanos(), true);
    }

    // === read API ===

    /// Calls from `caller` to `callee` over `windows` (store window
    /// indices, end exclusive).
    pub fn edge_calls(&self, caller: &str, callee: &str, windows: Range<i64>) -> CallStats {
        let mut total = CallStats::default();
        let Some(state) = self.services.get(caller).map(|state| Arc::clone(&state)) else {
            return total;
        };
        let ring = state.calls.lock();
        for slot in ring.iter() {
            if !slot.index.is_some_and(|index| windows.contains(&index)) {
                continue;
            }
            for (name, stats) in &slot.callees {
                if &**name == callee {
                    total.add(*stats);
                }
            }
        }
        total
    }

    /// Attribute values that the bad (failed or slow) entry spans of
    /// `service` in `bad_windows` carry more often than the spans of
    /// `baseline_windows` did, highest lift first. Only values with at least
    /// `min_bad_spans` bad spans (a guaranteed lower bound from the sketch)
    /// making up at least `min_bad_share` of the bad spans are listed.
    ///
    /// `bad_share` is that lower bound over all bad spans; `baseline_share`
    /// is the value's (upper-bound) count over all baseline spans; `lift` is
    /// their ratio, with the baseline share floored at half a span
    /// (`0.5 / (baseline spans + 1)`), so a value the baseline never saw
    /// gets a large but finite lift. Passing the same windows twice compares
    /// the bad spans with all spans of those windows.
    pub fn drill_down(
        &self,
        service: &str,
        bad_windows: Range<i64>,
        baseline_windows: Range<i64>,
    ) -> Vec<AttributeLift> {
        let Some(state) = self.services.get(service).map(|state| Arc::clone(&state)) else {
            return Vec::new();
        };
        let drill = state.drill.lock();
        let in_range = |slot: &&DrillWindow, range: &Range<i64>| {
            slot.index.is_some_and(|i| range.contains(&i))
        };
        let bad_slots: Vec<&DrillWindow> = drill
            .windows
            .iter()
            .filter(|slot| in_range(slot, &bad_windows))
            .collect();
        let base_slots: Vec<&DrillWindow> = drill
            .windows
            .iter()
            .filter(|slot| in_range(slot, &baseline_windows))
            .collect();
        let total_bad: u64 = bad_slots.iter().map(|slot| slot.bad).sum();
        let total_base: u64 = base_slots.iter().map(|slot| slot.spans).sum();
        if total_bad == 0 {
            return Vec::new();
        }
        let n_keys = DRILL_DOWN_KEYS.len() + self.extra.len();
        let floor = 0.5 / (total_base as f64 + 1.0);
        let mut lifts = Vec::new();
        for key in 0..n_keys {
            let mut bad = Merged::default();
            for slot in &bad_slots {
                if let Some(Some(sketches)) = slot.keys.get(key) {
                    bad.add(&sketches.bad);
                }
            }
            if bad.values.is_empty() {
                continue;
            }
            let mut base = Merged::default();
            for slot in &base_slots {
                if let Some(Some(sketches)) = slot.keys.get(key) {
                    base.add(&sketches.all);
                }
            }
            for value in bad.values.keys() {
                let bad_spans = bad.lower(value);
                let bad_share = bad_spans as f64 / total_bad as f64;
                if bad_spans < self.config.min_bad_spans.max(1)
                    || bad_share < self.config.min_bad_share
                {
                    continue;
                }
                let baseline_share = if total_base == 0 {
                    0.0
                } else {
                    base.upper(value) as f64 / total_base as f64
                };
                let (name, value) = self.key_name(key, value);
                lifts.push(AttributeLift {
                    key: name,
                    value,
                    bad_share,
                    baseline_share,
                    lift: bad_share / baseline_share.max(floor),
                    bad_spans,
                });
            }
        }
        lifts.sort_by(|a, b| {
            b.lift
                .total_cmp(&a.lift)
                .then(b.bad_spans.cmp(&a.bad_spans))
                .then_with(|| (&a.key, &a.value).cmp(&(&b.key, &b.value)))
        });
        lifts
    }

    /// Whether the extra key in `slot` is a pattern (`*.tenant`).
    fn is_pattern(&self, slot: u8) -> bool {
        self.config
            .attributes
            .get(usize::from(slot))
            .is_some_and(|key| key.starts_with('*'))
    }

    /// The reported key and value of a sketch value.
    fn key_name(&self, key: usize, value: &str) -> (String, String) {
        if key == FLAG_KEY {
            if let Some((flag, variant)) = value.split_once(FLAG_SEPARATOR) {
                return (format!("feature_flag.{flag}"), variant.to_string());
            }
        }
        if key >= DRILL_DOWN_KEYS.len() {
            if let Some((name, value)) = value.split_once(FLAG_SEPARATOR) {
                return (name.to_string(), value.to_string());
            }
        }
        let name = DRILL_DOWN_KEYS
            .get(key)
            .copied()
            .or_else(|| {
                self.config
                    .attributes
                    .get(key - DRILL_DOWN_KEYS.len())
                    .map(String::as_str)
            })
            .unwrap_or("unknown");
        (name.to_string(), value.to_string())
    }

    /// The cohorts of `service`'s entry spans over `windows`: every value
    /// of [`COHORT_KEYS`] (the version, where it runs: instance, pod, host,
    /// node and zone) and every variant of each feature flag, with its
    /// spans and bad spans (lower bounds; exact while a key has fewer
    /// values than a sketch holds, as versions, variants and a service's
    /// pods do).
    pub fn cohorts(&self, service: &str, windows: Range<i64>) -> Vec<Cohort> {
        let Some(state) = self.services.get(service).map(|state| Arc::clone(&state)) else {
            return Vec::new();
        };
        let drill = state.drill.lock();
        let mut cohorts = Vec::new();
        for key in COHORT_KEYS {
            let mut all = Merged::default();
            let mut bad = Merged::default();
            let mut slower = Merged::default();
            for slot in drill
                .windows
                .iter()
                .filter(|slot| slot.index.is_some_and(|index| windows.contains(&index)))
            {
                if let Some(Some(sketches)) = slot.keys.get(key) {
                    all.add(&sketches.all);
                    bad.add(&sketches.bad);
                    if let Some(sketch) = &sketches.slower {
                        slower.add(sketch);
                    }
                }
            }
            for value in all.values.keys() {
                let (name, shown) = self.key_name(key, value);
                cohorts.push(Cohort {
                    key: name,
                    value: shown,
                    spans: all.lower(value),
                    bad: bad.lower(value),
                    slower: slower.lower(value),
                });
            }
        }
        cohorts.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        cohorts
    }

    /// Spans of `service` counted by the drill-down over `windows`: (all,
    /// bad).
    pub fn entry_spans(&self, service: &str, windows: Range<i64>) -> (u64, u64) {
        let Some(state) = self.services.get(service).map(|state| Arc::clone(&state)) else {
            return (0, 0);
        };
        let drill = state.drill.lock();
        drill
            .windows
            .iter()
            .filter(|slot| slot.index.is_some_and(|index| windows.contains(&index)))
            .fold((0, 0), |(all, bad), slot| {
                (all + slot.spans, bad + slot.bad)
            })
    }
}

/// What a span tells its parent.
fn child(store: &Store, span: &SpanView<'_>, service: &Arc<str>) -> Child {
    let call = is_call(span.kind);
    let attributes = &span.attributes;
    Child {
        span_id: span_id(span.span_id),
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano,
        failed: failed(span),
        handled: !call,
        untraced: call
            && (attributes.db_system.is_some() || attributes.messaging_destination.is_some()),
        service: Arc::clone(service),
        peer: call.then(|| store.intern(peer(attributes))),
    }
}

/// The resource-level values, in [`DRILL_DOWN_KEYS`] order.
fn resource_values<'a>(resource: &ResourceView<'a>) -> [Option<&'a str>; FIRST_SPAN_KEY] {
    let attributes = &resource.attributes;
    [
        attributes.service_version,
        attributes.service_instance_id,
        attributes.k8s_pod_name,
        attributes.host_name,
        attributes.k8s_node_name,
        attributes.cloud_region,
        attributes.cloud_availability_zone,
        attributes.deployment_environment,
    ]
}

/// An extra attribute's value as text (numbers and booleans formatted into
/// `buffer`); `None` for values that are not scalars.
fn extra_text<'s>(value: ValueRef<'s>, buffer: &'s mut String) -> Option<&'s str> {
    use std::fmt::Write;
    buffer.clear();
    match value {
        ValueRef::Str(text) => return Some(text),
        ValueRef::Int(number) => write!(buffer, "{number}").ok()?,
        ValueRef::Double(number) => write!(buffer, "{number}").ok()?,
        ValueRef::Bool(flag) => write!(buffer, "{flag}").ok()?,
        ValueRef::Other => return None,
    }
    Some(buffer.as_str())
}

/// An operation's durations, in nanoseconds, above which its spans count
/// as slow (bad) and as slower than usual.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    slow: u64,
    median: u64,
}

/// The thresholds of an operation for spans in `window`: twice its p95 and
/// its median over the previous [`SLOW_HISTORY`] windows, computed once per
/// operation and window. `u64::MAX` (nothing is slow) until those windows
/// hold [`SLOW_MIN_REQUESTS`] requests.
fn slow_threshold(
    store: &Store,
    cache: &mut HashMap<u64, (i64, Thresholds)>,
    service: &Arc<str>,
    operation: &str,
    window: i64,
) -> Thresholds {
    let hash = value_hash(operation);
    if let Some((computed_for, threshold)) = cache.get(&hash) {
        if *computed_for == window {
            return *threshold;
        }
    }
    let key = SeriesKey {
        kind: SeriesKind::Operation,
        service: Arc::clone(service),
        name: Arc::from(operation),
    };
    let at = |quantile: f64, factor: f64| {
        store
            .quantile_windows(&key, window - SLOW_HISTORY, window - 1, quantile)
            .filter(|&(requests, _)| requests >= SLOW_MIN_REQUESTS)
            .and_then(|(_, ms)| ms)
            .map_or(u64::MAX, |ms| (ms * factor * 1e6) as u64)
    };
    let threshold = Thresholds {
        slow: at(0.95, SLOW_FACTOR),
        median: at(0.5, 1.0),
    };
    if cache.len() >= MAX_THRESHOLDS {
        cache.clear();
    }
    cache.insert(hash, (window, threshold));
    threshold
}

#[cfg(test)]
mod tests;
