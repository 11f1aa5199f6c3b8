//! Redis tier benchmarks: the pure functions on the hot path of every Redis lookup and fill
//! (`src/cache/redis/value.rs`, `src/cache/redis/client.rs`), no Redis server involved:
//!
//! 1. **`value::encode`** of an S3-like entry (five pass-through headers) at 1 KiB and 100 KiB
//!    bodies: what a fill costs before its SET is queued (metadata serialisation, one copy of
//!    the body, one XXH3 pass). Throughput in bytes of the encoded value.
//! 2. **`value::decode`** of that value: what a Redis hit costs once the reply is in (magic and
//!    length checks, the XXH3-64 pass over the whole value, the metadata decode and the key
//!    check; the body is a slice of the reply, not a copy). Throughput in bytes of the value.
//!    Next to it, a bare `xxh3_64` over the same bytes, so the share of the checksum shows.
//! 3. **`value::redis_key`** (one key of a typical length, with and without a version id) and
//!    **`client::slot_of`** (CRC16 of that key, and of a key with a `{hash tag}`), per call.
//!
//! Before the timings it prints the allocations per call of encode and decode (the shared
//! counting allocator, `benches/support/alloc.rs`; report only, no bound), so the timings are
//! those of glibc malloc, not of the proxy's mimalloc.
//!
//! Not shipped, not a hot path itself. Run: `cargo bench --bench redis` (about a minute), or
//! `cargo bench --bench redis -- --warm-up-time 1 --measurement-time 2`. Under `--test`
//! (`cargo bench -- --test`, CI) Criterion runs each benchmark once.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http::{header, HeaderValue};
use yatagarasu::cache::redis::client::slot_of;
use yatagarasu::cache::redis::value::{decode, encode, redis_key};
use yatagarasu::cache::{CacheKey, CacheKeyRef, CachedObject};

#[path = "support/alloc.rs"]
mod alloc;

const KIB: usize = 1024;
const SIZES: [(&str, usize); 2] = [("1KiB", KIB), ("100KiB", 100 * KIB)];
/// The key prefix of the perf script's config (`cache.redis.key_prefix`).
const PREFIX: &str = "bench:";

/// An S3-like entry of `len` body bytes (deterministic, not all one byte).
fn object(len: usize) -> CachedObject {
    let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (
            header::ETAG,
            HeaderValue::from_static("\"9b2cf535f27731c974343645a3985328\""),
        ),
        (
            header::LAST_MODIFIED,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (
            http::HeaderName::from_static("x-amz-meta-owner"),
            HeaderValue::from_static("yatagarasu"),
        ),
    ];
    CachedObject::new(
        Bytes::from(body),
        headers,
        SystemTime::now(),
        Duration::from_secs(3600),
    )
}

fn key() -> CacheKey {
    CacheKey::new("media", b"objects/2026/12/00000042.bin", None)
}

/// [`key`] with a version id of S3's usual length (32 characters).
fn versioned_key() -> CacheKey {
    CacheKey::new(
        "media",
        b"objects/2026/12/00000042.bin",
        Some("3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrH"),
    )
}

fn report_allocations(n: u64) {
    println!("allocations per call (counting global allocator, {n} calls each):");
    let k = key();
    for (name, size) in SIZES {
        let obj = object(size);
        let v = Bytes::from(encode(&k, &obj));
        let enc = alloc::per_op(n, || encode(&k, &obj));
        let dec = alloc::per_op(n, || decode(v.clone(), &k.as_ref_key()).is_ok());
        println!(
            "  {name:>6}: encode {enc:.2}, decode {dec:.2} (value {} bytes, {} of them before the body)",
            v.len(),
            v.len() - size
        );
    }
    let rk = alloc::per_op(n, || redis_key(PREFIX, &k.as_ref_key()));
    let v = versioned_key();
    let rv = alloc::per_op(n, || redis_key(PREFIX, &v.as_ref_key()));
    println!("  redis_key: plain {rk:.2}, versioned {rv:.2}");
}

fn bench_value(c: &mut Criterion) {
    let k = key();
    let mut g = c.benchmark_group("redis_value_encode");
    for (name, size) in SIZES {
        let obj = object(size);
        let len = encode(&k, &obj).len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| b.iter(|| encode(black_box(&k), black_box(&obj))));
    }
    g.finish();

    let mut g = c.benchmark_group("redis_value_decode");
    for (name, size) in SIZES {
        let v = Bytes::from(encode(&k, &object(size)));
        assert!(decode(v.clone(), &k.as_ref_key()).is_ok(), "{name} decodes");
        g.throughput(Throughput::Bytes(v.len() as u64));
        let kr = k.as_ref_key();
        g.bench_function(name, |b| {
            b.iter(|| decode(black_box(v.clone()), black_box(&kr)))
        });
    }
    g.finish();

    // The checksum alone, over the same bytes: the floor of decode.
    let mut g = c.benchmark_group("redis_value_xxh3_64");
    for (name, size) in SIZES {
        let v = encode(&k, &object(size));
        g.throughput(Throughput::Bytes(v.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&v)))
        });
    }
    g.finish();
}

fn bench_keys(c: &mut Criterion) {
    let plain = key();
    let versioned = versioned_key();
    let mut g = c.benchmark_group("redis_key");
    g.throughput(Throughput::Elements(1));
    for (name, k) in [("plain", &plain), ("versioned", &versioned)] {
        let kr: CacheKeyRef<'_> = k.as_ref_key();
        g.bench_function(name, |b| {
            b.iter(|| redis_key(black_box(PREFIX), black_box(&kr)))
        });
    }
    g.finish();

    let rk = redis_key(PREFIX, &plain.as_ref_key());
    let tagged = b"bench:{media}:objects/2026/12/00000042.bin".to_vec();
    let mut g = c.benchmark_group("redis_slot_of");
    g.throughput(Throughput::Elements(1));
    for (name, k) in [("plain", &rk), ("hash_tag", &tagged)] {
        g.bench_function(name, |b| b.iter(|| slot_of(black_box(k))));
    }
    g.finish();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test");
    report_allocations(if full { 10_000 } else { 100 });
    let mut c = Criterion::default().configure_from_args();
    bench_value(&mut c);
    bench_keys(&mut c);
    c.final_summary();
}
