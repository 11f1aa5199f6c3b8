//! The cache figures (memory, and disk when on) of one shard that `GET /admin/cache/stats` reports, built on the shard
//! (through the control mailbox) from its own counters.
//!
//! Not on the hot path: built on request, O(buckets).

/// One shard's memory-cache figures (`GET /admin/cache/stats`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShardCacheStats {
    /// Shard index.
    pub shard: usize,
    /// The shard's owner partition of the memory tier (its share of `max_cache_size_mb`,
    /// less its L1), bytes. The rows below count only keys this shard owns, so items and
    /// bytes summed over shards hold each key once.
    pub capacity_bytes: u64,
    /// The shard's L1 of hot copies of keys other shards own (`l1_percent` of its share), bytes.
    pub l1_capacity_bytes: u64,
    /// Copies held in the L1 (not counted in the rows below).
    pub l1_items: u64,
    /// The shard's disk partition (data file capacity), bytes; absent without a disk tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_capacity_bytes: Option<u64>,
    /// Per config bucket (only the requested one when filtered), sorted by name.
    pub buckets: Vec<BucketCacheStats>,
}

/// One bucket's memory-cache figures on one shard; counters are totals since start.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BucketCacheStats {
    /// Config bucket name.
    pub name: String,
    /// Entries held.
    pub items: u64,
    /// Bytes held (entry weights).
    pub bytes: u64,
    /// Responses answered from the cache.
    pub hits: u64,
    /// Cacheable requests that missed.
    pub misses: u64,
    /// Requests that skipped the cache.
    pub bypasses: u64,
    /// Entries evicted by capacity.
    pub evictions: u64,
    /// Entries admitted.
    pub inserts: u64,
    /// The disk layer's figures for this bucket on this shard; absent without a disk tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<LayerStats>,
}

/// One lower layer's figures (disk) for one bucket on one shard; counters are totals since
/// start.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LayerStats {
    /// Entries held.
    pub items: u64,
    /// Bytes held (record lengths on disk).
    pub bytes: u64,
    /// Responses answered from this layer.
    pub hits: u64,
    /// Lookups that reached this layer and found nothing usable.
    pub misses: u64,
    /// Entries pushed out by capacity.
    pub evictions: u64,
    /// Entries written.
    pub inserts: u64,
}
