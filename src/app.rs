//! Wiring between the config, the runtime crate and the proxy: config -> runtime options, the
//! shared snapshot, and the per-shard state factory. Used by `main` and by in-process tests.
//!
//! Not on the hot path: runs at startup (and, later, on reload).

use std::time::Duration;

use yatagarasu_runtime as runtime;

use crate::config::{self, Config};
use crate::proxy::prepared::Prepared;
use crate::proxy::Shard;

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

/// Start every shard serving the proxy for `cfg`. Errors: TLS material that cannot be loaded
/// (one line per bucket), or the runtime's start error (bind, CPU ids, threads).
pub fn start(cfg: Config) -> Result<(runtime::Server<Shard>, runtime::Snapshot<Prepared>), String> {
    let options = runtime_options(&cfg);
    let prepared = Prepared::new(cfg).map_err(|errs| errs.join("\n"))?;
    let snapshot = runtime::Snapshot::new(prepared);
    let for_shards = snapshot.clone();
    let server = runtime::start(
        options,
        move |ctx: &runtime::ShardContext| Shard::new(for_shards.clone(), ctx.clone()),
        crate::http::server::serve,
    )
    .map_err(|e| e.to_string())?;
    Ok((server, snapshot))
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
    let prepared = Prepared::new(cfg)?;
    Ok(snapshot.store(prepared))
}
