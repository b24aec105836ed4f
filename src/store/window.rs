//! One series' event-time windows: a fixed ring of [`Window`]s.
//!
//! Window `i` covers event times `[i * len, (i + 1) * len)`; it lives in slot
//! `i mod n`. A slot is reset when a newer window claims it, so the ring always
//! holds the newest window of each slot, and a sample whose slot already holds a
//! newer window is *late*: it is counted in the series totals and in `late`, not
//! dropped silently. Histograms are allocated the first time a slot needs one
//! and are reset (capacity kept) on reuse, so steady-state recording does not
//! allocate.

use hdrhistogram::Histogram;

/// Significant decimal digits kept by every histogram (1% relative error).
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// Span latencies are recorded in microseconds and metric distribution values
/// in thousandths of their unit; dividing by this gives milliseconds or units.
pub const VALUE_SCALE: f64 = 1000.0;

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
    /// Latency (or distribution values) in scaled units; `None` until needed.
    pub histogram: Option<Histogram<u32>>,
    pub values: ValueStats,
    pub exemplars: Exemplars,
}

/// Trace ids worth opening for a window: its slowest span and its latest
/// failing spans. Fixed size, so recording never allocates for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exemplars {
    /// (latency in scaled units, trace id) of the slowest span seen.
    pub slowest: Option<(u64, u128)>,
    /// The latest failing spans' trace ids, newest in `errors[next - 1]`.
    pub errors: [u128; 2],
    next: usize,
}

impl Exemplars {
    fn offer(&mut self, latency: u64, error: bool, trace_id: u128) {
        if trace_id == 0 {
            return;
        }
        if self.slowest.is_none_or(|(slowest, _)| latency > slowest) {
            self.slowest = Some((latency, trace_id));
        }
        if error {
            self.errors[self.next % self.errors.len()] = trace_id;
            self.next += 1;
        }
    }

    /// The distinct trace ids held: failing ones first, then the slowest.
    pub fn trace_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.errors.iter().copied().filter(|id| *id != 0).collect();
        if let Some((_, id)) = self.slowest {
            if !ids.contains(&id) {
                ids.push(id);
            }
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
            histogram: None,
            values: ValueStats::default(),
            exemplars: Exemplars::default(),
        }
    }

    fn reset(&mut self, index: i64) {
        self.index = Some(index);
        self.requests = 0;
        self.errors = 0;
        if let Some(histogram) = self.histogram.as_mut() {
            histogram.reset();
        }
        self.values = ValueStats::default();
        self.exemplars = Exemplars::default();
    }

    fn histogram_mut(&mut self) -> &mut Histogram<u32> {
        self.histogram.get_or_insert_with(new_histogram)
    }
}

/// An empty auto-resizing histogram: it grows to the largest value recorded,
/// so a series of fast calls stays small.
pub fn new_histogram() -> Histogram<u32> {
    Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits is a valid precision")
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
    pub totals: Totals,
}

impl Ring {
    pub fn new(n_windows: usize) -> Self {
        Ring {
            slots: (0..n_windows.max(1)).map(|_| Window::empty()).collect(),
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

    /// Records `count` requests (`errors` of them failed), and, when given, a
    /// latency in scaled units for each of them. Returns false if late.
    pub fn record(&mut self, index: i64, count: u64, errors: u64, latency: Option<u64>) -> bool {
        self.totals.requests += count;
        self.totals.errors += errors;
        let Some(window) = self.slot(index) else {
            self.totals.late += count;
            return false;
        };
        window.requests += count;
        window.errors += errors;
        if let Some(value) = latency {
            record_n(window.histogram_mut(), value, count);
        }
        true
    }

    /// Records one span: its latency in scaled units, whether it failed, and
    /// its trace id for the window's exemplars. Returns false if late.
    pub fn record_span(&mut self, index: i64, latency: u64, error: bool, trace_id: u128) -> bool {
        self.totals.requests += 1;
        self.totals.errors += u64::from(error);
        let Some(window) = self.slot(index) else {
            self.totals.late += 1;
            return false;
        };
        window.requests += 1;
        window.errors += u64::from(error);
        record_n(window.histogram_mut(), latency, 1);
        window.exemplars.offer(latency, error, trace_id);
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
        self.totals.requests += count;
        let Some(window) = self.slot(index) else {
            self.totals.late += count;
            return false;
        };
        window.requests += count;
        window.values.add(sum, time);
        let histogram = window.histogram_mut();
        for (value, n) in buckets {
            if n > 0 {
                record_n(histogram, value, n);
            }
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

    /// Bytes held by this ring's histograms (for the memory self-metric and docs).
    pub fn histogram_bytes(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|window| window.histogram.as_ref())
            .map(|histogram| histogram.distinct_values() * std::mem::size_of::<u32>())
            .sum()
    }
}

/// Records `count` values, growing the histogram as needed; a count that
/// would overflow a bucket's counter saturates it instead.
fn record_n(histogram: &mut Histogram<u32>, value: u64, count: u64) {
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    if histogram.record_n(value, count).is_err() {
        histogram.saturating_record_n(value, count);
    }
}
