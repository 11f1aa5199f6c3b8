//! End-to-end tests of the core proxy (issue: GET/HEAD to real S3): the real binary in front of a
//! real Ceph RGW, over real sockets. `tests/support/run-tests.sh` runs this file with 1 and 2
//! shards and with the io_uring and epoll drivers.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

fn standard() -> Proxy {
    Proxy::start(&config("", ""))
}

#[test]
fn get_every_small_object_byte_exact() {
    let b = backend();
    let proxy = standard();
    let mut client = proxy.client();
    let mut checked = 0;
    for o in b
        .objects
        .iter()
        .filter(|o| o.bucket == "yata-public" && o.size < 1 << 20)
    {
        let resp = client.request("GET", &format!("/public/{}", encode_key(&o.key)), &[]);
        assert_eq!(
            resp.status,
            200,
            "{}: {}",
            o.key,
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(resp.body.len() as u64, o.size, "{}", o.key);
        assert_eq!(sha256_hex(&resp.body), o.sha256, "{}", o.key);
        if let Some(ct) = &o.content_type {
            assert_eq!(resp.header("content-type"), Some(ct.as_str()), "{}", o.key);
        }
        assert!(resp.header("x-request-id").is_some());
        assert!(
            resp.header("etag").is_some_and(|e| e.starts_with('"')),
            "ETag keeps its quotes"
        );
        checked += 1;
    }
    assert!(checked >= 10, "manifest too small: {checked}");
}

#[test]
fn awkward_keys_round_trip_in_several_spellings() {
    let b = backend();
    let proxy = standard();
    let mut client = proxy.client();
    let spellings: &[(&str, &str)] = &[
        ("a+b.txt", "/public/a+b.txt"),
        ("a+b.txt", "/public/a%2Bb.txt"),
        ("space key.txt", "/public/space%20key.txt"),
        ("paren(1).txt", "/public/paren(1).txt"),
        ("quote'.txt", "/public/quote'.txt"),
        ("bang!star*.txt", "/public/bang!star*.txt"),
        (
            "tilde~eq=amp&dollar$at@.txt",
            "/public/tilde~eq=amp&dollar$at@.txt",
        ),
        (
            "tilde~eq=amp&dollar$at@.txt",
            "/public/tilde%7Eeq%3Damp%26dollar%24at%40.txt",
        ),
        (
            "unicode-日本語-ß.txt",
            "/public/unicode-%E6%97%A5%E6%9C%AC%E8%AA%9E-%C3%9F.txt",
        ),
        ("dir/nested/deep.txt", "/public/dir/nested/deep.txt"),
        ("dir/nested/deep.txt", "/public/dir%2Fnested%2Fdeep.txt"),
        ("dir/nested/deep.txt", "/public//dir///nested/deep.txt"),
        ("literal%2Fpercent.txt", "/public/literal%252Fpercent.txt"),
        ("colon:semi;comma,.txt", "/public/colon:semi;comma,.txt"),
    ];
    for (key, path) in spellings {
        let o = b.object("yata-public", key);
        let resp = client.request("GET", path, &[]);
        assert_eq!(
            resp.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(sha256_hex(&resp.body), o.sha256, "{path}");
    }
}

#[test]
fn head_returns_get_headers_without_body() {
    let b = backend();
    let proxy = standard();
    let o = b.object("yata-public", "meta.txt");
    let mut client = proxy.client();
    let get = client.request("GET", "/public/meta.txt", &[]);
    let head = client.request("HEAD", "/public/meta.txt", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(o.size.to_string().as_str())
    );
    for name in META_FIELDS {
        assert!(
            get.header(name).is_some(),
            "GET lacks {name}: {:?}",
            get.headers
        );
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(get.header("x-amz-meta-owner"), Some("yatagarasu"));
    // The connection is still usable: HEAD carried no body.
    let again = client.request("GET", "/public/hello.txt", &[]);
    assert_eq!(again.status, 200);
    assert_eq!(again.body, b.bytes(b.object("yata-public", "hello.txt")));
}

#[test]
fn hop_by_hop_and_server_headers_are_not_passed() {
    let proxy = standard();
    let resp = proxy.get("/public/hello.txt", &[]);
    for name in [
        "x-amz-request-id",
        "x-amz-id-2",
        "server",
        "transfer-encoding",
        "keep-alive",
    ] {
        assert!(
            resp.header(name).is_none(),
            "{name} leaked: {:?}",
            resp.headers
        );
    }
}

#[test]
fn every_range_form() {
    let b = backend();
    let o = b.object("yata-public", "100k.bin");
    let data = b.bytes(o);
    let len = data.len() as u64;
    let proxy = standard();
    let mut c = proxy.client();
    let cases: &[(&str, u64, u64)] = &[
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, len - 1),
        ("bytes=-7", len - 7, len - 1),
        ("bytes=0-", 0, len - 1),
        ("bytes=5-999999999", 5, len - 1),
    ];
    for (range, first, last) in cases {
        let r = c.request("GET", "/public/100k.bin", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/{len}").as_str()),
            "{range}"
        );
        assert_eq!(r.body, &data[*first as usize..=*last as usize], "{range}");
    }
    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", &format!("bytes={len}-"))],
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    for full in ["bytes=abc", "bytes=0-1,5-6", "items=0-5", "bytes=9-3"] {
        let r = c.request("GET", "/public/100k.bin", &[("Range", full)]);
        assert_eq!(r.status, 200, "{full} is served in full");
        assert_eq!(r.body.len() as u64, len, "{full}");
    }
}

#[test]
fn conditional_requests_are_forwarded() {
    let proxy = standard();
    let mut c = proxy.client();
    let first = c.request("GET", "/public/hello.txt", &[]);
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();

    let r = c.request("GET", "/public/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = c.request("GET", "/public/hello.txt", &[("If-None-Match", "\"nope\"")]);
    assert_eq!(r.status, 200);

    let r = c.request("GET", "/public/hello.txt", &[("If-Modified-Since", &lm)]);
    assert_eq!(r.status, 304);

    let r = c.request("GET", "/public/hello.txt", &[("If-Match", "\"nope\"")]);
    assert_eq!(r.status, 412);

    let r = c.request(
        "GET",
        "/public/hello.txt",
        &[("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")],
    );
    assert_eq!(r.status, 412);

    let r = c.request("GET", "/public/hello.txt", &[("If-Match", &etag)]);
    assert_eq!(r.status, 200);
}

#[test]
fn if_range_is_evaluated_by_the_proxy() {
    let b = backend();
    let data = b.bytes(b.object("yata-public", "100k.bin"));
    let proxy = standard();
    let mut c = proxy.client();
    let etag = c
        .request("HEAD", "/public/100k.bin", &[])
        .header("etag")
        .unwrap()
        .to_string();
    let lm = c
        .request("HEAD", "/public/100k.bin", &[])
        .header("last-modified")
        .unwrap()
        .to_string();

    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", "bytes=0-99"), ("If-Range", &etag)],
    );
    assert_eq!(r.status, 206, "matching ETag validator");
    assert_eq!(r.body, &data[..100]);

    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", "bytes=0-99"), ("If-Range", "\"stale\"")],
    );
    assert_eq!(r.status, 200, "stale ETag validator gives the full body");
    assert_eq!(r.body, data);

    let weak = format!("W/{etag}");
    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", "bytes=0-99"), ("If-Range", &weak)],
    );
    assert_eq!(r.status, 200, "weak validators never match If-Range");

    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", "bytes=0-99"), ("If-Range", &lm)],
    );
    assert_eq!(r.status, 206, "current Last-Modified validator");
    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[
            ("Range", "bytes=0-99"),
            ("If-Range", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ],
    );
    assert_eq!(r.status, 200, "stale date validator");
    assert_eq!(r.body.len(), data.len());
}

#[test]
fn not_found_cases_are_json() {
    let proxy = standard();
    let mut c = proxy.client();
    let r = c.request("GET", "/public/no-such-key.txt", &[]);
    r.assert_json_error(404);
    let r = c.request("GET", "/unmapped/hello.txt", &[]);
    r.assert_json_error(404);
    let r = c.request("GET", "/publicdir/hello.txt", &[]);
    r.assert_json_error(404);
    let r = c.request("GET", "/public", &[]);
    r.assert_json_error(404);
    let r = c.request("HEAD", "/public/no-such-key.txt", &[]);
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
}

#[test]
fn traversal_is_rejected() {
    let proxy = standard();
    let mut c = proxy.client();
    for path in [
        "/public/../private/secret.txt",
        "/public/%2e%2e/private/secret.txt",
        "/public/a/..%2Fb",
        "/public/.%2E/x",
        "/public/x/..",
    ] {
        let r = c.request("GET", path, &[]);
        r.assert_json_error(400);
    }
}

#[test]
fn methods_options_and_405() {
    let proxy = standard();
    let mut c = proxy.client();
    let r = c.request("OPTIONS", "/public/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = c.request(m, "/public/hello.txt", &[("Content-Length", "0")]);
        r.assert_json_error(405);
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{m}");
    }
}

#[test]
fn limits_give_414_431_413() {
    let proxy = Proxy::start(&config(
        "  limits: {max_uri_bytes: 512, max_header_bytes: 4096, max_headers: 20, max_body_bytes: 16}\n",
        "",
    ));
    let long = format!("/public/{}", "a".repeat(600));
    proxy.get(&long, &[]).assert_json_error(414);

    let big = "x".repeat(5000);
    proxy
        .get("/public/hello.txt", &[("X-Big", &big)])
        .assert_json_error(431);

    let many: Vec<(String, String)> = (0..25).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    proxy.get("/public/hello.txt", &refs).assert_json_error(431);

    let mut c = proxy.client();
    c.send(b"GET /public/hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n");
    c.read_response(false).assert_json_error(413);

    // The method check comes before the body check: a PUT or POST with a body over the limit
    // (sent in full, as curl does, or chunked) gets 405 with Allow, and the connection closes.
    for (method, framing) in [
        ("PUT", "Content-Length: 100000\r\n"),
        ("POST", "Transfer-Encoding: chunked\r\n"),
    ] {
        let mut c = proxy.client();
        let mut raw =
            format!("{method} /public/hello.txt HTTP/1.1\r\nHost: x\r\n{framing}\r\n").into_bytes();
        if method == "PUT" {
            raw.extend(std::iter::repeat_n(b'x', 100_000));
        } else {
            raw.extend_from_slice(b"4\r\nabcd\r\n0\r\n\r\n");
        }
        c.send(&raw);
        let r = c.read_response(false);
        r.assert_json_error(405);
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{method}");
        assert_eq!(r.header("connection"), Some("close"), "{method}");
        assert!(c.is_closed(), "{method}: closed after the early answer");
    }

    // A body within the limit is read and discarded; the connection stays in sync.
    let mut c = proxy.client();
    c.send(b"GET /public/hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.read_response(false).status, 200);
    assert_eq!(c.request("GET", "/public/hello.txt", &[]).status, 200);

    // Expect: 100-continue is answered before the body is sent.
    let mut c = proxy.client();
    c.send(b"GET /public/hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let mut interim = [0u8; 25];
    c.stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"body");
    assert_eq!(c.read_response(false).status, 200);
}

#[test]
fn keep_alive_reuse_and_pipelining() {
    let b = backend();
    let proxy = standard();
    let mut c = proxy.client();
    for _ in 0..20 {
        assert_eq!(c.request("GET", "/public/hello.txt", &[]).status, 200);
    }
    // Three pipelined requests in one write are answered in order.
    let mut raw = request_bytes("GET", "/public/hello.txt", &[]);
    raw.extend(request_bytes("HEAD", "/public/1k.bin", &[]));
    raw.extend(request_bytes("GET", "/public/a+b.txt", &[]));
    c.send(&raw);
    let r1 = c.read_response(false);
    let r2 = c.read_response(true);
    let r3 = c.read_response(false);
    assert_eq!(r1.body, b.bytes(b.object("yata-public", "hello.txt")));
    assert_eq!(r2.status, 200);
    assert_eq!(r2.header("content-length"), Some("1024"));
    assert_eq!(r3.body, b.bytes(b.object("yata-public", "a+b.txt")));
}

#[test]
fn http10_and_connection_close() {
    let b = backend();
    let proxy = standard();
    let mut c = proxy.client();
    c.send(b"GET /public/hello.txt HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b.bytes(b.object("yata-public", "hello.txt")));
    assert!(c.is_closed(), "HTTP/1.0 without keep-alive closes");

    let mut c = proxy.client();
    c.send(b"GET /public/hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(c.request("GET", "/public/hello.txt", &[]).status, 200);

    let r = c.request("GET", "/public/hello.txt", &[("Connection", "close")]);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

#[test]
fn request_id_is_echoed_or_generated() {
    let proxy = standard();
    let r = proxy.get("/public/hello.txt", &[("X-Request-Id", "client-id-123")]);
    assert_eq!(r.header("x-request-id"), Some("client-id-123"));
    let r = proxy.get(
        "/public/hello.txt",
        &[("X-Request-Id", "bad id with spaces")],
    );
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "a UUID replaces an invalid id: {id}");
    let r = proxy.get("/public/nope", &[("X-Request-Id", "abc")]);
    assert_eq!(r.json()["request_id"], "abc");
}

#[test]
fn buckets_with_different_credentials_and_wrong_credentials() {
    let b = backend();
    let wrong_secret = "WRONGsecretWRONGsecretWRONGsecret1234567";
    let extra = bucket_yaml(
        "wrong",
        "/wrong",
        "yata-public",
        &b.endpoint,
        &b.ak1,
        wrong_secret,
        "",
    );
    let proxy = Proxy::start(&config("", &extra));
    let mut c = proxy.client();
    let r = c.request("GET", "/private/secret.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b.bytes(b.object("yata-private", "secret.txt")));
    let r = c.request("GET", "/media/video.bin", &[]);
    assert_eq!(
        sha256_hex(&r.body),
        b.object("yata-media", "video.bin").sha256
    );
    let r = c.request("GET", "/wrong/hello.txt", &[]);
    r.assert_json_error(403);
    std::thread::sleep(Duration::from_millis(300));
    let log = proxy.log_text();
    assert!(
        log.contains("/wrong/hello.txt"),
        "access log missing: {log}"
    );
    for secret in [wrong_secret, b.sk1.as_str(), b.sk2.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
        assert!(!String::from_utf8_lossy(&r.body).contains(secret));
    }
}

#[test]
fn https_upstream_with_private_ca() {
    let b = backend();
    let extra = bucket_yaml(
        "tls",
        "/tls",
        "yata-public",
        &b.tls_endpoint,
        &b.ak1,
        &b.sk1,
        &format!("      tls_ca_file: \"{}\"\n", b.ca_file),
    );
    let untrusted = bucket_yaml(
        "untrusted",
        "/untrusted",
        "yata-public",
        &b.tls_endpoint,
        &b.ak1,
        &b.sk1,
        "",
    );
    let proxy = Proxy::start(&config("", &(extra + &untrusted)));
    let mut c = proxy.client();
    for _ in 0..3 {
        let r = c.request("GET", "/tls/100k.bin", &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            sha256_hex(&r.body),
            b.object("yata-public", "100k.bin").sha256
        );
    }
    // Without the private CA the system roots do not trust the endpoint: 502, not a silent pass.
    c.request("GET", "/untrusted/hello.txt", &[])
        .assert_json_error(502);
}

#[test]
fn dead_and_silent_endpoints_give_502_and_504() {
    let b = backend();
    // A port with nothing listening: connection refused.
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(8).flatten() {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let extra = bucket_yaml(
        "dead",
        "/dead",
        "yata-public",
        &format!("http://127.0.0.1:{dead_port}"),
        &b.ak1,
        &b.sk1,
        "      connect_timeout_ms: 1000\n",
    ) + &bucket_yaml(
        "silent",
        "/silent",
        "yata-public",
        &format!("http://127.0.0.1:{silent_port}"),
        &b.ak1,
        &b.sk1,
        "      first_byte_timeout_ms: 400\n",
    );
    let proxy = Proxy::start(&config("", &extra));
    let t = Instant::now();
    let r = proxy.get("/dead/hello.txt", &[]);
    r.assert_json_error(502);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "within the connect timeout"
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("127.0.0.1"),
        "no internal address in the body"
    );
    let t = Instant::now();
    proxy.get("/silent/hello.txt", &[]).assert_json_error(504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn version_id_is_forwarded_only_where_allowed_and_other_query_parameters_never() {
    let b = backend();
    let versioned = bucket_yaml(
        "versioned",
        "/versioned",
        "yata-public",
        &b.endpoint,
        &b.ak1,
        &b.sk1,
        "      allow_version_id: true\n",
    );
    let proxy = Proxy::start(&config("", &versioned));
    let r = proxy.get(
        "/public/hello.txt?foo=bar&token=secret&acl&list-type=2",
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        sha256_hex(&r.body),
        b.object("yata-public", "hello.txt").sha256
    );
    // Not allowed (the default): 400 from the proxy, before anything reaches S3.
    let r = proxy.get("/public/hello.txt?versionId=does-not-exist", &[]);
    r.assert_json_error(400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("allow_version_id"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // Allowed: S3 sees it (RGW rejects a version that does not exist).
    let r = proxy.get("/versioned/hello.txt?versionId=does-not-exist", &[]);
    assert!(
        (400..500).contains(&r.status)
            && !String::from_utf8_lossy(&r.body).contains("allow_version_id"),
        "S3 saw the versionId: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn large_object_streams_in_constant_memory() {
    let b = backend();
    let o = b.object("yata-public", "100m.bin");
    let proxy = standard();
    // Warm up pools and allocator arenas.
    assert_eq!(proxy.get("/public/1k.bin", &[]).status, 200);
    let baseline = proxy.rss_kib();
    let mut c = proxy.client();
    c.send(&request_bytes("GET", "/public/100m.bin", &[]));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains(&format!("content-length: {}", o.size)));
    let mut hasher = sha2::Sha256::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut peak = baseline;
    while got < o.size {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "body truncated at {got}");
        sha2::Digest::update(&mut hasher, &buf[..n]);
        got += n as u64;
        if got % (8 << 20) < n as u64 {
            peak = peak.max(proxy.rss_kib());
            // Read slowly for a moment so the proxy must apply backpressure, not buffer.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(got, o.size);
    assert_eq!(hex::encode(sha2::Digest::finalize(hasher)), o.sha256);
    let growth_kib = peak.saturating_sub(baseline);
    assert!(
        growth_kib < 16 * 1024,
        "RSS grew {growth_kib} KiB while streaming 100 MiB"
    );
}

#[test]
fn client_disconnect_mid_body_frees_the_upstream_connection() {
    let proxy = standard();
    assert_eq!(proxy.get("/public/1k.bin", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = proxy.fd_count();
    {
        let mut c = proxy.client();
        c.send(&request_bytes("GET", "/public/100m.bin", &[]));
        let mut buf = vec![0u8; 1 << 20];
        c.stream.read_exact(&mut buf).unwrap();
        // Drop the connection with most of the body unread.
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = proxy.fd_count();
        // The client socket and the upstream socket are both gone (a pooled idle connection from
        // the warm-up may remain, so compare with the baseline that already had it).
        if now <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds stayed at {now} (baseline {baseline})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the proxy still serves.
    assert_eq!(proxy.get("/public/hello.txt", &[]).status, 200);
}

#[test]
fn slow_header_times_out_with_408() {
    let proxy = Proxy::start(&config("  request_header_timeout_ms: 300\n", ""));
    let mut c = proxy.client();
    c.send(b"GET /public/hello.txt HTTP/1.1\r\nHost: x\r\n");
    let r = c.read_response(false);
    r.assert_json_error(408);
    assert!(c.is_closed(), "the connection is closed after a 408");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let proxy = standard();
    assert_eq!(proxy.get("/public/hello.txt", &[]).status, 200);
    let status = proxy.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn startup_log_reports_the_driver_of_every_shard() {
    let proxy = standard();
    let log = proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("yatagarasu listening"))
        .expect("startup line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["shards"], shards() as u64, "{line}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let drivers: Vec<&str> = v["drivers"].as_str().unwrap().split(',').collect();
    assert_eq!(drivers.len(), shards(), "{line}");
    if std::env::var("MONOIO_FORCE_LEGACY_DRIVER").as_deref() == Ok("1") {
        assert!(
            drivers.iter().all(|d| *d == "epoll"),
            "forced legacy driver not used: {line}"
        );
    } else {
        assert!(
            drivers.iter().all(|d| *d == "io_uring" || *d == "epoll"),
            "{line}"
        );
    }
}

#[test]
fn endpoint_given_by_host_name_is_resolved_off_the_shard() {
    let b = backend();
    let by_name = b.endpoint.replace("127.0.0.1", "localhost");
    let extra = bucket_yaml(
        "byname",
        "/byname",
        "yata-public",
        &by_name,
        &b.ak1,
        &b.sk1,
        "",
    );
    let proxy = Proxy::start(&config("", &extra));
    let mut c = proxy.client();
    for _ in 0..3 {
        let r = c.request("GET", "/byname/hello.txt", &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, b.bytes(b.object("yata-public", "hello.txt")));
    }
    // A name that does not resolve is a 502 (NXDOMAIN) or, where no resolver answers at all,
    // a 504 within the connect budget: never a hang or a crash.
    let extra = bucket_yaml(
        "nxdomain",
        "/nx",
        "yata-public",
        "http://no-such-host.invalid:7480",
        &b.ak1,
        &b.sk1,
        "      connect_timeout_ms: 1000\n",
    );
    let proxy = Proxy::start(&config("", &extra));
    let t = Instant::now();
    let r = proxy.get("/nx/hello.txt", &[]);
    assert!(matches!(r.status, 502 | 504), "{}", r.status);
    r.assert_json_error(r.status);
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// Long bodies that are not cached move by splice(2) (`Body::splice_to`): a 206 of 3 MB from
/// the middle of 100m.bin and a whole 100 MiB GET must be byte-exact, and the client connection
/// and the pooled upstream connection must both be reusable afterwards.
#[test]
fn spliced_bodies_are_exact_and_keep_the_connections() {
    let b = backend();
    let o = b.object("yata-public", "100m.bin");
    let all = b.bytes(o);
    let proxy = standard();
    let mut c = proxy.client();
    let (first, last) = (1_000_003usize, 4_000_002usize);
    let r = c.request(
        "GET",
        "/public/100m.bin",
        &[("Range", &format!("bytes={first}-{last}"))],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), last - first + 1);
    assert!(
        r.body == all[first..=last],
        "206 body differs from the object"
    );
    let r = c.request("GET", "/public/100m.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), o.sha256);
    // Same client connection, and S3 answers through the pool.
    let r = c.request("GET", "/public/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b.bytes(b.object("yata-public", "hello.txt")));
}

#[test]
fn a_missing_key_logs_only_its_access_line_and_text_logs_carry_no_colour() {
    let proxy = standard();
    let r = proxy.get("/public/no-such-key-for-logs.txt", &[]);
    assert_eq!(r.status, 404);
    let id = r.header("x-request-id").unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(300)); // the log writer is asynchronous
    let lines: Vec<String> = proxy
        .log_text()
        .lines()
        .filter(|l| l.contains(&id))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "only the access line: {lines:#?}");
    assert!(lines[0].contains("yatagarasu::access") && lines[0].contains("\"status\":404"));
    assert!(
        !proxy.log_text().contains("\"level\":\"WARN\""),
        "{}",
        proxy.log_text()
    );

    // Text format into a pipe (a file, a journal): no ANSI escapes. (The harness reads the
    // JSON startup line, so this one runs the binary itself.)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        config("", "").replace("format: json", "format: text"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_yatagarasu"))
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            log.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&log).contains("yatagarasu listening") {
                let _ = tx.send(String::from_utf8_lossy(&log).into_owned());
                return;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&log).into_owned());
    });
    let log = rx.recv_timeout(Duration::from_secs(15));
    let _ = child.kill();
    let _ = child.wait();
    let log = log.expect("the text-format proxy printed its startup lines");
    assert!(log.contains("yatagarasu listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
    // The harness's driver rule holds for this process too.
    let listening = log
        .lines()
        .find(|l| l.contains("yatagarasu listening"))
        .unwrap_or_default();
    let shard_drivers = drivers::from_text_line(listening)
        .unwrap_or_else(|| panic!("no drivers= in the text startup line: {listening:?}"));
    if let Err(e) = drivers::check(shard_drivers, drivers::expectation(&[])) {
        panic!("{e}; log:\n{log}");
    }
}

#[test]
fn a_spliced_body_leaves_both_connections_usable() {
    // 100 MiB is over the item limit, so it moves by splice(2) through a pipe: afterwards the
    // client connection and the pooled upstream connection must both serve again.
    let b = backend();
    let big = b.object("yata-public", "100m.bin");
    let small = b.object("yata-public", "hello.txt");
    let proxy = Proxy::start(&config("  shards: 1\n", ""));
    let mut c = proxy.client();
    for _ in 0..2 {
        let r = c.request("GET", "/public/100m.bin", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), big.sha256);
        // The same client connection, then the pooled upstream connection, serve again.
        let r = c.request(
            "GET",
            "/public/hello.txt?fresh",
            &[("Cache-Control", "no-cache")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(sha256_hex(&r.body), small.sha256);
    }
    let transport = "yatagarasu_upstream_errors_total{bucket=\"public\",code=\"transport\"}";
    let m = proxy.admin("GET", "/metrics", &[]);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        !text.lines().any(|l| l.starts_with(transport)),
        "no upstream transport error after a spliced body:\n{text}"
    );
}
