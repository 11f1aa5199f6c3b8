//! The disk cache tier (`cache.disk`, src/cache/disk/) through the real binary against RGW, each
//! test with its own `cache_dir` under a fresh temp dir and its own uploaded objects, on the
//! suite's shard count unless a test needs another.
//!
//! Asserted: a restart serves every filled object from disk (exact bytes, `detail=disk`, then
//! memory after promotion) with no S3 GET; the files under `cache_dir` never exceed
//! `max_disk_cache_size_mb` (40 x 1 MiB through 16 MiB, evictions counted, every answer exact);
//! bytes flipped in the data files (bodies and record headers) are misses fetched again from S3
//! or responses cut short, never a wrong byte, and counted as checksum failures, while untouched
//! records are still disk hits; a SIGKILL at any moment of a 12 MiB fill (first bytes sent,
//! response complete, disk write landing) leaves a directory a restart serves exactly; a full
//! filesystem (a 4 MiB tmpfs) counts write errors and every answer is still exact; a purge (of a
//! key, of a bucket) is a MISS at once and after a restart (tombstones), while a fill made after
//! the purge survives it; a Range and a HEAD on a disk-only object read only the blocks they
//! need (`cache_disk_read_bytes_total`); `--check` names `cache.disk.cache_dir` when it cannot
//! be created (exit 1, and 2 at start); a shard-count change drops the old shard directories;
//! a 72 MiB body (over what a fill assembles in memory) streams to disk as it passes through
//! and is served from disk, Range included, after a restart; a 304 revalidation makes a
//! disk-only entry fresh again (a 3 MiB entry rewritten, a 66 MiB streamed one refreshed in
//! place), so the next GET is a disk hit with no S3 request; a second miss of a large object
//! while the first still streams to disk (a slow first client) is answered whole from S3 at
//! once and writes no second record; six dropped 200 MiB downloads (each abandoning a
//! reserved streamed record) leave an older entry on disk.
//!
//! Fills reach the disk behind the response (one writer task per core): every test that needs
//! them on disk polls `/metrics` (`yatagarasu_cache_items{layer="disk"}`) with a deadline first.
//! S3 GETs are counted in RGW's ops log as deltas; keys carry a per-run nonce so runs and
//! parallel tests do not disturb each other's counts.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The S3 bucket the uploaded test objects live in, the proxy prefix and bucket name (metrics
/// label, admin URLs) that map to it.
const BUCKET: &str = "yata-public";
const PREFIX: &str = "/public";
const NAME: &str = "public";

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// How long a poll for asynchronous disk writes may take before the test fails.
const SETTLE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Objects.

/// An object this file uploads to RGW.
struct Obj {
    key: String,
    path: String,
    bytes: Vec<u8>,
}

/// A per-run nonce for keys.
fn nonce() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{ns:x}", std::process::id())
}

/// Upload one object per size under `disk/<test>-<nonce>/`.
fn upload(test: &str, sizes: &[usize]) -> Vec<Obj> {
    let run = nonce();
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let key = format!("disk/{test}-{run}/{i}-{len}.bin");
            // Different bytes per object and per run.
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
        })
        .collect()
}

/// S3 GETs logged so far for each of `objs`.
fn s3_gets(objs: &[&Obj]) -> Vec<usize> {
    let keys: Vec<&str> = objs.iter().map(|o| o.key.as_str()).collect();
    s3_requests_each(BUCKET, &keys, None)
}

// ---------------------------------------------------------------------------------------------
// Config.

/// The disk and memory settings of one proxy.
#[derive(Clone, Copy)]
struct Tiers {
    disk_mb: u64,
    disk_item_mb: u64,
    mem_mb: u64,
    mem_item_mb: u64,
    /// `server.shards`; `None`: the suite's ([`shards`]).
    shards: Option<usize>,
}

impl Tiers {
    fn new(disk_mb: u64, mem_mb: u64, mem_item_mb: u64) -> Tiers {
        Tiers {
            disk_mb,
            disk_item_mb: 64,
            mem_mb,
            mem_item_mb,
            shards: None,
        }
    }

    fn shards(self, n: usize) -> Tiers {
        Tiers {
            shards: Some(n),
            ..self
        }
    }
}

/// The standard test config with a memory tier and a disk tier in `dir`.
fn disk_yaml(dir: &Path, t: Tiers) -> String {
    let server = t
        .shards
        .map(|n| format!("  shards: {n}\n"))
        .unwrap_or_default();
    config(&server, "").replace(
        "logging:",
        &format!(
            "cache:\n  memory: {{max_cache_size_mb: {}, max_item_size_mb: {}, default_ttl_seconds: 3600}}\n  disk: {{enabled: true, cache_dir: \"{}\", max_disk_cache_size_mb: {}, max_item_size_mb: {}}}\nlogging:",
            t.mem_mb,
            t.mem_item_mb,
            dir.display(),
            t.disk_mb,
            t.disk_item_mb
        ),
    )
}

/// A fresh temp dir and a `cache` directory path in it (not created: the proxy does).
fn cache_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    (tmp, dir)
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// The disk layer's per-bucket series `family` for the public bucket, summed over shards.
fn disk_bucket(text: &str, family: &str) -> u64 {
    metric_sum(
        text,
        &format!("yatagarasu_{family}"),
        &[("bucket", NAME), ("layer", "disk")],
    )
}

/// A per-shard disk counter (`write_errors`, `read_bytes`...), summed over shards.
fn disk_shard(text: &str, what: &str) -> u64 {
    metric_sum(
        text,
        &format!("yatagarasu_cache_disk_{what}_total"),
        &[("layer", "disk")],
    )
}

fn disk_items(p: &Proxy) -> u64 {
    disk_bucket(&metrics_text(p), "cache_items")
}

fn read_bytes(p: &Proxy) -> u64 {
    disk_shard(&metrics_text(p), "read_bytes")
}

/// Poll `/metrics` until `done` holds (failing the test with `what` and the metrics after
/// [`SETTLE`]); the last metrics text.
fn wait_metrics(p: &Proxy, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = metrics_text(p);
        if done(&text) {
            return text;
        }
        if Instant::now() > deadline {
            let disk: Vec<&str> = text.lines().filter(|l| l.contains("disk")).collect();
            panic!(
                "timed out waiting for {what}; disk metrics:\n{}",
                disk.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the disk layer holds exactly `n` entries of the public bucket.
fn wait_disk_items(p: &Proxy, n: u64) {
    wait_metrics(p, &format!("{n} disk items"), |t| {
        disk_bucket(t, "cache_items") == n
    });
}

// ---------------------------------------------------------------------------------------------
// Requests: a lenient client that reports a response cut short instead of panicking.

/// One response read to the connection's end (`Connection: close`).
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The `Content-Length`, when sent.
    declared: Option<usize>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole declared body arrived.
    fn complete(&self) -> bool {
        self.declared.is_none_or(|n| n == self.body.len())
    }

    fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    fn is_disk_hit(&self) -> bool {
        self.header("x-cache") == Some("HIT") && self.cache_status().contains("detail=disk")
    }

    fn is_hit(&self) -> bool {
        self.header("x-cache") == Some("HIT")
    }

    fn is_miss(&self) -> bool {
        self.cache_status().contains("fwd=miss")
    }

    fn describe(&self) -> String {
        format!(
            "status {} x-cache {:?} cache-status {:?} body {} of {:?}",
            self.status,
            self.header("x-cache"),
            self.header("cache-status"),
            self.body.len(),
            self.declared
        )
    }
}

/// Send `method path` with `headers` on a fresh connection and read until the server closes.
fn fetch(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    hs.push(("Connection", "close"));
    s.write_all(&request_bytes(method, path, &hs))
        .expect("write request");
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A connection reset mid-body is a response cut short, reported as such.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading {method} {path}: {e} after {} bytes", raw.len()),
        }
    }
    let mut hdrs = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut hdrs);
    let n = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "{method} {path}: no complete response head ({other:?}) in {} bytes",
            raw.len()
        ),
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code.unwrap();
    let declared = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("content-length"));
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "{method} {path}: chunked responses are not expected here"
    );
    Got {
        status,
        headers,
        body: raw[n..].to_vec(),
        declared: if method == "HEAD" { None } else { declared },
    }
}

fn get(p: &Proxy, o: &Obj) -> Got {
    fetch(p.addr, "GET", &o.path, &[])
}

/// A GET that must answer 200 with exactly `o`'s bytes.
#[track_caller]
fn get_exact(p: &Proxy, o: &Obj) -> Got {
    let r = get(p, o);
    assert_exact(&r, o);
    r
}

#[track_caller]
fn assert_exact(r: &Got, o: &Obj) {
    assert_eq!(r.status, 200, "{}: {}", o.key, r.describe());
    assert!(r.complete(), "{}: cut short: {}", o.key, r.describe());
    assert_eq!(r.body.len(), o.bytes.len(), "{}: {}", o.key, r.describe());
    assert!(
        sha256_hex(&r.body) == sha256_hex(&o.bytes),
        "{}: wrong bytes ({})",
        o.key,
        r.describe()
    );
}

/// Every byte received is the object's: a prefix of it (a response may be cut short, never
/// wrong).
#[track_caller]
fn assert_prefix(r: &Got, o: &Obj) {
    assert_eq!(r.status, 200, "{}: {}", o.key, r.describe());
    assert!(
        r.body.len() <= o.bytes.len() && r.body[..] == o.bytes[..r.body.len()],
        "{}: a wrong byte was served ({})",
        o.key,
        r.describe()
    );
}

/// Fill every object (a MISS that is stored) and wait until the disk layer holds them all.
fn fill(p: &Proxy, objs: &[Obj]) {
    let before = disk_items(p);
    for o in objs {
        let r = get_exact(p, o);
        assert!(
            r.cache_status().contains("fwd=miss; stored"),
            "{}: the fill was not stored: {}",
            o.key,
            r.describe()
        );
    }
    wait_disk_items(p, before + objs.len() as u64);
}

// ---------------------------------------------------------------------------------------------
// Files.

/// Every regular file under `dir`: (path, length, bytes allocated).
fn walk(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.blocks() * 512));
            }
        }
    }
    out
}

/// The `data` files under `dir`.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.file_name().is_some_and(|n| n == "data"))
        .collect();
    v.sort();
    v
}

/// The shard directory names under `dir`.
fn shard_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-"))
        .collect();
    v.sort();
    v
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn flip(file: &mut [u8], at: usize, len: usize) {
    for b in &mut file[at..at + len] {
        *b ^= 0xA5;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Restart.

#[test]
fn a_restart_serves_every_object_from_disk_without_s3() {
    let (_tmp, dir) = cache_dir();
    let t = Tiers::new(256, 64, 10);
    let objs = upload(
        "restart",
        &[4 * KIB, 100 * KIB, 3 * MIB, 4 * KIB, 100 * KIB, 3 * MIB],
    );
    let p = Proxy::start(&disk_yaml(&dir, t));
    fill(&p, &objs);
    assert!(p.terminate().success(), "clean exit on SIGTERM");

    let p = Proxy::start(&disk_yaml(&dir, t));
    assert_eq!(
        disk_items(&p),
        objs.len() as u64,
        "the scan at start found every entry"
    );
    let refs: Vec<&Obj> = objs.iter().collect();
    let before = s3_gets(&refs);
    for o in &objs {
        let r = get_exact(&p, o);
        assert!(
            r.is_disk_hit(),
            "{}: first GET after restart: {}",
            o.key,
            r.describe()
        );
        // Promoted to memory (all are within the memory item limit) or still from disk.
        let r = get_exact(&p, o);
        assert!(r.is_hit(), "{}: second GET: {}", o.key, r.describe());
    }
    let after = s3_gets(&refs);
    for ((o, b), a) in objs.iter().zip(&before).zip(&after) {
        assert_eq!(a - b, 0, "{}: S3 GETs after the restart", o.key);
    }
    let text = metrics_text(&p);
    assert!(
        disk_bucket(&text, "cache_hits_total") >= objs.len() as u64,
        "disk hits counted"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Size bound.

#[test]
fn the_directory_never_exceeds_max_disk_cache_size_mb() {
    let (_tmp, dir) = cache_dir();
    // A memory tier too small for 1 MiB bodies: everything lives on disk or nowhere.
    let t = Tiers::new(16, 2, 1);
    let objs = upload("bound", &[MIB; 40]);
    let p = Proxy::start(&disk_yaml(&dir, t));
    for o in &objs {
        get_exact(&p, o);
    }
    let text = wait_metrics(&p, "40 disk writes (inserted or dropped)", |t| {
        disk_bucket(t, "cache_inserts_total") + disk_shard(t, "queue_drops") >= 40
    });
    assert_eq!(disk_shard(&text, "write_errors"), 0, "no write errors");
    assert!(
        disk_bucket(&text, "cache_evictions_total") > 0,
        "40 MiB through 16 MiB evicts"
    );
    let limit = 16 * MIB as u64;
    let files = walk(&dir);
    let len: u64 = files.iter().map(|f| f.1).sum();
    let allocated: u64 = files.iter().map(|f| f.2).sum();
    assert!(
        len <= limit && allocated <= limit,
        "files under cache_dir: {len} bytes long, {allocated} allocated, limit {limit}: {files:?}"
    );
    let capacity = metric_sum(
        &text,
        "yatagarasu_cache_capacity_bytes",
        &[("layer", "disk")],
    );
    assert!(capacity > 0 && capacity <= limit, "capacity {capacity}");
    // Newest first: the last fills are the ones still on disk.
    let mut disk_hits = 0;
    for o in objs.iter().rev() {
        if get_exact(&p, o).is_disk_hit() {
            disk_hits += 1;
        }
    }
    assert!(disk_hits > 0, "some of the newest fills were disk hits");
    let files = walk(&dir);
    let len: u64 = files.iter().map(|f| f.1).sum();
    assert!(len <= limit, "after the refills: {len} > {limit}");
}

// ---------------------------------------------------------------------------------------------
// 3. Corruption.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Damage {
    /// Left alone: still a disk hit after the restart.
    None,
    /// 4 KiB (or half the body) flipped inside the body.
    Body,
    /// The record's header flipped (the scan stops there: a miss).
    Header,
}

#[test]
fn flipped_bytes_are_misses_never_wrong_bytes() {
    let (_tmp, dir) = cache_dir();
    // Bodies over 1 MiB stream from disk in chunks; the others are read whole.
    let t = Tiers::new(64, 64, 1);
    let objs = upload(
        "corrupt",
        &[
            2 * MIB,
            2 * MIB,
            4 * KIB,
            100 * KIB,
            300 * KIB,
            4 * KIB,
            100 * KIB,
            300 * KIB,
            4 * KIB,
            100 * KIB,
        ],
    );
    let p = Proxy::start(&disk_yaml(&dir, t));
    fill(&p, &objs);
    assert!(p.terminate().success());

    // Find every body in the data files; pick what to damage.
    let mut damage = vec![Damage::None; objs.len()];
    let mut located = 0;
    for path in data_files(&dir) {
        let mut file = std::fs::read(&path).unwrap();
        // (object, body position) in file order.
        let mut here: Vec<(usize, usize)> = objs
            .iter()
            .enumerate()
            .filter_map(|(i, o)| find(&file, &o.bytes[..64]).map(|at| (i, at)))
            .collect();
        here.sort_by_key(|&(_, at)| at);
        located += here.len();
        for (n, &(i, at)) in here.iter().enumerate() {
            let len = objs[i].bytes.len();
            if n + 1 == here.len() && n > 0 {
                // The last record's header: from the end of the previous body (aligned up:
                // records start on 4 KiB) to this body.
                let (pi, pat) = here[n - 1];
                let start = (pat + objs[pi].bytes.len()).div_ceil(4096) * 4096;
                assert!(start < at, "a record header lies between two bodies");
                flip(&mut file, start, (at - start).min(4096));
                damage[i] = Damage::Header;
            } else if n % 2 == 0 {
                // Large bodies past their first 256 KiB chunk (the response is cut short);
                // small ones in the middle.
                let (from, n_bytes) = if len > MIB {
                    (len / 2, 4096)
                } else {
                    (len / 4, (len / 2).min(4096))
                };
                flip(&mut file, at + from, n_bytes);
                damage[i] = Damage::Body;
            }
        }
        // Past the last record: garbage where the next record would go.
        let end = file.len();
        if end > 8192 {
            flip(&mut file, end - 4096, 4096);
        }
        std::fs::write(&path, &file).unwrap();
    }
    assert_eq!(located, objs.len(), "every body was found in a data file");
    assert!(damage.contains(&Damage::Body) && damage.contains(&Damage::None));

    let p = Proxy::start(&disk_yaml(&dir, t));
    let refs: Vec<&Obj> = objs.iter().collect();
    let before = s3_gets(&refs);
    for (o, d) in objs.iter().zip(&damage) {
        let r = get(&p, o);
        match d {
            Damage::None => {
                assert_exact(&r, o);
                assert!(r.is_disk_hit(), "{} untouched: {}", o.key, r.describe());
            }
            Damage::Header => {
                assert_exact(&r, o);
                assert!(r.is_miss(), "{} header flipped: {}", o.key, r.describe());
            }
            Damage::Body if o.bytes.len() > MIB && !r.complete() => {
                // Streamed from disk: the head and the first chunks went out before the bad
                // block was read. Cut short, never a wrong byte, and the next GET is whole.
                assert_prefix(&r, o);
                let again = get(&p, o);
                assert_exact(&again, o);
                assert!(
                    !again.is_disk_hit(),
                    "{}: the bad entry was dropped: {}",
                    o.key,
                    again.describe()
                );
            }
            Damage::Body => {
                assert_exact(&r, o);
                assert!(r.is_miss(), "{} body flipped: {}", o.key, r.describe());
            }
        }
        // And once more: exact whatever tier answers.
        get_exact(&p, o);
    }
    let after = s3_gets(&refs);
    for (((o, d), b), a) in objs.iter().zip(&damage).zip(&before).zip(&after) {
        match d {
            Damage::None => assert_eq!(a - b, 0, "{}: untouched, no S3 GET", o.key),
            _ => assert!(a - b >= 1, "{}: {d:?}: fetched again from S3", o.key),
        }
    }
    let text = metrics_text(&p);
    assert!(
        disk_shard(&text, "checksum_failures") > 0,
        "checksum failures counted"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. SIGKILL during a fill.

/// When the proxy is killed, relative to a GET of a 12 MiB object it fills.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// The first body bytes reached the client (the fill is still in memory).
    FirstBytes,
    /// The response just completed (the disk write is queued or starting).
    Completed,
    /// `ms` after the response completed (the write may be landing).
    After(u64),
    /// Once the entry is indexed on disk.
    Written,
}

#[test]
fn a_sigkill_during_a_fill_leaves_a_directory_that_serves_exact_bytes() {
    let (_tmp, dir) = cache_dir();
    // Memory takes at most 1 MiB: the 12 MiB object only goes to disk.
    let t = Tiers::new(512, 64, 1);
    let moments = [
        KillAt::FirstBytes,
        KillAt::Completed,
        KillAt::After(2),
        KillAt::After(10),
        KillAt::After(40),
        KillAt::Written,
    ];
    let objs = upload("kill", &[12 * MIB; 6]);
    let mut written = Vec::new();
    for (o, at) in objs.iter().zip(moments) {
        let p = Proxy::start(&disk_yaml(&dir, t));
        // Everything filled before this round is served exactly, and what was written whole
        // before a kill is a disk hit.
        for (prev, _) in objs.iter().zip(moments).take_while(|(x, _)| x.key != o.key) {
            let r = get_exact(&p, prev);
            if written.contains(&prev.key) {
                assert!(
                    r.is_disk_hit(),
                    "{} ({at:?} round): {}",
                    prev.key,
                    r.describe()
                );
            }
        }
        match at {
            KillAt::FirstBytes => {
                let mut s = TcpStream::connect(p.addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(&request_bytes("GET", &o.path, &[])).unwrap();
                let mut buf = [0u8; 4096];
                let mut got = 0;
                // Past the head: some body bytes arrived.
                while got < 2048 {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "the proxy closed before the body");
                    got += n;
                }
                p.signal("KILL");
            }
            KillAt::Completed => {
                get_exact(&p, o);
                p.signal("KILL");
            }
            KillAt::After(ms) => {
                get_exact(&p, o);
                std::thread::sleep(Duration::from_millis(ms));
                p.signal("KILL");
            }
            KillAt::Written => {
                fill(&p, std::slice::from_ref(o));
                written.push(o.key.clone());
                p.signal("KILL");
            }
        }
        let mut p = p;
        assert!(
            p.wait_exit(Duration::from_secs(10)).is_some(),
            "the proxy died on SIGKILL"
        );
    }
    // Last round: everything is exact, twice.
    let p = Proxy::start(&disk_yaml(&dir, t));
    for o in &objs {
        let r = get_exact(&p, o);
        if written.contains(&o.key) {
            assert!(r.is_disk_hit(), "{}: {}", o.key, r.describe());
        }
        get_exact(&p, o);
    }
    assert_eq!(disk_shard(&metrics_text(&p), "write_errors"), 0);
}

// ---------------------------------------------------------------------------------------------
// 5. A full filesystem.

/// A tmpfs mounted on a directory, unmounted (lazily) on drop whatever happens.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run mount");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("permission denied") || err.contains("must be superuser") {
                panic!("this test needs root to mount a tmpfs (mount said: {err})");
            }
            panic!("mount -t tmpfs failed: {err}");
        }
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_filesystem_counts_write_errors_and_serves_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let _mount = Tmpfs::mount(&dir, "4m");
    let t = Tiers::new(64, 2, 1);
    let objs = upload("full", &[512 * KIB; 20]);
    let p = Proxy::start(&disk_yaml(&dir, t));
    for o in &objs {
        get_exact(&p, o);
        get_exact(&p, o);
    }
    wait_metrics(&p, "disk write errors", |t| {
        disk_shard(t, "write_errors") > 0
    });
    // Once more, with the disk full: still exact.
    for o in &objs {
        get_exact(&p, o);
    }
    let files = walk(&dir);
    let allocated: u64 = files.iter().map(|f| f.2).sum();
    assert!(allocated <= 4 * MIB as u64, "tmpfs holds {allocated}");
    drop(p);
}

// ---------------------------------------------------------------------------------------------
// 6. Purge.

fn purge(p: &Proxy, what: &str) -> u64 {
    let r = p.admin("POST", &format!("/admin/cache/purge{what}"), &[]);
    assert_eq!(
        r.status,
        200,
        "purge {what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["purged"].as_u64().expect("purged count")
}

#[test]
fn a_purge_removes_from_disk_and_survives_a_restart() {
    let (_tmp, dir) = cache_dir();
    // Memory takes at most 1 MiB; these are over it, so a hit can only come from disk.
    let t = Tiers::new(64, 64, 1);
    let objs = upload("purge", &[MIB + 4 * KIB, 2 * MIB, MIB + 100 * KIB]);
    let (k1, k2, k3) = (&objs[0], &objs[1], &objs[2]);
    let p = Proxy::start(&disk_yaml(&dir, t));
    fill(&p, &objs);
    assert!(get_exact(&p, k1).is_disk_hit());

    // A key purge: gone at once, the next GET a MISS with one S3 GET (which fills it again).
    assert!(purge(&p, &format!("/{NAME}/{}", encode_key(&k1.key))) >= 1);
    assert_eq!(disk_items(&p), 2);
    let b = s3_gets(&[k1]);
    let r = get_exact(&p, k1);
    assert!(r.is_miss(), "after the key purge: {}", r.describe());
    assert_eq!(s3_gets(&[k1])[0] - b[0], 1, "one S3 GET after the purge");
    wait_disk_items(&p, 3);
    // Purge the refilled key again (its tombstone follows its new record), then the bucket.
    assert!(purge(&p, &format!("/{NAME}/{}", encode_key(&k1.key))) >= 1);
    assert!(purge(&p, &format!("/{NAME}")) >= 2);
    assert_eq!(disk_items(&p), 0);
    let b = s3_gets(&[k2]);
    let r = get_exact(&p, k2);
    assert!(r.is_miss(), "after the bucket purge: {}", r.describe());
    assert_eq!(s3_gets(&[k2])[0] - b[0], 1);
    // k2 is filled again after both tombstones: it must survive the restart.
    wait_disk_items(&p, 1);
    assert!(get_exact(&p, k2).is_disk_hit());
    assert!(p.terminate().success());

    let p = Proxy::start(&disk_yaml(&dir, t));
    assert_eq!(
        disk_items(&p),
        1,
        "only the fill after the purges came back"
    );
    let before = s3_gets(&[k1, k2, k3]);
    for (o, purged) in [(k1, true), (k3, true), (k2, false)] {
        let r = get_exact(&p, o);
        if purged {
            assert!(
                r.is_miss(),
                "{}: purged before the restart: {}",
                o.key,
                r.describe()
            );
        } else {
            assert!(
                r.is_disk_hit(),
                "{}: filled after the purge: {}",
                o.key,
                r.describe()
            );
        }
    }
    let after = s3_gets(&[k1, k2, k3]);
    assert_eq!(
        after[0] - before[0],
        1,
        "k1: a tombstone survived the restart"
    );
    assert_eq!(after[2] - before[2], 1, "k3: the bucket tombstone survived");
    assert_eq!(after[1] - before[1], 0, "k2: served from disk");
}

// ---------------------------------------------------------------------------------------------
// 7. Range on a disk hit.

#[test]
fn a_range_on_a_disk_hit_reads_only_its_blocks() {
    let (_tmp, dir) = cache_dir();
    let t = Tiers::new(256, 64, 1);
    let objs = upload("range", &[4 * MIB]);
    let o = &objs[0];
    let p = Proxy::start(&disk_yaml(&dir, t));
    fill(&p, &objs);
    let s3_before = s3_gets(&[o]);

    let before = read_bytes(&p);
    let r = fetch(
        p.addr,
        "GET",
        &o.path,
        &[("Range", "bytes=1000000-1000099")],
    );
    assert_eq!(r.status, 206, "{}", r.describe());
    assert!(r.is_disk_hit(), "{}", r.describe());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000000-1000099/{}", 4 * MIB).as_str())
    );
    assert_eq!(r.body, &o.bytes[1_000_000..=1_000_099]);
    let range_read = read_bytes(&p) - before;
    assert!(
        range_read > 0 && range_read < 256 * KIB as u64,
        "a 100-byte Range read {range_read} bytes from disk"
    );

    // A Range across a block boundary and the last bytes: exact too.
    for (range, lo, hi) in [
        ("bytes=65530-65545", 65530, 65545),
        ("bytes=-10", 4 * MIB - 10, 4 * MIB - 1),
    ] {
        let r = fetch(p.addr, "GET", &o.path, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.describe());
        assert!(r.is_disk_hit(), "{range}: {}", r.describe());
        assert_eq!(r.body, &o.bytes[lo..=hi], "{range}");
    }

    let before = read_bytes(&p);
    let r = get_exact(&p, o);
    assert!(r.is_disk_hit(), "{}", r.describe());
    let full_read = read_bytes(&p) - before;
    assert!(
        full_read >= 4 * MIB as u64,
        "a full GET read {full_read} bytes from disk"
    );
    assert_eq!(s3_gets(&[o])[0] - s3_before[0], 0, "no S3 GET");
}

// ---------------------------------------------------------------------------------------------
// 8. HEAD on a disk hit.

#[test]
fn a_head_on_a_disk_hit_reads_only_the_header() {
    let (_tmp, dir) = cache_dir();
    let t = Tiers::new(256, 64, 1);
    let objs = upload("head", &[2 * MIB + 123]);
    let o = &objs[0];
    let p = Proxy::start(&disk_yaml(&dir, t));
    fill(&p, &objs);
    let before = read_bytes(&p);
    let r = fetch(p.addr, "HEAD", &o.path, &[]);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.is_disk_hit(), "{}", r.describe());
    assert_eq!(
        r.header("content-length"),
        Some((2 * MIB + 123).to_string().as_str())
    );
    assert!(r.body.is_empty(), "HEAD sent {} body bytes", r.body.len());
    let head_read = read_bytes(&p) - before;
    assert!(
        head_read > 0 && head_read < 64 * KIB as u64,
        "a HEAD read {head_read} bytes from disk"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. An unusable cache_dir.

#[test]
fn a_cache_dir_that_cannot_be_created_fails_check_and_start() {
    /// `yatagarasu --check` on `cfg`: its exit status and what it printed.
    fn check(cfg: &Path) -> (std::process::Output, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_yatagarasu"))
            .arg("--config")
            .arg(cfg)
            .arg("--check")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let yaml = disk_yaml(&file.join("cache"), Tiers::new(64, 64, 1));
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(&cfg, &yaml).unwrap();

    let (out, text) = check(&cfg);
    assert_eq!(out.status.code(), Some(1), "--check: {text}");
    assert!(text.contains("cache.disk.cache_dir"), "--check: {text}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_yatagarasu"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the proxy started with an unusable cache_dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(2), "start: {out}{err}");
    assert!(
        format!("{out}{err}").contains("cache.disk.cache_dir"),
        "start: {out}{err}"
    );

    // A budget smaller than a region and the journal per shard: named by --check too.
    let (_tmp2, dir) = cache_dir();
    let yaml = disk_yaml(&dir, Tiers::new(1, 64, 1).shards(2));
    std::fs::write(&cfg, &yaml).unwrap();
    let (out, text) = check(&cfg);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check, 1 MiB for 2 shards: {text}"
    );
    assert!(
        text.contains("cache.disk.max_disk_cache_size_mb"),
        "--check: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Another shard count.

#[test]
fn a_shard_count_change_drops_the_old_shard_directories() {
    let (_tmp, dir) = cache_dir();
    let t = Tiers::new(64, 64, 1);
    let objs = upload("reshard", &[4 * KIB, 100 * KIB, 2 * MIB, 3 * MIB]);
    let p = Proxy::start(&disk_yaml(&dir, t.shards(2)));
    fill(&p, &objs);
    assert!(p.terminate().success());
    assert_eq!(shard_dirs(&dir), ["shard-0-of-2", "shard-1-of-2"]);

    let p = Proxy::start(&disk_yaml(&dir, t.shards(1)));
    assert_eq!(shard_dirs(&dir), ["shard-0-of-1"], "old shard dirs removed");
    assert_eq!(disk_items(&p), 0, "nothing carried over");
    let refs: Vec<&Obj> = objs.iter().collect();
    let before = s3_gets(&refs);
    for o in &objs {
        let r = get_exact(&p, o);
        assert!(r.is_miss(), "{}: {}", o.key, r.describe());
    }
    let after = s3_gets(&refs);
    for ((o, b), a) in objs.iter().zip(&before).zip(&after) {
        assert_eq!(a - b, 1, "{}: fetched again", o.key);
    }
    wait_disk_items(&p, objs.len() as u64);
    assert!(p.terminate().success());

    // And the new layout serves after a restart.
    let p = Proxy::start(&disk_yaml(&dir, t.shards(1)));
    for o in &objs {
        assert!(get_exact(&p, o).is_disk_hit(), "{}", o.key);
    }
}

// ---------------------------------------------------------------------------------------------
// 11. A body too large to assemble in memory streams to disk as it passes through.

#[test]
fn a_body_over_the_fill_buffer_streams_to_disk_and_serves_after_a_restart() {
    let (_tmp, dir) = cache_dir();
    // 72 MiB: over the 64 MiB a fill may assemble in memory, within a region of a 512 MiB share.
    let t = Tiers {
        disk_item_mb: 1024,
        ..Tiers::new(1024, 64, 1)
    }
    .shards(2);
    let objs = upload("stream", &[72 * MIB]);
    let o = &objs[0];
    let p = Proxy::start(&disk_yaml(&dir, t));
    // The record is written behind the stream through a bounded queue: a disk slower than the
    // origin abandons it (a queue drop, never a slower response), so allow a few attempts.
    let mut stored = false;
    for attempt in 0..8 {
        let drops = disk_shard(&metrics_text(&p), "queue_drops");
        let r = get_exact(&p, o);
        assert!(
            r.cache_status().contains("fwd=miss; stored"),
            "attempt {attempt}: a streamed fill says stored: {}",
            r.describe()
        );
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let text = metrics_text(&p);
            if disk_bucket(&text, "cache_items") == 1 {
                stored = true;
                break;
            }
            if disk_shard(&text, "queue_drops") > drops {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if stored {
            break;
        }
    }
    assert!(stored, "the 72 MiB body never reached the disk tier");
    assert!(p.terminate().success(), "clean exit on SIGTERM");

    let p = Proxy::start(&disk_yaml(&dir, t));
    assert_eq!(
        disk_items(&p),
        1,
        "the scan at start found the streamed entry"
    );
    let before = s3_gets(&[o]);
    let r = get_exact(&p, o);
    assert!(r.is_disk_hit(), "after the restart: {}", r.describe());
    let last = 72 * MIB - 1;
    let r = fetch(
        p.addr,
        "GET",
        &o.path,
        &[("Range", &format!("bytes={}-{last}", last - 99_999))],
    );
    assert_eq!(r.status, 206, "{}", r.describe());
    assert!(r.is_disk_hit(), "{}", r.describe());
    assert_eq!(r.body, &o.bytes[last - 99_999..=last]);
    assert_eq!(
        s3_gets(&[o])[0] - before[0],
        0,
        "no S3 GET after the restart"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. A 304 revalidation refreshes the disk entry's freshness.

#[test]
fn a_revalidation_refreshes_disk_entries_in_place_and_by_rewrite() {
    let (_tmp, dir) = cache_dir();
    // 3 MiB: disk only (memory items up to 1 MiB), rewritten; 66 MiB: streamed, header rewritten
    // in place. Fresh for 6 s (serving 66 MiB from a debug build takes a while).
    let t = Tiers {
        disk_item_mb: 1024,
        ..Tiers::new(1024, 64, 1)
    }
    .shards(2);
    let yaml = disk_yaml(&dir, t).replace("default_ttl_seconds: 3600", "default_ttl_seconds: 6");
    assert!(yaml.contains("default_ttl_seconds: 6"));
    let objs = upload("reval", &[3 * MIB, 66 * MIB]);
    let p = Proxy::start(&yaml);
    for o in &objs {
        let mut stored = false;
        for _ in 0..4 {
            let before = disk_items(&p);
            let r = get_exact(&p, o);
            assert!(r.is_miss() || r.is_hit(), "{}: {}", o.key, r.describe());
            let deadline = Instant::now() + SETTLE;
            while Instant::now() < deadline && !stored {
                stored = disk_items(&p) > before;
                std::thread::sleep(Duration::from_millis(50));
            }
            if stored {
                break;
            }
        }
        assert!(stored, "{} never reached the disk", o.key);
    }
    std::thread::sleep(Duration::from_millis(6500));
    // Each one in turn. The revalidating GET reads only its response head: the refresh is
    // queued when S3's 304 arrives, and the check that follows is a HEAD (no body to serve,
    // so the entry's fresh 6 s are not spent sending 66 MiB to this client).
    for o in &objs {
        let before = s3_gets(&[o])[0];
        let cache_status = get_head_only(p.addr, &o.path);
        assert!(
            cache_status.contains("fwd=stale; fwd-status=304"),
            "{}: an expired entry is revalidated: {cache_status}",
            o.key
        );
        assert_eq!(
            s3_gets(&[o])[0] - before,
            1,
            "{}: one conditional GET",
            o.key
        );
        // Fresh again on disk: a HEAD (which never revalidates) is a disk hit and makes no S3
        // request. The refresh is written behind the response: poll briefly.
        let before = s3_gets(&[o])[0];
        let deadline = Instant::now() + Duration::from_secs(3);
        let r = loop {
            let r = fetch(p.addr, "HEAD", &o.path, &[]);
            if r.is_disk_hit() || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            r.is_disk_hit(),
            "{}: after the refresh: {}",
            o.key,
            r.describe()
        );
        assert_eq!(
            s3_gets(&[o])[0] - before,
            0,
            "{}: no S3 GET once refreshed",
            o.key
        );
    }
}

/// Send a GET for `path`, read its response head only and close the connection; the
/// `Cache-Status` value (empty if none).
fn get_head_only(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&request_bytes("GET", path, &[("Connection", "close")]))
        .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("cache-status")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 13. Two concurrent misses of one large object: both answered whole, one record written.

#[test]
fn concurrent_misses_of_a_streamed_body_write_one_record() {
    let (_tmp, dir) = cache_dir();
    let t = Tiers {
        disk_item_mb: 1024,
        ..Tiers::new(1024, 64, 1)
    }
    .shards(2);
    let objs = upload("stream2", &[70 * MIB]);
    let o = &objs[0];
    let p = Proxy::start(&disk_yaml(&dir, t));
    // The first client reads slowly, so its stream (paced by the client) is still running when
    // the second misses: the first one's flight has ended, so the second leads a stream too.
    let mut slow = TcpStream::connect(p.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(&request_bytes("GET", &o.path, &[("Connection", "close")]))
        .unwrap();
    let mut first = vec![0u8; 64 * KIB];
    let n = slow.read(&mut first).expect("the first bytes");
    first.truncate(n);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let second = fetch(p.addr, "GET", &o.path, &[]);
    assert_exact(&second, o);
    // It did not wait for a fill it cannot share.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the second GET took {:?}",
        started.elapsed()
    );
    slow.read_to_end(&mut first).expect("the rest");
    let at = find(&first, b"\r\n\r\n").expect("a response head") + 4;
    assert_eq!(
        first.len() - at,
        o.bytes.len(),
        "the slow client's body length"
    );
    assert!(first[at..] == o.bytes[..], "the slow client's body bytes");
    std::thread::sleep(Duration::from_secs(2));
    let inserts = disk_bucket(&metrics_text(&p), "cache_inserts_total");
    assert!(
        inserts <= 1,
        "one streamed record per key at a time, got {inserts} inserts"
    );
    assert!(
        String::from_utf8_lossy(&first[..at]).contains("fwd=miss; stored"),
        "the first response streamed to disk"
    );
    // From S3 (MISS, or BYPASS when the owner was the core that refused its stream).
    assert!(
        !second.is_hit(),
        "the second went to S3: {}",
        second.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 14. A client that starts and drops large downloads cannot flush the disk tier.

#[test]
fn dropped_large_downloads_evict_at_most_about_one_region() {
    let (_tmp, dir) = cache_dir();
    // One shard of 1 GiB: four regions of ~256 MiB; a 200 MiB body fills most of one.
    let t = Tiers {
        disk_item_mb: 1024,
        ..Tiers::new(1024, 64, 1)
    }
    .shards(1);
    let objs = upload("abandon", &[3 * MIB, 200 * MIB]);
    let (kept, big) = (&objs[0], &objs[1]);
    let p = Proxy::start(&disk_yaml(&dir, t));
    fill(&p, std::slice::from_ref(kept));
    // Six downloads dropped after their first bytes: each stream is abandoned, having reserved
    // its whole record. Without a bound, four of them would wrap the ring over `kept`.
    for _ in 0..6 {
        let mut s = TcpStream::connect(p.addr).expect("connect");
        s.write_all(&request_bytes("GET", &big.path, &[("Connection", "close")]))
            .unwrap();
        let mut some = vec![0u8; 64 * KIB];
        let _ = s.read(&mut some).expect("the first bytes");
        drop(s);
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = get_exact(&p, kept);
    assert!(
        r.is_disk_hit(),
        "an entry written before the dropped downloads is still on disk: {}",
        r.describe()
    );
}
