//! The cache-tier seam: the contract every tier (memory, disk, Redis) implements, written on
//! the [`Tier`] trait, and the purge scopes tiers answer. The pipeline never calls a tier directly: it goes through [`super::Tiered`], which
//! orders them, promotes hits and fills them.
//!
//! Hot path: [`Tier::get`] on every cacheable request (memory: one hash probe and an `Arc`
//! clone, ~17 ns, no allocation; the future of a synchronous tier is ready at once and lives
//! on the caller's stack). [`Tier::insert`] once per completed fill. Purge and stats are
//! control-plane operations (through the shard mailbox).
//!
//! # What a tier guarantees
//!
//! A *tier* is one place an object can be kept: a core's partition of the memory tier
//! ([`MemoryShard`](super::MemoryShard)), its partition of the io_uring disk tier
//! ([`DiskTier`]) and its connections to the shared Redis tier ([`RedisTier`]). Every tier,
//! present and future, guarantees the following; the pipeline relies on nothing else.
//!
//! 1. **An entry is a complete 200 response to a GET.** Its body is the whole representation and
//!    its length equals the origin's `Content-Length`. Partial bodies (206, aborted transfers,
//!    length mismatches), HEAD responses, errors and responses [`storable_ttl`](super::storable_ttl) refuses are never
//!    stored. The pipeline checks the length before inserting; a tier that reads an entry back
//!    from storage (disk, Redis) checks it again and treats a mismatch as a miss.
//! 2. **Entries are immutable once inserted.** A [`CachedObject`] is never modified in place: a
//!    revalidation builds a new object ([`CachedObject::refreshed`], sharing the body) and inserts
//!    it under the same key, replacing the old one. Readers holding the old `Arc` keep a
//!    consistent (headers, body) pair until they finish.
//! 3. **A tier may drop any entry at any time** (eviction, purge, restart, Redis expiry, a full
//!    disk). Nothing may assume an inserted entry is still present, and no correctness property
//!    may depend on a hit.
//! 4. **Lookups never block the shard.** Memory lookups are plain function calls; disk and Redis
//!    lookups are io_uring / socket operations awaited with a deadline (Redis:
//!    `cache.redis.timeout_ms`), never blocking syscalls on the core.
//! 5. **A failing tier degrades to a miss, never an error to the client.** I/O errors, corrupt or
//!    truncated entries, timeouts and decode failures are counted and logged, then the request
//!    proceeds as a miss (to the next tier, then to S3).
//! 6. **Keys identify a representation, not a request.** A [`CacheKey`] is (bucket name, object
//!    key, versionId); it never contains a token, signature, `Authorization` value or any other
//!    query parameter. Authorization (JWT) runs before every lookup, so a hit on a private
//!    bucket still needs a valid token.
//!
//! # What the caller guarantees
//!
//! - Every entry offered to [`Tier::insert`] satisfies guarantee 1 (the pipeline checks the
//!   length against `Content-Length` and `storable_ttl` before offering it).
//! - A key is only used on its owner core ([`super::owner::owner_of`]); no tier is shared
//!   between threads (tiers are `!Send` and may use `RefCell`; no borrow is held across an
//!   `.await`). Other cores reach a key through its owner ([`super::owner::Owners`]), never a
//!   tier directly, and get the immutable `Arc<CachedObject>`.
//! - `get` may be awaited with other work in flight on the core; the caller bounds the total
//!   wait (a tier must also bound its own, e.g. Redis `timeout_ms`).
//!
//! # Cost per operation
//!
//! | tier | `get` | `insert` |
//! |---|---|---|
//! | memory | ~17 ns, 0 allocations | ~180 ns, 0 allocations (1 if 2+ evicted) |
//! | disk | one io_uring read, ~10-100 us (`benches/disk.rs`) | queued write behind the client's stream |
//! | Redis | one round trip, ~20-40 us on loopback, bounded by `timeout_ms` | queued SET behind the stream, drops counted |

use std::rc::Rc;
use std::sync::Arc;

use super::disk::DiskTier;
use super::entry::{CacheKey, CacheKeyRef, CachedObject};
use super::memory::MemoryShard;
use super::redis::RedisTier;

/// What an admin purge removes (`POST /admin/cache/purge[/{bucket}[/{key}]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeScope {
    /// Every entry.
    All,
    /// Every entry of this config bucket.
    Bucket(String),
    /// Every version of this object key (decoded bytes) in this config bucket.
    Object(String, Vec<u8>),
}

/// How much of an entry a lookup wants from a tier that keeps bodies outside memory (disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The whole body when it is at most this many bytes (a plain GET, whose entry is then
    /// promoted to memory), else as [`Read::Headers`].
    Whole(u64),
    /// Headers and validators only: the body is read in chunks as it is sent
    /// ([`CachedObject::disk`]); HEAD, Range and conditional requests.
    Headers,
}

/// One place objects are kept on a core (see the module doc for the contract).
#[allow(async_fn_in_trait)] // single-threaded by design: tiers live on one core, `!Send`.
pub trait Tier {
    /// The tier's name in `Cache-Status` (`detail=`) and metrics (`layer=`): `memory`, `disk`,
    /// `redis`.
    fn name(&self) -> &'static str;

    /// Bytes this core's partition of the tier may hold; 0 = the tier is off.
    fn capacity(&self) -> u64;

    /// The entry for `key`, fresh or stale (the caller checks freshness), or `None` (absent,
    /// or the tier failed: a failure is counted and logged by the tier, never returned).
    /// `read` says how much of a body kept outside memory to read now ([`Read`]); a memory
    /// tier ignores it.
    async fn get(&self, key: &CacheKeyRef<'_>, read: Read) -> Option<Arc<CachedObject>>;

    /// Offer a complete entry; whether the tier admitted it. Never blocks the core: a slow tier
    /// queues the write (bounded) and may drop it.
    fn insert(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool;

    /// Drop the entry for `key` if present (it no longer matches S3).
    fn remove(&self, key: &CacheKey);

    /// Drop every entry `scope` names; how many.
    fn purge(&self, scope: &PurgeScope) -> usize;
}

impl Tier for MemoryShard {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capacity(&self) -> u64 {
        MemoryShard::capacity(self)
    }

    async fn get(&self, key: &CacheKeyRef<'_>, _read: Read) -> Option<Arc<CachedObject>> {
        MemoryShard::get(self, key)
    }

    fn insert(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        MemoryShard::insert(self, key.clone(), obj.clone())
    }

    fn remove(&self, key: &CacheKey) {
        MemoryShard::remove(self, key);
    }

    fn purge(&self, scope: &PurgeScope) -> usize {
        match scope {
            PurgeScope::All => self.clear(),
            PurgeScope::Bucket(b) => self.purge_bucket(b),
            PurgeScope::Object(b, k) => self.purge_object(b, k),
        }
    }
}

impl Tier for DiskTier {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn capacity(&self) -> u64 {
        DiskTier::capacity(self)
    }

    async fn get(&self, key: &CacheKeyRef<'_>, read: Read) -> Option<Arc<CachedObject>> {
        match read {
            Read::Whole(up_to) => DiskTier::get(self, key, true, up_to).await,
            Read::Headers => DiskTier::get(self, key, false, 0).await,
        }
    }

    fn insert(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        DiskTier::insert(self, key, obj)
    }

    fn remove(&self, key: &CacheKey) {
        DiskTier::remove(self, key);
    }

    fn purge(&self, scope: &PurgeScope) -> usize {
        DiskTier::purge(self, scope)
    }
}

impl Tier for Rc<RedisTier> {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capacity(&self) -> u64 {
        // Redis holds the entries; what it may hold is Redis's `maxmemory`, not ours.
        u64::MAX
    }

    async fn get(&self, key: &CacheKeyRef<'_>, _read: Read) -> Option<Arc<CachedObject>> {
        RedisTier::get(self, key).await
    }

    fn insert(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        RedisTier::insert(self, key, obj)
    }

    fn remove(&self, key: &CacheKey) {
        RedisTier::remove(self, key);
    }

    fn purge(&self, scope: &PurgeScope) -> usize {
        RedisTier::purge(self, scope)
    }
}
