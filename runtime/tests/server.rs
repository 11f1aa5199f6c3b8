//! Integration tests of `start()` with real sockets and threads: SO_REUSEPORT on port 0,
//! spreading over shards, per-shard state, mailboxes, the blocking pool, drivers,
//! connection limit and startup errors. Every test is bounded by client read timeouts and
//! `wait_bounded`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::{
    cell::Cell,
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    rc::Rc,
    sync::{Arc, OnceLock},
    thread::ThreadId,
    time::Duration,
};

use common::{assert_drivers, opts, request, wait_bounded, IO_TIMEOUT};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use yatagarasu_runtime::{
    start, Control, CpuAffinity, Driver, MailboxErrorKind, RuntimeError, ShardContext, Shards,
};

struct State {
    index: usize,
    built_on: ThreadId,
    served: Cell<u64>,
    tag: Cell<u64>,
}

fn make_state(ctx: &ShardContext) -> State {
    State {
        index: ctx.index(),
        built_on: std::thread::current().id(),
        served: Cell::new(0),
        tag: Cell::new(0),
    }
}

/// Reads one chunk (the whole request in these tests) as a string.
async fn read_request(stream: &mut monoio::net::TcpStream) -> String {
    let (res, buf) = stream.read(vec![0u8; 256]).await;
    let n = res.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

type Ctl = Arc<OnceLock<Control<State>>>;

/// One handler for every test in this file, dispatching on the request text.
async fn handle(state: Rc<State>, ctx: ShardContext, mut stream: monoio::net::TcpStream, ctl: Ctl) {
    state.served.set(state.served.get() + 1);
    let req = read_request(&mut stream).await;
    let reply = match req.trim() {
        "who" => format!(
            "{} {} {}",
            ctx.index(),
            stream.local_addr().map(|a| a.port()).unwrap_or(0),
            state.index
        ),
        "thread" => format!(
            "{} {}",
            state.index,
            state.built_on == std::thread::current().id()
        ),
        "driver" => format!("{} {}", ctx.driver(), monoio::utils::is_legacy()),
        "tag" => state.tag.get().to_string(),
        "blocking" => {
            let shard_thread = std::thread::current().id();
            let r =
                monoio::spawn_blocking(move || std::thread::current().id() != shard_thread).await;
            format!("{r:?}")
        }
        "async-broadcast" => match ctl.get() {
            Some(c) => match c.broadcast_async(|s: &State| s.index).await {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("error {e}"),
            },
            None => "no control".into(),
        },
        "blocking-broadcast" => match ctl.get() {
            Some(c) => match c.broadcast(|s: &State| s.index) {
                Err(RuntimeError::BroadcastOnShard) => "refused".into(),
                other => format!("unexpected {other:?}"),
            },
            None => "no control".into(),
        },
        "panic" => panic!("handler panic requested by the test"),
        "hold" => {
            // Reply at once, then keep the connection until the client sends more.
            let _ = stream.write_all(b"held".to_vec()).await;
            let _ = read_request(&mut stream).await;
            return;
        }
        other => format!("unknown {other}"),
    };
    let _ = stream.write_all(reply.into_bytes()).await;
}

fn start_test_server(
    o: yatagarasu_runtime::Options,
) -> Result<(yatagarasu_runtime::Server<State>, Ctl), RuntimeError> {
    let ctl: Ctl = Arc::new(OnceLock::new());
    let c2 = Arc::clone(&ctl);
    let force_legacy = o.force_legacy;
    let server = start(o, make_state, move |state, ctx, stream, _peer| {
        handle(state, ctx, stream, Arc::clone(&c2))
    })?;
    assert_drivers(&server, force_legacy);
    let _ = ctl.set(server.control());
    Ok((server, ctl))
}

#[test]
fn port_zero_is_shared_and_two_shards_both_serve() {
    let (server, _) = start_test_server(opts(2)).expect("start");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(server.shards().len(), 2);
    for (i, s) in server.shards().iter().enumerate() {
        assert_eq!(s.index, i);
    }
    let mut per_shard: HashMap<usize, usize> = HashMap::new();
    for _ in 0..200 {
        let reply = request(addr, "who").expect("served");
        let parts: Vec<usize> = reply
            .split(' ')
            .map(|p| p.parse().expect("numeric reply"))
            .collect();
        assert_eq!(parts.len(), 3, "{reply}");
        assert_eq!(
            parts[1],
            usize::from(addr.port()),
            "every shard serves the same port"
        );
        assert_eq!(parts[0], parts[2], "state index matches shard index");
        *per_shard.entry(parts[0]).or_default() += 1;
    }
    assert!(
        per_shard.get(&0).copied().unwrap_or(0) > 0 && per_shard.get(&1).copied().unwrap_or(0) > 0,
        "SO_REUSEPORT spread connections over both shards: {per_shard:?}"
    );

    let served = server
        .broadcast(|s: &State| (s.index, s.served.get()))
        .expect("broadcast");
    assert_eq!(served.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(served.iter().map(|p| p.1).sum::<u64>(), 200);
    assert_eq!(served[0].1 as usize, per_shard[&0]);

    server.shutdown();
    let (r, _) = wait_bounded(server, Duration::from_secs(5));
    r.expect("clean drain");
}

#[test]
fn state_is_built_on_its_shard_thread_and_broadcast_reaches_it() {
    let (server, _) = start_test_server(opts(2)).expect("start");
    let addr = server.local_addr();
    for _ in 0..20 {
        let reply = request(addr, "thread").expect("served");
        assert!(
            reply.ends_with(" true"),
            "state built on the serving thread: {reply}"
        );
    }
    // A mutating broadcast is visible to later connections on every shard.
    let acks = server
        .broadcast(|s: &State| {
            s.tag.set(40 + s.index as u64);
            s.index
        })
        .expect("broadcast");
    assert_eq!(acks, vec![0, 1]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let tag: u64 = request(addr, "tag")
            .expect("served")
            .parse()
            .expect("numeric");
        assert!(tag == 40 || tag == 41, "tag {tag}");
        seen.insert(tag);
    }
    assert_eq!(seen.len(), 2, "both shards were tagged");

    // Async broadcast from inside a shard (including its own mailbox) works; the
    // blocking one is refused there.
    assert_eq!(request(addr, "async-broadcast").expect("served"), "[0, 1]");
    assert_eq!(
        request(addr, "blocking-broadcast").expect("served"),
        "refused"
    );

    // try_send to a shard that does not exist.
    let c = server.control();
    assert!(matches!(
        c.try_send(5, |_| {}),
        Err(RuntimeError::Mailbox {
            shard: 5,
            kind: MailboxErrorKind::NoSuchShard
        })
    ));

    server.shutdown();
    let (r, _) = wait_bounded(server, Duration::from_secs(5));
    r.expect("clean drain");
    // After exit, the mailbox is closed.
    assert!(matches!(
        c.try_send(0, |_| {}),
        Err(RuntimeError::Mailbox {
            kind: MailboxErrorKind::Closed,
            ..
        })
    ));
}

#[test]
fn spawn_blocking_runs_on_the_shared_pool() {
    let (server, _) = start_test_server(opts(1)).expect("start");
    assert_eq!(
        request(server.local_addr(), "blocking").expect("served"),
        "Ok(true)"
    );
    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}

#[test]
fn forced_legacy_driver_is_used_and_reported() {
    let mut o = opts(2);
    o.force_legacy = true;
    let (server, _) = start_test_server(o).expect("start");
    assert!(server.shards().iter().all(|s| s.driver == Driver::Legacy));
    for _ in 0..10 {
        assert_eq!(
            request(server.local_addr(), "driver").expect("served"),
            "epoll true"
        );
    }
    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}

#[test]
fn default_driver_is_reported_truthfully() {
    let (server, _) = start_test_server(opts(1)).expect("start");
    let reported = server.shards()[0].driver;
    let reply = request(server.local_addr(), "driver").expect("served");
    let expected = format!("{reported} {}", reported == Driver::Legacy);
    assert_eq!(reply, expected);
    // monoio's own probe (2-entry ring + opcode check) says whether io_uring works here;
    // where it does, the shard must have got it (a 256-entry ring fits any memlock limit).
    if monoio::utils::detect_uring() {
        assert_eq!(reported, Driver::IoUring, "io_uring works on this host");
    } else {
        assert_eq!(reported, Driver::Legacy, "fallback reported as epoll");
    }
    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}

#[test]
fn handler_panic_closes_only_that_connection() {
    let (server, _) = start_test_server(opts(1)).expect("start");
    let addr = server.local_addr();
    let reply = request(addr, "panic");
    assert!(
        matches!(&reply, Ok(s) if s.is_empty()) || reply.is_err(),
        "panicking connection is closed: {reply:?}"
    );
    assert!(request(addr, "who")
        .expect("shard survives")
        .starts_with("0 "));
    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}

#[test]
fn connection_limit_pauses_accept_until_one_closes() {
    let mut o = opts(1);
    o.max_connections_per_shard = 1;
    let (server, _) = start_test_server(o).expect("start");
    let addr = server.local_addr();

    let mut first = TcpStream::connect(addr).expect("connect");
    first.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    first.write_all(b"hold").expect("write");
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).expect("held reply");
    assert_eq!(&buf, b"held");

    // The second connection completes the TCP handshake (backlog) but is not served.
    let mut second = TcpStream::connect(addr).expect("connect");
    second.write_all(b"who").expect("write");
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut out = [0u8; 16];
    let early = second.read(&mut out);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "not served while at the limit: {early:?}"
    );

    // Freeing the slot lets the shard accept and serve it.
    first.write_all(b"bye").expect("release");
    drop(first);
    second.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reply = String::new();
    second
        .read_to_string(&mut reply)
        .expect("served after release");
    assert!(reply.starts_with("0 "), "{reply}");

    server.shutdown();
    wait_bounded(server, Duration::from_secs(5))
        .0
        .expect("drain");
}

#[test]
fn startup_errors_are_reported_before_serving() {
    // Address held by a socket without SO_REUSEPORT.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut o = opts(2);
    o.listen = holder.local_addr().expect("addr");
    let err = start_test_server(o).err().expect("address in use");
    assert!(matches!(err, RuntimeError::Bind { .. }), "{err}");

    // A CPU outside the affinity mask.
    let mut o = opts(1);
    o.shards = Shards::Auto;
    o.cpu_affinity = CpuAffinity::List(vec![100_000]);
    let err = start_test_server(o).err().expect("bad cpu");
    assert!(
        matches!(err, RuntimeError::CpuNotInMask { cpu: 100_000, .. }),
        "{err}"
    );

    // A state factory that panics on shard 1: start fails and shard 0 is stopped.
    let err = start(
        opts(2),
        |ctx: &ShardContext| {
            if ctx.index() == 1 {
                panic!("factory failure requested by the test");
            }
        },
        |_state: Rc<()>, _ctx, _stream, _peer| async {},
    )
    .err()
    .expect("factory panic");
    assert!(
        matches!(err, RuntimeError::ShardStart { shard: 1, .. }),
        "{err}"
    );
}
