//! Phase 4, lookup: the cache tiers ([`Tiered`](crate::cache::Tiered)) for the routed object.
//! A fresh entry answers at once (conditionals and Range included, before anything of an S3
//! request is built); a stale one is revalidated by the fetch phase; a plain GET miss leads
//! the key's single-flight (its fill is shared with everyone who asks meanwhile) or follows
//! the fill already running.
//!
//! Hot path: one tier lookup (memory: a hash probe and an `Arc` clone, no allocation). On a
//! miss: the cache plan (key clone, TTL), one single-flight probe (a leader allocates its
//! slot), a follower waits at most `first_byte_timeout_ms` for the leader's response head.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method};

use super::fill::Growing;
use super::route::ObjectRoute;
use super::{Local, RequestCtx, Shard, MIB};
use crate::cache::tiered::Found;
use crate::cache::{CacheKey, CacheKeyRef, CacheOutcome, CachedObject, Flight, LeaderGuard};
use crate::http::request::RequestHead;

/// What the lookup found.
pub enum Lookup {
    /// A fresh entry: answer from it.
    Fresh(Found),
    /// An expired entry with an ETag, for a plain GET: revalidate it (`If-None-Match`).
    Stale(Arc<CachedObject>, CachePlan),
    /// Another request on this core is filling the key: stream from its fill.
    Follow(Rc<Growing>),
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
    /// Held while this request leads the key's flight; `None` for a revalidation's refill.
    pub guard: Option<LeaderGuard<CacheKey, Rc<Growing>>>,
}

impl Fill {
    /// A fill led by this request (followers wait on `guard`).
    pub fn led(plan: CachePlan, guard: LeaderGuard<CacheKey, Rc<Growing>>) -> Fill {
        Fill {
            guard: Some(guard),
            ..Fill::unguarded(plan)
        }
    }

    /// A fill nobody waits for (a revalidated entry that changed in S3).
    pub fn unguarded(plan: CachePlan) -> Fill {
        Fill {
            key: plan.key,
            ttl: plan.ttl,
            max_item_bytes: plan.max_item_bytes,
            guard: None,
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

/// Look `object` up in the shard's tiers (see the module doc).
pub async fn lookup(
    shard: &Shard,
    local: &Local,
    head: &RequestHead,
    object: &ObjectRoute<'_, '_>,
    cx: &mut RequestCtx<'_>,
) -> Lookup {
    let bucket = object.bucket;
    let enabled = bucket.cache.enabled && shard.tiers.enabled();
    let version_id = object.version_id.as_deref();
    let found = if enabled {
        let key = CacheKeyRef::new(&bucket.name, &object.key, version_id);
        shard.tiers.lookup(&key).await
    } else {
        None
    };
    let found = match found {
        Some(f) if f.obj.is_fresh(SystemTime::now()) => return Lookup::Fresh(f),
        other => other,
    };
    let Some(plan) = enabled.then(|| cache_plan(local, shard, object)) else {
        return Lookup::Miss(Miss::plain(CacheOutcome::Bypass));
    };
    let plain_get = head.method == Method::GET && !has_conditionals_or_range(&head.headers);
    if let Some(found) = found {
        match (&found.obj.etag, plain_get) {
            (Some(_), true) => return Lookup::Stale(found.obj, plan),
            _ => shard.tiers.remove(&plan.key),
        }
    }
    if !plain_get {
        // Range and conditional requests are answered from entries but do not fill them.
        return Lookup::Miss(Miss::plain(CacheOutcome::Miss { stored: false }));
    }
    match shard.flights.begin(&plan.key) {
        Flight::Leader(guard) => Lookup::Miss(Miss::filling(Fill::led(plan, guard))),
        Flight::Follower(waiter) => {
            cx.metrics.cache_single_flight_waits.inc();
            let bound = local.prepared.buckets[object.index].first_byte_timeout;
            match monoio::time::timeout(bound, waiter.wait()).await {
                Ok(Some(growing)) if !growing.failed() => return Lookup::Follow(growing),
                Ok(_) => cx.metrics.cache_single_flight_abandoned.inc(),
                Err(_) => cx.metrics.cache_single_flight_timeouts.inc(),
            }
            // The leader got nothing to share (or too late): fetch alone, filling nothing.
            Lookup::Miss(Miss::plain(CacheOutcome::Miss { stored: false }))
        }
    }
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
        key: CacheKey::new(&bucket.name, &object.key, object.version_id.as_deref()),
        ttl: Duration::from_secs(ttl),
        max_item_bytes: (max_item_mb * MIB).min(shard.tiers.memory_capacity()),
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
