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
