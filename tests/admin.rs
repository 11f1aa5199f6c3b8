//! Admin listener through the real binary against the real RGW: /health and /ready on both
//! listeners, metric deltas for a known request sequence, admin auth, cache purge and stats
//! across shards, reload by API and by SIGHUP (credentials, added and removed buckets, invalid
//! and restart-only changes), the access log's client address, and systemd notifications.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "admin-test-token-5f1c";

/// Parse Prometheus text into `series -> value` (comments skipped).
fn scrape(proxy: &Proxy) -> HashMap<String, f64> {
    let r = proxy.admin("GET", "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    String::from_utf8(r.body)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Wait (up to 15 s) until `/ready` on the admin listener answers `status`.
fn wait_ready(proxy: &Proxy, status: u16) -> Response {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = proxy.admin("GET", "/ready", &[]);
        if r.status == status || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_and_ready_on_both_listeners() {
    let proxy = Proxy::start(&config("", ""));
    for r in [
        proxy.admin("GET", "/health", &[]),
        proxy.get("/health", &[]),
    ] {
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["shards"], shards() as u64);
        assert!(v["uptime_seconds"].is_u64());
        let driver = v["driver"].as_str().unwrap();
        assert!(["io_uring", "epoll"].contains(&driver), "{v}");
    }
    let r = wait_ready(&proxy, 200);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "ready");
    let names: Vec<&str> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public", "media", "private"]);
    let data = proxy.get("/ready", &[]);
    assert_eq!(data.status, 200);
    assert_eq!(data.json()["status"], "ready");
    // HEAD has no body; other methods are refused.
    let head = proxy.client().request("HEAD", "/health", &[]);
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(proxy.admin("POST", "/metrics", &[]).status, 405);
    assert_eq!(proxy.admin("GET", "/nope", &[]).status, 404);
}

#[test]
fn a_bucket_whose_backend_is_down_makes_ready_503() {
    // A bucket pointing at a port with nothing listening: every probe fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let b = backend();
    let extra = bucket_yaml(
        "dead",
        "/dead",
        "yata-public",
        &format!("http://127.0.0.1:{port}"),
        &b.ak1,
        &b.sk1,
        "      connect_timeout_ms: 300\n",
    );
    let proxy = Proxy::start(&config("", &extra));
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let r = proxy.admin("GET", "/ready", &[]);
        assert_eq!(r.status, 503);
        let v = r.json();
        let probed = v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["state"] != "pending");
        if probed || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["buckets"][3]["name"], "dead");
    assert_eq!(v["buckets"][3]["ok"], false);
    assert_eq!(v["buckets"][3]["state"], "failed", "{v}");
    assert_eq!(v["buckets"][0]["ok"], true, "{v}");
    assert_eq!(proxy.get("/ready", &[]).status, 503);
}

#[test]
fn metrics_move_by_exact_deltas() {
    let b = backend();
    let small = b.object("yata-public", "1k.bin");
    let proxy = Proxy::start(&config("", ""));
    let before = scrape(&proxy);
    // One connection: every request lands on the same shard (cache hits are per shard).
    let mut c = proxy.client();
    assert_eq!(c.request("GET", "/public/1k.bin", &[]).status, 200); // MISS
    assert_eq!(c.request("GET", "/public/1k.bin", &[]).status, 200); // HIT
    assert_eq!(c.request("HEAD", "/public/1k.bin", &[]).status, 200); // HIT, no body
    assert_eq!(c.request("GET", "/public/no-such-key", &[]).status, 404); // S3 NoSuchKey
    assert_eq!(c.request("GET", "/unmapped/x", &[]).status, 404); // no bucket
    drop(c);
    // A shard counts a request right after its last byte is written: poll briefly.
    let key_unrouted =
        "yatagarasu_requests_total{bucket=\"-\",method=\"GET\",status_class=\"4xx\"}";
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = scrape(&proxy);
    while metric(&after, key_unrouted) - metric(&before, key_unrouted) < 1.0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        after = scrape(&proxy);
    }
    let delta = |k: &str| metric(&after, k) - metric(&before, k);
    let req = |bucket: &str, method: &str, class: &str| {
        delta(&format!(
            "yatagarasu_requests_total{{bucket=\"{bucket}\",method=\"{method}\",status_class=\"{class}\"}}"
        ))
    };
    assert_eq!(req("public", "GET", "2xx"), 2.0);
    assert_eq!(req("public", "HEAD", "2xx"), 1.0);
    assert_eq!(req("public", "GET", "4xx"), 1.0);
    assert_eq!(req("-", "GET", "4xx"), 1.0);
    assert_eq!(
        delta("yatagarasu_request_duration_seconds_count{bucket=\"public\"}"),
        4.0
    );
    assert_eq!(
        delta("yatagarasu_response_body_bytes_total{bucket=\"public\"}"),
        2.0 * small.size as f64
    );
    assert_eq!(
        delta("yatagarasu_upstream_requests_total{bucket=\"public\"}"),
        2.0
    );
    assert_eq!(
        delta("yatagarasu_upstream_errors_total{bucket=\"public\",code=\"NoSuchKey\"}"),
        1.0
    );
    let cache = |name: &str| {
        delta(&format!(
            "yatagarasu_cache_{name}{{bucket=\"public\",layer=\"memory\"}}"
        ))
    };
    assert_eq!(cache("hits_total"), 2.0);
    assert_eq!(
        cache("misses_total"),
        2.0,
        "the 1k.bin miss and the NoSuchKey miss"
    );
    assert_eq!(cache("inserts_total"), 1.0);
    assert_eq!(cache("items"), 1.0);
    assert!(cache("size_bytes") >= small.size as f64);
    assert_eq!(
        metric(&after, "yatagarasu_shards"),
        shards() as f64,
        "shards gauge"
    );
    let drivers = after
        .keys()
        .filter(|k| k.starts_with("yatagarasu_shard_info{"))
        .count();
    assert_eq!(drivers, shards());
    assert!(metric(&after, "yatagarasu_process_resident_memory_bytes") > 1e6);
    assert!(metric(&after, "yatagarasu_process_open_fds") > 5.0);
    // No label carries a path or a key.
    assert!(!after
        .keys()
        .any(|k| k.contains("1k.bin") || k.contains("no-such-key")));
}

#[test]
fn admin_endpoints_need_the_token() {
    let proxy = Proxy::start(&config_with_admin(
        "",
        &format!("  token: \"{TOKEN}\"\n"),
        "",
    ));
    let missing = proxy.admin("GET", "/admin/cache/stats", &[]);
    missing.assert_json_error(401);
    assert!(missing
        .header("www-authenticate")
        .unwrap_or("")
        .starts_with("Bearer"));
    proxy
        .admin(
            "GET",
            "/admin/cache/stats",
            &[("Authorization", "Bearer not-the-token")],
        )
        .assert_json_error(401);
    proxy
        .admin("POST", "/admin/reload", &[("Authorization", "Basic eDp5")])
        .assert_json_error(401);
    let auth = format!("Bearer {TOKEN}");
    let ok = proxy.admin("GET", "/admin/cache/stats", &[("Authorization", &auth)]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["shards"].as_array().unwrap().len(), shards());
    // Open endpoints stay open.
    assert_eq!(proxy.admin("GET", "/metrics", &[]).status, 200);
    assert!(
        !proxy.log_text().contains(TOKEN),
        "the token is never logged"
    );
}

#[test]
fn no_token_means_loopback_only_and_no_public_listener() {
    let proxy = Proxy::start(&config("", ""));
    assert_eq!(proxy.admin("GET", "/admin/cache/stats", &[]).status, 200);
    drop(proxy);
    // Refuses to start on a non-loopback admin address without a token.
    let yaml = config("", "").replace(
        "admin:\n  listen: \"127.0.0.1:0\"",
        "admin:\n  listen: \"0.0.0.0:0\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yatagarasu"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an invalid config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.token") && err.contains("loopback"),
        "{err}"
    );
}

#[test]
fn purge_and_stats_reach_every_shard() {
    let proxy = Proxy::start(&config("", ""));
    // Fill several connections (spread over the shards by the kernel).
    for _ in 0..6 {
        let mut c = proxy.client();
        for key in ["1k.bin", "hello.txt", "100k.bin"] {
            assert_eq!(c.request("GET", &format!("/public/{key}"), &[]).status, 200);
        }
        assert_eq!(c.request("GET", "/media/video.bin", &[]).status, 200);
    }
    let stats = proxy.admin("GET", "/admin/cache/stats", &[]);
    assert_eq!(stats.status, 200);
    let v = stats.json();
    assert_eq!(v["shards"].as_array().unwrap().len(), shards());
    let items = v["totals"]["items"].as_u64().unwrap();
    assert!((4..=4 * shards() as u64).contains(&items), "{v}");
    let one = proxy.admin("GET", "/admin/cache/stats/media", &[]).json();
    assert_eq!(one["bucket"], "media");
    for s in one["shards"].as_array().unwrap() {
        let buckets = s["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0]["name"], "media");
    }
    proxy
        .admin("GET", "/admin/cache/stats/nope", &[])
        .assert_json_error(404);
    proxy
        .admin("POST", "/admin/cache/purge/nope", &[])
        .assert_json_error(404);
    assert_eq!(proxy.admin("GET", "/admin/cache/purge", &[]).status, 405);

    // One object, on every shard that holds it.
    let p = proxy.admin("POST", "/admin/cache/purge/public/1k.bin", &[]);
    assert_eq!(p.status, 200);
    let held_1k = p.json()["purged"].as_u64().unwrap();
    assert!(held_1k >= 1, "{:?}", p.json());
    let after = proxy.admin("GET", "/admin/cache/stats/public", &[]).json();
    assert_eq!(
        after["totals"]["items"].as_u64().unwrap(),
        items - held_1k - one["totals"]["items"].as_u64().unwrap()
    );
    let mut c = proxy.client();
    assert_eq!(
        c.request("GET", "/public/1k.bin", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        c.request("GET", "/public/hello.txt", &[]).header("x-cache"),
        Some("HIT"),
        "other keys stay"
    );
    drop(c);
    // A bucket, then everything.
    let p = proxy.admin("POST", "/admin/cache/purge/media", &[]).json();
    assert_eq!(p["purged"], one["totals"]["items"]);
    assert_eq!(p["bucket"], "media");
    let p = proxy.admin("POST", "/admin/cache/purge", &[]).json();
    assert!(p["purged"].as_u64().unwrap() >= 2, "{p}");
    assert_eq!(p["per_shard"].as_array().unwrap().len(), shards());
    let empty = proxy.admin("GET", "/admin/cache/stats", &[]).json();
    assert_eq!(empty["totals"]["items"], 0);
    assert_eq!(empty["totals"]["bytes"], 0);
}

#[test]
fn purge_normalises_the_key_as_the_data_plane_does() {
    let proxy = Proxy::start(&config("  shards: 1\n", ""));
    let mut c = proxy.client();
    for path in ["/public//dir//nested/deep.txt", "/public/%61%2B%62.txt"] {
        assert_eq!(c.request("GET", path, &[]).header("x-cache"), Some("MISS"));
        assert_eq!(c.request("GET", path, &[]).header("x-cache"), Some("HIT"));
    }
    // The same spellings (repeated slashes, escapes of unreserved characters) on the admin side.
    for (purge, path) in [
        (
            "/admin/cache/purge/public//dir//nested//deep.txt",
            "/public/dir/nested/deep.txt",
        ),
        ("/admin/cache/purge/public/%61+b.txt", "/public/a+b.txt"),
    ] {
        let p = proxy.admin("POST", purge, &[]);
        assert_eq!(p.status, 200, "{purge}");
        assert_eq!(p.json()["purged"], 1, "{purge}: {}", p.json());
        assert_eq!(
            c.request("GET", path, &[]).header("x-cache"),
            Some("MISS"),
            "{path} was purged"
        );
    }
    proxy
        .admin("POST", "/admin/cache/purge/public/a/../b", &[])
        .assert_json_error(400);
}

fn reload_api(proxy: &Proxy, yaml: &str) -> Response {
    proxy.write_config(yaml);
    proxy.admin("POST", "/admin/reload", &[])
}

#[test]
fn reload_by_api_changes_credentials_adds_and_removes_buckets() {
    let b = backend();
    let base = config("", "");
    let proxy = Proxy::start(&base);
    assert_eq!(proxy.get("/private/secret.txt", &[]).status, 200);

    // Credentials of 'private' replaced by user 1's (who has no access): S3 says 403.
    let wrong = base
        .replacen(&format!("\"{}\"", b.ak2), &format!("\"{}\"", b.ak1), 1)
        .replacen(&format!("\"{}\"", b.sk2), &format!("\"{}\"", b.sk1), 1);
    assert_ne!(wrong, base);
    let r = reload_api(&proxy, &wrong);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["config_generation"], 1);
    let denied = proxy.get("/private/secret.txt", &[]);
    assert_eq!(
        denied.status,
        403,
        "after the credentials changed: X-Cache {:?}, Cache-Status {:?}",
        denied.header("x-cache"),
        denied.header("cache-status")
    );

    // Back, plus a new bucket; then the new bucket removed.
    let extra = public_bucket_yaml("extra", "/extra");
    let r = reload_api(&proxy, &config("", &extra));
    assert_eq!(r.json()["config_generation"], 2);
    assert_eq!(proxy.get("/private/secret.txt", &[]).status, 200);
    let got = proxy.get("/extra/hello.txt", &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b.bytes(b.object("yata-public", "hello.txt")));
    let r = reload_api(&proxy, &base);
    assert_eq!(r.json()["config_generation"], 3);
    proxy.get("/extra/hello.txt", &[]).assert_json_error(404);

    // Invalid: 400 with every error; the old config keeps serving.
    let r = reload_api(
        &proxy,
        &base.replace("path_prefix: /media", "path_prefix: media\n    bogus: 1"),
    );
    assert_eq!(r.status, 400);
    let v = r.json();
    let errors = v["errors"].to_string();
    assert!(
        errors.contains("path_prefix") && errors.contains("bogus"),
        "{v}"
    );
    assert_eq!(v["config_generation"], 3);
    assert_eq!(proxy.get("/media/video.bin", &[]).status, 200);

    // Restart-only change: rejected with the reason.
    let r = reload_api(
        &proxy,
        &base.replace(
            "listen: \"127.0.0.1:0\"\n  shards",
            "listen: \"127.0.0.1:1\"\n  shards",
        ),
    );
    assert_eq!(r.status, 400);
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains("server.listen") && errors.contains("restart"),
        "{errors}"
    );

    let m = scrape(&proxy);
    assert_eq!(metric(&m, "yatagarasu_config_generation"), 3.0);
    assert_eq!(
        metric(&m, "yatagarasu_config_reloads_total{result=\"ok\"}"),
        3.0
    );
    assert_eq!(
        metric(&m, "yatagarasu_config_reloads_total{result=\"error\"}"),
        2.0
    );
}

#[test]
fn reload_by_sighup_adds_and_removes_a_bucket() {
    let base = config("", "");
    let proxy = Proxy::start(&base);
    proxy.get("/extra/hello.txt", &[]).assert_json_error(404);
    let extra = public_bucket_yaml("extra", "/extra");
    let line = proxy.reload(&config("", &extra));
    assert!(
        line.contains("config reloaded") && line.contains("SIGHUP"),
        "{line}"
    );
    assert_eq!(proxy.get("/extra/hello.txt", &[]).status, 200);
    // The new bucket is probed too (the prober sees the new generation within 200 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let r = proxy.admin("GET", "/ready", &[]);
        let v = r.json();
        if (r.status == 200 && v["buckets"][3]["ok"] == true) || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["buckets"][3]["name"], "extra", "{v}");
    assert_eq!(v["buckets"][3]["state"], "answered", "{v}");
    let line = proxy.reload(&base);
    assert!(line.contains("config reloaded"), "{line}");
    proxy.get("/extra/hello.txt", &[]).assert_json_error(404);
}

#[test]
fn access_log_takes_the_client_from_trusted_proxies_only() {
    let proxy = Proxy::start(&config("  trusted_proxies: [\"127.0.0.0/8\"]\n", ""));
    let mut c = proxy.client();
    c.request(
        "GET",
        "/public/hello.txt",
        &[
            ("X-Forwarded-For", "198.51.100.7, 203.0.113.9"),
            ("X-Request-Id", "xff-trusted"),
        ],
    );
    drop(c);
    let untrusted = Proxy::start(&config("", ""));
    untrusted.get(
        "/public/hello.txt",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Request-Id", "xff-untrusted"),
        ],
    );
    let find = |p: &Proxy, id: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = p
                .log_text()
                .lines()
                .find(|l| l.contains("yatagarasu::access") && l.contains(id))
            {
                return serde_json::from_str(line).unwrap();
            }
            assert!(Instant::now() < deadline, "no access line for {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let line = find(&proxy, "xff-trusted");
    assert_eq!(line["client"], "203.0.113.9");
    assert_eq!(line["bucket"], "public");
    assert_eq!(line["cache"], "MISS");
    assert_eq!(line["status"], 200);
    assert_eq!(line["subject"], "-");
    assert!(line["duration_us"].is_u64());
    assert_eq!(find(&untrusted, "xff-untrusted")["client"], "127.0.0.1");
}

#[test]
fn systemd_notifications_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut proxy = Proxy::start_with_env(
        &config("", ""),
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\n");
    proxy.signal("HUP");
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1\n");
    let r = proxy.admin("POST", "/admin/reload", &[]);
    assert_eq!(r.status, 200);
    assert!(next().starts_with("RELOADING=1\n"));
    assert_eq!(next(), "READY=1\n");
    proxy.signal("TERM");
    assert_eq!(next(), "STOPPING=1\n");
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn reload_changes_the_log_level() {
    let base = config("", "");
    let proxy = Proxy::start(&base);
    proxy.get("/public/hello.txt", &[("X-Request-Id", "lvl-info")]);
    // The access line is written after the response went out: wait for it, so the reload
    // below cannot overtake it (it would then be filtered at the new level).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_text().contains("lvl-info") {
        assert!(
            Instant::now() < deadline,
            "no access line for the first request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let quiet = base.replace("level: info", "level: warn");
    assert_ne!(quiet, base);
    let r = reload_api(&proxy, &quiet);
    assert_eq!(r.status, 200);
    proxy.get("/public/hello.txt", &[("X-Request-Id", "lvl-warn")]);
    // A rejected reload logs at error level: once it shows, the log is past the second request.
    let r = reload_api(&proxy, "buckets: []\n");
    assert_eq!(r.status, 400);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_text().contains("config reload rejected") {
        assert!(Instant::now() < deadline, "no rejection line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = proxy.log_text();
    assert!(log.contains("lvl-info"), "info lines before the reload");
    assert!(
        !log.contains("lvl-warn"),
        "no access (info) lines at level warn"
    );
}
