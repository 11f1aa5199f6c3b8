//! What one core does with one request: [`Shard::handle`] reads top to bottom as the phases of
//! DESIGN section 2, one file each, sharing one [`RequestCtx`]:
//!
//! 1. [`route`]: local answers (`/health`, `/ready`, `OPTIONS`), path normalisation and
//!    checks, the method, the longest-prefix bucket, the object key and `versionId`. One
//!    routing probe per path segment, no allocation unless the path needs normalising.
//! 2. [`limit`]: IP lists, rate limits and the node's concurrency limit; nothing when none
//!    is set, a hash and a compare-and-swap per rate.
//! 3. [`authenticate`]: the bucket's JWT, before any lookup (a private hit needs a token too).
//!    A cached verification is a hash probe; a cold one an RSA/ECDSA/HMAC verify.
//! 4. [`lookup`]: the key at its owner core ([`crate::cache::owner`]): a fresh hit, a stale
//!    entry to revalidate, a fill of the key to follow (on any core), or a miss that leads its
//!    single-flight. ~20 ns for a memory hit on the owner, no allocation; a key another core
//!    owns costs an L1 probe or one cross-core round trip.
//! 5. [`fetch`]: only without a fresh entry. The object request described for the backend
//!    seam ([`crate::s3::request`]), signed and sent by the upstream layer (one SigV4 signature
//!    with the cached day key, one ~600-byte head), the proxy's own evaluation of
//!    conditionals, If-Range and `bytes=-0` against what S3 answered.
//! 6. [`respond`]: the answer from cache (one `write`/`writev`, zero-copy body), from a fill in
//!    progress, or streamed from S3 (one 64 KiB buffer, or splice(2) for long uncached
//!    bodies), with the bucket's edge policy ([`headers`]) and `X-Cache` / `Cache-Status` from
//!    one [`crate::cache::CacheOutcome`].
//! 7. [`log`]: the request's counters and its access line.
//!
//! Hot path. A cache hit costs phases 1, 3, 4 and 6: five allocations in all, every one in
//! request-head parsing (`benches/e2e.rs` asserts the bound). Memory per connection is
//! constant whatever the object size.

pub mod authenticate;
pub mod cached;
pub mod ctx;
pub mod fetch;
pub mod fill;
pub mod headers;
pub mod limit;
pub mod local;
pub mod log;
pub mod lookup;
pub mod prepared;
pub mod respond;
pub mod route;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use yatagarasu_runtime::{Inbox, Peers, ShardContext, Snapshot};

use crate::admin::health::Health;
use crate::auth::TokenCache;
use crate::cache::disk::node::DiskNode;
use crate::cache::disk::{DiskReader, DiskTier};
use crate::cache::memory::MemoryShard;
use crate::cache::owner::{OwnerMsg, Owners, L1};
use crate::cache::redis::conn::Conn as RedisConn;
use crate::cache::redis::{RedisSettings, RedisTier};
use crate::cache::stats::{BucketCacheStats, LayerStats, ShardCacheStats};
use crate::cache::{PurgeScope, Tiered};
use crate::error::ProxyError;
use crate::http::request::RequestHead;
use crate::http::response::DateCache;
use crate::http::server::{request_id_for, Conn, Outcome, ServerSettings, Service};
use crate::metrics::{BucketMetrics, Metrics, ShardMetrics};
use crate::s3::request::{signer_for, upstream_target, Backend};
use crate::s3::sigv4::Signer;
use crate::upstream::Upstream;
pub use ctx::{RequestCtx, Summary};
use fill::Growing;
use lookup::Lookup;
use prepared::Prepared;
use route::Route;

/// Body bytes moved per read/write step between S3 and the client.
pub const BODY_CHUNK_BYTES: usize = 64 * 1024;
/// The methods this proxy serves, for `Allow` (RFC 9110 section 10.2.1).
pub const ALLOW: &str = "GET, HEAD, OPTIONS";
/// The pass-through fields a 304 carries (RFC 9110 section 15.4.5), from cache or from S3.
pub(crate) const NOT_MODIFIED_FIELDS: [&str; 5] =
    ["etag", "last-modified", "cache-control", "expires", "vary"];

/// Bytes in a MiB.
const MIB: u64 = 1024 * 1024;
/// Verified tokens kept per shard.
const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Shard-local state derived from one config generation.
pub struct Local {
    generation: u64,
    prepared: Arc<Prepared>,
    buckets: Vec<LocalBucket>,
    /// Metrics of requests that matched no bucket (bucket label `-`).
    unrouted: Arc<BucketMetrics>,
}

/// Per bucket, per shard: per backend (the primary, then the replicas) the signer (its day key
/// cache) and the pool key; the counters.
struct LocalBucket {
    signers: Vec<Signer>,
    pool_keys: Vec<Rc<str>>,
    metrics: Arc<BucketMetrics>,
}

impl Local {
    fn build(generation: u64, prepared: Arc<Prepared>, metrics: &ShardMetrics) -> Local {
        let buckets = prepared
            .config
            .buckets
            .iter()
            .zip(&prepared.buckets)
            .map(|(b, p)| LocalBucket {
                signers: std::iter::once(&b.s3)
                    .chain(b.s3.replicas.iter().map(|r| &r.s3))
                    .map(signer_for)
                    .collect(),
                pool_keys: std::iter::once(&p.primary)
                    .chain(&p.replicas)
                    .map(|r| Rc::from(r.pool_key.as_str()))
                    .collect(),
                metrics: metrics.bucket(&b.name),
            })
            .collect();
        Local {
            generation,
            prepared,
            buckets,
            unrouted: metrics.bucket(crate::metrics::UNROUTED),
        }
    }

    /// Backend `n` of bucket `index` in the order they are tried: 0 the primary, then the
    /// replicas by ascending priority; `None` past the last.
    fn backend(&self, index: usize, n: usize) -> Option<Backend<'_>> {
        let bucket = &self.prepared.config.buckets[index];
        let prepared = &self.prepared.buckets[index];
        let (s3, p) = match n {
            0 => (&bucket.s3, &prepared.primary),
            n => (
                &bucket.s3.replicas.get(n - 1)?.s3,
                prepared.replicas.get(n - 1)?,
            ),
        };
        let local = &self.buckets[index];
        Some(Backend {
            name: &p.name,
            s3,
            signer: &local.signers[n],
            target: upstream_target(s3, p, &local.pool_keys[n]),
        })
    }
}

/// Everything one shard owns: its view of the config, its upstream pool and resolver cache, its
/// cache tiers and in-flight fetches, its `Date` cache. Built on the shard thread; never shared.
pub struct Shard {
    snapshot: Snapshot<Prepared>,
    local: RefCell<Rc<Local>>,
    upstream: Upstream,
    dates: DateCache,
    /// This core's side of the key-owned cache: its partition of the tiers (memory:
    /// `cache.memory.max_cache_size_mb` / shards, less the L1), its L1 of other cores' hot
    /// keys, the single-flight of its keys, the queues to every owner. A local fill
    /// publishes the entry being filled as soon as its response head is known.
    cache: Rc<Owners<Rc<Growing>>>,
    /// Applies reloads to the cache (drops buckets a reload removed or re-pointed).
    cache_sync: Rc<CacheSync>,
    /// Verified tokens, so a reused token costs no RSA/ECDSA verification.
    tokens: TokenCache,
    /// This core's handles on every shard's disk file (`None`: no disk tier).
    disk_reader: Option<Rc<DiskReader>>,
    /// Bytes of disk-only fills being assembled in memory on this core
    /// (`respond::DISK_STAGING_BYTES` at most).
    disk_staging: Rc<std::cell::Cell<u64>>,
    ctx: ShardContext,
    /// This shard's counters (read by the scraper on the admin thread).
    metrics: Arc<ShardMetrics>,
    /// Backend readiness, answered on `/ready`.
    health: Arc<Health>,
    /// The node's in-flight request count ([`Services::in_flight`]).
    in_flight: Arc<std::sync::atomic::AtomicU64>,
    /// The node's rate-limit table ([`Services::rates`]).
    rates: Arc<crate::ratelimit::RateTable>,
    /// This core's retry budget and backoff jitter (`upstream::retry`).
    retry_budget: crate::upstream::retry::RetryBudget,
    /// This core's circuit breakers, by bucket name (`upstream::breaker`).
    breakers: RefCell<std::collections::HashMap<String, Rc<crate::upstream::breaker::Breaker>>>,
}

/// Process-wide services each shard reads: the metrics registry, the readiness state and the
/// cross-core queues of the key-owned cache.
#[derive(Clone)]
pub struct Services {
    /// Where every shard registers its counters.
    pub metrics: Arc<Metrics>,
    /// Probe results and process facts for `/health` and `/ready`.
    pub health: Arc<Health>,
    /// The queues between cores, made by the first shard that starts (it knows the count).
    pub owners: Arc<std::sync::OnceLock<OwnerQueues>>,
    /// The disk tier, opened and scanned before the shards start (`None`: off).
    pub disk: Option<Arc<DiskNode>>,
    /// The Redis tier's settings (`None`: off); each shard opens its own connections.
    pub redis: Option<Arc<RedisSettings>>,
    /// Data-plane requests in flight on the node (every shard), for
    /// `server.max_concurrent_requests` ([`limit`]).
    pub in_flight: Arc<std::sync::atomic::AtomicU64>,
    /// The node's rate-limit table (`server.rate_limit`, bucket `rate_limit`), checked by
    /// every shard ([`limit`]).
    pub rates: Arc<crate::ratelimit::RateTable>,
}

/// Every core's queue of the key-owned cache: the senders, and one inbox per shard.
pub type OwnerQueues = (Peers<OwnerMsg>, Vec<Inbox<OwnerMsg>>);

impl Services {
    /// Services around `metrics` and `health`, with no cross-core queues yet.
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>) -> Services {
        Services {
            metrics,
            health,
            owners: Arc::default(),
            disk: None,
            redis: None,
            in_flight: Arc::default(),
            rates: Arc::default(),
        }
    }
}

/// Drops the cache entries of buckets a reload removed or pointed at other S3 settings, once
/// per config generation, on whichever path of this core sees the new generation first (a
/// request, or a lookup from another core: an owner never answers for a stale bucket).
struct CacheSync {
    snapshot: Snapshot<Prepared>,
    applied: RefCell<(u64, Arc<Prepared>)>,
    cache: Rc<Owners<Rc<Growing>>>,
}

impl CacheSync {
    /// Apply the latest generation if it is new (one atomic load when it is not).
    fn apply(&self) {
        let generation = self.snapshot.generation();
        if self.applied.borrow().0 == generation {
            return;
        }
        let next = self.snapshot.load_full();
        let old = std::mem::replace(&mut *self.applied.borrow_mut(), (generation, next.clone()));
        for b in &old.1.config.buckets {
            let same = next
                .config
                .bucket(&b.name)
                .is_some_and(|n| n.s3.same_objects(&b.s3));
            if !same {
                let scope = PurgeScope::Bucket(b.name.clone());
                // Fills still in flight from before the reload must not refill the bucket.
                self.cache.fence(&b.name, std::time::SystemTime::now());
                self.cache.purge(&scope);
                self.cache.purge_l1(&scope);
            }
        }
    }
}

/// This core's tiers: [`disk_tiers_of`], then its connections to Redis when the Redis tier is
/// on (their tasks spawned as services of this shard).
fn tiers_of(
    ctx: &ShardContext,
    services: &Services,
    memory: MemoryShard,
    memory_cfg: &crate::config::MemoryCacheConfig,
    metrics: &Arc<ShardMetrics>,
) -> (Tiered, Option<Rc<DiskReader>>) {
    let (tiers, reader) = disk_tiers_of(ctx, services, memory, memory_cfg, metrics);
    let Some(settings) = &services.redis else {
        return (tiers, reader);
    };
    let spawn_ctx = ctx.clone();
    let service_ctx = ctx.clone();
    let redis = RedisTier::start(
        settings,
        Rc::new(move |conn: Rc<RedisConn>| spawn_ctx.spawn_service(conn.run())),
        move |task| service_ctx.spawn_service(task),
        metrics.clone(),
    );
    let memory_item_max = memory_cfg.max_item_size_mb * MIB;
    (tiers.with_redis(redis, memory_item_max), reader)
}

/// This core's memory partition and, with the disk tier on, its disk partition (its writer
/// task spawned) and its handles on every shard's data file. A core whose file handles cannot
/// be made runs without a disk tier (logged).
fn disk_tiers_of(
    ctx: &ShardContext,
    services: &Services,
    memory: MemoryShard,
    memory_cfg: &crate::config::MemoryCacheConfig,
    metrics: &Arc<ShardMetrics>,
) -> (Tiered, Option<Rc<DiskReader>>) {
    let Some(node) = &services.disk else {
        return (Tiered::new(memory), None);
    };
    let files: Vec<Arc<std::fs::File>> = node.shards.iter().map(|s| s.file.clone()).collect();
    let uring = ctx.driver() == yatagarasu_runtime::Driver::IoUring;
    let reader = match DiskReader::new(&files, uring, metrics.clone()) {
        Ok(r) => Rc::new(r),
        Err(e) => {
            tracing::error!(shard = ctx.index(), error = %e, "cannot open the disk tier's files on this shard; it runs without a disk tier");
            return (Tiered::new(memory), None);
        }
    };
    let Some(seed) = node.shards.get(ctx.index()) else {
        return (Tiered::new(memory), None);
    };
    let disk = Rc::new(
        DiskTier::new(
            ctx.index(),
            seed,
            node.max_item_bytes,
            reader.clone(),
            metrics.clone(),
        )
        .with_max_stream(node.max_stream_bytes),
    );
    ctx.spawn_service(disk.clone().run_writer());
    let memory_item_max = memory_cfg.max_item_size_mb * MIB;
    (
        Tiered::with_disk(memory, disk, memory_item_max),
        Some(reader),
    )
}

impl Shard {
    /// Build the state of the shard described by `ctx` from the shared `snapshot`.
    pub fn new(snapshot: Snapshot<Prepared>, ctx: ShardContext, services: &Services) -> Shard {
        let metrics =
            services
                .metrics
                .register_shard(ctx.index(), &ctx.driver().to_string(), ctx.cpu());
        let local = Local::build(snapshot.generation(), snapshot.load_full(), &metrics);
        let memory_cfg = &local.prepared.config.cache.memory;
        // Each core's share of the node's budget: its owner partition plus its L1 copies.
        let share = memory_cfg.max_cache_size_mb * MIB / ctx.shard_count().max(1) as u64;
        // One shard owns every key: an L1 would hold nothing.
        let l1_bytes = if ctx.shard_count() > 1 {
            share * memory_cfg.l1_percent / 100
        } else {
            0
        };
        let memory = MemoryShard::with_metrics(share - l1_bytes, metrics.clone());
        let (peers, inboxes) = services
            .owners
            .get_or_init(|| Peers::new(ctx.shard_count(), crate::cache::owner::QUEUE_CAPACITY));
        let (tiers, disk_reader) = tiers_of(&ctx, services, memory, memory_cfg, &metrics);
        let cache = Owners::new(ctx.index(), peers.clone(), tiers, L1::new(l1_bytes));
        let cache_sync = Rc::new(CacheSync {
            snapshot: snapshot.clone(),
            applied: RefCell::new((local.generation, local.prepared.clone())),
            cache: cache.clone(),
        });
        if let Some(inbox) = inboxes.get(ctx.index()) {
            let sync = cache_sync.clone();
            // Served until this shard has drained; later lookups from cores still draining
            // find the queue closed and go to S3 without a fill.
            ctx.spawn_service(cache.clone().serve(inbox.clone(), move || sync.apply()));
        }
        Shard {
            snapshot,
            local: RefCell::new(Rc::new(local)),
            upstream: Upstream::default(),
            dates: DateCache::default(),
            cache,
            cache_sync,
            tokens: TokenCache::new(TOKEN_CACHE_ENTRIES),
            disk_reader,
            disk_staging: Rc::default(),
            ctx,
            metrics,
            health: services.health.clone(),
            in_flight: services.in_flight.clone(),
            rates: services.rates.clone(),
            retry_budget: Default::default(),
            breakers: RefCell::default(),
        }
    }

    /// The shard's config view, rebuilt when a newer snapshot was published. A request keeps the
    /// `Rc` it got until it ends, so in-flight requests finish on their own snapshot.
    fn current(&self) -> Rc<Local> {
        let generation = self.snapshot.generation();
        let mut local = self.local.borrow_mut();
        if local.generation != generation {
            let next = Local::build(generation, self.snapshot.load_full(), &self.metrics);
            // Entries of buckets a reload removed or pointed elsewhere no longer match S3.
            self.cache_sync.apply();
            *local = Rc::new(next);
        }
        local.clone()
    }

    /// One request through the phases (module doc). `Err` only before any response byte was
    /// written; failures mid-body end the connection and are reported in the `Summary`.
    async fn handle<'l>(
        &self,
        local: &'l Local,
        head: &RequestHead,
        conn: &mut Conn,
        cx: &mut RequestCtx<'l>,
    ) -> Result<Summary, ProxyError> {
        let object = match route::route(local, head, cx)? {
            Route::Local(answer) => {
                return Ok(local::answer(self, local, head, conn, cx, answer).await)
            }
            Route::Object(object) => object,
        };
        let _admission = limit::check(self, local, head, conn, &object)?;
        authenticate::check(self, local, head, &object, cx)?;
        limit::check_user(self, local, cx)?;
        let fetched = match lookup::lookup(self, local, head, &object, cx).await {
            Lookup::Fresh(found) => {
                let outcome = crate::cache::CacheOutcome::Hit { tier: found.tier };
                return self
                    .answer_cached(local, head, conn, &object, &found.obj, outcome, cx)
                    .await;
            }
            Lookup::Follow(growing) => {
                return Ok(respond::collapsed(self, head, conn, &growing, cx).await)
            }
            Lookup::Filled(obj) => {
                let outcome = crate::cache::CacheOutcome::Collapsed;
                return self
                    .answer_cached(local, head, conn, &object, &obj, outcome, cx)
                    .await;
            }
            Lookup::Stale(obj, plan) => {
                fetch::revalidate(self, local, &object, obj, plan, cx).await?
            }
            Lookup::Miss(miss) => fetch::fetch(self, local, head, &object, miss, cx).await?,
        };
        match fetched {
            fetch::Fetched::Cached(obj, outcome) => {
                self.answer_cached(local, head, conn, &object, &obj, outcome, cx)
                    .await
            }
            fetch::Fetched::Origin(resp, miss) => {
                respond::origin(self, head, conn, resp, miss, cx).await
            }
        }
    }

    /// Answer from `obj`. An entry whose body is on disk and cannot be read (nothing was sent
    /// yet) is dropped and the request fetched from S3 as a miss that fills nothing.
    #[allow(clippy::too_many_arguments)] // the phases' shared arguments, plus the entry
    async fn answer_cached<'l>(
        &self,
        local: &'l Local,
        head: &RequestHead,
        conn: &mut Conn,
        object: &route::ObjectRoute<'_, '_>,
        obj: &crate::cache::CachedObject,
        outcome: crate::cache::CacheOutcome,
        cx: &mut RequestCtx<'l>,
    ) -> Result<Summary, ProxyError> {
        if let Ok((summary, disk_failed)) =
            respond::cached(self, head, conn, obj, outcome, cx).await
        {
            if disk_failed {
                // The body on disk went bad after the head went out: the response was cut
                // short. Drop the entry, or every later hit would be cut short the same way.
                self.cache.remove(&lookup::key_of(object));
            }
            return Ok(summary);
        }
        self.cache.remove(&lookup::key_of(object));
        let miss = lookup::Miss::plain(crate::cache::CacheOutcome::Miss { stored: false });
        match fetch::fetch(self, local, head, object, miss, cx).await? {
            fetch::Fetched::Origin(resp, miss) => {
                respond::origin(self, head, conn, resp, miss, cx).await
            }
            fetch::Fetched::Cached(obj, outcome) => {
                respond::cached(self, head, conn, &obj, outcome, cx)
                    .await
                    .map(|(summary, _)| summary)
                    .map_err(|_| ProxyError::internal("the cached object cannot be read"))
            }
        }
    }
}

impl Shard {
    /// This core's breaker for bucket `name`'s backend (made closed on first use).
    fn breaker(&self, name: &str) -> Rc<crate::upstream::breaker::Breaker> {
        if let Some(b) = self.breakers.borrow().get(name) {
            return b.clone();
        }
        let b = Rc::new(crate::upstream::breaker::Breaker::default());
        self.breakers
            .borrow_mut()
            .insert(name.to_owned(), b.clone());
        b
    }

    /// Remove the entries `scope` names from this core's partition; returns how many. Runs on
    /// the shard (through the control mailbox, on every shard), O(entries in the shard). The
    /// admin purge then runs [`Shard::purge_l1`] on every shard.
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        let n = self.cache.purge(scope);
        tracing::info!(shard = self.ctx.index(), purged = n, scope = ?scope_name(scope), "cache purge");
        n
    }

    /// Remove the L1 copies `scope` names on this shard (the purge's second phase, once no
    /// owner holds them); returns how many. O(copies in the L1).
    pub fn purge_l1(&self, scope: &PurgeScope) -> usize {
        self.cache.purge_l1(scope)
    }

    /// This shard's cache figures, for every bucket or only `bucket`. Runs on the shard;
    /// O(buckets).
    pub fn cache_stats(&self, bucket: Option<&str>) -> ShardCacheStats {
        let disk = self.cache.disk();
        let buckets = self
            .metrics
            .buckets()
            .into_iter()
            .filter(|(name, _)| {
                name != crate::metrics::UNROUTED && bucket.is_none_or(|b| b == name)
            })
            .map(|(name, m)| BucketCacheStats {
                name,
                items: m.cache_items.get().max(0) as u64,
                bytes: m.cache_bytes.get().max(0) as u64,
                hits: m.cache_hits.get(),
                misses: m.cache_misses.get(),
                bypasses: m.cache_bypasses.get(),
                evictions: m.cache_evictions.get(),
                inserts: m.cache_inserts.get(),
                disk: disk.map(|_| LayerStats {
                    items: m.disk.items.get().max(0) as u64,
                    bytes: m.disk.bytes.get().max(0) as u64,
                    hits: m.disk.hits.get(),
                    misses: m.disk.misses.get(),
                    evictions: m.disk.evictions.get(),
                    inserts: m.disk.inserts.get(),
                }),
            })
            .collect();
        ShardCacheStats {
            shard: self.ctx.index(),
            capacity_bytes: self.cache.memory_capacity(),
            l1_capacity_bytes: self.cache.l1_capacity(),
            l1_items: self.cache.l1_len() as u64,
            disk_capacity_bytes: disk.map(|d| d.capacity()),
            buckets,
        }
    }
}

/// The scope of a purge for the log, without the key bytes (keys may be personal data).
fn scope_name(scope: &PurgeScope) -> String {
    match scope {
        PurgeScope::All => "all".to_owned(),
        PurgeScope::Bucket(b) => format!("bucket {b}"),
        PurgeScope::Object(b, _) => format!("object in {b}"),
    }
}

impl Service for Shard {
    fn settings(&self) -> ServerSettings {
        self.local.borrow().prepared.settings
    }

    fn dates(&self) -> &DateCache {
        &self.dates
    }

    async fn call(&self, head: &RequestHead, conn: &mut Conn) -> Outcome {
        let local = self.current();
        let mut cx = RequestCtx::new(request_id_for(head), Instant::now(), &local.unrouted);
        let summary = match self.handle(&local, head, conn, &mut cx).await {
            Ok(s) => s,
            Err(e) => local::error(self, head, conn, &e, &cx).await,
        };
        log::record(self, &local, head, conn, &cx, &summary);
        Outcome {
            keep_alive: summary.keep_alive,
        }
    }

    fn connection_opened(&self) {
        self.metrics.connections.add(1);
        self.metrics.connections_accepted.inc();
    }

    fn connection_closed(&self) {
        self.metrics.connections.add(-1);
    }

    /// Methods other than GET, HEAD and OPTIONS get 405 whatever their body (DESIGN section 5:
    /// the method check comes before any body check).
    fn answers_without_body(&self, head: &RequestHead) -> bool {
        !matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }
}
