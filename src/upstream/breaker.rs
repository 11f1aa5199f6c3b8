//! The circuit breaker behind the backend seam (`buckets[].s3.circuit_breaker`, DESIGN section
//! 6.1): one per backend per core, closed / open / half-open, so a dead or drowning origin is
//! not sent requests that will fail, and clients get a fast 503 with `Retry-After` instead of
//! waiting for timeouts.
//!
//! Hot path: one [`Breaker::allow`] before and one [`Breaker::record`] after every S3 attempt
//! (a few `Cell` reads and writes; a clock read only while open). Per core: no atomics, no
//! locks; each core learns of a failing backend from its own attempts (with N cores an origin
//! sees at most N x `failure_threshold` failed attempts before every breaker is open).
//!
//! # States
//!
//! - **Closed**: attempts go through; `failure_threshold` consecutive failed attempts (transport
//!   failures and 500/502/503/504, retries included) open it. Any other answer resets the count.
//! - **Open**: attempts are refused at once for `open_ms` (the request gets 503 with
//!   `Retry-After` = the time left, rounded up, at least 1 s).
//! - **Half-open**: after `open_ms`, one attempt probes the backend while others are still
//!   refused; its success closes the breaker, its failure opens it for another `open_ms`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// A breaker's state, as exported (`upstream_breaker_state`: 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Attempts go through.
    Closed,
    /// Attempts are refused until the instant.
    Open(Instant),
    /// One probe is in flight; others are refused.
    HalfOpen,
}

/// One backend's breaker on one core (module doc).
pub struct Breaker {
    state: Cell<State>,
    failures: Cell<u32>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Cell::new(State::Closed),
            failures: Cell::new(0),
        }
    }
}

impl Breaker {
    /// Whether an attempt may go now. `Err(wait)`: refused, open for `wait` more (zero while a
    /// half-open probe is in flight). Moves open to half-open when `open_ms` has passed (the
    /// caller's attempt is then the probe).
    pub fn allow(&self) -> Result<(), Duration> {
        match self.state.get() {
            State::Closed => Ok(()),
            State::HalfOpen => Err(Duration::ZERO),
            State::Open(until) => {
                let now = Instant::now();
                if now >= until {
                    self.state.set(State::HalfOpen);
                    Ok(())
                } else {
                    Err(until - now)
                }
            }
        }
    }

    /// Record an attempt's outcome (`failed`: transport failure or 500/502/503/504).
    pub fn record(&self, failed: bool, cfg: &BreakerConfig) {
        if !failed {
            self.failures.set(0);
            self.state.set(State::Closed);
            return;
        }
        let n = self.failures.get().saturating_add(1);
        self.failures.set(n);
        if self.state.get() == State::HalfOpen || n >= cfg.failure_threshold {
            self.state.set(State::Open(
                Instant::now() + Duration::from_millis(cfg.open_ms),
            ));
        }
    }

    /// An attempt that `allow` let through ended without an outcome (the request was dropped):
    /// a half-open breaker may probe again.
    pub fn abandon(&self) {
        if self.state.get() == State::HalfOpen {
            self.state.set(State::Open(Instant::now()));
        }
    }

    /// The state as a number: 0 closed, 1 open, 2 half-open.
    pub fn code(&self) -> i64 {
        match self.state.get() {
            State::Closed => 0,
            State::Open(_) => 1,
            State::HalfOpen => 2,
        }
    }
}

/// `Retry-After` for a breaker open for `wait` more: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    (wait.as_millis().div_ceil(1000) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a test thread, not a shard
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let cfg = BreakerConfig {
            failure_threshold: 3,
            open_ms: 40,
        };
        let b = Breaker::default();
        for _ in 0..2 {
            assert!(b.allow().is_ok());
            b.record(true, &cfg);
        }
        assert!(b.allow().is_ok(), "two failures keep it closed");
        b.record(false, &cfg);
        for _ in 0..3 {
            assert!(b.allow().is_ok());
            b.record(true, &cfg);
        }
        let wait = b.allow().expect_err("open");
        assert!(wait <= Duration::from_millis(40));
        assert_eq!(retry_after_secs(wait), 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.allow().is_ok(), "the probe");
        assert_eq!(b.allow(), Err(Duration::ZERO), "one probe at a time");
        b.record(true, &cfg);
        assert!(b.allow().is_err(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.allow().is_ok());
        b.record(false, &cfg);
        assert_eq!(b.code(), 0);
        assert!(b.allow().is_ok() && b.allow().is_ok(), "closed again");
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}
