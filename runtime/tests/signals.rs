//! Signal handling: SIGHUP calls the reload callback, SIGTERM drains. Its own test binary
//! because the handlers are process-wide; the signals are sent to this process with
//! `kill(getpid(), ..)`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::{
    rc::Rc,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{assert_drivers, eventually, opts, request, wait_bounded};
use monoio::io::AsyncWriteRentExt;
use yatagarasu_runtime::{install_signal_handlers, start, RuntimeError, ShardContext};

fn send_signal(sig: i32) {
    // SAFETY: kill(2) on our own pid with a signal whose handler signal-hook installed.
    let rc = unsafe { libc::kill(libc::getpid(), sig) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn sighup_reloads_and_sigterm_drains() {
    let server = start(
        opts(1),
        |_ctx: &ShardContext| (),
        |_state: Rc<()>, _ctx, mut stream: monoio::net::TcpStream, _peer| async move {
            let _ = stream.write_all(b"ok".to_vec()).await;
        },
    )
    .expect("start");
    assert_drivers(&server, false);
    let reloads = Arc::new(AtomicUsize::new(0));
    let r2 = Arc::clone(&reloads);
    install_signal_handlers(&server, move || {
        r2.fetch_add(1, Ordering::SeqCst);
    })
    .expect("install");
    assert!(matches!(
        install_signal_handlers(&server, || {}),
        Err(RuntimeError::Signals(_))
    ));

    send_signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(2), || reloads
        .load(Ordering::SeqCst)
        == 1));
    assert_eq!(
        request(server.local_addr(), "").expect("still serving"),
        "ok"
    );

    send_signal(libc::SIGTERM);
    let (r, took) = wait_bounded(server, Duration::from_secs(4));
    r.expect("drained on SIGTERM");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(reloads.load(Ordering::SeqCst), 1);
}
