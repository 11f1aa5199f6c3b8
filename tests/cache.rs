//! The per-shard memory cache through the real binary against RGW: MISS then HIT with identical
//! bytes and headers, HEAD/Range/conditionals from memory, uncacheable objects, single-flight,
//! revalidation, and an object changed in S3. S3 requests are counted in RGW's ops log.
//! (A private bucket's cached object needing a valid token is tested with the JWT issue.)

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use common::*;

fn cached_proxy(server_extra: &str, cache_extra: &str) -> Proxy {
    let yaml = config(server_extra, "").replace(
        "logging:",
        &format!("cache:\n  memory: {{max_cache_size_mb: 64, max_item_size_mb: 10, default_ttl_seconds: 3600}}\n{cache_extra}logging:"),
    );
    Proxy::start(&yaml)
}

#[test]
fn miss_then_hit_with_identical_bytes_and_headers() {
    let b = backend();
    let proxy = cached_proxy("  shards: 1\n", "");
    let mut c = proxy.client();
    let before = s3_requests("yata-public", "meta.txt", None);
    let miss = c.request("GET", "/public/meta.txt", &[]);
    let hit = c.request("GET", "/public/meta.txt", &[]);
    assert_eq!(miss.status, 200);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert!(hit.header("age").is_some());
    assert_eq!(hit.body, miss.body);
    assert_eq!(
        sha256_hex(&hit.body),
        b.object("yata-public", "meta.txt").sha256
    );
    for name in META_FIELDS.into_iter().chain(["content-length"]) {
        assert!(miss.header(name).is_some(), "MISS lacks {name}");
        assert_eq!(hit.header(name), miss.header(name), "{name}");
    }
    assert_eq!(
        s3_requests("yata-public", "meta.txt", None) - before,
        1,
        "the hit did not touch S3"
    );

    let head = c.request("HEAD", "/public/meta.txt", &[]);
    assert_eq!(head.header("x-cache"), Some("HIT"));
    assert_eq!(head.header("content-length"), miss.header("content-length"));
    assert!(head.body.is_empty());
}

#[test]
fn ranges_and_conditionals_from_memory() {
    let b = backend();
    let data = b.bytes(b.object("yata-public", "100k.bin"));
    let len = data.len();
    let proxy = cached_proxy("  shards: 1\n", "");
    let mut c = proxy.client();
    let first = c.request("GET", "/public/100k.bin", &[]);
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();
    let before = s3_requests("yata-public", "100k.bin", None);

    for (range, lo, hi) in [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, len - 1),
        ("bytes=-7", len - 7, len - 1),
        ("bytes=0-", 0, len - 1),
    ] {
        let r = c.request("GET", "/public/100k.bin", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("x-cache"), Some("HIT"));
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {lo}-{hi}/{len}").as_str())
        );
        assert_eq!(r.body, &data[lo..=hi]);
    }
    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", &format!("bytes={len}-"))],
    );
    r.assert_json_error(416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let r = c.request("GET", "/public/100k.bin", &[("Range", "bytes=0-1,5-6")]);
    assert_eq!((r.status, r.body.len()), (200, len));

    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("If-None-Match", &format!("\"x\", {etag}"))],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("last-modified"), Some(lm.as_str()));
    let weak = format!("W/{etag}");
    assert_eq!(
        c.request("GET", "/public/100k.bin", &[("If-None-Match", &weak)])
            .status,
        304,
        "weak comparison"
    );
    assert_eq!(
        c.request("GET", "/public/100k.bin", &[("If-None-Match", "*")])
            .status,
        304
    );
    assert_eq!(
        c.request("GET", "/public/100k.bin", &[("If-Modified-Since", &lm)])
            .status,
        304
    );
    c.request("GET", "/public/100k.bin", &[("If-Match", "\"nope\"")])
        .assert_json_error(412);
    c.request(
        "GET",
        "/public/100k.bin",
        &[("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")],
    )
    .assert_json_error(412);
    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = c.request(
        "GET",
        "/public/100k.bin",
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    );
    assert_eq!(
        (r.status, r.body.len()),
        (200, len),
        "stale If-Range gives the full body"
    );
    assert_eq!(
        s3_requests("yata-public", "100k.bin", None),
        before,
        "all answered from memory"
    );
}

#[test]
fn uncacheable_objects_bypass() {
    let proxy = cached_proxy("", "");
    let mut c = proxy.client();
    for _ in 0..2 {
        let r = c.request("GET", "/public/nostore.txt", &[]);
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("BYPASS")),
            "no-store is never cached"
        );
    }
    // Over max_item_size_mb (10): streamed through, never buffered or cached.
    for _ in 0..2 {
        let r = c.request("GET", "/public/100m.bin", &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("BYPASS")));
        assert_eq!(r.body.len(), 104_857_600);
    }
    // A bucket with cache.enabled: false.
    let b = backend();
    let yaml = config(
        "",
        &bucket_yaml(
            "nocache",
            "/nocache",
            "yata-public",
            &b.endpoint,
            &b.ak1,
            &b.sk1,
            "",
        )
        .replace("    s3:\n", "    cache: {enabled: false}\n    s3:\n"),
    );
    let proxy = Proxy::start(&yaml);
    for _ in 0..2 {
        assert_eq!(
            proxy.get("/nocache/hello.txt", &[]).header("x-cache"),
            Some("BYPASS")
        );
    }
}

#[test]
fn concurrent_cold_misses_make_one_s3_request() {
    let proxy = cached_proxy("  shards: 1\n", "");
    let key = "paren(1).txt";
    let before = s3_requests("yata-public", key, None);
    let addr = proxy.addr;
    let path = format!("/public/{}", encode_key(key));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.request("GET", &path, &[]);
                (r.status, r.body)
            })
        })
        .collect();
    let bodies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(bodies.iter().all(|(s, b)| *s == 200 && *b == bodies[0].1));
    assert_eq!(
        s3_requests("yata-public", key, None) - before,
        1,
        "single-flight: one S3 GET for 50 misses"
    );
}

#[test]
fn expired_entries_are_revalidated_and_changes_are_seen() {
    let b = backend();
    let yaml = config(
        "  shards: 1\n",
        &bucket_yaml(
            "short",
            "/short",
            "yata-media",
            &b.endpoint,
            &b.ak1,
            &b.sk1,
            "",
        )
        .replace(
            "    s3:\n",
            "    cache: {enabled: true, ttl_seconds: 1}\n    s3:\n",
        ),
    );
    let proxy = Proxy::start(&yaml);
    let key = "mutable.txt";
    put_object("yata-media", key, b"version one\n");
    let mut c = proxy.client();
    let r = c.request("GET", "/short/mutable.txt", &[]);
    assert_eq!(
        (r.header("x-cache"), r.body.as_slice()),
        (Some("MISS"), &b"version one\n"[..])
    );
    assert_eq!(
        c.request("GET", "/short/mutable.txt", &[])
            .header("x-cache"),
        Some("HIT")
    );

    // After the TTL: a conditional GET (304 from S3) refreshes the entry; the body comes from memory.
    std::thread::sleep(Duration::from_millis(1300));
    let not_modified_before = s3_requests("yata-media", key, Some("304"));
    let r = c.request("GET", "/short/mutable.txt", &[]);
    assert_eq!(
        (r.header("x-cache"), r.body.as_slice()),
        (Some("HIT"), &b"version one\n"[..])
    );
    assert_eq!(
        s3_requests("yata-media", key, Some("304")) - not_modified_before,
        1,
        "revalidated with a conditional GET"
    );

    // Changed in S3: served fresh once the TTL passed.
    put_object("yata-media", key, b"version two, longer\n");
    std::thread::sleep(Duration::from_millis(1300));
    let r = c.request("GET", "/short/mutable.txt", &[]);
    assert_eq!(r.body, b"version two, longer\n");
    assert_eq!(
        c.request("GET", "/short/mutable.txt", &[]).body,
        b"version two, longer\n"
    );
}

#[test]
fn cache_status_names_what_the_cache_did() {
    let proxy = cached_proxy("  shards: 1\n", "");
    let mut c = proxy.client();
    let status = |r: &Response| r.header("cache-status").map(str::to_owned);
    let miss = c.request("GET", "/public/1k.bin", &[]);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(
        status(&miss).as_deref(),
        Some("yatagarasu; fwd=miss; stored")
    );
    let hit = c.request("GET", "/public/1k.bin", &[]);
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(
        status(&hit).as_deref(),
        Some("yatagarasu; hit; detail=memory")
    );
    let ranged = c.request("GET", "/public/1k.bin", &[("Range", "bytes=0-9")]);
    assert_eq!(ranged.status, 206);
    assert_eq!(
        status(&ranged).as_deref(),
        Some("yatagarasu; hit; detail=memory")
    );
    let bypass = c.request("GET", "/public/nostore.txt", &[]);
    assert_eq!(bypass.header("x-cache"), Some("BYPASS"));
    assert_eq!(status(&bypass).as_deref(), Some("yatagarasu; fwd=bypass"));
    let missing = c.request("GET", "/public/no-such-key-cache-status", &[]);
    assert_eq!(missing.status, 404);
    assert!(
        status(&missing).is_none(),
        "errors carry no Cache-Status: {:?}",
        missing.headers
    );
}
