//! Per-shard keep-alive pool of upstream connections, keyed by scheme/host/port (plus the TLS
//! trust configuration, so buckets with different CAs never share a connection).
//!
//! Hot path: a checkout is one `HashMap` probe and a `Vec::pop`; a return is a push. LIFO reuse
//! keeps the most recently used (most likely still open) connection in play. Bounded: at most
//! [`MAX_IDLE_PER_KEY`] idle connections per key; older ones are closed on return. A connection
//! idle longer than [`IDLE_TIMEOUT`] is closed at checkout instead of reused (S3 closes idle
//! connections after ~20 s). `!Sync`: one pool per shard, never shared.
//!
//! A connection is only reused when it is exactly between two responses (issue 11 item 1: an
//! origin, or anything on the path, that sends bytes nobody asked for must not have them read as
//! the next request's response, and cached). Two rules make that hold:
//! - on return ([`Pool::put`], called by the body reader): the response ended exactly at its
//!   framing (Content-Length reached, last chunk read, or no body: HEAD, 204, 304) with no byte
//!   read past it, and it allowed keep-alive; anything else is closed, never pooled;
//! - on checkout ([`Pool::take`]): a non-blocking `recv(MSG_PEEK | MSG_DONTWAIT)` on the TCP
//!   socket (the inner one for TLS) finds nothing waiting ([`IdleState::Clean`]). A pending byte
//!   (a late forged response, a body after a HEAD response, bytes past Content-Length) or EOF
//!   closes that connection and the next idle one is tried.
//!
//! Cost of the checkout check: one `recv` syscall per reuse (~1 us, outside the io_uring ring),
//! against the connect + TLS handshake a reuse saves. It is a snapshot: bytes that arrive after
//! the check and before the request is answered are still read as its response; only the
//! endpoint (or something on the path to it) can send those, and it could answer that request
//! falsely anyway. What the check removes is the cross-request effect: one response's stray
//! bytes becoming a later request's (possibly another bucket's) cached answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::stream::{IdleState, UpstreamStream};

/// Idle connections kept per key.
pub const MAX_IDLE_PER_KEY: usize = 128;
/// How long an idle connection is trusted to still be open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

/// The shard's idle upstream connections.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<Rc<str>, Vec<Idle>>>,
}

impl Pool {
    /// Take the most recently returned connection for `key` that is younger than
    /// [`IDLE_TIMEOUT`] and has nothing waiting to be read ([`IdleState::Clean`]), if any. Every
    /// idle connection popped on the way that fails either test is closed (dropped). Cost: one
    /// `recv` syscall per connection examined.
    pub fn take(&self, key: &str) -> Option<UpstreamStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            match conn.stream.idle_state() {
                IdleState::Clean => return Some(conn.stream),
                state => {
                    tracing::debug!(
                        ?state,
                        "idle upstream connection not reusable (unread bytes or closed), closing it"
                    );
                }
            }
        }
        None
    }

    /// Return a connection whose last response was read exactly to its end (no byte past it
    /// buffered) and allowed keep-alive. At most [`MAX_IDLE_PER_KEY`] are kept per key; the
    /// oldest is closed to make room.
    pub fn put(&self, key: &Rc<str>, stream: UpstreamStream) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key.clone()).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
        debug_assert!(list.len() <= MAX_IDLE_PER_KEY);
    }
}

#[cfg(test)]
// Test threads, not shards: they may sleep and connect blocking.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdTcp};

    /// A pooled-side monoio stream and the std peer playing S3.
    fn pair() -> (UpstreamStream, StdTcp) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let c = monoio::net::TcpStream::from_std(c).unwrap();
        (UpstreamStream::Plain(c), s)
    }

    /// Run `f` on both monoio drivers (io_uring where the kernel allows it, and epoll).
    fn on_both_drivers<F: std::future::Future<Output = ()>>(f: impl Fn() -> F) {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f());
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f());
    }

    /// Wait until the peer's bytes (or FIN) reached our socket.
    fn wait_readable(s: &UpstreamStream) {
        for _ in 0..200 {
            if s.idle_state() != IdleState::Clean {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("peer's bytes never arrived");
    }

    #[test]
    fn clean_connection_is_reused() {
        on_both_drivers(|| async {
            let pool = Pool::default();
            let key: Rc<str> = "http://s3:80".into();
            let (conn, _peer) = pair();
            let fd = conn.raw_fd();
            pool.put(&key, conn);
            let got = pool.take(&key).expect("clean connection reused");
            assert_eq!(got.raw_fd(), fd);
            assert!(pool.take(&key).is_none(), "taken once");
        });
    }

    #[test]
    fn connection_with_unread_bytes_is_closed_and_the_next_one_used() {
        on_both_drivers(|| async {
            let pool = Pool::default();
            let key: Rc<str> = "http://s3:80".into();
            let (clean, _clean_peer) = pair();
            let clean_fd = clean.raw_fd();
            let (dirty, mut dirty_peer) = pair();
            // A forged response arriving after the previous one ended.
            dirty_peer
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED")
                .unwrap();
            wait_readable(&dirty);
            pool.put(&key, clean);
            pool.put(&key, dirty); // most recent: examined first
            let got = pool.take(&key).expect("the clean one");
            assert_eq!(got.raw_fd(), clean_fd);
            // The dirty connection was closed, not kept: its peer reads EOF, or a reset (closing
            // a socket with unread bytes sends RST), never a timeout. (Under io_uring the close
            // is an op on the ring: let the runtime submit it.)
            monoio::time::sleep(Duration::from_millis(50)).await;
            dirty_peer
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut b = [0u8; 1];
            match dirty_peer.read(&mut b) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("dirty connection still open: {other:?}"),
            }
            assert!(pool.take(&key).is_none());
        });
    }

    #[test]
    fn connection_closed_by_s3_is_not_reused() {
        on_both_drivers(|| async {
            let pool = Pool::default();
            let key: Rc<str> = "http://s3:80".into();
            let (conn, peer) = pair();
            drop(peer);
            wait_readable(&conn);
            pool.put(&key, conn);
            assert!(pool.take(&key).is_none());
        });
    }
}
