//! Name resolution for upstream endpoints, off the shard.
//!
//! Not on the hot path after the first request: results are cached per shard for [`DNS_TTL`].
//! A miss runs the system resolver (`getaddrinfo`, blocking) on the runtime's blocking pool via
//! `monoio::spawn_blocking`, never on the shard thread (DESIGN section 2). IP literals skip
//! resolution entirely.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long a resolved address list is reused.
pub const DNS_TTL: Duration = Duration::from_secs(30);

/// Resolved addresses and when they were resolved.
type Entry = (Vec<SocketAddr>, Instant);

/// Per-shard resolver cache: (host, port) -> addresses.
#[derive(Default)]
pub struct Resolver {
    cache: RefCell<HashMap<(String, u16), Entry>>,
}

impl Resolver {
    /// Addresses for `host:port`. Errors: the resolver's error, or `NotFound` for no address.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some((addrs, at)) = self.cache.borrow().get(&(host.to_owned(), port)) {
            if at.elapsed() < DNS_TTL {
                return Ok(addrs.clone());
            }
        }
        let owned = host.to_owned();
        let joined = monoio::spawn_blocking(move || {
            // Off the shards: this closure runs on the runtime's blocking pool.
            #[allow(clippy::disallowed_methods)]
            let found = (owned.as_str(), port).to_socket_addrs();
            found.map(|it| it.collect::<Vec<_>>())
        })
        .await;
        let addrs = joined.map_err(|_| io::Error::other("resolver thread failed"))??;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no address for host",
            ));
        }
        self.cache
            .borrow_mut()
            .insert((host.to_owned(), port), (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}
