//! Log setup: `tracing-subscriber` in JSON or text per `logging.format`, filtered at
//! `logging.level` (overridable with `RUST_LOG`), written through `tracing-appender`'s
//! non-blocking writer so a shard never blocks on stdout.
//!
//! Not on the hot path except the access log line (one formatted line per request, handed to the
//! writer thread through a bounded channel; lines are dropped, not waited for, when it is full).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel, LoggingConfig};

/// Install the global subscriber. Keep the returned guard alive for the life of the process: it
/// flushes buffered lines when dropped.
pub fn init(cfg: &LoggingConfig) -> WorkerGuard {
    let level = match cfg.level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_thread_names(true);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("yatagarasu: logging already initialised: {e}");
    }
    guard
}
