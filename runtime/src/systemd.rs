//! systemd service notifications (`Type=notify`, sd_notify(3)) over `$NOTIFY_SOCKET`, through
//! the `sd-notify` crate: `READY=1` once every shard listens, `RELOADING=1` / `READY=1` around
//! a reload, `STOPPING=1` when the drain starts.
//!
//! Not on the hot path: one datagram per lifecycle event. Without `$NOTIFY_SOCKET` (not under
//! systemd) every call is a no-op. A failed send is logged at `warn` and otherwise ignored: the
//! proxy keeps serving whether or not the service manager hears about it.

/// Tell the service manager startup finished: every shard listens (`READY=1`).
pub fn notify_ready() {
    send(&[sd_notify::NotifyState::Ready], "READY=1");
}

/// Tell the service manager a reload started (`RELOADING=1` with `MONOTONIC_USEC`, as
/// `Type=notify-reload` requires). Follow it with [`notify_ready`] when the reload ended,
/// applied or rejected.
pub fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states, "RELOADING=1");
}

/// Tell the service manager the drain started (`STOPPING=1`).
pub fn notify_stopping() {
    send(&[sd_notify::NotifyState::Stopping], "STOPPING=1");
}

fn send(states: &[sd_notify::NotifyState<'_>], what: &str) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, message = what, "cannot notify systemd ($NOTIFY_SOCKET)");
    }
}
