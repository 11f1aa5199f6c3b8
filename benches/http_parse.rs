//! Benchmarks of the per-request HTTP parsing on the hot path: `parse_request_head` on a
//! typical Chrome GET (609 bytes, 14 fields), on a curl GET whose field names are all standard,
//! and on an incomplete head (the re-parse after a short read); `parse_range` on the common
//! Range forms.
//!
//! Run: `cargo bench --bench http_parse -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use yatagarasu::http::range::parse_range;
use yatagarasu::http::request::{parse_request_head, Limits};

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
    for (name, value) in [
        ("from_to", &b"bytes=0-1048575"[..]),
        ("from", b"bytes=1048576-"),
        ("suffix", b"bytes=-500"),
        ("multi_rejected", b"bytes=0-99, 200-299"),
    ] {
        g.bench_function(name, |b| b.iter(|| parse_range(black_box(value))));
    }
    g.finish();
}

criterion_group!(benches, bench_request_head, bench_range);
criterion_main!(benches);
