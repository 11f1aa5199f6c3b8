//! Randomised test of one disk shard (`src/cache/disk`) against a recorder, in the manner of
//! foyer's `storage_fuzzy_test.rs`: a fixed seed drives several thousand steps of inserts
//! (bodies of 0..300 KiB, keys reused), lookups (whole, or headers then `read_chunk` of a
//! random range), purges (object, bucket, all), removes, clean restarts (close, await the
//! writer, re-open with `open_shard`), crashes (the runtime dropped while the writer has work
//! queued or in flight) and random byte flips in the data file between runs.
//!
//! The recorder keeps, per key, the bodies that may legally come back: those accepted since
//! the last purge that covers the key (a purge whose tombstone may not have been written when
//! a crash hit may be undone by it; one followed by a clean restart may not), and none older
//! than a body already seen (the single writer indexes in order, and the scan keeps the latest
//! record; byte flips reset that floor). Every lookup must miss or return exactly such a body:
//! bytes, length and identity (an `etag` naming the insert). Needs no S3 backend; runs under
//! io_uring, and under epoll with `MONOIO_FORCE_LEGACY_DRIVER=1` (the blocking pool).
//!
//! Not shipped, not a hot path. Cost: a few seconds (debug build); the data file (8 MiB share,
//! four ~2 MiB regions, reused often) lives on the real disk under /var/tmp (O_DIRECT).

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue};
use yatagarasu::cache::disk::node::{open_shard, Geometry};
use yatagarasu::cache::disk::{DiskReader, DiskTier};
use yatagarasu::cache::{CacheKey, CachedObject, PurgeScope};
use yatagarasu::metrics::ShardMetrics;

const KIB: usize = 1024;
const BUCKETS: [&str; 3] = ["alpha", "beta", "gamma"];
const NAMES: usize = 12;
const VERSIONS: [Option<&str>; 2] = [None, Some("v1")];
const MAX_ITEM: u64 = 1 << 20;

/// xorshift64*: the test's only source of randomness (fixed seed, reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `DISK_FUZZ_TRACE=<key index>`: print what happens to that key (to diagnose a failure).
fn trace(i: usize, what: std::fmt::Arguments<'_>) {
    if std::env::var("DISK_FUZZ_TRACE").is_ok_and(|t| t == i.to_string() || t == "all") {
        eprintln!("[key {i}] {what}");
    }
}

fn legacy() -> bool {
    std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Run `f` on a fresh monoio runtime (epoll when `MONOIO_FORCE_LEGACY_DRIVER` says so), then
/// drop the runtime: tasks still running (the writer) are dropped mid-way, like a crash.
fn block_on<F: Future>(f: F) -> F::Output {
    if legacy() {
        // The disk tier reads and writes on the blocking pool under epoll.
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(4)))
            .enable_timer()
            .build()
            .expect("legacy runtime")
            .block_on(f)
    } else {
        // Every shard has the blocking pool (journal truncation uses it under io_uring too).
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(1)))
            .enable_timer()
            .build()
            .expect("io_uring runtime")
            .block_on(f)
    }
}

/// Key `i` of the key space: bucket x name x version.
fn key_of(i: usize) -> CacheKey {
    let b = BUCKETS[i / (NAMES * VERSIONS.len())];
    let n = (i / VERSIONS.len()) % NAMES;
    let v = VERSIONS[i % VERSIONS.len()];
    CacheKey::new(b, format!("obj/{n}.bin").as_bytes(), v)
}

const KEYS: usize = BUCKETS.len() * NAMES * VERSIONS.len();

/// The body of insert `id`: `len` bytes derived from the id (regenerated to compare).
fn body_of(id: u64, len: usize) -> Bytes {
    let mut r = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn object_of(id: u64, len: usize) -> Arc<CachedObject> {
    let headers = vec![
        (
            header::ETAG,
            HeaderValue::from_str(&format!("\"{id}\"")).expect("etag"),
        ),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
    ];
    Arc::new(CachedObject::new(
        body_of(id, len),
        headers,
        SystemTime::now(),
        Duration::from_secs(3600),
    ))
}

/// What may come back for one key.
#[derive(Default, Clone)]
struct KeyState {
    /// Inserts accepted since the last purge covering the key, oldest first.
    live: Vec<u64>,
    /// Inserts accepted since the last purge covering the key that a clean restart made
    /// durable (its tombstone surely written): what a crash may bring back.
    durable: Vec<u64>,
    /// No insert older than this may come back (one at least this new was seen).
    floor: u64,
}

#[derive(Default)]
struct Recorder {
    keys: Vec<KeyState>,
    /// Insert id -> (key index, body length).
    inserts: HashMap<u64, (usize, usize)>,
    next_id: u64,
    hits: u64,
    misses: u64,
    range_reads: u64,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            keys: vec![KeyState::default(); KEYS],
            next_id: 1,
            ..Recorder::default()
        }
    }

    fn purge(&mut self, scope: &PurgeScope) {
        for (i, k) in self.keys.iter_mut().enumerate() {
            let key = key_of(i);
            let covered = match scope {
                PurgeScope::All => true,
                PurgeScope::Bucket(b) => key.bucket() == b,
                PurgeScope::Object(b, n) => key.bucket() == b && key.key() == &n[..],
            };
            if covered {
                k.live.clear();
            }
        }
    }

    /// A clean restart: every purge so far has its tombstone on disk.
    fn clean_restart(&mut self) {
        for k in &mut self.keys {
            k.durable = k.live.clone();
        }
    }

    /// A crash: a purge not followed by a clean restart may be undone (its tombstone may not
    /// have been written), so every insert accepted since the last durable purge may come back.
    fn crash(&mut self) {
        for k in &mut self.keys {
            k.live = k.durable.clone();
        }
    }

    /// Check what a lookup of key `i` returned (the insert id from the etag).
    fn check_hit(&mut self, i: usize, id: u64, step: usize) {
        let k = &mut self.keys[i];
        assert!(
            k.live.contains(&id),
            "step {step}: key {:?} returned insert {id}, legal: {:?} (a purged or unknown body)",
            key_of(i),
            k.live
        );
        assert!(
            id >= k.floor,
            "step {step}: key {:?} returned insert {id}, older than {} already seen",
            key_of(i),
            k.floor
        );
        k.floor = id;
        self.hits += 1;
    }
}

fn etag_id(obj: &CachedObject) -> u64 {
    let e = obj
        .etag
        .as_ref()
        .expect("stored etag")
        .to_str()
        .expect("ascii");
    e.trim_matches('"').parse().expect("numeric etag")
}

/// One run of the shard between restarts: `steps` random operations. Returns whether it ended
/// in a crash.
fn run_once(
    dir: &Path,
    geometry: Geometry,
    rng: &mut Rng,
    rec: &mut Recorder,
    first_step: usize,
    steps: usize,
) -> bool {
    let seed = open_shard(dir, geometry).expect("open_shard");
    assert!(
        seed.direct,
        "the data file must be O_DIRECT (use a real disk)"
    );
    let crash = rng.chance(35);
    // A crash after how many steps (the writer then has queued or in-flight work).
    let crash_at = if crash {
        rng.below(steps as u64) as usize
    } else {
        steps
    };
    block_on(async {
        let metrics = Arc::new(ShardMetrics::standalone());
        let reader = Rc::new(
            DiskReader::new(std::slice::from_ref(&seed.file), !legacy(), metrics.clone())
                .expect("reader"),
        );
        let tier = Rc::new(DiskTier::new(0, &seed, MAX_ITEM, reader.clone(), metrics));
        // Right after a (re)start: every key once, before anything else changes.
        for i in 0..KEYS {
            lookup(&tier, &reader, rng, rec, i, first_step).await;
        }
        let writer = monoio::spawn(tier.clone().run_writer());
        for s in 0..crash_at {
            let step = first_step + s;
            let i = rng.below(KEYS as u64) as usize;
            match rng.below(100) {
                0..=39 => {
                    let len = if rng.chance(60) {
                        rng.below(8 * KIB as u64 + 1) as usize
                    } else {
                        rng.below(300 * KIB as u64 + 1) as usize
                    };
                    let id = rec.next_id;
                    rec.next_id += 1;
                    if tier.insert(&key_of(i), &object_of(id, len)) {
                        rec.inserts.insert(id, (i, len));
                        rec.keys[i].live.push(id);
                        rec.keys[i].durable.push(id);
                        trace(i, format_args!("step {step}: insert {id} ({len} B) queued"));
                    }
                }
                40..=84 => lookup(&tier, &reader, rng, rec, i, step).await,
                85..=90 => {
                    let key = key_of(i);
                    let scope = match rng.below(20) {
                        0 => PurgeScope::All,
                        1..=4 => PurgeScope::Bucket(key.bucket().to_owned()),
                        _ => PurgeScope::Object(key.bucket().to_owned(), key.key().to_vec()),
                    };
                    tier.purge(&scope);
                    rec.purge(&scope);
                    for j in 0..KEYS {
                        trace(j, format_args!("step {step}: purge {scope:?}"));
                    }
                }
                91..=95 => {
                    tier.remove(&key_of(i));
                    trace(i, format_args!("step {step}: remove"));
                }
                _ => {
                    // Let the writer run a while.
                    monoio::time::sleep(Duration::from_micros(rng.below(2000))).await;
                }
            }
        }
        if crash {
            // Dropping the runtime drops the writer with its queue and any write in flight.
            return;
        }
        tier.close();
        writer.await;
    });
    for j in 0..KEYS {
        trace(
            j,
            format_args!("run ends: crash {crash} after {crash_at} steps"),
        );
    }
    if crash {
        rec.crash();
    } else {
        rec.clean_restart();
    }
    crash
}

/// Look key `i` up (whole or headers-only, then a random range through `read_chunk`) and check
/// the answer against the recorder.
async fn lookup(
    tier: &DiskTier,
    reader: &DiskReader,
    rng: &mut Rng,
    rec: &mut Recorder,
    i: usize,
    step: usize,
) {
    let key = key_of(i);
    let whole = rng.chance(50);
    let whole_max = if rng.chance(80) {
        u64::MAX
    } else {
        64 * KIB as u64
    };
    let got = tier.get(&key.as_ref_key(), whole, whole_max).await;
    trace(
        i,
        format_args!("step {step}: get -> {:?}", got.as_ref().map(|o| etag_id(o))),
    );
    let Some(obj) = got else {
        rec.misses += 1;
        return;
    };
    let id = etag_id(&obj);
    let &(ki, len) = rec
        .inserts
        .get(&id)
        .unwrap_or_else(|| panic!("step {step}: unknown insert {id}"));
    assert_eq!(
        ki, i,
        "step {step}: insert {id} came back under another key"
    );
    rec.check_hit(i, id, step);
    let want = body_of(id, len);
    match &obj.disk {
        None => {
            assert_eq!(obj.body.len(), len, "step {step}: insert {id} length");
            assert!(obj.body == want, "step {step}: insert {id} bytes differ");
        }
        Some(body) => {
            assert!(obj.body.is_empty());
            assert_eq!(body.body_len, len as u64, "step {step}: insert {id} length");
            let from = rng.below(len as u64 + 1);
            let max = 1 + rng.below(200 * KIB as u64) as usize;
            if let Ok(got) = reader.read_chunk(body, from, max).await {
                let to = (from as usize + max).min(len);
                assert!(
                    got[..] == want[from as usize..to],
                    "step {step}: insert {id} bytes {from}..{to} differ"
                );
                rec.range_reads += 1;
            }
        }
    }
}

/// Flip `n` random bytes of the data file (a failing disk, a stray write).
fn flip_bytes(path: &Path, rng: &mut Rng, n: usize) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("data file");
    let len = f.metadata().expect("metadata").len();
    if len == 0 {
        return;
    }
    for _ in 0..n {
        let at = rng.below(len);
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).expect("read");
        b[0] ^= 1 << rng.below(8);
        f.write_all_at(&b, at).expect("write");
    }
    f.sync_all().expect("sync");
}

#[test]
fn a_shard_never_serves_a_wrong_or_purged_body() {
    let tmp = tempfile::Builder::new()
        .prefix("yatagarasu-disk-fuzz")
        .tempdir_in("/var/tmp")
        .expect("tempdir on the real disk");
    let dir = tmp.path().join("shard-0-of-1");
    let geometry = Geometry::for_share(8 << 20).expect("geometry");
    let steps: usize = std::env::var("DISK_FUZZ_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6000);
    let seed: u64 = std::env::var("DISK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_D15C);
    let mut rng = Rng(seed | 1);
    let mut rec = Recorder::new();
    let (mut done, mut runs, mut crashes, mut flips) = (0, 0, 0, 0);
    while done < steps {
        let n = (50 + rng.below(400) as usize).min(steps - done);
        if run_once(&dir, geometry, &mut rng, &mut rec, done, n) {
            crashes += 1;
        }
        runs += 1;
        done += n;
        if rng.chance(25) {
            let n = 1 + rng.below(8) as usize;
            flip_bytes(&dir.join("data"), &mut rng, n);
            flips += 1;
            for j in 0..KEYS {
                trace(j, format_args!("bytes flipped"));
            }
            // A flipped record is skipped by the scan: an older one of the key may show.
            for k in &mut rec.keys {
                k.floor = 0;
            }
        }
    }
    // A last clean run looks every key up once more after a restart.
    run_once(&dir, geometry, &mut rng, &mut rec, done, 0);
    eprintln!(
        "disk fuzz (seed {seed:#x}, {} driver): {steps} steps, {runs} runs ({crashes} crashes, \
         {flips} with flipped bytes), {} inserts, {} hits ({} range reads), {} misses",
        if legacy() { "epoll" } else { "io_uring" },
        rec.inserts.len(),
        rec.hits,
        rec.range_reads,
        rec.misses
    );
    assert!(rec.hits > 100, "the test should hit often");
}

/// One short run of a fresh tier on `dir`: `f` acts on it, the writer drains, then whether
/// `b/x` is served.
fn short_run(dir: &Path, g: Geometry, f: impl FnOnce(&DiskTier)) -> bool {
    let seed = open_shard(dir, g).expect("open_shard");
    block_on(async {
        let m = Arc::new(ShardMetrics::standalone());
        let reader = Rc::new(
            DiskReader::new(std::slice::from_ref(&seed.file), !legacy(), m.clone())
                .expect("reader"),
        );
        let tier = Rc::new(DiskTier::new(0, &seed, MAX_ITEM, reader, m));
        let writer = monoio::spawn(tier.clone().run_writer());
        f(&tier);
        tier.close();
        writer.await;
        let x = CacheKey::new("b", b"x", None);
        tier.get(&x.as_ref_key(), true, u64::MAX).await.is_some()
    })
}

/// A byte flipped in the purge journal (its checksum, its magic) must not bring a purged entry
/// back after a restart: a damaged journal empties the shard (a purge it held might be lost),
/// so the purged entry is absent, and so is everything else.
#[test]
fn a_damaged_purge_journal_does_not_bring_a_purged_entry_back() {
    for at in [4095usize, 0, 9] {
        let tmp = tempfile::Builder::new()
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let dir = tmp.path().join("shard-0-of-1");
        let g = Geometry::for_share(8 << 20).expect("geometry");
        let x = CacheKey::new("b", b"x", None);
        short_run(&dir, g, |t| assert!(t.insert(&x, &object_of(1, 1000))));
        // Fill past the first region so the purge and the entry are far apart.
        for i in 0..12 {
            let k = CacheKey::new("b", format!("f{i}").as_bytes(), None);
            short_run(&dir, g, |t| {
                assert!(t.insert(&k, &object_of(100 + i, 200_000)))
            });
        }
        short_run(&dir, g, |t| {
            t.purge(&PurgeScope::Object("b".into(), b"x".to_vec()));
        });
        assert!(!short_run(&dir, g, |_| {}), "purged, clean restart");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("purges"))
            .expect("purges");
        assert!(
            f.metadata().expect("metadata").len() >= 4096,
            "the purge is journaled"
        );
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at as u64).expect("read");
        b[0] ^= 1;
        f.write_all_at(&b, at as u64).expect("write");
        assert!(
            !short_run(&dir, g, |_| {}),
            "flip at {at}: a purged entry came back after the journal was damaged"
        );
    }
}

/// A journal that fills up is compacted; when what it holds still matters it collapses to one
/// purge of everything, so nothing purged (and nothing older) comes back, later entries do,
/// and the journal stays within the shard's slack.
#[test]
fn a_full_purge_journal_is_compacted_without_forgetting_a_purge() {
    let tmp = tempfile::Builder::new()
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let dir = tmp.path().join("shard-0-of-1");
    let g = Geometry::for_share(8 << 20).expect("geometry");
    let x = CacheKey::new("b", b"x", None);
    let y = CacheKey::new("b", b"y", None);
    short_run(&dir, g, |t| assert!(t.insert(&x, &object_of(1, 1000))));
    let n = yatagarasu::cache::disk::JOURNAL_SLOTS + 20;
    short_run(&dir, g, |t| {
        for i in 0..n {
            t.purge(&PurgeScope::Object(
                "b".into(),
                format!("p{i}").into_bytes(),
            ));
        }
    });
    let found_y = short_run(&dir, g, |t| assert!(t.insert(&y, &object_of(2, 1000))));
    assert!(
        !found_y,
        "`x` is gone once the journal collapsed to a purge of everything"
    );
    let seed = open_shard(&dir, g).expect("open_shard");
    let keys: Vec<&CacheKey> = seed.entries.iter().map(|e| &e.key).collect();
    assert_eq!(
        keys,
        vec![&y],
        "only the entry written after the purges survives"
    );
    let journal = std::fs::metadata(dir.join("purges")).expect("purges").len();
    assert!(
        journal <= (yatagarasu::cache::disk::JOURNAL_SLOTS * 4096) as u64,
        "journal of {journal} bytes"
    );
}
