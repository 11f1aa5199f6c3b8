//! The request pipeline of one shard, as named phases (DESIGN section 2):
//! `route` (path checks, method, longest-prefix bucket) -> `build upstream request` (SigV4,
//! forwarded conditionals, Range, If-Range) -> `send` (pool, timeouts) -> `respond` (pass-through
//! headers, streamed body, error mapping) -> access log.
//!
//! Hot path. Per request: one config-generation check, one routing probe per path segment, one
//! SigV4 signature with the cached per-day key (two SHA-256 + one HMAC chain of 1 step), one
//! request head of ~600 bytes, one 64 KiB body buffer for the life of the response (none for a
//! body of 1 MiB or more that is not being cached: it moves by splice(2) through a pipe, with no
//! user-space copy). Memory per connection is constant whatever the object size: the body moves
//! through that one buffer or pipe, read from S3 only after the previous chunk was written to the
//! client (backpressure), and a client that goes away ends the upstream read at the next write
//! (the upstream connection is closed, not pooled).

pub mod cached;
pub mod fill;
pub mod headers;
pub mod prepared;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header;
use http::{HeaderMap, Method};
use yatagarasu_runtime::{ShardContext, Snapshot};

use crate::admin::health::Health;
use crate::auth::{authenticate, extract_token, AuthError, TokenCache, Verified};
use crate::cache::memory::MemoryShard;
use crate::cache::single_flight::{Flight, LeaderGuard, SingleFlight};
use crate::cache::{
    evaluate, http_date, storable_ttl, CacheKey, CacheKeyRef, CachedObject, Precondition,
    STORED_HEADERS,
};
use crate::config::{Addressing as ConfigAddressing, BucketConfig};
use crate::error::{json_body, ErrorKind, ProxyError};
use crate::http::forwarded::client_ip;
use crate::http::path::{decode_path, normalize_path, query_pairs, split_target};
use crate::http::range::{content_range_unsatisfied, parse_range, ByteRange};
use crate::http::request::{RequestHead, Version};
use crate::http::response::{DateCache, ResponseHead};
use crate::http::server::{request_id_for, Conn, Outcome, ServerSettings, Service};
use crate::metrics::{BucketMetrics, Metrics, ShardMetrics};
use crate::s3::addressing::{object_target, Addressing};
use crate::s3::error::parse_error_xml;
use crate::s3::sigv4::{Credentials, Signer};
use crate::s3::uri::canonical_query;
use crate::upstream::{Response, SpliceError, Target, Upstream};
use fill::Growing;
use headers::EdgePolicy;
use prepared::Prepared;

/// Body bytes moved per read/write step between S3 and the client.
pub const BODY_CHUNK_BYTES: usize = 64 * 1024;
/// Most bytes of an S3 error body kept for parsing its Code and Message.
const ERROR_BODY_LIMIT: usize = 16 * 1024;
/// The methods this proxy serves, for `Allow` (RFC 9110 section 10.2.1).
pub const ALLOW: &str = "GET, HEAD, OPTIONS";
/// Sent upstream as User-Agent.
const USER_AGENT: &str = concat!("yatagarasu/", env!("CARGO_PKG_VERSION"));

/// Response headers passed from S3 to the client: the fields a cache entry stores
/// ([`STORED_HEADERS`]: representation and validator fields, S3's version id) plus
/// `Content-Range` for 206. Everything else, hop-by-hop fields included, is dropped. One list
/// for both, so a cached answer and a streamed one carry the same fields.
fn pass_through() -> impl Iterator<Item = &'static str> {
    STORED_HEADERS.into_iter().chain(["content-range"])
}

/// The pass-through fields a 304 carries (RFC 9110 section 15.4.5), the same set as a 304
/// answered from cache.
pub(crate) const NOT_MODIFIED_FIELDS: [&str; 5] =
    ["etag", "last-modified", "cache-control", "expires", "vary"];

/// Request headers forwarded to S3 (conditionals and Range; If-Range is evaluated here).
const FORWARDED: [header::HeaderName; 4] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Shard-local state derived from one config generation.
struct Local {
    generation: u64,
    prepared: Arc<Prepared>,
    buckets: Vec<LocalBucket>,
    /// Metrics of requests that matched no bucket (bucket label `-`).
    unrouted: Arc<BucketMetrics>,
}

struct LocalBucket {
    signer: Signer,
    pool_key: Rc<str>,
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
                signer: signer_for(b),
                pool_key: Rc::from(p.pool_key.as_str()),
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
}

/// Everything one shard owns: its view of the config, its upstream pool and resolver cache, its
/// `Date` cache. Built on the shard thread; never shared.
pub struct Shard {
    snapshot: Snapshot<Prepared>,
    local: RefCell<Rc<Local>>,
    upstream: Upstream,
    dates: DateCache,
    /// This shard's part of the memory cache: `cache.memory.max_cache_size_mb` / shards.
    memory: MemoryShard,
    /// Misses being fetched right now, so concurrent misses for one key make one S3 request;
    /// the value is the entry being filled, published as soon as its response head is known.
    flights: SingleFlight<CacheKey, Rc<Growing>>,
    /// Verified tokens, so a reused token costs no RSA/ECDSA verification.
    tokens: TokenCache,
    ctx: ShardContext,
    /// This shard's counters (read by the scraper on the admin thread).
    metrics: Arc<ShardMetrics>,
    /// Backend readiness, answered on `/ready`.
    health: Arc<Health>,
}

/// Process-wide services each shard reads: the metrics registry and the readiness state.
#[derive(Clone, Debug)]
pub struct Services {
    /// Where every shard registers its counters.
    pub metrics: Arc<Metrics>,
    /// Probe results and process facts for `/health` and `/ready`.
    pub health: Arc<Health>,
}

/// Verified tokens kept per shard.
const TOKEN_CACHE_ENTRIES: usize = 10_000;
/// How often the JWKS fetcher looks for due or requested refreshes.
const JWKS_TICK: Duration = Duration::from_secs(1);
/// Budget for one JWKS fetch.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl Shard {
    /// Build the state of the shard described by `ctx` from the shared `snapshot`.
    pub fn new(snapshot: Snapshot<Prepared>, ctx: ShardContext, services: &Services) -> Shard {
        let metrics =
            services
                .metrics
                .register_shard(ctx.index(), &ctx.driver().to_string(), ctx.cpu());
        let local = Local::build(snapshot.generation(), snapshot.load_full(), &metrics);
        let total_bytes = local.prepared.config.cache.memory.max_cache_size_mb * MIB;
        let memory = MemoryShard::with_metrics(
            total_bytes / ctx.shard_count().max(1) as u64,
            metrics.clone(),
        );
        if ctx.index() == 0 {
            // One JWKS fetcher for the whole process, on shard 0.
            monoio::spawn(jwks_fetcher(snapshot.clone(), ctx.clone()));
        }
        Shard {
            snapshot,
            local: RefCell::new(Rc::new(local)),
            upstream: Upstream::default(),
            dates: DateCache::default(),
            memory,
            flights: SingleFlight::new(),
            tokens: TokenCache::new(TOKEN_CACHE_ENTRIES),
            ctx,
            metrics,
            health: services.health.clone(),
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
            for old in &local.prepared.config.buckets {
                let same = next
                    .prepared
                    .config
                    .bucket(&old.name)
                    .is_some_and(|b| b.s3 == old.s3);
                if !same {
                    self.memory.purge_bucket(&old.name);
                }
            }
            *local = Rc::new(next);
        }
        local.clone()
    }
}

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

/// One shard's memory-cache figures (`GET /admin/cache/stats`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShardCacheStats {
    /// Shard index.
    pub shard: usize,
    /// The shard's memory capacity (its share of `max_cache_size_mb`), bytes.
    pub capacity_bytes: u64,
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
}

impl Shard {
    /// Remove the entries `scope` names from this shard's memory cache; returns how many.
    /// Runs on the shard (through the control mailbox), O(entries in the shard).
    pub fn purge(&self, scope: &PurgeScope) -> usize {
        let n = match scope {
            PurgeScope::All => self.memory.clear(),
            PurgeScope::Bucket(b) => self.memory.purge_bucket(b),
            PurgeScope::Object(b, k) => self.memory.purge_object(b, k),
        };
        tracing::info!(shard = self.ctx.index(), purged = n, scope = ?scope_name(scope), "cache purge");
        n
    }

    /// This shard's cache figures, for every bucket or only `bucket`. Runs on the shard;
    /// O(buckets).
    pub fn cache_stats(&self, bucket: Option<&str>) -> ShardCacheStats {
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
            })
            .collect();
        ShardCacheStats {
            shard: self.ctx.index(),
            capacity_bytes: self.memory.capacity(),
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

/// What the access log and the metrics record about a request, filled in as it moves through
/// the phases.
struct RequestInfo<'l> {
    /// The routed bucket's index in the snapshot.
    bucket: Option<usize>,
    /// Counters of the routed bucket (or of unrouted requests).
    metrics: &'l BucketMetrics,
    /// The verified token, when the bucket requires one.
    subject: Option<Rc<Verified>>,
    /// `X-Cache` value sent (`-` when none).
    cache: &'static str,
    /// The routed bucket's response policy (casing, `Cache-Control: private`, CORS).
    policy: EdgePolicy<'l>,
}

/// How a finished response went.
struct Summary {
    status: u16,
    bytes: u64,
    keep_alive: bool,
}

impl Service for Shard {
    fn settings(&self) -> ServerSettings {
        self.local.borrow().prepared.settings
    }

    fn dates(&self) -> &DateCache {
        &self.dates
    }

    async fn call(&self, head: &RequestHead, conn: &mut Conn) -> Outcome {
        let started = Instant::now();
        let local = self.current();
        let request_id = request_id_for(head);
        let mut info = RequestInfo {
            bucket: None,
            metrics: &local.unrouted,
            subject: None,
            cache: "-",
            policy: EdgePolicy::default(),
        };
        let summary = match self
            .handle(&local, head, conn, &request_id, &mut info)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                // S3's 4xx answers (a missing key, a failed precondition) are the client's
                // business and are in the access line; only failures of ours or of S3 warn.
                if e.status() >= 500 {
                    tracing::warn!(request_id = %request_id, status = e.status(), error = %e.message, "request failed");
                }
                let keep_alive = self
                    .write_error(head, conn, &e, &request_id, &info.policy)
                    .await;
                Summary {
                    status: e.status(),
                    bytes: 0,
                    keep_alive,
                }
            }
        };
        let elapsed = started.elapsed();
        info.metrics
            .record_request(&head.method, summary.status, elapsed);
        info.metrics.bytes_sent.add(summary.bytes);
        let cfg = &local.prepared.config;
        if cfg.logging.access_log {
            let (path, _) = split_target(&head.target);
            let bucket_name = info
                .bucket
                .and_then(|i| cfg.buckets.get(i))
                .map_or("-", |b| b.name.as_str());
            let client = client_ip(conn.peer.ip(), &head.headers, &cfg.server.trusted_proxies);
            let subject = info
                .subject
                .as_ref()
                .and_then(|v| v.subject.as_deref())
                .unwrap_or("-");
            tracing::info!(
                target: "yatagarasu::access",
                request_id = %request_id,
                client = %client,
                method = %head.method,
                path = %path,
                bucket = bucket_name,
                status = summary.status,
                bytes = summary.bytes,
                duration_us = elapsed.as_micros() as u64,
                cache = info.cache,
                subject,
                shard = self.ctx.index(),
            );
        }
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

impl Shard {
    /// Phases route -> upstream request -> send -> respond. `Err` only before any response byte
    /// was written; failures mid-body end the connection and are reported in the `Summary`.
    async fn handle<'l>(
        &self,
        local: &'l Local,
        head: &RequestHead,
        conn: &mut Conn,
        request_id: &str,
        info: &mut RequestInfo<'l>,
    ) -> Result<Summary, ProxyError> {
        // Phase: route.
        let (raw_path, query) = split_target(&head.target);
        if matches!(raw_path, "/health" | "/ready")
            && (head.method == Method::GET || head.method == Method::HEAD)
        {
            return Ok(self.write_health(head, conn, request_id, raw_path).await);
        }
        if head.method == Method::OPTIONS {
            let cors = headers::cors_for_path(&local.prepared, raw_path);
            return Ok(self.write_options(head, conn, request_id, cors).await);
        }
        let path = normalize_path(raw_path)
            .map_err(|e| ProxyError::client(ErrorKind::BadRequest, format!("invalid path: {e}")))?;
        if head.method != Method::GET && head.method != Method::HEAD {
            return Err(ProxyError::client(
                ErrorKind::MethodNotAllowed,
                "only GET, HEAD and OPTIONS are served",
            )
            .with_header("Allow", ALLOW));
        }
        let (index, rest) = local.prepared.router.route(&path).ok_or_else(|| {
            ProxyError::client(ErrorKind::NotFound, "no bucket is mapped to this path")
        })?;
        info.bucket = Some(index);
        info.metrics = &local.buckets[index].metrics;
        info.policy = EdgePolicy::of(&local.prepared.buckets[index]);
        if rest.is_empty() {
            return Err(ProxyError::client(
                ErrorKind::NotFound,
                "the path names a bucket but no object key",
            ));
        }
        let key = decode_path(rest)
            .map_err(|e| ProxyError::client(ErrorKind::BadRequest, format!("invalid path: {e}")))?;
        // Phase: auth, before any cache lookup (a private bucket's hit still needs a token).
        if let Some(auth) = &local.prepared.buckets[index].auth {
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let result = match extract_token(auth.verifier.token_sources(), &head.headers, query) {
                None => Err(AuthError::Missing),
                Some(token) => authenticate(
                    &auth.verifier,
                    auth.jwks.as_deref(),
                    &self.tokens,
                    local.generation,
                    &token,
                    now,
                ),
            };
            match result {
                Ok(verified) => info.subject = Some(verified),
                Err(e) => {
                    let realm = &local.prepared.config.buckets[index].name;
                    let kind = if e.status() == 403 {
                        ErrorKind::Forbidden
                    } else {
                        ErrorKind::Unauthorized
                    };
                    return Err(ProxyError::client(kind, e.to_string())
                        .with_header("WWW-Authenticate", e.www_authenticate(realm)));
                }
            }
        }
        let version_id = query.and_then(|q| {
            query_pairs(q)
                .find(|(k, _)| k == "versionId")
                .map(|(_, v)| v.into_owned())
        });
        if version_id.is_some() && !local.prepared.config.buckets[index].s3.allow_version_id {
            return Err(ProxyError::client(
                ErrorKind::BadRequest,
                "versionId is not allowed on this bucket (s3.allow_version_id is false)",
            ));
        }

        // Phase: cache lookup. A fresh hit is answered from memory, conditionals and Range
        // included, before anything of the upstream request is built (no S3 host, URI or
        // signature on the hit path).
        let bucket = &local.prepared.config.buckets[index];
        let now = SystemTime::now();
        let cached = cache_enabled(bucket, self.memory.capacity())
            .then(|| CacheKeyRef::new(&bucket.name, &key, version_id.as_deref()))
            .and_then(|k| self.memory.get(&k));
        if let Some(obj) = cached.as_ref().filter(|obj| obj.is_fresh(now)) {
            return Ok(self
                .answer_cached(head, conn, request_id, obj, "HIT", info)
                .await);
        }

        let cache = cache_plan(
            &local.prepared,
            index,
            &key,
            version_id.as_deref(),
            self.memory.capacity(),
        );

        // Phase: build the upstream request.
        let prepared = &local.prepared.buckets[index];
        let (host, canonical_uri) = bucket_object_target(bucket, &key);
        let query = match &version_id {
            Some(v) => canonical_query(&[("versionId", v.as_str())]),
            None => String::new(),
        };
        let plan = RangePlan::new(&head.headers);
        let is_head = head.method == Method::HEAD;
        let target = upstream_target(bucket, prepared, &local.buckets[index].pool_key);
        let signer = &local.buckets[index].signer;
        let method = if is_head { "HEAD" } else { "GET" };
        let build = |method: &str, forward: Forward| {
            build_request(
                head,
                signer,
                method,
                &host,
                &canonical_uri,
                &query,
                &plan,
                forward,
            )
        };

        // A stale entry is revalidated with its ETag; a plain GET miss becomes the single-flight
        // leader that fills the entry while streaming, or a follower that waits (bounded by
        // first_byte_timeout_ms) for the leader's entry.
        let mut fill = None;
        let x_cache = if cache.is_some() { "MISS" } else { "BYPASS" };
        if let Some(plan_c) = cache {
            let plain_get = head.method == Method::GET && !has_conditionals_or_range(&head.headers);
            if let Some(obj) = cached {
                match (&obj.etag, plain_get) {
                    (Some(etag), true) => {
                        info.metrics.cache_revalidations.inc();
                        let reval = RangePlan {
                            range: None,
                            empty_suffix: false,
                            injected: Some(("If-None-Match", etag.as_bytes().to_vec())),
                        };
                        let mut req = build_request(
                            head,
                            signer,
                            "GET",
                            &host,
                            &canonical_uri,
                            &query,
                            &reval,
                            Forward::InjectedOnly,
                        );
                        match self
                            .send_upstream(info.metrics, &target, &mut req, false)
                            .await
                        {
                            Ok(r) if r.status == 304 => {
                                // RFC 9111 section 4.3.4: merge the 304's fields into the entry.
                                let fresh = obj.revalidated(&r.headers, now, plan_c.ttl);
                                drop(r);
                                info.metrics.cache_revalidated_not_modified.inc();
                                match fresh {
                                    Some(fresh) => {
                                        let fresh = Rc::new(fresh);
                                        self.memory.insert(plan_c.key.clone(), fresh.clone());
                                        return Ok(self
                                            .answer_cached(
                                                head, conn, request_id, &fresh, "HIT", info,
                                            )
                                            .await);
                                    }
                                    // Became no-store: serve this once, keep it no longer.
                                    None => {
                                        self.memory.remove(&plan_c.key);
                                        return Ok(self
                                            .answer_cached(
                                                head, conn, request_id, &obj, "BYPASS", info,
                                            )
                                            .await);
                                    }
                                }
                            }
                            Ok(r) if r.status == 200 => {
                                // Changed in S3: stream the new body and replace the entry.
                                return self
                                    .respond(
                                        head,
                                        conn,
                                        request_id,
                                        r,
                                        info,
                                        Miss::filling(Fill::unguarded(plan_c)),
                                    )
                                    .await;
                            }
                            Ok(r) if r.status < 500 => {
                                // Gone or forbidden now: drop the entry, report S3's answer.
                                self.memory.remove(&plan_c.key);
                                return self
                                    .respond(head, conn, request_id, r, info, Miss::plain("MISS"))
                                    .await;
                            }
                            // S3 unreachable or failing: serve the stale copy (RFC 9111 section 4.2.4).
                            _ => {
                                return Ok(self
                                    .answer_cached(head, conn, request_id, &obj, "STALE", info)
                                    .await)
                            }
                        }
                    }
                    _ => {
                        self.memory.remove(&plan_c.key);
                    }
                }
            }
            if plain_get {
                match self.flights.begin(&plan_c.key) {
                    Flight::Leader(guard) => fill = Some(Fill::led(plan_c, guard)),
                    Flight::Follower(waiter) => {
                        info.metrics.cache_single_flight_waits.inc();
                        match monoio::time::timeout(prepared.first_byte_timeout, waiter.wait())
                            .await
                        {
                            Ok(Some(growing)) if !growing.failed() => {
                                return Ok(self
                                    .answer_growing(head, conn, request_id, &growing, info)
                                    .await)
                            }
                            Ok(_) => info.metrics.cache_single_flight_abandoned.inc(),
                            Err(_) => info.metrics.cache_single_flight_timeouts.inc(),
                        }
                    }
                }
            }
        }

        // Phase: send (and the If-Range fallback: a stale validator gives 200 with the full body).
        let mut req = build(method, Forward::All);
        let mut resp = self
            .send_upstream(info.metrics, &target, &mut req, is_head)
            .await?;
        // A 412 may be S3's misreading (RGW fails If-Match lists that hold the current tag) or
        // the If-Range precondition we injected: ask again for the Range alone and decide below.
        let client_preconditions = head.headers.contains_key(header::IF_MATCH)
            || head.headers.contains_key(header::IF_UNMODIFIED_SINCE);
        if resp.status == 412 && (plan.injected.is_some() || client_preconditions) {
            drop(resp);
            let mut req = build(method, Forward::RangeOnly);
            resp = self
                .send_upstream(info.metrics, &target, &mut req, is_head)
                .await?;
        }
        // Phase: conditionals, evaluated here against the validators of the response about to
        // be sent, whatever S3 made of them (some servers ignore weak or list If-None-Match,
        // If-Match or If-Range; DESIGN section 5).
        if matches!(resp.status, 200 | 206) {
            let etag = resp.headers.get(header::ETAG).cloned();
            let last_modified = resp.headers.get(header::LAST_MODIFIED).and_then(http_date);
            match evaluate(&head.headers, etag.as_ref(), last_modified) {
                Precondition::Failed => {
                    return Err(ProxyError::client(
                        ErrorKind::PreconditionFailed,
                        "a precondition failed against the object",
                    ))
                }
                // The body is not read: the upstream connection closes with the response.
                Precondition::NotModified => resp.status = 304,
                Precondition::Proceed { apply_range } => {
                    if resp.status == 206 && !apply_range {
                        // A 206 whose validators do not match the If-Range: the client gets
                        // the whole current object, never bytes of two versions.
                        drop(resp);
                        let mut req = build(method, Forward::Nothing);
                        resp = self
                            .send_upstream(info.metrics, &target, &mut req, is_head)
                            .await?;
                    } else if plan.empty_suffix && apply_range && resp.status == 200 {
                        let len = content_length(&resp.headers).unwrap_or(0);
                        return Err(ProxyError::client(
                            ErrorKind::RangeNotSatisfiable,
                            "the range does not overlap the object",
                        )
                        .with_header("Content-Range", content_range_unsatisfied(len)));
                    }
                }
            }
        }

        // Some S3 implementations (Ceph RGW among them) answer 304 without the validators and 416
        // without `Content-Range: bytes */len`, both of which RFC 9110 (sections 15.4.5, 15.5.17)
        // and our contract require. One plain HEAD of the object supplies them; AWS S3 includes
        // them, so this costs nothing there.
        let missing = match resp.status {
            304 => !resp.headers.contains_key(header::ETAG),
            416 => !resp.headers.contains_key(header::CONTENT_RANGE),
            _ => false,
        };
        if missing {
            let mut req = build("HEAD", Forward::Nothing);
            if let Ok(meta) = self
                .send_upstream(info.metrics, &target, &mut req, true)
                .await
            {
                if meta.status == 200 {
                    complete_metadata(&mut resp.headers, resp.status, &meta.headers);
                }
            }
        }

        // Phase: respond.
        self.respond(head, conn, request_id, resp, info, Miss { fill, x_cache })
            .await
    }

    /// Answer a follower of a fill: from the complete entry when the fill already ended, else
    /// 200 with the entry's headers and its body streamed as it arrives (the follower is a plain
    /// GET). Counted as a hit: the request caused no S3 fetch.
    async fn answer_growing(
        &self,
        head: &RequestHead,
        conn: &mut Conn,
        request_id: &str,
        growing: &Rc<Growing>,
        info: &mut RequestInfo<'_>,
    ) -> Summary {
        if let Some(obj) = growing.complete() {
            return self
                .answer_cached(head, conn, request_id, &obj, "HIT", info)
                .await;
        }
        let mut reader = growing.reader();
        cached::stored_head(
            head,
            conn,
            &self.dates,
            request_id,
            growing.meta(),
            growing.body_len(),
            "HIT",
            &info.policy,
        );
        let mut sent = 0;
        let ok = match conn.flush().await {
            Ok(()) => reader.deliver(conn, &mut sent).await.is_ok(),
            Err(_) => false,
        };
        info.cache = "HIT";
        info.metrics.cache_hits.inc();
        info.metrics.cache_hit_bytes.add(sent);
        Summary {
            status: 200,
            bytes: sent,
            keep_alive: ok && conn.keep_alive,
        }
    }

    /// Answer from a cached entry and count it.
    async fn answer_cached(
        &self,
        head: &RequestHead,
        conn: &mut Conn,
        request_id: &str,
        obj: &CachedObject,
        x_cache: &'static str,
        info: &mut RequestInfo<'_>,
    ) -> Summary {
        let served = cached::serve(
            head,
            conn,
            &self.dates,
            request_id,
            obj,
            x_cache,
            &info.policy,
        )
        .await;
        info.cache = x_cache;
        if x_cache == "BYPASS" {
            info.metrics.cache_bypasses.inc();
        } else {
            info.metrics.cache_hits.inc();
            info.metrics.cache_hit_bytes.add(served.bytes);
        }
        Summary {
            status: served.status,
            bytes: served.bytes,
            keep_alive: served.keep_alive,
        }
    }

    /// Stream a 200/206/304 through, or turn an S3 error into ours.
    async fn respond(
        &self,
        head: &RequestHead,
        conn: &mut Conn,
        request_id: &str,
        mut resp: Response<'_>,
        info: &mut RequestInfo<'_>,
        miss: Miss,
    ) -> Result<Summary, ProxyError> {
        let Miss { fill, x_cache } = miss;
        let status = resp.status;
        if !matches!(status, 200 | 206 | 304) {
            info.cache = x_cache;
            if x_cache == "BYPASS" {
                info.metrics.cache_bypasses.inc();
            } else {
                info.metrics.cache_misses.inc();
            }
            return Err(self.origin_error(&mut resp, request_id, info.metrics).await);
        }
        let is_head = head.method == Method::HEAD;
        // Framing towards the client (RFC 9112 section 6).
        let upstream_len = content_length(&resp.headers);
        let body_len = if status == 304 {
            Some(0)
        } else if is_head {
            upstream_len
        } else {
            resp.body.declared_len()
        };
        let chunked =
            !is_head && status != 304 && body_len.is_none() && head.version == Version::Http11;
        let mut keep_alive = conn.keep_alive && (body_len.is_some() || chunked || is_head);

        // Fill while streaming: only a complete 200 to a plain GET whose length is declared,
        // within the item limit, and storable per Cache-Control.
        let fill = fill.and_then(|f| {
            let ttl = storable_ttl(status, !is_head, &resp.headers, f.ttl)?;
            let len = body_len?;
            (status == 200 && !is_head && len <= f.max_item_bytes).then_some(Filling {
                len,
                ttl,
                fill: f,
            })
        });
        let x_cache = match (&fill, x_cache) {
            (None, "MISS") if status == 200 => "BYPASS",
            (_, x) => x,
        };
        info.cache = x_cache;
        if x_cache == "BYPASS" {
            info.metrics.cache_bypasses.inc();
        } else {
            info.metrics.cache_misses.inc();
        }
        let mut h = ResponseHead::new(&mut conn.wbuf, status);
        h.header("Date", &self.dates.now());
        for name in pass_through() {
            // A 304 carries the validators and caching fields of the 200 (RFC 9110 section
            // 15.4.5), not its representation metadata.
            if status == 304 && !NOT_MODIFIED_FIELDS.contains(&name) {
                continue;
            }
            for v in resp.headers.get_all(name) {
                info.policy.field(&mut h, name, v.as_bytes());
            }
        }
        for (name, v) in resp.headers.iter() {
            if status != 304 && name.as_str().starts_with("x-amz-meta-") {
                h.header(name.as_str(), v.as_bytes());
            }
        }
        let cache_control = resp.headers.get_all(header::CACHE_CONTROL).iter();
        info.policy
            .object_fields(&mut h, &head.headers, cache_control.map(|v| v.as_bytes()));
        h.header("X-Cache", x_cache.as_bytes());
        match body_len {
            Some(n) if status != 304 => {
                h.header_u64("Content-Length", n);
            }
            _ => {}
        }
        if chunked {
            h.header("Transfer-Encoding", b"chunked");
        }
        h.header("X-Request-Id", request_id.as_bytes());
        h.connection(head.version, keep_alive);
        h.finish();

        if is_head || status == 304 {
            if conn.flush().await.is_err() {
                keep_alive = false;
            }
            return Ok(Summary {
                status,
                bytes: 0,
                keep_alive,
            });
        }

        if let Some(f) = fill {
            return Ok(self.fill_and_deliver(conn, resp, f, keep_alive).await);
        }

        // Body: one buffer, read from S3 only after the previous chunk reached the client. A
        // long body that is not being cached moves by splice(2) instead, without the copies.
        let mut sent = 0u64;
        let mut buf = Vec::new();
        let mut framed: Vec<u8> = Vec::new();
        let mut ok = conn.flush().await.is_ok();
        while ok {
            if !chunked && resp.body.spliceable() {
                match resp
                    .body
                    .splice_to(&mut conn.stream, &mut sent, conn.send_timeout)
                    .await
                {
                    Ok(()) => {}
                    Err(SpliceError::Upstream(e)) => {
                        tracing::warn!(request_id = %request_id, error = %e, sent, "S3 body failed mid-stream");
                        ok = false;
                    }
                    Err(SpliceError::Client(_)) => ok = false,
                }
                break;
            }
            buf.clear();
            buf.reserve_exact(BODY_CHUNK_BYTES);
            let n = match resp.body.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(request_id = %request_id, error = %e, sent, "S3 body failed mid-stream");
                    ok = false;
                    break;
                }
            };
            if chunked {
                // RFC 9112 section 7.1: hex size, CRLF, data, CRLF, in one reused buffer.
                framed.clear();
                // Writing into a Vec cannot fail.
                let _ = std::io::Write::write_fmt(&mut framed, format_args!("{n:x}\r\n"));
                framed.extend_from_slice(&buf);
                framed.extend_from_slice(b"\r\n");
                ok = conn.send(&mut framed).await.is_ok();
            } else {
                ok = conn.send(&mut buf).await.is_ok();
            }
            sent += n as u64;
        }
        if ok && chunked {
            let mut last = b"0\r\n\r\n".to_vec();
            ok = conn.send(&mut last).await.is_ok();
        }
        if !ok || body_len.is_some_and(|n| n != sent) {
            keep_alive = false;
        }
        Ok(Summary {
            status,
            bytes: sent,
            keep_alive: keep_alive && ok,
        })
    }

    /// The body of a cacheable 200 whose head is in `conn.wbuf`: the fill reads S3 at the
    /// origin's pace into a [`Growing`] entry (published to the key's followers at once and
    /// inserted into the memory cache the moment it completes), while this client is served
    /// from it at its own pace. Returns when both ended; the upstream connection is back in the
    /// pool as soon as the fill ended, however slow this client is.
    async fn fill_and_deliver(
        &self,
        conn: &mut Conn,
        mut resp: Response<'_>,
        f: Filling,
        keep_alive: bool,
    ) -> Summary {
        let meta = CachedObject::from_response(
            bytes::Bytes::new(),
            &resp.headers,
            SystemTime::now(),
            f.ttl,
        );
        let growing = Growing::new(f.len, meta);
        let Fill { key, guard, .. } = f.fill;
        if let Some(g) = &guard {
            g.publish(growing.clone());
        }
        let mut reader = growing.reader();
        let mut sent = 0u64;
        let filling = async {
            let entry = growing.fill_from(&mut resp.body).await;
            if let Some(obj) = &entry {
                self.memory.insert(key, obj.clone());
            }
            // Followers already hold the published entry; the flight ends here.
            drop(guard);
            entry.is_some()
        };
        let delivering = async {
            conn.flush().await?;
            reader.deliver(conn, &mut sent).await
        };
        let (_, delivered) = monoio::join!(filling, delivering);
        let ok = delivered.is_ok() && sent == f.len;
        Summary {
            status: 200,
            bytes: sent,
            keep_alive: keep_alive && ok,
        }
    }

    /// Send one S3 request through the shard's pool, counting it (requests, latency to the
    /// response head, transport failures as `timeout` / `transport`) in the bucket's metrics.
    async fn send_upstream<'u>(
        &'u self,
        metrics: &BucketMetrics,
        target: &Target<'_>,
        req: &mut Vec<u8>,
        head_request: bool,
    ) -> Result<Response<'u>, ProxyError> {
        let sent = Instant::now();
        metrics.upstream_requests.inc();
        let result = self.upstream.send(target, req, head_request).await;
        metrics.upstream_duration.observe(sent.elapsed());
        if let Err(e) = &result {
            metrics.record_upstream_error(if e.kind == ErrorKind::GatewayTimeout {
                "timeout"
            } else {
                "transport"
            });
        }
        result
    }

    /// `/health` and `/ready` on the data listener: the same JSON as the admin listener, so a
    /// load balancer can check each node where it sends traffic. `/ready` is 503 while this
    /// shard drains.
    async fn write_health(
        &self,
        head: &RequestHead,
        conn: &mut Conn,
        request_id: &str,
        path: &str,
    ) -> Summary {
        let (status, body) = if path == "/health" {
            (200, self.health.health_json())
        } else {
            self.health.ready_json(self.ctx.is_draining())
        };
        let mut h = ResponseHead::new(&mut conn.wbuf, status);
        h.header("Date", &self.dates.now())
            .header("Content-Type", b"application/json")
            .header("Cache-Control", b"no-store")
            .header_u64("Content-Length", body.len() as u64)
            .header("X-Request-Id", request_id.as_bytes());
        h.connection(head.version, conn.keep_alive);
        h.finish();
        let is_head = head.method == Method::HEAD;
        if !is_head {
            conn.wbuf.extend_from_slice(body.as_bytes());
        }
        let ok = conn.flush().await.is_ok();
        Summary {
            status,
            bytes: if is_head { 0 } else { body.len() as u64 },
            keep_alive: ok && conn.keep_alive,
        }
    }

    /// Read S3's (small) error body, log its Code and Message (info, with the request id), and
    /// build the client error: 5xx -> 502, anything else keeps its status (DESIGN section 5).
    /// The client sees only the status and S3's code, bounded as the metrics label is
    /// ([`crate::metrics::label_safe_code`]), in a fixed text: `S3 answered 500 (InternalError)`.
    /// S3's Message never reaches the client: origins put internal hosts, addresses and bucket
    /// names there (issue 11 item 14).
    async fn origin_error(
        &self,
        resp: &mut Response<'_>,
        request_id: &str,
        metrics: &BucketMetrics,
    ) -> ProxyError {
        let status = resp.status;
        let mut body = Vec::new();
        let _ = resp
            .body
            .read_to_end_limited(&mut body, ERROR_BODY_LIMIT)
            .await;
        let info = parse_error_xml(&body);
        let code = info.as_ref().map_or("", |i| i.code.as_str());
        let message = info.as_ref().map_or("", |i| i.message.as_str());
        // The raw code and message go to the log only (its encoder escapes them). A missing
        // key, a failed precondition or an unsatisfiable range is the client's business: the
        // access line says it. Anything else (403: credentials or policy; 5xx) is logged.
        if !matches!(status, 404 | 412 | 416) {
            tracing::info!(
                request_id,
                status,
                s3_code = code,
                s3_message = message,
                "S3 returned an error"
            );
        } else {
            tracing::debug!(
                request_id,
                status,
                s3_code = code,
                s3_message = message,
                "S3 returned an error"
            );
        }
        let detail = if code.is_empty() {
            metrics.record_upstream_error(&format!("http_{status}"));
            format!("S3 answered {status}")
        } else {
            metrics.record_upstream_error(code);
            format!(
                "S3 answered {status} ({})",
                crate::metrics::label_safe_code(code)
            )
        };
        if status >= 500 {
            return ProxyError::origin(ErrorKind::BadGateway, false, detail);
        }
        let mut e = ProxyError::origin(ErrorKind::OriginStatus(status), false, detail);
        if status == 416 {
            if let Some(v) = resp
                .headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
            {
                e = e.with_header("Content-Range", v);
            }
        }
        e
    }

    /// `OPTIONS`: 200 with `Allow` (DESIGN section 5), or 204 with the CORS fields when it is a
    /// preflight the routed bucket's `cors` accepts (DESIGN section 6.1, Fetch section 3.2.2).
    async fn write_options(
        &self,
        head: &RequestHead,
        conn: &mut Conn,
        request_id: &str,
        cors: Option<&crate::http::cors::CorsPolicy>,
    ) -> Summary {
        let preflight = headers::accepted_preflight(cors, &head.headers);
        let status = if preflight.is_some() { 204 } else { 200 };
        let mut h = ResponseHead::new(&mut conn.wbuf, status);
        h.header("Date", &self.dates.now());
        match &preflight {
            Some((policy, p)) => policy.write_preflight(&mut h, p),
            None => {
                h.header("Allow", ALLOW.as_bytes())
                    .header("Content-Length", b"0");
            }
        }
        h.header("X-Request-Id", request_id.as_bytes())
            .connection(head.version, conn.keep_alive);
        h.finish();
        let ok = conn.flush().await.is_ok();
        Summary {
            status,
            bytes: 0,
            keep_alive: ok && conn.keep_alive,
        }
    }

    /// Write `e` as the JSON error of DESIGN section 5 (no body for HEAD), with the routed
    /// bucket's `policy` fields ([`EdgePolicy::error_fields`]). Returns whether the connection
    /// stays open.
    async fn write_error(
        &self,
        head: &RequestHead,
        conn: &mut Conn,
        e: &ProxyError,
        request_id: &str,
        policy: &EdgePolicy<'_>,
    ) -> bool {
        let status = e.status();
        let body = json_body(status, &e.message, request_id);
        let mut h = ResponseHead::new(&mut conn.wbuf, status);
        h.header("Date", &self.dates.now())
            .header("Content-Type", b"application/json")
            .header_u64("Content-Length", body.len() as u64)
            .header("X-Request-Id", request_id.as_bytes());
        if let Some((name, value)) = &e.header {
            h.header(name, value.as_bytes());
        }
        policy.error_fields(&mut h, &head.headers, status);
        h.connection(head.version, conn.keep_alive);
        h.finish();
        if head.method != Method::HEAD {
            conn.wbuf.extend_from_slice(&body);
        }
        conn.flush().await.is_ok() && conn.keep_alive
    }
}

/// How the client's Range and If-Range map onto the upstream request.
struct RangePlan {
    /// The client's Range value when it is one syntactically valid range (DESIGN section 5:
    /// invalid or multi-range requests are served 200 in full, so they are not forwarded).
    /// `bytes=-0` is not forwarded either (S3 servers answer it 206 in full): see `empty_suffix`.
    range: Option<Vec<u8>>,
    /// The client asked for `bytes=-0`, which selects nothing: the object is fetched without
    /// Range only to learn its length for `416` with `Content-Range: bytes */len` (RFC 9110
    /// section 14.1.2: a suffix-length of 0 is unsatisfiable).
    empty_suffix: bool,
    /// A precondition added so S3 evaluates the client's If-Range for us: a strong ETag becomes
    /// `If-Match`, a date `If-Unmodified-Since`. A 412 caused by it means "validator stale":
    /// the request is repeated without Range and the client gets 200 with the full body.
    injected: Option<(&'static str, Vec<u8>)>,
}

impl RangePlan {
    fn new(headers: &HeaderMap) -> RangePlan {
        let mut ranges = headers.get_all(header::RANGE).iter();
        let parsed = match (ranges.next(), ranges.next()) {
            (Some(v), None) => parse_range(v.as_bytes()).map(|r| (v, r)),
            _ => None,
        };
        let empty_suffix = matches!(parsed, Some((_, ByteRange::Suffix(0))));
        let mut range = parsed
            .filter(|_| !empty_suffix)
            .map(|(v, _)| v.as_bytes().to_vec());
        let mut injected = None;
        if let (Some(_), Some(if_range)) = (&range, headers.get(header::IF_RANGE)) {
            let v = if_range.as_bytes();
            if v.starts_with(b"W/") {
                // A weak validator never matches for If-Range (RFC 9110 section 13.1.5).
                range = None;
            } else if v.starts_with(b"\"") {
                if !headers.contains_key(header::IF_MATCH) {
                    injected = Some(("If-Match", v.to_vec()));
                }
            } else if !headers.contains_key(header::IF_UNMODIFIED_SINCE) {
                injected = Some(("If-Unmodified-Since", v.to_vec()));
            }
        }
        RangePlan {
            range,
            empty_suffix,
            injected,
        }
    }
}

/// Which of the client's headers go upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forward {
    /// Conditionals, Range and the If-Range precondition (the first attempt).
    All,
    /// Range only (after S3's 412: the proxy evaluates the client's preconditions itself).
    RangeOnly,
    /// None (a metadata HEAD of our own).
    Nothing,
    /// Only the precondition in the plan (revalidating a cached entry).
    InjectedOnly,
}

/// Fill what S3 left out of a 304 (ETag, Last-Modified, Cache-Control, Expires) or a 416
/// (`Content-Range: bytes */len`) from a HEAD of the same object.
fn complete_metadata(headers: &mut HeaderMap, status: u16, meta: &HeaderMap) {
    if status == 304 {
        for name in [
            header::ETAG,
            header::LAST_MODIFIED,
            header::CACHE_CONTROL,
            header::EXPIRES,
        ] {
            if let (false, Some(v)) = (headers.contains_key(&name), meta.get(&name)) {
                let v = v.clone();
                headers.insert(name, v);
            }
        }
    } else if let Some(len) = content_length(meta) {
        if let Ok(v) = http::HeaderValue::from_str(&content_range_unsatisfied(len)) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
}

/// The signed upstream request head: only the headers S3 needs, never the client's
/// Authorization, cookies or token parameters (they are simply not copied).
#[allow(clippy::too_many_arguments)] // one call site; the pieces are distinct and named
fn build_request(
    head: &RequestHead,
    signer: &Signer,
    method: &str,
    host: &str,
    canonical_uri: &str,
    query: &str,
    plan: &RangePlan,
    forward: Forward,
) -> Vec<u8> {
    let mut req = signed_request_head(signer, method, host, canonical_uri, query);
    if matches!(forward, Forward::All) {
        for name in &FORWARDED {
            for v in head.headers.get_all(name) {
                push_header(&mut req, name.as_str(), v.as_bytes());
            }
        }
    }
    if matches!(forward, Forward::All | Forward::RangeOnly) {
        if let Some(range) = &plan.range {
            push_header(&mut req, "Range", range);
        }
    }
    if matches!(forward, Forward::All | Forward::InjectedOnly) {
        if let Some((name, v)) = &plan.injected {
            push_header(&mut req, name, v);
        }
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// The SigV4 signer for `bucket`'s credentials and region (derives nothing until first use; the
/// signing key is cached per day inside).
pub(crate) fn signer_for(bucket: &BucketConfig) -> Signer {
    let s3 = &bucket.s3;
    Signer::new(
        Credentials {
            access_key: s3.access_key.expose().to_owned(),
            secret_key: s3.secret_key.expose().to_owned(),
            session_token: s3.session_token.as_ref().map(|t| t.expose().to_owned()),
        },
        &s3.region,
    )
}

/// `(Host header, canonical URI)` of object `key` (decoded bytes; empty = the bucket itself) in
/// `bucket`, per its endpoint and addressing style ([`object_target`]).
pub(crate) fn bucket_object_target(bucket: &BucketConfig, key: &[u8]) -> (String, String) {
    let ep = &bucket.s3.endpoint;
    let addressing = match bucket.s3.addressing {
        ConfigAddressing::Path => Addressing::Path,
        ConfigAddressing::Virtual => Addressing::Virtual,
    };
    object_target(
        addressing,
        &ep.host,
        ep.port,
        ep.explicit_port,
        &bucket.s3.bucket,
        key,
    )
}

/// Where and how to reach `bucket`'s endpoint: address, TLS and timeouts from the prepared
/// bucket, idle connections under `pool_key`.
pub(crate) fn upstream_target<'a>(
    bucket: &'a BucketConfig,
    prepared: &'a prepared::PreparedBucket,
    pool_key: &'a Rc<str>,
) -> Target<'a> {
    Target {
        pool_key,
        host: &bucket.s3.endpoint.host,
        port: bucket.s3.endpoint.port,
        tls: prepared.tls.as_ref(),
        connect_timeout: prepared.connect_timeout,
        first_byte_timeout: prepared.first_byte_timeout,
    }
}

/// The request line and headers of a SigV4-signed, body-less S3 request (AWS SigV4 documentation,
/// "Authenticating Requests: Using the Authorization Header"): `Host`, `x-amz-date`,
/// `x-amz-content-sha256` (empty payload), `x-amz-security-token` with temporary credentials,
/// `Authorization` and `User-Agent`, each line ending in CRLF. The caller appends any further
/// fields and the final CRLF. ~600 bytes, one allocation.
pub(crate) fn signed_request_head(
    signer: &Signer,
    method: &str,
    host: &str,
    canonical_uri: &str,
    query: &str,
) -> Vec<u8> {
    let signed = signer.sign(method, host, canonical_uri, query, &[], SystemTime::now());
    let mut req = Vec::with_capacity(768);
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(canonical_uri.as_bytes());
    if !query.is_empty() {
        req.push(b'?');
        req.extend_from_slice(query.as_bytes());
    }
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(b"\r\nx-amz-date: ");
    req.extend_from_slice(signed.x_amz_date.as_bytes());
    req.extend_from_slice(b"\r\nx-amz-content-sha256: ");
    req.extend_from_slice(signed.x_amz_content_sha256.as_bytes());
    if let Some(token) = &signed.x_amz_security_token {
        req.extend_from_slice(b"\r\nx-amz-security-token: ");
        req.extend_from_slice(token.as_bytes());
    }
    req.extend_from_slice(b"\r\nAuthorization: ");
    req.extend_from_slice(signed.authorization.as_bytes());
    req.extend_from_slice(b"\r\nUser-Agent: ");
    req.extend_from_slice(USER_AGENT.as_bytes());
    req.extend_from_slice(b"\r\n");
    req
}

fn push_header(req: &mut Vec<u8>, name: &str, value: &[u8]) {
    req.extend_from_slice(name.as_bytes());
    req.extend_from_slice(b": ");
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// The process-wide JWKS fetcher (runs on shard 0): fetches every JWKS URL of the current config
/// at start, then every `jwks_refresh_seconds`, and early (rate-limited by the store to once per
/// 30 s) when a core saw an unknown `kid`. A failed fetch keeps the previous keys. Uses our own
/// upstream client (HTTPS, timeouts) with its own small pool; ends when the shard drains.
async fn jwks_fetcher(snapshot: Snapshot<Prepared>, ctx: ShardContext) {
    let upstream = Upstream::default();
    let mut fetched_at: std::collections::HashMap<String, Instant> = Default::default();
    loop {
        let prepared = snapshot.load_full();
        for source in &prepared.jwks {
            let due = fetched_at
                .get(&source.url)
                .is_none_or(|at| at.elapsed() >= source.refresh)
                || source.store.wants_refresh();
            if !due {
                continue;
            }
            match crate::auth::fetch_jwks(
                &upstream,
                &source.url,
                source.tls.as_ref(),
                JWKS_FETCH_TIMEOUT,
            )
            .await
            {
                Ok(set) => {
                    let generation = source.store.replace(set);
                    tracing::info!(url = %source.url, jwks_generation = generation, keys = source.store.len(), "jwks refreshed");
                }
                Err(e) => {
                    tracing::warn!(url = %source.url, error = %e, "jwks refresh failed; keeping the previous keys")
                }
            }
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            source.store.mark_refreshed(now);
            fetched_at.insert(source.url.clone(), Instant::now());
        }
        let draining = ctx.draining();
        monoio::select! {
            _ = monoio::time::sleep(JWKS_TICK) => {}
            _ = draining => return,
        }
    }
}

/// Bytes in a MiB.
const MIB: u64 = 1024 * 1024;

/// Where and how a request may use the memory cache.
struct CachePlan {
    key: CacheKey,
    ttl: Duration,
    max_item_bytes: u64,
}

/// Whether `bucket`'s objects go through this shard's memory cache (`capacity` bytes).
fn cache_enabled(bucket: &BucketConfig, capacity: u64) -> bool {
    bucket.cache.enabled && capacity > 0
}

/// The cache plan for bucket `index`, or `None` when its cache is off (bucket `cache.enabled:
/// false`, or no memory configured).
fn cache_plan(
    prepared: &Prepared,
    index: usize,
    key: &[u8],
    version_id: Option<&str>,
    capacity: u64,
) -> Option<CachePlan> {
    let cfg = &prepared.config;
    let bucket = &cfg.buckets[index];
    if !cache_enabled(bucket, capacity) {
        return None;
    }
    let ttl = bucket
        .cache
        .ttl_seconds
        .unwrap_or(cfg.cache.memory.default_ttl_seconds);
    let max_item_mb = bucket
        .cache
        .max_item_size_mb
        .unwrap_or(cfg.cache.memory.max_item_size_mb);
    Some(CachePlan {
        key: CacheKey::new(&bucket.name, key, version_id),
        ttl: Duration::from_secs(ttl),
        max_item_bytes: (max_item_mb * MIB).min(capacity),
    })
}

/// A miss that may fill the cache, with the single-flight guard when this request leads.
struct Fill {
    key: CacheKey,
    ttl: Duration,
    max_item_bytes: u64,
    guard: Option<LeaderGuard<CacheKey, Rc<Growing>>>,
}

impl Fill {
    fn led(plan: CachePlan, guard: LeaderGuard<CacheKey, Rc<Growing>>) -> Fill {
        Fill {
            key: plan.key,
            ttl: plan.ttl,
            max_item_bytes: plan.max_item_bytes,
            guard: Some(guard),
        }
    }

    fn unguarded(plan: CachePlan) -> Fill {
        Fill {
            key: plan.key,
            ttl: plan.ttl,
            max_item_bytes: plan.max_item_bytes,
            guard: None,
        }
    }
}

/// How a response that did not come from the cache relates to it: the fill it may make and the
/// `X-Cache` value (`MISS`, or `BYPASS` for buckets without cache; downgraded to `BYPASS` when
/// the response turns out not to be storable).
struct Miss {
    fill: Option<Fill>,
    x_cache: &'static str,
}

impl Miss {
    fn filling(fill: Fill) -> Miss {
        Miss {
            fill: Some(fill),
            x_cache: "MISS",
        }
    }

    fn plain(x_cache: &'static str) -> Miss {
        Miss {
            fill: None,
            x_cache,
        }
    }
}

/// A miss whose response turned out storable: its declared body length (within the item
/// limit), its freshness lifetime and the fill it makes.
struct Filling {
    len: u64,
    ttl: Duration,
    fill: Fill,
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn range_plan_forwards_only_valid_single_ranges() {
        assert!(RangePlan::new(&headers(&[("range", "bytes=0-9")]))
            .range
            .is_some());
        assert!(RangePlan::new(&headers(&[("range", "bytes=0-1,4-5")]))
            .range
            .is_none());
        assert!(RangePlan::new(&headers(&[("range", "bytes=x")]))
            .range
            .is_none());
    }

    #[test]
    fn if_range_becomes_a_precondition() {
        let p = RangePlan::new(&headers(&[("range", "bytes=0-9"), ("if-range", "\"abc\"")]));
        assert_eq!(p.injected, Some(("If-Match", b"\"abc\"".to_vec())));
        let p = RangePlan::new(&headers(&[
            ("range", "bytes=0-9"),
            ("if-range", "W/\"abc\""),
        ]));
        assert!(p.range.is_none() && p.injected.is_none());
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let p = RangePlan::new(&headers(&[("range", "bytes=0-9"), ("if-range", date)]));
        assert_eq!(
            p.injected,
            Some(("If-Unmodified-Since", date.as_bytes().to_vec()))
        );
        let p = RangePlan::new(&headers(&[("if-range", "\"abc\"")]));
        assert!(p.injected.is_none(), "If-Range without Range is ignored");
    }
}
