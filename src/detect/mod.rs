//! Anomaly detection: pure functions of window statistics and per-series
//! baseline state. No I/O, no clocks, no store access: the engine
//! (`detect::engine`) takes window snapshots from the store and feeds them
//! here, which keeps every detector table-testable.
//!
//! - [`SeriesDetector`]: one per series; keeps the series' robust baseline
//!   (median and MAD of trailing windows, log space for latency; same time of
//!   day once a day of history exists) and judges each closed window.
//! - [`service_rules`]: saturation rules that need several metric series of
//!   one service at once (pool usage vs max, CPU throttling, memory trend vs
//!   limit).
//! - [`onset::refine`]: places an anomaly's onset inside its window with
//!   the window's sub-windows.
//! - hysteresis and incidents live in `detect::incident`.

use crate::store::window::{SubWindows, ValueStats};
use crate::store::SeriesKind;

pub mod config;
pub mod engine;
pub mod incident;
pub mod onset;
pub mod rules;
pub mod series;
pub mod stats;

pub use config::DetectConfig;
pub use rules::service_rules;
pub use series::SeriesDetector;

/// One series' statistics in one closed window: what detectors see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Requests (spans, log records, distribution observations) in the window.
    pub requests: u64,
    pub errors: u64,
    /// Latency quantiles in milliseconds (spans) or the metric's unit
    /// (distributions); `None` when the window recorded none.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Gauge values / sum deltas in the window (metric series).
    pub values: ValueStats,
    /// The window's sub-windows (span and log series), for the onset.
    pub subs: Option<SubWindows>,
}

/// What kind of deviation an anomaly is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Latency,
    ErrorRate,
    TrafficDrop,
    TrafficSpike,
    /// A gauge/sum level moved and stayed (or a single-window spike).
    LevelShift,
    /// A sustained linear rise (e.g. memory growing), with a projection.
    Trend,
    Saturation,
    /// ERROR-and-above log records rising (log series `all`).
    ErrorLogs,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// One detector's finding on one window of one series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub severity: Severity,
    /// A severe deviation opens an incident on its first window (k = 1);
    /// others need two consecutive anomalous windows.
    pub severe: bool,
    /// What was measured (e.g. "p95", "error rate", "requests/s",
    /// "db.client.connection.count{state=used}/max").
    pub measure: String,
    /// The window's value and the baseline's, in `unit`.
    pub current: f64,
    pub baseline: f64,
    pub unit: String,
    /// One line for people: "p95 840 ms vs 95 ms baseline, 312 requests".
    pub summary: String,
    /// For trends: projected seconds until the limit is reached, if known.
    pub time_to_limit_secs: Option<f64>,
}

/// Whether a series can be judged yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Readiness {
    /// Not enough history: `have` of `need` windows.
    WarmingUp {
        have: usize,
        need: usize,
    },
    Ready,
}

/// The kind of series a detector is for, and its name (metric rules match
/// metric names; log rules look at the `all` series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    pub kind: SeriesKind,
    pub name: String,
}
