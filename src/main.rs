//! The `yatagarasu` binary: parse arguments, load and validate the config, start the shards,
//! wait for a drain, exit with a status code. Kept short on purpose; the work is in the library.
//!
//! Exit codes: 0 clean shutdown or valid `--check`; 1 invalid config; 2 startup failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs before `main` and before the Rust runtime's first allocation, so no thread faults in a
/// huge page of the allocator's arena (idle RSS; reasons in the runtime crate's `memory.rs`).
#[used]
#[link_section = ".init_array"]
static THP_POLICY: extern "C" fn() = {
    extern "C" fn apply() {
        yatagarasu_runtime::disable_transparent_huge_pages_unless_requested();
    }
    apply
};

/// Thread-per-core io_uring S3 proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of the YAML config file (see config.yaml for every key).
    #[arg(long, short, default_value = "config.yaml")]
    config: PathBuf,
    /// Validate the config, print every error, and exit 0 (valid) or 1 (invalid).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match yatagarasu::config::load_file(&args.config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{}: invalid config:\n{errors}", args.config.display());
            return ExitCode::from(1);
        }
    };
    if args.check {
        if cfg.cache.disk.enabled {
            let options = yatagarasu::app::runtime_options(&cfg);
            let shards = yatagarasu_runtime::shard_count(&options).unwrap_or(1);
            if let Err(e) = yatagarasu::cache::disk::node::check(&cfg.cache.disk, shards) {
                eprintln!("{}: invalid config:\n{e}", args.config.display());
                return ExitCode::from(1);
            }
        }
        println!(
            "{}: ok ({} buckets)",
            args.config.display(),
            cfg.buckets.len()
        );
        return ExitCode::SUCCESS;
    }
    let _log_guard = yatagarasu::logging::init(&cfg.logging);
    let running = match yatagarasu::app::start(cfg, &args.config) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("yatagarasu: startup failed: {e}");
            return ExitCode::from(2);
        }
    };
    let server = running.server;
    let drivers: Vec<String> = server
        .shards()
        .iter()
        .map(|s| s.driver.to_string())
        .collect();
    let reloader = running.reloader;
    let on_reload = move || {
        let _ = reloader.reload("SIGHUP");
    };
    if let Err(e) = yatagarasu_runtime::install_signal_handlers(&server, on_reload) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return ExitCode::from(2);
    }
    // Announced only once SIGHUP and SIGTERM are handled: a supervisor (or a test) that signals
    // right after this line must not hit the default action.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %server.local_addr(),
        admin = %running.admin_addr,
        shards = server.shards().len(),
        drivers = %drivers.join(","),
        "yatagarasu listening"
    );
    yatagarasu_runtime::notify_ready();
    match server.wait() {
        Ok(()) => {
            tracing::info!("drained, exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "shard failure");
            ExitCode::from(2)
        }
    }
}
