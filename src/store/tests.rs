use std::num::NonZeroUsize;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SECOND: u64 = 1_000_000_000;

/// A store whose clock stands at `now` seconds, with 10 s windows.
fn store_at(now_secs: u64, config: StoreConfig) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now_secs * SECOND));
    let store = Store::with_clock(config, clock.clone());
    (store, clock)
}

fn sample(end_secs: u64, millis: u64, error: bool) -> Sample {
    Sample {
        end_unix_nanos: end_secs * SECOND,
        duration_nanos: millis * 1_000_000,
        error,
        trace_id: 1,
    }
}

fn op_key(service: &str, name: &str) -> SeriesKey {
    SeriesKey::new(SeriesKind::Operation, service, name)
}

#[test]
fn records_counts_errors_and_quantiles() {
    let (store, _) = store_at(1_000, StoreConfig::default());
    let service = store.service("checkout");
    for millis in 1..=100 {
        store.record_operation(&service, "GET /cart", sample(995, millis, millis % 10 == 0));
    }
    let stats = store
        .stats(&op_key("checkout", "GET /cart"), 0, u64::MAX)
        .expect("series");
    assert_eq!(stats.requests, 100);
    assert_eq!(stats.errors, 10);
    assert!((stats.error_rate - 0.1).abs() < 1e-12);
    for (quantile, exact) in [
        (stats.p50, 50.0),
        (stats.p90, 90.0),
        (stats.p99, 99.0),
        (stats.max, 100.0),
    ] {
        let value = quantile.expect("latency recorded");
        assert!((value - exact).abs() <= exact * 0.01, "{value} vs {exact}");
    }
}

#[test]
fn sub_windows_show_where_in_the_window_a_change_began() {
    let (store, clock) = store_at(1_000, StoreConfig::default());
    let service = store.service("checkout");
    // Window [900, 910): 40 ms until second 906, then 300 ms and failing.
    for tenth in 0..100 {
        let slow = tenth >= 60;
        let sample = Sample {
            end_unix_nanos: 900 * SECOND + tenth * SECOND / 10,
            duration_nanos: if slow { 300 } else { 40 } * 1_000_000,
            error: slow,
            trace_id: 1,
        };
        store.record_operation(&service, "GET /cart", sample);
    }
    store.record_logs(&service, "all", 907 * SECOND, 4, 3);
    let snapshot = store.snapshot(90);
    let find = |snapshot: &[WindowSnapshot], kind: SeriesKind| {
        snapshot
            .iter()
            .find(|entry| entry.key.kind == kind)
            .cloned()
            .expect("series in the snapshot")
    };
    let operation = find(&snapshot, SeriesKind::Operation);
    assert_eq!(operation.key, op_key("checkout", "GET /cart"));
    let subs = operation.subs.expect("span series keep sub-windows");
    let counts: Vec<(u32, u32)> = subs.iter().map(|sub| (sub.requests, sub.errors)).collect();
    assert_eq!(counts, [(20, 0), (20, 0), (20, 0), (20, 20), (20, 20)]);
    let fast = window::sub_bucket(40_000);
    let slow = window::sub_bucket(300_000);
    assert!(fast < slow);
    for (index, sub) in subs.iter().enumerate() {
        let bucket = if index >= 3 { slow } else { fast };
        assert_eq!(sub.latency[bucket], 20, "sub-window {index}: {sub:?}");
        assert_eq!(sub.latency.iter().map(|&n| u32::from(n)).sum::<u32>(), 20);
    }
    let logs = find(&snapshot, SeriesKind::Log);
    let log_subs = logs.subs.expect("log series keep sub-windows");
    assert_eq!((log_subs[3].requests, log_subs[3].errors), (4, 3));
    // A reused slot starts its sub-windows afresh.
    clock.set(1_300 * SECOND);
    store.record_operation(&service, "GET /cart", sample(900 + 300, 40, false));
    let reused = store.snapshot(120);
    let subs = find(&reused, SeriesKind::Operation)
        .subs
        .expect("sub-windows");
    let total: u32 = subs.iter().map(|sub| sub.requests).sum();
    assert_eq!(total, 1);
}

#[test]
fn sub_buckets_double() {
    use window::{sub_bucket, sub_bucket_bounds, SubWindows, SUB_BUCKETS};
    // As documented in `store::window`: 200 bytes per window.
    assert_eq!(std::mem::size_of::<SubWindows>(), 200);
    assert_eq!(sub_bucket(0), 0);
    assert_eq!(sub_bucket(249), 0);
    assert_eq!(sub_bucket(250), 1);
    assert_eq!(sub_bucket(499), 1);
    assert_eq!(sub_bucket(500), 2);
    assert_eq!(sub_bucket(u64::MAX), SUB_BUCKETS - 1);
    for bucket in 0..SUB_BUCKETS {
        let (lower, upper) = sub_bucket_bounds(bucket);
        assert_eq!(sub_bucket(lower), bucket);
        if upper != u64::MAX {
            assert_eq!(sub_bucket(upper - 1), bucket);
            assert_eq!(sub_bucket(upper), bucket + 1);
        }
    }
}

#[test]
fn time_ranges_select_windows() {
    let (store, _) = store_at(1_000, StoreConfig::default());
    let service = store.service("a");
    store.record_operation(&service, "op", sample(905, 10, false));
    store.record_operation(&service, "op", sample(915, 20, true));
    store.record_operation(&service, "op", sample(925, 30, false));
    let key = op_key("a", "op");
    let middle = store
        .stats(&key, 910 * SECOND, 920 * SECOND)
        .expect("series");
    assert_eq!((middle.requests, middle.errors), (1, 1));
    assert_eq!(middle.windows, Some((91, 91)));
    let all = store
        .stats(&key, 900 * SECOND, 930 * SECOND)
        .expect("series");
    assert_eq!(all.requests, 3);
    assert_eq!(all.windows, Some((90, 92)));
    assert!(store
        .stats(&key, 0, 10 * SECOND)
        .expect("series")
        .p50
        .is_none());
}

#[test]
fn late_samples_are_counted_not_lost() {
    let config = StoreConfig {
        windows: NonZeroUsize::new(3).expect("non-zero"),
        ..StoreConfig::default()
    };
    let (store, _) = store_at(1_000, config);
    let service = store.service("a");
    store.record_operation(&service, "op", sample(995, 1, false)); // window 99
    store.record_operation(&service, "op", sample(965, 1, false)); // window 96 shares slot 0 with 99
    let key = op_key("a", "op");
    let totals = store.totals(&key).expect("series");
    assert_eq!(
        totals,
        Totals {
            requests: 2,
            errors: 0,
            late: 1,
            rotated_out: 0
        }
    );
    assert_eq!(store.counters.late_samples.load(Ordering::Relaxed), 1);
    assert_eq!(store.stats(&key, 0, u64::MAX).expect("series").requests, 1);
}

#[test]
fn future_samples_land_in_the_current_window() {
    let (store, _) = store_at(1_000, StoreConfig::default());
    let service = store.service("a");
    store.record_operation(&service, "op", sample(1_000 + 86_400, 5, false));
    let stats = store
        .stats(&op_key("a", "op"), 0, u64::MAX)
        .expect("series");
    assert_eq!(stats.windows, Some((100, 100)));
    assert_eq!(store.counters.future_samples.load(Ordering::Relaxed), 1);
}

#[test]
fn caps_fold_into_overflow_and_conserve_totals() {
    let config = StoreConfig {
        max_series: NonZeroUsize::new(10).expect("non-zero"),
        max_series_per_service: NonZeroUsize::new(3).expect("non-zero"),
        ..StoreConfig::default()
    };
    let (store, _) = store_at(1_000, config);
    let service = store.service("a");
    for i in 0..20 {
        store.record_operation(&service, &format!("op-{i}"), sample(995, 1, i % 2 == 0));
    }
    let names = store.operations("a");
    assert_eq!(names.len(), 4, "3 series + overflow: {names:?}");
    let total: u64 = names
        .iter()
        .map(|name| {
            store
                .stats(&op_key("a", name), 0, u64::MAX)
                .expect("series")
                .requests
        })
        .sum();
    assert_eq!(total, 20);
    let overflow = store
        .stats(&op_key("a", OVERFLOW), 0, u64::MAX)
        .expect("overflow series");
    assert_eq!((overflow.requests, overflow.errors), (17, 8));
    assert_eq!(store.counters.overflow_samples.load(Ordering::Relaxed), 17);

    // Past the total cap, new services fold into the overflow service.
    for i in 0..10 {
        let service = store.service(&format!("svc-{i}"));
        store.record_operation(&service, "op", sample(995, 1, false));
    }
    assert!(
        store.n_series() <= 10 + 1 + 2,
        "bounded: {}",
        store.n_series()
    );
    assert!(store.services().iter().any(|name| &**name == OVERFLOW));
}

#[test]
fn idle_series_expire() {
    let config = StoreConfig {
        series_ttl: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let (store, clock) = store_at(1_000, config);
    let service = store.service("a");
    store.record_operation(&service, "old", sample(995, 1, false));
    clock.set(1_050 * SECOND);
    store.record_operation(&service, "fresh", sample(1_045, 1, false));
    clock.set(1_090 * SECOND);
    assert_eq!(store.sweep(), 1);
    assert_eq!(store.operations("a"), vec![Arc::<str>::from("fresh")]);
    assert_eq!(store.n_series(), 1);
    clock.set(1_200 * SECOND);
    assert_eq!(store.sweep(), 1);
    assert!(store.services().is_empty());
    assert_eq!(store.n_series(), 0);
}

#[test]
fn edges_and_pairing_through_the_store() {
    let (store, clock) = store_at(1_000, StoreConfig::default());
    let checkout = store.service("checkout");
    let payment = store.service("payment");
    let key = pairing::PairKey {
        trace_id: 1,
        span_id: 2,
    };
    let outcome = store.pairing.client(
        key,
        &checkout.name,
        sample(995, 30, true),
        store.intern("payment.svc"),
        store.now_unix_nanos(),
    );
    assert_eq!(outcome, pairing::ClientOutcome::Waiting);
    let resolved = store
        .pairing
        .child(key, &payment.name, store.now_unix_nanos())
        .expect("paired");
    store.record_edge(
        &store.service(&resolved.caller),
        &resolved.callee,
        resolved.sample,
    );

    // A client whose child never comes is resolved to its own peer name.
    let lonely = pairing::PairKey {
        trace_id: 1,
        span_id: 3,
    };
    store.pairing.client(
        lonely,
        &checkout.name,
        sample(995, 5, false),
        store.intern("cache"),
        store.now_unix_nanos(),
    );
    assert_eq!(store.expire_pairs(), 0, "not due yet");
    clock.set(1_010 * SECOND);
    assert_eq!(store.expire_pairs(), 1);

    let edges: Vec<(String, String)> = store
        .edges()
        .into_iter()
        .map(|edge| (edge.caller.to_string(), edge.callee.to_string()))
        .collect();
    assert_eq!(
        edges,
        vec![
            ("checkout".to_string(), "cache".to_string()),
            ("checkout".to_string(), "payment".to_string())
        ]
    );
    let stats = store
        .stats(
            &SeriesKey::new(SeriesKind::Edge, "checkout", "payment"),
            0,
            u64::MAX,
        )
        .expect("edge");
    assert_eq!((stats.requests, stats.errors), (1, 1));
}

#[test]
fn distributions_and_values() {
    let (store, _) = store_at(1_000, StoreConfig::default());
    let service = store.service("db");
    store.record_value(&service, "pool.used", 995 * SECOND, 4.0);
    store.record_value(&service, "pool.used", 996 * SECOND, 9.0);
    store.record_distribution(
        &service,
        "latency",
        995 * SECOND,
        10,
        2.5,
        &[(0.1, 5), (0.4, 5)],
    );
    let values = store
        .stats(
            &SeriesKey::new(SeriesKind::Metric, "db", "pool.used"),
            0,
            u64::MAX,
        )
        .expect("series")
        .values;
    assert_eq!(
        (
            values.points,
            values.sum,
            values.min,
            values.max,
            values.last
        ),
        (2, 13.0, 4.0, 9.0, 9.0)
    );
    let distribution = store
        .stats(
            &SeriesKey::new(SeriesKind::Metric, "db", "latency"),
            0,
            u64::MAX,
        )
        .expect("series");
    assert_eq!(distribution.requests, 10);
    let p90 = distribution.p90.expect("quantile");
    assert!((p90 - 0.4).abs() <= 0.4 * 0.01, "{p90}");
}

proptest! {
    /// Whatever the order and spread of event times, every sample is in a
    /// window the ring holds, or counted late, or in a window rotated out; and the windows' merged
    /// histogram count equals their request count.
    #[test]
    fn rotation_conserves_counts(
        n_windows in 2usize..8,
        samples in proptest::collection::vec((0u64..40, 1u64..5_000, proptest::bool::ANY), 1..300),
    ) {
        let config = StoreConfig { windows: NonZeroUsize::new(n_windows).expect("non-zero"), ..StoreConfig::default() };
        let (store, _) = store_at(10_000, config);
        let service = store.service("s");
        for &(window, millis, error) in &samples {
            store.record_operation(&service, "op", sample(window * 10 + 5, millis, error));
        }
        let key = op_key("s", "op");
        let totals = store.totals(&key).expect("series");
        let in_windows = store.stats(&key, 0, u64::MAX).expect("series");
        prop_assert_eq!(totals.requests, samples.len() as u64);
        prop_assert_eq!(totals.errors, samples.iter().filter(|s| s.2).count() as u64);
        prop_assert_eq!(in_windows.requests + totals.late + totals.rotated_out, totals.requests);
        let histogram = store.histogram(&key, 0, i64::MAX).expect("histogram");
        prop_assert_eq!(histogram.len(), in_windows.requests);
        // The ring never holds more distinct windows than it has slots.
        let (first, last) = in_windows.windows.expect("some window");
        prop_assert!(last >= first);
        // The newest window written is always kept.
        let newest = samples.iter().map(|s| s.0 as i64).max().expect("non-empty");
        prop_assert_eq!(last, newest);
    }

    /// Merging windows gives the same quantiles as one histogram of all the
    /// samples, within the histogram's precision (0.8%).
    #[test]
    fn merged_quantiles_within_precision(values in proptest::collection::vec(1u64..10_000_000, 1..500)) {
        let (store, _) = store_at(10_000, StoreConfig::default());
        let service = store.service("s");
        for (i, micros) in values.iter().enumerate() {
            let window = 9_900 + (i as u64 % 5) * 10;
            store.record_operation(&service, "op", Sample { end_unix_nanos: window * SECOND, duration_nanos: micros * 1_000, error: false, trace_id: 0 });
        }
        let stats = store.stats(&op_key("s", "op"), 0, u64::MAX).expect("series");
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for (q, got) in [(0.5, stats.p50), (0.9, stats.p90), (0.99, stats.p99), (1.0, stats.max)] {
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let exact_ms = sorted[rank - 1] as f64 / 1000.0;
            let got = got.expect("quantile");
            prop_assert!((got - exact_ms).abs() <= exact_ms * 0.01 + 0.001, "q{}: {} vs {}", q, got, exact_ms);
        }
    }
    /// The one-pass quantiles of a window and of merged windows are the
    /// values the histogram gives one quantile at a time, and
    /// `quantile_windows` agrees with `stats_windows`.
    #[test]
    fn one_pass_quantiles_match_single_ones(values in proptest::collection::vec(1u64..10_000_000, 0..300), spread in 1u64..6) {
        let (store, _) = store_at(10_000, StoreConfig::default());
        let service = store.service("s");
        for (i, micros) in values.iter().enumerate() {
            let window = 9_900 + (i as u64 % spread) * 10;
            store.record_operation(&service, "op", Sample { end_unix_nanos: window * SECOND, duration_nanos: micros * 1_000, error: false, trace_id: 0 });
        }
        let key = op_key("s", "op");
        let (from, to) = (0, i64::MAX);
        let expected = |histogram: Option<LatencyHistogram>, q: f64| {
            histogram
                .filter(|histogram| !histogram.is_empty())
                .map(|histogram| histogram.value_at_quantile(q) as f64 / VALUE_SCALE)
        };
        if let Some(stats) = store.stats_windows(&key, from, to) {
            for (q, got) in [(0.5, stats.p50), (0.9, stats.p90), (0.95, stats.p95), (0.99, stats.p99)] {
                prop_assert_eq!(got, expected(store.histogram(&key, from, to), q));
            }
            let (requests, p95) = store.quantile_windows(&key, from, to, 0.95).expect("series");
            prop_assert_eq!(requests, stats.requests);
            prop_assert_eq!(p95, stats.p95);
        }
        for window in 990..996 {
            for snapshot in store.snapshot(window) {
                let stats = snapshot.stats;
                for (q, got) in [(0.5, stats.p50), (0.9, stats.p90), (0.95, stats.p95), (0.99, stats.p99)] {
                    prop_assert_eq!(got, expected(store.histogram(&snapshot.key, window, window), q));
                }
            }
        }
    }
}

#[test]
fn own_time_series_count_in_the_caps_and_an_overflowed_span_once() {
    let config = StoreConfig {
        max_series: NonZeroUsize::new(2).expect("non-zero"),
        ..StoreConfig::default()
    };
    let (store, _) = store_at(1_000, config);
    let service = store.service("api");
    for operation in ["a", "b"] {
        store.record_operation(&service, operation, sample(995, 5, false));
        store.record_span(
            &service,
            SeriesKind::Own,
            operation,
            sample(995, 5, false),
            1_000 * SECOND,
        );
    }
    // "a" and its own series fill the cap; "b" and its own time overflow.
    assert_eq!(store.series("api", SeriesKind::Operation).len(), 2);
    let names = |kind| {
        store
            .series("api", kind)
            .iter()
            .map(|key| key.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(SeriesKind::Operation), ["__overflow__", "a"]);
    assert_eq!(names(SeriesKind::Own), ["__overflow__", "a"]);
    let overflowed = store.counters.overflow_samples.load(Ordering::Relaxed);
    assert_eq!(overflowed, 1, "the span of b, counted once");
}

/// Sub-windows and exemplars are kept for the newest DETAIL_WINDOWS windows
/// only; older windows keep their counts, and a late span for a window the
/// detail ring has moved past counts without touching a newer window's
/// detail.
#[test]
fn details_are_kept_for_the_newest_windows_only() {
    let mut ring = window::Ring::new(30);
    for index in 0..20 {
        assert!(ring.record_span(index, 0, 1_000, index % 2 == 0, 7 + index as u128));
    }
    let detail = window::DETAIL_WINDOWS as i64;
    for index in 0..20 {
        let kept = index >= 20 - detail;
        assert_eq!(ring.subs(index).is_some(), kept, "window {index}");
        assert_eq!(ring.exemplars(index).is_some(), kept, "window {index}");
        assert_eq!(ring.window(index).expect("window").requests, 1);
    }
    let newest = *ring.subs(19).expect("newest");
    // Window 11 shares its detail slot with window 19 and is older.
    assert!(ring.record_span(19 - detail, 0, 5_000, true, 99));
    assert_eq!(ring.window(19 - detail).expect("window").requests, 2);
    assert_eq!(*ring.subs(19).expect("newest"), newest);
    assert_eq!(ring.exemplars(19).expect("newest").trace_ids(), vec![26]);
    // The detail slots are allocated once, not per window.
    assert!(ring.histogram_bytes() < 30 * 64 + window::DETAIL_WINDOWS * 512);
}
