//! Hot reload on SIGHUP through the real binary against RGW: credentials change, a bucket is
//! added and removed, an invalid file or a restart-only change leaves the running config serving.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;

#[test]
fn sighup_applies_a_valid_config_and_rejects_bad_ones() {
    let b = backend();
    let wrong = bucket_yaml(
        "extra",
        "/extra",
        "yata-public",
        &b.endpoint,
        &b.ak1,
        "WRONGsecretWRONGsecret0000000000",
        "",
    );
    let proxy = Proxy::start(&config("", &wrong));
    let mut c = proxy.client();
    assert_eq!(c.request("GET", "/extra/hello.txt", &[]).status, 403);

    // Fix the credentials and add a bucket: both apply to new requests on the same connection.
    let fixed = bucket_yaml(
        "extra",
        "/extra",
        "yata-public",
        &b.endpoint,
        &b.ak1,
        &b.sk1,
        "",
    ) + &bucket_yaml(
        "added",
        "/added",
        "yata-media",
        &b.endpoint,
        &b.ak1,
        &b.sk1,
        "",
    );
    let line = proxy.reload(&config("", &fixed));
    assert!(line.contains("config reloaded"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["config_generation"], 1);
    assert_eq!(c.request("GET", "/extra/hello.txt", &[]).status, 200);
    assert_eq!(c.request("GET", "/added/video.bin", &[]).status, 200);

    // An invalid file is rejected with its errors; the previous config keeps serving.
    let line =
        proxy.reload("server: {listen: \"127.0.0.1:0\"}\nbuckets:\n  - name: x\n    bogus: 1\n");
    assert!(
        line.contains("rejected") && line.contains("buckets[0].bogus"),
        "{line}"
    );
    assert_eq!(c.request("GET", "/added/video.bin", &[]).status, 200);

    // A change that needs a restart is rejected with that reason.
    let moved = config("", &fixed).replacen("127.0.0.1:0", "127.0.0.1:1", 1);
    let line = proxy.reload(&moved);
    assert!(
        line.contains("server.listen") && line.contains("restart"),
        "{line}"
    );
    assert_eq!(c.request("GET", "/extra/hello.txt", &[]).status, 200);

    // Removing a bucket makes its prefix unmapped.
    let line = proxy.reload(&config("", ""));
    assert!(line.contains("config reloaded"), "{line}");
    c.request("GET", "/added/video.bin", &[])
        .assert_json_error(404);
}
