use proptest::prelude::*;

use super::*;

/// Every value's bucket holds it, and no bucket is wider than 1/64 of its
/// lowest value (exact below 128).
#[test]
fn buckets_hold_their_values_within_their_precision() {
    let mut values: Vec<u64> = (0..4096).collect();
    for shift in 0..64 {
        let power = 1u64 << shift;
        values.extend([power - 1, power, power + 1, power.saturating_mul(3) / 2]);
    }
    values.push(u64::MAX);
    for value in values {
        let bucket = bucket_of(value);
        let (lower, width) = bucket_range(bucket);
        assert!(
            lower <= value && value - lower < width,
            "{value} in bucket {bucket}"
        );
        assert!(width == 1 || width <= lower / 64, "{value}: width {width}");
    }
    assert_eq!(bucket_of(u64::MAX), 3775, "a bucket number fits in 12 bits");
    assert_eq!(bucket_of(127), 127);
    assert_eq!(bucket_of(128), 128);
}

#[test]
fn an_empty_histogram_reads_as_zero() {
    let histogram = LatencyHistogram::new();
    assert!(histogram.is_empty());
    assert_eq!(histogram.value_at_quantiles([0.5, 0.99]), [0, 0]);
    assert_eq!(
        histogram.heap_bytes(),
        0,
        "an empty histogram allocates nothing"
    );
}

/// A low-rate window stays sparse: ten values take ten words.
#[test]
fn a_few_values_take_a_word_each() {
    let mut histogram = LatencyHistogram::new();
    for value in [
        900, 1_500, 3_000, 12_000, 40_000, 95_000, 2_000, 7_000, 60_000, 100,
    ] {
        histogram.record_n(value, 1);
    }
    assert!(!histogram.dense);
    assert_eq!(histogram.words.len(), 10);
    assert!(
        histogram.heap_bytes() <= 16 * 4,
        "{}",
        histogram.heap_bytes()
    );
    assert_eq!(histogram.min(), 100);
    assert_eq!(histogram.max(), 95_000);
}

/// A busy window turns dense once that is no larger, and keeps its counts.
#[test]
fn a_busy_window_turns_dense_with_the_same_counts() {
    let mut histogram = LatencyHistogram::new();
    let mut expected = Vec::new();
    for step in 0..5_000u64 {
        let value = 1_000 + (step * 7_919) % 9_000;
        histogram.record_n(value, 1);
        expected.push(value);
    }
    assert!(histogram.dense);
    assert_eq!(histogram.len(), 5_000);
    let summed: u64 = histogram.iter().map(|(_, _, count)| u64::from(count)).sum();
    assert_eq!(summed, 5_000);
    expected.sort_unstable();
    let p95 = expected[(0.95 * 5_000f64).ceil() as usize - 1] as f64;
    let got = histogram.value_at_quantile(0.95) as f64;
    assert!((got - p95).abs() / p95 < 0.008, "p95 {got} vs {p95}");
}

/// Whatever values arrive, a histogram holds at most MAX_BUCKETS words, and
/// the high quantiles keep their precision when low buckets are folded.
#[test]
fn memory_is_bounded_whatever_the_range() {
    let mut histogram = LatencyHistogram::new();
    let mut value = 1u64;
    for _ in 0..200_000 {
        histogram.record_n(value, 1);
        value = value
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    assert!(
        histogram.heap_bytes() <= MAX_BUCKETS * 4,
        "{}",
        histogram.heap_bytes()
    );
    assert_eq!(histogram.len(), 200_000);
    let [p50, p99] = histogram.value_at_quantiles([0.5, 0.99]);
    assert!(p50 <= p99 && p99 <= histogram.max());
    // Uniform over u64: p99 is about 0.99 * 2^64.
    let expected = 0.99 * u64::MAX as f64;
    assert!((p99 as f64 - expected).abs() / expected < 0.02, "{p99}");
}

/// Counts that would overflow a bucket stop at u32::MAX, and the total
/// stays the sum of the buckets (the defect that killed detection).
#[test]
fn a_full_bucket_stops_counting_and_the_total_agrees() {
    let mut histogram = LatencyHistogram::new();
    assert_eq!(histogram.record_n(5_000, 3_000_000_000), 3_000_000_000);
    assert_eq!(
        histogram.record_n(5_000, 3_000_000_000),
        u64::from(u32::MAX) - 3_000_000_000
    );
    histogram.record_n(9_000, u64::MAX);
    let summed: u64 = histogram.iter().map(|(_, _, count)| u64::from(count)).sum();
    assert_eq!(histogram.len(), summed);
    let mut merged = histogram.clone();
    merged.merge(&histogram);
    let summed: u64 = merged.iter().map(|(_, _, count)| u64::from(count)).sum();
    assert_eq!(merged.len(), summed);
    assert_eq!(merged.value_at_quantile(1.0), merged.max());
}

#[test]
fn reset_keeps_the_allocation_and_forgets_the_values() {
    let mut histogram = LatencyHistogram::new();
    for value in 0..500 {
        histogram.record_n(value * 10, 1);
    }
    let bytes = histogram.heap_bytes();
    histogram.reset();
    assert!(histogram.is_empty());
    assert_eq!(histogram.heap_bytes(), bytes);
    histogram.record_n(42, 2);
    assert_eq!(histogram.value_at_quantiles([0.0, 1.0]), [42, 42]);
}

/// The exact quantile of sorted values, as the histogram ranks them.
fn exact(sorted: &[u64], quantile: f64) -> u64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

proptest! {
    /// Quantiles are within the bucket precision of the exact ones, in any
    /// range up to an hour of microseconds, and merging equals recording both.
    #[test]
    fn quantiles_and_merges_match_the_values(
        left in prop::collection::vec((1u64..3_000_000_000, 1u64..4), 1..400),
        right in prop::collection::vec((1u64..3_000_000_000, 1u64..4), 0..400),
    ) {
        let mut one = LatencyHistogram::new();
        let mut other = LatencyHistogram::new();
        let mut all = LatencyHistogram::new();
        let mut values = Vec::new();
        for &(value, count) in &left {
            one.record_n(value, count);
            all.record_n(value, count);
            values.extend(std::iter::repeat_n(value, count as usize));
        }
        for &(value, count) in &right {
            other.record_n(value, count);
            all.record_n(value, count);
            values.extend(std::iter::repeat_n(value, count as usize));
        }
        one.merge(&other);
        prop_assert_eq!(one.len(), values.len() as u64);
        values.sort_unstable();
        for quantile in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let got = one.value_at_quantile(quantile);
            prop_assert_eq!(got, all.value_at_quantile(quantile));
            let want = exact(&values, quantile);
            let error = (got as f64 - want as f64).abs() / want as f64;
            prop_assert!(error <= 1.0 / 128.0 + 1e-9, "q{} got {} want {}", quantile, got, want);
        }
        prop_assert_eq!(one.min(), values[0]);
        prop_assert_eq!(one.max(), values[values.len() - 1]);
    }
}
