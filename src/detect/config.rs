//! The `detect:` section: detection thresholds ([`DetectConfig`]), the keys
//! and rules that validate them, and their part of the example config.
//!
//! Every field says its default and why that default was chosen: the
//! thresholds decide how many pages a tired on-call engineer gets, so their
//! reasons belong next to them. Counts of windows assume the default 10 s
//! store window; with another window length the same counts cover a
//! proportionally different time.
//!
//! Invariant (kept by `check` below, assumed here): counts are at least 1,
//! `warmup_windows <= history_windows`, `open_after_severe <= open_after`,
//! probabilities and fractions lie strictly between 0 and 1, ratios that
//! mean "more than" are above 1, and durations are positive. The detectors
//! still never panic on a config that breaks this; they just judge oddly.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::Value;

use crate::validate::{
    above_one, count, default_note, duration, flag, non_negative, positive, probability, real,
    share, whole, Bound, Checker, Section,
};

/// Metric name patterns watched for level shifts by default: the OpenTelemetry
/// semantic-convention metrics for memory, CPU, connection pools, runtime GC,
/// and request rate/latency. Patterns match the name before any
/// `{attr=value}` suffix; `*` matches any run of characters.
///
/// CPU throttling is judged by the saturation rule (the throttled share of
/// CFS periods), which reads its counters whether or not they are watched;
/// level shifts of the raw period counts only follow load, and jump on
/// every counter reset.
pub const DEFAULT_METRIC_PATTERNS: &[&str] = &[
    "process.memory.usage",
    "container.memory.usage",
    "container.memory.working_set",
    "process.cpu.time",
    "process.cpu.utilization",
    "container.cpu.time",
    "container.cpu.usage",
    "container.cpu.utilization",
    "db.client.connection.*",
    "db.client.connections.*",
    "jvm.gc.duration",
    "jvm.memory.used",
    "process.runtime.*",
    "http.server.request.duration",
    "http.client.request.duration",
    "rpc.server.duration",
    "rpc.client.duration",
];

/// Metric name patterns checked for sustained rises (trends) by default:
/// memory, the resource that leaks and whose limit kills the process.
pub const DEFAULT_TREND_PATTERNS: &[&str] = &[
    "process.memory.usage",
    "container.memory.usage",
    "container.memory.working_set",
    "jvm.memory.used",
    "process.runtime.*.memory.usage",
];

/// The thresholds every detector uses.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    // --- history and readiness ---
    /// Windows a series must have been observed for before it may alert
    /// (reported as warming up until then). Default 30 (5 minutes at 10 s):
    /// a median and MAD of 30 windows are stable enough to judge against,
    /// and a restarted collector is useful again within minutes.
    pub warmup_windows: usize,
    /// Windows of per-window summaries each series keeps as its trailing
    /// baseline (32 bytes each). Default 360 (1 hour at 10 s): long enough
    /// that a half-hour incident cannot drag the median (which tolerates up
    /// to half the windows being odd) and long enough for a 30-minute trend
    /// fit; short enough to follow slow, legitimate drift.
    pub history_windows: usize,
    /// How long an anomalous level must persist before it is accepted as the
    /// new normal. Anomalous windows are kept out of the baseline so an
    /// incident does not hide itself; but a deliberate, permanent change (a
    /// new version that is a bit slower, a resized pool) must stop alerting
    /// eventually. Default 30 minutes: longer than almost every incident
    /// that resolves by itself, short enough that an accepted change does
    /// not page all night.
    pub relearn_after: Duration,
    /// Live mode: how long after a window ends (on the wall clock) it is
    /// closed and judged. Spans arriving later are counted as late, not
    /// lost. Default 10 s: SDK batch exporters flush every 5 s, and a
    /// collector pipeline in front adds a few seconds more.
    pub lateness: Duration,
    /// Whether to compare each window with the same time of day on previous
    /// days as well, once at least a day of history exists. Default on:
    /// daily peaks are the most common source of false alarms for any
    /// detector that only looks back an hour.
    pub seasonality: bool,

    // --- hysteresis (read by the incident code) ---
    /// Consecutive anomalous windows before an incident opens (k). Default 2:
    /// one odd window is common (a GC pause, a burst), two in a row rarely
    /// are; at 10 s windows this still opens within 20 s.
    pub open_after: usize,
    /// Consecutive windows before an incident opens when the deviation is
    /// severe. Default 1: a 3x latency or 10x error-rate jump that is also
    /// overwhelmingly significant is not noise, and waiting costs a window.
    pub open_after_severe: usize,
    /// Consecutive normal windows before an open incident resolves (m).
    /// Default 3 (30 s): longer than `open_after`, so a flapping series
    /// keeps one incident instead of opening and resolving it repeatedly.
    pub resolve_after: usize,

    // --- latency ---
    /// A latency quantile is anomalous only at this multiple of its baseline
    /// median or more (and of the baseline's 90th-percentile window, and
    /// above every baseline window; see `detect::series`). Default 1.5:
    /// people notice half again the usual latency; smaller changes happen
    /// all the time (cache warm-up, GC, neighbours).
    pub latency_ratio: f64,
    /// Least absolute p50 rise, in ms. Default 10 ms: 1.5x of a 2 ms median
    /// is real but harmless; 10 ms on the typical request is felt.
    pub latency_p50_min_ms: f64,
    /// Least absolute p95 rise, in ms. Default 20 ms (from the issue): the
    /// tail users notice, above the jitter of fast endpoints.
    pub latency_p95_min_ms: f64,
    /// Least absolute p99 rise, in ms. Default 50 ms: the p99 of a window is
    /// the noisiest quantile, so it needs a larger move to mean something.
    pub latency_p99_min_ms: f64,
    /// Least requests in a window for its p50 and p95 to be judged, or to
    /// enter the latency baseline. Default 20: below that the p95 is the
    /// second-largest sample, too noisy to page on.
    pub latency_min_requests: u64,
    /// Least requests in a window for its p99 to be judged or learned.
    /// Default 100: a p99 of fewer samples is simply the maximum.
    pub latency_p99_min_requests: u64,
    /// Least robust z-score (log space, against the trailing MAD) of a
    /// latency shift. Default 3.5: the usual "median ± 3.5 MAD" outlier rule;
    /// it only bites on series noisy enough that 1.5x is ordinary for them.
    pub latency_min_z: f64,

    // --- errors (spans) and error logs (log series `all`) ---
    /// Binomial p-value below which a window's errors are more than the
    /// baseline rate explains. Default 1e-4 (from the issue): with thousands
    /// of series judged every 10 s, anything looser fires by chance daily.
    pub error_significance: f64,
    /// Least absolute rise of the error rate over its baseline, as a
    /// fraction. Default 0.02 (2 percentage points, from the issue): a
    /// significant rise from 0.01% to 0.05% is real but nobody should be
    /// woken for it.
    pub error_min_increase: f64,
    /// Least requests (or log records) in a window for its error rate to be
    /// judged. Default 10: "3 of 4 failed" is not an incident (DESIGN.md),
    /// while 10 of 10 failing is.
    pub error_min_requests: u64,
    /// Smallest baseline error rate the binomial test assumes. Default 0.001
    /// (0.1%): a series that never failed in an hour has a true rate we do
    /// not know to be 0, and testing against exactly 0 would make its first
    /// error infinitely significant (1 of 3 failing then has p = 0.003, not
    /// an incident).
    pub error_rate_floor: f64,
    /// Least robust z-score of the window's error rate against the per-window
    /// rates of the baseline. Default 3: guards series whose error rate is
    /// naturally bursty (more than binomial noise), where a pooled-rate test
    /// alone would fire on ordinary bursts.
    pub error_min_z: f64,

    // --- traffic ---
    /// Poisson p-value below which a window's request count is a drop or a
    /// spike. Default 1e-4, for the same reason as errors.
    pub traffic_significance: f64,
    /// Least baseline rate, in requests per second, for traffic to be judged
    /// at all. Default 1/s: below it a series is idle, and neither its empty
    /// windows nor its bursts (cron jobs, a person clicking) mean anything;
    /// above it a drop to zero is significant within one 10 s window.
    pub traffic_min_rate: f64,
    /// A window is a drop only at this fraction of the baseline rate or less.
    /// Default 0.5: traffic routinely wobbles by tens of percent; losing half
    /// of it is an outage of something.
    pub traffic_drop_ratio: f64,
    /// A window is a spike only at this multiple of the baseline rate or
    /// more. Default 2: a doubling (retry storm, crawler, launch) is what
    /// overloads a service; smaller bursts are weather.
    pub traffic_spike_ratio: f64,
    /// Least robust z-score of the window's count against the baseline's
    /// per-window counts. Default 3: real traffic is burstier than Poisson,
    /// and the Poisson test alone would call ordinary bursts significant.
    pub traffic_min_z: f64,

    // --- metrics (gauges and sums) ---
    /// Metric name patterns whose series are watched for level shifts and
    /// spikes; see [`DEFAULT_METRIC_PATTERNS`]. A trailing or leading `*` (or
    /// one in the middle) matches any characters.
    pub metric_patterns: Vec<String>,
    /// Least robust z-score of a metric level shift. Default 6: metrics have
    /// heavier tails than latency (GC, batch work), and a level shift on its
    /// own is weaker evidence than an error rate, so the bar is high.
    pub metric_min_z: f64,
    /// Least relative change of a metric level from its baseline, as a
    /// fraction of the baseline. Default 0.5: a 50% move of memory, CPU or
    /// pool usage is worth a look; smaller ones follow traffic.
    pub metric_min_change: f64,

    // --- trends ---
    /// Metric name patterns whose series are checked for sustained rises;
    /// see [`DEFAULT_TREND_PATTERNS`].
    pub trend_patterns: Vec<String>,
    /// Shortest rise that counts as a trend. Default 30 minutes (from the
    /// issue): shorter rises are warm-up, caches filling, a batch job.
    pub trend_min_duration: Duration,
    /// Least r² of the linear fit. Default 0.8: the rise must be steady, not
    /// one jump (a level shift's job) or noise with a slope.
    pub trend_min_r2: f64,
    /// Least total rise over the fit, as a fraction of the fitted starting
    /// level. Default 0.1: a 1% drift over half an hour with a perfect fit
    /// is a trend mathematically but not one anyone should act on.
    pub trend_min_rise: f64,
    /// A trend projected to reach its limit within this time is a
    /// saturation. Default 6 hours (from the issue): enough warning to act in
    /// working hours, soon enough that it is not just a slow creep.
    pub trend_horizon: Duration,
    /// Limits for metrics that have no limit metric, by name pattern (e.g.
    /// `process.memory.usage: 2147483648`), in the metric's unit. Default
    /// none: limits depend on the deployment. The longest matching pattern
    /// wins.
    pub limits: BTreeMap<String, f64>,

    // --- saturation rules ---
    /// Connection-pool usage (used / max) at or above which, with requests
    /// waiting, the pool is saturated. Default 0.9: pools run near full
    /// under load, but at 90% with waiters, requests queue for connections.
    pub pool_usage_ratio: f64,
    /// Share of CFS periods throttled at or above which CPU is saturated.
    /// Default 0.25: a quarter of periods throttled adds latency users see;
    /// a few percent is normal for bursty services with tight limits.
    pub cpu_throttled_ratio: f64,

    // --- severe deviations (open an incident after `open_after_severe`) ---
    /// Latency at this multiple of the baseline or more is severe. Default 3:
    /// tripled latency is a broken dependency or a bad deploy, not noise.
    pub severe_latency_ratio: f64,
    /// An error rate at this multiple of the (floored) baseline rate or more,
    /// with a p-value below `severe_significance`, is severe. Default 10.
    pub severe_error_ratio: f64,
    /// Traffic at this fraction of the baseline or less (with a p-value below
    /// `severe_significance`) is a severe drop. Default 0.1: 90% of traffic
    /// gone is a service or route down.
    pub severe_traffic_drop_ratio: f64,
    /// Traffic at this multiple of the baseline or more (with a p-value
    /// below `severe_significance`) is a severe spike. Default 5.
    pub severe_traffic_spike_ratio: f64,
    /// p-value below which a large deviation counts as severe. Default 1e-9:
    /// at that level chance would produce one severe window per thousands of
    /// series-years, so opening on the first window is safe.
    pub severe_significance: f64,
}

// === impl DetectConfig ===

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            warmup_windows: 30,
            history_windows: 360,
            relearn_after: Duration::from_secs(30 * 60),
            lateness: super::engine::DEFAULT_LATENESS,
            seasonality: true,
            open_after: 2,
            open_after_severe: 1,
            resolve_after: 3,
            latency_ratio: 1.5,
            latency_p50_min_ms: 10.0,
            latency_p95_min_ms: 20.0,
            latency_p99_min_ms: 50.0,
            latency_min_requests: 20,
            latency_p99_min_requests: 100,
            latency_min_z: 3.5,
            error_significance: 1e-4,
            error_min_increase: 0.02,
            error_min_requests: 10,
            error_rate_floor: 0.001,
            error_min_z: 3.0,
            traffic_significance: 1e-4,
            traffic_min_rate: 1.0,
            traffic_drop_ratio: 0.5,
            traffic_spike_ratio: 2.0,
            traffic_min_z: 3.0,
            metric_patterns: strings(DEFAULT_METRIC_PATTERNS),
            metric_min_z: 6.0,
            metric_min_change: 0.5,
            trend_patterns: strings(DEFAULT_TREND_PATTERNS),
            trend_min_duration: Duration::from_secs(30 * 60),
            trend_min_r2: 0.8,
            trend_min_rise: 0.1,
            trend_horizon: Duration::from_secs(6 * 3600),
            limits: BTreeMap::new(),
            pool_usage_ratio: 0.9,
            cpu_throttled_ratio: 0.25,
            severe_latency_ratio: 3.0,
            severe_error_ratio: 10.0,
            severe_traffic_drop_ratio: 0.1,
            severe_traffic_spike_ratio: 5.0,
            severe_significance: 1e-9,
        }
    }
}

impl DetectConfig {
    /// Whether the metric `name` (with or without a `{...}` suffix) is
    /// watched for level shifts.
    pub fn watches_metric(&self, name: &str) -> bool {
        matches_any(&self.metric_patterns, base_name(name))
    }

    /// Whether the metric `name` is checked for trends.
    pub fn watches_trend(&self, name: &str) -> bool {
        matches_any(&self.trend_patterns, base_name(name))
    }

    /// The configured limit for the metric `name`: the value of the longest
    /// matching pattern (an exact name is the longest match there is).
    pub fn limit_for(&self, name: &str) -> Option<f64> {
        let base = base_name(name);
        self.limits
            .iter()
            .filter(|(pattern, _)| glob_match(pattern, base))
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, limit)| *limit)
    }
}

// === name matching ===

/// The metric name without its `{attr=value,...}` suffix.
pub fn base_name(name: &str) -> &str {
    name.split_once('{').map_or(name, |(base, _)| base)
}

/// Whether any of `patterns` matches `name`.
fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| glob_match(pattern, name))
}

/// Whether `pattern` matches all of `name`; `*` matches any run of
/// characters (including none), everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` always yields at least one part.
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        // No `*` at all: an exact match.
        return rest.is_empty();
    };
    // Greedy leftmost matching of the middle parts is correct for `*`-only
    // globs: taking the earliest occurrence leaves the most room for the rest.
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Owned copies of `items`.
fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

// === the `detect:` section of the config file ===

/// Keys of `detect`.
pub(crate) const DETECT_KEYS: &[&str] = &[
    "warmup_windows",
    "history_windows",
    "relearn_after",
    "lateness",
    "seasonality",
    "hysteresis",
    "latency",
    "errors",
    "traffic",
    "metrics",
    "trend",
    "saturation",
    "severe_significance",
];
/// Keys of `detect.hysteresis`.
pub(crate) const HYSTERESIS_KEYS: &[&str] = &["open_after", "open_after_severe", "resolve_after"];
/// Keys of `detect.latency`.
pub(crate) const LATENCY_KEYS: &[&str] = &[
    "ratio",
    "p50_min_ms",
    "p95_min_ms",
    "p99_min_ms",
    "min_requests",
    "p99_min_requests",
    "min_z",
    "severe_ratio",
];
/// Keys of `detect.errors`.
pub(crate) const ERRORS_KEYS: &[&str] = &[
    "significance",
    "min_increase",
    "min_requests",
    "rate_floor",
    "min_z",
    "severe_ratio",
];
/// Keys of `detect.traffic`.
pub(crate) const TRAFFIC_KEYS: &[&str] = &[
    "significance",
    "min_rate",
    "drop_ratio",
    "spike_ratio",
    "min_z",
    "severe_drop_ratio",
    "severe_spike_ratio",
];
/// Keys of `detect.metrics`.
pub(crate) const METRICS_KEYS: &[&str] = &["watch", "min_z", "min_change"];
/// Keys of `detect.trend`.
pub(crate) const TREND_KEYS: &[&str] = &[
    "watch",
    "min_duration",
    "min_r2",
    "min_rise",
    "horizon",
    "limits",
];
/// Keys of `detect.saturation`.
pub(crate) const SATURATION_KEYS: &[&str] = &["pool_usage", "cpu_throttled"];
/// Fewest windows of detection history: a median of fewer is one outlier
/// away from wrong.
const MIN_HISTORY_WINDOWS: usize = 10;
/// Most windows of detection history. A window costs 32 bytes per series,
/// so this bounds a series' history at 320 KB (28 hours at 10 s).
const MAX_HISTORY_WINDOWS: usize = 10_000;
/// Most consecutive windows the hysteresis counts: beyond this an incident
/// would open or resolve too late to be useful.
const MAX_HYSTERESIS_WINDOWS: usize = 1_000;

/// The `detect:` part of the example config (`triage example-config`),
/// with the comment above it.
pub(crate) const EXAMPLE: &str = r#"# Anomaly detection. Each closed window of each series is compared with the
# series' own robust baseline (median and MAD of its trailing windows, log
# space for latency) and, once a day of history exists, with the same time
# of day on previous days. Window counts below assume store.window = 10s.
detect:
  # Windows a series must be seen for before it may alert (reported as
  # warming up): a median of 30 windows is stable, and a restarted collector
  # is useful again within 5 minutes.
  warmup_windows: 30
  # Windows of history each series keeps as its baseline (32 bytes each), from
  # 10 to 10000. One hour: a half-hour incident cannot drag the median, and a
  # 30-minute trend fits in it.
  history_windows: 360
  # Anomalous windows stay out of the baseline so an incident cannot hide
  # itself; a change that persists this long is taken as intended and learned.
  relearn_after: 30m
  # A window is judged this long after it ends (wall clock). SDK batch
  # exporters flush every 5 s and pipelines add a few more; spans arriving
  # later still count in the totals, as late.
  lateness: 10s
  # Also compare with the same time of day on the last 3 days, so a daily
  # peak is not an incident.
  seasonality: true
  hysteresis:
    # Consecutive anomalous windows before an incident opens: one odd window
    # is common, two in a row rarely are.
    open_after: 2
    # The same for severe deviations (at most open_after): waiting costs time.
    open_after_severe: 1
    # Consecutive normal windows before an incident resolves; more than
    # open_after, so a flapping series keeps one incident.
    resolve_after: 3
  latency:
    # Alert only at this multiple of the baseline quantile (above 1) AND a
    # rise of at least the absolute amounts below: 1.5x of 2 ms hurts nobody.
    ratio: 1.5
    p50_min_ms: 10
    p95_min_ms: 20
    # The p99 of a window is noisy, so it needs a larger move.
    p99_min_ms: 50
    # Fewer requests than this in a window: p50/p95 are not judged or learned
    # (the p95 of 19 requests is the second-largest one).
    min_requests: 20
    # The same for p99, which needs 100 samples to be more than the maximum.
    p99_min_requests: 100
    # The shift must also stand out from the series' own noise (robust z in
    # log space); this only bites on series noisy enough that 1.5x is normal.
    min_z: 3.5
    # This multiple of the baseline or more is severe (opens after
    # open_after_severe windows); at least `ratio`.
    severe_ratio: 3
  errors:
    # Binomial p-value below which errors are more than the baseline rate
    # explains; thousands of series judged every 10s need a strict value.
    significance: 1.0e-4
    # And the error rate must rise by at least 2 percentage points.
    min_increase: 0.02
    # Fewer requests than this in a window are not judged: "3 of 4 failed"
    # is not an incident, "10 of 10 failed" is.
    min_requests: 10
    # Smallest baseline rate assumed, so a series that never failed does not
    # alert on its first error (1 of 3 failing then has p = 0.003).
    rate_floor: 0.001
    # Robust z against the per-window rates, for naturally bursty errors.
    min_z: 3
    # This multiple of the baseline rate, with p below severe_significance,
    # is severe.
    severe_ratio: 10
  traffic:
    # Poisson p-value below which a request count is a drop or a spike.
    significance: 1.0e-4
    # Requests per second a series' baseline needs to be judged at all:
    # below it a series is idle and its silences and bursts mean nothing.
    min_rate: 1
    # A drop is this fraction of the baseline or less (0 to 1); traffic
    # wobbles by tens of percent, losing half is an outage of something.
    drop_ratio: 0.5
    # A spike is this multiple of the baseline or more (above 1).
    spike_ratio: 2
    # Robust z against the per-window counts: traffic is burstier than Poisson.
    min_z: 3
    # Severe: at most this fraction of the baseline (service down)...
    severe_drop_ratio: 0.1
    # ...or at least this multiple (at least spike_ratio).
    severe_spike_ratio: 5
  metrics:
    # Metric names watched for level shifts; `*` matches any characters, and
    # {attr=value} suffixes are ignored. Defaults: semantic-convention memory,
    # CPU, connection pools, runtime/GC and request duration. (CPU throttling
    # is judged by its saturation rule, which needs no watching.)
    watch:
      - process.memory.usage
      - container.memory.usage
      - container.memory.working_set
      - process.cpu.time
      - process.cpu.utilization
      - container.cpu.time
      - container.cpu.usage
      - container.cpu.utilization
      - db.client.connection.*
      - db.client.connections.*
      - jvm.gc.duration
      - jvm.memory.used
      - process.runtime.*
      - http.server.request.duration
      - http.client.request.duration
      - rpc.server.duration
      - rpc.client.duration
    # A level shift must be this many robust standard deviations out
    # (metrics have heavy tails)...
    min_z: 6
    # ...and move by at least this fraction of the baseline level.
    min_change: 0.5
  trend:
    # Metric names checked for sustained rises (memory leaks).
    watch:
      - process.memory.usage
      - container.memory.usage
      - container.memory.working_set
      - jvm.memory.used
      - process.runtime.*.memory.usage
    # A rise shorter than this is warm-up or a batch job, not a trend.
    min_duration: 30m
    # The linear fit must be this good (0 to 1): steady, not one jump.
    min_r2: 0.8
    # And rise by at least this fraction of its starting level.
    min_rise: 0.1
    # A trend projected to reach its limit within this time is a saturation.
    horizon: 6h
    # Limits for metrics without a limit metric, by name pattern, in the
    # metric's unit; the longest matching pattern wins. For example:
    #   limits:
    #     process.memory.usage: 2147483648
    limits: {}
  saturation:
    # Connection-pool usage (used / max, 0 to 1) that, with requests waiting,
    # is saturation.
    pool_usage: 0.9
    # Share of CPU periods throttled (0 to 1) that is saturation.
    cpu_throttled: 0.25
  # p-value below which a large deviation is severe: chance alone gives one
  # such window per thousands of series-years.
  severe_significance: 1.0e-9
"#;

/// Reads the `detect` section into `detect`, including the rules between
/// its fields.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, detect: &mut DetectConfig) {
    let section = checker.section(top, "detect", DETECT_KEYS);
    let warmup_ok = checker.field(
        &section,
        "warmup_windows",
        &mut detect.warmup_windows,
        |value| Ok(count(value, 1, MAX_HISTORY_WINDOWS)?.get()),
    );
    let history_ok = checker.field(
        &section,
        "history_windows",
        &mut detect.history_windows,
        |value| Ok(count(value, MIN_HISTORY_WINDOWS, MAX_HISTORY_WINDOWS)?.get()),
    );
    checker.field(
        &section,
        "relearn_after",
        &mut detect.relearn_after,
        |value| positive(duration(value)?),
    );
    checker.field(&section, "lateness", &mut detect.lateness, duration);
    checker.field(&section, "seasonality", &mut detect.seasonality, flag);
    checker.field(
        &section,
        "severe_significance",
        &mut detect.severe_significance,
        probability,
    );
    if warmup_ok && history_ok && detect.warmup_windows > detect.history_windows {
        checker.report(
            section.key_path("warmup_windows"),
            format!(
                "{}{} is more than detect.history_windows ({}); \
                 a series would warm up for longer than the history it keeps",
                detect.warmup_windows,
                default_note(&section, "warmup_windows"),
                detect.history_windows,
            ),
        );
    }

    let hysteresis = checker.section(&section, "hysteresis", HYSTERESIS_KEYS);
    let windows = |value: &Value| Ok(count(value, 1, MAX_HYSTERESIS_WINDOWS)?.get());
    let open_ok = checker.field(&hysteresis, "open_after", &mut detect.open_after, windows);
    let severe_ok = checker.field(
        &hysteresis,
        "open_after_severe",
        &mut detect.open_after_severe,
        windows,
    );
    checker.field(
        &hysteresis,
        "resolve_after",
        &mut detect.resolve_after,
        windows,
    );
    if open_ok && severe_ok && detect.open_after_severe > detect.open_after {
        checker.report(
            hysteresis.key_path("open_after_severe"),
            format!(
                "{}{} is more than detect.hysteresis.open_after ({}); \
                 severe deviations should open incidents sooner, not later",
                detect.open_after_severe,
                default_note(&hysteresis, "open_after_severe"),
                detect.open_after,
            ),
        );
    }

    let latency = checker.section(&section, "latency", LATENCY_KEYS);
    let ratio_ok = checker.field(&latency, "ratio", &mut detect.latency_ratio, above_one);
    checker.field(
        &latency,
        "p50_min_ms",
        &mut detect.latency_p50_min_ms,
        non_negative,
    );
    checker.field(
        &latency,
        "p95_min_ms",
        &mut detect.latency_p95_min_ms,
        non_negative,
    );
    checker.field(
        &latency,
        "p99_min_ms",
        &mut detect.latency_p99_min_ms,
        non_negative,
    );
    checker.field(
        &latency,
        "min_requests",
        &mut detect.latency_min_requests,
        whole,
    );
    checker.field(
        &latency,
        "p99_min_requests",
        &mut detect.latency_p99_min_requests,
        whole,
    );
    checker.field(&latency, "min_z", &mut detect.latency_min_z, non_negative);
    let severe_ok = checker.field(
        &latency,
        "severe_ratio",
        &mut detect.severe_latency_ratio,
        above_one,
    );
    if ratio_ok && severe_ok && detect.severe_latency_ratio < detect.latency_ratio {
        checker.report_below(
            &latency,
            "severe_ratio",
            detect.severe_latency_ratio,
            "ratio",
            detect.latency_ratio,
        );
    }

    let errors = checker.section(&section, "errors", ERRORS_KEYS);
    checker.field(
        &errors,
        "significance",
        &mut detect.error_significance,
        probability,
    );
    checker.field(
        &errors,
        "min_increase",
        &mut detect.error_min_increase,
        |value| real(value, Bound::Closed(0.0), Bound::Open(1.0)),
    );
    checker.field(
        &errors,
        "min_requests",
        &mut detect.error_min_requests,
        whole,
    );
    checker.field(
        &errors,
        "rate_floor",
        &mut detect.error_rate_floor,
        probability,
    );
    checker.field(&errors, "min_z", &mut detect.error_min_z, non_negative);
    checker.field(
        &errors,
        "severe_ratio",
        &mut detect.severe_error_ratio,
        above_one,
    );

    let traffic = checker.section(&section, "traffic", TRAFFIC_KEYS);
    checker.field(
        &traffic,
        "significance",
        &mut detect.traffic_significance,
        probability,
    );
    checker.field(
        &traffic,
        "min_rate",
        &mut detect.traffic_min_rate,
        non_negative,
    );
    let drop_ok = checker.field(
        &traffic,
        "drop_ratio",
        &mut detect.traffic_drop_ratio,
        probability,
    );
    let spike_ok = checker.field(
        &traffic,
        "spike_ratio",
        &mut detect.traffic_spike_ratio,
        above_one,
    );
    checker.field(&traffic, "min_z", &mut detect.traffic_min_z, non_negative);
    let severe_drop_ok = checker.field(
        &traffic,
        "severe_drop_ratio",
        &mut detect.severe_traffic_drop_ratio,
        |value| real(value, Bound::Closed(0.0), Bound::Open(1.0)),
    );
    let severe_spike_ok = checker.field(
        &traffic,
        "severe_spike_ratio",
        &mut detect.severe_traffic_spike_ratio,
        above_one,
    );
    if drop_ok && severe_drop_ok && detect.severe_traffic_drop_ratio > detect.traffic_drop_ratio {
        checker.report(
            traffic.key_path("severe_drop_ratio"),
            format!(
                "{}{} is more than detect.traffic.drop_ratio ({}); \
                 a severe drop must lose at least as much traffic as a drop",
                detect.severe_traffic_drop_ratio,
                default_note(&traffic, "severe_drop_ratio"),
                detect.traffic_drop_ratio,
            ),
        );
    }
    if spike_ok && severe_spike_ok && detect.severe_traffic_spike_ratio < detect.traffic_spike_ratio
    {
        checker.report_below(
            &traffic,
            "severe_spike_ratio",
            detect.severe_traffic_spike_ratio,
            "spike_ratio",
            detect.traffic_spike_ratio,
        );
    }

    let metrics = checker.section(&section, "metrics", METRICS_KEYS);
    checker.patterns(&metrics, "watch", &mut detect.metric_patterns);
    checker.field(&metrics, "min_z", &mut detect.metric_min_z, non_negative);
    checker.field(
        &metrics,
        "min_change",
        &mut detect.metric_min_change,
        non_negative,
    );

    let trend = checker.section(&section, "trend", TREND_KEYS);
    checker.patterns(&trend, "watch", &mut detect.trend_patterns);
    checker.field(
        &trend,
        "min_duration",
        &mut detect.trend_min_duration,
        |value| positive(duration(value)?),
    );
    checker.field(&trend, "min_r2", &mut detect.trend_min_r2, |value| {
        real(value, Bound::Closed(0.0), Bound::Closed(1.0))
    });
    checker.field(&trend, "min_rise", &mut detect.trend_min_rise, non_negative);
    checker.field(&trend, "horizon", &mut detect.trend_horizon, |value| {
        positive(duration(value)?)
    });
    checker.limits(&trend, &mut detect.limits);

    let saturation = checker.section(&section, "saturation", SATURATION_KEYS);
    checker.field(
        &saturation,
        "pool_usage",
        &mut detect.pool_usage_ratio,
        share,
    );
    checker.field(
        &saturation,
        "cpu_throttled",
        &mut detect.cpu_throttled_ratio,
        share,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("db.client.connection.*", "db.client.connection.count", true),
            ("db.client.connection.*", "db.client.connection.", true),
            (
                "db.client.connection.*",
                "db.client.connections.usage",
                false,
            ),
            ("*.duration", "http.server.request.duration", true),
            ("*.duration", "duration", false),
            (
                "process.runtime.*.memory.usage",
                "process.runtime.jvm.memory.usage",
                true,
            ),
            (
                "process.runtime.*.memory.usage",
                "process.runtime.jvm.cpu",
                false,
            ),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("*", "", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob_match(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn watched_names_ignore_the_attribute_suffix() {
        let config = DetectConfig::default();
        assert!(
            config.watches_metric("db.client.connection.count{db.client.connection.state=used}")
        );
        assert!(config.watches_metric("process.memory.usage"));
        assert!(!config.watches_metric("my.business.metric{http.route=/x}"));
        assert!(config.watches_trend("container.memory.working_set{k8s.container.name=app}"));
        assert!(!config.watches_trend("db.client.connection.count"));
    }

    #[test]
    fn the_longest_matching_limit_wins() {
        let config = DetectConfig {
            limits: [
                ("*.memory.usage".to_owned(), 1.0),
                ("process.memory.usage".to_owned(), 2.0),
                ("container.*".to_owned(), 3.0),
            ]
            .into_iter()
            .collect(),
            ..DetectConfig::default()
        };
        assert_eq!(config.limit_for("process.memory.usage{x=y}"), Some(2.0));
        assert_eq!(config.limit_for("jvm.memory.usage"), Some(1.0));
        assert_eq!(config.limit_for("container.memory.usage"), Some(1.0));
        assert_eq!(config.limit_for("container.cpu.time"), Some(3.0));
        assert_eq!(config.limit_for("disk.usage"), None);
    }
}
