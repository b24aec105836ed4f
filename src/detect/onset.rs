//! Placing an anomaly's onset inside the window it was found in.
//!
//! A window is judged as a whole, so the first anomalous window only says
//! that the anomaly began at most one window length before that window
//! ended. The store also keeps each window's sub-windows
//! ([`SUB_WINDOWS`], 2 s at the default 10 s windows: request and error
//! counts and a coarse log2 latency histogram), and [`refine`] uses them to
//! find the sub-window where the window turned anomalous.
//!
//! # How
//!
//! For each anomaly of the window, the sub-windows are read as evidence
//! against the same baseline the window was judged with:
//!
//! - **latency**: the requests slower than the detector's threshold for
//!   the anomalous quantile (the baseline value times `latency_ratio`, and
//!   at least the absolute rise above it), counted from the coarse buckets
//!   (log-linear inside the bucket the threshold falls in). A sub-window
//!   whose coarse quantile `q` lies over the threshold has more than
//!   `1 - q` of its requests there, so `1 - q` (5% for a p95) is the share
//!   the baseline is allowed; normal traffic has fewer, which only makes
//!   the normal sub-windows look more normal. The threshold is well above
//!   the baseline value on purpose: a log2 bucket is as wide as a 2x
//!   step, and a threshold inside the bucket where normal requests sit
//!   would count half of them as slow.
//! - **errors** (and error logs): the failed requests, against the baseline
//!   error rate (floored at `error_rate_floor`, as the detector does);
//! - **traffic**: the request counts, against the baseline rate (Poisson).
//!
//! The onset is the change point: the sub-window boundary `i` that best
//! explains the window as "like the baseline before `i`, anomalous from
//! `i` on" (the generalized likelihood ratio of the sub-windows from `i`
//! on, with the anomalous rate fitted to them). This is the first
//! anomalous sub-window, read so that one noisy sub-window early in the
//! window does not decide it. Among boundaries almost as likely as the
//! best (within a likelihood ratio of [`MARGIN`]) the earliest is taken,
//! so when the sub-windows cannot tell (few requests, a gradual change)
//! the onset stays at the window start, as before the refinement.
//!
//! The window before is read too: a fault that began late in a window
//! often leaves too little of it for that window to be judged anomalous,
//! and the first anomalous window is the next one. A boundary in the
//! window before is taken only when it explains the data better than the
//! window start by more than [`MARGIN`]; the onset then lies up to one
//! window before the first anomalous window.
//!
//! Several anomalies on one series: the earliest onset of them. Anomalies
//! without sub-window evidence (metric levels, trends, saturation) keep the
//! window start.
//!
//! # Invariants
//!
//! - A pure function of the window's sub-windows and the anomalies (which
//!   carry their baseline values): no state, no clock.
//! - The onset lies in `[window start - window, window end)` and is a
//!   sub-window boundary; without the previous window's sub-windows, in
//!   `[window start, window end)`.

use crate::detect::DetectConfig;
use crate::model::{Anomaly, AnomalyKind};
use crate::store::window::{count_above, SubWindow, SubWindows, SUB_WINDOWS, VALUE_SCALE};

/// How much less likely than the best boundary an earlier one may be and
/// still be chosen: a likelihood ratio of 10 (ln 10). Below that, the data
/// does not really prefer the later boundary, and an onset too early is
/// the safer error (changes are searched before it).
pub const MARGIN: f64 = std::f64::consts::LN_10;

/// The onset, Unix nanoseconds, of the `anomalies` found in the window
/// starting at `window_start` and lasting `window_nanos`, refined with the
/// window's sub-windows `subs` and those of the window before,
/// `previous`; the window start when they cannot tell.
pub fn refine(
    config: &DetectConfig,
    anomalies: &[Anomaly],
    subs: Option<&SubWindows>,
    previous: Option<&SubWindows>,
    window_start: u64,
    window_nanos: u64,
) -> u64 {
    let Some(subs) = subs else {
        return window_start;
    };
    // The previous window only if it lies fully after the epoch.
    let previous = previous.filter(|_| window_start >= window_nanos);
    let window_secs = window_nanos as f64 / 1e9;
    let n_previous = if previous.is_some() { SUB_WINDOWS } else { 0 };
    let first = anomalies
        .iter()
        .map(|anomaly| {
            first_sub(config, anomaly, subs, previous, window_secs).unwrap_or(n_previous)
        })
        .min()
        .unwrap_or(n_previous);
    // Sub-window `i` of a window starts `i` sub-window lengths after the
    // window's start, as the store places samples.
    let sub_nanos = window_nanos / SUB_WINDOWS as u64;
    if first < n_previous {
        window_start - window_nanos + first as u64 * sub_nanos
    } else {
        window_start + (first - n_previous) as u64 * sub_nanos
    }
}

/// Evidence of one sub-window: the outcome of its requests under a model.
#[derive(Debug, Clone, Copy)]
enum Evidence {
    /// `hits` of `trials` (fractional hits for latency counted inside a
    /// bucket), each a hit with probability `p0` under the baseline.
    Bernoulli { trials: f64, hits: f64 },
    /// A count in `secs` seconds.
    Poisson { count: f64, secs: f64 },
}

/// Which way the anomaly moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// The first anomalous sub-window of `anomaly`, counted from the first
/// sub-window of `previous` when it is given (else of `subs`), or `None`
/// when the sub-windows cannot tell.
fn first_sub(
    config: &DetectConfig,
    anomaly: &Anomaly,
    subs: &SubWindows,
    previous: Option<&SubWindows>,
    window_secs: f64,
) -> Option<usize> {
    let sub_secs = window_secs / SUB_WINDOWS as f64;
    let total: u64 = subs.iter().map(|sub| u64::from(sub.requests)).sum();
    let all: Vec<&SubWindow> = previous.into_iter().flatten().chain(subs.iter()).collect();
    let (evidence, baseline, direction): (Vec<Evidence>, f64, Direction) = match anomaly.kind {
        AnomalyKind::Latency => {
            let quantile = match anomaly.measure.as_str() {
                "p50" => 0.5,
                "p95" => 0.95,
                "p99" => 0.99,
                // A distribution metric's latency: no sub-windows.
                _ => return None,
            };
            if total < config.latency_min_requests
                || anomaly.baseline.is_nan()
                || anomaly.baseline <= 0.0
            {
                return None;
            }
            let min_rise_ms = match anomaly.measure.as_str() {
                "p50" => config.latency_p50_min_ms,
                "p95" => config.latency_p95_min_ms,
                _ => config.latency_p99_min_ms,
            };
            let threshold_ms =
                (anomaly.baseline * config.latency_ratio).max(anomaly.baseline + min_rise_ms);
            let threshold = threshold_ms * VALUE_SCALE;
            let evidence = all
                .iter()
                .map(|sub| Evidence::Bernoulli {
                    trials: sub.latency.iter().map(|&n| f64::from(n)).sum(),
                    hits: slower_than(sub, threshold),
                })
                .collect();
            (evidence, 1.0 - quantile, Direction::Up)
        }
        AnomalyKind::ErrorRate | AnomalyKind::ErrorLogs => {
            if total < config.error_min_requests.max(1) {
                return None;
            }
            let rate = (anomaly.baseline / 100.0).max(config.error_rate_floor);
            let evidence = all
                .iter()
                .map(|sub| Evidence::Bernoulli {
                    trials: f64::from(sub.requests),
                    hits: f64::from(sub.errors.min(sub.requests)),
                })
                .collect();
            (evidence, rate, Direction::Up)
        }
        AnomalyKind::TrafficSpike | AnomalyKind::TrafficDrop => {
            let expected = anomaly.baseline * window_secs;
            // Too few requests expected to place a change in 2 s.
            if expected.is_nan() || expected < config.error_min_requests.max(1) as f64 {
                return None;
            }
            let evidence = all
                .iter()
                .map(|sub| Evidence::Poisson {
                    count: f64::from(sub.requests),
                    secs: sub_secs,
                })
                .collect();
            let direction = if anomaly.kind == AnomalyKind::TrafficSpike {
                Direction::Up
            } else {
                Direction::Down
            };
            (evidence, anomaly.baseline, direction)
        }
        AnomalyKind::LevelShift
        | AnomalyKind::Trend
        | AnomalyKind::Saturation
        | AnomalyKind::NoData => return None,
    };
    if !(baseline > 0.0 && baseline.is_finite()) {
        return None;
    }
    let window_first = evidence.len() - SUB_WINDOWS;
    change_point(&evidence, window_first, baseline, direction)
}

/// Requests of `sub` slower than `threshold` microseconds.
pub(crate) fn slower_than(sub: &SubWindow, threshold: f64) -> f64 {
    count_above(sub.latency.iter().map(|&count| f64::from(count)), threshold)
}

/// The change point: the earliest boundary whose likelihood ratio is
/// within [`MARGIN`] of the best one, among the boundaries of the judged
/// window (from `window_first` on) or, when one before them beats the
/// window start by more than [`MARGIN`], among those before; `None` when
/// no boundary shows any evidence of the anomaly.
fn change_point(
    evidence: &[Evidence],
    window_first: usize,
    baseline: f64,
    direction: Direction,
) -> Option<usize> {
    let scores: Vec<f64> = (0..evidence.len())
        .map(|from| glr(&evidence[from..], baseline, direction))
        .collect();
    let best_of = |range: std::ops::Range<usize>| scores[range].iter().copied().fold(0.0, f64::max);
    let earliest_near = |range: std::ops::Range<usize>, best: f64| {
        let offset = range.start;
        scores[range]
            .iter()
            .position(|&score| score >= best - MARGIN)
            .map(|index| offset + index)
    };
    let before = best_of(0..window_first);
    if before > 0.0 && before >= scores[window_first] + MARGIN {
        return earliest_near(0..window_first, before);
    }
    let best = best_of(window_first..scores.len());
    if best <= 0.0 {
        return None;
    }
    earliest_near(window_first..scores.len(), best)
}

/// The log generalized likelihood ratio of `evidence` being anomalous (its
/// own fitted rate, moved in `direction`) rather than at the `baseline`
/// rate; 0 when the fitted rate did not move that way.
fn glr(evidence: &[Evidence], baseline: f64, direction: Direction) -> f64 {
    let moved = |fitted: f64| match direction {
        Direction::Up => fitted > baseline,
        Direction::Down => fitted < baseline,
    };
    match evidence.first() {
        Some(Evidence::Bernoulli { .. }) => {
            let (trials, hits) = evidence.iter().fold((0.0, 0.0), |(n, k), item| match item {
                Evidence::Bernoulli { trials, hits } => (n + trials, k + hits),
                Evidence::Poisson { .. } => (n, k),
            });
            if trials <= 0.0 {
                return 0.0;
            }
            let fitted = hits / trials;
            if !moved(fitted) || baseline >= 1.0 {
                return 0.0;
            }
            x_ln_ratio(hits, fitted, baseline)
                + x_ln_ratio(trials - hits, 1.0 - fitted, 1.0 - baseline)
        }
        Some(Evidence::Poisson { .. }) => {
            let (count, secs) = evidence.iter().fold((0.0, 0.0), |(c, d), item| match item {
                Evidence::Poisson { count, secs } => (c + count, d + secs),
                Evidence::Bernoulli { .. } => (c, d),
            });
            if secs <= 0.0 {
                return 0.0;
            }
            let fitted = count / secs;
            if !moved(fitted) {
                return 0.0;
            }
            x_ln_ratio(count, fitted, baseline) - (fitted - baseline) * secs
        }
        None => 0.0,
    }
}

/// `x * ln(a / b)`, taken as 0 when `x` is 0 (the limit).
fn x_ln_ratio(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else {
        x * (a / b).ln()
    }
}

#[cfg(test)]
mod tests;
