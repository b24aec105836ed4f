// Reference values are written as computed (mpmath, 40 digits) and left
// for the compiler to round, so they can be compared with their source.
#![allow(clippy::excessive_precision)]

use super::*;
use proptest::prelude::*;

/// Asserts `actual` is within `tolerance` relative error of `expected`
/// (absolute when `expected` is 0).
fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let error = if expected == 0.0 {
        actual.abs()
    } else {
        ((actual - expected) / expected).abs()
    };
    assert!(
        error <= tolerance,
        "{what}: got {actual:e}, expected {expected:e} (relative error {error:e})"
    );
}

/// `P(X >= k)` by summing the probability mass function directly, for small
/// `n`: an independent check of the continued fraction.
fn binomial_tail_by_sum(k: u64, n: u64, p: f64) -> f64 {
    (k..=n)
        .map(|i| {
            let ln_choose = ln_gamma(n as f64 + 1.0)
                - ln_gamma(i as f64 + 1.0)
                - ln_gamma((n - i) as f64 + 1.0);
            (ln_choose + i as f64 * p.ln() + (n - i) as f64 * (-p).ln_1p()).exp()
        })
        .sum()
}

#[test]
fn median_and_mad() {
    let cases: &[(&[f64], Option<f64>, Option<f64>)] = &[
        (&[], None, None),
        (&[7.0], Some(7.0), Some(0.0)),
        (&[3.0, 1.0, 2.0], Some(2.0), Some(1.0)),
        (&[4.0, 1.0, 3.0, 2.0], Some(2.5), Some(1.0)),
        // One wild value moves neither statistic much: the point of them.
        (&[10.0, 11.0, 9.0, 10.0, 1000.0], Some(10.0), Some(1.0)),
        (&[5.0, 5.0, 5.0, 5.0], Some(5.0), Some(0.0)),
        (&[-2.0, -1.0, 1.0, 2.0], Some(0.0), Some(1.5)),
    ];
    for (values, expected_median, expected_mad) in cases {
        let mut scratch = values.to_vec();
        assert_eq!(median(&mut scratch), *expected_median, "median {values:?}");
        let mut scratch = values.to_vec();
        let found = spread(&mut scratch);
        assert_eq!(found.map(|s| s.median), *expected_median, "{values:?}");
        assert_eq!(found.map(|s| s.mad), *expected_mad, "mad {values:?}");
    }
}

#[test]
fn robust_z_uses_the_floor() {
    let flat = Spread {
        median: 100.0,
        mad: 0.0,
    };
    // Without a floor a flat baseline makes any wiggle infinite...
    assert_eq!(robust_z(101.0, flat, 0.0), f64::INFINITY);
    assert_eq!(robust_z(99.0, flat, 0.0), f64::NEG_INFINITY);
    assert_eq!(robust_z(100.0, flat, 0.0), 0.0);
    // ...with one it is finite and scaled like a standard deviation.
    close(
        robust_z(101.0, flat, 1.0),
        1.0 / MAD_SCALE,
        1e-12,
        "floored",
    );
    let noisy = Spread {
        median: 10.0,
        mad: 2.0,
    };
    close(
        robust_z(16.0, noisy, 1.0),
        3.0 / MAD_SCALE,
        1e-12,
        "unfloored",
    );
    close(robust_z(4.0, noisy, 1.0), -3.0 / MAD_SCALE, 1e-12, "below");
}

#[test]
fn ln_gamma_known_values() {
    // Reference values from mpmath (40 digits), rounded.
    let cases = [
        (0.5, 0.572_364_942_924_700_087),
        (1.0, 0.0),
        (2.0, 0.0),
        (10.0, 12.801_827_480_081_469_6),
        (100.5, 361.435_540_467_777_622),
        (1e7, 151_180_949.369_473_914),
        (0.0037, 5.597_298_000_700_148_5),
    ];
    for (x, expected) in cases {
        let found = ln_gamma(x);
        if expected == 0.0 {
            assert!(found.abs() < 1e-14, "ln_gamma({x}) = {found}");
        } else {
            close(found, expected, 1e-14, &format!("ln_gamma({x})"));
        }
    }
    assert!(ln_gamma(0.0).is_nan());
    assert!(ln_gamma(-1.0).is_nan());
    assert!(ln_gamma(f64::NAN).is_nan());
}

#[test]
fn binomial_upper_tail_known_values() {
    // (k, n, p, P(X >= k)); references from mpmath at 40 digits (betainc, or
    // a direct sum of the mass function for n = 10^7).
    let cases: &[(u64, u64, f64, f64, f64)] = &[
        (1, 10, 0.1, 0.651_321_559_9, 1e-12),
        (5, 10, 0.5, 0.623_046_875, 1e-12),
        (1, 3, 0.001, 0.002_997_001, 1e-12),
        (3, 4, 0.001, 3.997e-9, 1e-10),
        (10, 1000, 0.001, 1.074_283_386_846_487_3e-7, 1e-10),
        // Far tails: 30 errors of 100 against a 0.1% rate, and the
        // "error rate 12.5% vs 0.3%" example of the issue.
        (30, 100, 0.001, 2.744_766_327_252_359_9e-65, 1e-10),
        (40, 320, 0.003, 8.275_734_606_899_403_3e-51, 1e-10),
        // All of n: exactly p^n.
        (100, 100, 0.01, 1e-200, 1e-10),
        // n = 10^7, both near the mean and far out.
        (100_500, 10_000_000, 0.01, 0.056_287_092_046_379_313, 1e-7),
        (1_200, 10_000_000, 0.0001, 4.674_669_351_149_380_2e-10, 1e-7),
        (5_000_000, 10_000_000, 0.5, 0.500_126_156_622_947_09, 1e-7),
    ];
    for &(k, n, p, expected, tolerance) in cases {
        close(
            binomial_upper_tail(k, n, p),
            expected,
            tolerance,
            &format!("P(X >= {k} | n = {n}, p = {p})"),
        );
    }
}

#[test]
fn binomial_upper_tail_edges() {
    // (k, n, p, exact answer)
    let cases: &[(u64, u64, f64, f64)] = &[
        (0, 10, 0.3, 1.0),
        (0, 0, 0.0, 1.0),
        (11, 10, 0.3, 0.0),
        (1, 10, 0.0, 0.0),
        (1, 10, -0.5, 0.0),
        (10, 10, 1.0, 1.0),
        (3, 10, f64::NAN, 1.0),
        // Far enough out to underflow: 0, not NaN.
        (200_000, 10_000_000, 0.01, 0.0),
        (10_000_000, 10_000_000, 1e-300, 0.0),
    ];
    for &(k, n, p, expected) in cases {
        assert_eq!(binomial_upper_tail(k, n, p), expected, "k={k} n={n} p={p}");
    }
}

#[test]
fn poisson_tails_known_values() {
    // References from mpmath at 40 digits (gammainc).
    let upper: &[(u64, f64, f64)] = &[
        (1, 1.0, 0.632_120_558_828_557_68),
        (10, 2.0, 4.649_807_501_726_380_8e-5),
        (50, 10.0, 1.854_726_883_869_799_3e-19),
        (300, 200.0, 2.711_468_443_343_111_4e-11),
        (1000, 1000.0, 0.504_205_244_180_215_51),
        (20, 0.1, 3.736_960_368_008_905_1e-39),
    ];
    for &(k, lambda, expected) in upper {
        close(
            poisson_upper_tail(k, lambda),
            expected,
            1e-10,
            &format!("P(X >= {k} | {lambda})"),
        );
    }
    let lower: &[(u64, f64, f64)] = &[
        (0, 20.0, 2.061_153_622_438_557_8e-9),
        (0, 200.0, 1.383_896_526_736_737_5e-87),
        (5, 10.0, 0.067_085_962_879_031_782),
        (150, 200.0, 1.313_570_301_694_403_8e-4),
        (100, 1000.0, 6.042_524_933_789_373_7e-293),
        (1000, 1000.0, 0.508_409_367_168_505_99),
    ];
    for &(k, lambda, expected) in lower {
        close(
            poisson_lower_tail(k, lambda),
            expected,
            1e-10,
            &format!("P(X <= {k} | {lambda})"),
        );
    }
    // Edges.
    assert_eq!(poisson_upper_tail(0, 5.0), 1.0);
    assert_eq!(poisson_upper_tail(3, 0.0), 0.0);
    assert_eq!(poisson_upper_tail(3, f64::NAN), 1.0);
    assert_eq!(poisson_lower_tail(0, 0.0), 1.0);
    assert_eq!(poisson_lower_tail(0, f64::NAN), 1.0);
    assert_eq!(poisson_lower_tail(5, f64::INFINITY), 0.0);
    assert_eq!(poisson_upper_tail(5, f64::INFINITY), 1.0);
    // Far beyond f64: 0 rather than NaN.
    assert_eq!(poisson_upper_tail(11_000_000, 1e7 - 1e6), 0.0);
}

#[test]
fn linear_fit_cases() {
    let exact: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
    let fit = linear_fit(&exact).expect("fit");
    close(fit.slope, 2.0, 1e-12, "slope");
    close(fit.intercept, 3.0, 1e-12, "intercept");
    close(fit.r2, 1.0, 1e-12, "r2");

    // Large offsets (Unix seconds, gigabytes) do not cost the fit its digits.
    let offset: Vec<(f64, f64)> = (0..360)
        .map(|i| (1.7e9 + 10.0 * i as f64, 4e9 + 1000.0 * i as f64))
        .collect();
    let fit = linear_fit(&offset).expect("fit");
    close(fit.slope, 100.0, 1e-9, "offset slope");
    close(fit.r2, 1.0, 1e-9, "offset r2");

    // Hand-computed: points (0,1), (1,3), (2,2): slope 0.5, intercept 1.5,
    // r² = 0.25 (Sxy = 1, Sxx = 2, Syy = 2).
    let fit = linear_fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)]).expect("fit");
    close(fit.slope, 0.5, 1e-12, "slope");
    close(fit.intercept, 1.5, 1e-12, "intercept");
    close(fit.r2, 0.25, 1e-12, "r2");

    // Flat: slope 0, nothing explained.
    let fit = linear_fit(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]).expect("fit");
    assert_eq!((fit.slope, fit.r2), (0.0, 0.0));

    assert_eq!(linear_fit(&[]), None);
    assert_eq!(linear_fit(&[(1.0, 1.0)]), None);
    assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
    assert_eq!(linear_fit(&[(0.0, 1.0), (1.0, f64::NAN)]), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn binomial_tail_is_a_probability_and_falls_with_k(
        n in 0u64..5_000,
        p in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0, 1e-9f64..1e-3],
        step in 1u64..50,
    ) {
        let mut previous = 1.0;
        let mut k = 0;
        while k <= n + 1 {
            let tail = binomial_upper_tail(k, n, p);
            prop_assert!((0.0..=1.0).contains(&tail), "k={} tail={}", k, tail);
            prop_assert!(tail <= previous * (1.0 + 1e-9), "k={} {} > {}", k, tail, previous);
            previous = tail;
            k += step;
        }
    }

    #[test]
    fn binomial_tail_matches_a_direct_sum(n in 1u64..60, k in 1u64..60, p in 0.001f64..0.999) {
        prop_assume!(k <= n);
        let expected = binomial_tail_by_sum(k, n, p);
        let found = binomial_upper_tail(k, n, p);
        prop_assert!(
            (found - expected).abs() <= 1e-11 * expected.max(1e-300) + 1e-15,
            "k={} n={} p={}: {} vs {}", k, n, p, found, expected
        );
    }

    #[test]
    fn poisson_tails_are_probabilities_monotone_and_complementary(
        lambda in prop_oneof![0.0f64..5.0, 5.0f64..1e4, 1e4f64..1e6],
        step in 1u64..500,
    ) {
        let mut previous_upper = 1.0;
        let mut previous_lower = 0.0;
        let mut k = 0u64;
        let end = (lambda * 2.0) as u64 + 20;
        while k <= end {
            let upper = poisson_upper_tail(k, lambda);
            let lower = poisson_lower_tail(k, lambda);
            prop_assert!((0.0..=1.0).contains(&upper));
            prop_assert!((0.0..=1.0).contains(&lower));
            prop_assert!(upper <= previous_upper * (1.0 + 1e-9), "upper rose at k={}", k);
            prop_assert!(lower >= previous_lower * (1.0 - 1e-9), "lower fell at k={}", k);
            // P(X >= k + 1) + P(X <= k) = 1.
            let total = poisson_upper_tail(k + 1, lambda) + lower;
            prop_assert!((total - 1.0).abs() < 1e-9, "k={} total={}", k, total);
            previous_upper = upper;
            previous_lower = lower;
            k += step;
        }
    }

    #[test]
    fn median_is_between_min_and_max(values in prop::collection::vec(-1e9f64..1e9, 1..100)) {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut scratch = values.clone();
        let found = median(&mut scratch).expect("non-empty");
        prop_assert!(found >= min && found <= max);
        // Half the values are at or below it, half at or above.
        let below = values.iter().filter(|v| **v <= found).count();
        let above = values.iter().filter(|v| **v >= found).count();
        prop_assert!(below * 2 >= values.len() && above * 2 >= values.len());
    }
}
