//! The admin listener on `admin.listen`: `GET /health`, `GET /ready`, `GET /metrics` and
//! `/admin/*` (reload, cache purge and stats).
//!
//! Where it runs: on its own control thread (`yatagarasu_runtime::spawn_control_thread`: an
//! unpinned thread with a small epoll monoio runtime), not on a shard. Scrapes, probes and
//! reloads then never take time from a core that serves data, the admin answers even while
//! every shard is saturated or draining, and blocking work (reading the config file on reload)
//! goes to that thread's own blocking pool. It reaches the shards only through the runtime's
//! control mailbox (purge, stats) and the shared config snapshot (reload); it reads the
//! per-shard metrics without touching the shards.
//!
//! The socket is bound with the standard library's `bind` (SO_REUSEADDR, no SO_REUSEPORT, so a
//! second process on the same port fails instead of silently taking half the scrapes), before
//! the shards start, so a bad `admin.listen` is a startup error. HTTP is the same codec as the
//! data plane (`http::server::serve`), with the data plane's limits.
//!
//! Access rules: `/health`, `/ready` and `/metrics` are open (they carry no secrets: labels are
//! bucket names, never keys or tokens). `/admin/*` requires `Authorization: Bearer
//! <admin.token>`, compared in constant time; with no token configured it is answered only to
//! loopback peers, and config validation refuses a non-loopback `admin.listen` without one.
//!
//! Not on the hot path. Cost: one thread; per request a route match and, for the cache
//! endpoints, one mailbox job per shard.

pub mod health;
pub mod probe;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::Method;
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use yatagarasu_runtime::{Control, Snapshot};

use crate::app::Reloader;
use crate::cache::stats::ShardCacheStats;
use crate::cache::PurgeScope;
use crate::config::Config;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::path::{decode_path, normalize_path, split_target};
use crate::http::request::RequestHead;
use crate::http::response::{DateCache, ResponseHead};
use crate::http::server::{
    request_id_for, serve, Conn, NeverDrains, Outcome, ServerSettings, Service,
};
use crate::http::small::{write_error, write_small, Answering, SmallBody};
use crate::metrics::Metrics;
use crate::pipeline::prepared::Prepared;
use crate::pipeline::Shard;
use health::Health;

/// Admin connections served at once; more are closed on accept.
pub const MAX_ADMIN_CONNECTIONS: usize = 256;

/// Bind the admin listener for `cfg.admin` (see the module docs for the socket options). Config
/// validation already refused a non-loopback `admin.listen` without `admin.token`.
///
/// Errors: the bind fails (address in use, permission).
pub fn bind(cfg: &Config) -> Result<std::net::TcpListener, String> {
    let addr = cfg.admin.listen;
    debug_assert!(cfg.admin.token.is_some() || addr.ip().is_loopback());
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("admin.listen: cannot bind {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("admin.listen: {e}"))?;
    Ok(listener)
}

/// What the admin thread needs.
pub struct AdminState {
    /// The live config (admin token, limits, bucket names).
    pub snapshot: Snapshot<Prepared>,
    /// The shards' mailboxes.
    pub control: Control<Shard>,
    /// Every shard's counters.
    pub metrics: Arc<Metrics>,
    /// Probe results.
    pub health: Arc<Health>,
    /// Reload entry point shared with SIGHUP.
    pub reloader: Arc<Reloader>,
    /// The Redis tier's settings, when it is on: purges delete there and are published.
    pub redis: Option<Arc<crate::cache::redis::RedisSettings>>,
    /// This node's name in purge messages.
    pub node_id: String,
}

/// Start the admin thread: accept on `listener` and run the readiness prober. The thread lives
/// as long as the process. Errors: the thread cannot be spawned.
pub fn start(
    listener: std::net::TcpListener,
    state: AdminState,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    yatagarasu_runtime::spawn_control_thread("admin", move || async move {
        monoio::spawn(probe::run(state.snapshot.clone(), state.health.clone()));
        // The process-wide JWKS fetcher lives here too, off the shards.
        monoio::spawn(crate::auth::fetcher::run(state.snapshot.clone()));
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener cannot be registered; admin API is down");
                return;
            }
        };
        let svc = Rc::new(AdminService {
            state,
            dates: DateCache::default(),
            open: std::cell::Cell::new(0),
        });
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if svc.open.get() >= MAX_ADMIN_CONNECTIONS {
                        continue; // dropping the stream closes it
                    }
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(serve(svc.clone(), NeverDrains, stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    monoio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

struct AdminService {
    state: AdminState,
    dates: DateCache,
    open: std::cell::Cell<usize>,
}

/// A response built by a route, written by the one small-response writer
/// ([`crate::http::small`]) with `Cache-Control: no-store`.
enum Reply {
    /// An answer with its own body: the JSON of `/health`, `/ready` (200 or 503), the cache
    /// endpoints and reload (including reload's 400 with the rejected config's errors), or the
    /// metrics exposition.
    Body {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// A JSON error of DESIGN section 5, its status from the one error table.
    Error(ProxyError),
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply::Body {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// A client error of `kind` (400, 401, 403, 404, 405).
    fn client(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error(ProxyError::client(kind, message))
    }

    fn status(&self) -> u16 {
        match self {
            Reply::Body { status, .. } => *status,
            Reply::Error(e) => e.status(),
        }
    }
}

impl Service for AdminService {
    fn settings(&self) -> ServerSettings {
        self.state.snapshot.load().settings
    }

    fn dates(&self) -> &DateCache {
        &self.dates
    }

    fn connection_opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    fn connection_closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
    }

    async fn call(&self, head: &RequestHead, conn: &mut Conn) -> Outcome {
        let request_id = request_id_for(head);
        let reply = self.route(head, conn.peer, &request_id).await;
        let to = Answering {
            request_id: &request_id,
            version: head.version,
            head_request: head.method == Method::HEAD,
        };
        let no_store = |h: &mut ResponseHead<'_>| {
            h.header("Cache-Control", b"no-store");
        };
        let written = match &reply {
            Reply::Body {
                status,
                content_type,
                body,
            } => {
                let small = SmallBody {
                    content_type: Some(content_type.as_bytes()),
                    bytes: body.as_bytes(),
                };
                write_small(conn, &self.dates, to, *status, small, no_store).await
            }
            Reply::Error(e) => write_error(conn, &self.dates, to, e, no_store).await,
        };
        let ok = written.is_ok();
        tracing::info!(
            target: "yatagarasu::admin",
            request_id = %request_id,
            client = %conn.peer.ip(),
            method = %head.method,
            path = %split_target(&head.target).0,
            status = reply.status(),
        );
        Outcome {
            keep_alive: ok && conn.keep_alive,
        }
    }
}

impl AdminService {
    async fn route(&self, head: &RequestHead, peer: SocketAddr, request_id: &str) -> Reply {
        let (path, _) = split_target(&head.target);
        let read = head.method == Method::GET || head.method == Method::HEAD;
        match path {
            "/health" | "/ready" | "/metrics" if !read => method_not_allowed("GET, HEAD"),
            "/health" => Reply::json(200, self.state.health.health_json()),
            "/ready" => {
                let (status, body) = self
                    .state
                    .health
                    .ready_json(self.state.control.is_draining());
                Reply::json(status, body)
            }
            "/metrics" => Reply::Body {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: self.state.metrics.render(),
            },
            p if p == "/admin" || p.starts_with("/admin/") => {
                if let Err(reply) = self.authorize(head, peer) {
                    return reply;
                }
                self.admin(head, &p["/admin".len()..], request_id).await
            }
            _ => Reply::client(ErrorKind::NotFound, "no such admin endpoint"),
        }
    }

    /// `/admin/*` access check (module docs).
    fn authorize(&self, head: &RequestHead, peer: SocketAddr) -> Result<(), Reply> {
        let snapshot = self.state.snapshot.load();
        let Some(token) = &snapshot.config.admin.token else {
            if peer.ip().is_loopback() || is_mapped_loopback(peer) {
                return Ok(());
            }
            return Err(Reply::client(
                ErrorKind::Forbidden,
                "admin.token is not set: the admin API answers loopback clients only",
            ));
        };
        let presented = head
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        match presented {
            Some(p) if bool::from(p.as_bytes().ct_eq(token.expose().as_bytes())) => Ok(()),
            _ => Err(Reply::Error(
                ProxyError::client(
                    ErrorKind::Unauthorized,
                    "admin endpoints need Authorization: Bearer <admin.token>",
                )
                .with_header("WWW-Authenticate", "Bearer realm=\"yatagarasu-admin\""),
            )),
        }
    }

    /// `/admin/*` after authorization; `rest` starts after `/admin`.
    async fn admin(&self, head: &RequestHead, rest: &str, request_id: &str) -> Reply {
        let post = head.method == Method::POST;
        let get = head.method == Method::GET || head.method == Method::HEAD;
        if rest == "/reload" {
            if !post {
                return method_not_allowed("POST");
            }
            return self.reload(request_id).await;
        }
        if let Some(scope) = rest.strip_prefix("/cache/purge") {
            if !post {
                return method_not_allowed("POST");
            }
            return match self.purge_scope(scope) {
                Ok(scope) => self.purge(scope).await,
                Err(reply) => reply,
            };
        }
        if let Some(scope) = rest.strip_prefix("/cache/stats") {
            if !get {
                return method_not_allowed("GET, HEAD");
            }
            let bucket = match scope {
                "" | "/" => None,
                b => match self.known_bucket(&b[1..]) {
                    Ok(name) => Some(name),
                    Err(reply) => return reply,
                },
            };
            return self.stats(bucket).await;
        }
        Reply::client(ErrorKind::NotFound, "no such admin endpoint")
    }

    /// Re-read the config file off this thread's event loop and publish it (same path as SIGHUP).
    async fn reload(&self, request_id: &str) -> Reply {
        let reloader = self.state.reloader.clone();
        let result = monoio::spawn_blocking(move || reloader.reload("admin API")).await;
        match result {
            Ok(Ok(generation)) => Reply::json(
                200,
                json!({"status": "reloaded", "config_generation": generation}).to_string(),
            ),
            Ok(Err(errors)) => Reply::json(
                ErrorKind::BadRequest.status(),
                json!({
                    "error": {
                        "status": 400,
                        "message": "reload rejected; the running config stays in place",
                        "request_id": request_id,
                    },
                    "errors": errors,
                    "config_generation": self.state.snapshot.generation(),
                })
                .to_string(),
            ),
            Err(_) => Reply::Error(ProxyError::internal("reload worker failed")),
        }
    }

    /// `""` -> all, `/{bucket}` -> one bucket, `/{bucket}/{key...}` -> one object. The path is
    /// normalised and the key percent-decoded by the same functions as a data-plane path
    /// (`normalize_path`, then `decode_path`), so `/public//dir//file.txt` purges the entry that
    /// `GET /public//dir//file.txt` filled.
    fn purge_scope(&self, scope: &str) -> Result<PurgeScope, Reply> {
        if matches!(scope, "" | "/") {
            return Ok(PurgeScope::All);
        }
        let normalized = normalize_path(scope)
            .map_err(|e| Reply::client(e.kind(), format!("invalid purge path: {e}")))?;
        let rest = &normalized[1..];
        let (bucket, key) = match rest.split_once('/') {
            Some((b, k)) => (b, Some(k)),
            None => (rest, None),
        };
        let bucket = self.known_bucket(bucket)?;
        match key {
            None | Some("") => Ok(PurgeScope::Bucket(bucket)),
            Some(k) => {
                let key = decode_path(k)
                    .map_err(|e| Reply::client(e.kind(), format!("invalid object key: {e}")))?;
                Ok(PurgeScope::Object(bucket, key.into_owned()))
            }
        }
    }

    /// The config bucket named `name`, or a 404 reply.
    fn known_bucket(&self, name: &str) -> Result<String, Reply> {
        let snapshot = self.state.snapshot.load();
        match snapshot.config.bucket(name) {
            Some(b) => Ok(b.name.clone()),
            None => Err(Reply::client(
                ErrorKind::NotFound,
                format!("no bucket named {name:?} in the config"),
            )),
        }
    }

    async fn purge(&self, scope: PurgeScope) -> Reply {
        // Redis first (and the other nodes told), so no core refills from a Redis copy this
        // purge is about to drop locally.
        let redis = self.purge_redis(&scope).await;
        let scope = Arc::new(scope);
        let job_scope = scope.clone();
        let l1_scope = scope.clone();
        // Two phases: every owner partition, then every L1 (an L1 refilled between the phases
        // from an owner not yet purged is emptied by the second).
        let purged = match self
            .state
            .control
            .broadcast_async(move |shard: &Shard| shard.purge(&job_scope))
            .await
        {
            Ok(per_shard) => self
                .state
                .control
                .broadcast_async(move |shard: &Shard| shard.purge_l1(&l1_scope))
                .await
                .map(|_| per_shard),
            Err(e) => Err(e),
        };
        match purged {
            Ok(per_shard) => {
                let total: usize = per_shard.iter().sum();
                let (bucket, key) = match &*scope {
                    PurgeScope::All => (None, None),
                    PurgeScope::Bucket(b) => (Some(b.as_str()), None),
                    PurgeScope::Object(b, k) => {
                        (Some(b.as_str()), Some(String::from_utf8_lossy(k)))
                    }
                };
                let mut body = json!({
                    "purged": total,
                    "per_shard": per_shard,
                    "bucket": bucket,
                    "key": key,
                });
                match redis {
                    None => {}
                    Some(Ok(n)) => body["redis_deleted"] = json!(n),
                    Some(Err(e)) => {
                        body["redis_deleted"] = serde_json::Value::Null;
                        body["redis_error"] = json!(e);
                    }
                }
                Reply::json(200, body.to_string())
            }
            Err(e) => shards_unavailable(e),
        }
    }

    /// Delete what `scope` names in Redis and publish it to the other nodes, on a helper
    /// thread (the `redis` crate's blocking client; the admin thread keeps serving). `None`:
    /// no Redis tier; `Err`: Redis could not be reached (the local purge still runs; other
    /// nodes resynchronise when their subscription breaks, see `cache::redis::control`).
    async fn purge_redis(&self, scope: &PurgeScope) -> Option<Result<u64, String>> {
        let settings = self.state.redis.clone()?;
        let (tx, rx) = futures_channel::oneshot::channel();
        let (scope, origin) = (scope.clone(), self.state.node_id.clone());
        let spawned = std::thread::Builder::new()
            .name("yata-redis-purge".into())
            .spawn(move || {
                let _ = tx.send(crate::cache::redis::control::purge(
                    &settings, &scope, &origin,
                ));
            });
        if let Err(e) = spawned {
            return Some(Err(format!("cannot start the purge thread: {e}")));
        }
        let r = rx
            .await
            .unwrap_or_else(|_| Err("the purge thread ended without an answer".into()));
        if let Err(e) = &r {
            tracing::warn!(error = %e, "purge not applied in Redis");
        }
        Some(r)
    }

    async fn stats(&self, bucket: Option<String>) -> Reply {
        let wanted = bucket.clone();
        match self
            .state
            .control
            .broadcast_async(move |shard: &Shard| shard.cache_stats(wanted.as_deref()))
            .await
        {
            Ok(shards) => Reply::json(200, stats_json(bucket.as_deref(), &shards)),
            Err(e) => shards_unavailable(e),
        }
    }
}

/// 503 with `Retry-After: 1` when a shard did not answer a control job (draining or stopped).
fn shards_unavailable(e: impl std::fmt::Display) -> Reply {
    Reply::Error(ProxyError::unavailable(
        Side::Internal,
        1,
        format!("not every shard answered: {e}"),
    ))
}

/// Totals over shards (memory; `disk` when the disk tier is on, else null) plus the
/// per-shard detail.
fn stats_json(bucket: Option<&str>, shards: &[ShardCacheStats]) -> String {
    #[derive(Serialize, Default)]
    struct Totals {
        items: u64,
        bytes: u64,
        capacity_bytes: u64,
        hits: u64,
        misses: u64,
        bypasses: u64,
        evictions: u64,
        inserts: u64,
    }
    let mut t = Totals::default();
    let mut disk: Option<Totals> = None;
    for s in shards {
        t.capacity_bytes += s.capacity_bytes;
        if let Some(cap) = s.disk_capacity_bytes {
            disk.get_or_insert_with(Totals::default).capacity_bytes += cap;
        }
        for l in s.buckets.iter().filter_map(|b| b.disk.as_ref()) {
            let d = disk.get_or_insert_with(Totals::default);
            d.items += l.items;
            d.bytes += l.bytes;
            d.hits += l.hits;
            d.misses += l.misses;
            d.evictions += l.evictions;
            d.inserts += l.inserts;
        }
        for b in &s.buckets {
            t.items += b.items;
            t.bytes += b.bytes;
            t.hits += b.hits;
            t.misses += b.misses;
            t.bypasses += b.bypasses;
            t.evictions += b.evictions;
            t.inserts += b.inserts;
        }
    }
    json!({
        "bucket": bucket,
        "layer": "memory",
        "totals": t,
        "disk": disk,
        "shards": shards,
    })
    .to_string()
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Reply::Error(
        ProxyError::client(
            ErrorKind::MethodNotAllowed,
            "method not allowed on this endpoint",
        )
        .with_header("Allow", allow),
    )
}

fn is_mapped_loopback(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        _ => false,
    }
}
