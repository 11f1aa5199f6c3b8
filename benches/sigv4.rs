//! Criterion benches of the SigV4 hot path in `yatagarasu::s3`: signing a GET with the day's
//! cached key (what every cache miss pays), deriving a signing key (what the first request of a
//! UTC day pays), and encoding the awkward keys that SigV4 proxies get wrong.
//!
//! Not shipped code. Run: `cargo bench --bench sigv4 -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use yatagarasu::s3::addressing::{object_target, Addressing};
use yatagarasu::s3::sigv4::{derive_signing_key, Credentials, Signer};
use yatagarasu::s3::uri::{canonical_query, encode_key_path};

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

fn bench_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sigv4_sign");
    let plain = signer(None);
    let with_token = signer(Some("FwoGZXIvYXdzEJr//////////wEaDOPZexample"));
    let t = now();
    // Warm the per-day key cache so the loop measures the steady state.
    black_box(plain.sign("GET", "h", "/", "", &[], t));
    black_box(with_token.sign("GET", "h", "/", "", &[], t));

    group.bench_function("get_cached_key", |b| {
        b.iter(|| {
            plain.sign(
                black_box("GET"),
                black_box("127.0.0.1:7480"),
                black_box("/test-bucket/dir/a%2Bb.txt"),
                black_box(""),
                black_box(&[]),
                black_box(t),
            )
        })
    });
    group.bench_function("get_range_token_cached_key", |b| {
        b.iter(|| {
            with_token.sign(
                black_box("GET"),
                black_box("127.0.0.1:7480"),
                black_box("/test-bucket/dir/a%2Bb.txt"),
                black_box(""),
                black_box(&[("range", "bytes=0-1048575")]),
                black_box(t),
            )
        })
    });
    group.bench_function("target_query_and_sign", |b| {
        b.iter(|| {
            let (host, uri) = object_target(
                Addressing::Path,
                black_box("127.0.0.1"),
                7480,
                true,
                black_box("test-bucket"),
                black_box("dir/unicode-日本語-ß (1).txt".as_bytes()),
            );
            let query = canonical_query(black_box(&[]));
            plain.sign("GET", &host, &uri, &query, &[], t)
        })
    });
    group.finish();
}

fn bench_derive(c: &mut Criterion) {
    c.bench_function("sigv4_derive_signing_key", |b| {
        b.iter(|| {
            derive_signing_key(
                black_box("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                black_box("20260115"),
                black_box("us-east-1"),
                black_box("s3"),
            )
        })
    });
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_key_path");
    let total: usize = AWKWARD_KEYS.iter().map(|k| k.len()).sum();
    group.throughput(Throughput::Bytes(total as u64));
    let mut out = String::with_capacity(total * 3);
    group.bench_function("awkward_keys", |b| {
        b.iter(|| {
            for key in AWKWARD_KEYS {
                out.clear();
                encode_key_path(black_box(key.as_bytes()), &mut out);
                black_box(&out);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_sign, bench_derive, bench_encode);
criterion_main!(benches);
