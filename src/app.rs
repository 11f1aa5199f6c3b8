//! Wiring between the config, the runtime crate and the proxy: config -> runtime options, the
//! shared snapshot, and the per-shard state factory. Used by `main` and by in-process tests.
//!
//! Not on the hot path: runs at startup and on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
// The reload lock serialises reloads on the signal and admin threads, never on a shard.
#[allow(clippy::disallowed_types)]
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use yatagarasu_runtime as runtime;

use crate::admin::{self, health::Health};
use crate::cache::redis::{control as redis_control, RedisSettings};
use crate::cache::PurgeScope;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::pipeline::prepared::Prepared;
use crate::pipeline::{Services, Shard};

/// Runtime options for `cfg.server`.
pub fn runtime_options(cfg: &Config) -> runtime::Options {
    let s = &cfg.server;
    runtime::Options {
        listen: s.listen,
        shards: match s.shards {
            config::Shards::Auto => runtime::Shards::Auto,
            config::Shards::Count(n) => runtime::Shards::Count(n),
        },
        cpu_affinity: match &s.cpu_affinity {
            config::CpuAffinity::Auto => runtime::CpuAffinity::Auto,
            config::CpuAffinity::None => runtime::CpuAffinity::None,
            config::CpuAffinity::List(l) => runtime::CpuAffinity::List(l.clone()),
        },
        io_uring_entries: s.io_uring_entries,
        shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        max_connections_per_shard: s.max_connections_per_shard,
        // MONOIO_FORCE_LEGACY_DRIVER=1 is honoured by the runtime itself.
        ..runtime::Options::default()
    }
}

/// A started proxy: the shards, the shared config snapshot, the reload entry point, the
/// admin listener's address and the process-wide services.
pub struct Running {
    /// The shards.
    pub server: runtime::Server<Shard>,
    /// The config every shard reads.
    pub snapshot: runtime::Snapshot<Prepared>,
    /// Reload entry point (SIGHUP and `POST /admin/reload`).
    pub reloader: Arc<Reloader>,
    /// Metrics and readiness shared by the shards and the admin thread.
    pub services: Services,
    /// Where the admin listener is bound (port 0 resolved).
    pub admin_addr: SocketAddr,
    /// Set on drop: ends the Redis purge subscriber thread (when the Redis tier is on).
    pub redis_stop: StopOnDrop,
}

/// Sets its flag when dropped (the Redis purge subscriber checks it every second).
#[derive(Default)]
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Purge `scope` from every shard's own tiers (memory, disk; then the L1s), as the admin purge
/// does, from a non-shard thread (the Redis purge subscriber). Blocking.
fn purge_local(control: &runtime::Control<Shard>, scope: PurgeScope) {
    let scope = Arc::new(scope);
    let (owners, l1) = (scope.clone(), scope.clone());
    let r = control
        .broadcast(move |shard: &Shard| shard.purge(&owners))
        .and_then(|_| control.broadcast(move |shard: &Shard| shard.purge_l1(&l1)));
    if let Err(e) = r {
        tracing::warn!(error = %e, "a purge from another node did not reach every shard");
    }
}

/// Start the proxy for `cfg` read from `path`: bind the admin listener, start every shard,
/// then the admin thread (listener + readiness probes).
///
/// Errors: TLS material that cannot be loaded (one line per bucket), an admin listener that
/// may not or cannot be bound ([`admin::bind`]), the runtime's start error (bind, CPU ids,
/// threads), or the admin thread not starting.
pub fn start(cfg: Config, path: &Path) -> Result<Running, String> {
    let options = runtime_options(&cfg);
    let admin_listener = admin::bind(&cfg)?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| format!("admin.listen: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(
        metrics.clone(),
        cfg.buckets.iter().map(|b| b.name.clone()),
    ));
    let mut services = Services::new(metrics.clone(), health.clone());
    let shards = runtime::shard_count(&options).map_err(|e| e.to_string())?;
    services.disk = crate::cache::disk::node::open(&cfg.cache.disk, shards)?.map(|node| {
        for (i, s) in node.shards.iter().enumerate() {
            tracing::info!(
                shard = i,
                entries = s.entries.len(),
                scan_ms = s.scan_time.as_millis() as u64,
                region_mib = s.geometry.region_bytes >> 20,
                regions = s.geometry.regions,
                direct_io = s.direct,
                dir = %s.dir.display(),
                "disk tier shard opened"
            );
        }
        Arc::new(node)
    });
    services.redis = RedisSettings::from_config(&cfg.cache.redis)?.map(Arc::new);
    let prepared = Prepared::new(cfg).map_err(|errs| errs.join("\n"))?;
    let snapshot = runtime::Snapshot::new(prepared);
    metrics
        .config_generation
        .store(snapshot.generation(), Ordering::Relaxed);
    let for_shards = snapshot.clone();
    let shard_services = services.clone();
    let server = runtime::start(
        options,
        move |ctx: &runtime::ShardContext| {
            Shard::new(for_shards.clone(), ctx.clone(), &shard_services)
        },
        crate::http::server::serve,
    )
    .map_err(|e| e.to_string())?;
    // This node's name in purge messages (so it skips its own).
    let node_id = uuid::Uuid::new_v4().to_string();
    let reloader = Arc::new(Reloader {
        path: path.to_owned(),
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        #[allow(clippy::disallowed_types)] // reloads are serialised off the shards
        lock: Mutex::new(()),
        redis: services.redis.clone().map(|s| (s, node_id.clone())),
    });
    let redis_stop = StopOnDrop::default();
    if let Some(settings) = &services.redis {
        let control = server.control();
        redis_control::subscribe(
            RedisSettings::clone(settings),
            node_id.clone(),
            move |scope| purge_local(&control, scope),
            redis_stop.0.clone(),
        )
        .map_err(|e| format!("cannot start the Redis purge subscriber thread: {e}"))?;
    }
    admin::start(
        admin_listener,
        admin::AdminState {
            snapshot: snapshot.clone(),
            control: server.control(),
            metrics,
            health,
            reloader: reloader.clone(),
            redis: services.redis.clone(),
            node_id,
        },
    )
    .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    Ok(Running {
        server,
        snapshot,
        reloader,
        services,
        admin_addr,
        redis_stop,
    })
}

/// The one reload path, shared by SIGHUP and `POST /admin/reload`: serialised (one reload at a
/// time), announced to systemd (`RELOADING=1`, then `READY=1`), counted in the metrics
/// (`config_reloads_total{result}`, `config_generation`) and logged.
pub struct Reloader {
    path: PathBuf,
    snapshot: runtime::Snapshot<Prepared>,
    metrics: Arc<Metrics>,
    #[allow(clippy::disallowed_types)] // taken by reloads only, off the shards
    lock: Mutex<()>,
    /// The Redis tier's settings and this node's id: a reload that removes a bucket or points
    /// it at other S3 settings purges that bucket in Redis too (and tells the other nodes).
    redis: Option<(Arc<RedisSettings>, String)>,
}

impl Reloader {
    /// Reload from the config file ([`reload`]); `source` names the trigger in the log
    /// (`SIGHUP`, `admin API`). Blocking: call it off the shards.
    pub fn reload(&self, source: &str) -> Result<u64, Vec<String>> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        runtime::notify_reloading();
        let before = self.snapshot.load_full();
        let result = reload(&self.path, &self.snapshot);
        match &result {
            Ok(generation) => {
                self.purge_repointed_in_redis(&before.config, &self.snapshot.load().config);
                self.metrics
                    .config_generation
                    .store(*generation, Ordering::Relaxed);
                self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(source, config_generation = generation, "config reloaded");
            }
            Err(errors) => {
                self.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    source,
                    errors = %errors.join("; "),
                    "config reload rejected; the running config stays in place"
                );
            }
        }
        runtime::notify_ready();
        result
    }
}

impl Reloader {
    /// Purge in Redis (on a helper thread) every bucket of `old` that `new` removed or points
    /// at other S3 settings: its Redis values no longer match S3, and the cores only drop their
    /// own copies. The purge is published, so nodes not reloaded yet drop theirs too.
    fn purge_repointed_in_redis(&self, old: &Config, new: &Config) {
        let Some((settings, origin)) = &self.redis else {
            return;
        };
        let stale: Vec<String> = old
            .buckets
            .iter()
            .filter(|b| {
                new.bucket(&b.name)
                    .is_none_or(|n| !n.s3.same_objects(&b.s3))
            })
            .map(|b| b.name.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        let (settings, origin) = (settings.clone(), origin.clone());
        let spawned = std::thread::Builder::new()
            .name("yata-redis-purge".into())
            .spawn(move || {
                for bucket in stale {
                    let scope = PurgeScope::Bucket(bucket.clone());
                    match redis_control::purge(&settings, &scope, &origin) {
                        Ok(n) => tracing::info!(bucket, deleted = n, "reload re-pointed or removed a bucket; its Redis entries are purged"),
                        Err(e) => tracing::warn!(bucket, error = %e, "reload re-pointed or removed a bucket; its Redis entries could not be purged (purge it once Redis is back)"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the Redis purge thread after a reload");
        }
    }
}

/// Re-read `path`, substitute, validate and publish it to every shard (DESIGN section 6, hot
/// reload). Requests in flight keep the snapshot they started with; new requests see the new
/// one. Returns the new config generation.
///
/// Errors (the running config stays in place): every validation error with its path, TLS
/// material that cannot be loaded, or the restart-only keys that changed (`server.listen`,
/// `server.shards`, `server.cpu_affinity`, `server.io_uring_entries`, `admin.listen`).
/// Blocking (reads files): call it from the signal thread or the admin thread, never a shard.
pub fn reload(
    path: &std::path::Path,
    snapshot: &runtime::Snapshot<Prepared>,
) -> Result<u64, Vec<String>> {
    let cfg = config::load_file(path).map_err(|errors| {
        errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
    })?;
    let restart = snapshot.load().config.restart_only_changes(&cfg);
    if !restart.is_empty() {
        return Err(restart
            .into_iter()
            .map(|key| format!("{key}: changing it needs a restart; reload rejected"))
            .collect());
    }
    let running = snapshot.load();
    let later = running.config.startup_only_changes(&cfg);
    if !later.is_empty() {
        tracing::warn!(
            keys = %later.join(", "),
            "these changes are accepted but take effect at the next restart"
        );
    }
    let level = (running.config.logging.level != cfg.logging.level).then_some(cfg.logging.level);
    drop(running);
    let prepared = Prepared::new(cfg)?;
    let generation = snapshot.store(prepared);
    if let Some(level) = level {
        crate::logging::set_level(level);
    }
    Ok(generation)
}
