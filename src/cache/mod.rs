//! Object caching: the cache key and entry, HTTP caching semantics (freshness, preconditions,
//! Range on a cached body), the per-core memory shard and per-core single-flight.
//!
//! Hot path: every cacheable GET/HEAD does one lookup (a hash probe and an `Rc` clone, no
//! allocation; ~17 ns for the memory tier, see `benches/cache.rs`) and, on a hit, one
//! precondition evaluation and one Range selection (a few header probes, no allocation). Everything
//! here is synchronous and `!Send` by design: each core owns its tiers and never shares them
//! (DESIGN section 2). The async pipeline (fill while streaming, bounded single-flight waits,
//! revalidation requests) lives in `proxy/` and drives these types.
//!
//! # The cache-tier contract
//!
//! A *tier* is one place an object can be kept: the per-core memory shard ([`MemoryShard`]), the
//! per-core io_uring disk shard and the shared Redis tier (both to come). Every tier, present and
//! future, guarantees the following; the pipeline relies on nothing else.
//!
//! 1. **An entry is a complete 200 response to a GET.** Its body is the whole representation and
//!    its length equals the origin's `Content-Length`. Partial bodies (206, aborted transfers,
//!    length mismatches), HEAD responses, errors and responses [`storable_ttl`] refuses are never
//!    stored. The pipeline checks the length before inserting; a tier that reads an entry back
//!    from storage (disk, Redis) checks it again and treats a mismatch as a miss.
//! 2. **Entries are immutable once inserted.** A [`CachedObject`] is never modified in place: a
//!    revalidation builds a new object ([`CachedObject::refreshed`], sharing the body) and inserts
//!    it under the same key, replacing the old one. Readers holding the old `Rc` keep a
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
//! # What a lookup promises
//!
//! Tiers are consulted in order **memory -> disk -> Redis**; the first *fresh* hit wins and is
//! promoted into the faster tiers before it. A *stale* entry (past `expires_at`) is returned
//! too, marked stale, so the pipeline can revalidate it with a conditional GET (`If-None-Match`
//! with the stored ETag) instead of downloading the body again; a 304 refreshes it
//! ([`CachedObject::revalidated`]), anything else replaces or drops it. When no tier has a fresh
//! entry, the request becomes a miss: one S3 fetch per key per core ([`SingleFlight`]), streamed
//! to the first client as bytes arrive and inserted only when complete.
//!
//! # Cost of each operation (memory tier, any body size; `cargo bench --bench cache`, 2-core EPYC)
//!
//! | operation | cost | allocations |
//! |---|---|---|
//! | [`MemoryShard::get`] | one hash probe + `Rc` clone, ~17 ns | 0 |
//! | [`MemoryShard::insert`] | two probes, admission, eviction: ~180 ns | 0 (1 if 2+ evicted) |
//! | [`MemoryShard::purge_bucket`] | O(entries in the shard) | 1 (token list) |
//! | [`evaluate`], [`select_range`] | header probes, HTTP-date parse when present | 0 |
//! | [`storable_ttl`] | one pass over `Cache-Control` | 0 |
//! | [`SingleFlight::begin`] | one or two hash probes; a leader allocates its slot and key | 1-2 |
//!
//! The disk tier will cost one io_uring read per hit (~10-100 us); Redis one round trip
//! (~20 us on loopback, DESIGN section 3).

pub mod conditional;
pub mod entry;
pub mod memory;
pub mod single_flight;

pub use conditional::{evaluate, select_range, Precondition, RangeResult};
pub(crate) use entry::http_date;
pub use entry::{storable_ttl, CacheKey, CacheKeyRef, CachedObject, STORED_HEADERS};
pub use memory::MemoryShard;
pub use single_flight::{Flight, LeaderGuard, SingleFlight, Waiter};
