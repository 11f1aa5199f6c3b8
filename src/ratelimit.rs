//! Node-wide rate limits (`server.rate_limit`, bucket `rate_limit`; DESIGN section 5, Limits):
//! one token bucket per limited key (the node, a bucket, a client IP, a JWT `sub`) in one
//! fixed-size table every core checks, so a limit is exact whatever the shard count and however
//! a client spreads its connections over cores.
//!
//! Hot path of every object request when a rate is set (nothing is touched otherwise). Cost per
//! check: one XXH3 hash of the key (an IP is 4 or 8 bytes), one cache line read (the key's
//! set) and one compare-and-swap: 10 ns given the time, 38 ns with the clock read (`check`;
//! the limit phase reads the clock once per request), 61 ns under a flood of distinct keys,
//! ~190 ns when two cores hammer the same key (`cargo bench --bench limits -- rate`). Memory: [`SETS`] x [`WAYS`] cells of 16 bytes, 1 MiB, allocated
//! zeroed (pages are touched only as keys land on them), bounded whatever the number of
//! distinct clients.
//!
//! # Why one shared table, not per-core buckets or key ownership
//!
//! Per-core buckets with rate / N are wrong for a client on one connection (it lands on one
//! core and gets 1/N of its rate). Ownership by hash of the limited key (as the cache does)
//! is exact but costs every request a cross-core round trip to the key's owner (a few
//! microseconds and a task wakeup), on top of the cache lookup's own. A table of atomic cells
//! is exact in the same way (one state per key for the whole node) for one compare-and-swap.
//! It is the one piece of mutable state the cores share besides the node's in-flight count
//! (`server.max_concurrent_requests`), for the same reason: a node-wide limit.
//!
//! # The algorithm
//!
//! Each cell is GCRA (the generic cell rate algorithm, ITU-T I.371; equivalent to a token
//! bucket) on one word, the key's theoretical arrival time `tat` in ns of the table's clock: a
//! request at `now` with emission interval `T = 1 s / rate` is admitted when
//! `max(tat, now) + T - now <= burst x T`, and then `tat` becomes `max(tat, now) + T`. Burst is
//! `2 x rate` (DESIGN 6.1), so a fresh key may send `2 x rate` requests at once, then `rate`
//! per second. A refusal answers how long until the next request would be admitted (the
//! `Retry-After`, rounded up to whole seconds, at least 1).
//!
//! # Bounded memory
//!
//! A key hashes (keyed XXH3, a random seed per process, so clients cannot aim collisions) to
//! one set of [`WAYS`] cells, each holding a 64-bit fingerprint and `tat`. A key not in its
//! set takes an empty cell, else an idle one (`tat <= now`: its bucket has refilled, which is
//! the same as no entry), else the cell with the smallest `tat`, the key closest to a full
//! bucket. A flood of distinct addresses therefore replaces other one-off addresses, not a
//! client being limited (its `tat` is the largest in the set). Two threads replacing the same
//! cell at once may leave one request counted against the other key: rare (a set full of busy
//! keys, contended at the same instant) and bounded to that request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sets in the table (a power of two).
pub const SETS: usize = 1 << 14;
/// Cells per set (one 64-byte cache line).
pub const WAYS: usize = 4;
/// Nanoseconds in a second.
const NS: u64 = 1_000_000_000;

/// What a rate applies to; part of the key, so the same bytes under two kinds are two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole node (`server.rate_limit.global_rps`); the key bytes are empty.
    Global,
    /// One bucket (`buckets[].rate_limit.rps`); the key is the bucket's name.
    Bucket,
    /// One client address (`per_ip_rps`); the key is the address's octets.
    Ip,
    /// One JWT subject (`per_user_rps`); the key is the `sub` claim.
    User,
}

/// One limited key: its fingerprint and its theoretical arrival time (module doc).
#[derive(Default)]
struct Cell {
    key: AtomicU64,
    tat: AtomicU64,
}

/// One set: [`WAYS`] cells on one cache line.
#[derive(Default)]
#[repr(align(64))]
struct Set {
    cells: [Cell; WAYS],
}

/// The node's rate-limit table (module doc). `Sync`: every core checks it.
pub struct RateTable {
    sets: Box<[Set]>,
    seed: u64,
    epoch: Instant,
}

impl Default for RateTable {
    fn default() -> Self {
        RateTable::new()
    }
}

impl RateTable {
    /// An empty table with a random hash seed.
    pub fn new() -> RateTable {
        let mut sets = Vec::with_capacity(SETS);
        sets.resize_with(SETS, Set::default);
        let epoch = Instant::now();
        // A per-process seed (the clock and the address of the table), not a secret key: enough
        // that a client cannot precompute addresses that fill one set.
        let seed = xxhash_rust::xxh3::xxh3_64(
            &[
                format!("{epoch:?}").as_bytes(),
                &(sets.as_ptr() as usize).to_le_bytes(),
                &std::process::id().to_le_bytes(),
            ]
            .concat(),
        );
        RateTable {
            sets: sets.into_boxed_slice(),
            seed,
            epoch,
        }
    }

    /// The table's clock, ns; starts at 1 s so an empty cell (`tat` 0) is idle. A request
    /// checking several rates reads it once ([`RateTable::check_at`]).
    pub fn now_ns(&self) -> u64 {
        NS + self.epoch.elapsed().as_nanos() as u64
    }

    /// Admit one request of `key` under `scope` at `rate` requests per second (burst
    /// `2 x rate`), or refuse it with the wait until one would be admitted. `rate` 0 admits
    /// everything without touching the table.
    #[inline]
    pub fn check(&self, scope: Scope, key: &[u8], rate: u64) -> Result<(), Duration> {
        if rate == 0 {
            return Ok(());
        }
        self.check_at(scope, key, rate, self.now_ns())
    }

    /// [`RateTable::check`] at `now` ns of the table's clock (tests and benches drive time).
    pub fn check_at(&self, scope: Scope, key: &[u8], rate: u64, now: u64) -> Result<(), Duration> {
        let interval = (NS / rate.max(1)).max(1);
        let limit = interval.saturating_mul(2 * rate);
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed ^ scope as u64) | 1;
        let set = &self.sets[(h >> 32) as usize & (SETS - 1)];
        loop {
            if let Some(cell) = set
                .cells
                .iter()
                .find(|c| c.key.load(Ordering::Acquire) == h)
            {
                return consume(&cell.tat, now, interval, limit);
            }
            // Not present: take the victim (module doc), then count this request there.
            let (victim, seen) = set
                .cells
                .iter()
                .map(|c| (c, c.key.load(Ordering::Acquire)))
                .min_by_key(|(c, k)| {
                    if *k == 0 {
                        0
                    } else {
                        c.tat.load(Ordering::Relaxed).saturating_sub(now)
                    }
                })
                .expect("a set has cells");
            if victim
                .key
                .compare_exchange(seen, h, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                victim.tat.store(now + interval, Ordering::Release);
                return Ok(());
            }
            // Another core changed that cell: look again (it may have inserted this key).
        }
    }
}

/// GCRA on one cell (module doc).
#[inline]
fn consume(tat: &AtomicU64, now: u64, interval: u64, limit: u64) -> Result<(), Duration> {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let next = current.max(now) + interval;
        if next - now > limit {
            return Err(Duration::from_nanos(next - now - limit));
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
}

/// `Retry-After` for a refusal that must wait `wait`: whole seconds, rounded up, at least 1
/// (RFC 9110 section 10.2.3).
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_nanos().div_ceil(u128::from(NS));
    secs.clamp(1, u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS;

    #[test]
    fn a_fresh_key_gets_its_burst_then_its_rate() {
        let t = RateTable::new();
        let now = 10 * S;
        let admitted = (0..100)
            .filter(|_| t.check_at(Scope::Ip, b"\x7f\0\0\x01", 20, now).is_ok())
            .count();
        assert_eq!(admitted, 40, "burst = 2 x rate");
        // One interval (50 ms) later, exactly one more.
        let later = now + S / 20;
        assert!(t.check_at(Scope::Ip, b"\x7f\0\0\x01", 20, later).is_ok());
        let wait = t
            .check_at(Scope::Ip, b"\x7f\0\0\x01", 20, later)
            .unwrap_err();
        assert_eq!(wait, Duration::from_nanos(S / 20));
        assert_eq!(retry_after_secs(wait), 1);
        // Over 10 s of steady traffic: 20 per second.
        let mut n = 0;
        for ms in 0..10_000u64 {
            let at = later + ms * 1_000_000;
            n += (0..5)
                .filter(|_| t.check_at(Scope::Ip, b"\x7f\0\0\x01", 20, at).is_ok())
                .count();
        }
        assert!((199..=201).contains(&n), "{n} in 10 s at 20/s");
    }

    #[test]
    fn scopes_and_keys_are_separate() {
        let t = RateTable::new();
        let now = 10 * S;
        for _ in 0..2 {
            assert!(t.check_at(Scope::User, b"alice", 1, now).is_ok());
        }
        assert!(t.check_at(Scope::User, b"alice", 1, now).is_err());
        assert!(t.check_at(Scope::User, b"bob", 1, now).is_ok());
        assert!(t.check_at(Scope::Bucket, b"alice", 1, now).is_ok());
        assert!(t.check(Scope::Global, b"", 0).is_ok(), "rate 0 is off");
    }

    #[test]
    fn a_flood_of_new_keys_does_not_free_a_limited_client() {
        let t = RateTable::new();
        let now = 10 * S;
        let abuser = b"\x0a\0\0\x01";
        while t.check_at(Scope::Ip, abuser, 10, now).is_ok() {}
        // A million distinct addresses, each one request, at the same instant.
        for i in 0u32..1_000_000 {
            let _ = t.check_at(Scope::Ip, &i.to_be_bytes(), 10, now);
        }
        assert!(
            t.check_at(Scope::Ip, abuser, 10, now).is_err(),
            "the limited client's cell survived the flood"
        );
    }

    #[test]
    fn threads_sharing_a_key_share_its_limit() {
        let t = std::sync::Arc::new(RateTable::new());
        let now = 10 * S;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| t.check_at(Scope::Global, b"", 100, now).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().expect("join")).sum();
        assert_eq!(total, 200, "exactly the burst, across threads");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
