//! The latency histogram of one window: log-linear buckets like an HDR
//! histogram's, stored sparse or as a short dense run, so that its memory
//! follows what was recorded rather than the largest value ever seen.
//!
//! # Buckets
//!
//! Values below 64 have a bucket each. Above, every power of two is split
//! into 64 equal buckets, so a bucket is at most 1/64 of its lower bound
//! wide, and a value read back as its bucket's midpoint is within 0.8% of
//! what was recorded: the same precision as an HDR histogram with two
//! significant digits, which reports a bucket's upper edge. A `u64` of
//! microseconds needs 3,776 buckets, so a bucket number fits in 12 bits.
//!
//! # Storage
//!
//! One `Vec<u32>` holds the counts, in one of two forms:
//!
//! - *sparse*: one word per non-empty bucket, sorted, the bucket number in
//!   the top 12 bits and its count in the low 20. A window of a low-rate
//!   series (ten requests) takes ten words, where `hdrhistogram` allocates
//!   its whole counts array from zero up to the largest value (about 5 KB
//!   for latencies up to 100 ms).
//! - *dense*: one count per bucket over a run `[base, base + len)`, once the
//!   run is no longer than the number of non-empty buckets (a busy series),
//!   or a count outgrows 20 bits.
//!
//! Neither form holds more than [`MAX_BUCKETS`] words, whatever arrives: past
//! that, the lowest buckets are folded into the lowest one kept (the high
//! quantiles, which detection reads, keep their precision). With 64 buckets
//! per power of two that is a span of 2^32: a window whose slowest request
//! took an hour keeps full precision down to a microsecond. The
//! exact minimum and maximum are kept beside the buckets, so nothing read
//! back lies outside what was recorded.
//!
//! A bucket's count stops at `u32::MAX`: only what fits is recorded, and
//! [`LatencyHistogram::len`] is always the sum of the buckets.

/// Bits of a value's mantissa kept: 2^6 = 64 buckets per power of two.
const SUB_BITS: u32 = 6;
/// Buckets per power of two; also the number of exact buckets at the bottom.
const SUB: u64 = 1 << SUB_BITS;
/// Bits of a sparse word holding the count.
const COUNT_BITS: u32 = 20;
/// The largest count a sparse word holds.
const SPARSE_MAX: u32 = (1 << COUNT_BITS) - 1;
/// Fewest sparse words that may turn dense.
const MIN_DENSE: usize = 16;
/// Most words a histogram holds in either form: 8 KiB.
pub const MAX_BUCKETS: usize = 2048;

/// The bucket of `value`.
#[inline]
fn bucket_of(value: u64) -> u16 {
    if value < SUB {
        return value as u16;
    }
    let exponent = u64::BITS - 1 - value.leading_zeros();
    let mantissa = (value >> (exponent - SUB_BITS)) & (SUB - 1);
    ((u64::from(exponent - SUB_BITS + 1) << SUB_BITS) | mantissa) as u16
}

/// The lowest value in `bucket` and the bucket's width.
#[inline]
fn bucket_range(bucket: u16) -> (u64, u64) {
    let bucket = u64::from(bucket);
    if bucket < SUB {
        return (bucket, 1);
    }
    let shift = (bucket >> SUB_BITS) - 1;
    let mantissa = bucket & (SUB - 1);
    ((SUB + mantissa) << shift, 1 << shift)
}

/// The value a bucket stands for: its midpoint.
#[inline]
fn bucket_value(bucket: u16) -> u64 {
    let (lower, width) = bucket_range(bucket);
    lower + (width - 1) / 2
}

#[inline]
fn sparse_bucket(word: u32) -> u16 {
    (word >> COUNT_BITS) as u16
}

#[inline]
fn sparse_word(bucket: u16, count: u32) -> u32 {
    (u32::from(bucket) << COUNT_BITS) | count
}

/// A compact latency histogram; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Sparse words, or dense counts from bucket `base` on (see the module
    /// documentation). Its capacity is kept across [`reset`](Self::reset).
    words: Vec<u32>,
    /// Whether `words` is the dense form.
    dense: bool,
    /// The first bucket of the dense form.
    base: u16,
    /// Sum of the bucket counts.
    total: u64,
    /// Exact smallest and largest value recorded (0 when empty).
    min: u64,
    max: u64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Values recorded (the sum of the buckets).
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The largest value recorded, exactly; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value recorded, exactly; 0 when empty.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Empties the histogram, keeping its allocation for the next window.
    pub fn reset(&mut self) {
        self.words.clear();
        self.dense = false;
        self.base = 0;
        self.total = 0;
        self.min = 0;
        self.max = 0;
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<u32>()
    }

    /// Records `count` values of `value`; returns how many were recorded
    /// (fewer only when the bucket's count reached `u32::MAX`).
    #[inline]
    pub fn record_n(&mut self, value: u64, count: u64) -> u64 {
        if count == 0 {
            return 0;
        }
        let was_empty = self.is_empty();
        let added = self.add_bucket(bucket_of(value), count);
        if added > 0 {
            self.widen(was_empty, value, value);
        }
        added
    }

    /// Adds every bucket of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.is_empty() {
            return;
        }
        let was_empty = self.is_empty();
        for (bucket, count) in other.buckets() {
            self.add_bucket(bucket, u64::from(count));
        }
        if !self.is_empty() {
            self.widen(was_empty, other.min, other.max);
        }
    }

    /// The value below which `quantile` (in `[0, 1]`) of the recorded
    /// values lie, as its bucket's midpoint within the exact minimum and
    /// maximum; 0 when empty.
    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        self.value_at_quantiles([quantile])[0]
    }

    /// [`value_at_quantile`](Self::value_at_quantile) for several quantiles,
    /// in ascending order, in one pass over the buckets.
    pub fn value_at_quantiles<const N: usize>(&self, quantiles: [f64; N]) -> [u64; N] {
        let mut values = [0; N];
        if self.is_empty() {
            return values;
        }
        let ranks = quantiles.map(|quantile| {
            let rank = (quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64;
            rank.clamp(1, self.total)
        });
        let mut next = 0;
        let mut seen = 0u64;
        for (bucket, count) in self.buckets() {
            seen += u64::from(count);
            while next < N && ranks[next] <= seen {
                values[next] = bucket_value(bucket).clamp(self.min, self.max);
                next += 1;
            }
            if next == N {
                break;
            }
        }
        // Unsorted quantiles: whatever was not reached is the maximum.
        for value in &mut values[next..] {
            *value = self.max;
        }
        values
    }

    /// The non-empty buckets as (lowest value, width, count), in ascending
    /// order: for heatmaps and exports.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
        self.buckets().map(|(bucket, count)| {
            let (lower, width) = bucket_range(bucket);
            (lower, width, count)
        })
    }

    /// The non-empty buckets as (bucket, count), ascending.
    fn buckets(&self) -> Buckets<'_> {
        Buckets {
            words: self.words.iter().enumerate(),
            dense: self.dense,
            base: self.base,
        }
    }

    fn widen(&mut self, was_empty: bool, min: u64, max: u64) {
        if was_empty {
            self.min = min;
            self.max = max;
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
    }

    /// Adds `count` to `bucket`; returns what was added.
    #[inline]
    fn add_bucket(&mut self, bucket: u16, count: u64) -> u64 {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if !self.dense {
            if self.add_sparse(bucket, count) {
                self.total += u64::from(count);
                return u64::from(count);
            }
            self.make_dense();
        }
        let slot = self.dense_slot(bucket);
        let added = count.min(u32::MAX - *slot);
        *slot += added;
        self.total += u64::from(added);
        u64::from(added)
    }

    /// Adds to the sparse form; false when it must turn dense first (a
    /// count past 20 bits, or more words than the dense form would take).
    #[inline]
    fn add_sparse(&mut self, bucket: u16, count: u32) -> bool {
        match self
            .words
            .binary_search_by_key(&bucket, |word| sparse_bucket(*word))
        {
            Ok(at) => {
                let held = self.words[at] & SPARSE_MAX;
                if count > SPARSE_MAX - held {
                    return false;
                }
                self.words[at] += count;
                true
            }
            Err(at) => {
                if count > SPARSE_MAX || self.words.len() >= MAX_BUCKETS {
                    return false;
                }
                if self.words.len() == self.words.capacity() {
                    // Grown by hand so the capacity never passes MAX_BUCKETS.
                    let len = self.words.len();
                    self.words.reserve_exact(len.max(4).min(MAX_BUCKETS - len));
                }
                self.words.insert(at, sparse_word(bucket, count));
                // Dense is no larger once the run is as short as the words;
                // a few words stay sparse, as later values may lie far off.
                let len = self.words.len();
                if len >= MIN_DENSE {
                    let low = sparse_bucket(self.words[0]);
                    let high = sparse_bucket(self.words[len - 1]);
                    if usize::from(high - low) < len {
                        self.make_dense();
                    }
                }
                true
            }
        }
    }

    /// Turns the sparse words into dense counts over their run, folding
    /// the lowest buckets if the run is longer than [`MAX_BUCKETS`].
    fn make_dense(&mut self) {
        if self.dense {
            return;
        }
        self.dense = true;
        self.base = 0;
        let (Some(first), Some(last)) = (self.words.first(), self.words.last()) else {
            return;
        };
        let high = sparse_bucket(*last);
        let low = sparse_bucket(*first).max(high.saturating_sub(MAX_BUCKETS as u16 - 1));
        let mut counts = vec![0u32; usize::from(high - low) + 1];
        for word in &self.words {
            // At most MAX_BUCKETS counts of 20 bits each: no overflow.
            let bucket = sparse_bucket(*word).max(low);
            counts[usize::from(bucket - low)] += word & SPARSE_MAX;
        }
        self.base = low;
        self.words = counts;
    }

    /// The dense count of `bucket`, widening or shifting the run so that it
    /// holds the bucket (a bucket below a full run counts in its lowest).
    #[inline]
    fn dense_slot(&mut self, bucket: u16) -> &mut u32 {
        let len = self.words.len();
        if len == 0 {
            self.base = bucket;
            self.words.push(0);
            return &mut self.words[0];
        }
        let base = usize::from(self.base);
        let bucket = usize::from(bucket);
        if bucket >= base + len {
            let wanted = bucket - base + 1;
            if wanted <= MAX_BUCKETS {
                self.words.reserve_exact(wanted - len);
                self.words.resize(wanted, 0);
            } else {
                // Shift the run up: the lowest buckets fold into the new
                // lowest one.
                let shift = wanted - MAX_BUCKETS;
                let folded: u64 = self.words[..shift.min(len)]
                    .iter()
                    .map(|count| u64::from(*count))
                    .sum();
                self.words.drain(..shift.min(len));
                let kept = self.words.len();
                self.words.reserve_exact(MAX_BUCKETS - kept);
                self.words.resize(MAX_BUCKETS, 0);
                let lowest = &mut self.words[0];
                let folded = u32::try_from(folded).unwrap_or(u32::MAX);
                let kept = folded.min(u32::MAX - *lowest);
                *lowest += kept;
                // What did not fit in the lowest bucket is no longer held.
                self.total -= u64::from(folded - kept);
                self.base = (base + shift) as u16;
            }
            let at = bucket - usize::from(self.base);
            return &mut self.words[at];
        }
        if bucket < base {
            let room = MAX_BUCKETS - len;
            let grow = (base - bucket).min(room);
            if grow > 0 {
                self.words.reserve_exact(grow);
                self.words.splice(0..0, std::iter::repeat_n(0, grow));
                self.base = (base - grow) as u16;
            }
            return &mut self.words[0];
        }
        &mut self.words[bucket - base]
    }
}

/// The non-empty buckets of a [`LatencyHistogram`] as (bucket, count).
struct Buckets<'a> {
    words: std::iter::Enumerate<std::slice::Iter<'a, u32>>,
    dense: bool,
    base: u16,
}

impl Iterator for Buckets<'_> {
    type Item = (u16, u32);

    #[inline]
    fn next(&mut self) -> Option<(u16, u32)> {
        if !self.dense {
            let (_, word) = self.words.next()?;
            return Some((sparse_bucket(*word), word & SPARSE_MAX));
        }
        self.words
            .find(|(_, count)| **count > 0)
            .map(|(offset, count)| (self.base + offset as u16, *count))
    }
}

#[cfg(test)]
mod tests;
