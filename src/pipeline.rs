//! The pipeline: every stage between the receivers and the consumers, built
//! once and driven by one [`Pipeline::tick`].
//!
//! ```text
//! receiver ─> ingest (Sink) ─> store ─┬─> detect ─> analyze ─> incident events
//!                 ├─> span analysis ──┘      (engine)  (cascades, origin,
//!                 └─> change detection ─> change log    changes, hypotheses)
//! ```
//!
//! The server and replay build the same [`Pipeline`] from the same
//! [`Settings`]; they differ only in what drives it. The server calls
//! [`Pipeline::tick`] from its timer with the store's wall clock, replay
//! after every request with the newest event time it has read (and
//! [`Pipeline::finish`] at the end), so replaying the same input always
//! gives the same incidents. Nothing here reads a clock itself.
//!
//! The shared parts (store, span analysis, change log, the ingest sink) are
//! behind `Arc`s handed to the receivers, the admin API and the query API;
//! the detection state (engine and analyzer) is owned, so the server can
//! move the whole pipeline onto a blocking thread for a tick.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::analyze::context::{Context, Handles, RcaConfig};
use crate::analyze::rca::Analyzer;
use crate::detect::engine::Engine;
use crate::detect::DetectConfig;
use crate::ingest::changes::{ChangeDetector, ChangesConfig};
use crate::ingest::spans::{SpanAnalyzer, SpanConfig};
use crate::ingest::Ingest;
use crate::model::{Incident, IncidentEvent};
use crate::store::changes::ChangeLog;
use crate::store::{Clock, Store, StoreConfig};
use crate::telemetry;

/// Store time between two walks of the state for the size gauges
/// (`triage_detect_state_bytes`, `triage_span_analysis_bytes`).
const SIZE_REPORT_EVERY_NANOS: u64 = 5_000_000_000;

/// The settings of every stage the pipeline builds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub store: StoreConfig,
    /// Detection, including the allowed lateness before a window closes.
    pub detect: DetectConfig,
    /// Span analysis: own time, local errors, retries, drill-down keys.
    pub spans: SpanConfig,
    /// Change tracking: capacity, inference from telemetry, lookback.
    pub changes: ChangesConfig,
    /// Root-cause analysis; its lookback is taken from `changes.lookback`.
    pub rca: RcaConfig,
}

/// The system clock, for live mode. Everything inside the pipeline reads
/// time from the store's [`Clock`], so tests and replay drive it instead.
#[derive(Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_unix_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// The stages, wired together.
pub struct Pipeline {
    store: Arc<Store>,
    /// Span analysis, fed by ingest and read by root-cause analysis.
    spans: Arc<SpanAnalyzer>,
    /// Change events, posted by tools or inferred from the telemetry.
    changes: Arc<ChangeLog>,
    /// Infers changes from the telemetry; advanced on every tick so that a
    /// rollout of a service that went quiet is still reported.
    change_detector: Arc<ChangeDetector>,
    /// The receivers' sink: records into the store, the span analysis and
    /// (unless turned off) the change detector.
    ingest: Arc<Ingest>,
    engine: Engine,
    analyzer: Analyzer,
    /// Store time of the next sweep of idle series.
    next_sweep: u64,
    /// Store time between sweeps: a tenth of the series TTL.
    sweep_every: u64,
    /// Store time after which [`Pipeline::report_metrics`] next walks the
    /// state to size it (the walk takes every buffer and sketch lock, so
    /// not at every tick).
    next_size_report: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pipeline")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Builds every stage around `store` (whose clock decides what "now"
    /// is for pairing, span analysis and sweeping).
    pub fn new(settings: &Settings, store: Arc<Store>) -> Self {
        let spans = Arc::new(SpanAnalyzer::new(settings.spans.clone(), store.config()));
        let changes = Arc::new(ChangeLog::new(settings.changes.capacity.get()));
        let change_detector =
            Arc::new(ChangeDetector::new(Arc::clone(&changes), &settings.changes));
        let mut ingest = Ingest::new(Arc::clone(&store)).with_spans(Arc::clone(&spans));
        // Posted changes are accepted either way; inference can be off.
        if settings.changes.detect_from_telemetry {
            ingest = ingest.with_changes(Arc::clone(&change_detector));
        }
        let sweep_every = (store.config().series_ttl / 10).max(Duration::from_secs(1));
        Pipeline {
            spans,
            changes,
            change_detector,
            ingest: Arc::new(ingest),
            engine: Engine::new(settings.detect.clone()),
            analyzer: Analyzer::new(RcaConfig {
                lookback: settings.changes.lookback,
                ..settings.rca.clone()
            }),
            next_sweep: store.now_unix_nanos() + sweep_every.as_nanos() as u64,
            sweep_every: sweep_every.as_nanos() as u64,
            next_size_report: std::sync::atomic::AtomicU64::new(0),
            store,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn spans(&self) -> &Arc<SpanAnalyzer> {
        &self.spans
    }

    pub fn changes(&self) -> &Arc<ChangeLog> {
        &self.changes
    }

    pub fn change_detector(&self) -> &Arc<ChangeDetector> {
        &self.change_detector
    }

    /// The sink the receivers (and replay) record into.
    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// The detection engine (for snapshots and restoring them).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Handles on the shared parts, for analysis run outside a tick.
    pub fn handles(&self) -> Handles {
        Handles {
            store: Arc::clone(&self.store),
            spans: Some(Arc::clone(&self.spans)),
            changes: Arc::clone(&self.changes),
        }
    }

    /// Open grouped incidents.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        self.analyzer.open_incidents()
    }

    /// Takes up the incidents a previous run left open (from the history).
    pub fn restore_incidents(&mut self, open: Vec<Incident>) {
        self.analyzer.restore(open);
    }

    /// Groups and explains detector events found outside a tick (the
    /// catch-up after restoring the detection state).
    pub fn analyze(&mut self, found: Vec<IncidentEvent>) -> Vec<IncidentEvent> {
        let context = Context {
            store: &self.store,
            spans: Some(&self.spans),
            changes: &self.changes,
        };
        self.analyzer.process(found, context)
    }

    /// Everything that moves with time, at `now` (Unix nanoseconds: the
    /// wall clock in live mode, the newest event time in replay): client
    /// spans whose pair did not come are resolved, the span analysis
    /// judges parents whose wait is over, the change detector reports
    /// finished rollouts, idle series are swept, and every window that
    /// ended at least the allowed lateness before `now` is closed, judged
    /// and analysed. Returns the incident events found.
    pub fn tick(&mut self, now: u64) -> Vec<IncidentEvent> {
        self.store.expire_pairs();
        self.spans.expire(&self.store);
        self.change_detector.advance(now);
        if now >= self.next_sweep {
            self.next_sweep = now.saturating_add(self.sweep_every);
            let dropped = self.store.sweep();
            if dropped > 0 {
                tracing::debug!(dropped, "dropped idle series");
            }
        }
        let found = self.engine.advance(&self.store, now);
        self.analyze(found)
    }

    /// After a tick panicked: moves detection past the windows that tick
    /// was closing (see [`Engine::skip_past`]); returns how many.
    pub fn skip_failed_windows(&mut self, now: u64) -> i64 {
        self.engine.skip_past(&self.store, now)
    }

    /// Mirrors the pipeline's own counters into self-metrics (live mode;
    /// replay installs no recorder).
    pub fn report_metrics(&self) {
        use std::sync::atomic::Ordering;
        self.change_detector.report_metrics();
        metrics::counter!(telemetry::DETECT_TRAFFIC_SPIKES)
            .absolute(self.engine.incidents().traffic_spikes());
        let now = self.store.now_unix_nanos();
        if now >= self.next_size_report.load(Ordering::Relaxed) {
            self.next_size_report.store(
                now.saturating_add(SIZE_REPORT_EVERY_NANOS),
                Ordering::Relaxed,
            );
            metrics::gauge!(telemetry::DETECT_SERIES).set(self.engine.n_series() as f64);
            metrics::gauge!(telemetry::DETECT_STATE_BYTES).set(self.engine.state_bytes() as f64);
            metrics::gauge!(telemetry::SPAN_ANALYSIS_BYTES).set(self.spans.state_bytes() as f64);
            metrics::gauge!(telemetry::SPAN_ANALYSIS_BUFFERED)
                .set(self.spans.buffer().len() as f64);
        }
    }

    /// Resolves every client span still waiting for its pair and judges
    /// every parent still waiting for its children (at shutdown, or at the
    /// end of a replay).
    pub fn flush(&self) -> usize {
        let resolved = self.store.flush_pairs();
        self.spans.flush(&self.store);
        resolved
    }

    /// The end of a replay: flushes, then closes every window up to `now`
    /// as if the allowed lateness had passed.
    pub fn finish(&mut self, now: u64) -> Vec<IncidentEvent> {
        self.flush();
        let last = self.store.window_index(now);
        self.change_detector.advance(now);
        let found = self.engine.close_through(&self.store, last);
        self.analyze(found)
    }
}
