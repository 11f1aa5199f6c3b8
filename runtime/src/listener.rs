//! One SO_REUSEPORT listening socket per shard, bound on the main thread.
//!
//! Cold path: runs once in `start()`. Binding on the main thread makes every bind error
//! (address in use, permission, bad address) surface before any shard thread starts.
//! Port 0 works: shard 0 binds the requested address, then the others bind the port it
//! got, so every shard serves the same port. The kernel spreads incoming connections over
//! the group by a hash of the 4-tuple.
//!
//! Caveat (DESIGN section 3): SO_REUSEPORT also lets a *second process* of the same user
//! bind the same port silently and take part of the connections; nothing here can detect
//! that. The admin listener therefore must not use this module.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{bind_hint, RuntimeError};

/// `listen(2)` backlog per shard socket (the kernel clamps it to `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

fn bind_one(addr: SocketAddr, shard: usize) -> Result<TcpListener, RuntimeError> {
    let wrap = |source: std::io::Error| RuntimeError::Bind {
        addr,
        shard,
        hint: bind_hint(&source),
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(wrap)?;
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.set_reuse_port(true).map_err(wrap)?;
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.listen(LISTEN_BACKLOG).map_err(wrap)?;
    Ok(socket.into())
}

/// Binds `count` SO_REUSEPORT listeners on `addr` (port 0 allowed) and returns them with
/// the address they share. Blocking mode is left as created; the shard sets non-blocking
/// when its driver is epoll.
pub(crate) fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<TcpListener>, SocketAddr), RuntimeError> {
    debug_assert!(count >= 1, "at least one shard");
    let first = bind_one(addr, 0)?;
    let local = first.local_addr().map_err(|source| RuntimeError::Bind {
        addr,
        shard: 0,
        hint: bind_hint(&source),
        source,
    })?;
    let mut listeners = Vec::with_capacity(count);
    listeners.push(first);
    for shard in 1..count {
        listeners.push(bind_one(local, shard)?);
    }
    Ok((listeners, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_every_socket_the_same_port() {
        let (ls, local) =
            bind_reuseport("127.0.0.1:0".parse().expect("literal"), 3).expect("bind on loopback");
        assert_ne!(local.port(), 0);
        for l in &ls {
            assert_eq!(l.local_addr().expect("bound").port(), local.port());
        }
    }

    #[test]
    fn port_held_without_reuseport_is_an_error_with_hint() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = holder.local_addr().expect("bound");
        let err = bind_reuseport(addr, 2).expect_err("address in use");
        let text = err.to_string();
        assert!(matches!(err, RuntimeError::Bind { shard: 0, .. }), "{text}");
        assert!(text.contains("in use"), "{text}");
    }
}
