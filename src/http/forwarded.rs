//! The client address for logs: the peer address, or, when the peer is a trusted proxy
//! (`server.trusted_proxies`, CIDR blocks), the address it reports in `X-Forwarded-For`.
//!
//! Rule (the one nginx's `real_ip_recursive on` and most CDNs document): read the
//! `X-Forwarded-For` list right to left, skip addresses that are themselves trusted proxies, and
//! take the first one that is not; if every hop is trusted, the leftmost. A peer that is not
//! trusted is the client, whatever the header says (anyone can send the header). Malformed
//! entries end the walk at the last good address.
//!
//! On the hot path only when the access log is on: no allocation, one pass over the header
//! values, one CIDR check per hop (`ipnet`).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The client IP for `peer` given the request `headers` and the `trusted` proxy networks.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical(*ip)));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Several X-Forwarded-For fields form one list in order (RFC 9110 section 5.3).
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(list) = value.to_str() else {
            return client;
        };
        for hop in list.rsplit(',') {
            let Some(ip) = parse_hop(hop.trim()) else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

/// One hop: a bare IPv4/IPv6 address, `[v6]`, `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, as a dual-stack listener reports them) compare as
/// IPv4.
/// `ip`, an IPv4-mapped IPv6 address as its IPv4 address (how lists compare it).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &[]), ip("10.1.1.1"));
    }

    #[test]
    fn trusted_chain_is_walked_right_to_left() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8::/32"]);
        let h = headers(&["198.51.100.7, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Two fields are one list.
        let h = headers(&["198.51.100.7", "203.0.113.9, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Every hop trusted: the leftmost.
        let h = headers(&["10.9.9.9, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.9.9.9"));
        // IPv6 and ports.
        let h = headers(&["[2001:db9::1]:443, 2001:db8::7"]);
        assert_eq!(
            client_ip(ip("2001:db8::1"), &h, &trusted),
            ip("2001:db9::1")
        );
        let h = headers(&["203.0.113.9:5555"]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_good_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.9, not-an-ip, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.5"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }
}
