use super::*;
use proptest::prelude::*;

#[test]
fn first_point_has_no_delta_then_differences() {
    let tracker = CumulativeTracker::default();
    assert_eq!(tracker.sum_delta(1, 100, 200, 10.0, true, 0), None);
    assert_eq!(tracker.sum_delta(1, 100, 300, 15.0, true, 0), Some(5.0));
    assert_eq!(tracker.sum_delta(1, 100, 400, 15.0, true, 0), Some(0.0));
}

#[test]
fn reset_by_value_drop_and_by_start_time() {
    let tracker = CumulativeTracker::default();
    tracker.sum_delta(1, 100, 200, 50.0, true, 0);
    // The process restarted and its counter went back to 3.
    assert_eq!(tracker.sum_delta(1, 100, 300, 3.0, true, 0), Some(3.0));
    // A new start time is a reset even when the value went up.
    assert_eq!(tracker.sum_delta(1, 250, 400, 80.0, true, 0), Some(80.0));
    assert_eq!(tracker.counters.resets.load(Ordering::Relaxed), 2);
}

#[test]
fn non_monotonic_sums_go_down_without_reset() {
    let tracker = CumulativeTracker::default();
    tracker.sum_delta(9, 1, 2, 10.0, false, 0);
    assert_eq!(tracker.sum_delta(9, 1, 3, 4.0, false, 0), Some(-6.0));
}

#[test]
fn out_of_order_points_are_ignored() {
    let tracker = CumulativeTracker::default();
    tracker.sum_delta(1, 1, 300, 10.0, true, 0);
    assert_eq!(tracker.sum_delta(1, 1, 200, 8.0, true, 0), None);
    assert_eq!(tracker.counters.out_of_order.load(Ordering::Relaxed), 1);
}

#[test]
fn histogram_deltas_and_layout_change() {
    let tracker = CumulativeTracker::default();
    assert!(tracker
        .histogram_delta(
            1,
            HistogramPoint {
                start: 1,
                time: 10,
                count: 4,
                sum: 8.0,
                buckets: &[1, 3]
            },
            0
        )
        .is_none());
    let delta = tracker
        .histogram_delta(
            1,
            HistogramPoint {
                start: 1,
                time: 20,
                count: 10,
                sum: 20.0,
                buckets: &[2, 8],
            },
            0,
        )
        .expect("delta");
    assert_eq!(
        delta,
        HistogramDelta {
            count: 6,
            sum: 12.0,
            buckets: vec![1, 5]
        }
    );
    let delta = tracker
        .histogram_delta(
            1,
            HistogramPoint {
                start: 1,
                time: 30,
                count: 3,
                sum: 2.0,
                buckets: &[1, 1, 1],
            },
            0,
        )
        .expect("reset");
    assert_eq!(delta.count, 3);
}

proptest! {
    /// A monotonic counter that restarts at random points: the deltas add
    /// up to everything counted after the first point.
    #[test]
    fn deltas_conserve_increments(increments in proptest::collection::vec((0u32..1000, proptest::bool::weighted(0.1)), 1..200)) {
        let tracker = CumulativeTracker::default();
        let mut value = 0.0;
        let mut start = 1u64;
        let mut expected = 0.0;
        let mut total = 0.0;
        tracker.sum_delta(7, start, 1, value, true, 0);
        for (step, (increment, restart)) in increments.iter().enumerate() {
            let time = step as u64 + 2;
            if *restart {
                start = time;
                value = 0.0;
            }
            value += f64::from(*increment);
            expected += f64::from(*increment);
            total += tracker.sum_delta(7, start, time, value, true, 0).expect("delta after first point");
        }
        prop_assert_eq!(total, expected);
    }
}
