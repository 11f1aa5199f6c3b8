//! Benchmarks of `Router::route`, the per-request bucket lookup, over 10, 100 and 1000
//! buckets: a hit on a two-segment prefix with a deep key, a miss that falls to the catch-all,
//! and a miss with no catch-all. The cost should stay flat as the bucket count grows.
//!
//! Before Criterion runs, each lookup's allocations are counted (`benches/support/alloc.rs`)
//! and printed as `alloc/op <bench>: <n>`; a lookup borrows the path and must not allocate, so
//! any allocation fails the run, also under `cargo bench -- --test`.
//!
//! Not shipped code. Run: `cargo bench --bench router -- --warm-up-time 1 --measurement-time 2`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;

use criterion::{criterion_group, BenchmarkId, Criterion};
use yatagarasu::router::Router;

#[path = "support/alloc.rs"]
mod alloc;

fn build(buckets: usize, catch_all: bool) -> Router {
    let mut prefixes: Vec<(String, usize)> = (0..buckets)
        .map(|i| {
            // A mix of one- and two-segment prefixes, as real configs have.
            let p = if i % 2 == 0 {
                format!("/tenant-{i}/assets")
            } else {
                format!("/bucket-{i}")
            };
            (p, i)
        })
        .collect();
    if catch_all {
        prefixes.push(("/".to_string(), buckets));
    }
    Router::new(prefixes)
}

/// Allocation counts per lookup at 1000 buckets: all must be 0.
fn allocation_bounds() {
    const N: u64 = 1000;
    let n = 1000;
    let router = build(n, false);
    let with_catch_all = build(n, true);
    let hit = format!("/tenant-{}/assets/img/2024/11/photo-0001.jpg", (n / 2) & !1);
    let short = format!("/bucket-{}/k.txt", n - 1);
    let miss = "/unmapped/a/b/c/d/e/file.bin";
    assert!(router.route(&hit).is_some() && router.route(&short).is_some());
    for (name, r, path) in [
        ("hit_deep_key", &router, hit.as_str()),
        ("hit_short", &router, &short),
        ("miss", &router, miss),
        ("catch_all", &with_catch_all, miss),
    ] {
        alloc::expect_at_most(&format!("route/{name}/{n}"), 0.0, N, || {
            r.route(black_box(path)).map(|(b, _)| b)
        });
    }
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for n in [10usize, 100, 1000] {
        let router = build(n, false);
        // Even indices are the two-segment "/tenant-{i}/assets" prefixes.
        let tenant = (n / 2) & !1;
        let hit = format!("/tenant-{tenant}/assets/img/2024/11/photo-0001.jpg");
        assert_eq!(router.route(&hit).map(|(b, _)| b), Some(tenant));
        g.bench_with_input(BenchmarkId::new("hit_deep_key", n), &hit, |b, p| {
            b.iter(|| router.route(black_box(p)))
        });
        let short = format!("/bucket-{}/k.txt", n - 1);
        assert_eq!(router.route(&short).map(|(b, _)| b), Some(n - 1));
        g.bench_with_input(BenchmarkId::new("hit_short", n), &short, |b, p| {
            b.iter(|| router.route(black_box(p)))
        });
        let miss = "/unmapped/a/b/c/d/e/file.bin".to_string();
        assert!(router.route(&miss).is_none());
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, p| {
            b.iter(|| router.route(black_box(p)))
        });
        let with_catch_all = build(n, true);
        g.bench_with_input(BenchmarkId::new("catch_all", n), &miss, |b, p| {
            b.iter(|| with_catch_all.route(black_box(p)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_route);

fn main() {
    allocation_bounds();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
