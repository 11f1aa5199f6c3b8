//! Drain tests with real sockets: shutdown stops accepting while in-flight connections
//! finish; the grace period ends stuck connections; `draining()` wakes handlers;
//! `stop_now()` cuts the grace short. Each test runs under both drivers (io_uring where
//! available, and forced epoll) and is bounded by `wait_bounded` and read timeouts.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    rc::Rc,
    time::{Duration, Instant},
};

use common::{assert_drivers, eventually, opts, wait_bounded, IO_TIMEOUT};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use yatagarasu_runtime::{start, Options, Server, ShardContext};

async fn handle(_state: Rc<()>, ctx: ShardContext, mut stream: monoio::net::TcpStream) {
    let (res, buf) = stream.read(vec![0u8; 64]).await;
    let n = res.unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
    let reply = match req.trim() {
        "slow" => {
            monoio::time::sleep(Duration::from_millis(1500)).await;
            format!("done draining={}", ctx.is_draining())
        }
        "stuck" => {
            monoio::time::sleep(Duration::from_secs(60)).await;
            "unreachable".to_string()
        }
        "wait-drain" => {
            ctx.draining().await;
            "bye".to_string()
        }
        _ => "fast".to_string(),
    };
    let _ = stream.write_all(reply.into_bytes()).await;
}

fn server(o: Options) -> Server<()> {
    let force_legacy = o.force_legacy;
    let server = start(
        o,
        |_ctx: &ShardContext| (),
        |state, ctx, stream, _peer| handle(state, ctx, stream),
    )
    .expect("start");
    assert_drivers(&server, force_legacy);
    server
}

fn connect_and_send(addr: std::net::SocketAddr, msg: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(msg.as_bytes()).expect("write");
    s
}

fn read_all(mut s: TcpStream) -> std::io::Result<String> {
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn drain_lets_in_flight_finish(force_legacy: bool) {
    let mut o = opts(2);
    o.force_legacy = force_legacy;
    let srv = server(o);
    let addr = srv.local_addr();
    let slow = connect_and_send(addr, "slow");
    // Let the shard accept it and start the handler.
    std::thread::sleep(Duration::from_millis(150));

    let t0 = Instant::now();
    srv.shutdown();
    // New connections are refused once every shard closed its listener; the slow one is
    // still in flight meanwhile.
    let refused = eventually(
        Duration::from_secs(2),
        || matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused),
    );
    assert!(refused, "new connections refused after shutdown");
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "listener closed before the in-flight request ended"
    );

    assert_eq!(
        read_all(slow).expect("in-flight served"),
        "done draining=true"
    );
    let (r, _) = wait_bounded(srv, Duration::from_secs(4));
    r.expect("clean drain");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "ended when idle, well before the 5 s grace: {:?}",
        t0.elapsed()
    );
}

#[test]
fn drain_lets_in_flight_finish_default_driver() {
    drain_lets_in_flight_finish(false);
}

#[test]
fn drain_lets_in_flight_finish_epoll() {
    drain_lets_in_flight_finish(true);
}

fn grace_expiry_closes_stuck_connection(force_legacy: bool) {
    let mut o = opts(1);
    o.force_legacy = force_legacy;
    o.shutdown_grace = Duration::from_millis(300);
    let srv = server(o);
    let stuck = connect_and_send(srv.local_addr(), "stuck");
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    srv.shutdown();
    let (r, took) = wait_bounded(srv, Duration::from_secs(3));
    r.expect("shard ends after grace");
    assert!(
        took >= Duration::from_millis(250),
        "grace was honoured: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "grace expiry ended the shard: {took:?}"
    );
    // The stuck connection was closed by the server (EOF or reset), not left open.
    let got = read_all(stuck);
    assert!(
        matches!(&got, Ok(s) if s.is_empty())
            || matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "stuck connection closed: {got:?} after {:?}",
        t0.elapsed()
    );
}

#[test]
fn grace_expiry_closes_stuck_connection_default_driver() {
    grace_expiry_closes_stuck_connection(false);
}

#[test]
fn grace_expiry_closes_stuck_connection_epoll() {
    grace_expiry_closes_stuck_connection(true);
}

#[test]
fn draining_future_wakes_every_waiting_handler() {
    let srv = server(opts(2));
    let clients: Vec<TcpStream> = (0..6)
        .map(|_| connect_and_send(srv.local_addr(), "wait-drain"))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let n_live: usize = srv
        .broadcast(|_: &()| ())
        .map(|v| v.len())
        .expect("mailboxes answer while serving");
    assert_eq!(n_live, 2);
    srv.shutdown();
    for c in clients {
        assert_eq!(read_all(c).expect("woken"), "bye");
    }
    let (r, took) = wait_bounded(srv, Duration::from_secs(4));
    r.expect("clean drain");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn stop_now_cuts_the_grace_short() {
    let mut o = opts(1);
    o.shutdown_grace = Duration::from_secs(30);
    let srv = server(o);
    let stuck = connect_and_send(srv.local_addr(), "stuck");
    std::thread::sleep(Duration::from_millis(100));
    srv.shutdown();
    std::thread::sleep(Duration::from_millis(100));
    srv.stop_now();
    let (r, took) = wait_bounded(srv, Duration::from_secs(3));
    r.expect("stopped");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(stuck);
}

#[test]
fn dropping_the_server_drains_it() {
    let srv = server(opts(1));
    let addr = srv.local_addr();
    drop(srv);
    assert!(
        eventually(Duration::from_secs(2), || TcpStream::connect(addr).is_err()),
        "listener closed after drop"
    );
}
