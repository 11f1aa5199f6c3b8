//! The retry policy behind the backend seam (`buckets[].s3.retry`, DESIGN section 6.1): which
//! failed attempts are tried again, how long to wait, and the per-core budget that keeps a
//! failing origin from being hit by a retry storm.
//!
//! Hot path: every S3 request counts once in the budget (two `Cell` updates, a clock read only
//! when the window may have ended); a retry costs one budget check and one jittered sleep.
//!
//! # What is retried
//!
//! Only what never reached the client: the pipeline's S3 requests are GET and HEAD (idempotent),
//! and the loop ([`crate::pipeline::fetch::send`]) runs before any response head is written, so
//! the client sees one answer. Retried: transport failures (connect refused or reset, TLS,
//! timeouts) and 500/502/503/504 answers, S3 `503 SlowDown` included. Not retried: every other
//! status (4xx are S3's verdict on this request). When the attempts or the budget run out, the
//! last failure goes to the client as usual (502/504, or 503 with `Retry-After` for SlowDown).
//!
//! # Budget
//!
//! Per core, over windows of [`BUDGET_WINDOW`]: retries may not exceed [`BUDGET_RATIO`] of the
//! requests sent in the window plus [`BUDGET_MIN`]. With every backend failing, a core sends at
//! most ~1.1x its request rate to S3 instead of `max_attempts` x (the shape of gRPC's retry
//! throttling and Finagle's retry budgets).

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::config::RetryConfig;

/// Length of one budget window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Retries allowed per request sent in a window.
pub const BUDGET_RATIO: f64 = 0.1;
/// Retries allowed per window whatever the traffic (so a quiet core can still retry).
pub const BUDGET_MIN: u32 = 10;

/// Whether an S3 answer with `status` is worth another attempt (module doc).
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// One core's retry budget and jitter source (module doc). `!Sync`: one per shard.
pub struct RetryBudget {
    window_start: Cell<Instant>,
    requests: Cell<u32>,
    retries: Cell<u32>,
    rng: Cell<u64>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        RetryBudget {
            window_start: Cell::new(Instant::now()),
            requests: Cell::new(0),
            retries: Cell::new(0),
            rng: Cell::new(seed | 1),
        }
    }
}

impl RetryBudget {
    fn roll(&self, now: Instant) {
        if now.duration_since(self.window_start.get()) >= BUDGET_WINDOW {
            self.window_start.set(now);
            self.requests.set(0);
            self.retries.set(0);
        }
    }

    /// Count one request (its first attempt).
    pub fn request(&self) {
        self.roll(Instant::now());
        self.requests.set(self.requests.get().saturating_add(1));
    }

    /// Take one retry from the budget; `false` when the window's budget is spent.
    pub fn try_retry(&self) -> bool {
        self.roll(Instant::now());
        let allowed = (f64::from(self.requests.get()) * BUDGET_RATIO) as u32 + BUDGET_MIN;
        if self.retries.get() >= allowed {
            return false;
        }
        self.retries.set(self.retries.get() + 1);
        true
    }

    /// The wait before retry number `retry` (1 = the second attempt): uniform in
    /// `[0, min(max_backoff_ms, base_backoff_ms * 2^(retry-1))]` ms (full jitter, AWS
    /// Architecture Blog "Exponential Backoff And Jitter").
    pub fn backoff(&self, cfg: &RetryConfig, retry: u32) -> Duration {
        let cap = cfg
            .base_backoff_ms
            .saturating_mul(1u64 << retry.saturating_sub(1).min(20))
            .min(cfg.max_backoff_ms);
        // xorshift64: spreads the retries of many requests apart, nothing more.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        Duration::from_millis(if cap == 0 { 0 } else { x % (cap + 1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_tenth_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.request();
        }
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10 + BUDGET_MIN as usize);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let b = RetryBudget::default();
        let cfg = RetryConfig {
            max_attempts: 5,
            base_backoff_ms: 20,
            max_backoff_ms: 50,
        };
        let mut seen_above_20 = false;
        for _ in 0..1000 {
            assert!(b.backoff(&cfg, 1) <= Duration::from_millis(20));
            let d = b.backoff(&cfg, 3);
            assert!(d <= Duration::from_millis(50));
            seen_above_20 |= d > Duration::from_millis(20);
        }
        assert!(seen_above_20, "the cap grows with the attempt");
        let zero = RetryConfig {
            base_backoff_ms: 0,
            ..cfg
        };
        assert_eq!(b.backoff(&zero, 4), Duration::ZERO);
        assert!(retryable_status(503) && retryable_status(500) && !retryable_status(404));
    }
}
