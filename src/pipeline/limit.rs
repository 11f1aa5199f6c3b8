//! Phase 2, limit: between routing and authentication (DESIGN section 5, Limits), the client
//! address against the IP lists (403), the node-wide rate limits (429 with `Retry-After`;
//! global, bucket, client address here, the JWT subject's right after authentication) and the
//! node-wide concurrency limit (503 with `Retry-After`), in that order.
//!
//! Hot path of every object request. Cost: nothing when no list and no limit is set (a few
//! emptiness and zero tests); with IP lists, one `X-Forwarded-For` walk (only when
//! `trusted_proxies` is set) and a linear scan of each list (`ipnet` containment, a few ns per
//! network; lists are operator-sized, tens of entries); per rate set, one check of the node's
//! [`crate::ratelimit::RateTable`] (a hash and a compare-and-swap, ~20-100 ns); a request
//! refused by a later rate has still spent a token of the earlier ones (as nginx's
//! `limit_req` does); with `max_concurrent_requests`, one
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
use super::{Local, RequestCtx, Shard};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::forwarded::{canonical, client_ip};
use crate::http::request::RequestHead;
use crate::http::server::Conn;
use crate::ratelimit::{retry_after_secs, Scope};

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
/// address the lists refuse; 429 with `Retry-After` over a rate limit (global, bucket, client
/// address; the JWT subject's comes after authentication, [`check_user`]); 503 with
/// `Retry-After: 1` over `max_concurrent_requests`. Each refusal is counted by reason
/// (`requests_limited_total{reason=...}`).
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
    let rates = &server.rate_limit;
    // One clock read for every rate of this request (~28 ns each otherwise).
    let rated = rates.per_ip_rps | rates.global_rps | bucket.rate_limit.rps > 0;
    let now = if rated { shard.rates.now_ns() } else { 0 };
    if lists || rates.per_ip_rps > 0 {
        let ip = canonical(client_ip(
            conn.peer.ip(),
            &head.headers,
            &server.trusted_proxies,
        ));
        if lists
            && (!admits(ip, &server.ip_allow, &server.ip_block)
                || !admits(ip, &bucket.ip_allow, &bucket.ip_block))
        {
            shard.metrics.limited_ip.inc();
            return Err(ProxyError::client(
                ErrorKind::Forbidden,
                "the client address is not allowed here (ip_allow / ip_block)",
            ));
        }
        if rates.per_ip_rps > 0 {
            let (octets, len) = ip_rate_key(ip);
            rate(shard, Scope::Ip, &octets[..len], rates.per_ip_rps, now)?;
        }
    }
    rate(shard, Scope::Global, b"", rates.global_rps, now)?;
    let name = bucket.name.as_bytes();
    rate(shard, Scope::Bucket, name, bucket.rate_limit.rps, now)?;
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

/// The JWT subject's rate (`server.rate_limit.per_user_rps`), once authentication put the
/// verified claims in `cx`; a request without a `sub` is not limited by it. Errors: 429 with
/// `Retry-After`.
#[inline]
pub fn check_user(shard: &Shard, local: &Local, cx: &RequestCtx<'_>) -> Result<(), ProxyError> {
    let per_user = local.prepared.config.server.rate_limit.per_user_rps;
    if per_user == 0 {
        return Ok(());
    }
    match cx.subject.as_ref().and_then(|v| v.subject.as_deref()) {
        Some(sub) => rate(
            shard,
            Scope::User,
            sub.as_bytes(),
            per_user,
            shard.rates.now_ns(),
        ),
        None => Ok(()),
    }
}

/// The key `per_ip_rps` counts `ip` under, as (bytes, length): an IPv4 address whole, an
/// IPv6 address by its /64 (one subscriber's or host's prefix: a client that rotates through
/// its /64, as every IPv6 host can, is still one client).
pub fn ip_rate_key(ip: IpAddr) -> ([u8; 16], usize) {
    match ip {
        IpAddr::V4(v4) => {
            let mut octets = [0u8; 16];
            octets[..4].copy_from_slice(&v4.octets());
            (octets, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 8),
    }
}

/// One rate check against the node's table at `now` (its clock, read once per request); a
/// refusal is counted and answered 429.
#[inline]
fn rate(shard: &Shard, scope: Scope, key: &[u8], rps: u64, now: u64) -> Result<(), ProxyError> {
    if rps == 0 {
        return Ok(());
    }
    shard.rates.check_at(scope, key, rps, now).map_err(|wait| {
        shard.metrics.limited_rate[scope as usize].inc();
        let what = crate::metrics::RATE_REASONS[scope as usize];
        ProxyError::too_many_requests(
            retry_after_secs(wait),
            format!("over the rate limit ({what}, {rps} requests per second)"),
        )
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

    #[test]
    fn per_ip_rates_count_ipv6_by_its_64() {
        let key = |s: &str| {
            let (octets, len) = ip_rate_key(canonical(s.parse().expect("ip")));
            octets[..len].to_vec()
        };
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.1"), vec![192, 0, 2, 1]);
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }
}
