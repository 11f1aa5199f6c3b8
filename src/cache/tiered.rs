//! The tiers of one core in lookup order, behind one type the pipeline calls: lookup (first
//! tier holding the key wins; a hit from a lower tier is promoted into the tiers above it),
//! fill (a completed entry is offered to every tier), remove and purge. One tier today (the
//! memory shard); the disk and Redis tiers plug in here, and nowhere in the pipeline's phases.
//!
//! Hot path: [`Tiered::lookup`] on every cacheable request costs what the first tier's `get`
//! costs when it hits (memory: ~17 ns, no allocation); each further tier adds its own `get`
//! only on a miss above it.

use std::sync::Arc;

use super::entry::{CacheKey, CacheKeyRef, CachedObject};
use super::memory::MemoryShard;
use super::tier::{PurgeScope, Tier};

/// The cache tiers of one core, fastest first.
pub struct Tiered {
    memory: MemoryShard,
}

/// An entry found by [`Tiered::lookup`] and the tier that held it.
pub struct Found {
    /// The entry, fresh or stale.
    pub obj: Arc<CachedObject>,
    /// The name of the tier that answered ([`Tier::name`]).
    pub tier: &'static str,
}

impl Tiered {
    /// The tiers of one core: the memory shard only, for now.
    pub fn new(memory: MemoryShard) -> Tiered {
        Tiered { memory }
    }

    /// Whether any tier holds anything (memory capacity > 0).
    pub fn enabled(&self) -> bool {
        self.memory.capacity() > 0
    }

    /// The memory tier's capacity on this core, bytes.
    pub fn memory_capacity(&self) -> u64 {
        self.memory.capacity()
    }

    /// The first tier's entry for `key` (fresh or stale), promoted into the tiers above the one
    /// that held it. `None`: no tier has it.
    pub async fn lookup(&self, key: &CacheKeyRef<'_>) -> Option<Found> {
        let obj = Tier::get(&self.memory, key).await?;
        Some(Found {
            obj,
            tier: self.memory.name(),
        })
    }

    /// Offer a complete entry to every tier (in order); whether the first tier admitted it.
    pub fn fill(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        Tier::insert(&self.memory, key, obj)
    }

    /// Drop `key` from every tier.
    pub fn remove(&self, key: &CacheKey) {
        Tier::remove(&self.memory, key);
    }

    /// Drop what `scope` names from every tier; how many entries the first tier dropped.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        Tier::purge(&self.memory, scope)
    }
}
