//! One series' baseline and the per-window detectors: latency, error rate,
//! traffic, error logs, metric level shifts and trends.
//!
//! A [`SeriesDetector`] keeps a ring of compact per-window summaries (not
//! histograms) and, once a day of it exists, a time-of-day profile. Each
//! closed window is first judged against the baseline, then folded in.
//!
//! # Baselines
//!
//! - **Trailing**: median and MAD of the last `history_windows` windows
//!   (latency in log space). Windows with fewer than the minimum requests
//!   carry no latency, so they never enter a latency baseline.
//! - **Not poisoned by the anomaly it measures**: a window that produced an
//!   anomaly is kept in the ring but flagged and skipped by the trailing
//!   baselines, so an incident cannot become its own baseline. An isolated
//!   anomalous window (normal windows on both sides) is taken back once the
//!   next window turns out normal: a series whose tail reaches that far now
//!   and then has to learn that it does. When
//!   anomalous windows have followed each other for `relearn_after` (default
//!   30 minutes), the change is taken to be intended: the run becomes the
//!   baseline and every older window is marked stale (still used for the
//!   trend fit and the time-of-day profile, no longer for the trailing
//!   baselines). A permanent change therefore alerts for half an hour and
//!   then stops.
//! - **Beyond its own range**: besides the relative, absolute, significance
//!   and robust-z thresholds, a latency rise, traffic spike or level shift
//!   must fall outside the range the usable baseline windows spanned (above
//!   their largest p95, their largest count, ...). Median and
//!   MAD misread a series that routinely swings between two levels (a cache
//!   whose miss rate sits near 5% has a p95 that jumps between the hit and
//!   the miss latency from one window to the next): the minority level
//!   looks like an outlier every time it appears. Requiring a value no
//!   normal window of the last hour reached bounds the false-alarm rate of
//!   any stationary series, whatever its shape, at about one window in
//!   `history_windows`; hysteresis then needs that twice in a row. Runs of
//!   anomalous windows are not in the baseline, so an incident cannot raise
//!   the bar for the next one. Traffic drops are exempt: a busy series does
//!   not routinely lose half its traffic, and Poisson, ratio and noise
//!   thresholds already guard them, so a short outage that entered the
//!   baseline does not hide the next. A latency rise must moreover clear
//!   the relative threshold over the baseline's 90th-percentile window as
//!   well as over its median, so a series whose p95 flips to its upper level
//!   in more than one window in ten alerts only above that level. A severe
//!   latency deviation (which opens an incident on its own) must also clear
//!   the relative threshold over the largest baseline window, and the p50
//!   must have risen by it too: a p95 or p99 is a handful of requests, and
//!   one window of a handful of slow requests is no evidence on its own.
//! - **Enough slow requests** (span series): a latency anomaly also needs
//!   the count of the window's requests over the threshold (the relative
//!   and absolute rise over the baseline value) to be improbable under
//!   the share the baseline allows there (binomial test at 1e-2; 5% over
//!   the baseline p95, 1% over its p99), counted from the window's coarse
//!   sub-window histograms. A p95 of a few dozen requests is two or three
//!   of them: a series with a 2% slow path (a cache that misses to an
//!   external API) has its p95 on that path in about one window in six,
//!   and over days of traffic such windows also come in pairs beyond the
//!   last hour's range (the multi-day evaluation found all of its false
//!   incidents this way, before this test). A real slowdown moves many
//!   requests, not two.
//! - **Same time of day** (when `seasonality` is on): per 10-minute slot of
//!   the day (UTC), the medians of the slot's windows on each of the last
//!   three days, including anomalous windows (the profile records what
//!   happened, not what was normal). Once any earlier day has data for the
//!   slot, a window must exceed both the trailing baseline and the median of
//!   those days, with the same relative, absolute and significance
//!   thresholds, so a daily peak is not an incident. The noise (z) checks
//!   use the trailing MAD only: a slot keeps one median per day, not a
//!   spread. Error rates are not compared by time of day: they rarely
//!   follow the clock, and the pooled rate already adapts. Trends are not
//!   either: a leak does not follow the clock.
//!
//! # Warm-up
//!
//! A series reports [`Readiness::WarmingUp`] and raises nothing until it has
//! been observed for `warmup_windows`. Its windows are judged silently as
//! soon as ten of them exist, so that odd early windows (a restart, an empty
//! window) are kept out of the baseline just like later anomalies.
//!
//! # Memory
//!
//! A window summary is 32 bytes and a profile slot-day 24 bytes, so at the
//! defaults (360 windows; 144 slots x 3 days) a series holds 11,520 +
//! 10,368 bytes, about 22 KB, plus its name, and the sorted values of its
//! baseline (4 bytes a measure a usable window). The history is reserved
//! whole at the first window and the profile when the first 10-minute slot
//! closes, so a series' state stops growing early instead of creeping up
//! for an hour (`triage_detect_state_bytes` sums it). Series nobody watches
//! (metrics outside the watched patterns, log severity classes other than
//! `all`) keep no history at all.
//!
//! # Invariants
//!
//! - Windows are fed in order (gaps allowed: a metric that did not report
//!   is simply not fed); a window that starts no later than the newest one
//!   folded in is ignored, so a replayed or duplicated window cannot corrupt
//!   the ring.
//! - The window length is part of the baseline: if it changes, the history
//!   and profile are dropped and the series warms up again.
//! - Nothing here panics on input: non-finite or non-positive values are
//!   treated as "no value".

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::{base_name, DetectConfig};
use super::sparse::{self, Sparse};
use super::stats::{self, Spread};
use crate::detect::{SeriesInfo, WindowStats};
use crate::model::SeriesKind;
use crate::model::{Anomaly, AnomalyKind, Readiness, Severity};
use sorted::Sorted;

/// Length of one time-of-day slot. Ten minutes follows a daily ramp closely
/// enough while a slot still holds 60 windows of 10 s to take a median of.
const SLOT_SECS: u64 = 600;
/// Slots in a day.
const SLOTS_PER_DAY: u64 = 86_400 / SLOT_SECS;
/// Days of the time-of-day profile. Three gives a median that one odd day
/// (an incident yesterday at this time) cannot move.
const PROFILE_DAYS: usize = 3;
/// Fewest values a time-of-day slot summarizes: fewer are an anecdote.
const MIN_SLOT_VALUES: usize = 3;
/// Fewest baseline windows a measure is judged against: a median of fewer is
/// one outlier away from wrong.
const MIN_BASELINE_WINDOWS: usize = 10;
/// Floor of the MAD of log latency (about 5%). A histogram with 1% buckets
/// over a few hundred requests wobbles at least this much, and a flatter
/// baseline would make ordinary wiggles look significant.
const LOG_MAD_FLOOR: f64 = 0.05;
/// Floor of the MAD of a metric level, as a fraction of its median, for the
/// same reason (a gauge that sat perfectly still has a MAD of 0).
const LEVEL_MAD_FLOOR: f64 = 0.01;
/// Quantile of the baseline windows a latency rise must also clear by the
/// relative threshold. For most series it sits just above the median (a
/// 1.5x rise then needs about 1.6-1.7x the median); for a series whose p95
/// flips between two levels in more than one window in ten, it is the upper
/// level, so only a rise above that counts.
const UPPER_QUANTILE: f64 = 0.9;
/// Significance of the count of slow requests a latency anomaly of span
/// series needs (see `Judge::enough_slow`). A p95 of 40 requests is their
/// second slowest: a dependency answering 2% of calls from a slow path
/// (a cache miss to an external API) puts it there in one window in six
/// by chance (2 or 3 slow of 30 to 60 requests: p about 0.2 to 0.5), and
/// over days of traffic such windows also come in pairs and beyond the
/// last hour's range. 1e-2 per window, with two windows needed to open,
/// keeps that quiet, while a window that a slowdown reaches for only its
/// last 4 s (6 slow of 28 requests: p = 0.005) still counts; 1e-3 made
/// latency faults wait one more window.
const LATENCY_SIGNIFICANCE: f64 = 1e-2;
/// Flag on a window that produced an anomaly: skipped by the trailing
/// baselines unless re-learned.
const FLAG_ANOMALOUS: u32 = 1 << 31;
/// Flag on a window from before a re-learn: skipped by the trailing
/// baselines, kept for trends and the time-of-day profile.
const FLAG_STALE: u32 = 1 << 30;
/// The request count's bits in [`WindowSummary::requests_flags`]; counts
/// saturate at about 10^9 per window, far beyond any one series.
const COUNT_MASK: u32 = FLAG_STALE - 1;
/// Marks a profile slot-day with no data.
const NO_DAY: u32 = u32::MAX;
/// Latency quantiles by index in the summaries: p50, p95, p99.
const QUANTILE_NAMES: [&str; 3] = ["p50", "p95", "p99"];
/// The order latency quantiles are reported in: p95 is the headline, p99
/// catches tail-only regressions, p50 the rest. One latency anomaly per
/// window, so an incident reads one number.
const QUANTILE_ORDER: [usize; 3] = [1, 2, 0];

/// A sustained linear rise (or fall) of a metric level, for the saturation
/// rules and for [`AnomalyKind::Trend`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Fitted change of the level per second.
    pub slope_per_sec: f64,
    /// How well the line fits, in `[0, 1]`.
    pub r2: f64,
    /// The level at the newest window, read off the fitted line (steadier
    /// than the raw value for projecting to a limit).
    pub last: f64,
    /// Time the fit covers, from the oldest window's start to the newest
    /// window's end.
    pub duration_secs: f64,
}

/// The baseline state and detectors of one series. Serializable so that
/// baselines can be persisted and survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesDetector {
    /// What the series is; decides which detectors run.
    #[serde(with = "info_serde")]
    info: SeriesInfo,
    /// Window length the history was recorded with, in seconds (0 before
    /// the first window). Counts only compare across equal windows.
    window_secs: f64,
    /// Windows observed since the start (or since the window length
    /// changed), for readiness.
    seen: u64,
    /// Start of the newest window folded in, Unix nanoseconds; older or
    /// repeated windows are ignored.
    newest_start: Option<u64>,
    /// Per-window summaries, oldest first, at most `history_windows`.
    history: VecDeque<WindowSummary>,
    /// Time-of-day profile: `SLOTS_PER_DAY * PROFILE_DAYS` slot-days, indexed
    /// by `slot * PROFILE_DAYS + day % PROFILE_DAYS`; empty until the first
    /// slot closes, and always empty with seasonality off.
    profile: Vec<SlotSummary>,
    /// The absolute slot number (Unix seconds / `SLOT_SECS`) windows are
    /// currently arriving in; summarized into the profile when it ends.
    open_slot: Option<u64>,
    /// The latest fit of the level history (metric series only).
    trend: Option<Trend>,
    /// Whether this metric has shown itself to be a distribution (it had
    /// observations or quantiles). The store also puts a distribution's sum
    /// of observations into `values`, which is not a level: a rare route's
    /// first request would look like a jump from 0. Once set, levels are
    /// neither kept nor judged.
    #[serde(default)]
    distribution: bool,
    /// The usable windows' values, sorted; rebuilt from `history` when
    /// `None` (after a restore, or changes too broad to follow).
    #[serde(skip)]
    sorted: Option<Sorted>,
    /// Evidence accumulated over the last two minutes for windows too
    /// sparse to judge on their own (span and log series).
    #[serde(default)]
    sparse: Sparse,
}

/// What one window left behind: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "SummaryRecord", from = "SummaryRecord")]
struct WindowSummary {
    /// Window start, Unix nanoseconds.
    start: u64,
    /// Requests (saturating, in [`COUNT_MASK`]) and the flags
    /// [`FLAG_ANOMALOUS`] and [`FLAG_STALE`], packed to keep the summary at
    /// 32 bytes.
    requests_flags: u32,
    /// Errors (saturating).
    errors: u32,
    /// ln of p50, p95 and p99 (ms for spans and `*.duration` metrics, the
    /// metric's unit otherwise); NaN when the window had none or had too few
    /// requests for the quantile to mean anything.
    ln_quantiles: [f32; 3],
    /// Mean of the window's gauge values or sum deltas; NaN without points.
    level: f32,
}

/// The serialized form of a [`WindowSummary`]: NaN becomes `null`, which
/// JSON can carry.
#[derive(Serialize, Deserialize)]
struct SummaryRecord {
    /// See [`WindowSummary::start`].
    start: u64,
    /// See [`WindowSummary::requests_flags`].
    requests_flags: u32,
    /// See [`WindowSummary::errors`].
    errors: u32,
    /// See [`WindowSummary::ln_quantiles`].
    ln_quantiles: [Option<f32>; 3],
    /// See [`WindowSummary::level`].
    level: Option<f32>,
}

/// One 10-minute slot of one day: the medians of its windows. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "SlotRecord", from = "SlotRecord")]
struct SlotSummary {
    /// Day number (Unix days), or [`NO_DAY`] when empty.
    day: u32,
    /// Median requests per window.
    requests: f32,
    /// Median ln p50, p95, p99; NaN without data.
    ln_quantiles: [f32; 3],
    /// Median level; NaN without data.
    level: f32,
}

/// The serialized form of a [`SlotSummary`] (NaN as `null`).
#[derive(Serialize, Deserialize)]
struct SlotRecord {
    /// See [`SlotSummary::day`].
    day: u32,
    /// See [`SlotSummary::requests`].
    requests: Option<f32>,
    /// See [`SlotSummary::ln_quantiles`].
    ln_quantiles: [Option<f32>; 3],
    /// See [`SlotSummary::level`].
    level: Option<f32>,
}

/// Which detectors a series gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Operations and edges: latency, error rate, traffic.
    Requests,
    /// The log series `all`: error logs.
    ErrorLogs,
    /// A watched metric: level shifts (and distribution shifts) when
    /// `levels`, trends when `trend`.
    Metric {
        /// Matches a level-shift pattern.
        levels: bool,
        /// Matches a trend pattern.
        trend: bool,
    },
    /// Nothing to judge and nothing to keep.
    Ignored,
}

/// The trailing baseline, computed fresh for each window from the usable
/// (not anomalous, not stale) windows.
#[derive(Debug, Default)]
#[cfg_attr(test, derive(PartialEq))]
struct Baseline {
    /// Usable windows the baseline was computed from.
    windows: usize,
    /// Per-window request counts.
    requests: Option<Envelope>,
    /// Errors summed over the baseline windows.
    errors_total: u64,
    /// Requests summed over the baseline windows.
    requests_total: u64,
    /// Per-window error rates of the windows with enough requests.
    error_rates: Option<Spread>,
    /// ln p50, p95, p99.
    ln_quantiles: [Option<Envelope>; 3],
    /// Metric levels.
    level: Option<Envelope>,
}

/// A baseline measure: its median and MAD, and the range its windows
/// spanned.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(test, derive(PartialEq))]
struct Envelope {
    /// Median and MAD.
    spread: Spread,
    /// Smallest value of the baseline windows.
    min: f64,
    /// The [`UPPER_QUANTILE`] of the baseline windows: where the series
    /// usually tops out.
    upper: f64,
    /// Largest value of the baseline windows.
    max: f64,
}

/// The same-time-of-day baseline: medians over the previous days' slot.
#[derive(Debug, Default, Clone, Copy)]
struct SlotBaseline {
    /// Requests per window.
    requests: Option<f64>,
    /// ln p50, p95, p99.
    ln_quantiles: [Option<f64>; 3],
    /// Metric level.
    level: Option<f64>,
}

/// Everything one window is judged with.
struct Judge<'a> {
    /// The thresholds.
    config: &'a DetectConfig,
    /// The window.
    stats: &'a WindowStats,
    /// Window length, seconds.
    window_secs: f64,
    /// The trailing baseline.
    baseline: &'a Baseline,
    /// The same-time-of-day baseline, when there is one.
    slot: Option<SlotBaseline>,
}

/// How a series' latency-like quantiles are read.
struct QuantileScale {
    /// Kind of the anomaly raised.
    kind: AnomalyKind,
    /// Prefix of the measure ("" for spans, the metric name for metrics).
    prefix: String,
    /// Multiplier to the stored unit (1000 for seconds to ms).
    factor: f64,
    /// Unit shown ("ms", or "" for an unknown metric unit).
    unit: &'static str,
    /// Whether the absolute thresholds (ms) apply.
    absolute: bool,
    /// What one observation is called in summaries.
    noun: &'static str,
    /// The quantiles judged, by index, in reporting order.
    order: &'static [usize],
    /// Whether every anomaly (not only a severe one) needs the p50 to have
    /// risen too. Quantiles of bucketed histograms move in bucket steps,
    /// often 2x or more apart: one quantile near a bucket bound flips
    /// between two values as load drifts. Two quantiles flipping at once is
    /// much rarer than one, and a real slowdown moves both.
    broad: bool,
}

// === impl SeriesDetector ===

impl SeriesDetector {
    /// A detector with no history, for the series `info`.
    pub fn new(info: SeriesInfo) -> Self {
        SeriesDetector {
            info,
            window_secs: 0.0,
            seen: 0,
            newest_start: None,
            history: VecDeque::new(),
            profile: Vec::new(),
            open_slot: None,
            trend: None,
            distribution: false,
            sorted: None,
            sparse: Sparse::default(),
        }
    }

    /// The series this detector is for.
    pub fn info(&self) -> &SeriesInfo {
        &self.info
    }

    /// Bytes the detector holds, itself and on the heap (by the capacity
    /// its buffers reserved, not their length): the figure behind
    /// `triage_detect_state_bytes`.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.info.name.capacity()
            + self.history.capacity() * std::mem::size_of::<WindowSummary>()
            + self.profile.capacity() * std::mem::size_of::<SlotSummary>()
            + self.sorted.as_ref().map_or(0, Sorted::heap_bytes)
            + self.sparse.heap_bytes()
    }

    /// Whether the series has enough history to be judged.
    pub fn readiness(&self, config: &DetectConfig) -> Readiness {
        let have = usize::try_from(self.seen).unwrap_or(usize::MAX);
        if have >= config.warmup_windows {
            Readiness::Ready
        } else {
            Readiness::WarmingUp {
                have,
                need: config.warmup_windows,
            }
        }
    }

    /// The latest linear fit of the series' level (metric value series with
    /// at least `trend_min_duration` of history). It is a fit, not a verdict:
    /// callers check the slope, r² and duration they need.
    pub fn trend(&self) -> Option<Trend> {
        self.trend
    }

    /// Judges the window starting at `window_start_unix_nanos` against the
    /// baseline, then folds it in. Returns the anomalies found (none while
    /// warming up).
    /// How many windows, the newest last, the evidence of the last window's
    /// accumulated (sparse) anomaly spans; 0 when it had none.
    pub fn evidence_windows(&self) -> usize {
        self.sparse.evidence_windows()
    }

    pub fn observe(
        &mut self,
        config: &DetectConfig,
        window_start_unix_nanos: u64,
        window_secs: f64,
        stats: &WindowStats,
    ) -> Vec<Anomaly> {
        if !(window_secs.is_finite() && window_secs > 0.0) {
            return Vec::new();
        }
        if self
            .newest_start
            .is_some_and(|newest| window_start_unix_nanos <= newest)
        {
            return Vec::new();
        }
        if self.window_secs != window_secs {
            if self.window_secs != 0.0 {
                self.reset();
            }
            self.window_secs = window_secs;
        }
        self.newest_start = Some(window_start_unix_nanos);
        let ready = matches!(self.readiness(config), Readiness::Ready);
        self.seen += 1;

        let role = self.role(config);
        if role == Role::Ignored {
            // Nothing to keep: drop what an earlier config may have built.
            if !self.history.is_empty() || !self.profile.is_empty() {
                self.history = VecDeque::new();
                self.profile = Vec::new();
                self.trend = None;
                self.sorted = None;
            }
            return Vec::new();
        }

        if self.info.kind == SeriesKind::Metric
            && !self.distribution
            && (stats.requests > 0
                || stats.p50.is_some()
                || stats.p95.is_some()
                || stats.p99.is_some())
        {
            self.distribution = true;
            // What was kept as levels so far were sums of observations.
            for window in self.history.iter_mut() {
                window.level = f32::NAN;
            }
            self.trend = None;
            self.sorted = None;
        }

        if config.seasonality {
            self.close_slot(window_start_unix_nanos);
        } else if !self.profile.is_empty() {
            self.profile = Vec::new();
        }

        // Windows are judged during warm-up too, as soon as a baseline
        // exists, but silently: what is found only keeps those windows out
        // of the baseline, so an odd window early on (a restart, an empty
        // window) does not widen the baseline's range for the next hour.
        let mut anomalies = Vec::new();
        {
            let baseline = self.baseline(config);
            #[cfg(test)]
            assert_eq!(baseline, self.fresh_baseline(config));
            let judge = Judge {
                config,
                stats,
                window_secs,
                baseline: &baseline,
                slot: self.slot_baseline(config, window_start_unix_nanos),
            };
            // What the per-window tests cannot judge for want of requests
            // is judged on the last two minutes together.
            let sparse_window = |error_kind, latency: bool, found: &[Anomaly]| sparse::Window {
                requests: stats.requests,
                errors: stats.errors,
                subs: stats.subs.as_ref(),
                window_secs,
                errors_sparse: stats.requests < config.error_min_requests,
                latency_sparse: latency && stats.requests < config.latency_min_requests,
                baseline_error_rate: (baseline.windows >= MIN_BASELINE_WINDOWS
                    && baseline.requests_total > 0)
                    .then(|| baseline.errors_total as f64 / baseline.requests_total as f64),
                error_kind,
                error_found: found.iter().any(|anomaly| anomaly.kind == error_kind),
                latency_found: found
                    .iter()
                    .any(|anomaly| anomaly.kind == AnomalyKind::Latency),
                latency_judged: latency,
            };
            match role {
                Role::Requests => {
                    let scale = QuantileScale::spans();
                    anomalies.extend(judge.latency(&scale));
                    anomalies.extend(judge.errors(AnomalyKind::ErrorRate));
                    anomalies.extend(judge.traffic());
                    let window = sparse_window(AnomalyKind::ErrorRate, true, &anomalies);
                    anomalies.extend(self.sparse.judge(config, &window));
                }
                Role::ErrorLogs => {
                    anomalies.extend(judge.errors(AnomalyKind::ErrorLogs));
                    let window = sparse_window(AnomalyKind::ErrorLogs, false, &anomalies);
                    anomalies.extend(self.sparse.judge(config, &window));
                }
                Role::Metric { levels: true, .. } => {
                    let scale = QuantileScale::metric(&self.info.name);
                    anomalies.extend(judge.latency(&scale));
                    if !self.distribution {
                        anomalies.extend(judge.level(&self.info.name));
                    }
                }
                Role::Metric { levels: false, .. } | Role::Ignored => {}
            }
        }

        let flags = if anomalies.is_empty() {
            0
        } else {
            FLAG_ANOMALOUS
        };
        if matches!(role, Role::Requests | Role::ErrorLogs) {
            self.sparse
                .learn(config, !anomalies.is_empty(), window_secs);
        }
        if !ready {
            anomalies.clear();
        }
        let mut summary = WindowSummary::new(
            window_start_unix_nanos,
            stats,
            config,
            QuantileScale::factor_for(&self.info),
            flags,
        );
        if self.distribution {
            summary.level = f32::NAN;
        }
        let limit = config.history_windows.max(1);
        if self.history.len() == self.history.capacity() {
            // Room for the whole history at once (the limit, and one more
            // before the oldest leaves): every tracked series is fed a
            // window each time one closes, so it reaches the limit anyway
            // after `history_windows`, and reserving it at the start means
            // the state stops growing early, with no copies on the way
            // (growing by steps left the old blocks to the allocator,
            // whose resident memory kept rising for the first hour).
            let len = self.history.len();
            self.history
                .reserve_exact((limit + 1).saturating_sub(len).max(1));
        }
        self.history.push_back(summary);
        if let Some(sorted) = self.sorted.as_mut().filter(|_| summary.usable()) {
            sorted.add(&summary);
        }
        while self.history.len() > limit {
            let Some(oldest) = self.history.pop_front() else {
                break;
            };
            if let Some(sorted) = self.sorted.as_mut().filter(|_| oldest.usable()) {
                sorted.remove(&oldest);
            }
        }
        self.forgive_blip();
        self.relearn(config);

        if let Role::Metric { trend, .. } = role {
            self.trend = self.fit_trend(config);
            if ready && trend {
                anomalies.extend(self.trend_anomaly(config));
            }
        }
        anomalies
    }

    /// Forgets all history (the window length changed).
    fn reset(&mut self) {
        // `distribution` is about the metric, not the window length: kept.
        self.seen = 0;
        self.history = VecDeque::new();
        self.profile = Vec::new();
        self.open_slot = None;
        self.trend = None;
        self.sorted = None;
        self.sparse = Sparse::default();
    }

    /// Which detectors apply, under `config`.
    fn role(&self, config: &DetectConfig) -> Role {
        match self.info.kind {
            SeriesKind::Operation | SeriesKind::Edge | SeriesKind::Own => Role::Requests,
            SeriesKind::Log if self.info.name == "all" => Role::ErrorLogs,
            SeriesKind::Log => Role::Ignored,
            SeriesKind::Metric => {
                let levels = config.watches_metric(&self.info.name);
                let trend = config.watches_trend(&self.info.name);
                if levels || trend {
                    Role::Metric { levels, trend }
                } else {
                    Role::Ignored
                }
            }
        }
    }

    /// The trailing baseline from the usable windows.
    fn baseline(&mut self, config: &DetectConfig) -> Baseline {
        let min_requests = config.error_min_requests;
        match &self.sorted {
            Some(sorted) if sorted.fits(min_requests) => sorted.baseline(),
            _ => {
                let sorted = Sorted::build(self.history.iter(), min_requests);
                let baseline = sorted.baseline();
                self.sorted = Some(sorted);
                baseline
            }
        }
    }

    /// The trailing baseline selected afresh from the history: what
    /// [`Sorted`] must always agree with.
    #[cfg(test)]
    fn fresh_baseline(&self, config: &DetectConfig) -> Baseline {
        let usable = || self.history.iter().filter(|window| window.usable());
        let n_usable = usable().count();
        let mut baseline = Baseline {
            windows: n_usable,
            ..Baseline::default()
        };
        let mut scratch: Vec<f64> = Vec::with_capacity(n_usable);

        scratch.extend(usable().map(|window| window.requests() as f64));
        baseline.requests = envelope(&mut scratch);

        for window in usable() {
            baseline.errors_total += u64::from(window.errors);
            baseline.requests_total += u64::from(window.requests());
        }
        scratch.clear();
        scratch.extend(
            usable()
                .filter(|window| u64::from(window.requests()) >= config.error_min_requests.max(1))
                // Rounded through f32, as the sorted baseline keeps them.
                .map(|window| {
                    f64::from((f64::from(window.errors) / f64::from(window.requests())) as f32)
                }),
        );
        baseline.error_rates = robust(&mut scratch);

        for (index, slot) in baseline.ln_quantiles.iter_mut().enumerate() {
            scratch.clear();
            scratch.extend(
                usable()
                    .map(|window| window.ln_quantiles[index])
                    .filter(|value| value.is_finite())
                    .map(f64::from),
            );
            *slot = envelope(&mut scratch);
        }

        scratch.clear();
        scratch.extend(
            usable()
                .map(|window| window.level)
                .filter(|value| value.is_finite())
                .map(f64::from),
        );
        baseline.level = envelope(&mut scratch);
        baseline
    }

    /// Takes back into the baseline the window before the newest when it was
    /// an isolated anomaly (the windows on both sides of it were normal): a
    /// series whose tail reaches that far now and then must learn that it
    /// does, or the range rule would flag the same kind of window forever.
    /// The price: after a one-window latency blip, a rise smaller than the
    /// blip goes unflagged until the blip leaves the history (an hour by
    /// default). Traffic drops do not use the range, so a short outage never
    /// hides the next one.
    fn forgive_blip(&mut self) {
        let n = self.history.len();
        if n < 2 || self.history[n - 1].anomalous() {
            return;
        }
        let before_blip_normal = n < 3 || !self.history[n - 3].anomalous();
        let blip = &mut self.history[n - 2];
        if blip.anomalous() && before_blip_normal {
            blip.requests_flags &= !FLAG_ANOMALOUS;
            let blip = *blip;
            if let Some(sorted) = self.sorted.as_mut().filter(|_| blip.usable()) {
                sorted.add(&blip);
            }
        }
    }

    /// When a trailing run of anomalous windows has lasted `relearn_after`
    /// (or fills the whole ring), accepts it as the new normal: the run's
    /// windows become usable and everything before it stale.
    fn relearn(&mut self, config: &DetectConfig) {
        let run = self
            .history
            .iter()
            .rev()
            .take_while(|window| window.anomalous())
            .count();
        if run == 0 {
            return;
        }
        let newest = self.history[self.history.len() - 1].start;
        let oldest = self.history[self.history.len() - run].start;
        let span_secs = (newest - oldest) as f64 / 1e9 + self.window_secs;
        let fills_ring = run >= config.history_windows.max(1);
        if span_secs < config.relearn_after.as_secs_f64() && !fills_ring {
            return;
        }
        let split = self.history.len() - run;
        self.sorted = None;
        for (index, window) in self.history.iter_mut().enumerate() {
            if index < split {
                window.requests_flags |= FLAG_STALE;
            } else {
                window.requests_flags &= !FLAG_ANOMALOUS;
            }
        }
    }

    /// Summarizes the slot that just ended into the profile when a window
    /// from a new slot arrives.
    fn close_slot(&mut self, window_start: u64) {
        let slot = window_start / 1_000_000_000 / SLOT_SECS;
        match self.open_slot {
            Some(open) if open == slot => {}
            Some(open) => {
                self.summarize_slot(open);
                self.open_slot = Some(slot);
            }
            None => self.open_slot = Some(slot),
        }
    }

    /// Writes the medians of the windows of the absolute slot `slot` into the
    /// profile, if enough of them were seen.
    fn summarize_slot(&mut self, slot: u64) {
        let in_slot: Vec<&WindowSummary> = self
            .history
            .iter()
            .rev()
            .take_while(|window| window.start / 1_000_000_000 / SLOT_SECS >= slot)
            .filter(|window| window.start / 1_000_000_000 / SLOT_SECS == slot)
            .collect();
        // The windows must cover half the slot: a slot the series mostly
        // missed (it started mid-slot, the collector was down) says little
        // about the time of day. Measured in time rather than windows, so
        // a metric exported once a minute still builds a profile.
        let (Some(newest), Some(oldest)) = (in_slot.first(), in_slot.last()) else {
            return;
        };
        let covered = (newest.start - oldest.start) as f64 / 1e9 + self.window_secs;
        if in_slot.len() < MIN_SLOT_VALUES || covered < SLOT_SECS as f64 / 2.0 {
            return;
        }
        let median_of = |values: &mut Vec<f64>| -> f32 {
            if values.len() < MIN_SLOT_VALUES {
                return f32::NAN;
            }
            stats::median(values).map_or(f32::NAN, |median| median as f32)
        };
        let mut values: Vec<f64> = in_slot
            .iter()
            .map(|window| window.requests() as f64)
            .collect();
        let requests = median_of(&mut values);
        let mut ln_quantiles = [f32::NAN; 3];
        for (index, target) in ln_quantiles.iter_mut().enumerate() {
            let mut values: Vec<f64> = in_slot
                .iter()
                .map(|window| window.ln_quantiles[index])
                .filter(|value| value.is_finite())
                .map(f64::from)
                .collect();
            *target = median_of(&mut values);
        }
        let mut values: Vec<f64> = in_slot
            .iter()
            .map(|window| window.level)
            .filter(|value| value.is_finite())
            .map(f64::from)
            .collect();
        let level = median_of(&mut values);

        if self.profile.is_empty() {
            self.profile = vec![SlotSummary::EMPTY; SLOTS_PER_DAY as usize * PROFILE_DAYS];
        }
        let day = slot / SLOTS_PER_DAY;
        let index = (slot % SLOTS_PER_DAY) as usize * PROFILE_DAYS + (day as usize % PROFILE_DAYS);
        if let Some(entry) = self.profile.get_mut(index) {
            *entry = SlotSummary {
                day: u32::try_from(day).unwrap_or(NO_DAY - 1),
                requests,
                ln_quantiles,
                level,
            };
        }
    }

    /// The same-time-of-day baseline for a window starting at `window_start`:
    /// medians over the slot on the previous `PROFILE_DAYS` days; `None`
    /// without any.
    fn slot_baseline(&self, config: &DetectConfig, window_start: u64) -> Option<SlotBaseline> {
        if !config.seasonality || self.profile.is_empty() {
            return None;
        }
        let slot = window_start / 1_000_000_000 / SLOT_SECS;
        let day = slot / SLOTS_PER_DAY;
        let first = (slot % SLOTS_PER_DAY) as usize * PROFILE_DAYS;
        let days: Vec<&SlotSummary> = self
            .profile
            .get(first..first + PROFILE_DAYS)?
            .iter()
            .filter(|entry| {
                let entry_day = u64::from(entry.day);
                entry.day != NO_DAY && entry_day < day && entry_day + PROFILE_DAYS as u64 >= day
            })
            .collect();
        if days.is_empty() {
            return None;
        }
        let median_of = |field: &dyn Fn(&SlotSummary) -> f32| -> Option<f64> {
            let mut values: Vec<f64> = days
                .iter()
                .map(|entry| field(entry))
                .filter(|value| value.is_finite())
                .map(f64::from)
                .collect();
            stats::median(&mut values)
        };
        Some(SlotBaseline {
            requests: median_of(&|entry| entry.requests),
            ln_quantiles: [
                median_of(&|entry| entry.ln_quantiles[0]),
                median_of(&|entry| entry.ln_quantiles[1]),
                median_of(&|entry| entry.ln_quantiles[2]),
            ],
            level: median_of(&|entry| entry.level),
        })
    }

    /// Fits a line to the level history, over the trailing
    /// `trend_min_duration`, 1.5 times it and twice it (as far as the ring
    /// reaches), and keeps the fit with the best r², the longer one on a tie.
    /// A steady rise fits better the longer it is watched, while a leak that
    /// began 35 minutes ago fits worse over an hour that includes the flat
    /// part before it, whose slope would understate it. `None` with less
    /// than `trend_min_duration` of levels.
    fn fit_trend(&self, config: &DetectConfig) -> Option<Trend> {
        let newest = self.history.back()?.start;
        // x is seconds relative to the newest window, so the intercept is
        // the fitted level now.
        let points: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter(|window| window.level.is_finite())
            .map(|window| {
                let age = (newest - window.start) as f64 / 1e9;
                (-age, f64::from(window.level))
            })
            .collect();
        // From the oldest point's start to the newest window's end.
        let span = |points: &[(f64, f64)]| {
            points
                .first()
                .map_or(0.0, |(oldest, _)| -oldest + self.window_secs)
        };
        let min_secs = config.trend_min_duration.as_secs_f64();
        if points.len() < MIN_BASELINE_WINDOWS || span(&points) < min_secs {
            return None;
        }
        let mut best: Option<Trend> = None;
        for factor in [2.0, 1.5, 1.0] {
            let reach = min_secs * factor;
            let first = points
                .iter()
                .position(|(x, _)| -x + self.window_secs <= reach)
                .unwrap_or(0);
            let recent = &points[first..];
            if recent.len() < MIN_BASELINE_WINDOWS {
                continue;
            }
            let Some(fit) = stats::linear_fit(recent) else {
                continue;
            };
            // Longest first, so a later, shorter fit must be strictly better.
            if best.is_none_or(|best| fit.r2 > best.r2) {
                best = Some(Trend {
                    slope_per_sec: fit.slope,
                    r2: fit.r2,
                    last: fit.intercept,
                    duration_secs: span(recent),
                });
            }
        }
        best
    }

    /// A [`AnomalyKind::Trend`] when the latest fit is a sustained rise.
    fn trend_anomaly(&self, config: &DetectConfig) -> Option<Anomaly> {
        let trend = self.trend?;
        if trend.slope_per_sec.is_nan()
            || trend.slope_per_sec <= 0.0
            || trend.r2 < config.trend_min_r2
            || trend.duration_secs < config.trend_min_duration.as_secs_f64()
        {
            return None;
        }
        let fitted_secs = (trend.duration_secs - self.window_secs).max(0.0);
        let rise = trend.slope_per_sec * fitted_secs;
        let start = trend.last - rise;
        let scale = start.abs().max(trend.last.abs());
        if scale.is_nan() || scale <= 0.0 || rise / scale < config.trend_min_rise {
            return None;
        }
        let time_to_limit = config
            .limit_for(&self.info.name)
            .map(|limit| ((limit - trend.last) / trend.slope_per_sec).max(0.0));
        let imminent = time_to_limit.is_some_and(|secs| secs <= config.trend_horizon.as_secs_f64());
        let mut summary = format!(
            "{} rising {}/h for {} (r² {:.2}), {} now",
            self.info.name,
            format_value(trend.slope_per_sec * 3600.0),
            format_duration(trend.duration_secs),
            trend.r2,
            format_value(trend.last),
        );
        if let (Some(secs), Some(limit)) = (time_to_limit, config.limit_for(&self.info.name)) {
            summary.push_str(&format!(
                "; limit {} in {}",
                format_value(limit),
                format_duration(secs)
            ));
        }
        Some(Anomaly {
            kind: AnomalyKind::Trend,
            severity: if imminent {
                Severity::Critical
            } else {
                Severity::Warning
            },
            severe: false,
            measure: self.info.name.clone(),
            current: trend.last,
            baseline: start,
            unit: String::new(),
            summary,
            time_to_limit_secs: time_to_limit,
        })
    }
}

// === impl Judge ===

impl Judge<'_> {
    /// At most one latency anomaly: the first quantile, in the scale's order
    /// ([`QUANTILE_ORDER`] for spans), that rose by both the relative and the
    /// absolute threshold over the baseline median, stands out from the
    /// series' noise (robust z), clears every baseline window and, by the
    /// relative threshold, the baseline's [`UPPER_QUANTILE`] window, and
    /// (with a time-of-day baseline) also rose against the same time on
    /// previous days.
    fn latency(&self, scale: &QuantileScale) -> Option<Anomaly> {
        let config = self.config;
        for &index in scale.order {
            let raw = match index {
                0 => self.stats.p50,
                1 => self.stats.p95,
                _ => self.stats.p99,
            };
            let Some(value) = raw.map(|raw| raw * scale.factor) else {
                continue;
            };
            if !(value.is_finite() && value > 0.0)
                || self.stats.requests < min_requests(config, index)
            {
                continue;
            }
            let Some(Envelope {
                spread: trailing,
                upper,
                max: highest,
                ..
            }) = self.baseline.ln_quantiles[index]
            else {
                continue;
            };
            let min_rise = if scale.absolute {
                min_rise_ms(config, index)
            } else {
                0.0
            };
            let exceeds = |center_ln: f64| {
                let base = center_ln.exp();
                value >= config.latency_ratio * base && value - base >= min_rise
            };
            if !exceeds(trailing.median)
                || stats::robust_z(value.ln(), trailing, LOG_MAD_FLOOR) < config.latency_min_z
                || value.ln() <= highest
                || value < config.latency_ratio * upper.exp()
            {
                continue;
            }
            let mut baseline = trailing.median.exp();
            if let Some(same_time) = self.slot.and_then(|slot| slot.ln_quantiles[index]) {
                if !exceeds(same_time) {
                    continue;
                }
                baseline = baseline.max(same_time.exp());
            }
            // Severe (opening on one window) also needs the value well above
            // anything the baseline windows reached, and the typical request
            // (p50) slower by the relative threshold too. The p95 of 50
            // requests is their third-slowest: three slow requests make it
            // "3x the median", and a series whose p95 swings between two
            // levels is "3x" every time it swings up. One window of that is
            // no evidence; a whole distribution that moved is.
            let broad = index == 0 || self.p50_rose(scale);
            if scale.broad && !broad {
                continue;
            }
            let threshold = (config.latency_ratio * baseline).max(baseline + min_rise);
            if scale.prefix.is_empty() && !self.enough_slow(threshold) {
                continue;
            }
            let severe = broad
                && value >= config.severe_latency_ratio * baseline
                && value.ln() >= highest + config.latency_ratio.ln();
            let name = QUANTILE_NAMES[index];
            let measure = if scale.prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{} {name}", scale.prefix)
            };
            let show = |amount: f64| {
                if scale.unit == "ms" {
                    format_ms(amount)
                } else {
                    format_value(amount)
                }
            };
            return Some(Anomaly {
                kind: scale.kind,
                severity: severity(severe),
                severe,
                summary: format!(
                    "{measure} {} vs {} baseline, {} {}",
                    show(value),
                    show(baseline),
                    self.stats.requests,
                    scale.noun,
                ),
                measure,
                current: value,
                baseline,
                unit: scale.unit.to_owned(),
                time_to_limit_secs: None,
            });
        }
        None
    }

    /// Whether enough of the window's requests were slower than
    /// `threshold` (ms) for that to be unlikely under the baseline: a
    /// binomial test of the count over the threshold (from the window's
    /// coarse sub-window histograms) against the share of requests the
    /// baseline allows over it, at [`LATENCY_SIGNIFICANCE`]. The share is
    /// read off the baseline's quantile medians: `1 - q` for the highest
    /// quantile `q` whose median lies at or below the threshold (5% above
    /// its p95, 1% above its p99), never less than 1%, since nothing is
    /// known beyond the p99. True when the window has no sub-windows (the
    /// test cannot be made).
    fn enough_slow(&self, threshold: f64) -> bool {
        let Some(subs) = &self.stats.subs else {
            return true;
        };
        let threshold_micros = threshold * crate::store::window::VALUE_SCALE;
        let (mut requests, mut slow) = (0.0, 0.0);
        for sub in subs {
            requests += sub.latency.iter().map(|&n| f64::from(n)).sum::<f64>();
            slow += super::onset::slower_than(sub, threshold_micros);
        }
        let mut share = 1.0;
        for (index, quantile) in [0.5, 0.95, 0.99].into_iter().enumerate() {
            if let Some(envelope) = self.baseline.ln_quantiles[index] {
                if envelope.spread.median.exp() <= threshold {
                    share = f64::min(share, 1.0 - quantile);
                }
            }
        }
        let share = share.max(0.01);
        stats::binomial_upper_tail(slow.floor() as u64, requests as u64, share)
            < LATENCY_SIGNIFICANCE
    }

    /// Whether the window's p50 rose by the relative threshold over its
    /// baseline median and above every baseline window (false when either
    /// is unknown).
    fn p50_rose(&self, scale: &QuantileScale) -> bool {
        let Some(p50) = self.stats.p50.map(|raw| raw * scale.factor) else {
            return false;
        };
        let Some(baseline) = self.baseline.ln_quantiles[0] else {
            return false;
        };
        p50.is_finite()
            && p50 > 0.0
            && self.stats.requests >= min_requests(self.config, 0)
            && p50 >= self.config.latency_ratio * baseline.spread.median.exp()
            && p50.ln() > baseline.max
    }

    /// An error-rate (or error-log) anomaly: the window's errors are
    /// improbable under the baseline rate (binomial test against the pooled
    /// rate, floored at `error_rate_floor`), rose by at least
    /// `error_min_increase`, and stand out from the per-window rates.
    fn errors(&self, kind: AnomalyKind) -> Option<Anomaly> {
        let config = self.config;
        let requests = self.stats.requests;
        let errors = self.stats.errors.min(requests);
        if requests == 0
            || requests < config.error_min_requests
            || self.baseline.windows < MIN_BASELINE_WINDOWS
        {
            return None;
        }
        let rate = errors as f64 / requests as f64;
        let observed = if self.baseline.requests_total > 0 {
            self.baseline.errors_total as f64 / self.baseline.requests_total as f64
        } else {
            0.0
        };
        if rate - observed < config.error_min_increase {
            return None;
        }
        if let Some(rates) = self.baseline.error_rates {
            if rate - rates.median < config.error_min_z * stats::MAD_SCALE * rates.mad {
                return None;
            }
        }
        let assumed = observed.max(config.error_rate_floor);
        let p_value = stats::binomial_upper_tail(errors, requests, assumed);
        if p_value >= config.error_significance {
            return None;
        }
        let severe =
            rate >= config.severe_error_ratio * assumed && p_value < config.severe_significance;
        let (measure, noun) = match kind {
            AnomalyKind::ErrorLogs => ("error logs", "log records"),
            _ => ("error rate", "requests"),
        };
        Some(Anomaly {
            kind,
            severity: severity(severe),
            severe,
            measure: measure.to_owned(),
            current: rate * 100.0,
            baseline: observed * 100.0,
            unit: "%".to_owned(),
            summary: format!(
                "{measure} {} vs {} baseline, {errors} of {requests} {noun}",
                format_percent(rate),
                format_percent(observed),
            ),
            time_to_limit_secs: None,
        })
    }

    /// A traffic drop or spike: the window's request count is improbable
    /// under the baseline count (Poisson test), beyond the drop/spike ratio,
    /// and outside the series' own burstiness; idle series (baseline under
    /// `traffic_min_rate`) are not judged.
    fn traffic(&self) -> Option<Anomaly> {
        let config = self.config;
        let Envelope {
            spread: trailing,
            max: highest,
            ..
        } = self.baseline.requests?;
        let expected = trailing.median;
        if expected / self.window_secs < config.traffic_min_rate {
            return None;
        }
        let count = self.stats.requests;
        let current = count as f64;
        let noise = config.traffic_min_z * stats::MAD_SCALE * trailing.mad;
        let same_time = self.slot.and_then(|slot| slot.requests);

        let dropped = |expected: f64| {
            current <= config.traffic_drop_ratio * expected
                && stats::poisson_lower_tail(count, expected) < config.traffic_significance
        };
        let spiked = |expected: f64| {
            current >= config.traffic_spike_ratio * expected
                && stats::poisson_upper_tail(count, expected) < config.traffic_significance
        };
        let (kind, baseline) =
            if expected - current >= noise && dropped(expected) && same_time.is_none_or(dropped) {
                (
                    AnomalyKind::TrafficDrop,
                    same_time.map_or(expected, |same| same.min(expected)),
                )
            } else if current > highest
                && current - expected >= noise
                && spiked(expected)
                && same_time.is_none_or(spiked)
            {
                (
                    AnomalyKind::TrafficSpike,
                    same_time.map_or(expected, |same| same.max(expected)),
                )
            } else {
                return None;
            };
        let severe = match kind {
            AnomalyKind::TrafficDrop => {
                current <= config.severe_traffic_drop_ratio * baseline
                    && stats::poisson_lower_tail(count, baseline) < config.severe_significance
            }
            _ => {
                // As for latency: severe only well beyond the largest
                // baseline window too, so bursty traffic needs two windows.
                current >= config.severe_traffic_spike_ratio * baseline
                    && current >= config.traffic_spike_ratio * highest
                    && stats::poisson_upper_tail(count, baseline) < config.severe_significance
            }
        };
        let rate = current / self.window_secs;
        let baseline_rate = baseline / self.window_secs;
        Some(Anomaly {
            kind,
            severity: severity(severe),
            severe,
            measure: "requests/s".to_owned(),
            current: rate,
            baseline: baseline_rate,
            unit: "req/s".to_owned(),
            summary: format!(
                "requests {}/s vs {}/s baseline",
                format_rate(rate),
                format_rate(baseline_rate)
            ),
            time_to_limit_secs: None,
        })
    }

    /// A level shift or spike of a gauge or sum: the window's mean value
    /// moved from the baseline median by `metric_min_z` robust standard
    /// deviations and by `metric_min_change` of the median, and (with a
    /// time-of-day baseline) by that much from the same time on previous
    /// days too, in the same direction.
    fn level(&self, name: &str) -> Option<Anomaly> {
        let config = self.config;
        let values = &self.stats.values;
        if values.points == 0 {
            return None;
        }
        let level = values.sum / values.points as f64;
        if !level.is_finite() {
            return None;
        }
        let Envelope {
            spread: trailing,
            min: lowest,
            max: highest,
            ..
        } = self.baseline.level?;
        let moved = |center: f64| {
            let change = level - center;
            change != 0.0 && change.abs() >= config.metric_min_change * center.abs()
        };
        let floor = LEVEL_MAD_FLOOR * trailing.median.abs();
        if !moved(trailing.median)
            || stats::robust_z(level, trailing, floor).abs() < config.metric_min_z
            || (lowest..=highest).contains(&level)
        {
            return None;
        }
        let mut baseline = trailing.median;
        if let Some(same_time) = self.slot.and_then(|slot| slot.level) {
            let same_direction = (level - same_time).signum() == (level - baseline).signum();
            if !moved(same_time) || !same_direction {
                return None;
            }
            // Report the nearer of the two: the smaller claim.
            if (level - same_time).abs() < (level - baseline).abs() {
                baseline = same_time;
            }
        }
        Some(Anomaly {
            kind: AnomalyKind::LevelShift,
            severity: Severity::Warning,
            severe: false,
            measure: name.to_owned(),
            current: level,
            baseline,
            unit: String::new(),
            summary: format!(
                "{name} {} vs {} baseline",
                format_value(level),
                format_value(baseline)
            ),
            time_to_limit_secs: None,
        })
    }
}

// === impl QuantileScale ===

impl QuantileScale {
    /// Span latencies: milliseconds, all thresholds.
    fn spans() -> Self {
        QuantileScale {
            kind: AnomalyKind::Latency,
            prefix: String::new(),
            factor: 1.0,
            unit: "ms",
            absolute: true,
            noun: "requests",
            order: &QUANTILE_ORDER,
            broad: false,
        }
    }

    /// A distribution metric. Semantic-convention durations (`*.duration`)
    /// are in seconds, so they are read as latency in ms with the absolute
    /// thresholds; any other distribution has an unknown unit and gets the
    /// relative and noise thresholds only. Only the p95 is judged, and only
    /// when the p50 rose too (see [`QuantileScale::broad`]).
    fn metric(name: &str) -> Self {
        let base = base_name(name);
        if is_duration(base) {
            QuantileScale {
                kind: AnomalyKind::Latency,
                prefix: base.to_owned(),
                factor: 1000.0,
                unit: "ms",
                absolute: true,
                noun: "observations",
                order: &[1],
                broad: true,
            }
        } else {
            QuantileScale {
                kind: AnomalyKind::LevelShift,
                prefix: base.to_owned(),
                factor: 1.0,
                unit: "",
                absolute: false,
                noun: "observations",
                order: &[1],
                broad: true,
            }
        }
    }

    /// The factor quantiles of the series `info` are stored with.
    fn factor_for(info: &SeriesInfo) -> f64 {
        if info.kind == SeriesKind::Metric && is_duration(base_name(&info.name)) {
            1000.0
        } else {
            1.0
        }
    }
}

/// Whether a distribution metric is a semantic-convention duration, which
/// is in seconds: `*.duration` (`http.server.request.duration`,
/// `jvm.gc.duration`) and the `*_time` histograms of connection pools
/// (`db.client.connection.use_time`, `.wait_time`, `.create_time`).
fn is_duration(base: &str) -> bool {
    base.ends_with(".duration") || base.ends_with("_time")
}

// === impl WindowSummary ===

impl WindowSummary {
    /// The summary of one window. Quantiles of windows with too few requests
    /// are left out so they never enter a latency baseline.
    fn new(
        start: u64,
        stats: &WindowStats,
        config: &DetectConfig,
        factor: f64,
        flags: u32,
    ) -> Self {
        let requests = u32::try_from(stats.requests)
            .unwrap_or(u32::MAX)
            .min(COUNT_MASK);
        // Saturated like the count, so errors never exceed requests.
        let errors = u32::try_from(stats.errors.min(stats.requests))
            .unwrap_or(u32::MAX)
            .min(requests);
        let quantile = |index: usize, value: Option<f64>| -> f32 {
            match value {
                Some(value)
                    if value > 0.0
                        && value.is_finite()
                        && stats.requests >= min_requests(config, index) =>
                {
                    (value * factor).ln() as f32
                }
                _ => f32::NAN,
            }
        };
        let level = if stats.values.points > 0 {
            (stats.values.sum / stats.values.points as f64) as f32
        } else {
            f32::NAN
        };
        WindowSummary {
            start,
            requests_flags: requests | flags,
            errors,
            ln_quantiles: [
                quantile(0, stats.p50),
                quantile(1, stats.p95),
                quantile(2, stats.p99),
            ],
            // An infinite mean (overflowing f32) is as good as no value.
            level: if level.is_finite() { level } else { f32::NAN },
        }
    }

    /// Requests in the window (saturated at [`COUNT_MASK`]).
    fn requests(&self) -> u32 {
        self.requests_flags & COUNT_MASK
    }

    /// Whether the window produced an anomaly (and has not been re-learned).
    fn anomalous(&self) -> bool {
        self.requests_flags & FLAG_ANOMALOUS != 0
    }

    /// Whether the trailing baselines may use the window.
    fn usable(&self) -> bool {
        self.requests_flags & (FLAG_ANOMALOUS | FLAG_STALE) == 0
    }
}

impl From<WindowSummary> for SummaryRecord {
    fn from(summary: WindowSummary) -> Self {
        SummaryRecord {
            start: summary.start,
            requests_flags: summary.requests_flags,
            errors: summary.errors,
            ln_quantiles: summary.ln_quantiles.map(finite),
            level: finite(summary.level),
        }
    }
}

impl From<SummaryRecord> for WindowSummary {
    fn from(record: SummaryRecord) -> Self {
        WindowSummary {
            start: record.start,
            requests_flags: record.requests_flags,
            errors: record.errors,
            ln_quantiles: record.ln_quantiles.map(or_nan),
            level: or_nan(record.level),
        }
    }
}

// === impl SlotSummary ===

impl SlotSummary {
    /// A slot-day with no data.
    const EMPTY: SlotSummary = SlotSummary {
        day: NO_DAY,
        requests: f32::NAN,
        ln_quantiles: [f32::NAN; 3],
        level: f32::NAN,
    };
}

impl From<SlotSummary> for SlotRecord {
    fn from(slot: SlotSummary) -> Self {
        SlotRecord {
            day: slot.day,
            requests: finite(slot.requests),
            ln_quantiles: slot.ln_quantiles.map(finite),
            level: finite(slot.level),
        }
    }
}

impl From<SlotRecord> for SlotSummary {
    fn from(record: SlotRecord) -> Self {
        SlotSummary {
            day: record.day,
            requests: or_nan(record.requests),
            ln_quantiles: record.ln_quantiles.map(or_nan),
            level: or_nan(record.level),
        }
    }
}

/// `Some(value)` when finite.
fn finite(value: f32) -> Option<f32> {
    value.is_finite().then_some(value)
}

/// The value, or NaN for `None`.
fn or_nan(value: Option<f32>) -> f32 {
    value.unwrap_or(f32::NAN)
}

// === thresholds ===

/// Least requests for the quantile at `index` to be judged or learned.
fn min_requests(config: &DetectConfig, index: usize) -> u64 {
    if index == 2 {
        config.latency_p99_min_requests
    } else {
        config.latency_min_requests
    }
}

/// Least absolute rise, in ms, of the quantile at `index`.
fn min_rise_ms(config: &DetectConfig, index: usize) -> f64 {
    match index {
        0 => config.latency_p50_min_ms,
        1 => config.latency_p95_min_ms,
        _ => config.latency_p99_min_ms,
    }
}

/// Critical for severe deviations, else a warning.
fn severity(severe: bool) -> Severity {
    if severe {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// Median and MAD of `values` when there are enough of them.
#[cfg(test)]
fn robust(values: &mut [f64]) -> Option<Spread> {
    if values.len() < MIN_BASELINE_WINDOWS {
        return None;
    }
    stats::spread(values)
}

/// Median, MAD and range of `values` when there are enough of them.
#[cfg(test)]
fn envelope(values: &mut [f64]) -> Option<Envelope> {
    if values.len() < MIN_BASELINE_WINDOWS {
        return None;
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Nearest rank; `values` is reordered, which `robust` does anyway.
    let rank = ((values.len() as f64 * UPPER_QUANTILE).ceil() as usize).clamp(1, values.len()) - 1;
    let (_, upper, _) = values.select_nth_unstable_by(rank, f64::total_cmp);
    let upper = *upper;
    Some(Envelope {
        spread: robust(values)?,
        min,
        upper,
        max,
    })
}

// === formatting for summaries ===

/// `number` with `decimals` places, without trailing zeros ("12.5", "24").
fn trimmed(number: f64, decimals: usize) -> String {
    let text = format!("{number:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Milliseconds: whole from 10 ms, finer below ("840 ms", "2.5 ms").
pub(crate) fn format_ms(ms: f64) -> String {
    let decimals = if ms.abs() >= 10.0 {
        0
    } else if ms.abs() >= 1.0 {
        1
    } else {
        2
    };
    format!("{} ms", trimmed(ms, decimals))
}

/// A fraction as a percentage ("12.5%", "0.3%", "0.05%", "0%").
pub(crate) fn format_percent(fraction: f64) -> String {
    let percent = fraction * 100.0;
    let decimals = if percent == 0.0 || percent.abs() >= 0.1 {
        1
    } else {
        2
    };
    format!("{}%", trimmed(percent, decimals))
}

/// A rate per second ("24", "1.5", "0.25", "0").
pub(crate) fn format_rate(rate: f64) -> String {
    let decimals = if rate.abs() >= 10.0 {
        0
    } else if rate.abs() >= 1.0 {
        1
    } else {
        2
    };
    trimmed(rate, decimals)
}

/// A value of unknown unit, to three significant digits with an SI suffix
/// ("850M", "1.2G", "12.5", "0.25").
pub(crate) fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e12 {
        (value / 1e12, "T")
    } else if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let decimals = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else if scaled.abs() >= 1.0 || scaled == 0.0 {
        2
    } else {
        3
    };
    format!("{}{suffix}", trimmed(scaled, decimals))
}

/// A duration in the unit that reads best ("45 s", "40 min", "2.5 h").
pub(crate) fn format_duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{} s", trimmed(secs, 0))
    } else if secs < 2.0 * 3600.0 {
        format!("{} min", trimmed(secs / 60.0, 0))
    } else {
        format!("{} h", trimmed(secs / 3600.0, 1))
    }
}

// === serde for SeriesInfo ===

/// `SeriesInfo` (from `detect`, holding a `store::SeriesKind`) has no serde
/// derives, so it is written here as `{ "kind": "operation", "name": ... }`
/// using the kind's stable `as_str` names.
mod info_serde {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::detect::SeriesInfo;
    use crate::model::SeriesKind;

    /// The written form, borrowed.
    #[derive(Serialize)]
    struct Written<'a> {
        /// `SeriesKind::as_str`.
        kind: &'a str,
        /// The series name.
        name: &'a str,
    }

    /// The read form.
    #[derive(Deserialize)]
    struct Read {
        /// `SeriesKind::as_str`.
        kind: String,
        /// The series name.
        name: String,
    }

    pub fn serialize<S: Serializer>(info: &SeriesInfo, serializer: S) -> Result<S::Ok, S::Error> {
        Written {
            kind: info.kind.as_str(),
            name: &info.name,
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SeriesInfo, D::Error> {
        let read = Read::deserialize(deserializer)?;
        let kind = SeriesKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == read.kind)
            .ok_or_else(|| D::Error::custom(format!("unknown series kind {:?}", read.kind)))?;
        Ok(SeriesInfo {
            kind,
            name: read.name,
        })
    }
}

mod sorted;
#[cfg(test)]
mod tests;
