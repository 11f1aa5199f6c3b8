//! The per-core memory shard: a `quick_cache::unsync::Cache` (CLOCK-Pro admission and eviction)
//! of `Rc<CachedObject>` weighed in bytes, plus the shard's cache counters.
//!
//! Hot path: [`MemoryShard::get`] is one hash probe and an `Rc` clone (~17 ns, no allocation);
//! [`MemoryShard::insert`] two probes plus eviction work (~180 ns in steady state),
//! allocation-free unless it evicts more than one entry. Hit ratio under Zipf(1.0) over 100k
//! keys: 0.60 / 0.77 / 0.86 with 1% / 10% / 30% of the working set (ideal static: 0.62 / 0.81 /
//! 0.90; `benches/cache.rs`).
//!
//! One shard per core, never shared: the cache sits in a `RefCell` and the type is `!Send`.
//! Every borrow of that `RefCell` ends inside the method that took it, so no borrow
//! can be held across an `.await` by construction; callers get an owned `Rc` and may hold it as
//! long as they like (the entry is immutable, eviction only drops the cache's reference).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use quick_cache::unsync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::entry::{CacheKey, CachedObject};

/// Fraction of the capacity quick_cache keeps for its "hot" section; an item heavier than this
/// share of the capacity is never admitted (quick_cache drops it silently; we count it).
const HOT_ALLOCATION: f64 = 0.97;

/// Average entry weight assumed when pre-sizing the shard's tables (bytes).
const ESTIMATED_ENTRY_BYTES: u64 = 16 * 1024;

/// Upper bound on the entries the tables are pre-sized for (they still grow past it).
const MAX_ESTIMATED_ENTRIES: u64 = 1 << 20;

/// A snapshot of one shard's cache counters (totals since the shard started).
///
/// `hits`/`misses`/`bypasses` count responses by `X-Cache` outcome; `inserts` entries admitted;
/// `evictions` entries pushed out by capacity (not replacements, purges or removals);
/// `rejected_too_large` inserts refused because the entry outweighs the shard
/// ([`MemoryShard::max_entry_weight`]); `bytes_from_cache`/`bytes_from_origin` body bytes sent to
/// clients from an entry / streamed from S3; `revalidations` conditional GETs sent for stale
/// entries, `revalidated_not_modified` those answered 304; `single_flight_waits` followers that
/// waited for another request's fetch, `single_flight_timeouts` those that gave up and fetched
/// themselves.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub rejected_too_large: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_origin: u64,
    pub revalidations: u64,
    pub revalidated_not_modified: u64,
    pub single_flight_waits: u64,
    pub single_flight_timeouts: u64,
}

fn bump(c: &mut u64, n: u64) {
    *c = c.wrapping_add(n);
}

/// Weighs an entry as its key plus [`CachedObject::weight`] (always > 0).
#[derive(Clone, Copy, Debug, Default)]
struct EntryWeighter;

impl Weighter<CacheKey, Rc<CachedObject>> for EntryWeighter {
    fn weight(&self, key: &CacheKey, val: &Rc<CachedObject>) -> u64 {
        key.weight() + val.weight()
    }
}

/// Collects what quick_cache pushes out during one operation, so the shard can tell evictions
/// from replacements and rejections, and drop the values after its `RefCell` borrow ended.
#[derive(Clone, Copy, Debug, Default)]
struct EvictionLog;

/// Items quick_cache reported during one operation. The first is kept inline: a steady-state
/// insert evicts about one entry, and that costs no allocation.
#[derive(Default)]
struct Evicted {
    first: Option<(CacheKey, Rc<CachedObject>)>,
    more: Vec<(CacheKey, Rc<CachedObject>)>,
}

impl Evicted {
    fn iter(&self) -> impl Iterator<Item = &(CacheKey, Rc<CachedObject>)> {
        self.first.iter().chain(self.more.iter())
    }
}

impl Lifecycle<CacheKey, Rc<CachedObject>> for EvictionLog {
    type RequestState = Evicted;

    fn on_evict(&self, state: &mut Evicted, key: CacheKey, val: Rc<CachedObject>) {
        if state.first.is_none() {
            state.first = Some((key, val));
        } else {
            state.more.push((key, val));
        }
    }
}

type Inner = Cache<CacheKey, Rc<CachedObject>, EntryWeighter, DefaultHashBuilder, EvictionLog>;

/// One core's memory cache shard. See the module docs for the borrowing rule.
pub struct MemoryShard {
    cache: RefCell<Inner>,
    capacity_bytes: u64,
    /// Written only by the owning core; a 96-byte copy per update.
    counters: Cell<CacheCounters>,
}

impl MemoryShard {
    /// A shard holding at most `capacity_bytes` of entry weight (the shard's share of
    /// `cache.memory.max_cache_size_mb`). 0 makes a shard that admits nothing.
    pub fn new(capacity_bytes: u64) -> Self {
        let estimated = (capacity_bytes / ESTIMATED_ENTRY_BYTES).clamp(16, MAX_ESTIMATED_ENTRIES);
        let mut options = OptionsBuilder::new();
        options
            .estimated_items_capacity(estimated as usize)
            .weight_capacity(capacity_bytes)
            .hot_allocation(HOT_ALLOCATION);
        let cache = match options.build() {
            Ok(o) => {
                Cache::with_options(o, EntryWeighter, DefaultHashBuilder::default(), EvictionLog)
            }
            // Unreachable: both required options are set above.
            Err(_) => Cache::with(
                estimated as usize,
                capacity_bytes,
                EntryWeighter,
                DefaultHashBuilder::default(),
                EvictionLog,
            ),
        };
        MemoryShard {
            cache: RefCell::new(cache),
            capacity_bytes,
            counters: Cell::new(CacheCounters::default()),
        }
    }

    /// The entry for `key`, fresh or stale (the caller checks [`CachedObject::is_fresh`]).
    /// Marks it recently used. Does not touch the counters.
    pub fn get(&self, key: &CacheKey) -> Option<Rc<CachedObject>> {
        self.cache.borrow().get(key).cloned()
    }

    /// Insert `obj` under `key`, replacing any entry for it, evicting others as needed.
    ///
    /// Returns `false` (and counts `rejected_too_large`) when the entry's weight exceeds
    /// [`MemoryShard::max_entry_weight`]: quick_cache silently refuses such items, and any
    /// older entry for `key` is removed too (it no longer matches S3). Counts `inserts` and
    /// every entry evicted to make room. Inserting the `Rc` already stored is a no-op.
    pub fn insert(&self, key: CacheKey, obj: Rc<CachedObject>) -> bool {
        // quick_cache reports rejected, replaced and evicted items alike through the lifecycle.
        // The rejected one is this very key object (its buffer address is unique while both are
        // alive); the replaced one has an equal key (cloned only when replacing: revalidations).
        let new_key = key.identity();
        let mut log = Evicted::default();
        let replaced_key = {
            let mut cache = self.cache.borrow_mut();
            let replaced_key = match cache.peek(&key) {
                Some(p) if Rc::ptr_eq(p, &obj) => return true,
                Some(_) => Some(key.clone()),
                None => None,
            };
            cache.insert_with_lifecycle(key, obj.clone(), &mut log);
            replaced_key
        };
        let mut admitted = true;
        let mut evictions = 0;
        for (k, v) in log.iter() {
            if Rc::ptr_eq(v, &obj) && k.identity() == new_key {
                admitted = false;
            } else if replaced_key.as_ref() != Some(k) {
                evictions += 1;
            }
        }
        self.counters_mut(|c| {
            bump(&mut c.evictions, evictions);
            if admitted {
                bump(&mut c.inserts, 1);
            } else {
                bump(&mut c.rejected_too_large, 1);
            }
        });
        debug_assert!(self.weight() <= self.capacity_bytes);
        admitted
        // `log` (the evicted entries) drops here, after the borrow ended.
    }

    /// Remove the entry for `key`; whether there was one.
    pub fn remove(&self, key: &CacheKey) -> bool {
        let removed = self.cache.borrow_mut().remove(key);
        removed.is_some()
    }

    /// Remove every entry of config bucket `bucket` (admin purge, bucket removed or changed by a
    /// reload); returns how many. O(entries in the shard).
    pub fn purge_bucket(&self, bucket: &str) -> usize {
        let mut cache = self.cache.borrow_mut();
        let before = cache.len();
        cache.retain(|k, _| k.bucket_bytes() != bucket.as_bytes());
        before - cache.len()
    }

    /// Remove every entry; returns how many.
    pub fn clear(&self) -> usize {
        let mut cache = self.cache.borrow_mut();
        let n = cache.len();
        cache.clear();
        n
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.cache.borrow().len()
    }

    /// Whether the shard holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total weight held (bytes, as weighed by key + [`CachedObject::weight`]).
    pub fn weight(&self) -> u64 {
        self.cache.borrow().weight()
    }

    /// The capacity given to [`MemoryShard::new`] (bytes).
    pub fn capacity(&self) -> u64 {
        self.capacity_bytes
    }

    /// Heaviest entry (key + object weight, bytes) the shard admits: 97% of the capacity
    /// (quick_cache's hot section). Use it with `max_item_size_mb` to decide whether a response
    /// is worth buffering at all.
    pub fn max_entry_weight(&self) -> u64 {
        ((self.capacity_bytes as f64 * HOT_ALLOCATION) as u64)
            .clamp(self.capacity_bytes.min(1), self.capacity_bytes)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> CacheCounters {
        self.counters.get()
    }

    /// Update the counters in place: `shard.counters_mut(|c| c.revalidations += 1)`. The
    /// `record_*` methods below cover the usual events.
    pub fn counters_mut(&self, f: impl FnOnce(&mut CacheCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// A response served from an entry (`X-Cache: HIT`, or a 304/206/416 answered from it) with
    /// `body_bytes` of body sent (0 for HEAD and 304).
    pub fn record_hit(&self, body_bytes: u64) {
        self.counters_mut(|c| {
            bump(&mut c.hits, 1);
            bump(&mut c.bytes_from_cache, body_bytes);
        });
    }

    /// A cacheable request no tier could answer (`X-Cache: MISS`).
    pub fn record_miss(&self) {
        self.counters_mut(|c| bump(&mut c.misses, 1));
    }

    /// A request that skipped the cache (`X-Cache: BYPASS`: bucket not cached, object too large,
    /// not storable).
    pub fn record_bypass(&self) {
        self.counters_mut(|c| bump(&mut c.bypasses, 1));
    }

    /// `body_bytes` streamed from S3 to a client (misses, bypasses, revalidations that changed).
    pub fn record_origin_bytes(&self, body_bytes: u64) {
        self.counters_mut(|c| bump(&mut c.bytes_from_origin, body_bytes));
    }

    /// A conditional GET sent to S3 for a stale entry; `not_modified` if S3 answered 304.
    pub fn record_revalidation(&self, not_modified: bool) {
        self.counters_mut(|c| {
            bump(&mut c.revalidations, 1);
            bump(&mut c.revalidated_not_modified, u64::from(not_modified));
        });
    }

    /// A single-flight follower finished waiting; `timed_out` if it gave up and fetched itself.
    pub fn record_single_flight_wait(&self, timed_out: bool) {
        self.counters_mut(|c| {
            bump(&mut c.single_flight_waits, 1);
            bump(&mut c.single_flight_timeouts, u64::from(timed_out));
        });
    }
}

impl std::fmt::Debug for MemoryShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryShard")
            .field("len", &self.len())
            .field("weight", &self.weight())
            .field("capacity_bytes", &self.capacity_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::ENTRY_OVERHEAD_BYTES;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime};

    fn obj(body_len: usize) -> Rc<CachedObject> {
        Rc::new(CachedObject {
            body: Bytes::from(vec![1u8; body_len]),
            headers: Vec::new(),
            etag: None,
            last_modified: None,
            stored_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
        })
    }

    fn key(bucket: &str, i: usize) -> CacheKey {
        CacheKey::new(bucket, format!("obj-{i}").as_bytes(), None)
    }

    fn weight_of(k: &CacheKey, o: &CachedObject) -> u64 {
        k.weight() + o.weight()
    }

    #[test]
    fn get_returns_what_was_inserted() {
        let shard = MemoryShard::new(1 << 20);
        let k = key("b", 1);
        assert!(shard.get(&k).is_none());
        let o = obj(100);
        assert!(shard.insert(k.clone(), o.clone()));
        let got = shard.get(&k).expect("hit");
        assert!(Rc::ptr_eq(&got, &o));
        assert_eq!(shard.len(), 1);
        assert_eq!(shard.weight(), weight_of(&k, &o));
        assert!(shard.weight() >= 100 + ENTRY_OVERHEAD_BYTES);
        assert!(shard
            .get(&CacheKey::new("b", b"obj-1", Some("v")))
            .is_none());
        let c = shard.counters();
        assert_eq!((c.inserts, c.evictions, c.rejected_too_large), (1, 0, 0));
        // Same Rc again: no-op. New Rc: replacement, not an eviction.
        assert!(shard.insert(k.clone(), o.clone()));
        let o2 = obj(200);
        assert!(shard.insert(k.clone(), o2.clone()));
        assert!(Rc::ptr_eq(&shard.get(&k).expect("hit"), &o2));
        let c = shard.counters();
        assert_eq!((c.inserts, c.evictions), (2, 0));
        assert_eq!(shard.len(), 1);
    }

    #[test]
    fn too_heavy_items_are_rejected_and_counted() {
        let shard = MemoryShard::new(64 * 1024);
        let k = key("b", 1);
        let fits = obj(1000);
        assert!(shard.insert(k.clone(), fits));
        // Exactly at the limit: admitted; one byte over: rejected, and the old entry is gone.
        let overhead = weight_of(&k, &obj(0));
        let at_limit = obj((shard.max_entry_weight() - overhead) as usize);
        assert_eq!(weight_of(&k, &at_limit), shard.max_entry_weight());
        assert!(shard.insert(k.clone(), at_limit));
        let over = obj((shard.max_entry_weight() - overhead + 1) as usize);
        assert!(!shard.insert(k.clone(), over));
        assert!(
            shard.get(&k).is_none(),
            "a stale older entry must not survive"
        );
        assert!(!shard.insert(key("b", 2), obj(1 << 20)));
        let c = shard.counters();
        assert_eq!(c.rejected_too_large, 2);
        assert_eq!(c.inserts, 2);
        assert_eq!(shard.len(), 0);
        // A zero-capacity shard admits nothing.
        let none = MemoryShard::new(0);
        assert!(!none.insert(key("b", 1), obj(0)));
        assert_eq!(none.counters().rejected_too_large, 1);
    }

    #[test]
    fn evictions_are_counted_and_capacity_holds() {
        let cap = 100 * 1024;
        let shard = MemoryShard::new(cap);
        let per = weight_of(&key("b", 0), &obj(4096));
        let n = 200;
        for i in 0..n {
            assert!(shard.insert(key("b", i), obj(4096)));
            assert!(shard.weight() <= cap);
        }
        let c = shard.counters();
        assert_eq!(c.inserts, n as u64);
        assert!(c.evictions > 0);
        assert_eq!(
            c.inserts - c.evictions,
            shard.len() as u64,
            "every admitted entry is either held or was evicted"
        );
        assert!(shard.len() as u64 <= cap / per);
    }

    #[test]
    fn one_rc_under_several_keys_counts_evictions_not_rejections() {
        let shard = MemoryShard::new(16 * 1024);
        let shared = obj(3000);
        for i in 0..20 {
            assert!(shard.insert(key("b", i), shared.clone()));
        }
        let c = shard.counters();
        assert_eq!(c.rejected_too_large, 0);
        assert_eq!(c.inserts, 20);
        assert!(c.evictions > 0);
        assert_eq!(c.inserts - c.evictions, shard.len() as u64);
    }

    #[test]
    fn remove_purge_and_clear() {
        let shard = MemoryShard::new(1 << 20);
        for i in 0..5 {
            shard.insert(key("a", i), obj(10));
            shard.insert(key("ab", i), obj(10));
        }
        assert!(shard.remove(&key("a", 0)));
        assert!(!shard.remove(&key("a", 0)));
        assert_eq!(shard.purge_bucket("a"), 4);
        assert_eq!(shard.purge_bucket("a"), 0);
        assert_eq!(shard.len(), 5, "bucket 'ab' is not a prefix match of 'a'");
        assert!(shard.get(&key("ab", 3)).is_some());
        assert_eq!(shard.clear(), 5);
        assert!(shard.is_empty());
        assert_eq!(shard.weight(), 0);
        assert_eq!(shard.counters().evictions, 0, "purges are not evictions");
    }

    #[test]
    fn counters_record() {
        let shard = MemoryShard::new(1024);
        shard.record_hit(10);
        shard.record_hit(0);
        shard.record_miss();
        shard.record_bypass();
        shard.record_origin_bytes(7);
        shard.record_revalidation(true);
        shard.record_revalidation(false);
        shard.record_single_flight_wait(false);
        shard.record_single_flight_wait(true);
        shard.counters_mut(|c| c.misses += 2);
        let c = shard.counters();
        assert_eq!((c.hits, c.bytes_from_cache), (2, 10));
        assert_eq!((c.misses, c.bypasses, c.bytes_from_origin), (3, 1, 7));
        assert_eq!((c.revalidations, c.revalidated_not_modified), (2, 1));
        assert_eq!((c.single_flight_waits, c.single_flight_timeouts), (2, 1));
    }

    #[test]
    fn held_entries_outlive_removal() {
        let shard = MemoryShard::new(8 * 1024);
        shard.insert(key("b", 0), obj(4000));
        let held = shard.get(&key("b", 0)).expect("hit");
        assert_eq!(shard.clear(), 1);
        assert!(shard.get(&key("b", 0)).is_none());
        assert_eq!(held.body.len(), 4000);
        assert_eq!(
            Rc::strong_count(&held),
            1,
            "the cache released its reference"
        );
    }
}
