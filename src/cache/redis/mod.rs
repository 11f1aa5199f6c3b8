//! The Redis tier (`cache.redis`): one cache shared by every core of every node, below memory
//! and disk. The owner core of a key is the only core that talks to Redis about it (DESIGN
//! section 2), over its own connections ([`conn`], [`client`]); purges are deleted in Redis
//! and announced to every node over pub/sub off the cores ([`control`]).
//!
//! Hot path: a lookup that missed memory and disk costs one GET round trip (~20-40 us on
//! loopback, bounded by `cache.redis.timeout_ms`) and, on a hit, one checksum pass over the
//! value ([`value`]); a fill costs one value encode (a body copy) and a SET written behind the
//! client's response. When Redis is down a lookup costs a flag test: no I/O, no wait.
//!
//! # Behaviour
//!
//! - **Lookups** (`GET <key>`) wait at most `timeout_ms`; no answer, an error reply, a broken
//!   connection or a down node are misses (counted: `cache_redis_timeouts_total`,
//!   `..._errors_total`, `..._skipped_total`). A value that does not decode or verify is a
//!   miss, counted (`..._corrupt_total`) and deleted.
//! - **Fills** (`SET <key> <value> PX <ttl_seconds x 1000>`) are queued on the owner core's
//!   connection behind the client's stream (auto-pipelined); a full queue or a down node drops
//!   the fill (`cache_redis_queue_drops_total`). Objects over `max_item_size_mb`, and entries
//!   whose body lives on disk only, skip Redis. `ttl_seconds` is how long Redis keeps a value;
//!   its freshness is the response's, as in every tier (a stale value with an ETag is
//!   revalidated, not refetched).
//! - **Purges** (admin API): the node that takes the purge deletes the keys in Redis (`UNLINK`
//!   of the key and its versions; `SCAN MATCH` over every master for a bucket or everything,
//!   never `KEYS`), then purges its own tiers, then publishes on `purge_channel`; every other
//!   node, subscribed to it, purges its memory and disk tiers within a second ([`control`]).
//!   Each core also counts purges ([`crate::cache::Tiered::purge`]): a GET already in flight
//!   when a purge arrives is not used (it may be the purged value).
//! - **Single-flight is per node**: two nodes missing the same key at the same moment both
//!   fetch it from S3 (two GETs instead of one) and both SET it; the second SET replaces the
//!   first with the same bytes. No distributed lock: a lock would put a Redis round trip (and
//!   its failure modes) in front of every miss to save one S3 GET per node per cold key.

pub mod client;
pub mod conn;
pub mod control;
pub mod value;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{ConnectionAddr, IntoConnectionInfo, Value};

use self::client::{Client, Cluster, Failure, Spawner};
use self::conn::{Conn, Endpoint};
use crate::cache::entry::{CacheKey, CacheKeyRef, CachedObject};
use crate::cache::tier::PurgeScope;
use crate::config::RedisCacheConfig;
use crate::metrics::ShardMetrics;

const MIB: u64 = 1 << 20;

/// Bytes of fills one core may have queued for Redis (values not yet answered); over it, fills
/// are dropped and counted.
pub const FILL_QUEUE_BYTES: u64 = 64 << 20;

/// The node-wide Redis settings every core builds its client from (`Send + Sync`; made once
/// at start from `cache.redis`).
#[derive(Clone)]
pub struct RedisSettings {
    /// Nodes: the URL's host, or the Cluster seeds.
    pub nodes: Vec<(String, u16)>,
    /// Redis Cluster mode.
    pub cluster: bool,
    /// TLS (`rediss://`) with the system roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `AUTH` user, if any.
    pub username: Option<String>,
    /// `AUTH` password, if any.
    pub password: Option<String>,
    /// `SELECT` database (standalone only).
    pub db: i64,
    /// Key prefix.
    pub key_prefix: String,
    /// `PX` of every SET, ms.
    pub ttl_ms: u64,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Largest body stored, bytes.
    pub max_item_bytes: u64,
    /// Pub/sub channel of purges.
    pub purge_channel: String,
    /// The URL, for the control plane's `redis` crate client (may hold a password: never
    /// logged).
    pub url: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("nodes", &self.nodes)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls.is_some())
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Settings from `cache.redis` (`None` when the tier is off). Errors: a URL the `redis`
    /// crate cannot parse or a unix-socket URL (named by key, never shown: it may hold a
    /// password), a TLS root store that cannot be loaded.
    pub fn from_config(c: &RedisCacheConfig) -> Result<Option<RedisSettings>, String> {
        if !c.enabled {
            return Ok(None);
        }
        let info = c
            .url
            .expose()
            .into_connection_info()
            .map_err(|e| format!("cache.redis.url: {:?} (value not shown)", e.kind()))?;
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p, false),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
            _ => return Err("cache.redis.url: only redis:// and rediss:// are supported".into()),
        };
        let tls = if tls {
            Some(
                crate::upstream::tls::client_config(None)
                    .map_err(|e| format!("cache.redis.url: {e}"))?,
            )
        } else {
            None
        };
        let r = info.redis_settings();
        let cluster = !c.cluster_nodes.is_empty();
        let nodes = if cluster {
            c.cluster_nodes
                .iter()
                .filter_map(|n| {
                    let (h, p) = n.rsplit_once(':')?;
                    Some((h.to_owned(), p.parse().ok()?))
                })
                .collect()
        } else {
            vec![(host, port)]
        };
        Ok(Some(RedisSettings {
            nodes,
            cluster,
            tls,
            username: r.username().map(str::to_owned),
            password: r.password().map(str::to_owned),
            db: if cluster { 0 } else { r.db() },
            key_prefix: c.key_prefix.clone(),
            ttl_ms: c.ttl_seconds.saturating_mul(1000).max(1),
            timeout: Duration::from_millis(c.timeout_ms),
            max_item_bytes: c.max_item_size_mb.saturating_mul(MIB),
            purge_channel: c.purge_channel.clone(),
            url: c.url.expose().to_owned(),
        }))
    }
}

/// One core's side of the Redis tier (module doc). `!Send`.
pub struct RedisTier {
    client: Client,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    max_item: u64,
    metrics: Arc<ShardMetrics>,
    /// Bytes of fills queued and not yet answered.
    queued: Rc<Cell<u64>>,
}

impl RedisTier {
    /// This core's tier: its connections (their tasks started by `spawn`) and, in Cluster
    /// mode, its slot-map task (started by `spawn_service`).
    pub fn start(
        s: &RedisSettings,
        spawn: Spawner,
        spawn_service: impl Fn(std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>),
        metrics: Arc<ShardMetrics>,
    ) -> Rc<RedisTier> {
        metrics
            .redis
            .enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let tls = s
            .tls
            .as_ref()
            .map(|c| Rc::new(monoio_rustls::TlsConnector::from(c.clone())));
        let template = Endpoint {
            host: String::new(),
            port: 0,
            tls,
            username: s.username.clone(),
            password: s.password.clone(),
            db: s.db,
            // A value is its body plus a header and metadata of a few KiB; CLUSTER SLOTS and the
            // other replies are small.
            max_reply: usize::try_from(s.max_item_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(1 << 20),
        };
        let client = if s.cluster {
            let c = Cluster::new(template, s.nodes.clone(), s.timeout, spawn, metrics.clone());
            spawn_service(Box::pin(c.clone().run()));
            Client::Cluster(c)
        } else {
            let mut e = template;
            (e.host, e.port) = s.nodes[0].clone();
            let conn = Conn::new(e, s.timeout, metrics.clone());
            spawn(conn.clone());
            Client::Single(conn)
        };
        Rc::new(RedisTier {
            client,
            prefix: s.key_prefix.clone(),
            ttl_ms: s.ttl_ms,
            timeout: s.timeout,
            max_item: s.max_item_bytes,
            metrics,
            queued: Rc::default(),
        })
    }

    /// Largest body stored, bytes.
    pub fn max_item(&self) -> u64 {
        self.max_item
    }

    /// The entry for `key`, or `None` (absent, corrupt, slow, down: counted, never an error).
    pub async fn get(self: &Rc<Self>, key: &CacheKeyRef<'_>) -> Option<Arc<CachedObject>> {
        let rk = value::redis_key(&self.prefix, key);
        let counters = self
            .metrics
            .bucket(std::str::from_utf8(key.bucket).unwrap_or_default());
        let mut packed = Vec::with_capacity(rk.len() + 24);
        redis::cmd("GET").arg(&rk).write_packed_command(&mut packed);
        let deadline = Instant::now() + self.timeout;
        let reply = self.client.call(&rk, &packed, deadline).await;
        let found = match reply {
            Ok(Value::BulkString(v)) => match value::decode(Bytes::from(v), key) {
                Ok(obj) => Some(obj),
                Err(why) => {
                    self.metrics.redis.corrupt.inc();
                    tracing::warn!(bucket = key.bucket, reason = ?why, "corrupt Redis value; deleted");
                    self.delete(rk);
                    None
                }
            },
            Ok(Value::Nil) => None,
            Ok(_) => {
                self.metrics.redis.errors.inc();
                None
            }
            Err(Failure::Unavailable) => {
                self.metrics.redis.skipped.inc();
                None
            }
            Err(Failure::NoReply) => None,
        };
        if found.is_none() {
            counters.redis.misses.inc();
        }
        found.map(Arc::new)
    }

    /// Queue a SET of (`key`, `obj`) behind the response; whether it was queued. Refused:
    /// too large, body on disk only, node down, or [`FILL_QUEUE_BYTES`] in use (counted).
    pub fn insert(self: &Rc<Self>, key: &CacheKey, obj: &Arc<CachedObject>) -> bool {
        if obj.disk.is_some() || obj.len() > self.max_item {
            return false;
        }
        let rk = value::redis_key(&self.prefix, &key.as_ref_key());
        if !self.client.available(&rk) || self.queued.get() + obj.len() > FILL_QUEUE_BYTES {
            self.metrics.redis.queue_drops.inc();
            return false;
        }
        let v = value::encode(key, obj);
        let mut packed = Vec::with_capacity(v.len() + rk.len() + 64);
        redis::cmd("SET")
            .arg(&rk)
            .arg(&v)
            .arg("PX")
            .arg(self.ttl_ms)
            .write_packed_command(&mut packed);
        drop(v);
        let size = obj.len();
        self.queued.set(self.queued.get() + size);
        let tier = self.clone();
        let bucket = key.bucket().to_owned();
        monoio::spawn(async move {
            let deadline = Instant::now() + tier.timeout.max(Duration::from_millis(50)) * 8;
            let r = tier.client.call(&rk, &packed, deadline).await;
            tier.queued.set(tier.queued.get() - size);
            match r {
                Ok(Value::Okay) => tier.metrics.bucket(&bucket).redis.inserts.inc(),
                Ok(_) => tier.metrics.redis.errors.inc(),
                Err(Failure::Unavailable) => tier.metrics.redis.queue_drops.inc(),
                Err(Failure::NoReply) => {}
            }
        });
        true
    }

    /// Delete `key` in Redis (it no longer matches S3), behind the response.
    pub fn remove(self: &Rc<Self>, key: &CacheKey) {
        self.delete(value::redis_key(&self.prefix, &key.as_ref_key()));
    }

    fn delete(self: &Rc<Self>, rk: Vec<u8>) {
        let mut packed = Vec::with_capacity(rk.len() + 24);
        redis::cmd("UNLINK")
            .arg(&rk)
            .write_packed_command(&mut packed);
        let tier = self.clone();
        monoio::spawn(async move {
            let deadline = Instant::now() + tier.timeout * 4;
            let _ = tier.client.call(&rk, &packed, deadline).await;
        });
    }

    /// Nothing to do on a core: Redis keys are deleted once per node by the control plane
    /// ([`control::purge`]), and [`crate::cache::Tiered`] drops GETs in flight across a purge.
    pub fn purge(&self, _scope: &PurgeScope) -> usize {
        0
    }
}
