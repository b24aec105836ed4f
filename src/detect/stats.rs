//! The numerics behind the detectors, written out so that no statistics crate
//! is needed: robust location and spread (median, MAD, robust z), the tail
//! probabilities of the binomial and Poisson distributions, and a
//! least-squares line.
//!
//! Invariants:
//! - No function panics, whatever it is given. NaN, infinite or out-of-range
//!   parameters give a documented, conservative answer (a tail probability of
//!   1, "not significant"; `None` for a statistic of nothing) rather than a
//!   panic or a NaN that would silently fail every comparison downstream.
//! - Every tail probability is in `[0, 1]`, and is accurate where the
//!   detectors need it, far out in the tail: the regularized incomplete beta
//!   and gamma functions are evaluated with their front factors in log space
//!   and on the side of their continued fraction or series that converges
//!   without cancellation. Probabilities below about 1e-308 underflow to 0,
//!   which every threshold a detector uses reads correctly.

/// Turns a MAD into an estimate of the standard deviation of normally
/// distributed data (1 / Φ⁻¹(3/4)), so robust z-scores read like ordinary
/// ones.
pub const MAD_SCALE: f64 = 1.482_602_218_505_602;

/// Relative precision the continued fractions and series stop at.
const EPSILON: f64 = 1e-15;

/// Stands in for zero in the modified Lentz algorithm, which divides by
/// intermediate values that may vanish.
const TINY: f64 = 1e-300;

/// The median and the median absolute deviation of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The middle value (the mean of the two middle values for an even count).
    pub median: f64,
    /// The median of the absolute deviations from `median`, unscaled.
    pub mad: f64,
}

/// A least-squares line `y = intercept + slope * x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    /// Change of `y` per unit of `x`.
    pub slope: f64,
    /// `y` at `x = 0`.
    pub intercept: f64,
    /// Share of the variance of `y` the line explains, in `[0, 1]`; 0 when
    /// `y` does not vary at all, since there is then nothing to explain.
    pub r2: f64,
}

// === robust statistics ===

/// The median of `values`, which it reorders; `None` when empty. Callers
/// pass finite values; NaN, if any, sorts above everything (`total_cmp`), so
/// it does not panic but may shift the result.
pub fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (below, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    // For an even count the lower middle is the largest value below `mid`.
    let lower = below
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(upper);
    Some(lower + (upper - lower) / 2.0)
}

/// The median absolute deviation of `values` from `center`; `values` is
/// overwritten with the absolute deviations. `None` when empty.
pub fn mad(values: &mut [f64], center: f64) -> Option<f64> {
    for value in values.iter_mut() {
        *value = (*value - center).abs();
    }
    median(values)
}

/// Median and MAD of `values`, which it overwrites; `None` when empty.
pub fn spread(values: &mut [f64]) -> Option<Spread> {
    let median = median(values)?;
    let mad = mad(values, median)?;
    Some(Spread { median, mad })
}

/// How many robust standard deviations `value` lies above the median
/// (negative below it). The MAD is raised to `mad_floor` first: a perfectly
/// flat baseline has a MAD of 0, and without a floor every wiggle after it
/// would be infinitely significant. With a MAD and floor of 0, a value equal
/// to the median scores 0 and any other value ±infinity.
pub fn robust_z(value: f64, spread: Spread, mad_floor: f64) -> f64 {
    let deviation = value - spread.median;
    let scale = MAD_SCALE * spread.mad.max(mad_floor);
    if deviation == 0.0 {
        0.0
    } else if scale > 0.0 {
        deviation / scale
    } else {
        deviation.signum() * f64::INFINITY
    }
}

// === special functions ===

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, as in Numerical Recipes,
/// 3rd edition, about 15 significant digits); NaN for `x <= 0` or NaN.
// The constants are the published ones, digit for digit, so they can be
// checked against the book; rounding them to what an f64 holds happens at
// compile time either way.
#[allow(clippy::excessive_precision)]
pub fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 14] = [
        57.156_235_665_862_923_5,
        -59.597_960_355_475_491_2,
        14.136_097_974_741_747_1,
        -0.491_913_816_097_620_199,
        0.339_946_499_848_118_887e-4,
        0.465_236_289_270_485_756e-4,
        -0.983_744_753_048_795_646e-4,
        0.158_088_703_224_912_494e-3,
        -0.210_264_441_724_104_883e-3,
        0.217_439_618_115_212_643e-3,
        -0.164_318_106_536_763_890e-3,
        0.844_182_239_838_527_433e-4,
        -0.261_908_384_015_814_087e-4,
        0.368_991_826_595_316_234e-5,
    ];
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let shifted = x + 5.242_187_5;
    let head = (x + 0.5) * shifted.ln() - shifted;
    let mut series = 0.999_999_999_999_997_092;
    let mut denominator = x;
    for coefficient in COEFFICIENTS {
        denominator += 1.0;
        series += coefficient / denominator;
    }
    head + (2.506_628_274_631_000_5 * series / x).ln()
}

/// `ln B(a, b) = ln Γ(a) + ln Γ(b) - ln Γ(a + b)`.
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Most iterations a continued fraction or series of parameter size `size`
/// is given. They converge in O(sqrt(size)) steps in the worst case (an
/// argument near the distribution's mean); the margin makes running out a
/// sign of bad input rather than of a large count.
fn max_iterations(size: f64) -> usize {
    // Saturating float-to-int cast: a huge size just means "many".
    1_000 + (20.0 * size.max(0.0).sqrt()) as usize
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`,
/// clamped to `[0, 1]`. Bad parameters (NaN, not positive) give NaN, which
/// the public tails turn into "not significant".
pub fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() || a <= 0.0 || b <= 0.0 || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    // ln(x^a (1-x)^b / B(a, b)); ln_1p keeps (1-x) exact for small x.
    let ln_front = a * x.ln() + b * (-x).ln_1p() - ln_beta(a, b);
    // The continued fraction converges quickly (and without cancellation
    // against 1) below this point; above it, use the symmetry
    // I_x(a, b) = 1 - I_{1-x}(b, a).
    let value = if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front + beta_fraction(x, a, b).ln() - a.ln()).exp()
    } else {
        1.0 - (ln_front + beta_fraction(1.0 - x, b, a).ln() - b.ln()).exp()
    };
    value.clamp(0.0, 1.0)
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    let sum = a + b;
    let up = a + 1.0;
    let down = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - sum * x / up;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut result = d;
    for m in 1..=max_iterations(a.max(b)) {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step.
        let step = m * (b - m) * x / ((down + m2) * (a + m2));
        d = 1.0 + step * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + step / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        result *= d * c;
        // Odd step.
        let step = -(a + m) * (sum + m) * x / ((a + m2) * (up + m2));
        d = 1.0 + step * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + step / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        result *= delta;
        if (delta - 1.0).abs() < EPSILON {
            break;
        }
    }
    // Not converging within the budget only happens for absurd parameters;
    // the estimate so far is still the best available answer.
    result
}

/// The regularized lower incomplete gamma function `P(a, x)` for `a > 0`,
/// clamped to `[0, 1]`; NaN for bad parameters.
pub fn regularized_gamma_p(a: f64, x: f64) -> f64 {
    if a.is_nan() || a <= 0.0 || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x.is_infinite() {
        return 1.0;
    }
    if x < a + 1.0 {
        gamma_series(a, x).clamp(0.0, 1.0)
    } else {
        (1.0 - gamma_fraction(a, x)).clamp(0.0, 1.0)
    }
}

/// The regularized upper incomplete gamma function `Q(a, x) = 1 - P(a, x)`,
/// computed directly on the side where it is small so that its far tail is
/// accurate; NaN for bad parameters.
pub fn regularized_gamma_q(a: f64, x: f64) -> f64 {
    if a.is_nan() || a <= 0.0 || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    if x < a + 1.0 {
        (1.0 - gamma_series(a, x)).clamp(0.0, 1.0)
    } else {
        gamma_fraction(a, x).clamp(0.0, 1.0)
    }
}

/// `ln(x^a e^-x / Γ(a))`, the front factor both gamma expansions share.
fn ln_gamma_front(a: f64, x: f64) -> f64 {
    a * x.ln() - x - ln_gamma(a)
}

/// `P(a, x)` by its power series; converges for `x < a + 1`.
fn gamma_series(a: f64, x: f64) -> f64 {
    let mut denominator = a;
    let mut term = 1.0 / a;
    let mut sum = term;
    for _ in 0..max_iterations(a) {
        denominator += 1.0;
        term *= x / denominator;
        sum += term;
        if term.abs() < sum.abs() * EPSILON {
            break;
        }
    }
    (sum.ln() + ln_gamma_front(a, x)).exp()
}

/// `Q(a, x)` by its continued fraction (modified Lentz); converges for
/// `x >= a + 1`.
fn gamma_fraction(a: f64, x: f64) -> f64 {
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut result = d;
    for i in 1..=max_iterations(a.max(x)) {
        let i = i as f64;
        let step = -i * (i - a);
        b += 2.0;
        d = step * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + step / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        result *= delta;
        if (delta - 1.0).abs() < EPSILON {
            break;
        }
    }
    (result.ln() + ln_gamma_front(a, x)).exp()
}

// === tail probabilities ===

/// `P(X >= k)` for `X ~ Binomial(n, p)`: how surprising `k` or more failures
/// out of `n` are when each fails with probability `p`.
///
/// Exact edges: 1 for `k = 0`; 0 for `k > n`; 0 for `p <= 0` (and `k >= 1`);
/// 1 for `p >= 1`. A NaN `p` gives 1 (not significant). Otherwise it is
/// `I_p(k, n - k + 1)`, accurate far into the tail for `n` up to 10^7 and
/// beyond.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 || p.is_nan() || p >= 1.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    let tail = regularized_beta(p, k as f64, (n - k) as f64 + 1.0);
    if tail.is_nan() {
        1.0
    } else {
        tail
    }
}

/// `P(X >= k)` for `X ~ Poisson(lambda)`: how surprising `k` or more events
/// are when `lambda` are expected. 1 for `k = 0`; 0 for `lambda <= 0` (and
/// `k >= 1`); 1 for a NaN `lambda` (not significant).
pub fn poisson_upper_tail(k: u64, lambda: f64) -> f64 {
    if k == 0 || lambda.is_nan() {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let tail = regularized_gamma_p(k as f64, lambda);
    if tail.is_nan() {
        1.0
    } else {
        tail
    }
}

/// `P(X <= k)` for `X ~ Poisson(lambda)`: how surprising as few as `k`
/// events are when `lambda` are expected (`k = 0` gives `e^-lambda`). 1 for
/// `lambda <= 0` or NaN (not significant).
pub fn poisson_lower_tail(k: u64, lambda: f64) -> f64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 1.0;
    }
    let tail = regularized_gamma_q(k as f64 + 1.0, lambda);
    if tail.is_nan() {
        1.0
    } else {
        tail
    }
}

// === regression ===

/// The least-squares line through `points` (`(x, y)` pairs); `None` with
/// fewer than two points, when every `x` is the same, or when a value is not
/// finite. Sums are taken around the means, which keeps large offsets (Unix
/// times, byte counts) from cancelling digits away.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<LinearFit> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    if points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return None;
    }
    let count = n as f64;
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / count;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / count;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        let dx = x - mean_x;
        let dy = y - mean_y;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx.is_nan() || sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(LinearFit {
        slope,
        intercept: mean_y - slope * mean_x,
        r2,
    })
}

#[cfg(test)]
mod tests;
