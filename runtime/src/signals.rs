//! SIGTERM/SIGINT -> drain, a second one -> stop now, SIGHUP -> reload callback, on one
//! dedicated signal thread (signal-hook's self-pipe iterator).
//!
//! Cold path. Costs one thread blocked in `read(2)` on a pipe, and nothing on the shards:
//! the signal thread talks to them through the phase channels, and the reload callback
//! runs on the signal thread (it should publish a new `Snapshot` and/or use
//! `Control::broadcast`; it must not call `Server::wait`). The thread ends when the
//! server is waited for or dropped.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, PoisonError},
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{
    error::RuntimeError,
    mailbox::{Phase, SignalThread},
    Server,
};

/// Installs SIGTERM/SIGINT (drain, like `Server::shutdown()`; a second one while draining
/// ends the grace period, like `Control::stop_now()`) and SIGHUP (calls `on_reload`, which
/// does nothing by default in the binary) for a started server. Returns once the handlers
/// are registered. Errors: registration failure, or handlers already installed for this
/// server.
pub fn install_signal_handlers<S: 'static>(
    server: &Server<S>,
    on_reload: impl Fn() + Send + 'static,
) -> Result<(), RuntimeError> {
    let mut slot = server
        .shared
        .signals
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if slot.is_some() {
        return Err(RuntimeError::Signals(std::io::Error::other(
            "signal handlers are already installed for this server",
        )));
    }
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(RuntimeError::Signals)?;
    let handle = signals.handle();
    let weak = Arc::downgrade(&server.shared);
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let Some(shared) = weak.upgrade() else { break };
                match signal {
                    SIGHUP => {
                        tracing::info!("SIGHUP: reloading");
                        if std::panic::catch_unwind(AssertUnwindSafe(&on_reload)).is_err() {
                            tracing::error!("reload callback panicked; still serving");
                        }
                    }
                    SIGTERM | SIGINT => {
                        let name = if signal == SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        };
                        if shared.advance(Phase::Draining) {
                            tracing::info!(signal = name, "draining");
                        } else if shared.advance(Phase::Stopping) {
                            tracing::warn!(
                                signal = name,
                                "second signal: closing remaining connections now"
                            );
                        }
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| {
            handle.close();
            RuntimeError::Signals(e)
        })?;
    *slot = Some(SignalThread { handle, thread });
    Ok(())
}
