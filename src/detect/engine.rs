//! The detection engine: closes event-time windows in order and turns them
//! into incident events.
//!
//! For each closed window it takes the store's snapshot, feeds every series'
//! [`SeriesDetector`] (series that got no data in the window are fed an empty
//! window, so a service that stops answering is seen), runs the per-service
//! saturation rules over metric series, and passes the results through the
//! incident tracker's hysteresis.
//!
//! Windows close when the watermark passes their end: in live mode the
//! watermark is the wall clock minus the allowed lateness; in replay it is the
//! newest event time seen minus the same lateness, so a replay depends only on
//! its input. Windows are closed strictly in order, each exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::onset;
use super::series::Trend;
use crate::detect::incident::{Hysteresis, IncidentTracker, SeriesResult};
use crate::detect::incident::{KeyRecord, Reconciled, TrackerSnapshot};
use crate::detect::{service_rules, DetectConfig, SeriesDetector, SeriesInfo, WindowStats};
use crate::model::{
    Anomaly, AnomalyKind, Incident, IncidentEvent, Readiness, SeriesKey, SeriesKind, Severity,
    COLLECTOR_SERVICE,
};
use crate::store::window::SubWindows;
use crate::store::{SeriesStats, Store};
use serde::{Deserialize, Serialize};

/// Default allowed lateness: how long after a window's end spans for it are
/// still waited for before it is judged.
pub const DEFAULT_LATENESS: Duration = Duration::from_secs(10);

struct Tracked {
    detector: SeriesDetector,
    /// The last window in which the series had data.
    last_data: i64,
}

/// Detection state across windows.
pub struct Engine {
    config: DetectConfig,
    lateness_nanos: u64,
    series: BTreeMap<SeriesKey, Tracked>,
    incidents: IncidentTracker,
    /// The next window to close; `None` until the first call.
    next_window: Option<i64>,
    /// Anomalies of the last closed window for every evaluated own-time
    /// series (`SeriesKind::Own`): evidence for root-cause analysis, never
    /// passed to the incident tracker, so incidents do not depend on
    /// whether span analysis runs.
    evidence: BTreeMap<SeriesKey, Vec<Anomaly>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("n_series", &self.series.len())
            .field("next_window", &self.next_window)
            .finish()
    }
}

fn window_stats(stats: &SeriesStats, subs: Option<SubWindows>) -> WindowStats {
    WindowStats {
        requests: stats.requests,
        errors: stats.errors,
        p50: stats.p50,
        p95: stats.p95,
        p99: stats.p99,
        max: stats.max,
        values: stats.values,
        subs,
    }
}

impl Engine {
    /// An engine with no series yet; windows close `config.lateness` after
    /// they end.
    pub fn new(config: DetectConfig) -> Self {
        let hysteresis = Hysteresis {
            open_after: config.open_after,
            open_after_severe: config.open_after_severe,
            resolve_after: config.resolve_after,
        };
        Engine {
            lateness_nanos: config.lateness.as_nanos() as u64,
            config,
            series: BTreeMap::new(),
            incidents: IncidentTracker::new(hysteresis),
            next_window: None,
            evidence: BTreeMap::new(),
        }
    }

    /// Anomalies of the last closed window for every own-time series
    /// evaluated in it (empty lists included).
    pub fn evidence(&self) -> &BTreeMap<SeriesKey, Vec<Anomaly>> {
        &self.evidence
    }

    /// Series with detection state.
    pub fn n_series(&self) -> usize {
        self.series.len()
    }

    /// Bytes of detection state: every tracked series' detector and its
    /// entry (the key's names are shared with the store and not counted).
    /// Summed at each tick for `triage_detect_state_bytes`, a walk over
    /// the series that reads capacities and allocates nothing.
    pub fn state_bytes(&self) -> usize {
        self.series
            .values()
            .map(|tracked| tracked.detector.state_bytes() + std::mem::size_of::<(SeriesKey, i64)>())
            .sum()
    }

    /// The detector (and so the baseline) of a tracked series.
    pub fn detector(&self, key: &SeriesKey) -> Option<&SeriesDetector> {
        self.series.get(key).map(|tracked| &tracked.detector)
    }

    /// Open incidents right now.
    pub fn incidents(&self) -> &IncidentTracker {
        &self.incidents
    }

    /// Closes every window that ended at least the allowed lateness before
    /// `now_unix_nanos` (wall clock live, newest event time in replay).
    pub fn advance(&mut self, store: &Store, now_unix_nanos: u64) -> Vec<IncidentEvent> {
        let watermark = now_unix_nanos.saturating_sub(self.lateness_nanos);
        // Window `w` ends at the start of `w + 1`: closed once that is <= watermark.
        let last = store.window_index(watermark) - 1;
        self.close_through(store, last)
    }

    /// Closes every window up to and including `last`, in order. Older
    /// windows than the store's ring holds are skipped.
    pub fn close_through(&mut self, store: &Store, last: i64) -> Vec<IncidentEvent> {
        let ring = store.config().windows.get() as i64;
        let first = match self.next_window {
            Some(next) => next.max(last - ring + 1),
            None => last,
        };
        let mut events = Vec::new();
        for window in first..=last {
            events.extend(self.close_window(store, window));
        }
        if last >= first {
            store.mark_closed(last);
            self.next_window = Some(last + 1);
        }
        events
    }

    /// Moves past every window the watermark at `now_unix_nanos` has
    /// passed without judging them: after a window's analysis panicked,
    /// detection carries on with the next one rather than failing on the
    /// same window at every tick. Returns how many windows were skipped.
    pub fn skip_past(&mut self, store: &Store, now_unix_nanos: u64) -> i64 {
        let watermark = now_unix_nanos.saturating_sub(self.lateness_nanos);
        let last = store.window_index(watermark) - 1;
        let first = self.next_window.unwrap_or(last);
        if last < first {
            return 0;
        }
        store.mark_closed(last);
        self.next_window = Some(last + 1);
        last - first + 1
    }

    /// Starts tracking a series with a fresh detector, as last seen with
    /// data in window `last_data`.
    fn track(&mut self, key: SeriesKey, last_data: i64) {
        let detector = SeriesDetector::new(SeriesInfo {
            kind: key.kind,
            name: key.name.to_string(),
        });
        self.series.insert(
            key,
            Tracked {
                detector,
                last_data,
            },
        );
    }

    fn close_window(&mut self, store: &Store, window: i64) -> Vec<IncidentEvent> {
        let start = store.window_start(window);
        let end = store.window_start(window + 1);
        let window_secs = (end - start) as f64 / 1e9;
        // Sorted by key, as `series` is: the two are walked side by side.
        let snapshot = store.snapshot(window);
        let mut tracked = self.series.keys().peekable();
        let mut new = Vec::new();
        for entry in &snapshot {
            while tracked.next_if(|key| **key < entry.key).is_some() {}
            if tracked.peek() != Some(&&entry.key) {
                new.push(entry.key.clone());
            }
        }
        for key in new {
            self.track(key, window);
        }
        // Series silent for longer than the store keeps idle series are gone.
        let ttl_windows =
            (store.config().series_ttl.as_nanos() as u64 / (end - start).max(1)) as i64;
        let expired: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(_, tracked)| window - tracked.last_data > ttl_windows)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.series.remove(&key);
            self.incidents.forget(&key);
        }

        let empty = WindowStats::default();
        let mut results = Vec::with_capacity(self.series.len());
        self.evidence.clear();
        let mut metrics: BTreeMap<Arc<str>, Vec<(SeriesKey, WindowStats)>> = BTreeMap::new();
        let mut entries = snapshot.iter().peekable();
        let mut span_requests = 0;
        for (key, tracked) in self.series.iter_mut() {
            while entries.next_if(|entry| entry.key < *key).is_some() {}
            let entry = entries.next_if(|entry| entry.key == *key);
            let stats = match entry {
                Some(entry) => {
                    tracked.last_data = window;
                    window_stats(&entry.stats, entry.subs)
                }
                // A metric that did not report is unknown, not zero.
                None if key.kind == SeriesKind::Metric => continue,
                None => empty.clone(),
            };
            if matches!(key.kind, SeriesKind::Operation | SeriesKind::Edge) {
                span_requests += stats.requests;
            }
            let anomalies = tracked
                .detector
                .observe(&self.config, start, window_secs, &stats);
            if key.kind == SeriesKind::Own {
                self.evidence.insert(key.clone(), anomalies);
                continue;
            }
            let onset = (!anomalies.is_empty()).then(|| {
                // The window before, in case the anomaly began late in it.
                let previous = store.subs(key, window - 1);
                let refined = onset::refine(
                    &self.config,
                    &anomalies,
                    stats.subs.as_ref(),
                    previous.as_ref(),
                    start,
                    end - start,
                );
                // Accumulated evidence begins in its first window, placed
                // inside it the same way; the refinement above already
                // reads the window before this one.
                let windows = tracked.detector.evidence_windows() as i64;
                if windows > 2 {
                    let first = window - (windows - 1);
                    let first_start = end.saturating_sub(windows as u64 * (end - start));
                    let accumulated = onset::refine(
                        &self.config,
                        &anomalies,
                        store.subs(key, first).as_ref(),
                        store.subs(key, first - 1).as_ref(),
                        first_start,
                        end - start,
                    );
                    refined.min(accumulated)
                } else {
                    refined
                }
            });
            if key.kind == SeriesKind::Metric {
                metrics
                    .entry(Arc::clone(&key.service))
                    .or_default()
                    .push((key.clone(), stats));
            }
            results.push(SeriesResult {
                key: key.clone(),
                anomalies,
                onset_unix_nanos: onset,
                exemplars: entry
                    .map(|entry| entry.exemplars.clone())
                    .unwrap_or_default(),
            });
        }

        self.silence(&mut results, span_requests);

        for (service, series) in &metrics {
            let trends: Vec<Option<Trend>> = series
                .iter()
                .map(|(key, _)| {
                    self.series
                        .get(key)
                        .and_then(|tracked| tracked.detector.trend())
                })
                .collect();
            let inputs: Vec<(&str, &WindowStats, Option<&Trend>)> = series
                .iter()
                .zip(&trends)
                .map(|((key, stats), trend)| (&*key.name, stats, trend.as_ref()))
                .collect();
            let anomalies = service_rules(&self.config, service, &inputs);
            if !anomalies.is_empty() {
                results.push(SeriesResult {
                    key: SeriesKey::new(SeriesKind::Metric, service, "saturation"),
                    anomalies,
                    exemplars: Vec::new(),
                    onset_unix_nanos: None,
                });
            }
        }
        // A service whose rules stopped firing reports a normal window.
        for service in self.saturation_services() {
            if !results
                .iter()
                .any(|result| result.key.service == service && &*result.key.name == "saturation")
            {
                results.push(SeriesResult {
                    key: SeriesKey::new(SeriesKind::Metric, &service, "saturation"),
                    anomalies: Vec::new(),
                    exemplars: Vec::new(),
                    onset_unix_nanos: None,
                });
            }
        }
        self.incidents.window(window, start, end, results)
    }

    /// Turns a window in which no service sent a single span, while some
    /// lost traffic they were expected to have, into one `no_data`
    /// condition on the collector: the input stopped, not every service at
    /// once. The per-service drops are taken out, so they neither open nor
    /// keep open incidents of their own. Once spans arrive again the
    /// collector's pseudo-series reports a normal window and resolves.
    fn silence(&self, results: &mut Vec<SeriesResult>, span_requests: u64) {
        let key = SeriesKey::new(SeriesKind::Operation, COLLECTOR_SERVICE, "telemetry input");
        let silent: BTreeSet<Arc<str>> = if span_requests == 0 {
            results
                .iter()
                .filter(|result| {
                    result
                        .anomalies
                        .iter()
                        .any(|anomaly| anomaly.kind == AnomalyKind::TrafficDrop)
                })
                .map(|result| Arc::clone(&result.key.service))
                .collect()
        } else {
            BTreeSet::new()
        };
        // One silent service is that service's outage: only a collector
        // that hears from nobody is told apart.
        if silent.len() < 2 {
            if self.incidents.tracked_keys().any(|tracked| *tracked == key) {
                results.push(SeriesResult {
                    key,
                    anomalies: Vec::new(),
                    exemplars: Vec::new(),
                    onset_unix_nanos: None,
                });
            }
            return;
        }
        let mut expected = 0.0;
        for result in results.iter_mut() {
            // Edges count the same requests as their callees' operations.
            let counted = result.key.kind == SeriesKind::Operation;
            result.anomalies.retain(|anomaly| {
                if anomaly.kind != AnomalyKind::TrafficDrop {
                    return true;
                }
                if counted {
                    expected += anomaly.baseline;
                }
                false
            });
            if result.anomalies.is_empty() {
                result.onset_unix_nanos = None;
            }
        }
        results.push(SeriesResult {
            key,
            anomalies: vec![Anomaly {
                kind: AnomalyKind::NoData,
                severity: Severity::Critical,
                severe: false,
                measure: "spans/s".to_owned(),
                current: 0.0,
                baseline: expected,
                unit: "req/s".to_owned(),
                summary: format!(
                    "no spans from any service; {} services that expected {} requests/s \
                     went silent at once",
                    silent.len(),
                    super::series::format_rate(expected)
                ),
                time_to_limit_secs: None,
            }],
            exemplars: Vec::new(),
            onset_unix_nanos: None,
        });
    }

    /// Services that have had a saturation result (tracked by the incident
    /// tracker under the pseudo-series `saturation`).
    fn saturation_services(&self) -> Vec<Arc<str>> {
        self.incidents
            .tracked_keys()
            .filter(|key| key.kind == SeriesKind::Metric && &*key.name == "saturation")
            .map(|key| Arc::clone(&key.service))
            .collect()
    }
}

// === snapshots ===

/// The detection state worth keeping across a restart: every series'
/// baseline and the incident tracker's state. Restored with
/// [`Engine::restore`], a collector judges its next window as it would have
/// without the restart, with no new warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// The store's window length when the snapshot was taken, nanoseconds.
    pub window_nanos: u64,
    /// Start of the next window the engine would have closed, Unix
    /// nanoseconds; `None` before the first.
    pub next_window_unix_nanos: Option<u64>,
    /// Every tracked series with its baseline.
    pub series: Vec<SeriesSnapshot>,
    /// Hysteresis state and open incidents.
    pub incidents: TrackerSnapshot,
}

/// One series as a snapshot saves it, borrowed from the engine
/// ([`Engine::snapshot_series`]).
#[derive(Debug)]
pub struct SeriesView<'a> {
    /// Which series.
    pub series: KeyRecord,
    /// Start of the last window with data, Unix nanoseconds.
    pub last_data_unix_nanos: u64,
    /// Its detector.
    pub detector: &'a SeriesDetector,
}

/// Start of window `index` (negative indices clamp to 0), Unix nanoseconds.
fn window_start(index: i64, window_nanos: u64) -> u64 {
    (index.max(0) as u64).saturating_mul(window_nanos)
}

/// One series' baseline, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    /// Which series.
    pub series: KeyRecord,
    /// Start of the last window in which the series had data, Unix
    /// nanoseconds (for the idle expiry).
    pub last_data_unix_nanos: u64,
    /// The baseline and detector state.
    pub detector: SeriesDetector,
}

/// How far ahead of the clock a restored engine's next window may be (the
/// clock went back between runs) and still be waited for.
const RESTORE_MAX_AHEAD: Duration = Duration::from_secs(600);

/// What [`Engine::restore`] took back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Series whose baselines were restored.
    pub series: usize,
    /// Series or tracks skipped (a kind this build does not know).
    pub skipped: usize,
    /// Open incidents restored.
    pub open_incidents: usize,
}

impl Engine {
    /// Copies the state to save. `window` is the store's window length.
    ///
    /// A whole second copy of the detection state: the server does not
    /// take it while running (see [`Engine::snapshot_head`]); tests and
    /// tools do.
    pub fn snapshot(&self, window: Duration) -> EngineSnapshot {
        let mut snapshot = self.snapshot_head(window);
        snapshot.series = self
            .snapshot_series(window)
            .map(|saved| SeriesSnapshot {
                series: saved.series,
                last_data_unix_nanos: saved.last_data_unix_nanos,
                detector: saved.detector.clone(),
            })
            .collect();
        snapshot
    }

    /// The snapshot without its series (`series` empty): the window
    /// position and the incident tracker. With [`Engine::snapshot_series`]
    /// a writer can encode the series one at a time instead of copying
    /// every detector first.
    pub fn snapshot_head(&self, window: Duration) -> EngineSnapshot {
        let window_nanos = (window.as_nanos() as u64).max(1);
        EngineSnapshot {
            window_nanos,
            next_window_unix_nanos: self
                .next_window
                .map(|index| window_start(index, window_nanos)),
            series: Vec::new(),
            incidents: self.incidents.snapshot(window_nanos),
        }
    }

    /// Every tracked series as a snapshot saves it, borrowed.
    pub fn snapshot_series(&self, window: Duration) -> impl Iterator<Item = SeriesView<'_>> {
        let window_nanos = (window.as_nanos() as u64).max(1);
        self.series.iter().map(move |(key, tracked)| SeriesView {
            series: KeyRecord::of(key),
            last_data_unix_nanos: window_start(tracked.last_data, window_nanos),
            detector: &tracked.detector,
        })
    }

    /// Replaces the state with a saved one. `window` is the store's window
    /// length now; `resume_window` the first window to judge, normally the
    /// first one that starts after this process started.
    ///
    /// Windows between the snapshot and `resume_window` are never judged:
    /// nothing was listening then, so an empty window there says nothing
    /// about the traffic, and judging it would open a false traffic-drop
    /// incident for every series. For the same reason the downtime does not
    /// count as idle time: every series' idle clock restarts at
    /// `resume_window`.
    pub fn restore(
        &mut self,
        snapshot: EngineSnapshot,
        window: Duration,
        resume_window: i64,
    ) -> Restored {
        let window_nanos = (window.as_nanos() as u64).max(1);
        let index = |unix_nanos: u64| i64::try_from(unix_nanos / window_nanos).unwrap_or(i64::MAX);
        let mut restored = Restored::default();
        self.series.clear();
        for saved in snapshot.series {
            let Some(key) = saved.series.key() else {
                restored.skipped += 1;
                continue;
            };
            let last_data = index(saved.last_data_unix_nanos).max(resume_window - 1);
            self.series.insert(
                key,
                Tracked {
                    detector: saved.detector,
                    last_data,
                },
            );
            restored.series += 1;
        }
        restored.open_incidents = snapshot.incidents.open.len();
        restored.skipped += self.incidents.restore(snapshot.incidents, window_nanos);
        // Never close a window twice: the tracker has already counted every
        // window before the saved `next_window`. That is only ahead of
        // `resume_window` when the clock went back; past a few minutes,
        // waiting for it would stall detection, so it is not waited for.
        let max_ahead = i64::try_from(RESTORE_MAX_AHEAD.as_nanos() as u64 / window_nanos)
            .unwrap_or(i64::MAX)
            .max(1);
        let saved_next = snapshot.next_window_unix_nanos.map(index);
        self.next_window = Some(match saved_next {
            Some(next) if next > resume_window && next - resume_window <= max_ahead => next,
            _ => resume_window,
        });
        restored
    }

    /// Makes the open incidents agree with the recorded history (see
    /// [`IncidentTracker::reconcile`]). Series of adopted incidents that have
    /// no detector get a fresh one, so they are fed windows and can resolve.
    pub fn reconcile(
        &mut self,
        recorded_open: &[Incident],
        resolved_ids: &BTreeSet<String>,
        resume_window: i64,
    ) -> Reconciled {
        let reconciled = self.incidents.reconcile(recorded_open, resolved_ids);
        let keys: Vec<SeriesKey> = self
            .incidents
            .tracked_keys()
            .filter(|key| !self.series.contains_key(*key))
            // The saturation pseudo-series has no detector of its own.
            .filter(|key| !(key.kind == SeriesKind::Metric && &*key.name == "saturation"))
            .cloned()
            .collect();
        for key in keys {
            self.track(key, resume_window - 1);
        }
        if self.next_window.is_none() {
            self.next_window = Some(resume_window);
        }
        reconciled
    }

    /// Series tracked, and how many of them have enough history to alert.
    pub fn readiness(&self) -> (usize, usize) {
        let ready = self
            .series
            .values()
            .filter(|tracked| tracked.detector.readiness(&self.config) == Readiness::Ready)
            .count();
        (self.series.len(), ready)
    }
}

#[cfg(test)]
mod tests;
