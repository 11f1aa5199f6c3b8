//! Phase 4, lookup: the routed object at its owner core ([`crate::cache::owner`]: this
//! core's partition of the tiers, its L1 of hot copies, or another core's partition through
//! the cross-core queue). A fresh entry answers at once (conditionals and Range included,
//! before anything of an S3 request is built); a stale one is revalidated by the fetch phase;
//! a plain GET miss leads the key's single-flight across cores (its fill is shared with
//! everyone who asks meanwhile) or follows the fill already running: on this core it streams
//! from the fill as it arrives, from another core it gets the finished entry.
//!
//! Hot path: an owned key costs one tier lookup (memory: a hash probe and an `Arc` clone, no
//! allocation); a key another core owns, an L1 probe and, without a fresh copy, one cross-core
//! round trip (two allocations: the key and the reply channel). On a miss: the cache plan
//! (key clone, TTL); a follower waits at most `first_byte_timeout_ms`: on the owner core for
//! the leader's response head, on another core for the finished entry (so a fill slower than
//! that leaves followers elsewhere to fetch for themselves; sharing a fill in progress across
//! cores is not done).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method};

use super::fill::Growing;
use super::route::ObjectRoute;
use super::{Local, RequestCtx, Shard, MIB};
use crate::cache::owner::{Lease, Lookup as Answer};
use crate::cache::tiered::Found;
use crate::cache::{CacheKey, CacheKeyRef, CacheOutcome, CachedObject};
use crate::http::request::RequestHead;

/// What the lookup found.
pub enum Lookup {
    /// A fresh entry: answer from it.
    Fresh(Found),
    /// An expired entry with an ETag, for a plain GET: revalidate it (`If-None-Match`).
    Stale(Arc<CachedObject>, CachePlan),
    /// Another request on this core is filling the key: stream from its fill.
    Follow(Rc<Growing>),
    /// A request on another core filled the key: answer from the finished entry.
    Filled(Arc<CachedObject>),
    /// Nothing usable: fetch from S3 (leading the key's fill when the request may fill it).
    Miss(Miss),
}

/// Where and how a request may use the cache.
pub struct CachePlan {
    /// The entry's key: (bucket, object key, versionId).
    pub key: CacheKey,
    /// The bucket's TTL (`ttl_seconds`, else `default_ttl_seconds`), capped by S3's max-age.
    pub ttl: Duration,
    /// Largest body stored, bytes (`max_item_size_mb`, at most the shard's capacity).
    pub max_item_bytes: u64,
}

/// A miss that may fill the cache, with the single-flight guard when this request leads.
pub struct Fill {
    /// The entry's key.
    pub key: CacheKey,
    /// The bucket's TTL.
    pub ttl: Duration,
    /// Largest body stored, bytes.
    pub max_item_bytes: u64,
    /// Held while this request leads the key's flight (on any core); `None` for a
    /// revalidation's refill.
    pub lease: Option<Lease<Rc<Growing>>>,
}

impl Fill {
    /// A fill led by this request (followers wait on `lease`).
    pub fn led(plan: CachePlan, lease: Lease<Rc<Growing>>) -> Fill {
        Fill {
            lease: Some(lease),
            ..Fill::unguarded(plan)
        }
    }

    /// A fill nobody waits for (a revalidated entry that changed in S3).
    pub fn unguarded(plan: CachePlan) -> Fill {
        Fill {
            key: plan.key,
            ttl: plan.ttl,
            max_item_bytes: plan.max_item_bytes,
            lease: None,
        }
    }
}

/// How a response that did not come from the cache relates to it: the fill it may make, and
/// the outcome when it makes none (`Miss`, or `Bypass` for buckets without cache).
pub struct Miss {
    /// The fill this response may make.
    pub fill: Option<Fill>,
    /// `Miss { stored: false }` for a cacheable request, `Bypass` otherwise.
    pub outcome: CacheOutcome,
}

impl Miss {
    /// A miss that fills the cache if its response is storable.
    pub fn filling(fill: Fill) -> Miss {
        Miss {
            fill: Some(fill),
            outcome: CacheOutcome::Miss { stored: false },
        }
    }

    /// A response that fills nothing, reported as `outcome`.
    pub fn plain(outcome: CacheOutcome) -> Miss {
        Miss {
            fill: None,
            outcome,
        }
    }
}

/// Look `object` up at its owner core (see the module doc).
pub async fn lookup(
    shard: &Shard,
    local: &Local,
    head: &RequestHead,
    object: &ObjectRoute<'_, '_>,
    cx: &mut RequestCtx<'_>,
) -> Lookup {
    let bucket = object.bucket;
    if !(bucket.cache.enabled && shard.cache.enabled()) {
        return Lookup::Miss(Miss::plain(CacheOutcome::Bypass));
    }
    let plain_get = head.method == Method::GET && !has_conditionals_or_range(&head.headers);
    let key = CacheKeyRef::new(&bucket.name, &object.key, object.version_id.as_deref());
    let not_stored = || Lookup::Miss(Miss::plain(CacheOutcome::Miss { stored: false }));
    match shard.cache.lookup(&key, plain_get, cx.metrics).await {
        Answer::Found(f) if f.obj.is_fresh(SystemTime::now()) => Lookup::Fresh(f),
        // Stale with an ETag (the owner drops stale entries without one).
        Answer::Found(f) => {
            let plan = cache_plan(local, shard, object);
            if plain_get {
                return Lookup::Stale(f.obj, plan);
            }
            // Range and conditional requests are answered from entries but do not fill them.
            shard.cache.remove(&plan.key);
            not_stored()
        }
        Answer::Lead(lease) => Lookup::Miss(Miss::filling(Fill::led(
            cache_plan(local, shard, object),
            lease,
        ))),
        Answer::Follow(waiter) => {
            cx.metrics.cache_single_flight_waits.inc();
            let bound = local.prepared.buckets[object.index]
                .primary
                .first_byte_timeout;
            match monoio::time::timeout(bound, waiter.wait()).await {
                Ok(Some(growing)) if !growing.failed() => return Lookup::Follow(growing),
                Ok(_) => cx.metrics.cache_single_flight_abandoned.inc(),
                Err(_) => cx.metrics.cache_single_flight_timeouts.inc(),
            }
            // The leader got nothing to share (or too late): fetch alone, filling nothing.
            not_stored()
        }
        Answer::Await(entry) => {
            cx.metrics.cache_single_flight_waits.inc();
            let bound = local.prepared.buckets[object.index]
                .primary
                .first_byte_timeout;
            match monoio::time::timeout(bound, entry).await {
                Ok(Ok(Some(obj))) => return Lookup::Filled(obj),
                Ok(_) => cx.metrics.cache_single_flight_abandoned.inc(),
                Err(_) => cx.metrics.cache_single_flight_timeouts.inc(),
            }
            not_stored()
        }
        // Nothing, and this request may not lead (Range, conditionals); or the owner core did
        // not answer in time (counted by the cache): fetch without filling.
        Answer::Miss | Answer::Busy => not_stored(),
    }
}

/// The cache key of `object`: (bucket name, object key, versionId).
pub fn key_of(object: &ObjectRoute<'_, '_>) -> CacheKey {
    CacheKey::new(
        &object.bucket.name,
        &object.key,
        object.version_id.as_deref(),
    )
}

/// The cache plan of `object` (its bucket caches; the shard has memory).
fn cache_plan(local: &Local, shard: &Shard, object: &ObjectRoute<'_, '_>) -> CachePlan {
    let cfg = &local.prepared.config;
    let bucket = object.bucket;
    let ttl = bucket
        .cache
        .ttl_seconds
        .unwrap_or(cfg.cache.memory.default_ttl_seconds);
    let max_item_mb = bucket
        .cache
        .max_item_size_mb
        .unwrap_or(cfg.cache.memory.max_item_size_mb);
    CachePlan {
        key: key_of(object),
        ttl: Duration::from_secs(ttl),
        max_item_bytes: shard.cache.max_item(max_item_mb * MIB),
    }
}

/// Whether the request carries anything that makes its answer differ from the plain object
/// (then it does not lead a fill; it is answered from an entry when one exists).
fn has_conditionals_or_range(headers: &HeaderMap) -> bool {
    [
        header::RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
}
