//! Cumulative-to-delta conversion for metric streams.
//!
//! Cumulative sums and histograms carry totals since a start time; detection
//! needs what happened in each window. Each stream (metric name plus its full
//! attribute set, hashed by the receiver) keeps its last point here. A point
//! becomes the difference from the previous one; a reset (a new start time, or
//! a monotonic total going down, as after a process restart) starts a new run
//! whose first delta is the point's own value. The first point of a stream has
//! no predecessor and yields no delta. Points older than the last one seen
//! (out of order) are ignored and counted.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Last point of one cumulative stream.
#[derive(Debug, Clone, Default)]
struct StreamState {
    start: u64,
    time: u64,
    value: f64,
    count: u64,
    buckets: Vec<u64>,
    /// Store-clock time of the last point, for the idle TTL.
    seen: u64,
}

#[derive(Debug, Default)]
pub struct CumulativeCounters {
    pub resets: AtomicU64,
    pub out_of_order: AtomicU64,
}

/// Cumulative streams by stream id.
#[derive(Debug, Default)]
pub struct CumulativeTracker {
    streams: DashMap<u64, StreamState>,
    pub counters: CumulativeCounters,
}

/// A cumulative histogram point, as handed to
/// [`CumulativeTracker::histogram_delta`].
#[derive(Debug, Clone, Copy)]
pub struct HistogramPoint<'a> {
    /// Start of the cumulative run, Unix nanoseconds.
    pub start: u64,
    /// Time of the point, Unix nanoseconds.
    pub time: u64,
    pub count: u64,
    pub sum: f64,
    pub buckets: &'a [u64],
}

/// A histogram point's delta.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramDelta {
    pub count: u64,
    pub sum: f64,
    pub buckets: Vec<u64>,
}

impl CumulativeTracker {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The delta of a cumulative sum point; `monotonic` sums also reset when
    /// their value goes down.
    pub fn sum_delta(
        &self,
        stream: u64,
        start: u64,
        time: u64,
        value: f64,
        monotonic: bool,
        now: u64,
    ) -> Option<f64> {
        let mut state = match self.streams.entry(stream) {
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(StreamState {
                    start,
                    time,
                    value,
                    seen: now,
                    ..StreamState::default()
                });
                return None;
            }
            dashmap::Entry::Occupied(occupied) => occupied.into_ref(),
        };
        if time <= state.time && start == state.start {
            self.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let reset =
            (start != state.start && start > state.start) || (monotonic && value < state.value);
        let delta = if reset {
            self.counters.resets.fetch_add(1, Ordering::Relaxed);
            value
        } else {
            value - state.value
        };
        state.start = start;
        state.time = time;
        state.value = value;
        state.seen = now;
        Some(delta)
    }

    /// The delta of a cumulative histogram point (count, sum and bucket
    /// counts). A changed bucket layout counts as a reset.
    pub fn histogram_delta(
        &self,
        stream: u64,
        point: HistogramPoint<'_>,
        now: u64,
    ) -> Option<HistogramDelta> {
        let HistogramPoint {
            start,
            time,
            count,
            sum,
            buckets,
        } = point;
        let mut state = match self.streams.entry(stream) {
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(StreamState {
                    start,
                    time,
                    value: sum,
                    count,
                    buckets: buckets.to_vec(),
                    seen: now,
                });
                return None;
            }
            dashmap::Entry::Occupied(occupied) => occupied.into_ref(),
        };
        if time <= state.time && start == state.start {
            self.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let reset = (start != state.start && start > state.start)
            || count < state.count
            || buckets.len() != state.buckets.len()
            || buckets
                .iter()
                .zip(&state.buckets)
                .any(|(now, before)| now < before);
        let delta = if reset {
            self.counters.resets.fetch_add(1, Ordering::Relaxed);
            HistogramDelta {
                count,
                sum,
                buckets: buckets.to_vec(),
            }
        } else {
            HistogramDelta {
                count: count - state.count,
                sum: sum - state.value,
                buckets: buckets
                    .iter()
                    .zip(&state.buckets)
                    .map(|(now, before)| now - before)
                    .collect(),
            }
        };
        state.start = start;
        state.time = time;
        state.value = sum;
        state.count = count;
        state.buckets.clear();
        state.buckets.extend_from_slice(buckets);
        state.seen = now;
        Some(delta)
    }

    /// Forgets streams not seen since `cutoff`.
    pub fn sweep(&self, cutoff: u64) -> usize {
        let before = self.streams.len();
        self.streams.retain(|_, state| state.seen >= cutoff);
        before - self.streams.len()
    }
}

#[cfg(test)]
mod tests;
