//! What a detector finds on one window of one series, and how ready a
//! series is to be judged.

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
    /// Every service went silent in the same window: the collector (or the
    /// pipeline in front of it) lost its input. One condition on the
    /// collector's own pseudo-service, not one traffic drop per service.
    NoData,
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
