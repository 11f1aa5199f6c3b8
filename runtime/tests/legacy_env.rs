//! `MONOIO_FORCE_LEGACY_DRIVER=1` forces the epoll driver. Its own test binary (one
//! process) because it sets a process-wide environment variable before any runtime exists.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::{rc::Rc, time::Duration};

use common::{assert_drivers, opts, request, wait_bounded};
use monoio::io::AsyncWriteRentExt;
use yatagarasu_runtime::{legacy_forced_by_env, start, Driver, ShardContext};

#[test]
fn env_variable_forces_epoll_on_every_shard() {
    // Single test in this binary: no other thread reads the environment concurrently.
    std::env::set_var("MONOIO_FORCE_LEGACY_DRIVER", "1");
    assert!(legacy_forced_by_env());
    let server = start(
        opts(2),
        |_ctx: &ShardContext| (),
        |_state: Rc<()>, ctx: ShardContext, mut stream: monoio::net::TcpStream, _peer| async move {
            let reply = format!("{} {}", ctx.driver(), monoio::utils::is_legacy());
            let _ = stream.write_all(reply.into_bytes()).await;
        },
    )
    .expect("start");
    assert_drivers(&server, false);
    assert!(server.shards().iter().all(|s| s.driver == Driver::Legacy));
    for _ in 0..10 {
        assert_eq!(
            request(server.local_addr(), "").expect("served"),
            "epoll true"
        );
    }
    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}
