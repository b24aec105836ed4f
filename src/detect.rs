//! Anomaly detection: pure functions of window statistics and per-series
//! baseline state. No I/O, no clocks, no store access: the engine
//! (`detect::engine`) takes window snapshots from the store and feeds them
//! here, which keeps every detector table-testable.
//!
//! - [`SeriesDetector`]: one per series; keeps the series' robust baseline
//!   (median and MAD of trailing windows, log space for latency; same time of
//!   day once a day of history exists) and judges each closed window.
//! - [`sparse::Sparse`]: for windows with too few requests to judge on
//!   their own, errors and slow requests accumulated over the last two
//!   minutes and tested exactly, so a service at half a request per second
//!   is judged too.
//! - [`service_rules`]: saturation rules that need several metric series of
//!   one service at once (pool usage vs max, CPU throttling, memory trend vs
//!   limit).
//! - [`onset::refine`]: places an anomaly's onset inside its window with
//!   the window's sub-windows.
//! - [`incident::IncidentTracker`]: hysteresis; opens, updates and resolves
//!   per-service incidents (the `model::Incident` type) from the results.
//! - [`engine::Engine`]: closes windows as the watermark passes them and
//!   runs all of the above; the pipeline drives it.

// No clock and no I/O here: see clippy.toml and tests/it/walls.rs.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::model::SeriesKind;
use crate::store::window::{SubWindows, ValueStats};

pub mod config;
pub mod engine;
pub mod incident;
pub mod onset;
pub mod rules;
pub mod series;
pub mod sparse;
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

/// The kind of series a detector is for, and its name (metric rules match
/// metric names; log rules look at the `all` series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    pub kind: SeriesKind,
    pub name: String,
}
