//! Key-owned cache benchmarks (`src/cache/owner.rs`, DESIGN section 2):
//!
//! 1. **Cross-core round trip**: a lookup of a 1 KiB entry owned by the other core, between two
//!    threads pinned to CPUs 0 and 1, each running a monoio runtime (the owner serves its
//!    queue; the asker awaits the answer). Reported as p50 / p99 / p99.9 of single round trips
//!    (ns, from a sample of timed lookups), then Criterion's mean per lookup, one at a time (an
//!    idle node: both threads park between lookups) and 64 in flight (a loaded core). For
//!    comparison the same lookup on the owner core itself (no queue) is timed too.
//! 2. **L1 hit ratio** under Zipf(s = 1.0) over 100k keys of 1 KiB on 4 cores: every request
//!    lands on a uniformly random core (SO_REUSEPORT spreads connections so), the owner
//!    partitions together hold 10% of the working set, and each core's L1 is 1% or 10% of its
//!    share. Reports the overall hit ratio, the share of hits answered on the core the request
//!    landed on (owned there, or an L1 copy), and the L1's share of hits of other cores' keys.
//!    Deterministic (seeded xorshift64*); uses the real `MemoryShard` and `L1` types.
//!
//! Not shipped. Run: `cargo bench --bench owner -- --warm-up-time 1 --measurement-time 3`.
//! Under `cargo test` (no `--bench` argument) the workloads shrink tenfold and Criterion runs
//! each benchmark once. On a machine with one CPU the two threads share it (the figures then
//! measure scheduling, and say so).

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::Criterion;
use http::{HeaderMap, HeaderValue};
use yatagarasu::cache::owner::{owner_of, Lookup, OwnerMsg, Owners, L1};
use yatagarasu::cache::{CacheKey, CacheKeyRef, CachedObject, MemoryShard, Tiered};
use yatagarasu::metrics::BucketMetrics;
use yatagarasu_runtime::Peers;

#[path = "support/zipf.rs"]
mod zipf;

use zipf::{XorShift, Zipf};

const KIB: usize = 1024;
const BUCKET: &str = "bench";

fn entry(len: usize) -> Arc<CachedObject> {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        "etag",
        HeaderValue::from_static("\"9b2cf535f27731c974343645a3985328\""),
    );
    Arc::new(CachedObject::from_response(
        Bytes::from(vec![7u8; len]),
        &h,
        SystemTime::now(),
        Duration::from_secs(3600),
    ))
}

/// The first object key `objects/<i>.bin` that core `owner` of 2 owns.
fn key_owned_by(owner: usize) -> String {
    (0..)
        .map(|i| format!("objects/{i:08}.bin"))
        .find(|k| owner_of(BUCKET.as_bytes(), k.as_bytes(), 2) == owner)
        .unwrap_or_default()
}

fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it, and
    // sched_setaffinity(0, ...) applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

type Runtime = monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>;

fn runtime() -> Runtime {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
}

fn owners(me: usize, peers: &Peers<OwnerMsg>) -> Rc<Owners<()>> {
    Owners::new(
        me,
        peers.clone(),
        Tiered::new(MemoryShard::new(64 << 20)),
        L1::new(0),
    )
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One lookup at a time (both threads park between lookups, as on an idle node: each round
/// trip pays two eventfd wake-ups of a sleeping thread), then [`IN_FLIGHT`] lookups at a time
/// from as many tasks (a loaded core: a wake-up finds the other thread awake or serves many
/// messages, so the cost per lookup is the queue work).
fn cross_core(c: &mut Criterion, samples: usize) {
    let (peers, inboxes) = Peers::<OwnerMsg>::new(2, 1024);
    let key = key_owned_by(1);
    let pinned = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let owner_peers = peers.clone();
    let owner_inbox = inboxes[1].clone();
    let owner_key = key.clone();
    let owner = std::thread::spawn(move || {
        if pinned {
            pin(1);
        }
        let mut rt = runtime();
        rt.block_on(async move {
            let cache = owners(1, &owner_peers);
            // Filled through the owner's own lease, as the pipeline does.
            let k = CacheKeyRef::new(BUCKET, owner_key.as_bytes(), None);
            let m = BucketMetrics::default();
            if let Lookup::Lead(lease) = cache.lookup(&k, true, &m).await {
                lease.complete(Some(entry(KIB)));
            }
            ready_tx.send(()).expect("bench main thread");
            let serving = monoio::spawn(cache.clone().serve(owner_inbox, || {}));
            while stop_rx.try_recv().is_err() {
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(serving);
        });
    });
    ready_rx.recv().expect("owner thread ready");
    if pinned {
        pin(0);
    }
    let mut rt = runtime();
    let asker = owners(0, &peers);
    let m = BucketMetrics::default();
    let k = CacheKeyRef::new(BUCKET, key.as_bytes(), None);
    let mut lookup = |n: u64| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..n {
                match asker.lookup(&k, true, &m).await {
                    Lookup::Found(f) => assert_eq!(f.obj.body.len(), KIB),
                    Lookup::Busy => panic!("the owner did not answer (busy)"),
                    _ => panic!("the owner holds the entry"),
                }
            }
            started.elapsed()
        })
    };
    lookup(1000);
    let mut times: Vec<u64> = (0..samples).map(|_| lookup(1).as_nanos() as u64).collect();
    times.sort_unstable();
    println!(
        "cross-core lookup of a 1 KiB entry, one at a time ({}; {samples} round trips): p50 {} \
         ns, p99 {} ns, p99.9 {} ns",
        if pinned {
            "threads pinned to CPUs 0 and 1"
        } else {
            "ONE CPU: both threads share it, figures measure scheduling"
        },
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        percentile(&times, 0.999),
    );
    c.bench_function("owner/lookup_1KiB_other_core", |b| {
        b.iter_custom(&mut lookup)
    });
    c.bench_function("owner/lookup_1KiB_other_core_64_in_flight", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let started = Instant::now();
                let per_task = n.div_ceil(IN_FLIGHT as u64);
                let tasks: Vec<_> = (0..IN_FLIGHT)
                    .map(|_| {
                        let (asker, key) = (asker.clone(), key.clone());
                        monoio::spawn(async move {
                            let m = BucketMetrics::default();
                            let k = CacheKeyRef::new(BUCKET, key.as_bytes(), None);
                            for _ in 0..per_task {
                                assert!(matches!(
                                    asker.lookup(&k, true, &m).await,
                                    Lookup::Found(_)
                                ));
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                // `per_task * IN_FLIGHT` >= n lookups ran: scale to n.
                let ran = (per_task * IN_FLIGHT as u64).max(1);
                started.elapsed().mul_f64(n as f64 / ran as f64)
            })
        })
    });
    stop_tx.send(()).ok();
    owner.join().expect("owner thread");
}

/// Concurrent lookups in the loaded variant of [`cross_core`].
const IN_FLIGHT: usize = 64;

fn own_core(c: &mut Criterion) {
    let m = BucketMetrics::default();

    // The same lookup on the owner core itself: the partition's tier lookup, no queue.
    let (peers, _inboxes) = Peers::<OwnerMsg>::new(2, 1024);
    let mut rt = runtime();
    let own = owners(0, &peers);
    let key = key_owned_by(0);
    let k = CacheKeyRef::new(BUCKET, key.as_bytes(), None);
    rt.block_on(async {
        if let Lookup::Lead(lease) = own.lookup(&k, true, &m).await {
            lease.complete(Some(entry(KIB)));
        }
    });
    c.bench_function("owner/lookup_1KiB_own_core", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..n {
                    assert!(matches!(own.lookup(&k, true, &m).await, Lookup::Found(_)));
                }
                started.elapsed()
            })
        })
    });
}

/// Hit figures of one simulated node: (hit ratio, share of hits answered on the landing core,
/// L1 share of hits of other cores' keys).
fn l1_hit_ratio(l1_percent: u64, requests: usize) -> (f64, f64, f64) {
    const KEYS: usize = 100_000;
    const CORES: usize = 4;
    let obj = entry(KIB);
    let keys: Vec<CacheKey> = (0..KEYS)
        .map(|i| CacheKey::new(BUCKET, format!("objects/{i:08}.bin").as_bytes(), None))
        .collect();
    let per_entry = keys[0].weight() + obj.weight();
    let node = per_entry * KEYS as u64 / 10;
    let share = node / CORES as u64;
    let l1_bytes = share * l1_percent / 100;
    let partitions: Vec<MemoryShard> = (0..CORES)
        .map(|_| MemoryShard::new(share - l1_bytes))
        .collect();
    let l1s: Vec<L1> = (0..CORES).map(|_| L1::new(l1_bytes)).collect();
    let owners: Vec<usize> = keys
        .iter()
        .map(|k| owner_of(k.bucket_bytes(), k.key(), CORES))
        .collect();
    let zipf = Zipf::new(KEYS, 1.0);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut hits, mut local, mut remote_hits, mut l1_hits) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..requests {
        let i = zipf.sample(&mut rng);
        let core = (rng.next_u64() % CORES as u64) as usize;
        let (k, owner) = (&keys[i], owners[i]);
        let kr = k.as_ref_key();
        if owner != core && l1s[core].get(&kr).is_some() {
            hits += 1;
            local += 1;
            remote_hits += 1;
            l1_hits += 1;
            continue;
        }
        match partitions[owner].get(k) {
            Some(found) => {
                hits += 1;
                if owner == core {
                    local += 1;
                } else {
                    remote_hits += 1;
                    l1s[core].offer(&kr, &found);
                }
            }
            None => {
                partitions[owner].insert(k.clone(), obj.clone());
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (
        ratio(hits, requests),
        ratio(local, hits),
        ratio(l1_hits, remote_hits),
    )
}

fn report_l1(requests: usize) {
    println!(
        "L1 under Zipf(s=1.0), 100000 keys of 1 KiB, 4 cores, partitions holding 10% of the \
         working set, {requests} requests landing on random cores:"
    );
    for pct in [0u64, 1, 10] {
        let (hit, local, l1) = l1_hit_ratio(pct, requests);
        println!(
            "  l1_percent {pct:>2}: hit ratio {hit:.4}, hits answered on the landing core \
             {local:.4}, L1 share of other cores' key hits {l1:.4}"
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 10 };
    report_l1(1_000_000 / scale);
    let mut c = Criterion::default().configure_from_args();
    cross_core(&mut c, 100_000 / scale);
    own_core(&mut c);
    c.final_summary();
}
