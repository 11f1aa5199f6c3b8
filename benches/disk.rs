//! Disk tier benchmarks (`src/cache/disk`), on the real disk under /var/tmp (O_DIRECT):
//!
//! 1. **Read path**: a shard file of ~800 MiB filled through the real `DiskTier` with 100k
//!    entries of 4 KiB (8 KiB records: header, metadata and block table do not fit in the same
//!    4 KiB block), and a ~1 GiB one with 128 KiB entries; then random `get(.., whole = true)`
//!    of existing keys by 32 tasks on one io_uring monoio runtime. Reported as IOPS (a fixed
//!    5 s run, then Criterion's elements/s), side by side with `fio --rw=randread --direct=1
//!    --ioengine=io_uring --iodepth=32` at the same block size on the same file, and the ratio
//!    ours / fio. The page cache is dropped before each (O_DIRECT bypasses it anyway).
//! 2. **Start-up scan**: `open_shard` of the 100k-entry shard (the index rebuilt from the
//!    records), three times, caches dropped before each.
//! 3. **Hit ratio** of the disk tier's FIFO-by-region eviction under Zipf(1.0) over 100k keys
//!    of 1 KiB bodies (4 KiB records) at disk capacities of 1%, 10% and 30% of the key space
//!    bytes: replayed through the real `DiskTier` (get on each access, insert on a miss, the
//!    writer draining behind), and through an exact LRU of the same byte capacity.
//!
//! Not shipped, not a hot path. Run: `cargo bench --bench disk` (about 2-3 minutes and ~2 GiB
//! of /var/tmp, removed after; root for the page-cache drop; `fio` for the comparison, skipped
//! with a note when it is absent). Under `--test` (`cargo bench -- --test`, CI) or without
//! `--bench` (`cargo test --benches`), the sizes shrink to a few MiB, fio is skipped, and it
//! finishes in seconds.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http::{header, HeaderValue};
use yatagarasu::cache::disk::format::entry_record_len;
use yatagarasu::cache::disk::node::{open_shard, Geometry};
use yatagarasu::cache::disk::{DiskReader, DiskTier};
use yatagarasu::cache::{CacheKey, CachedObject};
use yatagarasu::metrics::ShardMetrics;

#[path = "support/zipf.rs"]
mod zipf;

use zipf::{XorShift, Zipf};

const KIB: usize = 1024;
const MIB: u64 = 1 << 20;
/// Concurrent readers on the one runtime (the fio iodepth too).
const READERS: usize = 32;
const BUCKET: &str = "bench";

type Runtime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

fn runtime() -> Runtime {
    // As on every shard: a blocking pool (the disk tier truncates its purge journal there).
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(1)))
        .enable_timer()
        .build()
        .expect("io_uring runtime (the disk bench needs io_uring)")
}

/// Sizes of one run: full (`cargo bench`) or tiny (`--test`, `cargo test --benches`).
struct Scale {
    full: bool,
    small_entries: usize,
    large_entries: usize,
    read_time: Duration,
    zipf_keys: usize,
    zipf_warmup: usize,
    zipf_accesses: usize,
}

impl Scale {
    fn from_args() -> Scale {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
        if full {
            Scale {
                full,
                small_entries: 100_000,
                large_entries: 7_900,
                read_time: Duration::from_secs(5),
                zipf_keys: 100_000,
                zipf_warmup: 100_000,
                zipf_accesses: 300_000,
            }
        } else {
            Scale {
                full,
                small_entries: 1_000,
                large_entries: 40,
                read_time: Duration::from_millis(300),
                zipf_keys: 10_000,
                zipf_warmup: 2_000,
                zipf_accesses: 5_000,
            }
        }
    }
}

fn key(i: usize) -> CacheKey {
    CacheKey::new(BUCKET, format!("objects/{i:08}.bin").as_bytes(), None)
}

fn object(len: usize, i: usize) -> Arc<CachedObject> {
    let headers = vec![
        (
            header::ETAG,
            HeaderValue::from_static("\"9b2cf535f27731c974343645a3985328\""),
        ),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
    ];
    Arc::new(CachedObject::new(
        Bytes::from(vec![(i % 251) as u8; len]),
        headers,
        SystemTime::now(),
        Duration::from_secs(86_400),
    ))
}

/// Drop the page cache (root only; O_DIRECT bypasses it anyway). Whether it worked.
fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// A shard and its tier on `rt`, for a share of `share` bytes in `dir`.
struct Shard {
    tier: Rc<DiskTier>,
    metrics: Arc<ShardMetrics>,
}

fn open(dir: &Path, geometry: Geometry) -> Shard {
    let seed = open_shard(dir, geometry).expect("open_shard");
    assert!(seed.direct, "O_DIRECT refused: run on a real disk");
    let metrics = Arc::new(ShardMetrics::standalone());
    let reader = Rc::new(
        DiskReader::new(std::slice::from_ref(&seed.file), true, metrics.clone())
            .expect("disk reader"),
    );
    let tier = Rc::new(DiskTier::new(
        0,
        &seed,
        geometry.max_record(),
        reader,
        metrics.clone(),
    ));
    Shard { tier, metrics }
}

/// The smallest geometry (in 16 MiB steps) that holds `n` records of `rec` bytes without an
/// eviction: region headers and the tail a region leaves unused (less than one record) count.
fn geometry_for(n: usize, rec: u64) -> Geometry {
    let needed = n as u64 * rec;
    let mut share = needed + 2 * MIB;
    loop {
        if let Some(g) = Geometry::for_share(share) {
            if g.data_bytes() >= needed + g.regions as u64 * (4096 + rec) {
                return g;
            }
        }
        share += 16 * MIB;
    }
}

/// Queue `obj` under `k`, waiting while the write-behind queue is full.
async fn insert_waiting(tier: &DiskTier, k: &CacheKey, obj: &Arc<CachedObject>) {
    while !tier.insert(k, obj) {
        monoio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Fill a new shard in `dir` with `n` entries of `len` bytes through the tier; closes it (the
/// writer drained) and returns the data file's path.
fn fill(rt: &mut Runtime, dir: &Path, n: usize, len: usize) -> std::path::PathBuf {
    let rec = entry_record_len(&key(0), &object(len, 0)) as u64;
    let geometry = geometry_for(n, rec);
    let started = Instant::now();
    rt.block_on(async {
        let s = open(dir, geometry);
        let writer = monoio::spawn(s.tier.clone().run_writer());
        for i in 0..n {
            insert_waiting(&s.tier, &key(i), &object(len, i)).await;
        }
        s.tier.close();
        writer.await;
        assert_eq!(s.tier.len(), n, "every entry indexed (none evicted)");
    });
    let path = dir.join("data");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "  filled {n} entries of {} KiB ({rec} B records): {:.0} MiB file in {:.1} s",
        len / KIB,
        size as f64 / MIB as f64,
        started.elapsed().as_secs_f64()
    );
    path
}

/// `n` random whole-body gets of existing keys (`keys` of them) by [`READERS`] tasks; how
/// long they took.
async fn random_gets(s: &Shard, keys: usize, n: u64, seed: u64) -> Duration {
    let started = Instant::now();
    let left = Rc::new(Cell::new(n));
    let tasks: Vec<_> = (0..READERS)
        .map(|t| {
            let tier = s.tier.clone();
            let left = left.clone();
            monoio::spawn(async move {
                let mut rng = XorShift(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                while left.get() > 0 {
                    left.set(left.get() - 1);
                    let k = key((rng.next_u64() % keys as u64) as usize);
                    let got = tier.get(&k.as_ref_key(), true, u64::MAX).await;
                    assert!(got.is_some_and(|o| !o.body.is_empty()), "a hit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    started.elapsed()
}

/// Random reads for `time`: IOPS.
async fn timed_gets(s: &Shard, keys: usize, time: Duration) -> f64 {
    let until = Instant::now() + time;
    let done = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    let tasks: Vec<_> = (0..READERS)
        .map(|t| {
            let tier = s.tier.clone();
            let done = done.clone();
            monoio::spawn(async move {
                let mut rng = XorShift(0xD15C ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                while Instant::now() < until {
                    let k = key((rng.next_u64() % keys as u64) as usize);
                    let got = tier.get(&k.as_ref_key(), true, u64::MAX).await;
                    assert!(got.is_some(), "a hit");
                    done.set(done.get() + 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    done.get() as f64 / started.elapsed().as_secs_f64()
}

/// fio's random-read IOPS on `path` at block size `bs` (`None`: fio absent or failed).
fn fio_iops(path: &Path, bs: &str, secs: u64) -> Option<f64> {
    let out = Command::new("fio")
        .args([
            "--name=r",
            &format!("--filename={}", path.display()),
            "--rw=randread",
            &format!("--bs={bs}"),
            "--direct=1",
            "--ioengine=io_uring",
            &format!("--iodepth={READERS}"),
            &format!("--runtime={secs}"),
            "--time_based",
            "--readonly",
            "--output-format=json",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        println!(
            "  fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["jobs"][0]["read"]["iops"].as_f64()
}

fn fio_present() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Part 1 (and the shard for part 2): the read path at 4 KiB and 128 KiB, ours vs fio, then
/// Criterion's measurement of the same gets.
fn read_path(c: &mut Criterion, scale: &Scale, root: &Path) -> std::path::PathBuf {
    let mut rt = runtime();
    let fio = scale.full && fio_present();
    if scale.full && !fio {
        println!(
            "  note: fio is not installed (apt-get install -y fio): the fio comparison is skipped"
        );
    }
    let small_dir = root.join("small");
    let mut g = c.benchmark_group("disk_get_whole_qd32");
    g.throughput(Throughput::Elements(1));
    for (name, dir, n, len, bs) in [
        (
            "4KiB",
            small_dir.clone(),
            scale.small_entries,
            4 * KIB,
            "4k",
        ),
        (
            "128KiB",
            root.join("large"),
            scale.large_entries,
            128 * KIB,
            "128k",
        ),
    ] {
        let path = fill(&mut rt, &dir, n, len);
        let rec = entry_record_len(&key(0), &object(len, 0));
        let geometry = geometry_for(n, rec as u64);
        let dropped = drop_caches();
        let ours = rt.block_on(async {
            let s = open(&dir, geometry);
            assert_eq!(s.tier.len(), n);
            timed_gets(&s, n, scale.read_time).await
        });
        let theirs = if fio {
            drop_caches();
            fio_iops(&path, bs, scale.read_time.as_secs().max(1))
        } else {
            None
        };
        match theirs {
            Some(f) => {
                println!(
                "  read {name} bodies ({rec} B records), QD{READERS}: ours {ours:.0} IOPS, fio \
                 randread bs={bs} {f:.0} IOPS, ours/fio {:.2}{}",
                ours / f,
                if dropped { "" } else { " (page cache not dropped: not root)" }
            )
            }
            None => println!(
                "  read {name} bodies ({rec} B records), QD{READERS}: ours {ours:.0} IOPS (no fio)"
            ),
        }
        // Criterion's measurement of the same gets (a fresh open: the index from the scan).
        let s = rt.block_on(async { open(&dir, geometry) });
        let mut round = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                round += 1;
                rt.block_on(random_gets(&s, n, iters, round))
            })
        });
        let reads = s.metrics.disk.read_bytes.get();
        assert!(reads > 0 && s.metrics.disk.checksum_failures.get() == 0);
        rt.block_on(async move {
            s.tier.close();
            drop(s);
        });
        if dir != small_dir {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    g.finish();
    small_dir
}

/// Part 2: `open_shard` of the small-entry shard (the index rebuilt by the scan).
fn scan(c: &mut Criterion, scale: &Scale, dir: &Path) {
    let n = scale.small_entries;
    let rec = entry_record_len(&key(0), &object(4 * KIB, 0));
    let geometry = geometry_for(n, rec as u64);
    let runs = if scale.full { 3 } else { 1 };
    let mut times = Vec::new();
    for _ in 0..runs {
        drop_caches();
        let seed = open_shard(dir, geometry).expect("open_shard");
        assert_eq!(seed.entries.len(), n);
        times.push(seed.scan_time);
    }
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "  start-up scan of {n} entries of 4 KiB ({:.0} MiB of records, {} regions of {} MiB): {}",
        (n * rec) as f64 / MIB as f64,
        geometry.regions,
        geometry.region_bytes / MIB,
        ms.join(", ")
    );
    let mut g = c.benchmark_group("disk_scan");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("open_shard_{n}_entries"), |b| {
        b.iter(|| open_shard(dir, geometry).expect("open_shard").entries.len())
    });
    g.finish();
}

/// An exact LRU over `cap` equal-size entries: whether `k` hit (then it is the newest).
struct Lru {
    cap: usize,
    stamp: u64,
    by_key: HashMap<usize, u64>,
    by_stamp: BTreeMap<u64, usize>,
}

impl Lru {
    fn new(cap: usize) -> Lru {
        Lru {
            cap,
            stamp: 0,
            by_key: HashMap::new(),
            by_stamp: BTreeMap::new(),
        }
    }

    fn access(&mut self, k: usize) -> bool {
        self.stamp += 1;
        let hit = match self.by_key.insert(k, self.stamp) {
            Some(old) => {
                self.by_stamp.remove(&old);
                true
            }
            None => false,
        };
        self.by_stamp.insert(self.stamp, k);
        if self.by_key.len() > self.cap {
            if let Some((_, oldest)) = self.by_stamp.pop_first() {
                self.by_key.remove(&oldest);
            }
        }
        hit
    }
}

/// Part 3: FIFO-by-region (the real tier) vs exact LRU hit ratios under Zipf(1.0).
fn hit_ratios(scale: &Scale, root: &Path) {
    let n = scale.zipf_keys;
    let len = KIB;
    let rec = entry_record_len(&key(0), &object(len, 0)) as u64;
    let space = n as u64 * rec;
    let zipf = Zipf::new(n, 1.0);
    let mut rt = runtime();
    println!(
        "  hit ratio, Zipf(1.0) over {n} keys of {} KiB ({rec} B records, {:.0} MiB key \
         space), {} accesses after {} of warm-up:",
        len / KIB,
        space as f64 / MIB as f64,
        scale.zipf_accesses,
        scale.zipf_warmup
    );
    for pct in [1u64, 10, 30] {
        let share = space * pct / 100;
        let Some(geometry) = Geometry::for_share(share) else {
            println!("    {pct:>2}%: {share} B is less than one region: skipped");
            continue;
        };
        let dir = root.join(format!("zipf-{pct}"));
        let started = Instant::now();
        let (fifo, drops) = rt.block_on(async {
            let s = open(&dir, geometry);
            let writer = monoio::spawn(s.tier.clone().run_writer());
            let mut rng = XorShift(0x5EED_0001);
            let (mut hits, mut total) = (0u64, 0u64);
            let obj = object(len, 1);
            for a in 0..scale.zipf_warmup + scale.zipf_accesses {
                let i = zipf.sample(&mut rng);
                let k = key(i);
                let hit = s.tier.get(&k.as_ref_key(), true, u64::MAX).await.is_some();
                if !hit {
                    insert_waiting(&s.tier, &k, &obj).await;
                }
                if a >= scale.zipf_warmup {
                    total += 1;
                    hits += u64::from(hit);
                }
            }
            s.tier.close();
            writer.await;
            let drops = s.metrics.disk.queue_drops.get();
            (hits as f64 / total as f64, drops)
        });
        let cap = ((geometry.data_bytes() - geometry.regions as u64 * 4096) / rec) as usize;
        let mut lru = Lru::new(cap);
        let mut rng = XorShift(0x5EED_0001);
        let (mut hits, mut total) = (0u64, 0u64);
        for a in 0..scale.zipf_warmup + scale.zipf_accesses {
            let hit = lru.access(zipf.sample(&mut rng));
            if a >= scale.zipf_warmup {
                total += 1;
                hits += u64::from(hit);
            }
        }
        let lru_ratio = hits as f64 / total as f64;
        println!(
            "    {pct:>2}% ({:.1} MiB, {} regions of {:.2} MiB, {cap} entries): disk tier \
             (FIFO regions) {:.3}, exact LRU {:.3}, static top-{cap} {:.3} ({:.1} s, {drops} \
             queue-full retries)",
            geometry.data_bytes() as f64 / MIB as f64,
            geometry.regions,
            geometry.region_bytes as f64 / MIB as f64,
            fifo,
            lru_ratio,
            zipf.top_mass(cap),
            started.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn main() {
    let scale = Scale::from_args();
    let tmp = tempfile::Builder::new()
        .prefix("yatagarasu-disk-bench")
        .tempdir_in("/var/tmp")
        .expect("a directory on the real disk (/var/tmp)");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    println!(
        "disk bench in {} ({})",
        tmp.path().display(),
        if scale.full { "full" } else { "test sizes" }
    );
    let small = read_path(&mut c, &scale, tmp.path());
    scan(&mut c, &scale, &small);
    hit_ratios(&scale, tmp.path());
    c.final_summary();
}
