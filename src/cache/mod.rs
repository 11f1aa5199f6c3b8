//! Object caching: the cache key and entry, HTTP caching semantics (freshness, preconditions,
//! Range on a cached body), the memory shard, single-flight, and key ownership across cores.
//!
//! Hot path: every cacheable GET/HEAD does one lookup at the key's owner core ([`owner`]: on
//! this core a hash probe and an `Arc` clone, no allocation, ~17 ns for the memory tier, see
//! `benches/cache.rs`; on another core an L1 probe or one cross-core round trip,
//! `benches/owner.rs`) and, on a hit, one precondition evaluation and one Range selection (a
//! few header probes, no allocation). Tiers are `!Send` by design: each core owns the
//! partition of the keys it owns and never shares it (DESIGN section 2); only immutable
//! entries (`Arc<CachedObject>`) cross cores. The async pipeline (fill while streaming,
//! bounded single-flight waits, revalidation requests) lives in `pipeline/` and drives these
//! types.
//!
//! # The cache-tier contract
//!
//! Written on the [`tier::Tier`] trait in `tier.rs`: what every tier guarantees, what the
//! caller guarantees, and what each operation costs. [`tiered::Tiered`] consults the tiers in
//! order, promotes hits and fills every tier; the pipeline talks to nothing else.
//!
//! # What a lookup promises
//!
//! Tiers are consulted in order **memory -> disk -> Redis**; the first *fresh* hit wins and is
//! promoted into the faster tiers before it. A *stale* entry (past `expires_at`) is returned
//! too, marked stale, so the pipeline can revalidate it with a conditional GET (`If-None-Match`
//! with the stored ETag) instead of downloading the body again; a 304 refreshes it
//! ([`CachedObject::revalidated`]), anything else replaces or drops it. When no tier has a fresh
//! entry, the request becomes a miss: one S3 fetch per key per node (the owner's single-flight,
//! [`owner`]), streamed to the first client as bytes arrive and inserted only when complete.
//!
//! # Cost of each operation (memory tier, any body size; `cargo bench --bench cache`, 2-core EPYC)
//!
//! | operation | cost | allocations |
//! |---|---|---|
//! | [`MemoryShard::get`] | one hash probe + `Arc` clone, ~17 ns | 0 |
//! | [`MemoryShard::insert`] | two probes, admission, eviction: ~180 ns | 0 (1 if 2+ evicted) |
//! | [`MemoryShard::purge_bucket`] | O(entries in the shard) | 1 (token list) |
//! | [`evaluate`], [`select_range`] | header probes, HTTP-date parse when present | 0 |
//! | [`storable_ttl`] | one pass over `Cache-Control` | 0 |
//! | [`SingleFlight::begin`] | one or two hash probes; a leader allocates its slot and key | 1-2 |
//!
//! The disk tier ([`disk`]) costs one io_uring read per hit (~10-100 us, `benches/disk.rs`) and
//! one queued write per fill; the Redis tier ([`redis`]) one round trip per lookup that missed
//! both (~20-40 us on loopback, bounded by `cache.redis.timeout_ms`) and one queued SET per fill.

pub mod conditional;
pub mod disk;
pub mod entry;
pub mod memory;
pub mod outcome;
pub mod owner;
pub mod redis;
pub mod single_flight;
pub mod stats;
pub mod tier;
pub mod tiered;

pub use conditional::{evaluate, select_range, Precondition, RangeResult};
pub(crate) use entry::http_date;
pub use entry::{storable_ttl, CacheKey, CacheKeyRef, CachedObject, STORED_HEADERS};
pub use memory::MemoryShard;
pub use outcome::CacheOutcome;
pub use single_flight::{Flight, LeaderGuard, SingleFlight, Waiter};
pub use tier::{PurgeScope, Read, Tier};
pub use tiered::Tiered;
