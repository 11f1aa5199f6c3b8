//! Phase 2, limit: between routing and authentication (DESIGN section 5, Limits), the client
//! address against the IP lists (403) and the node-wide concurrency limit (503 with
//! `Retry-After`). Rate limits (429) come later, behind this same call.
//!
//! Hot path of every object request. Cost: nothing when no list and no limit is set (two
//! emptiness checks and a zero test); with IP lists, one `X-Forwarded-For` walk (only when
//! `trusted_proxies` is set) and a linear scan of each list (`ipnet` containment, a few ns per
//! network; lists are operator-sized, tens of entries); with `max_concurrent_requests`, one
//! atomic add and one atomic subtract on a counter shared by every core (~20-50 ns when both
//! cores hit it, the price of a limit that is exact node-wide whatever the shard count).
//!
//! # The IP rules
//!
//! The client address is the peer's, or the `X-Forwarded-For` hop `trusted_proxies` leads to
//! ([`client_ip`]), IPv4-mapped IPv6 compared as IPv4. A list pair (`ip_allow`, `ip_block`)
//! admits an address when `ip_allow` names it; otherwise, when `ip_allow` is non-empty, it
//! refuses it; otherwise it refuses it when `ip_block` names it (so `ip_allow` wins where both
//! match, DESIGN 6.1). The server's pair applies to every bucket, then the bucket's own.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::route::ObjectRoute;
use super::{Local, Shard};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::forwarded::{canonical, client_ip};
use crate::http::request::RequestHead;
use crate::http::server::Conn;

/// `Retry-After` of a request shed by `max_concurrent_requests`, seconds.
pub const SHED_RETRY_AFTER_SECS: u32 = 1;

/// What the limit phase admitted: holds the request's place in the node-wide in-flight count
/// until dropped (the end of the request, its body included).
pub struct Admission {
    in_flight: Option<Arc<AtomicU64>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(n) = &self.in_flight {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether `object` may proceed (module doc). Errors: 403 (`ErrorKind::Forbidden`) for an
/// address the lists refuse; 503 with `Retry-After: 1` over `max_concurrent_requests`. Each
/// refusal is counted by reason (`requests_limited_total{reason="ip_blocked"|"shed"}`).
#[inline]
pub fn check(
    shard: &Shard,
    local: &Local,
    head: &RequestHead,
    conn: &Conn,
    object: &ObjectRoute<'_, '_>,
) -> Result<Admission, ProxyError> {
    let server = &local.prepared.config.server;
    let bucket = object.bucket;
    let lists = !server.ip_allow.is_empty()
        || !server.ip_block.is_empty()
        || !bucket.ip_allow.is_empty()
        || !bucket.ip_block.is_empty();
    if lists {
        let ip = canonical(client_ip(
            conn.peer.ip(),
            &head.headers,
            &server.trusted_proxies,
        ));
        if !admits(ip, &server.ip_allow, &server.ip_block)
            || !admits(ip, &bucket.ip_allow, &bucket.ip_block)
        {
            shard.metrics.limited_ip.inc();
            return Err(ProxyError::client(
                ErrorKind::Forbidden,
                "the client address is not allowed here (ip_allow / ip_block)",
            ));
        }
    }
    let max = server.max_concurrent_requests;
    if max == 0 {
        return Ok(Admission { in_flight: None });
    }
    let counter = &shard.in_flight;
    if counter.fetch_add(1, Ordering::Relaxed) >= max {
        counter.fetch_sub(1, Ordering::Relaxed);
        shard.metrics.limited_shed.inc();
        return Err(ProxyError::unavailable(
            Side::Internal,
            SHED_RETRY_AFTER_SECS,
            "too many requests in flight on this node (max_concurrent_requests)",
        ));
    }
    Ok(Admission {
        in_flight: Some(counter.clone()),
    })
}

/// Whether the pair (`allow`, `block`) admits `ip` (module doc: `allow` wins).
pub fn admits(ip: IpAddr, allow: &[ipnet::IpNet], block: &[ipnet::IpNet]) -> bool {
    if allow.iter().any(|n| n.contains(&ip)) {
        return true;
    }
    allow.is_empty() && !block.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    #[test]
    fn allow_wins_block_refuses_and_empty_lists_admit() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(admits(ip("10.1.2.3"), &[], &[]));
        let block = nets(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(!admits(ip("10.1.2.3"), &[], &block));
        assert!(!admits(ip("2001:db8::1"), &[], &block));
        assert!(admits(ip("192.0.2.1"), &[], &block));
        let allow = nets(&["10.1.0.0/16"]);
        assert!(admits(ip("10.1.2.3"), &allow, &block), "allow wins");
        assert!(!admits(ip("10.2.0.1"), &allow, &block));
        assert!(
            !admits(ip("192.0.2.1"), &allow, &[]),
            "outside a non-empty allow"
        );
        // Mapped addresses are compared as IPv4 by the caller.
        assert!(!admits(canonical(ip("::ffff:10.1.2.3")), &[], &block));
    }
}
