//! Key-owned cache shards (issue 13; DESIGN section 2, "a shard of the cache is a partition, not
//! a copy") through the real binary against RGW, with `shards: 4` and `cpu_affinity: none` on
//! this 2-CPU machine. Fresh connections are spread over the shards by SO_REUSEPORT (the access
//! log's `shard` field shows the spread), so most lookups are for keys another core owns.
//!
//! Asserted: one S3 GET per object per node (40 sequential fresh connections; 50 concurrent
//! cold GETs on their own connections), with the other cores' hits counted as remote lookups
//! and L1 hits (`/metrics`); a memory budget that holds its distinct bytes (24 x 128 KiB in
//! 8 MiB, refetched on 8 fresh connections with no S3 GET and every answer a HIT, and
//! `/admin/cache/stats` counting each key once over the shards); a purge exact on every core
//! (one owner entry and every L1 copy dropped; the next 8 fresh connections make one S3 GET and
//! all see the object's new bytes); a SIGTERM drain and SIGHUP reloads during cross-core
//! keep-alive load lose no request and truncate no body, and a SIGTERM while a core fills a key
//! whose owner core has already stopped (arranged with `owner_of` and the access log's shard)
//! still delivers the response whole and exits. S3 GETs are counted in RGW's ops log as deltas
//! around each step; every counting test uses its own keys so tests running in parallel do not
//! disturb each other's counts.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;

/// The S3 bucket the uploaded test objects live in, and the proxy prefix that maps to it.
const BUCKET: &str = "yata-public";
const PREFIX: &str = "/public";

/// The standard test config with 4 shards (whatever `YATA_TEST_SHARDS` says) and a memory cache
/// of `mb` MiB; `config` already sets `cpu_affinity: none`.
fn owners_yaml(mb: u64, extra_buckets: &str) -> String {
    let yaml = config("  shards: 4\n", extra_buckets).replace(
        "logging:",
        &format!(
            "cache:\n  memory: {{max_cache_size_mb: {mb}, max_item_size_mb: {item}, default_ttl_seconds: 3600}}\nlogging:",
            item = mb.min(10)
        ),
    );
    assert!(yaml.contains("shards: 4\n") && yaml.contains("cpu_affinity: none\n"));
    yaml
}

/// An object this file uploads to RGW.
#[derive(Clone)]
struct Obj {
    key: String,
    path: String,
    bytes: Arc<Vec<u8>>,
    sha256: String,
}

fn obj(key: &str, bytes: Vec<u8>) -> Obj {
    Obj {
        key: key.to_owned(),
        path: format!("{PREFIX}/{}", encode_key(key)),
        sha256: sha256_hex(&bytes),
        bytes: Arc::new(bytes),
    }
}

/// Upload `(key, seed, len)` objects to [`BUCKET`], four at a time.
fn upload(specs: &[(&str, u64, usize)]) -> Vec<Obj> {
    let objs: Vec<Obj> = specs
        .iter()
        .map(|&(key, seed, len)| obj(key, object_bytes(seed, len)))
        .collect();
    for chunk in objs.chunks(4) {
        std::thread::scope(|s| {
            for o in chunk {
                s.spawn(|| put_object(BUCKET, &o.key, &o.bytes));
            }
        });
    }
    objs
}

/// One GET on a new TCP connection (the kernel picks its shard).
fn fresh_get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).request("GET", path, &[])
}

/// `X-Cache` of a response, `-` when absent.
fn x_cache(r: &Response) -> String {
    r.header("x-cache").unwrap_or("-").to_owned()
}

/// The shards whose access lines name `path`, once at least `want` such lines were logged
/// (waits up to 5 s: the access log is written by a non-blocking writer).
fn shards_serving(proxy: &Proxy, path: &str, want: usize) -> BTreeSet<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shards: Vec<u64> = proxy
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "yatagarasu::access" && v["path"] == path)
            .filter_map(|v| v["shard"].as_u64())
            .collect();
        if shards.len() >= want || Instant::now() > deadline {
            return shards.into_iter().collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Assert that `path`'s requests were served by more than one shard (else nothing crossed a core
/// and the test would prove nothing); returns the shards.
fn assert_spread(proxy: &Proxy, path: &str, requests: usize) -> BTreeSet<u64> {
    let shards = shards_serving(proxy, path, requests);
    assert!(
        shards.len() >= 2,
        "the {requests} connections for {path} all landed on shards {shards:?}: no cross-core \
         lookup was exercised"
    );
    shards
}

/// The owner counters of bucket `public` on `/metrics` (summed over shards).
#[derive(Debug)]
struct OwnerCounters {
    /// `yatagarasu_cache_remote_lookups_total`: lookups sent to the key's owner core.
    remote_lookups: u64,
    /// `yatagarasu_cache_l1_hits_total`: hits from a core's hot copy of another core's key.
    l1_hits: u64,
    /// `yatagarasu_cache_owner_busy_total`: served from S3 without a fill, the owner did not
    /// answer in time.
    owner_busy: u64,
}

fn owner_counters(proxy: &Proxy) -> OwnerCounters {
    let r = proxy.admin("GET", "/metrics", &[]);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("metrics are UTF-8");
    let read = |name: &str| {
        let series =
            format!("yatagarasu_cache_{name}_total{{bucket=\"public\",layer=\"memory\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("/metrics has no {series}:\n{text}"))
            .trim()
            .parse::<f64>()
            .expect("a number") as u64
    };
    OwnerCounters {
        remote_lookups: read("remote_lookups"),
        l1_hits: read("l1_hits"),
        owner_busy: read("owner_busy"),
    }
}

/// `/admin/cache/stats`: (the stats JSON, owner-partition items per shard summed over buckets,
/// L1 copies per shard).
fn cache_stats(proxy: &Proxy) -> (serde_json::Value, Vec<u64>, Vec<u64>) {
    let stats = proxy.admin("GET", "/admin/cache/stats", &[]);
    assert_eq!(stats.status, 200);
    let v = stats.json();
    let shards = v["shards"].as_array().expect("stats.shards");
    assert_eq!(shards.len(), 4, "{v}");
    let items = shards
        .iter()
        .map(|s| {
            s["buckets"]
                .as_array()
                .expect("shards[].buckets")
                .iter()
                .map(|b| b["items"].as_u64().expect("items"))
                .sum()
        })
        .collect();
    let l1 = shards
        .iter()
        .map(|s| s["l1_items"].as_u64().expect("shards[].l1_items"))
        .collect();
    (v, items, l1)
}

#[test]
fn forty_fresh_connections_make_one_s3_get() {
    let o = &upload(&[("owners/forty.bin", 40, 64 << 10)])[0];
    let proxy = Proxy::start(&owners_yaml(64, ""));
    let before = s3_requests(BUCKET, &o.key, None);
    let mut caches = Vec::new();
    for i in 0..40 {
        let r = fresh_get(proxy.addr, &o.path);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(sha256_hex(&r.body), o.sha256, "request {i}: body");
        caches.push(x_cache(&r));
    }
    let gets = s3_requests(BUCKET, &o.key, None) - before;
    let shards = assert_spread(&proxy, &o.path, 40);
    assert_eq!(
        gets,
        1,
        "40 sequential fresh connections (served by shards {shards:?}) for one key made {gets} \
         S3 GETs; X-Cache: {caches:?}; {:?}",
        owner_counters(&proxy)
    );
    assert_eq!(caches[0], "MISS");
    assert!(
        caches[1..].iter().all(|c| c == "HIT"),
        "every request after the first is a HIT: {caches:?}"
    );
    // Connections on other cores asked the owner, and (from their second hit) kept a hot copy.
    let m = owner_counters(&proxy);
    assert!(m.remote_lookups >= 1, "{m:?}");
    assert!(
        m.l1_hits >= 1,
        "~30 hits on cores that do not own the key, none from an L1 copy: {m:?}"
    );
    assert_eq!(m.owner_busy, 0, "{m:?}");
}

/// 24 objects of 128 KiB (3 MiB) for the 8 MiB-budget tests, uploaded once per test binary.
/// Per-core copies would need 3 MiB on each of 4 shards (2 MiB each): they cannot all stay.
fn partition_objects() -> &'static [Obj] {
    static OBJS: OnceLock<Vec<Obj>> = OnceLock::new();
    OBJS.get_or_init(|| {
        let keys: Vec<String> = (0..24)
            .map(|i| format!("owners/partition/{i:02}.bin"))
            .collect();
        let specs: Vec<(&str, u64, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), 1000 + i as u64, 128 << 10))
            .collect();
        upload(&specs)
    })
}

/// The first 12 of `lines`, one per line.
fn first_lines(lines: &[String]) -> String {
    let mut s = lines
        .iter()
        .take(12)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > 12 {
        s += &format!("\n... and {} more", lines.len() - 12);
    }
    s
}

/// Tests sharing [`partition_objects`] run one at a time (their S3 GET counts would mix).
static PARTITION_LOCK: Mutex<()> = Mutex::new(());

/// What the partition load saw in its second round.
struct Refetch {
    /// S3 GETs per key during the second round.
    gets: Vec<usize>,
    /// `(connection, key, problem)` for every second-round answer that was not a correct HIT.
    problems: Vec<String>,
}

/// Each partition object once on its own fresh connection, then every object again on each of 8
/// fresh connections (192 requests: every core asks for every key).
fn fill_then_refetch(proxy: &Proxy) -> Refetch {
    let objs = partition_objects();
    let keys: Vec<&str> = objs.iter().map(|o| o.key.as_str()).collect();
    for o in objs {
        let r = fresh_get(proxy.addr, &o.path);
        assert_eq!(r.status, 200, "{}", o.key);
        assert_eq!(sha256_hex(&r.body), o.sha256, "{}: first fetch body", o.key);
    }
    let before = s3_requests_each(BUCKET, &keys, None);
    let mut problems = Vec::new();
    for conn in 0..8 {
        let mut c = proxy.client();
        for o in objs {
            let r = c.request("GET", &o.path, &[]);
            let status = r.header("cache-status").unwrap_or("-");
            if r.status != 200 || sha256_hex(&r.body) != o.sha256 {
                problems.push(format!(
                    "connection {conn} {}: status {} with {} bytes",
                    o.key,
                    r.status,
                    r.body.len()
                ));
            } else if x_cache(&r) != "HIT" || !status.starts_with("yatagarasu; hit") {
                problems.push(format!(
                    "connection {conn} {}: X-Cache {}, Cache-Status {status}",
                    o.key,
                    x_cache(&r)
                ));
            }
        }
    }
    let after = s3_requests_each(BUCKET, &keys, None);
    Refetch {
        gets: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
        problems,
    }
}

#[test]
fn an_8_mib_budget_keeps_3_mib_of_objects_for_every_core() {
    let _one_at_a_time = PARTITION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = Proxy::start(&owners_yaml(8, ""));
    let seen = fill_then_refetch(&proxy);
    let total: usize = seen.gets.iter().sum();
    let m = owner_counters(&proxy);
    assert_eq!(
        total, 0,
        "refetching 24 cached 128 KiB objects on 8 fresh connections made {total} S3 GETs (per \
         key: {:?}); {m:?}",
        seen.gets
    );
    assert!(
        seen.problems.is_empty(),
        "{} refetches were not correct HITs:\n{}",
        seen.problems.len(),
        first_lines(&seen.problems)
    );
    // 8 connections over 4 cores asked for every key: most asks crossed cores.
    assert!(m.remote_lookups + m.l1_hits >= 24, "{m:?}");
}

#[test]
fn admin_stats_count_each_cached_key_on_one_shard() {
    let _one_at_a_time = PARTITION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = Proxy::start(&owners_yaml(8, ""));
    let seen = fill_then_refetch(&proxy);
    let (v, per_shard, l1) = cache_stats(&proxy);
    let items: u64 = per_shard.iter().sum();
    let keys = partition_objects().len() as u64;
    assert!(
        items <= keys,
        "{items} items over the shards (per shard {per_shard:?}) for {keys} distinct keys: some \
         key is held on more than one shard"
    );
    assert!(
        seen.problems.is_empty(),
        "all 24 keys stay cached (every refetch a correct HIT); {} were not:\n{}",
        seen.problems.len(),
        first_lines(&seen.problems)
    );
    assert_eq!(
        items, keys,
        "items over the shards (per shard {per_shard:?}; L1 copies {l1:?}) equal the 24 \
         distinct cached keys: {v}"
    );
    assert_eq!(v["totals"]["items"], items, "{v}");
}

#[test]
fn a_purge_is_exact_on_every_core() {
    let key = "owners/purge.bin";
    let old = &upload(&[(key, 1, 96 << 10)])[0];
    let proxy = Proxy::start(&owners_yaml(64, ""));
    // Fill, then hit it from many connections (so a core may keep a hot copy of it).
    for i in 0..12 {
        let r = fresh_get(proxy.addr, &old.path);
        assert_eq!(r.status, 200, "fill {i}");
        assert_eq!(sha256_hex(&r.body), old.sha256, "fill {i}: body");
    }
    // The object changes in S3; the cache still answers the old bytes.
    let new = &upload(&[(key, 2, 80 << 10)])[0];
    let r = fresh_get(proxy.addr, &old.path);
    assert_eq!((r.status, x_cache(&r)), (200, "HIT".to_owned()));
    assert_eq!(
        sha256_hex(&r.body),
        old.sha256,
        "cached bytes before the purge"
    );

    let m = owner_counters(&proxy);
    assert!(
        m.l1_hits >= 1,
        "13 hits from fresh connections, none from a core's hot copy (so the purge would have \
         no copy to drop): {m:?}"
    );
    let (_, items, l1) = cache_stats(&proxy);
    assert_eq!(
        items.iter().sum::<u64>(),
        1,
        "held by its owner alone: {items:?}"
    );
    assert!(
        l1.iter().sum::<u64>() >= 1,
        "copies before the purge: {l1:?}"
    );

    let p = proxy.admin("POST", &format!("/admin/cache/purge{PREFIX}/{key}"), &[]);
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    let p = p.json();
    assert_eq!(p["purged"], 1, "the one owner entry: {p}");
    let (v, items, l1) = cache_stats(&proxy);
    assert_eq!(
        (items.iter().sum::<u64>(), l1.iter().sum::<u64>()),
        (0, 0),
        "nothing left after the purge, in the owner or in any L1: {v}"
    );

    let before = s3_requests(BUCKET, key, None);
    let mut caches = Vec::new();
    for i in 0..8 {
        let r = fresh_get(proxy.addr, &new.path);
        assert_eq!(r.status, 200, "after the purge, request {i}");
        assert_eq!(
            sha256_hex(&r.body),
            new.sha256,
            "after the purge, request {i} (X-Cache {}) got {} bytes, not the new object",
            x_cache(&r),
            r.body.len()
        );
        caches.push(x_cache(&r));
    }
    let gets = s3_requests(BUCKET, key, None) - before;
    let shards = assert_spread(&proxy, &new.path, 21);
    assert_eq!(
        gets,
        1,
        "8 fresh connections after the purge (all requests on shards {shards:?}) made {gets} S3 \
         GETs; X-Cache: {caches:?}; {:?}",
        owner_counters(&proxy)
    );
    assert_eq!(caches[0], "MISS");
    assert!(caches[1..].iter().all(|c| c == "HIT"), "{caches:?}");
}

#[test]
fn fifty_concurrent_cold_gets_make_one_s3_get() {
    let o = upload(&[("owners/cold-50.bin", 50, 512 << 10)]).remove(0);
    let proxy = Proxy::start(&owners_yaml(64, ""));
    let before = s3_requests(BUCKET, &o.key, None);
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (addr, path, barrier) = (proxy.addr, o.path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                let r = c.request("GET", &path, &[]);
                (r.status, sha256_hex(&r.body), x_cache(&r))
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, (status, sha, cache)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}");
        assert_eq!(*sha, o.sha256, "request {i} (X-Cache {cache}): body");
    }
    let gets = s3_requests(BUCKET, &o.key, None) - before;
    let shards = assert_spread(&proxy, &o.path, 50);
    let caches: Vec<&str> = answers.iter().map(|a| a.2.as_str()).collect();
    assert_eq!(
        gets,
        1,
        "50 concurrent cold GETs on shards {shards:?} made {gets} S3 GETs; X-Cache: {caches:?}; \
         {:?}",
        owner_counters(&proxy)
    );
}

// ---------------------------------------------------------------------------------------------
// Keep-alive load over many keys (most owned by another core) during a drain or reloads.

/// One key of the load with its seeded bytes.
struct LoadObj {
    path: String,
    bytes: Vec<u8>,
}

/// Every seeded object under 2 MiB, at its proxy path (13+ keys over 3 buckets: with 4 shards
/// about 3 in 4 lookups are for a key another core owns).
fn load_objects() -> Arc<Vec<LoadObj>> {
    let b = backend();
    let objs: Vec<LoadObj> = b
        .objects
        .iter()
        .filter(|o| o.size < 2 << 20)
        .map(|o| {
            let prefix = match o.bucket.as_str() {
                "yata-public" => "/public",
                "yata-media" => "/media",
                "yata-private" => "/private",
                other => panic!("unexpected bucket {other}"),
            };
            LoadObj {
                path: format!("{prefix}/{}", encode_key(&o.key)),
                bytes: b.bytes(o),
            }
        })
        .collect();
    assert!(objs.len() >= 8, "the manifest has the seeded objects");
    Arc::new(objs)
}

/// How one request on a keep-alive connection ended.
enum Got {
    /// 200 with exactly the expected bytes; `close` when the server said `Connection: close`.
    Complete { close: bool },
    /// The connection closed (EOF or reset) before any byte of the response: the request was
    /// not answered, cleanly.
    Closed,
    /// Anything else: a wrong status, a truncated head or body, wrong bytes.
    Broken(String),
}

/// Send `GET path` on `s` and read the whole response, checking it against `want`.
fn get_on(s: &mut TcpStream, path: &str, want: &[u8]) -> Got {
    if s.write_all(&request_bytes("GET", path, &[])).is_err() {
        return Got::Closed;
    }
    let mut buf = Vec::with_capacity(want.len() + 1024);
    let mut tmp = vec![0u8; 64 << 10];
    let mut read = |buf: &mut Vec<u8>| -> Result<usize, String> {
        match s.read(&mut tmp) {
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
            Err(e) => Err(e.to_string()),
        }
    };
    // The head.
    let (status, len, close, head_len) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let get = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let len = get("content-length").and_then(|v| v.parse::<usize>().ok());
                let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                break (resp.code.unwrap_or(0), len, close, n);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Got::Broken(format!("{path}: bad response head: {e}")),
        }
        match read(&mut buf) {
            Ok(0) if buf.is_empty() => return Got::Closed,
            Ok(0) => {
                return Got::Broken(format!("{path}: head truncated after {} bytes", buf.len()))
            }
            Ok(_) => {}
            Err(e) => return Got::Broken(format!("{path}: reading the head: {e}")),
        }
    };
    let Some(len) = len else {
        return Got::Broken(format!("{path}: {status} without Content-Length"));
    };
    while buf.len() < head_len + len {
        match read(&mut buf) {
            Ok(0) => {
                return Got::Broken(format!(
                    "{path}: {status} body truncated at {} of {len} bytes",
                    buf.len() - head_len
                ))
            }
            Ok(_) => {}
            Err(e) => return Got::Broken(format!("{path}: reading the body: {e}")),
        }
    }
    let body = &buf[head_len..head_len + len];
    if status != 200 || body != want {
        return Got::Broken(format!(
            "{path}: status {status}, {len} bytes, body {}",
            if body == want { "right" } else { "WRONG" }
        ));
    }
    if buf.len() > head_len + len {
        return Got::Broken(format!("{path}: bytes after the response"));
    }
    Got::Complete { close }
}

/// Counters shared by the load workers.
#[derive(Default)]
struct Load {
    /// Stop sending (reload test).
    stop: AtomicBool,
    /// SIGTERM was sent (drain test).
    term_sent: AtomicBool,
    /// Complete, correct responses.
    ok: AtomicU64,
    /// Of those, the ones that arrived after SIGTERM was sent.
    ok_after_term: AtomicU64,
    /// Requests answered by a clean close (drain only).
    closed: AtomicU64,
}

/// Keep-alive GETs over `objs` (worker `i` starts at a different key), reconnecting after a
/// `Connection: close`. With `drain`, a clean close is allowed and the worker ends when a new
/// connection is refused (the listener closed); without it, a close is a failure and the worker
/// ends when `load.stop` is set. Bounded: 20 000 requests, 30 s.
fn load_worker(
    addr: SocketAddr,
    objs: Arc<Vec<LoadObj>>,
    i: usize,
    load: Arc<Load>,
    drain: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = i * 5;
    'connections: loop {
        if Instant::now() > deadline {
            return Err(format!("worker {i}: still running after 30 s"));
        }
        let Ok(mut s) = TcpStream::connect(addr) else {
            if drain && load.term_sent.load(Ordering::SeqCst) {
                return Ok(()); // the listener closed during the drain
            }
            return Err(format!("worker {i}: connect failed"));
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        loop {
            if load.stop.load(Ordering::SeqCst) || n >= 20_000 + i * 5 {
                return Ok(());
            }
            let o = &objs[n % objs.len()];
            n += 1;
            let term_before = load.term_sent.load(Ordering::SeqCst);
            match get_on(&mut s, &o.path, &o.bytes) {
                Got::Complete { close } => {
                    load.ok.fetch_add(1, Ordering::SeqCst);
                    if term_before {
                        load.ok_after_term.fetch_add(1, Ordering::SeqCst);
                    }
                    if close {
                        if !drain {
                            return Err(format!("worker {i}: Connection: close on {}", o.path));
                        }
                        continue 'connections;
                    }
                }
                Got::Closed if drain => {
                    load.closed.fetch_add(1, Ordering::SeqCst);
                    continue 'connections;
                }
                Got::Closed => {
                    return Err(format!("worker {i}: connection closed on {}", o.path));
                }
                Got::Broken(why) => return Err(format!("worker {i} request {n}: {why}")),
            }
        }
    }
}

/// Start `workers` load workers against `proxy` and wait (up to 20 s) for 300 correct responses.
fn start_load(
    proxy: &Proxy,
    workers: usize,
    drain: bool,
) -> (Arc<Load>, Vec<std::thread::JoinHandle<Result<(), String>>>) {
    let objs = load_objects();
    let load = Arc::new(Load::default());
    let handles = (0..workers)
        .map(|i| {
            let (addr, objs, load) = (proxy.addr, objs.clone(), load.clone());
            std::thread::spawn(move || load_worker(addr, objs, i, load, drain))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.ok.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "the load did not get going ({} responses)",
            load.ok.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (load, handles)
}

/// One download of `path` read slowly after its first 64 KiB (so it is in flight when the test
/// signals `started`); returns (status, body identical to `want`, bytes read, EOF after it).
fn slow_download(
    addr: SocketAddr,
    path: &str,
    want: &[u8],
    started: &AtomicU64,
) -> (u16, bool, usize, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&request_bytes("GET", path, &[])).unwrap();
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 16 << 10];
    let mut announced = false;
    let mut head: Option<(u16, usize, usize)> = None;
    loop {
        if head.is_none() {
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hdrs);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .expect("Content-Length");
                head = Some((resp.code.unwrap_or(0), n, len));
            }
        }
        if let Some((_, n, len)) = head {
            if buf.len() >= n + len {
                break;
            }
            if !announced && buf.len() >= n + (64 << 10) {
                started.fetch_add(1, Ordering::SeqCst);
                announced = true;
            }
        }
        let got = s.read(&mut tmp).unwrap_or(0);
        if got == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..got]);
        if announced {
            std::thread::sleep(Duration::from_millis(10)); // ~1.6 MB/s: 1 MiB takes ~0.6 s
        }
    }
    if !announced {
        started.fetch_add(1, Ordering::SeqCst); // never block the test on a short response
    }
    let Some((status, n, len)) = head else {
        return (0, false, 0, false);
    };
    let body = &buf[n.min(buf.len())..];
    let intact = body.len() == len && body == want;
    let eof = matches!(s.read(&mut tmp), Ok(0));
    (status, intact, body.len(), eof)
}

/// The last `max` lines of the proxy's log that are not access lines.
fn log_tail(proxy: &Proxy, max: usize) -> String {
    let log = proxy.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("yatagarasu::access"))
        .collect();
    lines[lines.len().saturating_sub(max)..].join("\n")
}

#[test]
fn sigterm_drain_during_cross_core_load_loses_no_request() {
    let b = backend();
    let video = b.bytes(b.object("yata-media", "video.bin"));
    let yaml = owners_yaml(64, "").replace("shutdown_grace_ms: 2000", "shutdown_grace_ms: 5000");
    let mut proxy = Proxy::start(&yaml);
    let (load, workers) = start_load(&proxy, 6, true);

    // Four 1 MiB cached downloads (their owner is another core for about 3 in 4) read slowly.
    let video = Arc::new(video);
    let started = Arc::new(AtomicU64::new(0));
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (addr, video, started) = (proxy.addr, video.clone(), started.clone());
            std::thread::spawn(move || slow_download(addr, "/media/video.bin", &video, &started))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while started.load(Ordering::SeqCst) < 4 {
        assert!(
            Instant::now() < deadline,
            "the slow downloads did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before_term = load.ok.load(Ordering::SeqCst);
    load.term_sent.store(true, Ordering::SeqCst);
    let term_at = Instant::now();
    proxy.signal("TERM");

    let failures: Vec<String> = workers
        .into_iter()
        .filter_map(|w| w.join().unwrap().err())
        .collect();
    let slow: Vec<_> = slow.into_iter().map(|d| d.join().unwrap()).collect();
    let since_term = term_at.elapsed();
    let exited = proxy.wait_exit(Duration::from_secs(10));
    let after = || {
        format!(
            "(SIGTERM sent {since_term:?} before; 10 s later the proxy had exited with \
             {exited:?}, its grace being 5 s); the end of its log:\n{}",
            log_tail(&proxy, 12)
        )
    };
    for (i, (status, intact, got, eof)) in slow.iter().enumerate() {
        assert_eq!(*status, 200, "slow download {i} {}", after());
        assert!(
            intact,
            "slow download {i}: {got} bytes, not the seeded 1 MiB {}",
            after()
        );
        assert!(
            eof,
            "slow download {i}: the connection closes after it during a drain {}",
            after()
        );
    }
    assert!(
        failures.is_empty(),
        "requests lost or truncated during the drain {}:\n{}",
        after(),
        failures.join("\n")
    );
    let status = exited.expect("exits after the drain");
    assert!(status.success(), "{status:?} {}", after());
    assert!(proxy.log_text().contains("drained, exiting"));
    eprintln!(
        "drain: {before_term} responses before SIGTERM, {} after it, {} requests answered by a \
         clean close",
        load.ok_after_term.load(Ordering::SeqCst),
        load.closed.load(Ordering::SeqCst)
    );
}

#[test]
fn sighup_reloads_during_cross_core_load_lose_no_request() {
    let base = owners_yaml(64, "");
    // The other config changes the cached bucket (its TTL) and adds one.
    let other = owners_yaml(64, &public_bucket_yaml("extra", "/extra")).replacen(
        "path_prefix: /public\n",
        "path_prefix: /public\n    cache: {enabled: true, ttl_seconds: 600}\n",
        1,
    );
    assert_ne!(base, other);
    let proxy = Proxy::start(&base);
    let (load, workers) = start_load(&proxy, 6, false);
    let mut during = Vec::new();
    for round in 0..6 {
        let line = proxy.reload(if round % 2 == 0 { &other } else { &base });
        assert!(line.contains("config reloaded"), "reload {round}: {line}");
        during.push(load.ok.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(150));
    }
    let at_end = load.ok.load(Ordering::SeqCst);
    load.stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = workers
        .into_iter()
        .filter_map(|w| w.join().unwrap().err())
        .collect();
    assert!(
        failures.is_empty(),
        "requests that failed across the reloads:\n{}",
        failures.join("\n")
    );
    assert!(
        at_end > during[0],
        "the load ran during the reloads (responses at each reload {during:?}, at the end \
         {at_end})"
    );
}

/// The shard that served the request whose `X-Request-Id` is `id` (from its access line; waits
/// up to 5 s for it).
fn shard_of_request(proxy: &Proxy, id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = proxy
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "yatagarasu::access" && v["request_id"] == id)
            .and_then(|v| v["shard"].as_u64());
        if let Some(s) = found {
            return s;
        }
        assert!(Instant::now() < deadline, "no access line for request {id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_while_a_core_fills_a_key_whose_owner_already_stopped() {
    // Arranged, not left to chance: a request on core A leads the fill of a key owned by core
    // B, B has no connection (so it stops as soon as the drain starts), and the fill is still
    // arriving (a slow origin) when SIGTERM comes. The fill must still finish, the response
    // arrive whole, and the process exit.
    let b = backend();
    let key = "100k.bin";
    let want = b.bytes(b.object("yata-public", key));
    let slow = FaultyOrigin::start("slow-body", &["--chunk-bytes", "8192", "--delay-ms", "50"]);
    let bucket = bucket_yaml(
        "slow",
        "/slow",
        "yata-public",
        &slow.endpoint(),
        &b.ak1,
        &b.sk1,
        "",
    );
    let yaml =
        owners_yaml(64, &bucket).replace("shutdown_grace_ms: 2000", "shutdown_grace_ms: 5000");
    let mut proxy = Proxy::start(&yaml);
    let owner = yatagarasu::cache::owner::owner_of(b"slow", key.as_bytes(), 4) as u64;

    // Find a connection on another core; close every other one (the owner keeps none).
    let mut on_other = None;
    for _ in 0..64 {
        let mut c = proxy.client();
        let r = c.request("GET", "/public/hello.txt", &[]);
        assert_eq!(r.status, 200);
        let id = r.header("x-request-id").expect("X-Request-Id").to_owned();
        let shard = shard_of_request(&proxy, &id);
        if shard != owner {
            on_other = Some((c, shard));
            break;
        }
    }
    let (mut c, leader_shard) = on_other.expect("64 connections all landed on the owner core");
    std::thread::sleep(Duration::from_millis(200)); // the closed connections are gone

    // The cold GET: core `leader_shard` asks the owner and leads the fill from the slow origin
    // (100 KiB in 8 KiB pieces 50 ms apart: ~650 ms).
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.send(&request_bytes("GET", &format!("/slow/{key}"), &[]));
    let mut first = [0u8; 1];
    c.stream
        .read_exact(&mut first)
        .expect("the response starts before the fill ends");
    let term_at = Instant::now();
    proxy.signal("TERM");

    let mut rest = Vec::new();
    let read = c.stream.read_to_end(&mut rest);
    let mut raw = first.to_vec();
    raw.extend_from_slice(&rest);
    let exited = proxy.wait_exit(Duration::from_secs(10));
    let context = format!(
        "(the fill on shard {leader_shard} of a key owned by shard {owner}; SIGTERM sent {:?} \
         before; the proxy exited with {exited:?}); the end of its log:\n{}",
        term_at.elapsed(),
        log_tail(&proxy, 12)
    );
    assert!(
        read.is_ok(),
        "reading the response: {read:?} after {} bytes {context}",
        raw.len()
    );
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or_else(|| panic!("no complete response head {context}"));
    let head = String::from_utf8_lossy(&raw[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head} {context}");
    assert!(
        raw[head_end..] == want[..],
        "body: {} bytes, want the seeded {} {context}",
        raw.len() - head_end,
        want.len()
    );
    let status = exited.unwrap_or_else(|| panic!("the proxy did not exit {context}"));
    assert!(status.success(), "{status:?} {context}");
}
