//! The limit phase and stale-if-error through the real binary against RGW (and
//! `tests/support/faulty-origin.py` where S3 must be slow or gone).
//!
//! Asserted: `server.ip_block` refuses the client with a 403 JSON error (counted in
//! `requests_limited_total{reason="ip_blocked"}`), `ip_allow` wins where both lists match, a
//! non-empty `ip_allow` refuses everyone else, a bucket's own lists apply to that bucket only,
//! and the client address is the `X-Forwarded-For` hop `trusted_proxies` leads to (IPv4 and
//! IPv6); `server.max_concurrent_requests: 2` with two downloads stalled by a slow origin
//! answers a third request, a cache hit included, 503 JSON with `Retry-After: 1` (counted as
//! `shed`), and admits requests again once the downloads end; an expired entry whose S3 is gone
//! is served `X-Cache: STALE` / `detail=stale`, exact, inside the bucket's
//! `cache.stale_if_error_seconds`, and with the default 0 the client gets 502 instead (RFC 9111
//! section 4.2.4). Rate limits: `per_ip_rps: 20` on four shards holds a client on one
//! connection and one on eight to 20 +/- 10% per second each (the limit is node-wide, not per
//! core); a bucket's `rate_limit.rps`, `per_user_rps` (by JWT `sub`) and `global_rps` answer
//! 429 JSON with `Retry-After`, counted as `rate_bucket` / `rate_user` / `rate_global`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The standard config with `server_extra` and a `cache:` section holding the memory tier.
fn yaml(server_extra: &str, extra_buckets: &str) -> String {
    config(server_extra, extra_buckets).replace(
        "logging:",
        "cache:\n  memory: {max_cache_size_mb: 64, max_item_size_mb: 10, default_ttl_seconds: 3600}\nlogging:",
    )
}

/// `yaml` with `lines` (bucket-level keys, indented by 4) added to the bucket named `name`.
fn with_bucket_keys(yaml: &str, name: &str, lines: &str) -> String {
    let anchor = format!("  - name: {name}\n");
    assert!(yaml.contains(&anchor), "no bucket {name}");
    yaml.replacen(&anchor, &format!("{anchor}{lines}"), 1)
}

fn limited(p: &Proxy, reason: &str) -> u64 {
    metric_sum(
        &metrics_text(p),
        "yatagarasu_requests_limited_total",
        &[("reason", reason)],
    )
}

fn get(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> Response {
    p.get(path, headers)
}

#[test]
fn ip_lists_refuse_with_403_and_allow_wins() {
    let hello = backend().object("yata-public", "hello.txt").clone();
    let p = Proxy::start(&yaml("  ip_block: [\"127.0.0.0/8\"]\n", ""));
    let r = get(&p, "/public/hello.txt", &[]);
    r.assert_json_error(403);
    assert_eq!(limited(&p, "ip_blocked"), 1);
    assert_eq!(limited(&p, "shed"), 0);

    // Allow wins where both match.
    let both = yaml(
        "  ip_block: [\"127.0.0.0/8\"]\n  ip_allow: [\"127.0.0.1/32\"]\n",
        "",
    );
    assert!(p.reload(&both).contains("config reloaded"));
    let r = get(&p, "/public/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, backend().bytes(&hello));

    // A non-empty allow list refuses every other client.
    let other = yaml("  ip_allow: [\"10.0.0.0/8\", \"2001:db8::/32\"]\n", "");
    assert!(p.reload(&other).contains("config reloaded"));
    get(&p, "/public/hello.txt", &[]).assert_json_error(403);

    // A bucket's lists apply to that bucket only.
    let per_bucket = with_bucket_keys(&yaml("", ""), "media", "    ip_block: [\"127.0.0.1/32\"]\n");
    assert!(p.reload(&per_bucket).contains("config reloaded"));
    assert_eq!(get(&p, "/public/hello.txt", &[]).status, 200);
    get(&p, "/media/video.bin", &[]).assert_json_error(403);
}

#[test]
fn the_client_address_is_the_hop_trusted_proxies_lead_to() {
    let p = Proxy::start(&yaml(
        "  trusted_proxies: [\"127.0.0.0/8\"]\n  ip_block: [\"203.0.113.0/24\", \"2001:db8::/32\"]\n",
        "",
    ));
    for (xff, status) in [
        ("203.0.113.7", 403),
        ("198.51.100.1, 127.0.0.2", 200),
        ("203.0.113.9, 127.0.0.2", 403),
        ("2001:db8::1", 403),
        ("[2001:db8::5]:443", 403),
        ("2001:db9::1", 200),
    ] {
        let r = get(&p, "/public/hello.txt", &[("X-Forwarded-For", xff)]);
        assert_eq!(r.status, status, "X-Forwarded-For: {xff}");
        if status == 403 {
            r.assert_json_error(403);
        }
    }
    // Without trusted_proxies the header is the client's word, not believed.
    let q = Proxy::start(&yaml("  ip_block: [\"203.0.113.0/24\"]\n", ""));
    let r = get(
        &q,
        "/public/hello.txt",
        &[("X-Forwarded-For", "203.0.113.7")],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn max_concurrent_requests_sheds_with_503_and_retry_after() {
    // Each body byte-chunk of 1 KiB 300 ms apart: a 100 KiB download stays in flight ~30 s.
    let origin = FaultyOrigin::start("slow-body", &["--chunk-bytes", "1024", "--delay-ms", "300"]);
    let b = backend();
    let slow = bucket_yaml(
        "slow",
        "/slow",
        "yata-public",
        &origin.endpoint(),
        &b.ak1,
        &b.sk1,
        "",
    ) + "    cache: {enabled: false}\n";
    let p = Proxy::start(&yaml("  max_concurrent_requests: 2\n", &slow));
    // A cache hit to check below: filled before the limit is reached.
    let hello = b.object("yata-public", "hello.txt").clone();
    assert_eq!(get(&p, "/public/hello.txt", &[]).status, 200);
    assert_eq!(get(&p, "/public/hello.txt", &[]).status, 200);

    let mut stalled: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = p.client();
            c.send(&request_bytes("GET", "/slow/100k.bin", &[]));
            c
        })
        .collect();
    // Both are in flight once the origin has sent their heads.
    std::thread::sleep(Duration::from_millis(800));
    let t = Instant::now();
    let r = get(&p, "/public/hello.txt", &[]);
    assert!(t.elapsed() < Duration::from_millis(500), "shedding waited");
    r.assert_json_error(503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(limited(&p, "shed") >= 1);
    get(&p, "/slow/1k.bin", &[]).assert_json_error(503);

    // The downloads end (the clients go away): requests are admitted again.
    stalled.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&p, "/public/hello.txt", &[]);
        if r.status == 200 {
            assert_eq!(r.body, b.bytes(&hello));
            break;
        }
        assert!(Instant::now() < deadline, "still shedding: {}", r.status);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stale_if_error_serves_an_expired_entry_within_its_window_only() {
    let b = backend();
    let hello = b.object("yata-public", "hello.txt").clone();
    let origin_a = FaultyOrigin::start("pass", &[]);
    let origin_b = FaultyOrigin::start("pass", &[]);
    let bucket = |name: &str, origin: &FaultyOrigin, stale: u64| {
        bucket_yaml(
            name,
            &format!("/{name}"),
            "yata-public",
            &origin.endpoint(),
            &b.ak1,
            &b.sk1,
            "",
        ) + &format!("    cache: {{ttl_seconds: 1, stale_if_error_seconds: {stale}}}\n")
    };
    let extra = bucket("graceful", &origin_a, 60) + &bucket("strict", &origin_b, 0);
    let p = Proxy::start(&yaml("", &extra));
    for name in ["graceful", "strict"] {
        let r = get(&p, &format!("/{name}/hello.txt"), &[]);
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("x-cache"), Some("MISS"), "{name}");
    }
    // Expired, and S3 gone.
    std::thread::sleep(Duration::from_millis(1500));
    drop(origin_a);
    drop(origin_b);
    let r = get(&p, "/graceful/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("STALE"));
    assert_eq!(
        r.header("cache-status"),
        Some("yatagarasu; hit; detail=stale")
    );
    assert_eq!(r.body, b.bytes(&hello));
    let r = get(&p, "/strict/hello.txt", &[]);
    r.assert_json_error(502);
}

/// Requests answered 200 and 429 (the 429s checked: JSON, `Retry-After` >= 1) by one client
/// address (`X-Forwarded-For: ip`, believed through `trusted_proxies`) on `connections`
/// keep-alive connections, each sending hits back to back until `until`.
fn hammer(p: &Proxy, ip: &str, connections: usize, until: Instant) -> (u64, u64) {
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let mut c = p.client();
            let ip = ip.to_owned();
            std::thread::spawn(move || {
                let (mut ok, mut limited) = (0u64, 0u64);
                while Instant::now() < until {
                    let r = c.request("GET", "/public/hello.txt", &[("X-Forwarded-For", &ip)]);
                    match r.status {
                        200 => ok += 1,
                        429 => {
                            let after: u32 = r
                                .header("retry-after")
                                .expect("Retry-After")
                                .parse()
                                .expect("seconds");
                            assert!(after >= 1);
                            limited += 1;
                        }
                        s => panic!("unexpected status {s}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

#[test]
fn per_ip_rate_is_exact_node_wide_on_one_connection_or_eight() {
    // Four shards: connections of one address land on several cores (4-tuple hash), and a
    // per-core budget of rate / 4 would hold the one-connection client to 5 per second.
    let p = Proxy::start(&yaml(
        "  shards: 4\n  trusted_proxies: [\"127.0.0.1/32\"]\n  rate_limit: {per_ip_rps: 20}\n",
        "",
    ));
    let hello = backend().object("yata-public", "hello.txt").clone();
    let r = get(
        &p,
        "/public/hello.txt",
        &[("X-Forwarded-For", "198.51.100.9")],
    );
    assert_eq!(r.body, backend().bytes(&hello));
    // Spend both clients' bursts (2 x rate), then measure 3 s of steady state.
    let burst_end = Instant::now() + Duration::from_millis(300);
    let (one, eight) = std::thread::scope(|s| {
        let a = s.spawn(|| hammer(&p, "198.51.100.1", 1, burst_end));
        let b = s.spawn(|| hammer(&p, "198.51.100.2", 8, burst_end));
        (a.join().expect("a"), b.join().expect("b"))
    });
    for (name, (ok, limited)) in [("one connection", one), ("eight connections", eight)] {
        assert!(
            (40..=47).contains(&ok),
            "{name}: burst of {ok} (40 + ~6 in 300 ms)"
        );
        assert!(limited > 0, "{name}: never limited");
    }
    let window = Duration::from_secs(3);
    let end = Instant::now() + window;
    let (one, eight) = std::thread::scope(|s| {
        let a = s.spawn(|| hammer(&p, "198.51.100.1", 1, end));
        let b = s.spawn(|| hammer(&p, "198.51.100.2", 8, end));
        (a.join().expect("a"), b.join().expect("b"))
    });
    for (name, (ok, limited)) in [("one connection", one), ("eight connections", eight)] {
        let rate = ok as f64 / window.as_secs_f64();
        assert!(
            (18.0..=22.0).contains(&rate),
            "{name}: {rate:.1} requests/s admitted (limit 20 +/- 10%), {limited} refused"
        );
        assert!(
            limited > ok,
            "{name}: the client was not pushing past the limit"
        );
    }
    let text = metrics_text(&p);
    let refused = metric_sum(
        &text,
        "yatagarasu_requests_limited_total",
        &[("reason", "rate_ip")],
    );
    assert!(refused >= one.1 + eight.1, "{refused} counted");
    // Another address is untouched by both.
    let r = get(
        &p,
        "/public/hello.txt",
        &[("X-Forwarded-For", "198.51.100.3")],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn bucket_global_and_user_rates_answer_429_json_with_retry_after() {
    const SECRET: &str = "limits-test-hs256-secret-0123456789abcdef";
    let token = |sub: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": sub, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    };
    let base = with_bucket_keys(&yaml("", ""), "media", "    rate_limit: {rps: 2}\n");
    let base = base.replacen(
        "cache:\n",
        &format!("jwt:\n  algorithms: [HS256]\n  secret: \"{SECRET}\"\ncache:\n"),
        1,
    );
    let base = with_bucket_keys(&base, "private", "    auth: {enabled: true}\n");
    let p = Proxy::start(&base);

    // Bucket: a burst of 4 (2 x rps) to /media, then 429 (one more may refill meanwhile, one
    // per 500 ms); /public is not limited.
    let mut ok = 0;
    let refused = loop {
        let r = get(&p, "/media/video.bin", &[]);
        if r.status != 200 {
            break r;
        }
        ok += 1;
        assert!(ok <= 6, "the bucket's rate never refused");
    };
    assert!((4..=5).contains(&ok), "{ok} admitted before the first 429");
    refused.assert_json_error(429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(get(&p, "/public/hello.txt", &[]).status, 200);

    // Per user: alice's tokens run out, bob's do not.
    let users = base.replace("server:\n", "server:\n  rate_limit: {per_user_rps: 1}\n");
    assert!(p.reload(&users).contains("config reloaded"));
    let alice = format!("Bearer {}", token("alice"));
    let bob = format!("Bearer {}", token("bob"));
    for _ in 0..2 {
        assert_eq!(
            get(&p, "/private/secret.txt", &[("Authorization", &alice)]).status,
            200
        );
    }
    get(&p, "/private/secret.txt", &[("Authorization", &alice)]).assert_json_error(429);
    assert_eq!(
        get(&p, "/private/secret.txt", &[("Authorization", &bob)]).status,
        200
    );
    // Public buckets carry no subject: not limited per user.
    for _ in 0..5 {
        assert_eq!(get(&p, "/public/hello.txt", &[]).status, 200);
    }

    // Global: every request of the node together.
    let global = base.replace("server:\n", "server:\n  rate_limit: {global_rps: 3}\n");
    assert!(p.reload(&global).contains("config reloaded"));
    let mut ok = 0;
    for i in 0..10 {
        // Two buckets (/media is still under its own spent rate, so not that one).
        let r = if i % 2 == 0 {
            get(&p, "/public/hello.txt", &[])
        } else {
            get(&p, "/private/secret.txt", &[("Authorization", &bob)])
        };
        if r.status == 200 {
            ok += 1;
        } else {
            r.assert_json_error(429);
        }
    }
    // Burst 6, plus one per 333 ms while the ten run (hits, a few ms each).
    assert!(
        (6..=8).contains(&ok),
        "{ok} admitted of 10 under global_rps 3 (burst 6)"
    );
    let text = metrics_text(&p);
    for reason in ["rate_bucket", "rate_user", "rate_global"] {
        let n = metric_sum(
            &text,
            "yatagarasu_requests_limited_total",
            &[("reason", reason)],
        );
        assert!(n >= 1, "{reason}: {n}");
    }
}

#[test]
fn per_ip_rate_counts_an_ipv6_client_by_its_64() {
    let p = Proxy::start(&yaml(
        "  trusted_proxies: [\"127.0.0.1/32\"]\n  rate_limit: {per_ip_rps: 1}\n",
        "",
    ));
    let from = |ip: &str| get(&p, "/public/hello.txt", &[("X-Forwarded-For", ip)]);
    // A burst of 2 for the whole /64, however many addresses the client rotates through.
    assert_eq!(from("2001:db8:0:7::1").status, 200);
    assert_eq!(from("2001:db8:0:7::2").status, 200);
    from("2001:db8:0:7:abcd::3").assert_json_error(429);
    assert_eq!(from("2001:db8:0:8::1").status, 200, "another /64");
}
