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
use crate::error::json_body;
use crate::http::path::{decode_path, normalize_path, split_target};
use crate::http::request::RequestHead;
use crate::http::response::{DateCache, ResponseHead};
use crate::http::server::{
    request_id_for, serve, Conn, NeverDrains, Outcome, ServerSettings, Service,
};
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

/// A response built by a route: status, content type, body, extra header.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: Option<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
            extra: None,
        }
    }

    fn error(status: u16, message: &str, request_id: &str) -> Reply {
        let body = String::from_utf8_lossy(&json_body(status, message, request_id)).into_owned();
        Reply::json(status, body)
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
        let mut h = ResponseHead::new(&mut conn.wbuf, reply.status);
        h.header("Date", &self.dates.now())
            .header("Content-Type", reply.content_type.as_bytes())
            .header("Cache-Control", b"no-store")
            .header_u64("Content-Length", reply.body.len() as u64)
            .header("X-Request-Id", request_id.as_bytes());
        if let Some((name, value)) = &reply.extra {
            h.header(name, value.as_bytes());
        }
        h.connection(head.version, conn.keep_alive);
        h.finish();
        if head.method != Method::HEAD {
            conn.wbuf.extend_from_slice(reply.body.as_bytes());
        }
        let ok = conn.flush().await.is_ok();
        tracing::info!(
            target: "yatagarasu::admin",
            request_id = %request_id,
            client = %conn.peer.ip(),
            method = %head.method,
            path = %split_target(&head.target).0,
            status = reply.status,
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
            "/health" | "/ready" | "/metrics" if !read => {
                method_not_allowed("GET, HEAD", request_id)
            }
            "/health" => Reply::json(200, self.state.health.health_json()),
            "/ready" => {
                let (status, body) = self
                    .state
                    .health
                    .ready_json(self.state.control.is_draining());
                Reply::json(status, body)
            }
            "/metrics" => Reply {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: self.state.metrics.render(),
                extra: None,
            },
            p if p == "/admin" || p.starts_with("/admin/") => {
                if let Err(reply) = self.authorize(head, peer, request_id) {
                    return reply;
                }
                self.admin(head, &p["/admin".len()..], request_id).await
            }
            _ => Reply::error(404, "no such admin endpoint", request_id),
        }
    }

    /// `/admin/*` access check (module docs).
    fn authorize(
        &self,
        head: &RequestHead,
        peer: SocketAddr,
        request_id: &str,
    ) -> Result<(), Reply> {
        let snapshot = self.state.snapshot.load();
        let Some(token) = &snapshot.config.admin.token else {
            if peer.ip().is_loopback() || is_mapped_loopback(peer) {
                return Ok(());
            }
            return Err(Reply::error(
                403,
                "admin.token is not set: the admin API answers loopback clients only",
                request_id,
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
            _ => {
                let mut r = Reply::error(
                    401,
                    "admin endpoints need Authorization: Bearer <admin.token>",
                    request_id,
                );
                r.extra = Some((
                    "WWW-Authenticate",
                    "Bearer realm=\"yatagarasu-admin\"".to_owned(),
                ));
                Err(r)
            }
        }
    }

    /// `/admin/*` after authorization; `rest` starts after `/admin`.
    async fn admin(&self, head: &RequestHead, rest: &str, request_id: &str) -> Reply {
        let post = head.method == Method::POST;
        let get = head.method == Method::GET || head.method == Method::HEAD;
        if rest == "/reload" {
            if !post {
                return method_not_allowed("POST", request_id);
            }
            return self.reload(request_id).await;
        }
        if let Some(scope) = rest.strip_prefix("/cache/purge") {
            if !post {
                return method_not_allowed("POST", request_id);
            }
            return match self.purge_scope(scope, request_id) {
                Ok(scope) => self.purge(scope, request_id).await,
                Err(reply) => reply,
            };
        }
        if let Some(scope) = rest.strip_prefix("/cache/stats") {
            if !get {
                return method_not_allowed("GET, HEAD", request_id);
            }
            let bucket = match scope {
                "" | "/" => None,
                b => match self.known_bucket(&b[1..], request_id) {
                    Ok(name) => Some(name),
                    Err(reply) => return reply,
                },
            };
            return self.stats(bucket, request_id).await;
        }
        Reply::error(404, "no such admin endpoint", request_id)
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
                400,
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
            Err(_) => Reply::error(500, "reload worker failed", request_id),
        }
    }

    /// `""` -> all, `/{bucket}` -> one bucket, `/{bucket}/{key...}` -> one object. The path is
    /// normalised and the key percent-decoded by the same functions as a data-plane path
    /// (`normalize_path`, then `decode_path`), so `/public//dir//file.txt` purges the entry that
    /// `GET /public//dir//file.txt` filled.
    fn purge_scope(&self, scope: &str, request_id: &str) -> Result<PurgeScope, Reply> {
        if matches!(scope, "" | "/") {
            return Ok(PurgeScope::All);
        }
        let normalized = normalize_path(scope)
            .map_err(|e| Reply::error(400, &format!("invalid purge path: {e}"), request_id))?;
        let rest = &normalized[1..];
        let (bucket, key) = match rest.split_once('/') {
            Some((b, k)) => (b, Some(k)),
            None => (rest, None),
        };
        let bucket = self.known_bucket(bucket, request_id)?;
        match key {
            None | Some("") => Ok(PurgeScope::Bucket(bucket)),
            Some(k) => {
                let key = decode_path(k).map_err(|e| {
                    Reply::error(400, &format!("invalid object key: {e}"), request_id)
                })?;
                Ok(PurgeScope::Object(bucket, key.into_owned()))
            }
        }
    }

    /// The config bucket named `name`, or a 404 reply.
    fn known_bucket(&self, name: &str, request_id: &str) -> Result<String, Reply> {
        let snapshot = self.state.snapshot.load();
        match snapshot.config.bucket(name) {
            Some(b) => Ok(b.name.clone()),
            None => Err(Reply::error(
                404,
                &format!("no bucket named {name:?} in the config"),
                request_id,
            )),
        }
    }

    async fn purge(&self, scope: PurgeScope, request_id: &str) -> Reply {
        let scope = Arc::new(scope);
        let job_scope = scope.clone();
        match self
            .state
            .control
            .broadcast_async(move |shard: &Shard| shard.purge(&job_scope))
            .await
        {
            Ok(per_shard) => {
                let total: usize = per_shard.iter().sum();
                let (bucket, key) = match &*scope {
                    PurgeScope::All => (None, None),
                    PurgeScope::Bucket(b) => (Some(b.as_str()), None),
                    PurgeScope::Object(b, k) => {
                        (Some(b.as_str()), Some(String::from_utf8_lossy(k)))
                    }
                };
                Reply::json(
                    200,
                    json!({
                        "purged": total,
                        "per_shard": per_shard,
                        "bucket": bucket,
                        "key": key,
                    })
                    .to_string(),
                )
            }
            Err(e) => Reply::error(503, &format!("not every shard answered: {e}"), request_id),
        }
    }

    async fn stats(&self, bucket: Option<String>, request_id: &str) -> Reply {
        let wanted = bucket.clone();
        match self
            .state
            .control
            .broadcast_async(move |shard: &Shard| shard.cache_stats(wanted.as_deref()))
            .await
        {
            Ok(shards) => Reply::json(200, stats_json(bucket.as_deref(), &shards)),
            Err(e) => Reply::error(503, &format!("not every shard answered: {e}"), request_id),
        }
    }
}

/// Totals over shards plus the per-shard detail.
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
    for s in shards {
        t.capacity_bytes += s.capacity_bytes;
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
        "shards": shards,
    })
    .to_string()
}

fn method_not_allowed(allow: &'static str, request_id: &str) -> Reply {
    let mut r = Reply::error(405, "method not allowed on this endpoint", request_id);
    r.extra = Some(("Allow", allow.to_owned()));
    r
}

fn is_mapped_loopback(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        _ => false,
    }
}
