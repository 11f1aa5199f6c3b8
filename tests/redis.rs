//! The Redis cache tier (`cache.redis`) through the real binary against RGW and real `redis-server`
//! processes (tests/common/redis.rs: one standalone server or one 3-master, 3-replica Redis Cluster
//! per test, on free loopback ports, stopped by PID), each test with its own uploaded objects, key
//! prefix and purge channel, on the suite's shard count.
//!
//! Asserted: a fill on one proxy is a `detail=redis` hit on another sharing the Redis (1 KiB and
//! ~1 MiB, exact bytes, no S3 GET), promoted to memory there (`detail=memory` next), with the
//! per-bucket redis hit / miss / insert counters moving by exact amounts; with Redis stopped, every
//! GET (cached in Redis or not) is still a 200 with exact bytes from S3 within `timeout_ms` +
//! 250 ms, `/ready` stays 200 and the connected gauge drops to 0, and after a restart on the same
//! port new fills reach Redis again within 10 s and are redis hits on another proxy that was idle
//! through the outage; an idle proxy's `connected` gauge drops to 0 within 10 s of Redis stopping
//! and comes back after the restart with no request made, and its first GETs then are redis hits
//! (no stale connection); a proxy started with nothing listening at its Redis URL starts, serves
//! exact misses, is ready, and logs a warning naming redis; a hung Redis (SIGSTOP) costs each GET
//! at most `timeout_ms` + 250 ms, counts timeouts and then skips the tier (`skipped` grows), and
//! after SIGCONT the tier answers hits again; a key purge on one proxy deletes the Redis key at
//! once (`redis_deleted: 1`) and, through the purge channel, the other proxy's memory copy within
//! 1 s, and a bucket purge deletes every key of the bucket in Redis (SCAN) and every copy on the
//! other proxy; a Redis value overwritten with garbage or truncated by one byte is a MISS with
//! exact bytes from S3, counted as corrupt, and is replaced by a valid value (a redis hit
//! afterwards); an object over `cache.redis.max_item_size_mb` never reaches Redis while memory
//! still serves it; in Redis Cluster mode fills spread over several masters and are redis hits on
//! another proxy; a master SIGKILLed mid-traffic costs no error and no wrong byte (each GET within
//! `timeout_ms` + 250 ms) and after the failover a new fill on a slot of the failed master is a
//! redis hit on another proxy within 15 s (its first lookups there may miss until its slot map is
//! refreshed); a password and a db number in the URL are used (keys land in db 3, none in db 0) and
//! the password is never logged; `rediss://` (a TLS-only redis-server with the backends' test CA,
//! trusted through `SSL_CERT_FILE`) carries fills, hits and a purge between two proxies; a reload
//! that re-points a bucket at another S3 bucket deletes its keys in Redis and, over the purge
//! channel, the other proxy's copies. Two harness self-tests check the Redis processes themselves
//! (restart on the same port, pause, auth; cluster creation and failover).
//!
//! Fills reach Redis behind the response: every test that needs a key in Redis polls Redis for it
//! with a deadline first (in cluster mode the filling proxy has no memory tier and GETs until the
//! key is stored: a shard skips the tier until it has the slot map, ~0.2-0.4 s after start). S3
//! GETs are counted in RGW's ops log as deltas; keys carry a per-run nonce so runs and parallel
//! tests do not disturb each other's counts. Redis keys are
//! `<key_prefix>obj:<bucket name>:<object key>`; nothing else about the stored value is assumed.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::redis::{free_port, resp, RedisCluster, RedisServer, Reply};
use common::*;

/// The S3 bucket the uploaded test objects live in, the proxy prefix and bucket name (metrics
/// label, admin URLs, Redis keys) that map to it.
const BUCKET: &str = "yata-public";
const PREFIX: &str = "/public";
const NAME: &str = "public";

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// `cache.redis.timeout_ms` of most tests.
const TIMEOUT_MS: u64 = 50;
/// What a request may take over `timeout_ms` when Redis is down or hung (a loaded 2-CPU CI box
/// running debug builds and parallel tests).
const MARGIN: Duration = Duration::from_millis(250);
/// How long a poll for an asynchronous fill may take before the test fails.
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Objects.

/// An object this file uploads to RGW.
struct Obj {
    key: String,
    path: String,
    bytes: Vec<u8>,
}

/// A per-run nonce for keys, prefixes and channels.
fn nonce() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{ns:x}", std::process::id())
}

/// Upload `key` with `len` deterministic bytes (different per key).
fn upload_key(key: String, len: usize) -> Obj {
    let seed = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let bytes = object_bytes(seed, len);
    put_object(BUCKET, &key, &bytes);
    Obj {
        path: format!("{PREFIX}/{}", encode_key(&key)),
        key,
        bytes,
    }
}

/// Upload one object per size under `redis/<test>-<nonce>/`.
fn upload(test: &str, sizes: &[usize]) -> Vec<Obj> {
    let run = nonce();
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| upload_key(format!("redis/{test}-{run}/{i}-{len}.bin"), len))
        .collect()
}

/// S3 GETs logged so far for each of `objs`.
fn s3_gets(objs: &[&Obj]) -> Vec<usize> {
    let keys: Vec<&str> = objs.iter().map(|o| o.key.as_str()).collect();
    s3_requests_each(BUCKET, &keys, None)
}

// ---------------------------------------------------------------------------------------------
// Config.

/// Where the tier points: one server, or the seed nodes of a cluster.
#[derive(Clone)]
enum Target {
    Url(String),
    Cluster(Vec<String>),
}

/// The `cache:` settings of one proxy. Proxies built from clones of one `Tier` share its Redis,
/// key prefix and purge channel.
#[derive(Clone)]
struct Tier {
    target: Target,
    prefix: String,
    channel: String,
    timeout_ms: u64,
    max_item_mb: u64,
    /// `cache.memory.max_cache_size_mb`; 0 turns the memory tier off, so every GET asks Redis.
    mem_mb: u64,
}

impl Tier {
    fn new(target: Target) -> Tier {
        let n = nonce();
        Tier {
            target,
            prefix: format!("yt-{n}:"),
            channel: format!("yt-{n}:purge"),
            timeout_ms: TIMEOUT_MS,
            max_item_mb: 4,
            mem_mb: 64,
        }
    }

    fn url(url: &str) -> Tier {
        Tier::new(Target::Url(url.to_owned()))
    }

    fn cluster(nodes: Vec<String>) -> Tier {
        Tier::new(Target::Cluster(nodes))
    }

    /// The same Redis, prefix and channel without the memory tier.
    fn no_memory(&self) -> Tier {
        Tier {
            mem_mb: 0,
            ..self.clone()
        }
    }

    fn max_item_mb(self, mb: u64) -> Tier {
        Tier {
            max_item_mb: mb,
            ..self
        }
    }

    /// The standard test config with this `cache:` section.
    fn yaml(&self) -> String {
        let target = match &self.target {
            Target::Url(u) => format!("    url: \"{u}\"\n"),
            Target::Cluster(nodes) => format!(
                "    cluster_nodes: [{}]\n",
                nodes
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let memory = if self.mem_mb == 0 {
            "{max_cache_size_mb: 0}".to_string()
        } else {
            format!(
                "{{max_cache_size_mb: {}, max_item_size_mb: 10}}",
                self.mem_mb
            )
        };
        config("", "").replace(
            "logging:",
            &format!(
                "cache:\n  memory: {memory}\n  redis:\n    enabled: true\n{target}    key_prefix: \"{}\"\n    ttl_seconds: 3600\n    timeout_ms: {}\n    max_item_size_mb: {}\n    purge_channel: \"{}\"\nlogging:",
                self.prefix, self.timeout_ms, self.max_item_mb, self.channel
            ),
        )
    }

    fn start(&self) -> Proxy {
        Proxy::start(&self.yaml())
    }

    /// The Redis key of `o`.
    fn key(&self, o: &Obj) -> Vec<u8> {
        format!("{}obj:{NAME}:{}", self.prefix, o.key).into_bytes()
    }

    /// The SCAN pattern of every key of the public bucket.
    fn bucket_pattern(&self) -> String {
        format!("{}obj:{NAME}:*", self.prefix)
    }
}

// ---------------------------------------------------------------------------------------------
// Redis, standalone or cluster, as the tests look at it.

trait Store {
    fn has(&self, key: &[u8]) -> bool;
}

impl Store for RedisServer {
    fn has(&self, key: &[u8]) -> bool {
        self.exists(key)
    }
}

impl Store for RedisCluster {
    fn has(&self, key: &[u8]) -> bool {
        self.exists(key)
    }
}

/// Poll `done` every 50 ms until it holds; fails the test with `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out ({limit:?}) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until every one of `objs` has its key in `store`, filled by `filler` (whose Redis metrics
/// and warnings the failure shows).
fn wait_in_redis(store: &impl Store, tier: &Tier, objs: &[&Obj], filler: &Proxy) {
    let deadline = Instant::now() + SETTLE;
    for o in objs {
        let key = tier.key(o);
        while !store.has(&key) {
            if Instant::now() > deadline {
                panic!(
                    "timed out ({SETTLE:?}) waiting for {} in Redis; the filling proxy's redis metrics:\n{}\nits warnings:\n{}",
                    String::from_utf8_lossy(&key),
                    redis_lines(&metrics_text(filler)),
                    warnings(filler)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// GET each of `objs` via `filler` (memory tier off, so every GET is a miss until the key is in
/// Redis) until all are in `store`. For Redis Cluster proxies: until a shard has the slot map
/// (a few hundred ms after start) its lookups are skipped and its fills dropped.
fn fill_until_stored(filler: &Proxy, store: &impl Store, tier: &Tier, objs: &[&Obj]) {
    assert_eq!(
        tier.mem_mb, 0,
        "fill_until_stored needs a filler without a memory tier"
    );
    let deadline = Instant::now() + SETTLE;
    let mut missing: Vec<&Obj> = objs.to_vec();
    while !missing.is_empty() {
        for o in &missing {
            get_exact(filler, o);
        }
        std::thread::sleep(Duration::from_millis(100));
        missing.retain(|o| !store.has(&tier.key(o)));
        if !missing.is_empty() && Instant::now() > deadline {
            panic!(
                "timed out ({SETTLE:?}) filling {} into Redis; the filling proxy's redis metrics:\n{}\nits warnings:\n{}",
                missing[0].key,
                redis_lines(&metrics_text(filler)),
                warnings(filler)
            );
        }
    }
}

/// The proxy's WARN and ERROR log lines.
fn warnings(p: &Proxy) -> String {
    p.log_text()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Requests.

fn x_cache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("")
}

fn cache_status(r: &Response) -> &str {
    r.header("cache-status").unwrap_or("")
}

fn describe(r: &Response) -> String {
    format!(
        "status {} x-cache {:?} cache-status {:?} body {} bytes",
        r.status,
        r.header("x-cache"),
        r.header("cache-status"),
        r.body.len()
    )
}

/// GET `o` on a fresh connection: a 200 with exactly its bytes (panics otherwise).
fn get_exact(p: &Proxy, o: &Obj) -> Response {
    let r = p.get(&o.path, &[]);
    assert_eq!(r.status, 200, "GET {}: {}", o.path, describe(&r));
    assert!(
        r.body == o.bytes,
        "GET {}: body differs: {} bytes sha256 {}, expected {} bytes sha256 {} ({})",
        o.path,
        r.body.len(),
        sha256_hex(&r.body),
        o.bytes.len(),
        sha256_hex(&o.bytes),
        describe(&r)
    );
    r
}

/// [`get_exact`] that must take at most `timeout_ms` + [`MARGIN`].
fn get_bounded(p: &Proxy, o: &Obj, timeout_ms: u64) -> Response {
    let t0 = Instant::now();
    let r = get_exact(p, o);
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(timeout_ms) + MARGIN,
        "GET {} took {took:?}, over timeout_ms {timeout_ms} + {MARGIN:?} ({})",
        o.path,
        describe(&r)
    );
    r
}

fn assert_redis_hit(r: &Response, what: &str) {
    assert_eq!(
        (x_cache(r), cache_status(r)),
        ("HIT", "yatagarasu; hit; detail=redis"),
        "{what}: {}",
        describe(r)
    );
}

fn assert_memory_hit(r: &Response, what: &str) {
    assert_eq!(
        (x_cache(r), cache_status(r)),
        ("HIT", "yatagarasu; hit; detail=memory"),
        "{what}: {}",
        describe(r)
    );
}

fn assert_miss(r: &Response, what: &str) {
    assert_eq!(x_cache(r), "MISS", "{what}: {}", describe(r));
}

/// Wait (up to 15 s) until `/ready` on the admin listener answers 200 (bucket probes run first).
fn wait_ready(p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = p.admin("GET", "/ready", &[]);
        if r.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/ready is {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// The Redis layer's per-bucket series `yatagarasu_cache_<what>_total` (`hits`, `misses`,
/// `inserts`) for the public bucket, summed over shards.
fn redis_bucket(text: &str, what: &str) -> u64 {
    metric_sum(
        text,
        &format!("yatagarasu_cache_{what}_total"),
        &[("bucket", NAME), ("layer", "redis")],
    )
}

/// A per-shard Redis series `yatagarasu_cache_redis_<what>` (`connected`, `timeouts_total`,
/// `skipped_total`, `corrupt_total`...), summed over shards.
fn redis_shard(text: &str, what: &str) -> u64 {
    metric_sum(text, &format!("yatagarasu_cache_redis_{what}"), &[])
}

fn redis_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("redis") && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Poll `/metrics` until `done` holds (failing the test with `what` and the Redis metrics after
/// [`SETTLE`]); the last metrics text.
fn wait_metrics(p: &Proxy, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = metrics_text(p);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; redis metrics:\n{}",
            redis_lines(&text)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Standalone Redis.

#[test]
fn a_fill_on_one_proxy_is_a_redis_hit_on_another() {
    let redis = RedisServer::start();
    let tier = Tier::url(&redis.url());
    let objs = upload("share", &[KIB, MIB + 12_345]);
    let all: Vec<&Obj> = objs.iter().collect();
    let a = tier.start();
    let b = tier.start();
    for o in &objs {
        let r = get_exact(&a, o);
        assert_miss(&r, "first GET via A");
        assert_eq!(
            cache_status(&r),
            "yatagarasu; fwd=miss; stored",
            "{}",
            describe(&r)
        );
    }
    wait_in_redis(&redis, &tier, &all, &a);
    let before = s3_gets(&all);
    for o in &objs {
        assert_redis_hit(&get_exact(&b, o), "first GET via B");
        assert_memory_hit(&get_exact(&b, o), "second GET via B (promoted)");
    }
    assert_eq!(s3_gets(&all), before, "B's GETs reached S3");
    // A: two redis misses, two inserts; B: two redis hits, no redis miss.
    wait_metrics(&a, "2 redis inserts on A", |t| {
        redis_bucket(t, "inserts") == 2
    });
    let ta = metrics_text(&a);
    assert_eq!(redis_bucket(&ta, "misses"), 2, "{}", redis_lines(&ta));
    assert_eq!(redis_bucket(&ta, "hits"), 0, "{}", redis_lines(&ta));
    let tb = metrics_text(&b);
    assert_eq!(redis_bucket(&tb, "hits"), 2, "{}", redis_lines(&tb));
    assert_eq!(redis_bucket(&tb, "misses"), 0, "{}", redis_lines(&tb));
    assert_eq!(
        redis_shard(&tb, "connected"),
        shards() as u64,
        "{}",
        redis_lines(&tb)
    );
}

#[test]
fn redis_down_costs_nothing_but_hit_ratio() {
    let mut redis = RedisServer::start();
    let tier = Tier::url(&redis.url());
    let cached = upload("down-cached", &[KIB, 4 * KIB, 64 * KIB, 256 * KIB, 3 * KIB]);
    let uncached = upload("down-uncached", &[KIB, 8 * KIB, 100 * KIB, 2 * KIB, 512]);
    let a = tier.start();
    // B and C have no memory tier: every GET asks Redis, so none is a memory hit. C is idle
    // until Redis has restarted.
    let b = tier.no_memory().start();
    let c = tier.no_memory().start();
    for o in &cached {
        get_exact(&a, o);
    }
    wait_in_redis(&redis, &tier, &cached.iter().collect::<Vec<_>>(), &a);
    assert_redis_hit(&get_exact(&b, &cached[0]), "B before Redis stops");

    redis.stop();
    let mixed: Vec<&Obj> = (0..30)
        .map(|i| {
            if i % 2 == 0 {
                &cached[(i / 2) % 5]
            } else {
                &uncached[(i / 2) % 5]
            }
        })
        .collect();
    let unique: Vec<&Obj> = cached.iter().chain(&uncached).collect();
    let before = s3_gets(&unique);
    for o in &mixed {
        let r = get_bounded(&b, o, TIMEOUT_MS);
        assert_miss(&r, "GET with Redis stopped");
    }
    let after = s3_gets(&unique);
    let fetched: usize = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    assert_eq!(fetched, 30, "every GET with Redis down is one S3 GET");
    wait_ready(&b);
    wait_ready(&a);
    wait_metrics(&b, "redis_connected 0 on every shard of B", |t| {
        redis_shard(t, "connected") == 0
    });

    // Back on the same port (empty: no persistence): new fills reach it again.
    redis.restart();
    let fresh = upload("down-fresh", &[2 * KIB]);
    let key = tier.key(&fresh[0]);
    wait_until("a fill via B after the restart in Redis", SETTLE, || {
        get_bounded(&b, &fresh[0], TIMEOUT_MS);
        std::thread::sleep(Duration::from_millis(150));
        redis.exists(&key)
    });
    // A proxy that lived through the outage without a request (C) answers from the restarted
    // Redis within 10 s. Polled: an idle shard may notice its old connection is gone only at
    // its first lookup (a miss); the idle test below asserts more.
    wait_until("a redis hit via C after the restart", SETTLE, || {
        let r = get_bounded(&c, &fresh[0], TIMEOUT_MS);
        cache_status(&r) == "yatagarasu; hit; detail=redis"
    });
}

#[test]
fn an_idle_proxy_notices_redis_going_away_and_coming_back() {
    let mut redis = RedisServer::start();
    let tier = Tier::url(&redis.url()).no_memory();
    let objs = upload("idle", &[KIB, 2 * KIB, 3 * KIB, 4 * KIB]);
    let all: Vec<&Obj> = objs.iter().collect();
    let a = tier.start();
    // P makes no request until Redis has gone and come back.
    let p = tier.start();
    wait_metrics(&p, "P connected on every shard", |t| {
        redis_shard(t, "connected") == shards() as u64
    });
    fill_until_stored(&a, &redis, &tier, &all);

    redis.stop();
    wait_metrics(
        &p,
        "the idle P's connected gauge at 0 after Redis stopped",
        |t| redis_shard(t, "connected") == 0,
    );
    redis.restart();
    fill_until_stored(&a, &redis, &tier, &all);
    wait_metrics(&p, "the idle P reconnected on every shard", |t| {
        redis_shard(t, "connected") == shards() as u64
    });
    // Its first lookups (spread over its shards by key) are hits: no stale connection left.
    for o in &objs {
        assert_redis_hit(&get_exact(&p, o), "P's first GET after the restart");
    }
}

#[test]
fn redis_down_at_start() {
    // A port nobody listens on.
    let port = free_port();
    let tier = Tier::url(&format!("redis://127.0.0.1:{port}/0"));
    let objs = upload("down-at-start", &[KIB, 64 * KIB]);
    let p = tier.start();
    for o in &objs {
        assert_miss(&get_bounded(&p, o, TIMEOUT_MS), "first GET");
        assert_memory_hit(&get_bounded(&p, o, TIMEOUT_MS), "second GET");
    }
    wait_ready(&p);
    wait_until(
        "a WARN log line naming redis",
        Duration::from_secs(5),
        || {
            p.log_text().lines().any(|l| {
                l.contains("\"level\":\"WARN\"") && l.to_ascii_lowercase().contains("redis")
            })
        },
    );
    let t = metrics_text(&p);
    assert_eq!(redis_shard(&t, "connected"), 0, "{}", redis_lines(&t));
    assert_eq!(redis_bucket(&t, "hits"), 0, "{}", redis_lines(&t));
}

#[test]
fn a_hung_redis_is_a_miss_within_the_timeout() {
    let mut redis = RedisServer::start();
    let tier = Tier::url(&redis.url());
    let objs = upload("hung", &[KIB, 16 * KIB, 128 * KIB, 5 * KIB]);
    let a = tier.start();
    let b = tier.no_memory().start();
    for o in &objs {
        get_exact(&a, o);
    }
    wait_in_redis(&redis, &tier, &objs.iter().collect::<Vec<_>>(), &a);
    assert_redis_hit(&get_exact(&b, &objs[0]), "B before the pause");

    redis.pause();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut gets = 0;
    let text = loop {
        for o in &objs {
            assert_miss(&get_bounded(&b, o, TIMEOUT_MS), "GET with Redis hung");
            gets += 1;
        }
        let t = metrics_text(&b);
        if redis_shard(&t, "timeouts_total") > 0 && redis_shard(&t, "skipped_total") > 0 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "after {gets} GETs with Redis hung, no timeout and skip counted:\n{}",
            redis_lines(&t)
        );
    };
    assert!(gets >= 2, "{gets} GETs:\n{}", redis_lines(&text));
    redis.resume();
    // The tier comes back after its back-off: a redis hit again (the values are still there).
    wait_until("a redis hit on B after SIGCONT", SETTLE, || {
        let r = get_bounded(&b, &objs[1], TIMEOUT_MS);
        std::thread::sleep(Duration::from_millis(100));
        cache_status(&r) == "yatagarasu; hit; detail=redis"
    });
}

#[test]
fn a_key_purge_on_one_proxy_reaches_the_other() {
    let redis = RedisServer::start();
    let tier = Tier::url(&redis.url());
    let objs = upload("purge", &[KIB, 2 * KIB, 3 * KIB]);
    let (x, ys) = (&objs[0], [&objs[1], &objs[2]]);
    let a = tier.start();
    let b = tier.start();
    get_exact(&a, x);
    wait_in_redis(&redis, &tier, &[x], &a);
    assert_redis_hit(&get_exact(&b, x), "B, first");
    assert_memory_hit(&get_exact(&b, x), "B, second");

    // A key purge on A: the Redis key at once, B's memory copy within 1 s.
    let before = s3_gets(&[x]);
    let p = a.admin(
        "POST",
        &format!("/admin/cache/purge/{NAME}/{}", encode_key(&x.key)),
        &[],
    );
    let purged_at = Instant::now();
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    let v = p.json();
    assert_eq!(v["redis_deleted"], 1, "{v}");
    assert!(
        !redis.exists(&tier.key(x)),
        "the Redis key survived the purge"
    );
    loop {
        let r = get_exact(&b, x);
        if x_cache(&r) == "MISS" {
            break;
        }
        assert!(
            purged_at.elapsed() < Duration::from_secs(1),
            "B still answers a purged key from its cache 1 s after the purge: {}",
            describe(&r)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s3_gets(&[x])[0], before[0] + 1, "B's miss is one S3 GET");
    let r = get_exact(&a, x);
    assert_ne!(
        cache_status(&r),
        "yatagarasu; hit; detail=memory",
        "A kept its own memory copy"
    );

    // A bucket purge: every key of the bucket in Redis, every copy on B.
    for y in ys {
        get_exact(&a, y);
    }
    wait_in_redis(&redis, &tier, &[x, ys[0], ys[1]], &a);
    for y in ys {
        assert_redis_hit(&get_exact(&b, y), "B before the bucket purge");
    }
    let held = redis.scan(&tier.bucket_pattern()).len();
    assert_eq!(held, 3, "keys of the bucket before the purge");
    let p = a.admin("POST", &format!("/admin/cache/purge/{NAME}"), &[]);
    let purged_at = Instant::now();
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    let v = p.json();
    assert_eq!(v["redis_deleted"], 3, "{v}");
    let left = redis.scan(&tier.bucket_pattern());
    assert!(
        left.is_empty(),
        "keys left after the bucket purge: {:?}",
        left.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
    for y in ys {
        loop {
            let r = get_exact(&b, y);
            if x_cache(&r) == "MISS" {
                break;
            }
            assert!(
                purged_at.elapsed() < Duration::from_secs(1),
                "B still answers {} 1 s after the bucket purge: {}",
                y.key,
                describe(&r)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_corrupt_value_is_a_miss_and_is_deleted() {
    let redis = RedisServer::start();
    let tier = Tier::url(&redis.url());
    let objs = upload("corrupt", &[KIB, 100 * KIB]);
    let all: Vec<&Obj> = objs.iter().collect();
    let a = tier.start();
    let b = tier.no_memory().start();
    for o in &objs {
        get_exact(&a, o);
    }
    wait_in_redis(&redis, &tier, &all, &a);
    // Garbage in one value, one byte cut off the end of the other.
    let (k0, k1) = (tier.key(&objs[0]), tier.key(&objs[1]));
    let valid = redis.get(&k1).expect("value of the second object");
    let bad = [b"garbage".to_vec(), valid[..valid.len() - 1].to_vec()];
    redis.must(&[b"SET", &k0, &bad[0]]);
    redis.must(&[b"SET", &k1, &bad[1]]);

    let before = s3_gets(&all);
    for o in &objs {
        assert_miss(&get_exact(&b, o), "GET of a corrupt value");
    }
    let after = s3_gets(&all);
    assert_eq!(after, vec![before[0] + 1, before[1] + 1], "one S3 GET each");
    wait_metrics(&b, "2 corrupt values counted", |t| {
        redis_shard(t, "corrupt_total") == 2
    });
    // The bad values are gone: deleted, and replaced by B's fills.
    for (key, bad) in [(&k0, &bad[0]), (&k1, &bad[1])] {
        wait_until(
            &format!(
                "a valid value for {} in Redis",
                String::from_utf8_lossy(key)
            ),
            SETTLE,
            || redis.get(key).is_some_and(|v| &v != bad),
        );
    }
    for o in &objs {
        assert_redis_hit(&get_exact(&b, o), "GET after the refill");
    }
    assert_eq!(s3_gets(&all), after);
}

#[test]
fn objects_over_max_item_size_skip_redis() {
    let redis = RedisServer::start();
    let tier = Tier::url(&redis.url()).max_item_mb(1);
    let big = upload("big", &[2 * MIB]).pop().unwrap();
    let small = upload("small", &[KIB]).pop().unwrap();
    let a = tier.start();
    assert_miss(&get_exact(&a, &big), "first GET of 2 MiB");
    assert_memory_hit(&get_exact(&a, &big), "second GET of 2 MiB");
    // A fill made after the big one: once it is in Redis, the big one would be too.
    assert_miss(&get_exact(&a, &small), "first GET of 1 KiB");
    wait_in_redis(&redis, &tier, &[&small], &a);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!redis.exists(&tier.key(&big)), "2 MiB object in Redis");
    let keys = redis.scan(&format!("{}*", tier.prefix));
    assert_eq!(keys, vec![tier.key(&small)]);
    let t = wait_metrics(&a, "1 redis insert", |t| redis_bucket(t, "inserts") == 1);
    assert_eq!(redis_bucket(&t, "inserts"), 1, "{}", redis_lines(&t));
    // Another proxy: a miss for the big object.
    let b = tier.start();
    let before = s3_gets(&[&big]);
    assert_miss(&get_exact(&b, &big), "2 MiB via B");
    assert_eq!(s3_gets(&[&big])[0], before[0] + 1);
}

#[test]
fn auth_and_select_are_used() {
    let pw = "yt-redis-pw-7c41e9";
    let redis = RedisServer::start_with(&["--requirepass", pw]);
    let url = redis.url_db(3);
    assert!(url.contains(pw) && url.ends_with("/3"), "{url}");
    let tier = Tier::url(&url);
    let objs = upload("auth", &[KIB, 32 * KIB]);
    let all: Vec<&Obj> = objs.iter().collect();
    let a = tier.start();
    let b = tier.start();
    for o in &objs {
        assert_miss(&get_exact(&a, o), "first GET via A");
    }
    let pattern = format!("{}*", tier.prefix);
    let mut want: Vec<String> = objs
        .iter()
        .map(|o| String::from_utf8(tier.key(o)).unwrap())
        .collect();
    want.sort();
    wait_until("both keys in db 3", SETTLE, || {
        let out = redis.cli(&["-n", "3", "--scan", "--pattern", &pattern]);
        let mut got: Vec<String> = out.lines().map(str::to_owned).collect();
        got.sort();
        got == want
    });
    assert_eq!(redis.must(&[b"DBSIZE"]).int(), 0, "keys in db 0");
    let before = s3_gets(&all);
    for o in &objs {
        assert_redis_hit(&get_exact(&b, o), "GET via B");
    }
    assert_eq!(s3_gets(&all), before);
    for p in [&a, &b] {
        assert!(!p.log_text().contains(pw), "the Redis password was logged");
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster.

#[test]
fn the_cluster_shares_fills_like_a_single_redis() {
    let cluster = RedisCluster::start();
    let tier = Tier::cluster(cluster.masters());
    let objs = upload(
        "cluster",
        &[
            KIB,
            2 * KIB,
            3 * KIB,
            10 * KIB,
            50 * KIB,
            100 * KIB,
            300 * KIB,
            KIB + 1,
        ],
    );
    let all: Vec<&Obj> = objs.iter().collect();
    // A fills (no memory tier: GETs until stored), B reads (memory tier: promotes redis hits).
    let filler = tier.no_memory();
    let a = filler.start();
    let b = tier.start();
    for o in &objs {
        assert_miss(&get_exact(&a, o), "first GET via A");
    }
    fill_until_stored(&a, &cluster, &filler, &all);
    let mut masters: Vec<u16> = objs
        .iter()
        .map(|o| {
            cluster
                .master_of_slot(cluster.keyslot(&tier.key(o)))
                .expect("a master for the slot")
        })
        .collect();
    masters.sort();
    masters.dedup();
    assert!(masters.len() >= 2, "8 keys all on master {masters:?}");
    let before = s3_gets(&all);
    for o in &objs {
        assert_redis_hit(&get_exact(&b, o), "GET via B");
        assert_memory_hit(&get_exact(&b, o), "second GET via B (promoted)");
    }
    assert_eq!(s3_gets(&all), before, "B's GETs reached S3");
    let t = metrics_text(&b);
    assert_eq!(redis_bucket(&t, "hits"), 8, "{}", redis_lines(&t));
}

#[test]
fn the_cluster_survives_a_master_failover() {
    let mut cluster = RedisCluster::start();
    let tier = Tier::cluster(cluster.masters()).no_memory();
    let objs = upload(
        "failover",
        &[KIB, 2 * KIB, 4 * KIB, 8 * KIB, 16 * KIB, 32 * KIB],
    );
    let all: Vec<&Obj> = objs.iter().collect();
    let a = tier.start();
    let b = tier.start();
    fill_until_stored(&a, &cluster, &tier, &all);
    for o in &objs {
        assert_redis_hit(&get_exact(&b, o), "GET via B before the failover");
    }
    let slot = cluster.keyslot(&tier.key(&objs[0]));
    let dead = cluster.kill_master_of_key(&tier.key(&objs[0]));

    // GETs through the failover, from another thread; then until 1 s after it.
    let done = AtomicBool::new(false);
    let gets = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                for o in &objs {
                    get_bounded(&b, o, TIMEOUT_MS);
                    n += 1;
                }
            }
            n
        });
        let waited =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.wait_failover(dead)));
        std::thread::sleep(Duration::from_secs(1));
        done.store(true, Ordering::Relaxed);
        let n = traffic.join().expect("a GET during the failover failed");
        if let Err(e) = waited {
            std::panic::resume_unwind(e);
        }
        n
    });
    assert!(gets >= 6, "{gets} GETs during the failover");
    let new_master = cluster.master_of_slot(slot).expect("slot served again");
    assert_ne!(new_master, dead);

    // A new object whose key hashes to a slot the dead master served.
    let run = nonce();
    let key = (0..1000)
        .map(|i| format!("redis/failover-new-{run}/{i}.bin"))
        .find(|k| {
            let rk = format!("{}obj:{NAME}:{k}", tier.prefix);
            cluster.master_of_slot(cluster.keyslot(rk.as_bytes())) == Some(new_master)
        })
        .expect("a key on the promoted master");
    let fresh = upload_key(key, 20 * KIB);
    let rk = tier.key(&fresh);
    wait_until(
        "a fill via A on the promoted master",
        Duration::from_secs(15),
        || {
            get_exact(&a, &fresh);
            std::thread::sleep(Duration::from_millis(150));
            cluster.exists(&rk)
        },
    );
    // B's shard for this key may still map the slot to the dead master (it refreshes its slot
    // map when a master is unreachable, and every 5 s): a miss first, then hits.
    wait_until(
        "a redis hit via B on the promoted master",
        Duration::from_secs(15),
        || {
            let r = get_bounded(&b, &fresh, TIMEOUT_MS);
            cache_status(&r) == "yatagarasu; hit; detail=redis"
        },
    );
    let before = s3_gets(&[&fresh]);
    assert_redis_hit(&get_exact(&b, &fresh), "GET via B after the failover");
    assert_eq!(s3_gets(&[&fresh]), before);
}

// ---------------------------------------------------------------------------------------------
// The harness itself.

#[test]
fn harness_redis_server_restarts_pauses_and_authenticates() {
    let mut r = RedisServer::start();
    assert_eq!(r.cli(&["PING"]).trim(), "PONG");
    r.must(&[b"SET", b"k\0bin", b"v"]);
    assert_eq!(r.get(b"k\0bin"), Some(b"v".to_vec()));
    assert_eq!(r.scan("k*"), vec![b"k\0bin".to_vec()]);
    let port = r.port();
    assert_eq!(r.url(), format!("redis://127.0.0.1:{port}/0"));

    r.pause();
    assert!(
        resp(port, &[&[b"PING"]]).is_err(),
        "a paused server answered"
    );
    r.resume();
    assert_eq!(r.must(&[b"PING"]), Reply::Status("PONG".into()));

    r.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    r.restart();
    assert_eq!(r.port(), port);
    assert_eq!(r.get(b"k\0bin"), None, "no persistence");

    let pw = "harness-pw";
    let s = RedisServer::start_with(&["--requirepass", pw]);
    assert!(s
        .url_db(2)
        .starts_with(&format!("redis://:{pw}@127.0.0.1:")));
    assert_eq!(s.cli(&["-n", "2", "SET", "a", "1"]).trim(), "OK");
    assert_eq!(s.must_db(2, &[b"GET", b"a"]).bulk(), Some(b"1".to_vec()));
    match resp(s.port(), &[&[b"GET", b"a"]]).unwrap() {
        Reply::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("unauthenticated GET answered {other:?}"),
    }
}

#[test]
fn harness_cluster_starts_and_fails_over() {
    let mut c = RedisCluster::start();
    let masters = c.master_ports();
    assert_eq!(masters.len(), 3, "{:?}", c.topology());
    for &m in &masters {
        assert!(c.replica_of(m).is_some(), "master {m} has no replica");
    }
    assert_eq!(c.nodes().len(), 6);
    assert_eq!(c.masters().len(), 3);
    let key = b"harness:{failover}key";
    let slot = c.keyslot(key);
    let owner = c.master_of_slot(slot).unwrap();
    let replica = c.replica_of(owner).unwrap();
    // Written and acknowledged by the replica before the master dies.
    let r = resp(owner, &[&[b"SET", key, b"v"], &[b"WAIT", b"1", b"2000"]]).unwrap();
    assert_eq!(r, Reply::Int(1), "WAIT");
    let dead = c.kill_master_of_key(key);
    assert_eq!(dead, owner);
    let t0 = Instant::now();
    c.wait_failover(dead);
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert_eq!(
        c.master_of_slot(slot),
        Some(replica),
        "the replica took over"
    );
    assert_eq!(c.key_cmd(&[b"GET", key]).bulk(), Some(b"v".to_vec()));
    assert!(c.exists(key));
    assert_eq!(c.master_ports().len(), 3);
}

/// A `redis-server` speaking only TLS (`--port 0 --tls-port P`) with the backends' test CA and
/// server certificate (SAN 127.0.0.1), stopped by PID on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    ca: String,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(password: &str) -> TlsRedis {
        let tls = std::path::Path::new(&backend().ca_file)
            .parent()
            .expect("CA dir")
            .to_path_buf();
        let file = |n: &str| tls.join(n).to_string_lossy().into_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &file("server.pem")])
            .args(["--tls-key-file", &file("server.key")])
            .args(["--tls-ca-cert-file", &file("ca.pem")])
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server, or bash tests/support/install-deps.sh)");
        let r = TlsRedis {
            child,
            port,
            ca: file("ca.pem"),
            _dir: dir,
        };
        wait_until("the TLS redis-server to answer PING", SETTLE, || {
            r.cli(password, &["PING"]).trim() == "PONG"
        });
        r
    }

    fn cli(&self, password: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["--tls", "--cacert", &self.ca, "-p", &self.port.to_string()])
            .args(["-a", password, "--no-auth-warning"])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rediss_carries_fills_and_purges_between_proxies_over_tls() {
    const PW: &str = "tls-secret-pw";
    let redis = TlsRedis::start(PW);
    let tier = Tier::url(&format!("rediss://:{PW}@127.0.0.1:{}/2", redis.port));
    let objs = upload("tls", &[KIB, 100 * KIB]);
    let all: Vec<&Obj> = objs.iter().collect();
    // rustls-native-certs reads SSL_CERT_FILE: the proxies trust the test CA only.
    let env = [("SSL_CERT_FILE", redis.ca.as_str())];
    let a = Proxy::start_with_env(&tier.yaml(), &env);
    let b = Proxy::start_with_env(&tier.yaml(), &env);
    for o in &objs {
        assert_miss(&get_exact(&a, o), "first GET via A");
    }
    let pattern = tier.bucket_pattern();
    wait_until("both fills in Redis db 2 over TLS", SETTLE, || {
        redis
            .cli(PW, &["-n", "2", "--scan", "--pattern", &pattern])
            .lines()
            .count()
            == 2
    });
    let before = s3_gets(&all);
    for o in &objs {
        assert_redis_hit(&get_exact(&b, o), "GET via B over TLS");
    }
    assert_eq!(s3_gets(&all), before, "B's GETs reached S3");
    // The control plane (the redis crate's client) speaks TLS too: purge and publish.
    let p = a.admin("POST", &format!("/admin/cache/purge/{NAME}"), &[]);
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    assert_eq!(p.json()["redis_deleted"], 2, "{}", p.json());
    let o = &objs[0];
    wait_until(
        "B to drop its copy after the purge",
        Duration::from_secs(2),
        || x_cache(&get_exact(&b, o)) == "MISS",
    );
    for p in [&a, &b] {
        assert!(!p.log_text().contains(PW), "the Redis password was logged");
    }
}

#[test]
fn a_reload_that_repoints_a_bucket_purges_it_in_redis() {
    let redis = RedisServer::start();
    let tier = Tier::url(&redis.url());
    let objs = upload("repoint", &[KIB]);
    let o = &objs[0];
    let a = tier.start();
    let b = tier.start();
    get_exact(&a, o);
    wait_in_redis(&redis, &tier, &[o], &a);
    assert_redis_hit(&get_exact(&b, o), "B before the reload");
    // The public bucket now points at another S3 bucket: its Redis values no longer match S3.
    let yaml = tier
        .yaml()
        .replacen("bucket: yata-public", "bucket: yata-media", 1);
    let line = a.reload(&yaml);
    assert!(line.contains("config reloaded"), "{line}");
    wait_until(
        "the re-pointed bucket's key to leave Redis",
        Duration::from_secs(5),
        || !redis.exists(&tier.key(o)),
    );
    // And B, told over the purge channel, no longer serves its copy (yata-media has no such
    // key, but B still points at yata-public: a miss that refetches it there).
    wait_until("B to drop its copy", Duration::from_secs(2), || {
        x_cache(&get_exact(&b, o)) == "MISS"
    });
}

/// A "Redis" on a free loopback port that answers PING with `+PONG` and every GET with a bulk
/// header announcing 100 GB (then a few bytes and silence): a hostile or broken server. Runs
/// until the test process ends (its threads hold only sockets).
fn lying_redis() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                    for _ in 0..text.matches("\r\nPING\r\n").count() {
                        let _ = conn.write_all(b"+PONG\r\n");
                    }
                    for _ in 0..text.matches("\r\nGET\r\n").count() {
                        let _ = conn.write_all(b"$100000000000\r\nabc");
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_redis_announcing_a_huge_reply_is_a_miss_not_an_allocation() {
    let port = lying_redis();
    let tier = Tier::url(&format!("redis://127.0.0.1:{port}/0")).no_memory();
    let objs = upload("huge-reply", &[KIB]);
    let o = &objs[0];
    let p = tier.start();
    // The connection is up (PING answered) before the GETs that get the 100 GB header.
    wait_until("the proxy to connect to the fake Redis", SETTLE, || {
        redis_shard(&metrics_text(&p), "connections_up") >= 1
    });
    for _ in 0..5 {
        let r = get_bounded(&p, o, TIMEOUT_MS);
        assert_eq!(r.status, 200, "{}", describe(&r));
        assert_eq!(r.body, o.bytes);
    }
    // The process is alive and counted the broken replies as errors.
    assert_eq!(p.admin("GET", "/health", &[]).status, 200);
    let text = metrics_text(&p);
    assert!(
        redis_shard(&text, "errors_total") >= 1,
        "{}",
        redis_lines(&text)
    );
}
