//! A small seeded pseudo-random generator and the samplers the simulator
//! needs.
//!
//! The generator is xoshiro256** seeded through splitmix64, the pairing its
//! authors recommend. It is not cryptographic and does not need to be: it only
//! has to be fast, well distributed and the same on every platform, so that a
//! seed always produces the same telemetry. Every sampler here consumes a
//! fixed number of draws per call (the Poisson sampler excepted, whose count
//! depends only on earlier draws), which keeps streams reproducible.

/// xoshiro256** with samplers for the distributions the simulator uses.
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

/// One step of splitmix64: used to expand a seed into generator state.
fn splitmix64(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// === impl Rng ===

impl Rng {
    /// A generator for `seed`; `stream` separates independent streams drawn
    /// from one seed (traffic, requests, metrics...), so that consuming more
    /// numbers in one stream does not shift the others.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut mix = seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        let mut state = [0; 4];
        for word in &mut state {
            *word = splitmix64(&mut mix);
        }
        // The all-zero state is the one state xoshiro cannot leave; splitmix64
        // never yields four zeros in a row, but be explicit about it.
        if state == [0; 4] {
            state[0] = 1;
        }
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in [0, 1), with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Uniform integer in [0, n); `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the tiny bias for huge `n` does not matter
        // here, and it keeps one draw per call.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Standard normal via Box-Muller (one of the pair; the other is dropped
    /// so that every call consumes exactly two draws).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and log-space standard deviation.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson with mean `lambda`: Knuth's product method for small means,
    /// a rounded normal approximation above 30 where it is accurate enough
    /// for traffic counts.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            let value = lambda + lambda.sqrt() * self.normal();
            return value.round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut product = self.uniform();
        let mut count = 0;
        while product > limit {
            count += 1;
            product *= self.uniform();
        }
        count
    }

    /// A non-zero random id (zero ids are invalid in OTLP).
    pub fn id64(&mut self) -> u64 {
        loop {
            let id = self.next_u64();
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_have_the_right_means() {
        let mut rng = Rng::new(7, 0);
        let n = 50_000;
        let mean = |rng: &mut Rng, f: &dyn Fn(&mut Rng) -> f64| {
            (0..n).map(|_| f(rng)).sum::<f64>() / n as f64
        };
        assert!((mean(&mut rng, &|r| r.uniform()) - 0.5).abs() < 0.01);
        assert!((mean(&mut rng, &|r| r.exponential(3.0)) - 3.0).abs() < 0.1);
        assert!(mean(&mut rng, &|r| r.normal()).abs() < 0.02);
        assert!((mean(&mut rng, &|r| r.poisson(4.0) as f64) - 4.0).abs() < 0.05);
        assert!((mean(&mut rng, &|r| r.poisson(200.0) as f64) - 200.0).abs() < 0.5);
        // The median of a log-normal is its median parameter.
        let mut values: Vec<f64> = (0..n).map(|_| rng.log_normal(10.0, 0.5)).collect();
        values.sort_by(f64::total_cmp);
        assert!((values[n / 2] - 10.0).abs() < 0.3);
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut rng = Rng::new(1, 2);
                move |_| rng.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut rng = Rng::new(1, 2);
                move |_| rng.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut rng = Rng::new(1, 3);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
