//! Benchmarks of the per-request HTTP/1.1 work on the hot path: `parse_request_head` on a
//! typical Chrome GET (609 bytes, 14 fields), on a curl GET whose field names are all standard,
//! and on an incomplete head (the re-parse after a short read); `parse_range` on the common
//! Range forms; and `ResponseHead` encoding of a cache hit's 200 and 206 heads (the field set
//! and order `pipeline::cached::serve` writes, `Date` from a `DateCache`) into a reused buffer.
//!
//! Before Criterion runs, each operation's allocations are counted (`benches/support/alloc.rs`)
//! and printed as `alloc/op <bench>: <n>`; a count above its bound fails the run, also under
//! `cargo bench -- --test`.
//!
//! Not shipped code; costs nothing at run time. Run:
//! `cargo bench --bench http_parse -- --warm-up-time 1 --measurement-time 2`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use yatagarasu::cache::CachedObject;
use yatagarasu::http::range::parse_range;
use yatagarasu::http::request::{parse_request_head, Limits, Version};
use yatagarasu::http::response::{DateCache, ResponseHead};
use yatagarasu::pipeline::headers::EdgePolicy;

#[path = "support/alloc.rs"]
mod alloc;

const LIMITS: Limits = Limits {
    max_uri_bytes: 8192,
    max_header_bytes: 16384,
    max_headers: 100,
    max_body_bytes: 1 << 20,
};

/// Headers Chrome 130 sends for a subresource fetch, in its order.
const CHROME_GET: &str = concat!(
    "GET /assets/images/hero-banner.webp?v=20241105 HTTP/1.1\r\n",
    "Host: cdn.example.com\r\n",
    "Connection: keep-alive\r\n",
    "sec-ch-ua-platform: \"Linux\"\r\n",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36\r\n",
    "sec-ch-ua: \"Chromium\";v=\"130\", \"Google Chrome\";v=\"130\", \"Not?A_Brand\";v=\"99\"\r\n",
    "sec-ch-ua-mobile: ?0\r\n",
    "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n",
    "Sec-Fetch-Site: same-site\r\n",
    "Sec-Fetch-Mode: no-cors\r\n",
    "Sec-Fetch-Dest: image\r\n",
    "Referer: https://www.example.com/\r\n",
    "Accept-Encoding: gzip, deflate, br, zstd\r\n",
    "Accept-Language: en-US,en;q=0.9\r\n",
    "\r\n"
);

/// A curl-like GET whose field names are all standard (no name allocation in `HeaderMap`).
const CURL_GET: &str = concat!(
    "GET /bucket/key/object.bin HTTP/1.1\r\n",
    "Host: s3-proxy.internal:8080\r\n",
    "User-Agent: curl/8.5.0\r\n",
    "Accept: */*\r\n",
    "Range: bytes=0-1048575\r\n",
    "\r\n"
);

const RANGES: [(&str, &[u8]); 4] = [
    ("from_to", b"bytes=0-1048575"),
    ("from", b"bytes=1048576-"),
    ("suffix", b"bytes=-500"),
    ("multi_rejected", b"bytes=0-99, 200-299"),
];

/// A cached 1 KiB object as `CachedObject::from_response` stores it from an S3 answer: the
/// stored representation fields, then `x-amz-meta-*`.
fn cached_object() -> CachedObject {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/octet-stream"),
        ("content-length", "1024"),
        ("etag", "\"0f343b0931126a20f133d67c2b018a3b\""),
        ("last-modified", "Thu, 19 Nov 2026 10:12:31 GMT"),
        ("accept-ranges", "bytes"),
        ("cache-control", "max-age=60"),
        (
            "x-amz-request-id",
            "tx00000a1b2c3d4e5f60718-0067f00000-1010-default",
        ),
        ("x-amz-meta-owner", "yatagarasu"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    CachedObject::from_response(
        Bytes::from(vec![0u8; 1024]),
        &h,
        SystemTime::now(),
        Duration::from_secs(3600),
    )
}

/// A generated request id (`X-Request-Id`, a v4 UUID).
const REQUEST_ID: &str = "3f2b8c1e-9d4a-4e6f-8b7c-2a1d0e9f8c7b";

/// The head of a cache hit, written as `pipeline::cached::serve` writes it for HTTP/1.1
/// keep-alive on a bucket without auth or CORS: `Date`, the stored fields in canonical casing,
/// `Content-Range` (206 only), `X-Cache` and `Cache-Status`, `Content-Length`, `Age` (only with the response's own
/// max-age), `X-Request-Id`. `range` is `(first, last)` for a 206.
fn encode_hit(buf: &mut Vec<u8>, dates: &DateCache, obj: &CachedObject, range: Option<(u64, u64)>) {
    let now = SystemTime::now();
    let len = obj.body.len() as u64;
    let policy = EdgePolicy::default();
    let mut h = ResponseHead::new(buf, if range.is_some() { 206 } else { 200 });
    h.header("Date", &dates.now());
    for (name, value) in &obj.headers {
        policy.field(&mut h, name.as_str(), value.as_bytes());
    }
    let (first, last) = range.unwrap_or((0, len - 1));
    if range.is_some() {
        h.content_range(first, last, len);
    }
    yatagarasu::pipeline::cached::outcome_fields(
        &mut h,
        yatagarasu::cache::CacheOutcome::Hit { tier: "memory" },
    );
    h.header_u64("Content-Length", last - first + 1);
    if obj.has_explicit_freshness() {
        h.header_u64("Age", obj.age(now).as_secs());
    }
    h.header("X-Request-Id", REQUEST_ID.as_bytes())
        .connection(Version::Http11, true);
    h.finish();
}

/// Allocation counts per operation, with their bounds (today's counts; see the module docs).
fn allocation_bounds() {
    const N: u64 = 1000;
    for (name, head, bound) in [
        ("chrome_get", CHROME_GET, BOUND_CHROME_GET),
        ("curl_get", CURL_GET, BOUND_CURL_GET),
    ] {
        alloc::expect_at_most(&format!("parse_request_head/{name}"), bound, N, || {
            parse_request_head(black_box(head.as_bytes()), &LIMITS)
        });
    }
    let partial = &CHROME_GET.as_bytes()[..CHROME_GET.len() - 40];
    alloc::expect_at_most(
        "parse_request_head/chrome_get_partial",
        BOUND_CHROME_GET_PARTIAL,
        N,
        || parse_request_head(black_box(partial), &LIMITS),
    );
    for (name, value) in RANGES {
        alloc::expect_at_most(&format!("parse_range/{name}"), 0.0, N, || {
            parse_range(black_box(value))
        });
    }
    let dates = DateCache::default();
    let obj = cached_object();
    let mut buf = Vec::new();
    alloc::expect_at_most("response_head/hit_200", 0.0, N, || {
        encode_hit(&mut buf, &dates, &obj, None)
    });
    alloc::expect_at_most("response_head/hit_206", BOUND_HIT_206, N, || {
        encode_hit(&mut buf, &dates, &obj, Some((0, 511)))
    });
}

// Bounds: the counts measured when they were written. A parsed head owns its target, a copy of
// the head bytes and the shared `Bytes` header its field values point into, and a `HeaderMap`
// (two allocations, plus one per field name outside the standard set: Chrome sends six); an
// incomplete head allocates nothing. Response heads (200 and 206) allocate nothing.
const BOUND_CHROME_GET: f64 = 11.0;
const BOUND_CURL_GET: f64 = 5.0;
const BOUND_CHROME_GET_PARTIAL: f64 = 0.0;
const BOUND_HIT_206: f64 = 0.0;

fn bench_request_head(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_request_head");
    for (name, head) in [("chrome_get", CHROME_GET), ("curl_get", CURL_GET)] {
        let buf = head.as_bytes();
        assert!(matches!(parse_request_head(buf, &LIMITS), Ok(Some((_, n))) if n == buf.len()));
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_request_head(black_box(buf), black_box(&LIMITS)))
        });
    }
    // Incomplete head: the cost of a re-parse after a short read.
    let partial = &CHROME_GET.as_bytes()[..CHROME_GET.len() - 40];
    g.throughput(Throughput::Bytes(partial.len() as u64));
    g.bench_function("chrome_get_partial", |b| {
        b.iter(|| parse_request_head(black_box(partial), black_box(&LIMITS)))
    });
    g.finish();
}

fn bench_range(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_range");
    for (name, value) in RANGES {
        g.bench_function(name, |b| b.iter(|| parse_range(black_box(value))));
    }
    g.finish();
}

fn bench_response_head(c: &mut Criterion) {
    let mut g = c.benchmark_group("response_head");
    let dates = DateCache::default();
    let obj = cached_object();
    let mut buf = Vec::with_capacity(1024);
    for (name, range) in [("hit_200", None), ("hit_206", Some((0, 511)))] {
        encode_hit(&mut buf, &dates, &obj, range);
        let status = if range.is_some() { "206" } else { "200" };
        assert!(buf.starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
        assert!(buf.ends_with(b"\r\nX-Request-Id: 3f2b8c1e-9d4a-4e6f-8b7c-2a1d0e9f8c7b\r\n\r\n"));
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| encode_hit(&mut buf, &dates, black_box(&obj), black_box(range)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_request_head,
    bench_range,
    bench_response_head
);

fn main() {
    allocation_bounds();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
