//! Retries (`buckets[].s3.retry`) through the real binary, with `tests/support/faulty-origin.py`
//! in front of RGW failing the first requests it receives and counting every request
//! (`--count-file`).
//!
//! Asserted: two `503 SlowDown` answers then success give the client one 200 with the exact
//! body, S3 saw 3 attempts and `upstream_retries_total` says 2; a connection reset before any
//! response byte is retried into a 200; an origin that always answers `503 SlowDown` gets
//! exactly `max_attempts` attempts and the client a 503 JSON error with `Retry-After`;
//! `max_attempts: 1` never retries (a 500 is a 502 after one attempt); 404 is not retried; a
//! circuit breaker opened by `failure_threshold` failures answers 503 with `Retry-After` in
//! well under 100 ms without sending anything to the origin, lets one probe through after
//! `open_ms` (a failed probe opens it again), and is exported as `upstream_breaker_open`.
//! Replicas (`s3.replicas`): a primary that keeps failing opens its breaker and the client gets
//! the object exact from a replica holding it in another bucket under other credentials (so
//! the request was signed anew for it), later requests skip the open primary, `/ready` shows
//! the replica ready and the open breaker, and after `open_ms` the recovered primary serves
//! again; a primary refusing connections is skipped for the replica, and without the replica
//! the same request gets the open breaker's 503 with `Retry-After`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::path::Path;

use common::*;

/// A proxy whose `/faulty` bucket goes through `origin` with `retry` (YAML flow mapping) and no
/// cache, so every GET reaches the origin.
fn proxy(origin: &FaultyOrigin, retry: &str) -> Proxy {
    proxy_s3(origin, &format!("      retry: {retry}\n"))
}

/// [`proxy`] with `s3_extra` (YAML lines indented by 6) in the bucket's `s3:` section.
fn proxy_s3(origin: &FaultyOrigin, s3_extra: &str) -> Proxy {
    let faulty = faulty_bucket_yaml(origin, s3_extra) + "    cache: {enabled: false}\n";
    Proxy::start(&config("  shards: 1\n", &faulty))
}

/// Requests the forwarder received so far.
fn received(count_file: &Path) -> u64 {
    std::fs::read_to_string(count_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The `/faulty` bucket's value of metric `family` (full name without the prefix).
fn faulty_metric(p: &Proxy, family: &str) -> u64 {
    metric_sum(
        &metrics_text(p),
        &format!("yatagarasu_{family}"),
        &[("bucket", "faulty")],
    )
}

fn retries(p: &Proxy) -> u64 {
    faulty_metric(p, "upstream_retries_total")
}

/// The forwarder in `mode`, faulting and counting only requests for `.bin` objects (not the
/// readiness probe's `HEAD` of the bucket), with its count file.
fn counted(mode: &str, extra: &[&str]) -> (FaultyOrigin, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("count").to_string_lossy().into_owned();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--count-file", &file, "--match", ".bin"]);
    (FaultyOrigin::start(mode, &args), dir)
}

#[test]
fn two_slowdowns_then_success_are_one_200() {
    let (origin, dir) = counted(
        "error",
        &["--status", "503", "--code", "SlowDown", "--fail-first", "2"],
    );
    let p = proxy(
        &origin,
        "{max_attempts: 3, base_backoff_ms: 5, max_backoff_ms: 20}",
    );
    let o = backend().object("yata-public", "1k.bin").clone();
    let r = p.get("/faulty/1k.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, backend().bytes(&o));
    assert_eq!(received(&dir.path().join("count")), 3, "attempts");
    assert_eq!(retries(&p), 2);
}

#[test]
fn a_reset_before_the_response_head_is_retried() {
    let (origin, dir) = counted("reset", &["--fail-first", "1"]);
    let p = proxy(
        &origin,
        "{max_attempts: 3, base_backoff_ms: 5, max_backoff_ms: 20}",
    );
    let o = backend().object("yata-public", "100k.bin").clone();
    let r = p.get("/faulty/100k.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, backend().bytes(&o));
    assert_eq!(received(&dir.path().join("count")), 2, "attempts");
}

#[test]
fn an_origin_that_keeps_throttling_gets_max_attempts_and_the_client_a_503() {
    let (origin, dir) = counted("error", &["--status", "503", "--code", "SlowDown"]);
    let p = proxy(
        &origin,
        "{max_attempts: 3, base_backoff_ms: 5, max_backoff_ms: 20}",
    );
    let r = p.get("/faulty/1k.bin", &[]);
    r.assert_json_error(503);
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    assert_eq!(received(&dir.path().join("count")), 3, "attempts");
}

#[test]
fn one_attempt_means_no_retry_and_client_errors_are_never_retried() {
    let (origin, dir) = counted("error", &["--status", "500", "--fail-first", "1"]);
    let p = proxy(&origin, "{max_attempts: 1}");
    p.get("/faulty/1k.bin", &[]).assert_json_error(502);
    assert_eq!(received(&dir.path().join("count")), 1, "attempts");
    assert_eq!(retries(&p), 0);

    let (origin, dir) = counted("pass", &[]);
    let p = proxy(&origin, "{max_attempts: 3, base_backoff_ms: 5}");
    let r = p.get("/faulty/no-such-key-anywhere.bin", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(received(&dir.path().join("count")), 1, "a 404 was retried");
}

#[test]
fn an_open_breaker_answers_503_at_once_and_sends_nothing() {
    let (origin, dir) = counted("error", &["--status", "500"]);
    let p = proxy_s3(
        &origin,
        "      retry: {max_attempts: 1}\n      circuit_breaker: {failure_threshold: 3, open_ms: 1500}\n",
    );
    let count = dir.path().join("count");
    for _ in 0..3 {
        p.get("/faulty/1k.bin", &[]).assert_json_error(502);
    }
    assert_eq!(received(&count), 3);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let r = p.get("/faulty/1k.bin", &[]);
        assert!(
            t.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        r.assert_json_error(503);
        assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    }
    assert_eq!(
        received(&count),
        3,
        "a request reached the origin while open"
    );
    assert_eq!(faulty_metric(&p, "upstream_breaker_open"), 1);
    assert_eq!(faulty_metric(&p, "upstream_breaker_refusals_total"), 5);
    // After open_ms one probe goes; it fails, so the breaker opens again.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    p.get("/faulty/1k.bin", &[]).assert_json_error(502);
    assert_eq!(received(&count), 4, "the half-open probe");
    p.get("/faulty/1k.bin", &[]).assert_json_error(503);
    assert_eq!(received(&count), 4);
}

/// A `replicas:` list (YAML lines indented by 6) with one replica `eu`: RGW itself, bucket
/// `yata-private` with user 2's keys, so only a request signed for that backend (its own
/// bucket and credentials, not the primary's) can succeed there.
fn replica_yaml(priority: u32) -> String {
    let b = backend();
    format!(
        "      replicas:\n        - {{name: eu, priority: {priority}, bucket: yata-private, region: us-east-1, endpoint: \"{}\", addressing: path, access_key: \"{}\", secret_key: \"{}\"}}\n",
        b.endpoint, b.ak2, b.sk2
    )
}

/// The same `len` bytes at `key` in the primary's bucket (`yata-public`) and the replica's
/// (`yata-private`): replicas hold the same objects.
fn replicated(key: &str, len: usize) -> Vec<u8> {
    let body = object_bytes(len as u64 ^ 0x5eed, len);
    put_object("yata-public", key, &body);
    put_object("yata-private", key, &body);
    body
}

/// The `/ready` entry of bucket `faulty`, once its primary and replica have both been probed.
fn ready_entry(p: &Proxy) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = p.admin("GET", "/ready", &[]);
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("ready JSON");
        let entry = v["buckets"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == "faulty").cloned())
            .expect("faulty in /ready");
        let probed = entry["state"] != "pending" && entry["replicas"][0]["state"] != "pending";
        if probed {
            return entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never probed: {entry}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_failing_primary_fails_over_to_a_replica_re_signed_and_comes_back() {
    let body = replicated("replica-1m.bin", 1 << 20);
    // Primary: fails its first three requests (503 SlowDown), then recovers.
    let (origin, dir) = counted(
        "error",
        &["--status", "503", "--code", "SlowDown", "--fail-first", "3"],
    );
    let extra = format!(
        "      retry: {{max_attempts: 3, base_backoff_ms: 5, max_backoff_ms: 20}}\n      circuit_breaker: {{failure_threshold: 3, open_ms: 500}}\n{}",
        replica_yaml(1)
    );
    let p = proxy_s3(&origin, &extra);
    let count = dir.path().join("count");

    // Three failed attempts on the primary open its breaker; the replica answers.
    let r = p.get("/faulty/replica-1m.bin", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body == body, "the replica's bytes are the object's");
    assert_eq!(received(&count), 3, "attempts on the primary");
    assert_eq!(faulty_metric(&p, "upstream_failovers_total"), 1);
    // While the primary's breaker is open, requests go straight to the replica.
    let r = p.get("/faulty/replica-1m.bin", &[]);
    assert!(r.status == 200 && r.body == body);
    assert_eq!(received(&count), 3, "nothing reached the open primary");
    assert!(faulty_metric(&p, "upstream_breaker_open") >= 1);
    let entry = ready_entry(&p);
    assert_eq!(entry["replicas"][0]["name"], "eu");
    assert_eq!(entry["replicas"][0]["ok"], true, "{entry}");
    assert_eq!(
        entry["ok"], true,
        "a bucket with a live replica is ready: {entry}"
    );
    assert!(entry["breakers_open"].as_i64() >= Some(1), "{entry}");

    // After open_ms one request probes the primary, which has recovered: back to it.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let before = received(&count);
    for _ in 0..2 {
        let r = p.get("/faulty/replica-1m.bin", &[]);
        assert!(r.status == 200 && r.body == body);
    }
    assert_eq!(received(&count), before + 2, "the primary serves again");
    assert_eq!(faulty_metric(&p, "upstream_breaker_open"), 0);
}

#[test]
fn a_primary_refusing_connections_is_skipped_for_the_replica() {
    let body = replicated("replica-refused.bin", 300 * 1024);
    // A port nothing listens on: every connect is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let b = backend();
    let bucket = bucket_yaml(
        "faulty",
        "/faulty",
        "yata-public",
        &format!("http://127.0.0.1:{port}"),
        &b.ak1,
        &b.sk1,
        &format!(
            "      retry: {{max_attempts: 2, base_backoff_ms: 5, max_backoff_ms: 20}}\n{}",
            replica_yaml(7)
        ),
    ) + "    cache: {enabled: false}\n";
    let p = Proxy::start(&config("  shards: 1\n", &bucket));
    for _ in 0..3 {
        let r = p.get("/faulty/replica-refused.bin", &[]);
        assert_eq!(r.status, 200);
        assert!(r.body == body, "exact bytes from the replica");
    }
    let entry = ready_entry(&p);
    assert_eq!(entry["state"], "failed", "{entry}");
    assert_eq!(entry["ok"], true, "{entry}");
    // Without the replica: the primary's breaker (opened by the 6 refused attempts above,
    // kept across the reload) answers 503 with Retry-After at once.
    let alone = bucket.replace(&replica_yaml(7), "");
    assert!(p
        .reload(&config("  shards: 1\n", &alone))
        .contains("config reloaded"));
    let r = p.get("/faulty/replica-refused.bin", &[]);
    r.assert_json_error(503);
    assert!(r.header("retry-after").is_some());
}
