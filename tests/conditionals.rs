//! Conditionals and Range answered the same whichever path the object takes (issue 11, items 5
//! and 6): through a bucket without cache (every answer streamed from RGW) and from the memory
//! cache, If-None-Match in its weak, `*` and list forms gives 304, If-Match gives 412,
//! If-Range with a stale validator gives 200 in full, and `Range: bytes=-0` is 416 with
//! `Content-Range: bytes */len`. RGW ignores the weak, `*` and list forms of If-None-Match,
//! so these fail unless the proxy evaluates them itself.
//!
//! Not shipped. One proxy per test, one shard (so the cached bucket's second request is a hit).

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;

/// `/public` cached as usual, `/nocache` the same S3 bucket with the cache off.
fn proxy() -> Proxy {
    let mut nocache = public_bucket_yaml("nocache", "/nocache");
    nocache += "    cache: {enabled: false}\n";
    Proxy::start(&config("  shards: 1\n", &nocache))
}

/// The object's ETag and Last-Modified as RGW reports them through the proxy.
fn validators(proxy: &Proxy, path: &str) -> (String, String) {
    let r = proxy.client().request("HEAD", path, &[]);
    assert_eq!(r.status, 200, "{path}");
    (
        r.header("etag").expect("etag").to_owned(),
        r.header("last-modified").expect("last-modified").to_owned(),
    )
}

#[test]
fn if_none_match_forms_give_304_on_both_paths() {
    let proxy = proxy();
    for prefix in ["/nocache", "/public"] {
        let path = format!("{prefix}/1k.bin");
        let (etag, _) = validators(&proxy, &path);
        // Warm the cache for /public (a plain GET fills it; the next ones are hits).
        assert_eq!(proxy.get(&path, &[]).status, 200);
        let weak = format!("W/{etag}");
        let list = format!("\"nope\", {etag}");
        for inm in [weak.as_str(), "*", list.as_str(), etag.as_str()] {
            for method in ["GET", "HEAD"] {
                let r = proxy
                    .client()
                    .request(method, &path, &[("If-None-Match", inm)]);
                assert_eq!(r.status, 304, "{method} {path} If-None-Match: {inm}");
                assert_eq!(r.header("etag"), Some(etag.as_str()), "{path} {inm}");
                assert!(r.body.is_empty());
                assert!(
                    r.header("content-type").is_none(),
                    "a 304 carries validators, not representation metadata ({path})"
                );
            }
        }
        // A tag that does not match: the full object.
        let r = proxy.get(&path, &[("If-None-Match", "W/\"other\", \"more\"")]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), 1024);
    }
}

#[test]
fn if_match_and_if_unmodified_since_give_412_on_both_paths() {
    let proxy = proxy();
    for prefix in ["/nocache", "/public"] {
        let path = format!("{prefix}/1k.bin");
        let (etag, _) = validators(&proxy, &path);
        assert_eq!(proxy.get(&path, &[]).status, 200);
        for (name, value) in [
            ("If-Match", "\"not-the-etag\""),
            ("If-Match", &format!("W/{etag}") as &str),
            ("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"),
        ] {
            let r = proxy.get(&path, &[(name, value)]);
            r.assert_json_error(412);
        }
        let r = proxy.get(&path, &[("If-Match", &format!("\"x\", {etag}"))]);
        assert_eq!(r.status, 200, "{path}: a list with the current tag matches");
    }
}

#[test]
fn if_range_with_a_stale_validator_gives_the_full_object_on_both_paths() {
    let b = backend();
    let object = b.object("yata-public", "1k.bin");
    let proxy = proxy();
    for prefix in ["/nocache", "/public"] {
        let path = format!("{prefix}/1k.bin");
        let (etag, last_modified) = validators(&proxy, &path);
        assert_eq!(proxy.get(&path, &[]).status, 200);
        for stale in [
            "\"stale\"",
            "Mon, 01 Jan 2001 00:00:00 GMT",
            &format!("W/{etag}"),
        ] {
            let r = proxy.get(&path, &[("Range", "bytes=0-9"), ("If-Range", stale)]);
            assert_eq!(r.status, 200, "{path} If-Range: {stale}");
            assert_eq!(sha256_hex(&r.body), object.sha256);
            assert!(r.header("content-range").is_none());
        }
        for current in [etag.as_str(), last_modified.as_str()] {
            let r = proxy.get(&path, &[("Range", "bytes=0-9"), ("If-Range", current)]);
            assert_eq!(r.status, 206, "{path} If-Range: {current}");
            assert_eq!(r.header("content-range"), Some("bytes 0-9/1024"));
            assert_eq!(r.body.len(), 10);
        }
    }
}

#[test]
fn an_empty_suffix_range_is_416_on_both_paths() {
    let proxy = proxy();
    for prefix in ["/nocache", "/public"] {
        let path = format!("{prefix}/1k.bin");
        assert_eq!(proxy.get(&path, &[]).status, 200);
        for method in ["GET", "HEAD"] {
            let r = proxy
                .client()
                .request(method, &path, &[("Range", "bytes=-0")]);
            assert_eq!(r.status, 416, "{method} {path}");
            assert_eq!(r.header("content-range"), Some("bytes */1024"), "{path}");
        }
        let r = proxy.get(&path, &[("Range", "bytes=-10")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 1014-1023/1024"));
    }
}
