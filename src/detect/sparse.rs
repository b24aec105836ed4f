//! Judging series too sparse for one window: evidence accumulated over the
//! last two minutes and tested exactly.
//!
//! The per-window tests need `error_min_requests` (10) requests for an
//! error rate and `latency_min_requests` (20) for a latency quantile, so a
//! service below one or two requests per second could never be judged,
//! whatever happened to it; most services of a real microservice estate
//! are like that. For such a window, [`Sparse`] adds up the requests,
//! errors and coarse latency histograms of the last [`SPAN_SECS`] of
//! windows and asks whether that much evidence is improbable under the
//! series' baseline:
//!
//! - **errors**: the failures among the accumulated requests, exact
//!   binomial upper tail against the baseline error rate (at least
//!   `error_rate_floor`), at `error_significance`, with at least
//!   [`MIN_EVENTS`] failures and the rate `error_min_increase` above the
//!   baseline. Three failures in five requests against a 0.1% baseline is
//!   significant (p about 1e-8); one in three against 5% is not (p 0.14).
//! - **latency**: the requests slower than the threshold a p95 rise would
//!   have to clear (the baseline p95 times `latency_ratio`, and at least
//!   `latency_p95_min_ms` above it), against the share of the baseline that
//!   was that slow (at least 5%, what a p95 allows), at
//!   [`LATENCY_SIGNIFICANCE`], with at least [`MIN_EVENTS`] slow requests.
//!
//! The latency baseline is a pooled histogram of the same 16 log2 buckets
//! the store keeps per sub-window, decayed so that it spans about
//! `history_windows`: the per-window quantile summaries of a sparse series
//! are empty (too few requests), so there is nothing else to compare with.
//! Windows that were judged anomalous are kept out of it, as everywhere in
//! detection, until an anomalous run lasts `relearn_after`; then it is the
//! new normal and is folded in.
//!
//! The evidence must be sustained: the newest window must add to it (one
//! more failure or slow request), and it must come from at least two
//! windows. A burst of three failures in four requests in one window is
//! not an incident (it would otherwise stay in the sum, and so anomalous,
//! for two minutes), while a service failing one request in five keeps
//! adding failures window after window.
//!
//! Each test scans the suffixes of the accumulation (the last window, the
//! last two, ... the last two minutes) and keeps the most significant, so
//! a shift is found as soon as its own windows carry the evidence, not
//! diluted by the healthy windows before it; the significance is divided
//! by the number of suffixes tried (Bonferroni), so scanning does not add
//! false alarms. Evidence of a fault stays in the accumulation for up to
//! two minutes after the fault ends, which delays the resolution of a
//! sparse series' incident by as much; a busy series never gets here.
//!
//! # Small sustained shifts
//!
//! The same state also judges shifts too small for any one window of a busy
//! series but lasting: errors a point above the baseline, or a p95 40%
//! higher, for ten minutes ([`SUSTAINED_SECS`]). Each window leaves its
//! requests, errors, and requests slower than 1.2 times the pooled
//! baseline's p95; over the last ten minutes the error rate and that slow
//! share must each be higher than the baseline's in both halves (so one
//! burst is not a shift) and significantly so in the whole, at
//! [`SUSTAINED_SIGNIFICANCE`]: strict, because real errors and slow
//! requests come in clumps, which a binomial test does not expect.
//!
//! Memory: 64 bytes of baseline, 40 bytes per accumulated window (12 at
//! the default 10 s windows) and 12 bytes per window of the last ten
//! minutes (60), about 1.3 KB per span or log series.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::series::{format_ms, format_percent};
use super::stats;
use crate::model::{Anomaly, AnomalyKind, Severity};
use crate::store::window::{count_above, sub_bucket_bounds, SubWindows, SUB_BUCKETS};

/// How far back evidence is accumulated. Two minutes: a clear shift of a
/// service at half a request per second (60 requests) is then found, and an
/// incident ends at most this long after its fault.
pub const SPAN_SECS: f64 = 120.0;
/// Fewest failures (or slow requests) an accumulated anomaly needs: one or
/// two odd requests are an anecdote, whatever the baseline.
pub const MIN_EVENTS: u64 = 3;
/// Significance of the accumulated slow-request count. Stricter than the
/// per-window latency test (1e-2): that one also needs the quantiles, their
/// range and the p50 to agree, this one only has the count.
pub const LATENCY_SIGNIFICANCE: f64 = 1e-4;
/// Least share of requests a baseline is taken to have above a p95-rise
/// threshold: what a p95 allows.
const SLOW_SHARE_FLOOR: f64 = 0.05;
/// Least (decayed) requests in the pooled latency baseline before latency
/// is judged: fewer describe no distribution.
const MIN_BASELINE_REQUESTS: f64 = 50.0;
/// Most windows accumulated, whatever the window length.
const MAX_WINDOWS: usize = 120;
/// How far back a small sustained shift is looked for.
pub const SUSTAINED_SECS: f64 = 600.0;
/// Significance of a sustained shift over the whole span.
pub const SUSTAINED_SIGNIFICANCE: f64 = 1e-6;
/// Least rise of the error rate, in both halves of the span (half a point:
/// a one-point shift clears it with room for noise).
const SUSTAINED_ERROR_RISE: f64 = 0.005;
/// Slow means slower than this times the baseline p95: a p95 40% higher
/// puts several times the baseline's share above it.
const SUSTAINED_SLOW_FACTOR: f64 = 1.2;
/// Least rise of the slow share, in both halves of the span.
const SUSTAINED_SLOW_RISE: f64 = 0.04;
/// Fewest requests in each half of the span before a shift is judged.
const SUSTAINED_MIN_REQUESTS: u64 = 200;

/// One window of the sustained span: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Block {
    requests: u32,
    errors: u32,
    /// Requests with a latency (span series) and, of them, those slower
    /// than the threshold of the time, rounded down.
    timed: u16,
    slow: u16,
}

/// One accumulated window: 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Recent {
    requests: u32,
    errors: u32,
    /// The window's latencies in the sub-window buckets (spans only).
    latency: [u16; SUB_BUCKETS],
}

/// A series' sparse-evidence state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sparse {
    /// Pooled, decayed latency histogram of the usable windows (empty until
    /// the first span window).
    baseline: Vec<f32>,
    /// The last windows, oldest first, at most two minutes of them.
    recent: VecDeque<Recent>,
    /// Consecutive windows judged anomalous (by any judge), for re-learning.
    anomalous_run: u32,
    /// The last ten minutes of windows, oldest first, for sustained shifts.
    #[serde(default)]
    long: VecDeque<Block>,
    /// How many windows, the newest last, the evidence of the last
    /// judgement's anomaly spans (0 when it found none): the onset of an
    /// accumulated anomaly is where its evidence begins, not the window
    /// that tipped it.
    #[serde(skip)]
    evidence_windows: usize,
}

/// What the window gives the sparse judge: its counts and sub-windows, and
/// which measures the per-window tests could not judge.
pub struct Window<'a> {
    pub requests: u64,
    pub errors: u64,
    pub subs: Option<&'a SubWindows>,
    pub window_secs: f64,
    /// The window had too few requests for the per-window error test.
    pub errors_sparse: bool,
    /// The window had too few requests for the per-window latency test
    /// (span series only).
    pub latency_sparse: bool,
    /// The trailing baseline's pooled error rate, and whether there is a
    /// baseline to judge against at all.
    pub baseline_error_rate: Option<f64>,
    /// What the window's anomalies are called: `ErrorRate` or `ErrorLogs`.
    pub error_kind: AnomalyKind,
    /// Whether the per-window tests already found an error or latency
    /// anomaly in this window (then the sustained test adds nothing).
    pub error_found: bool,
    pub latency_found: bool,
    /// Whether latency is judged on this series at all (spans).
    pub latency_judged: bool,
}

impl Sparse {
    /// Bytes the state holds on the heap (reserved capacity).
    pub fn heap_bytes(&self) -> usize {
        self.baseline.capacity() * std::mem::size_of::<f32>()
            + self.recent.capacity() * std::mem::size_of::<Recent>()
            + self.long.capacity() * std::mem::size_of::<Block>()
    }

    /// Adds the window and judges the accumulated evidence for what the
    /// per-window tests could not judge.
    pub fn judge(&mut self, config: &DetectConfig, window: &Window<'_>) -> Vec<Anomaly> {
        self.evidence_windows = 0;
        let mut latency = [0u16; SUB_BUCKETS];
        if let Some(subs) = window.subs {
            for sub in subs {
                for (total, count) in latency.iter_mut().zip(sub.latency) {
                    *total = total.saturating_add(count);
                }
            }
        }
        let keep = ((SPAN_SECS / window.window_secs).ceil() as usize).clamp(1, MAX_WINDOWS);
        self.recent.push_back(Recent {
            requests: u32::try_from(window.requests).unwrap_or(u32::MAX),
            errors: u32::try_from(window.errors).unwrap_or(u32::MAX),
            latency,
        });
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
        let threshold = self.sustained_threshold();
        let timed: u32 = latency.iter().map(|&count| u32::from(count)).sum();
        let slow = threshold.map_or(0.0, |threshold| {
            count_above(latency.iter().map(|&count| f64::from(count)), threshold)
        });
        let keep_long =
            ((SUSTAINED_SECS / window.window_secs).ceil() as usize).clamp(1, MAX_WINDOWS * 5);
        self.long.push_back(Block {
            requests: u32::try_from(window.requests).unwrap_or(u32::MAX),
            errors: u32::try_from(window.errors).unwrap_or(u32::MAX),
            timed: u16::try_from(timed).unwrap_or(u16::MAX),
            slow: (slow.floor() as u64).min(u64::from(u16::MAX)) as u16,
        });
        while self.long.len() > keep_long {
            self.long.pop_front();
        }
        let mut anomalies = Vec::new();
        let Some(baseline_rate) = window.baseline_error_rate else {
            return anomalies;
        };
        let tries = self.recent.len() as f64;
        // A run already found goes on while its evidence stays significant;
        // a new one needs the newest window to add to it.
        let continuing = self.anomalous_run > 0;
        let newest_failed = self.recent.back().is_some_and(|newest| newest.errors > 0);
        if window.errors_sparse && (newest_failed || continuing) {
            let (mut requests, mut errors, mut failing_windows) = (0, 0, 0);
            let mut best: Option<(f64, Anomaly, usize)> = None;
            for (n_windows, recent) in self.recent.iter().rev().enumerate() {
                requests += u64::from(recent.requests);
                errors += u64::from(recent.errors);
                failing_windows += usize::from(recent.errors > 0);
                if failing_windows < 2 {
                    continue;
                }
                let secs = (n_windows + 1) as f64 * window.window_secs;
                let found = errors_anomaly(
                    config,
                    window.error_kind,
                    errors,
                    requests,
                    baseline_rate,
                    secs,
                    tries,
                );
                if let Some((p_value, anomaly)) = found {
                    if best.as_ref().is_none_or(|(best, _, _)| p_value < *best) {
                        best = Some((p_value, anomaly, n_windows + 1));
                    }
                }
            }
            if let Some((_, anomaly, windows)) = best {
                self.evidence_windows = self.evidence_windows.max(windows);
                anomalies.push(anomaly);
            }
        }
        if window.latency_sparse {
            anomalies.extend(self.latency_anomaly(config, window.window_secs, tries, continuing));
        }
        // A window another test already found anomalous is explained: it
        // is left out of the sustained span, which is for shifts no single
        // window shows (and so a short fault does not linger in it).
        if window.error_found || window.latency_found || !anomalies.is_empty() {
            if let Some(block) = self.long.back_mut() {
                *block = Block {
                    requests: 0,
                    errors: 0,
                    timed: 0,
                    slow: 0,
                };
            }
        }
        let has = |anomalies: &[Anomaly], kind| anomalies.iter().any(|a: &Anomaly| a.kind == kind);
        if self.long.len() == keep_long {
            if !window.error_found && !has(&anomalies, window.error_kind) {
                anomalies.extend(self.sustained_errors(window, baseline_rate));
            }
            if window.latency_judged
                && !window.latency_found
                && !has(&anomalies, AnomalyKind::Latency)
            {
                anomalies.extend(self.sustained_latency(threshold, window.window_secs));
            }
        }
        anomalies
    }

    /// How many windows, the newest last, the evidence of the last
    /// judgement's accumulated anomaly spans; 0 when it found none.
    pub fn evidence_windows(&self) -> usize {
        self.evidence_windows
    }

    /// The slow threshold of sustained shifts: 1.2 times the pooled
    /// baseline's p95, once the baseline describes a distribution.
    fn sustained_threshold(&self) -> Option<f64> {
        let pooled: f64 = self.baseline.iter().map(|&count| f64::from(count)).sum();
        if pooled < MIN_BASELINE_REQUESTS {
            return None;
        }
        let baseline = self.pooled();
        quantile(&baseline, 0.95).map(|p95| p95 * SUSTAINED_SLOW_FACTOR)
    }

    /// The pooled latency baseline as counts (zeros before the first span
    /// window).
    fn pooled(&self) -> [f64; SUB_BUCKETS] {
        let mut pooled = [0.0; SUB_BUCKETS];
        for (out, &count) in pooled.iter_mut().zip(&self.baseline) {
            *out = f64::from(count);
        }
        pooled
    }

    /// The two halves of the sustained span: (requests, errors, timed, slow).
    fn halves(&self) -> [(u64, u64, u64, u64); 2] {
        let middle = self.long.len() / 2;
        let sum = |blocks: std::collections::vec_deque::Iter<'_, Block>| {
            blocks.fold((0, 0, 0, 0), |(r, e, t, s), block| {
                (
                    r + u64::from(block.requests),
                    e + u64::from(block.errors.min(block.requests)),
                    t + u64::from(block.timed),
                    s + u64::from(block.slow.min(block.timed)),
                )
            })
        };
        [
            sum(self.long.range(..middle)),
            sum(self.long.range(middle..)),
        ]
    }

    /// An error rate higher than the baseline's by half a point or more in
    /// both halves of the last ten minutes, and significantly so overall.
    fn sustained_errors(&self, window: &Window<'_>, baseline_rate: f64) -> Option<Anomaly> {
        let halves = self.halves();
        let rate = |(requests, errors, _, _): (u64, u64, u64, u64)| {
            (requests >= SUSTAINED_MIN_REQUESTS).then(|| errors as f64 / requests as f64)
        };
        let risen =
            |half| rate(half).is_some_and(|rate| rate - baseline_rate >= SUSTAINED_ERROR_RISE);
        if !halves.into_iter().all(risen) {
            return None;
        }
        let requests = halves[0].0 + halves[1].0;
        let errors = halves[0].1 + halves[1].1;
        let assumed = baseline_rate.max(1e-4);
        if stats::binomial_upper_tail(errors, requests, assumed) >= SUSTAINED_SIGNIFICANCE {
            return None;
        }
        let current = errors as f64 / requests as f64;
        let (measure, noun) = match window.error_kind {
            AnomalyKind::ErrorLogs => ("error logs", "log records"),
            _ => ("error rate", "requests"),
        };
        let secs = self.long.len() as f64 * window.window_secs;
        Some(Anomaly {
            kind: window.error_kind,
            severity: Severity::Warning,
            severe: false,
            measure: measure.to_owned(),
            current: current * 100.0,
            baseline: baseline_rate * 100.0,
            unit: "%".to_owned(),
            summary: format!(
                "{measure} {} vs {} baseline for {} min, {errors} of {requests} {noun}",
                format_percent(current),
                format_percent(baseline_rate),
                (secs / 60.0).round()
            ),
            time_to_limit_secs: None,
        })
    }

    /// A share of requests slower than 1.2 times the baseline p95 higher
    /// than the baseline's share by four points or more in both halves of
    /// the last ten minutes, and significantly so overall.
    fn sustained_latency(&self, threshold: Option<f64>, window_secs: f64) -> Option<Anomaly> {
        let threshold = threshold?;
        let baseline = self.pooled();
        let pooled: f64 = baseline.iter().sum();
        let expected = count_above(baseline.iter().copied(), threshold) / pooled;
        let halves = self.halves();
        let share = |(_, _, timed, slow): (u64, u64, u64, u64)| {
            (timed >= SUSTAINED_MIN_REQUESTS).then(|| slow as f64 / timed as f64)
        };
        let risen = |half| {
            share(half).is_some_and(|share| {
                share - expected >= SUSTAINED_SLOW_RISE && share >= 1.5 * expected
            })
        };
        if !halves.into_iter().all(risen) {
            return None;
        }
        let timed = halves[0].2 + halves[1].2;
        let slow = halves[0].3 + halves[1].3;
        if stats::binomial_upper_tail(slow, timed, expected.max(0.01)) >= SUSTAINED_SIGNIFICANCE {
            return None;
        }
        let p95 = quantile(&baseline, 0.95)?;
        let secs = self.long.len() as f64 * window_secs;
        Some(Anomaly {
            kind: AnomalyKind::Latency,
            severity: Severity::Warning,
            severe: false,
            measure: "p95".to_owned(),
            current: slow as f64 / timed as f64 * 100.0,
            baseline: expected * 100.0,
            unit: "% slow".to_owned(),
            summary: format!(
                "{slow} of {timed} requests slower than {} for {} min ({} vs {} in the \
                 baseline, whose p95 is about {})",
                format_ms(threshold / 1e3),
                (secs / 60.0).round(),
                format_percent(slow as f64 / timed as f64),
                format_percent(expected),
                format_ms(p95 / 1e3),
            ),
            time_to_limit_secs: None,
        })
    }

    /// Folds the newest window into the latency baseline unless it was
    /// anomalous (then only after an anomalous run of `relearn_after`).
    pub fn learn(&mut self, config: &DetectConfig, anomalous: bool, window_secs: f64) {
        if anomalous {
            self.anomalous_run = self.anomalous_run.saturating_add(1);
            let run_secs = f64::from(self.anomalous_run) * window_secs;
            if run_secs < config.relearn_after.as_secs_f64() {
                return;
            }
        } else {
            self.anomalous_run = 0;
        }
        let Some(newest) = self.recent.back() else {
            return;
        };
        if newest.latency.iter().all(|&count| count == 0) {
            return;
        }
        if self.baseline.len() != SUB_BUCKETS {
            self.baseline = vec![0.0; SUB_BUCKETS];
        }
        let keep = 1.0 - 1.0 / config.history_windows.max(1) as f32;
        for (pooled, &count) in self.baseline.iter_mut().zip(&newest.latency) {
            *pooled = *pooled * keep + f32::from(count);
        }
    }

    /// A latency rise in the accumulated windows: too many requests slower
    /// than what a p95 rise would have to clear.
    fn latency_anomaly(
        &mut self,
        config: &DetectConfig,
        window_secs: f64,
        tries: f64,
        continuing: bool,
    ) -> Option<Anomaly> {
        let pooled: f64 = self.baseline.iter().map(|&count| f64::from(count)).sum();
        if pooled < MIN_BASELINE_REQUESTS {
            return None;
        }
        let baseline = self.pooled();
        let p95 = quantile(&baseline, 0.95)?;
        let threshold = (p95 * config.latency_ratio).max(p95 + config.latency_p95_min_ms * 1e3);
        let expected =
            (count_above(baseline.iter().copied(), threshold) / pooled).max(SLOW_SHARE_FLOOR);
        let slow_in = |window: &Recent| {
            count_above(
                window.latency.iter().map(|&count| f64::from(count)),
                threshold,
            ) >= 1.0
        };
        if !continuing && !self.recent.back().is_some_and(slow_in) {
            return None;
        }
        let mut slow_windows = 0;
        let mut accumulated = [0.0f64; SUB_BUCKETS];
        // The most significant suffix: (p-value, its histogram, slow, total, seconds).
        let mut best: Option<(f64, [f64; SUB_BUCKETS], u64, u64, f64)> = None;
        for (n_windows, window) in self.recent.iter().rev().enumerate() {
            for (total, &count) in accumulated.iter_mut().zip(&window.latency) {
                *total += f64::from(count);
            }
            slow_windows += usize::from(slow_in(window));
            let counted: f64 = accumulated.iter().sum();
            if counted == 0.0 || slow_windows < 2 {
                continue;
            }
            let slow = count_above(accumulated, threshold).floor() as u64;
            let total = counted.round() as u64;
            if slow < MIN_EVENTS {
                continue;
            }
            let p_value = stats::binomial_upper_tail(slow, total, expected);
            if p_value * tries < LATENCY_SIGNIFICANCE
                && best.as_ref().is_none_or(|best| p_value < best.0)
            {
                let secs = (n_windows + 1) as f64 * window_secs;
                best = Some((p_value, accumulated, slow, total, secs));
            }
        }
        let (_, accumulated, slow, total, secs) = best?;
        self.evidence_windows = self
            .evidence_windows
            .max((secs / window_secs).round() as usize);
        let current = quantile(&accumulated, 0.95)?;
        Some(Anomaly {
            kind: AnomalyKind::Latency,
            severity: Severity::Warning,
            // Confirmed already: the evidence spans two windows or more.
            severe: true,
            measure: "p95".to_owned(),
            current: current / 1e3,
            baseline: p95 / 1e3,
            unit: "ms".to_owned(),
            // The counts lead: the quantiles of 16 doubling buckets are
            // only placed to within their bucket.
            summary: format!(
                "{slow} of {total} requests slower than {} in the last {} s \
                 ({} expected); p95 about {} vs {} baseline",
                format_ms(threshold / 1e3),
                secs.round(),
                format_percent(expected),
                format_ms(current / 1e3),
                format_ms(p95 / 1e3),
            ),
            time_to_limit_secs: None,
        })
    }
}

/// An error-rate rise in accumulated windows, with its p-value; `tries` is
/// how many accumulations are being tested (the significance is divided by
/// it).
fn errors_anomaly(
    config: &DetectConfig,
    kind: AnomalyKind,
    errors: u64,
    requests: u64,
    baseline_rate: f64,
    secs: f64,
    tries: f64,
) -> Option<(f64, Anomaly)> {
    let errors = errors.min(requests);
    if errors < MIN_EVENTS {
        return None;
    }
    let rate = errors as f64 / requests as f64;
    if rate - baseline_rate < config.error_min_increase {
        return None;
    }
    let assumed = baseline_rate.max(config.error_rate_floor);
    let p_value = stats::binomial_upper_tail(errors, requests, assumed);
    if p_value * tries.max(1.0) >= config.error_significance {
        return None;
    }
    let (measure, noun) = match kind {
        AnomalyKind::ErrorLogs => ("error logs", "log records"),
        _ => ("error rate", "requests"),
    };
    let anomaly = Anomaly {
        kind,
        severity: Severity::Warning,
        // Confirmed already: the evidence spans two windows or more.
        severe: true,
        measure: measure.to_owned(),
        current: rate * 100.0,
        baseline: baseline_rate * 100.0,
        unit: "%".to_owned(),
        summary: format!(
            "{measure} {} vs {} baseline, {errors} of {requests} {noun} in the last {} s",
            format_percent(rate),
            format_percent(baseline_rate),
            secs.round()
        ),
        time_to_limit_secs: None,
    };
    Some((p_value, anomaly))
}

/// The latency (microseconds) below which `quantile` of the histogram's
/// mass lies, log-uniform inside a bucket.
fn quantile(histogram: &[f64], quantile: f64) -> Option<f64> {
    let total: f64 = histogram.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let target = total * quantile;
    let mut below = 0.0;
    for (bucket, &count) in histogram.iter().enumerate() {
        if count > 0.0 && below + count >= target {
            let (lower, upper) = sub_bucket_bounds(bucket);
            let lower = (lower as f64).max(1.0);
            let upper = if bucket == SUB_BUCKETS - 1 {
                lower * 2.0
            } else {
                upper as f64
            };
            let share = ((target - below) / count).clamp(0.0, 1.0);
            return Some(lower * (upper / lower).powf(share));
        }
        below += count;
    }
    None
}

#[cfg(test)]
mod tests;
