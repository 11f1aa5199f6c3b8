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
//!
//! The hit path with limits configured but not exceeded against none is an end-to-end question
//! (`perf/cache-hit.sh` with `max_concurrent_requests` and lists set); these are the parts.
//!
//! Not shipped. Run: `cargo bench --bench limits` (about 30 s). Under `--test` (`cargo bench --
//! --test`, CI) Criterion runs each benchmark once.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput};
use yatagarasu::config::BreakerConfig;
use yatagarasu::pipeline::limit::admits;
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

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_ip_lists(&mut c);
    bench_breaker(&mut c);
    bench_budget(&mut c);
    c.final_summary();
}
