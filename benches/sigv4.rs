//! Criterion benches of the SigV4 hot path in `yatagarasu::s3`: signing a GET with the day's
//! cached key (what every cache miss pays), deriving a signing key (what the first request of a
//! UTC day pays), and encoding the awkward keys that SigV4 proxies get wrong.
//!
//! Before Criterion runs, each operation's allocations are counted (`benches/support/alloc.rs`)
//! and printed as `alloc/op <bench>: <n>`; a count above its bound fails the run, also under
//! `cargo bench -- --test`.
//!
//! Not shipped code. Run: `cargo bench --bench sigv4 -- --warm-up-time 1 --measurement-time 2`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, Criterion, Throughput};
use yatagarasu::s3::addressing::{object_target, Addressing};
use yatagarasu::s3::sigv4::{derive_signing_key, Credentials, Signer};
use yatagarasu::s3::uri::{canonical_query, encode_key_path};

#[path = "support/alloc.rs"]
mod alloc;

const AWKWARD_KEYS: [&str; 10] = [
    "a+b.txt",
    "space key.txt",
    "paren(1).txt",
    "quote'.txt",
    "bang!star*.txt",
    "tilde~eq=amp&dollar$at@.txt",
    "unicode-日本語-ß.txt",
    "dir/nested/deep.txt",
    "literal%2Fpercent.txt",
    "colon:semi;comma,.txt",
];

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_768_465_800) // 2026-01-15T08:30:00Z
}

fn signer(session_token: Option<&str>) -> Signer {
    Signer::new(
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".to_owned(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
            session_token: session_token.map(str::to_owned),
        },
        "us-east-1",
    )
}

/// Sign a plain GET of a percent-encoded key with the day's cached signing key.
fn sign_get(signer: &Signer, t: SystemTime) -> impl Sized {
    signer.sign(
        black_box("GET"),
        black_box("127.0.0.1:7480"),
        black_box("/test-bucket/dir/a%2Bb.txt"),
        black_box(""),
        black_box(&[]),
        black_box(t),
    )
}

/// Sign a Range GET with a session token (one more signed header, one more header line).
fn sign_range_token(signer: &Signer, t: SystemTime) -> impl Sized {
    signer.sign(
        black_box("GET"),
        black_box("127.0.0.1:7480"),
        black_box("/test-bucket/dir/a%2Bb.txt"),
        black_box(""),
        black_box(&[("range", "bytes=0-1048575")]),
        black_box(t),
    )
}

/// What a cache miss does end to end: S3 host and URI for the key, canonical query, signature.
fn target_query_and_sign(signer: &Signer, t: SystemTime) -> impl Sized {
    let (host, uri) = object_target(
        Addressing::Path,
        black_box("127.0.0.1"),
        7480,
        true,
        black_box("test-bucket"),
        black_box("dir/unicode-日本語-ß (1).txt".as_bytes()),
    );
    let query = canonical_query(black_box(&[]));
    signer.sign("GET", &host, &uri, &query, &[], t)
}

fn derive() -> impl Sized {
    derive_signing_key(
        black_box("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        black_box("20260115"),
        black_box("us-east-1"),
        black_box("s3"),
    )
}

/// Encode every awkward key into one reused `String`.
fn encode_awkward(out: &mut String) {
    for key in AWKWARD_KEYS {
        out.clear();
        encode_key_path(black_box(key.as_bytes()), out);
        black_box(&*out);
    }
}

/// Allocation counts per operation, with their bounds (today's counts; see the module docs).
fn allocation_bounds() {
    const N: u64 = 1000;
    let plain = signer(None);
    let with_token = signer(Some("FwoGZXIvYXdzEJr//////////wEaDOPZexample"));
    let t = now();
    alloc::expect_at_most("sigv4_sign/get_cached_key", BOUND_SIGN, N, || {
        sign_get(&plain, t)
    });
    alloc::expect_at_most(
        "sigv4_sign/get_range_token_cached_key",
        BOUND_SIGN_RANGE_TOKEN,
        N,
        || sign_range_token(&with_token, t),
    );
    alloc::expect_at_most(
        "sigv4_sign/target_query_and_sign",
        BOUND_TARGET_QUERY_SIGN,
        N,
        || target_query_and_sign(&plain, t),
    );
    alloc::expect_at_most("sigv4_derive_signing_key", BOUND_DERIVE, N, derive);
    let mut out = String::new();
    // The warm-up call grows the buffer; later calls reuse it.
    alloc::expect_at_most("encode_key_path/awkward_keys", 0.0, N, || {
        encode_awkward(&mut out)
    });
}

// Bounds: the counts measured when they were written. A signature returns its header values as
// owned strings (Authorization, X-Amz-Date, and the session token when there is one); the full
// miss adds the S3 host and URI strings, and the URI grows once (its capacity guess, 1.5 times
// the key, is short for this key, whose unicode and punctuation encode to 3 bytes per byte);
// deriving a key allocates the "AWS4" + secret input of the first HMAC.
const BOUND_SIGN: f64 = 2.0;
const BOUND_SIGN_RANGE_TOKEN: f64 = 3.0;
const BOUND_TARGET_QUERY_SIGN: f64 = 5.0;
const BOUND_DERIVE: f64 = 1.0;

fn bench_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sigv4_sign");
    let plain = signer(None);
    let with_token = signer(Some("FwoGZXIvYXdzEJr//////////wEaDOPZexample"));
    let t = now();
    // Warm the per-day key cache so the loop measures the steady state.
    black_box(plain.sign("GET", "h", "/", "", &[], t));
    black_box(with_token.sign("GET", "h", "/", "", &[], t));

    group.bench_function("get_cached_key", |b| b.iter(|| sign_get(&plain, t)));
    group.bench_function("get_range_token_cached_key", |b| {
        b.iter(|| sign_range_token(&with_token, t))
    });
    group.bench_function("target_query_and_sign", |b| {
        b.iter(|| target_query_and_sign(&plain, t))
    });
    group.finish();
}

fn bench_derive(c: &mut Criterion) {
    c.bench_function("sigv4_derive_signing_key", |b| b.iter(derive));
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_key_path");
    let total: usize = AWKWARD_KEYS.iter().map(|k| k.len()).sum();
    group.throughput(Throughput::Bytes(total as u64));
    let mut out = String::with_capacity(total * 3);
    group.bench_function("awkward_keys", |b| b.iter(|| encode_awkward(&mut out)));
    group.finish();
}

criterion_group!(benches, bench_sign, bench_derive, bench_encode);

fn main() {
    allocation_bounds();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
