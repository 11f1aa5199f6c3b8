//! The tiers of one core in lookup order, behind one type the pipeline calls: lookup (first
//! tier holding the key wins; a hit from a lower tier is promoted into the tiers above it),
//! fill (a completed entry is offered to every tier), remove and purge. Memory, then disk
//! (when `cache.disk.enabled`), then Redis (when `cache.redis.enabled`): the tiers plug in
//! here, and nowhere in the pipeline's phases.
//!
//! Hot path: [`Tiered::lookup`] on every cacheable request costs what the first tier's `get`
//! costs when it hits (memory: ~17 ns, no allocation); each further tier adds its own `get`
//! only on a miss above it (disk: one io_uring read; Redis: one round trip). A fill offers the
//! entry to every tier: memory inserts at once, disk and Redis queue a write behind the stream.

use std::rc::Rc;
use std::sync::Arc;

use super::disk::DiskTier;
use super::entry::{CacheKey, CacheKeyRef, CachedObject};
use super::memory::MemoryShard;
use super::redis::RedisTier;
use super::tier::{PurgeScope, Read, Tier};

/// Plain GETs read a disk entry's whole body in one I/O up to this size even when the memory
/// tier cannot keep it (one read instead of a header read and a body read).
const WHOLE_READ_MIN: u64 = 1 << 20;

/// The cache tiers of one core, fastest first.
pub struct Tiered {
    memory: MemoryShard,
    disk: Option<Rc<DiskTier>>,
    redis: Option<Rc<RedisTier>>,
    /// Largest body the memory tier takes when a lower tier is below it, bytes.
    memory_item_max: u64,
    /// Purges applied: a lower-tier answer that arrives across one is not promoted.
    purges: std::cell::Cell<u64>,
}

/// An entry found by [`Tiered::lookup`] and the tier that held it.
pub struct Found {
    /// The entry, fresh or stale.
    pub obj: Arc<CachedObject>,
    /// The name of the tier that answered ([`Tier::name`]).
    pub tier: &'static str,
}

impl Tiered {
    /// The memory tier alone.
    pub fn new(memory: MemoryShard) -> Tiered {
        Tiered {
            memory,
            disk: None,
            redis: None,
            memory_item_max: u64::MAX,
            purges: std::cell::Cell::new(0),
        }
    }

    /// Memory above `disk`; the memory tier takes bodies up to `memory_item_max` bytes (larger
    /// ones live on disk only).
    pub fn with_disk(memory: MemoryShard, disk: Rc<DiskTier>, memory_item_max: u64) -> Tiered {
        Tiered {
            disk: Some(disk),
            memory_item_max,
            ..Tiered::new(memory)
        }
    }

    /// These tiers above `redis`; the memory tier takes bodies up to `memory_item_max` bytes.
    pub fn with_redis(mut self, redis: Rc<RedisTier>, memory_item_max: u64) -> Tiered {
        self.redis = Some(redis);
        self.memory_item_max = memory_item_max;
        self
    }

    /// Whether any tier holds anything (memory capacity > 0, or a disk or Redis tier).
    pub fn enabled(&self) -> bool {
        self.memory.capacity() > 0 || self.disk.is_some() || self.redis.is_some()
    }

    /// Whether a lookup may wait on I/O (a disk or Redis tier): the owner then answers other
    /// cores' lookups concurrently.
    pub fn lookups_wait(&self) -> bool {
        self.disk.is_some() || self.redis.is_some()
    }

    /// The memory tier's capacity on this core, bytes.
    pub fn memory_capacity(&self) -> u64 {
        self.memory.capacity()
    }

    /// Largest body the memory tier takes when a disk tier is below it, bytes (`u64::MAX`
    /// without one).
    pub fn memory_item_max(&self) -> u64 {
        self.memory_item_max
    }

    /// The disk tier, if any.
    pub fn disk(&self) -> Option<&Rc<DiskTier>> {
        self.disk.as_ref()
    }

    /// Largest body any tier of this core stores, bytes (`memory_limit` is the memory tier's
    /// for the bucket at hand).
    pub fn max_item(&self, memory_limit: u64) -> u64 {
        let memory = memory_limit.min(self.memory.capacity());
        let disk = self.disk.as_ref().map_or(0, |d| d.max_item());
        let redis = self.redis.as_ref().map_or(0, |r| r.max_item());
        memory.max(disk).max(redis)
    }

    /// The first tier's entry for `key` (fresh or stale), promoted into the tiers above the one
    /// that held it. `whole`: the request sends the plain body (a GET without Range or
    /// conditionals), so a disk entry that memory can hold is read whole and promoted; else
    /// only its headers are read and the body streams from disk. `None`: no tier has it.
    pub async fn lookup(&self, key: &CacheKeyRef<'_>, whole: bool) -> Option<Found> {
        if let Some(obj) = Tier::get(&self.memory, key, Read::Headers).await {
            return Some(Found {
                obj,
                tier: self.memory.name(),
            });
        }
        let promotable = if self.memory.capacity() > 0 {
            self.memory_item_max
        } else {
            0
        };
        let purges = self.purges.get();
        if let Some(disk) = &self.disk {
            let read = if whole {
                Read::Whole(promotable.max(WHOLE_READ_MIN))
            } else {
                Read::Headers
            };
            if let Some(obj) = Tier::get(&**disk, key, read).await {
                if obj.disk.is_none() && obj.len() <= promotable && self.purges.get() == purges {
                    Tier::insert(&self.memory, &key.to_key(), &obj);
                }
                return Some(Found {
                    obj,
                    tier: disk.name(),
                });
            }
        }
        let redis = self.redis.as_ref()?;
        let obj = Tier::get(redis, key, Read::Whole(u64::MAX)).await?;
        // A purge that ran while the GET was in flight may have named this very entry.
        if self.purges.get() != purges {
            return None;
        }
        let owned = key.to_key();
        if obj.len() <= promotable {
            Tier::insert(&self.memory, &owned, &obj);
        }
        if let Some(disk) = &self.disk {
            Tier::insert(&**disk, &owned, &obj);
        }
        Some(Found {
            obj,
            tier: redis.name(),
        })
    }

    /// Offer a complete entry to every tier (in order); whether any admitted it. With a lower
    /// tier, memory takes only bodies up to its item limit and never an entry whose body is on
    /// disk.
    pub fn fill(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        let lower = self.disk.is_some() || self.redis.is_some();
        let memory = if !lower || (obj.disk.is_none() && obj.len() <= self.memory_item_max) {
            Tier::insert(&self.memory, key, obj)
        } else {
            false
        };
        let disk = self
            .disk
            .as_ref()
            .is_some_and(|d| Tier::insert(&**d, key, obj));
        let redis = self
            .redis
            .as_ref()
            .is_some_and(|r| Tier::insert(r, key, obj));
        memory || disk || redis
    }

    /// Drop `key` from every tier.
    pub fn remove(&self, key: &CacheKey) {
        Tier::remove(&self.memory, key);
        if let Some(d) = &self.disk {
            Tier::remove(&**d, key);
        }
        if let Some(r) = &self.redis {
            Tier::remove(r, key);
        }
    }

    /// Drop what `scope` names from every tier of this core; how many entries the tiers
    /// dropped. Redis keys are deleted once per node by the admin purge
    /// ([`super::redis::control::purge`]); here the Redis tier only stops using GETs in flight.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        self.purges.set(self.purges.get() + 1);
        let memory = Tier::purge(&self.memory, scope);
        let disk = self.disk.as_ref().map_or(0, |d| Tier::purge(&**d, scope));
        let redis = self.redis.as_ref().map_or(0, |r| Tier::purge(r, scope));
        memory + disk + redis
    }
}
