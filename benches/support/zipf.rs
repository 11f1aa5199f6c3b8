//! Seeded workloads for the benches: xorshift64* and a Zipf(s) sampler by inverse CDF, so
//! `benches/cache.rs` (hit ratios of one shard) and `benches/owner.rs` (the L1 across cores)
//! draw the same deterministic request sequences.
//!
//! Each bench includes it with `#[path = "support/zipf.rs"] mod zipf;`. Not shipped; not on any
//! hot path (building the CDF is O(n) once, a sample is a binary search).

// Not every bench uses every item (owner.rs has no use for `top_mass`).
#![allow(dead_code)]

/// xorshift64* (Vigna 2016): a small, seeded, deterministic generator.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over ranks 0..n by inverse-CDF lookup: P(rank k) proportional to 1 / (k + 1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for p in &mut cdf {
            *p /= sum;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut XorShift) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1)
    }

    /// Probability mass of the `k` most popular ranks: the hit ratio of an ideal static cache.
    pub fn top_mass(&self, k: usize) -> f64 {
        if k == 0 {
            0.0
        } else {
            self.cdf[k.min(self.cdf.len()) - 1]
        }
    }
}
