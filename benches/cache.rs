//! Memory-shard benchmarks: `MemoryShard::get` and `MemoryShard::insert` at 1 KiB, 100 KiB and
//! 1 MiB bodies (Criterion), the hit ratio of a Zipf(s = 1.0) workload over 100k keys against
//! shards holding 1%, 10% and 30% of the working set, and allocations per operation counted by
//! the shared counting allocator (`benches/support/alloc.rs`).
//!
//! Not shipped; measures the hot path of every cache hit. Run:
//! `cargo bench --bench cache -- --warm-up-time 1 --measurement-time 2`.
//! The hit-ratio and allocation reports print first (deterministic: seeded xorshift64*). Under
//! `cargo test` (no `--bench` argument) the workloads shrink tenfold and Criterion runs each
//! benchmark once.
//!
//! Bodies in one benchmark share one buffer (`Bytes` clones), so a shard "holding" 64 MiB of
//! 1 MiB entries costs 1 MiB of RAM: the shard weighs by length, and get/insert never touch the
//! body bytes, so the timings are those of real entries.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use yatagarasu::cache::{CacheKey, CachedObject, MemoryShard};

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/zipf.rs"]
mod zipf;

use zipf::{XorShift, Zipf};

const KIB: usize = 1024;
const SIZES: [(&str, usize); 3] = [("1KiB", KIB), ("100KiB", 100 * KIB), ("1MiB", 1024 * KIB)];

/// S3-like response headers of a cached object.
fn s3_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/octet-stream"),
        ("etag", "\"9b2cf535f27731c974343645a3985328\""),
        ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("accept-ranges", "bytes"),
        ("x-amz-meta-owner", "yatagarasu"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// A fresh entry whose body is `body` (a shared buffer).
fn entry(body: &Bytes, headers: &HeaderMap) -> Arc<CachedObject> {
    Arc::new(CachedObject::from_response(
        body.clone(),
        headers,
        SystemTime::now(),
        Duration::from_secs(3600),
    ))
}

fn key(i: usize) -> CacheKey {
    CacheKey::new("bench", format!("objects/{i:08}.bin").as_bytes(), None)
}

/// Shard capacity for the speed benchmarks: 64 entries of the largest size.
const SPEED_CAPACITY: u64 = 64 * 1024 * 1024 + 64 * 4096;

fn bench_get(c: &mut Criterion) {
    let headers = s3_headers();
    let mut g = c.benchmark_group("shard_get");
    for (name, size) in SIZES {
        let body = Bytes::from(vec![0u8; size]);
        let shard = MemoryShard::new(SPEED_CAPACITY);
        let n = 48; // fits at every size
        let keys: Vec<CacheKey> = (0..n).map(key).collect();
        for k in &keys {
            assert!(shard.insert(k.clone(), entry(&body, &headers)));
        }
        g.throughput(Throughput::Elements(1));
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(shard.get(black_box(&keys[i])))
            })
        });
    }
    g.finish();
}

fn bench_insert(c: &mut Criterion) {
    let headers = s3_headers();
    let mut g = c.benchmark_group("shard_insert");
    for (name, size) in SIZES {
        let body = Bytes::from(vec![0u8; size]);
        // Fill first, so the measured inserts run in steady state (each evicts).
        let (shard, mut next) = full_shard(&body, &headers);
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    next += 1;
                    (key(next), entry(&body, &headers))
                },
                |(k, o)| shard.insert(k, o),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Hit ratio of a shard sized to `fraction` of the working set under Zipf(1.0) over 100k keys
/// of 1 KiB: every miss inserts. Returns (hit ratio, entries held at the end, ideal ratio).
fn hit_ratio(fraction: f64, requests: usize) -> (f64, usize, f64) {
    const KEYS: usize = 100_000;
    let headers = s3_headers();
    let body = Bytes::from(vec![0u8; KIB]);
    let keys: Vec<CacheKey> = (0..KEYS).map(key).collect();
    let per_entry = keys[0].weight() + entry(&body, &headers).weight();
    let working_set = per_entry * KEYS as u64;
    let shard = MemoryShard::new((working_set as f64 * fraction) as u64);
    let zipf = Zipf::new(KEYS, 1.0);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut hits = 0usize;
    for _ in 0..requests {
        let k = &keys[zipf.sample(&mut rng)];
        if shard.get(k).is_some() {
            hits += 1;
        } else {
            shard.insert(k.clone(), entry(&body, &headers));
        }
    }
    let ideal = zipf.top_mass((KEYS as f64 * fraction) as usize);
    (hits as f64 / requests as f64, shard.len(), ideal)
}

fn report_hit_ratios(requests: usize) {
    println!("hit ratio: Zipf(s=1.0), 100000 keys of 1 KiB, {requests} requests, insert on miss");
    for fraction in [0.01, 0.10, 0.30] {
        let (ratio, held, ideal) = hit_ratio(fraction, requests);
        println!(
            "  capacity {:>3.0}% of working set: hit ratio {ratio:.4} ({held} entries held; \
             ideal static top-N {ideal:.4})",
            fraction * 100.0
        );
    }
}

/// Allocations per operation, measured over `n` operations in steady state.
fn report_allocations(n: usize) {
    println!("allocations per operation (counting global allocator, {n} ops each):");
    let headers = s3_headers();
    for (name, size) in SIZES {
        let body = Bytes::from(vec![0u8; size]);
        let (shard, next) = full_shard(&body, &headers);
        let held: Vec<CacheKey> = (next - 16..next).map(key).collect();
        let mut i = 0;
        let get = alloc::per_op(n as u64, || {
            i += 1;
            shard.get(&held[i % held.len()])
        });
        // Built before counting: one entry for the warm-up call, then `n` counted inserts.
        let batch: Vec<(CacheKey, Arc<CachedObject>)> = (0..=n)
            .map(|i| (key(next + 1 + i), entry(&body, &headers)))
            .collect();
        let mut batch = batch.into_iter();
        let insert = alloc::per_op(n as u64, || {
            let (k, o) = batch.next().expect("one entry per insert");
            shard.insert(k, o)
        });
        println!("  {name:>6}: get {get:.2}, insert {insert:.2} (steady state, evicting)");
    }
    let mut i = 0;
    // `key` formats the name (1 String) and CacheKey::new copies it (1 boxed slice).
    let per_key = alloc::per_op(n as u64, || {
        i += 1;
        key(i)
    });
    let body = Bytes::from_static(b"x");
    let per_entry = alloc::per_op(n as u64, || entry(&body, &headers));
    println!(
        "  bench key() {per_key:.2} (format + CacheKey::new), \
         entry() {per_entry:.2} (from_response + Rc)"
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 10 };
    report_hit_ratios(1_000_000 / scale);
    report_allocations(10_000 / scale);
    let mut c = Criterion::default().configure_from_args();
    bench_get(&mut c);
    bench_insert(&mut c);
    c.final_summary();
}

/// A shard filled with `body` entries until the first eviction, and the next unused key index.
fn full_shard(body: &Bytes, headers: &HeaderMap) -> (MemoryShard, usize) {
    let shard = MemoryShard::new(SPEED_CAPACITY);
    let mut next = 0;
    while evictions(&shard) == 0 {
        shard.insert(key(next), entry(body, headers));
        next += 1;
    }
    (shard, next)
}

/// Entries the shard evicted so far, over every bucket.
fn evictions(shard: &MemoryShard) -> u64 {
    shard
        .metrics()
        .buckets()
        .iter()
        .map(|(_, m)| m.cache_evictions.get())
        .sum()
}
