//! What the limit and resilience checks cost per request, no network involved:
//!
//! 1. **IP lists** (`pipeline::limit::admits`): an address against empty lists (the default:
//!    what every request pays), against 16-entry allow and block lists that do not match
//!    (the worst case: every network tested), and an IPv6 address against mixed lists.
//! 2. **Circuit breaker** (`upstream::breaker::Breaker`): one `allow` plus one `record` of a
//!    success on a closed breaker (every S3 attempt), and an `allow` on an open one (every
//!    request refused while the backend is down).
//! 3. **Retry budget** (`upstream::retry::RetryBudget`): `request` (every S3 request) and a
//!    refused `try_retry` (a spent budget).
//! 4. **Rate-limit table** (`ratelimit::RateTable`, `server.rate_limit` and bucket `rate_limit`):
//!    `check` of one IPv4 key at a rate it never reaches (what every admitted request pays per
//!    limit set) and the same through `check_at` (without reading the clock), of a new key each
//!    time (a flood of distinct addresses: 1 Mi keys cycled through a table of 64 Ki cells, so
//!    each check misses and replaces a cell), of a spent key (rate 1: a refusal), and of one key
//!    while a second thread checks the same key in a loop (two cores contending on one cell;
//!    `iter_custom` times the foreground thread only).
//!
//! The hit path with limits configured but not exceeded against none is an end-to-end question
//! (`perf/limits-overhead.sh`: lists, rates and `max_concurrent_requests` set); these are the
//! parts.
//!
//! Not shipped. Run: `cargo bench --bench limits` (about 2 min; `-- rate` for group 4 only,
//! about 1 min). Under `--test` (`cargo bench -- --test`, CI) Criterion runs each benchmark once.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use yatagarasu::config::BreakerConfig;
use yatagarasu::pipeline::limit::admits;
use yatagarasu::ratelimit::{RateTable, Scope};
use yatagarasu::upstream::breaker::Breaker;
use yatagarasu::upstream::retry::RetryBudget;

fn nets(prefix: &str, n: usize) -> Vec<ipnet::IpNet> {
    (0..n)
        .map(|i| format!("{prefix}.{i}.0.0/16").parse().expect("cidr"))
        .collect()
}

fn bench_ip_lists(c: &mut Criterion) {
    let v4: IpAddr = "192.0.2.77".parse().expect("ip");
    let v6: IpAddr = "2001:db8:1::77".parse().expect("ip");
    let allow = nets("10", 16);
    let block = nets("172", 16);
    let mut mixed = nets("10", 8);
    mixed.extend((0..8).map(|i| {
        format!("2001:db8:{}::/48", i + 100)
            .parse::<ipnet::IpNet>()
            .expect("cidr")
    }));
    let mut g = c.benchmark_group("ip_lists");
    g.throughput(Throughput::Elements(1));
    g.bench_function("empty", |b| b.iter(|| admits(black_box(v4), &[], &[])));
    g.bench_function("16_allow_16_block_no_match", |b| {
        b.iter(|| admits(black_box(v4), black_box(&allow), black_box(&block)))
    });
    g.bench_function("ipv6_16_mixed_block", |b| {
        b.iter(|| admits(black_box(v6), &[], black_box(&mixed)))
    });
    g.finish();
}

fn bench_breaker(c: &mut Criterion) {
    let cfg = BreakerConfig {
        failure_threshold: 5,
        open_ms: 10_000,
    };
    let mut g = c.benchmark_group("breaker");
    g.throughput(Throughput::Elements(1));
    let closed = Breaker::default();
    g.bench_function("closed_allow_and_record", |b| {
        b.iter(|| {
            let ok = closed.allow().is_ok();
            closed.record(black_box(false), &cfg);
            ok
        })
    });
    let open = Breaker::default();
    for _ in 0..5 {
        open.record(true, &cfg);
    }
    g.bench_function("open_refuse", |b| {
        b.iter(|| black_box(&open).allow().is_err())
    });
    g.finish();
}

fn bench_budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_budget");
    g.throughput(Throughput::Elements(1));
    let budget = RetryBudget::default();
    g.bench_function("request", |b| b.iter(|| black_box(&budget).request()));
    let spent = RetryBudget::default();
    while spent.try_retry() {}
    g.bench_function("try_retry_spent", |b| {
        b.iter(|| black_box(&spent).try_retry())
    });
    g.finish();
}

/// A rate no benchmark reaches: emission interval 1 ns, burst 2 s worth, while a check costs
/// tens of ns, so every check is admitted.
const HUGE_RPS: u64 = 1_000_000_000;

fn bench_rate_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_table");
    g.throughput(Throughput::Elements(1));
    let table = RateTable::new();
    let ip = [192, 0, 2, 77];
    g.bench_function("check_ipv4_admitted", |b| {
        b.iter(|| {
            table
                .check(Scope::Ip, black_box(&ip), black_box(HUGE_RPS))
                .is_ok()
        })
    });
    // The same without reading the clock (`check` adds one `Instant::elapsed`): the table's own
    // share. Time advances 1 us per check, so the key is never refused (its own table: the
    // real clock of `check` above is not this one).
    let driven = RateTable::new();
    let mut now = 1_000_000_000u64;
    g.bench_function("check_at_ipv4_admitted", |b| {
        b.iter(|| {
            now += 1_000;
            driven
                .check_at(
                    Scope::Ip,
                    black_box(&ip),
                    black_box(HUGE_RPS),
                    black_box(now),
                )
                .is_ok()
        })
    });
    // 2^20 distinct addresses (10.0.0.0/12) against 16 Ki sets x 4 ways: about 64 keys per set
    // between two visits of the same key, so it has always been replaced (a miss, a victim
    // search and an insert). A realistic per-IP rate (100/s): every cell stays busy, so the
    // victim is chosen by `tat`, not taken idle.
    let flood = RateTable::new();
    let mut i = 0u32;
    g.bench_function("check_flood_1m_distinct_ipv4", |b| {
        b.iter(|| {
            i = (i + 1) & ((1 << 20) - 1);
            let key = (0x0a00_0000 | i).to_be_bytes();
            flood
                .check(Scope::Ip, black_box(&key), black_box(100))
                .is_ok()
        })
    });
    // Rate 1, burst 2: spent after two; it refills one request per second, so about one check
    // in 10^7 is admitted (and spends it again) while this runs.
    let spent = RateTable::new();
    while spent.check(Scope::Ip, &ip, 1).is_ok() {}
    g.bench_function("check_refused", |b| {
        b.iter(|| {
            spent
                .check(Scope::Ip, black_box(&ip), black_box(1))
                .is_err()
        })
    });
    // Two threads on one key: a background thread checks the same key in a loop while the
    // foreground's iterations are timed (the background's are not counted).
    let shared = RateTable::new();
    g.bench_function("check_same_ipv4_2_threads", |b| {
        b.iter_custom(|iters| contended(&shared, &ip, iters))
    });
    g.finish();
}

/// Time `iters` checks of `key` on this thread while another thread checks the same key until
/// they are done.
fn contended(table: &RateTable, key: &[u8], iters: u64) -> Duration {
    let started = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            started.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                black_box(table.check(Scope::Ip, black_box(key), HUGE_RPS).is_ok());
            }
        });
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let t0 = Instant::now();
        for _ in 0..iters {
            black_box(
                table
                    .check(Scope::Ip, black_box(key), black_box(HUGE_RPS))
                    .is_ok(),
            );
        }
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        elapsed
    })
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_ip_lists(&mut c);
    bench_breaker(&mut c);
    bench_budget(&mut c);
    bench_rate_table(&mut c);
    c.final_summary();
}
