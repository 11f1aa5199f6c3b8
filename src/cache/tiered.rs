//! The tiers of one core in lookup order, behind one type the pipeline calls: lookup (first
//! tier holding the key wins; a hit from a lower tier is promoted into the tiers above it),
//! fill (a completed entry is offered to every tier), remove and purge. Memory, then disk
//! (when `cache.disk.enabled`); the Redis tier plugs in here, and nowhere in the pipeline's
//! phases.
//!
//! Hot path: [`Tiered::lookup`] on every cacheable request costs what the first tier's `get`
//! costs when it hits (memory: ~17 ns, no allocation); each further tier adds its own `get`
//! only on a miss above it (disk: one io_uring read). A fill offers the entry to every tier:
//! memory inserts at once, disk queues a write behind the stream.

use std::rc::Rc;
use std::sync::Arc;

use super::disk::DiskTier;
use super::entry::{CacheKey, CacheKeyRef, CachedObject};
use super::memory::MemoryShard;
use super::tier::{PurgeScope, Read, Tier};

/// Plain GETs read a disk entry's whole body in one I/O up to this size even when the memory
/// tier cannot keep it (one read instead of a header read and a body read).
const WHOLE_READ_MIN: u64 = 1 << 20;

/// The cache tiers of one core, fastest first.
pub struct Tiered {
    memory: MemoryShard,
    disk: Option<Rc<DiskTier>>,
    /// Largest body the memory tier takes when a disk tier is below it, bytes.
    memory_item_max: u64,
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
            memory_item_max: u64::MAX,
        }
    }

    /// Memory above `disk`; the memory tier takes bodies up to `memory_item_max` bytes (larger
    /// ones live on disk only).
    pub fn with_disk(memory: MemoryShard, disk: Rc<DiskTier>, memory_item_max: u64) -> Tiered {
        Tiered {
            memory,
            disk: Some(disk),
            memory_item_max,
        }
    }

    /// Whether any tier holds anything (memory capacity > 0, or a disk tier).
    pub fn enabled(&self) -> bool {
        self.memory.capacity() > 0 || self.disk.is_some()
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
        match &self.disk {
            Some(d) => memory.max(d.max_item()),
            None => memory,
        }
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
        let disk = self.disk.as_ref()?;
        let promotable = if self.memory.capacity() > 0 {
            self.memory_item_max
        } else {
            0
        };
        let read = if whole {
            Read::Whole(promotable.max(WHOLE_READ_MIN))
        } else {
            Read::Headers
        };
        let obj = Tier::get(&**disk, key, read).await?;
        if obj.disk.is_none() && obj.len() <= promotable {
            Tier::insert(&self.memory, &key.to_key(), &obj);
        }
        Some(Found {
            obj,
            tier: disk.name(),
        })
    }

    /// Offer a complete entry to every tier (in order); whether any admitted it. With a disk
    /// tier, memory takes only bodies up to its item limit and never an entry whose body is on
    /// disk.
    pub fn fill(&self, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        let memory = match &self.disk {
            None => Tier::insert(&self.memory, key, obj),
            Some(_) if obj.disk.is_none() && obj.len() <= self.memory_item_max => {
                Tier::insert(&self.memory, key, obj)
            }
            Some(_) => false,
        };
        let disk = self
            .disk
            .as_ref()
            .is_some_and(|d| Tier::insert(&**d, key, obj));
        memory || disk
    }

    /// Drop `key` from every tier.
    pub fn remove(&self, key: &CacheKey) {
        Tier::remove(&self.memory, key);
        if let Some(d) = &self.disk {
            Tier::remove(&**d, key);
        }
    }

    /// Drop what `scope` names from every tier; how many entries the tiers dropped.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        let memory = Tier::purge(&self.memory, scope);
        memory + self.disk.as_ref().map_or(0, |d| Tier::purge(&**d, scope))
    }
}
