//! A `Snapshot` published from the main thread is seen by every shard on its next load,
//! with its generation: the config-reload path, end to end over real sockets.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::{rc::Rc, time::Duration};

use common::{assert_drivers, opts, request, wait_bounded};
use monoio::io::AsyncWriteRentExt;
use yatagarasu_runtime::{start, ShardContext, Snapshot};

#[test]
fn every_shard_sees_a_stored_snapshot() {
    let config = Snapshot::new(String::from("v1"));
    let for_shards = config.clone();
    let server = start(
        opts(2),
        move |_ctx: &ShardContext| for_shards.clone(),
        |snap: Rc<Snapshot<String>>,
         ctx: ShardContext,
         mut stream: monoio::net::TcpStream,
         _peer| async move {
            let current = snap.load_full();
            let reply = format!("{} {} {}", ctx.index(), current, snap.generation());
            let _ = stream.write_all(reply.into_bytes()).await;
        },
    )
    .expect("start");
    assert_drivers(&server, false);
    let addr = server.local_addr();
    for _ in 0..20 {
        let reply = request(addr, "").expect("served");
        assert!(reply.ends_with(" v1 0"), "{reply}");
    }
    assert_eq!(config.store("v2".into()), 1);
    let mut shards_seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let reply = request(addr, "").expect("served");
        assert!(reply.ends_with(" v2 1"), "new snapshot everywhere: {reply}");
        shards_seen.insert(reply.split(' ').next().map(str::to_owned));
    }
    assert_eq!(shards_seen.len(), 2, "both shards answered");
    // The shards' view through a mailbox job agrees.
    let seen = server
        .broadcast(|s: &Snapshot<String>| (s.load().as_str().to_owned(), s.generation()))
        .expect("broadcast");
    assert_eq!(seen, vec![("v2".to_string(), 1), ("v2".to_string(), 1)]);
    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}
