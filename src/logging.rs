//! Log setup: `tracing-subscriber` in JSON or text per `logging.format`, filtered at
//! `logging.level` (overridable with `RUST_LOG`), written through `tracing-appender`'s
//! non-blocking writer so a shard never blocks on stdout.
//!
//! Not on the hot path except the access log line (one formatted line per request, handed to the
//! writer thread through a bounded channel; lines are dropped, not waited for, when it is full).
//! The level sits behind `tracing-subscriber`'s reload layer so a config reload can change it;
//! that adds one uncontended-in-practice read lock per event, next to the channel send the line
//! costs anyway.

use std::sync::OnceLock;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogLevel, LoggingConfig};

/// Handle that swaps the level filter on reload (`None` when `RUST_LOG` overrides the config).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Install the global subscriber. Keep the returned guard alive for the life of the process: it
/// flushes buffered lines when dropped. `logging.level` can change later through
/// [`set_level`]; `logging.format` is fixed for the life of the process.
pub fn init(cfg: &LoggingConfig) -> WorkerGuard {
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(cfg.level.as_str()));
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stdout());
    // Colour only on a terminal: escape codes in a file or a journal are noise (and `NO_COLOR`
    // turns them off there too, https://no-color.org).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_thread_names(true);
    let fmt = match cfg.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
    {
        Ok(()) if !overridden => {
            let _ = LEVEL.set(handle);
        }
        Ok(()) => {}
        Err(e) => eprintln!("yatagarasu: logging already initialised: {e}"),
    }
    guard
}

/// Apply a reloaded `logging.level` (no-op when `RUST_LOG` set the filter at startup).
pub fn set_level(level: LogLevel) {
    if let Some(handle) = LEVEL.get() {
        if let Err(e) = handle.reload(EnvFilter::new(level.as_str())) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}
