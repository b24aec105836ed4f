//! The usable windows' values, kept sorted as windows come and go.
//!
//! Every closed window is judged against the median, MAD and range of up to
//! `history_windows` (default 360) earlier windows, for six measures. Picking
//! those out of the whole history anew for every series and every window was
//! a fifth of replay's recording time. Kept sorted, each measure's median is
//! read off directly and its MAD found by walking out from the median, while
//! a window entering or leaving the baseline costs one insertion or removal.
//!
//! The results are exactly those of selecting over the history (the same
//! values, compared with `total_cmp`, combined with the same arithmetic);
//! a property test checks this against [`SeriesDetector::fresh_baseline`].

use std::cmp::Ordering;

use super::{Baseline, Envelope, WindowSummary, MIN_BASELINE_WINDOWS, UPPER_QUANTILE};
use crate::detect::stats::Spread;

/// The values of the usable windows, each measure sorted ascending.
#[derive(Debug, Clone, Default)]
pub(super) struct Sorted {
    /// The `error_min_requests` the error rates were taken with.
    error_min_requests: u64,
    /// Usable windows.
    windows: usize,
    errors_total: u64,
    requests_total: u64,
    requests: Vec<f32>,
    /// Error rates of the windows with at least `error_min_requests`.
    error_rates: Vec<f32>,
    /// Finite ln p50, p95, p99.
    ln_quantiles: [Vec<f32>; 3],
    /// Finite levels.
    level: Vec<f32>,
}

impl Sorted {
    /// The sorted values of the usable windows of `history`.
    pub(super) fn build<'a>(
        history: impl Iterator<Item = &'a WindowSummary>,
        error_min_requests: u64,
    ) -> Self {
        let mut sorted = Sorted {
            error_min_requests,
            ..Sorted::default()
        };
        for window in history.filter(|window| window.usable()) {
            sorted.count(window, 1);
            sorted.visit(window, |values, value| values.push(value));
        }
        for values in sorted.measures_mut() {
            values.sort_unstable_by(f32::total_cmp);
            values.shrink_to_fit();
        }
        sorted
    }

    /// Bytes the sorted values hold on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        [&self.requests, &self.error_rates, &self.level]
            .into_iter()
            .chain(self.ln_quantiles.iter())
            .map(|values| values.capacity() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Whether it was built for this `error_min_requests`.
    pub(super) fn fits(&self, error_min_requests: u64) -> bool {
        self.error_min_requests == error_min_requests
    }

    /// A usable window joins the baseline.
    pub(super) fn add(&mut self, window: &WindowSummary) {
        self.count(window, 1);
        self.visit(window, insert);
    }

    /// A usable window leaves the baseline.
    pub(super) fn remove(&mut self, window: &WindowSummary) {
        self.count(window, -1);
        self.visit(window, remove);
    }

    /// Counts the window in (`sign` 1) or out (-1) of the totals.
    fn count(&mut self, window: &WindowSummary, sign: i8) {
        let (errors, requests) = (u64::from(window.errors), u64::from(window.requests()));
        if sign > 0 {
            self.windows += 1;
            self.errors_total += errors;
            self.requests_total += requests;
        } else {
            self.windows = self.windows.saturating_sub(1);
            self.errors_total = self.errors_total.saturating_sub(errors);
            self.requests_total = self.requests_total.saturating_sub(requests);
        }
    }

    /// Applies `apply` to each measure's vector with the window's value for
    /// it.
    ///
    /// The values are kept as `f32`, half the bytes of `f64`: the summaries
    /// they come from hold quantiles and levels as `f32` already, request
    /// counts are exact in it below 2^24 a window, and an error rate loses
    /// nothing a threshold could tell apart.
    fn visit(&mut self, window: &WindowSummary, mut apply: impl FnMut(&mut Vec<f32>, f32)) {
        apply(&mut self.requests, window.requests() as f32);
        if u64::from(window.requests()) >= self.error_min_requests.max(1) {
            let rate = f64::from(window.errors) / f64::from(window.requests());
            apply(&mut self.error_rates, rate as f32);
        }
        for (values, value) in self.ln_quantiles.iter_mut().zip(window.ln_quantiles) {
            if value.is_finite() {
                apply(values, value);
            }
        }
        if window.level.is_finite() {
            apply(&mut self.level, window.level);
        }
    }

    fn measures_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        [&mut self.requests, &mut self.error_rates, &mut self.level]
            .into_iter()
            .chain(self.ln_quantiles.iter_mut())
    }

    /// The baseline these windows give.
    pub(super) fn baseline(&self) -> Baseline {
        Baseline {
            windows: self.windows,
            requests: envelope(&self.requests),
            errors_total: self.errors_total,
            requests_total: self.requests_total,
            error_rates: robust(&self.error_rates),
            ln_quantiles: [
                envelope(&self.ln_quantiles[0]),
                envelope(&self.ln_quantiles[1]),
                envelope(&self.ln_quantiles[2]),
            ],
            level: envelope(&self.level),
        }
    }
}

fn insert(values: &mut Vec<f32>, value: f32) {
    if values.len() == values.capacity() {
        // A quarter more at a time rather than double: these vectors live
        // as long as their series.
        values.reserve_exact(values.len() / 4 + 8);
    }
    let at = values.partition_point(|held| held.total_cmp(&value) == Ordering::Less);
    values.insert(at, value);
}

fn remove(values: &mut Vec<f32>, value: f32) {
    let at = values.partition_point(|held| held.total_cmp(&value) == Ordering::Less);
    if values
        .get(at)
        .is_some_and(|held| held.total_cmp(&value) == Ordering::Equal)
    {
        values.remove(at);
    } else {
        debug_assert!(false, "{value} left a baseline that did not hold it");
    }
}

/// Median and MAD of sorted `values` when there are enough of them.
fn robust(values: &[f32]) -> Option<Spread> {
    if values.len() < MIN_BASELINE_WINDOWS {
        return None;
    }
    spread(values)
}

/// Median, MAD and range of sorted `values` when there are enough of them.
fn envelope(values: &[f32]) -> Option<Envelope> {
    if values.len() < MIN_BASELINE_WINDOWS {
        return None;
    }
    let rank = ((values.len() as f64 * UPPER_QUANTILE).ceil() as usize).clamp(1, values.len()) - 1;
    Some(Envelope {
        spread: spread(values)?,
        min: f64::from(values[0]),
        upper: f64::from(values[rank]),
        max: f64::from(values[values.len() - 1]),
    })
}

/// Median and MAD of sorted, non-empty `values`, as `stats::spread` gives
/// them: the median is the middle value (the mean of the two middle ones for
/// an even count), the MAD the median of the absolute deviations from it.
fn spread(values: &[f32]) -> Option<Spread> {
    let value = |at: usize| values.get(at).map(|value| f64::from(*value));
    let n = values.len();
    let mid = n / 2;
    let middle = |lower: f64, upper: f64| lower + (upper - lower) / 2.0;
    let median = if n % 2 == 1 {
        value(mid)?
    } else {
        middle(value(mid - 1)?, value(mid)?)
    };
    // The deviations from the median, in ascending order, are two sorted
    // runs: the values below the median walking down from it, and the
    // values from it upwards. The MAD is the middle of their merge, found
    // by bisection instead of walking half the values.
    let split = values.partition_point(|value| f64::from(*value) < median);
    let below = |at: usize| (f64::from(values[split - 1 - at]) - median).abs();
    let above = |at: usize| (f64::from(values[split + at]) - median).abs();
    let nth = |rank: usize| nth_of_merged(split, n - split, rank, below, above);
    let mad = if n % 2 == 1 {
        nth(mid)
    } else {
        middle(nth(mid - 1), nth(mid))
    };
    Some(Spread { median, mad })
}

/// The value of rank `rank` (0 for the smallest) in the merge of two
/// ascending runs of `a_len` and `b_len` values read through `a` and `b`, in
/// O(log) reads. `rank` must be below `a_len + b_len`.
fn nth_of_merged(
    a_len: usize,
    b_len: usize,
    rank: usize,
    a: impl Fn(usize) -> f64,
    b: impl Fn(usize) -> f64,
) -> f64 {
    let take = rank + 1;
    // How many of the `take` smallest come from `a`: the least `from_a`
    // whose next value of `a` is not below the last value taken from `b`.
    let (mut low, mut high) = (take.saturating_sub(b_len), take.min(a_len));
    while low < high {
        let from_a = low + (high - low) / 2;
        let from_b = take - from_a;
        // Taking one more from `a` would still be right while a's next
        // value is below b's last one taken.
        if a(from_a).total_cmp(&b(from_b - 1)) == Ordering::Less {
            low = from_a + 1;
        } else {
            high = from_a;
        }
    }
    let from_a = low;
    let from_b = take - from_a;
    let last_a = from_a.checked_sub(1).map(&a);
    let last_b = from_b.checked_sub(1).map(&b);
    match (last_a, last_b) {
        (Some(x), Some(y)) => {
            if x.total_cmp(&y) == Ordering::Greater {
                x
            } else {
                y
            }
        }
        (Some(x), None) => x,
        (None, Some(y)) => y,
        (None, None) => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::stats;
    use proptest::prelude::*;

    proptest! {
        /// Median and MAD read off a sorted vector equal those selected
        /// from it, bit for bit, ties and even counts included.
        #[test]
        fn spread_of_sorted_values_equals_selection(
            mut values in proptest::collection::vec(
                prop_oneof![0u32..20, 0u32..100_000].prop_map(|value| value as f32 / 7.0),
                1..400,
            ),
        ) {
            values.sort_unstable_by(f32::total_cmp);
            let mut wide: Vec<f64> = values.iter().map(|value| f64::from(*value)).collect();
            let expected = stats::spread(&mut wide);
            prop_assert_eq!(spread(&values), expected);
        }

        /// Insertions and removals keep the vector sorted and the totals
        /// right.
        #[test]
        fn windows_come_and_go(
            requests in proptest::collection::vec(0u32..50, 1..60),
            drop_first in 0usize..60,
        ) {
            let windows: Vec<WindowSummary> = requests
                .iter()
                .enumerate()
                .map(|(index, requests)| WindowSummary {
                    start: index as u64,
                    requests_flags: *requests,
                    errors: requests / 3,
                    ln_quantiles: [f32::from(*requests as u8).ln(), f32::NAN, 1.0],
                    level: *requests as f32 - 10.0,
                })
                .collect();
            let mut sorted = Sorted::build(std::iter::empty(), 5);
            for window in &windows {
                sorted.add(window);
            }
            let dropped = drop_first.min(windows.len());
            for window in &windows[..dropped] {
                sorted.remove(window);
            }
            let rebuilt = Sorted::build(windows[dropped..].iter(), 5);
            prop_assert_eq!(sorted.baseline(), rebuilt.baseline());
            prop_assert_eq!(&sorted.requests, &rebuilt.requests);
            prop_assert_eq!(&sorted.error_rates, &rebuilt.error_rates);
            prop_assert_eq!(&sorted.ln_quantiles, &rebuilt.ln_quantiles);
            prop_assert_eq!(&sorted.level, &rebuilt.level);
        }
    }
}
