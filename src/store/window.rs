//! One series' event-time windows: a fixed ring of [`Window`]s.
//!
//! Window `i` covers event times `[i * len, (i + 1) * len)`; it lives in slot
//! `i mod n`. A slot is reset when a newer window claims it, so the ring always
//! holds the newest window of each slot, and a sample whose slot already holds a
//! newer window is *late*: it is counted in the series totals and in `late`, not
//! dropped silently. Histograms are allocated the first time a slot needs one
//! and are reset (capacity kept) on reuse, so steady-state recording does not
//! allocate.
//!
//! # Sub-windows
//!
//! The newest [`DETAIL_WINDOWS`] windows of a span or log series also keep
//! [`SUB_WINDOWS`] equal sub-windows (2 s each at the default 10 s windows)
//! with request and error counts and, for spans, a coarse log2 latency
//! histogram ([`SUB_BUCKETS`] buckets), and the window's exemplar trace
//! ids. Detection reads them only for the window it closes and the one
//! before (to place an onset inside the window, `detect::onset`, and to
//! name traces), so they are kept in a ring of their own, much shorter than
//! the window ring: 280 bytes a slot, allocated with the series' first span
//! or log record. A sample for a window older than the detail ring holds
//! still counts in its window; only its sub-window and exemplar are
//! skipped. The latency histogram of each window takes a word per
//! non-empty bucket (see [`LatencyHistogram`]).

use super::histogram::LatencyHistogram;

/// Span latencies are recorded in microseconds and metric distribution values
/// in thousandths of their unit; dividing by this gives milliseconds or units.
pub const VALUE_SCALE: f64 = 1000.0;

/// Sub-windows per window: an onset is placed to within `window /
/// SUB_WINDOWS`.
pub const SUB_WINDOWS: usize = 5;

/// Buckets of a sub-window's coarse latency histogram.
pub const SUB_BUCKETS: usize = 16;

/// Upper bound of the first latency bucket, in microseconds; each later
/// bucket doubles it, so the last one starts at about 4.1 s.
pub const SUB_BUCKET_FIRST_MICROS: u64 = 250;

/// Windows of a series that keep sub-windows and exemplars (see the module
/// documentation): the window being closed, the one before it, and those
/// still receiving spans during the allowed lateness. Eight covers a
/// lateness of five windows (50 s at the default 10 s windows); with more,
/// the onset of an incident is placed to its window rather than to a
/// sub-window.
pub const DETAIL_WINDOWS: usize = 8;

/// One sub-window of a window: counts and a coarse latency histogram.
/// 40 bytes; counters saturate instead of wrapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubWindow {
    /// Requests (spans, log records) that ended in the sub-window.
    pub requests: u32,
    /// Failed spans, or log records at ERROR and above.
    pub errors: u32,
    /// Span latencies: bucket `b` counts latencies in
    /// [`sub_bucket_bounds`]`(b)`. Empty for log series.
    pub latency: [u16; SUB_BUCKETS],
}

/// The sub-windows of one window, oldest first.
pub type SubWindows = [SubWindow; SUB_WINDOWS];

/// The coarse latency bucket of a latency in microseconds: 0 below
/// [`SUB_BUCKET_FIRST_MICROS`], then one bucket per doubling, the last one
/// open-ended.
#[inline]
pub fn sub_bucket(latency_micros: u64) -> usize {
    let steps = latency_micros / SUB_BUCKET_FIRST_MICROS;
    // steps in [2^(b-1), 2^b) falls in bucket b.
    let bucket = (u64::BITS - steps.leading_zeros()) as usize;
    bucket.min(SUB_BUCKETS - 1)
}

/// The latencies, in microseconds, bucket `bucket` holds: `[lower, upper)`;
/// the last bucket's upper bound is `u64::MAX`.
pub fn sub_bucket_bounds(bucket: usize) -> (u64, u64) {
    let bucket = bucket.min(SUB_BUCKETS - 1);
    let lower = if bucket == 0 {
        0
    } else {
        SUB_BUCKET_FIRST_MICROS << (bucket - 1)
    };
    let upper = if bucket == SUB_BUCKETS - 1 {
        u64::MAX
    } else {
        SUB_BUCKET_FIRST_MICROS << bucket
    };
    (lower, upper)
}

/// How many of `counts` (one per latency bucket, as a [`SubWindow`] keeps
/// them) lie above `threshold` microseconds: the buckets above it, and the
/// share of the bucket it falls in that lies above it (log-uniform inside
/// the bucket; half of the open first and last buckets, which have no log
/// width to interpolate over).
pub fn count_above(counts: impl IntoIterator<Item = f64>, threshold: f64) -> f64 {
    let mut slower = 0.0;
    for (bucket, count) in counts.into_iter().enumerate().take(SUB_BUCKETS) {
        if count == 0.0 {
            continue;
        }
        let (lower, upper) = sub_bucket_bounds(bucket);
        let (lower, upper) = (lower as f64, upper as f64);
        if lower >= threshold {
            slower += count;
        } else if upper > threshold {
            let share = if bucket == 0 || bucket == SUB_BUCKETS - 1 {
                0.5
            } else {
                (upper / threshold).ln() / (upper / lower).ln()
            };
            slower += count * share;
        }
    }
    slower
}

impl SubWindow {
    /// Adds one span: the hot path, kept to a few instructions.
    #[inline]
    fn add_span(&mut self, latency: u64, error: bool) {
        self.requests = self.requests.saturating_add(1);
        self.errors = self.errors.saturating_add(u32::from(error));
        let bucket = &mut self.latency[sub_bucket(latency)];
        *bucket = bucket.saturating_add(1);
    }

    /// Adds `count` requests, `errors` of them failed, each with `latency`
    /// microseconds when given.
    fn add(&mut self, count: u64, errors: u64, latency: Option<u64>) {
        let count32 = u32::try_from(count).unwrap_or(u32::MAX);
        self.requests = self.requests.saturating_add(count32);
        self.errors = self
            .errors
            .saturating_add(u32::try_from(errors).unwrap_or(u32::MAX));
        if let Some(latency) = latency {
            let bucket = &mut self.latency[sub_bucket(latency)];
            *bucket = bucket.saturating_add(u16::try_from(count).unwrap_or(u16::MAX));
        }
    }
}

/// Statistics of gauge and sum points that fell in one window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ValueStats {
    /// Number of points (gauge values or sum deltas) folded in.
    pub points: u64,
    /// Sum of the values (for sums: the total delta in the window).
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value with the latest timestamp.
    pub last: f64,
    /// Timestamp of `last`, in Unix nanoseconds.
    pub last_time: u64,
}

impl ValueStats {
    pub fn add(&mut self, value: f64, time: u64) {
        if self.points == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.points += 1;
        self.sum += value;
        if time >= self.last_time {
            self.last = value;
            self.last_time = time;
        }
    }

    pub fn merge(&mut self, other: &ValueStats) {
        if other.points == 0 {
            return;
        }
        if self.points == 0 {
            *self = *other;
            return;
        }
        self.points += other.points;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_time >= self.last_time {
            self.last = other.last;
            self.last_time = other.last_time;
        }
    }
}

/// The statistics of one series in one window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Window number (`event time / window length`), or `None` for a slot that
    /// has never been used.
    pub index: Option<i64>,
    pub requests: u64,
    pub errors: u64,
    /// Latency (or distribution values) in scaled units; empty (and
    /// unallocated) until needed.
    pub histogram: LatencyHistogram,
    pub values: ValueStats,
}

/// What the newest windows of a span or log series keep beside their
/// counts: sub-windows and exemplars.
#[derive(Debug, Clone, Default)]
struct Detail {
    /// Window number, or `None` for a slot never used.
    index: Option<i64>,
    exemplars: Exemplars,
    subs: SubWindows,
}

/// Trace ids worth opening for a window: its slowest span and its latest
/// failing spans. Fixed size (64 bytes), so recording never allocates for
/// them; a trace id of 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exemplars {
    /// Trace id of the slowest span seen.
    slowest: u128,
    /// The latest failing spans' trace ids, newest in `errors[next - 1]`.
    errors: [u128; 2],
    /// Latency of the slowest span, in scaled units.
    slowest_latency: u64,
    next: u8,
}

impl Exemplars {
    fn offer(&mut self, latency: u64, error: bool, trace_id: u128) {
        if trace_id == 0 {
            return;
        }
        if self.slowest == 0 || latency > self.slowest_latency {
            self.slowest = trace_id;
            self.slowest_latency = latency;
        }
        if error {
            self.errors[usize::from(self.next) % self.errors.len()] = trace_id;
            self.next = (self.next + 1) % self.errors.len() as u8;
        }
    }

    /// The slowest span seen, as (latency in scaled units, trace id).
    pub fn slowest(&self) -> Option<(u64, u128)> {
        (self.slowest != 0).then_some((self.slowest_latency, self.slowest))
    }

    /// The distinct trace ids held: failing ones first, then the slowest.
    pub fn trace_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.errors.iter().copied().filter(|id| *id != 0).collect();
        if self.slowest != 0 && !ids.contains(&self.slowest) {
            ids.push(self.slowest);
        }
        ids
    }
}

impl Window {
    fn empty() -> Self {
        Window {
            index: None,
            requests: 0,
            errors: 0,
            histogram: LatencyHistogram::new(),
            values: ValueStats::default(),
        }
    }

    fn reset(&mut self, index: i64) {
        self.index = Some(index);
        self.requests = 0;
        self.errors = 0;
        self.histogram.reset();
        self.values = ValueStats::default();
    }
}

/// Lifetime totals of a series, kept next to the ring so that what was
/// recorded is always accounted for, even after windows are reused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    /// Samples that arrived after their window's slot was reused.
    pub late: u64,
    /// Samples in windows the ring has since reused for newer ones.
    pub rotated_out: u64,
}

/// The ring of windows of one series.
#[derive(Debug)]
pub struct Ring {
    slots: Box<[Window]>,
    /// Sub-windows and exemplars of the newest windows; `None` until a
    /// span or log record needs them (never for metric series).
    details: Option<Box<[Detail]>>,
    pub totals: Totals,
}

impl Ring {
    pub fn new(n_windows: usize) -> Self {
        Ring {
            slots: (0..n_windows.max(1)).map(|_| Window::empty()).collect(),
            details: None,
            totals: Totals::default(),
        }
    }

    /// The window for `index`, resetting its slot if it held an older window;
    /// `None` when the slot already holds a newer one (the sample is late).
    fn slot(&mut self, index: i64) -> Option<&mut Window> {
        let n = self.slots.len() as i64;
        let window = &mut self.slots[index.rem_euclid(n) as usize];
        match window.index {
            Some(current) if current == index => Some(window),
            Some(current) if current > index => None,
            _ => {
                self.totals.rotated_out += window.requests;
                window.reset(index);
                Some(window)
            }
        }
    }

    /// The detail slot of window `index`, allocating the detail ring on
    /// first use and resetting a slot that held an older window; `None`
    /// when the slot holds a newer one.
    #[inline]
    fn detail_mut(&mut self, index: i64) -> Option<&mut Detail> {
        let n = self.slots.len().min(DETAIL_WINDOWS);
        let details = self
            .details
            .get_or_insert_with(|| (0..n).map(|_| Detail::default()).collect());
        let detail = &mut details[index.rem_euclid(n as i64) as usize];
        match detail.index {
            Some(current) if current == index => {}
            Some(current) if current > index => return None,
            _ => {
                *detail = Detail {
                    index: Some(index),
                    ..Detail::default()
                }
            }
        }
        Some(detail)
    }

    fn detail(&self, index: i64) -> Option<&Detail> {
        let details = self.details.as_deref()?;
        let detail = &details[index.rem_euclid(details.len() as i64) as usize];
        (detail.index == Some(index)).then_some(detail)
    }

    /// The sub-windows of window `index`, while the detail ring holds it.
    pub fn subs(&self, index: i64) -> Option<&SubWindows> {
        self.detail(index).map(|detail| &detail.subs)
    }

    /// The exemplars of window `index`, while the detail ring holds it.
    pub fn exemplars(&self, index: i64) -> Option<&Exemplars> {
        self.detail(index).map(|detail| &detail.exemplars)
    }

    /// Records `count` requests (`errors` of them failed) in sub-window
    /// `sub`, and, when given, a latency in scaled units (microseconds) for
    /// each of them. Returns false if late.
    pub fn record(
        &mut self,
        index: i64,
        sub: usize,
        count: u64,
        errors: u64,
        latency: Option<u64>,
    ) -> bool {
        let count = count.min(MAX_RECORD_COUNT);
        let errors = errors.min(count);
        self.totals.requests = self.totals.requests.saturating_add(count);
        self.totals.errors = self.totals.errors.saturating_add(errors);
        let Some(window) = self.slot(index) else {
            self.totals.late = self.totals.late.saturating_add(count);
            return false;
        };
        window.requests = window.requests.saturating_add(count);
        window.errors = window.errors.saturating_add(errors);
        if let Some(value) = latency {
            window.histogram.record_n(value, count);
        }
        if let Some(detail) = self.detail_mut(index) {
            detail.subs[sub.min(SUB_WINDOWS - 1)].add(count, errors, latency);
        }
        true
    }

    /// Records one span in sub-window `sub`: its latency in scaled units
    /// (microseconds), whether it failed, and its trace id for the window's
    /// exemplars. Returns false if late.
    pub fn record_span(
        &mut self,
        index: i64,
        sub: usize,
        latency: u64,
        error: bool,
        trace_id: u128,
    ) -> bool {
        self.totals.requests += 1;
        self.totals.errors += u64::from(error);
        let Some(window) = self.slot(index) else {
            self.totals.late += 1;
            return false;
        };
        window.requests += 1;
        window.errors += u64::from(error);
        window.histogram.record_n(latency, 1);
        if let Some(detail) = self.detail_mut(index) {
            detail.exemplars.offer(latency, error, trace_id);
            detail.subs[sub.min(SUB_WINDOWS - 1)].add_span(latency, error);
        }
        true
    }

    /// Records pre-aggregated requests (see [`super::RedPoint`]) in
    /// sub-window `sub`. Returns false if late.
    pub fn record_red(&mut self, index: i64, sub: usize, point: &super::RedPoint<'_>) -> bool {
        let requests = point.requests.min(MAX_RECORD_COUNT);
        let errors = point.errors.min(MAX_RECORD_COUNT);
        self.totals.requests = self.totals.requests.saturating_add(requests);
        self.totals.errors = self.totals.errors.saturating_add(errors);
        let Some(window) = self.slot(index) else {
            self.totals.late = self.totals.late.saturating_add(requests);
            return false;
        };
        window.requests = window.requests.saturating_add(requests);
        window.errors = window.errors.saturating_add(errors);
        for &(latency, n) in point.latencies {
            window.histogram.record_n(latency, n.min(MAX_RECORD_COUNT));
        }
        if let Some(detail) = self.detail_mut(index) {
            let slot = &mut detail.subs[sub.min(SUB_WINDOWS - 1)];
            slot.add(requests, errors, None);
            for &(latency, n) in point.latencies {
                let bucket = &mut slot.latency[sub_bucket(latency)];
                *bucket = bucket.saturating_add(u16::try_from(n).unwrap_or(u16::MAX));
            }
            for &(latency, error, trace_id) in point.exemplars {
                detail.exemplars.offer(latency, error, trace_id);
            }
        }
        true
    }

    /// The window with number `index`, if the ring holds it.
    pub fn window(&self, index: i64) -> Option<&Window> {
        let n = self.slots.len() as i64;
        let window = &self.slots[index.rem_euclid(n) as usize];
        (window.index == Some(index)).then_some(window)
    }

    /// Records a gauge value or a sum delta. Returns false if late.
    pub fn record_value(&mut self, index: i64, value: f64, time: u64) -> bool {
        self.totals.requests += 1;
        let Some(window) = self.slot(index) else {
            self.totals.late += 1;
            return false;
        };
        window.values.add(value, time);
        true
    }

    /// Records a distribution (histogram metric) as (scaled value, count)
    /// pairs; `count` is the number of observations. Returns false if late.
    pub fn record_distribution(
        &mut self,
        index: i64,
        count: u64,
        sum: f64,
        time: u64,
        buckets: impl Iterator<Item = (u64, u64)>,
    ) -> bool {
        let count = count.min(MAX_RECORD_COUNT);
        self.totals.requests = self.totals.requests.saturating_add(count);
        let Some(window) = self.slot(index) else {
            self.totals.late = self.totals.late.saturating_add(count);
            return false;
        };
        window.requests = window.requests.saturating_add(count);
        if sum.is_finite() {
            window.values.add(sum, time);
        }
        for (value, n) in buckets {
            window.histogram.record_n(value, n);
        }
        true
    }

    /// The windows whose index lies in `[from, to]`, oldest first.
    pub fn windows(&self, from: i64, to: i64) -> Vec<&Window> {
        let mut found: Vec<&Window> = self
            .slots
            .iter()
            .filter(|window| matches!(window.index, Some(index) if index >= from && index <= to))
            .collect();
        found.sort_by_key(|window| window.index);
        found
    }

    /// The newest window index held, if any.
    pub fn newest(&self) -> Option<i64> {
        self.slots.iter().filter_map(|window| window.index).max()
    }

    /// Bytes held by this ring's histograms and detail slots (for the
    /// memory self-metric and docs).
    pub fn histogram_bytes(&self) -> usize {
        let histograms: usize = self
            .slots
            .iter()
            .map(|window| window.histogram.heap_bytes())
            .sum();
        let details = self
            .details
            .as_ref()
            .map_or(0, |details| details.len() * std::mem::size_of::<Detail>());
        histograms + details
    }
}

/// The most observations one record may add (a metric point's count, a
/// bucket's count). A wire value above it is clamped: no real point holds
/// four billion observations, and with it sums of windows cannot overflow.
pub const MAX_RECORD_COUNT: u64 = u32::MAX as u64;
