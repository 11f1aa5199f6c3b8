//! Parsing of `s3.endpoint` and `jwt.jwks_url`: `scheme://host[:port]` (RFC 3986 section 3)
//! restricted to what an S3 endpoint may be: scheme `http` or `https`, a DNS name or IP
//! literal (IPv6 in brackets), an optional port, no userinfo, path, query or fragment.
//!
//! Not on the hot path: runs once per config load, a few string scans.

use std::net::Ipv6Addr;

use super::{Endpoint, Scheme};

/// Splits `url` into scheme, endpoint authority and the rest (path, query, fragment; may be
/// empty). Errors are short sentences without the URL itself.
fn split_url(url: &str) -> Result<(Endpoint, &str), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected a URL such as http://127.0.0.1:7480".to_string())?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return Err("scheme must be http or https".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(
            "must not contain user info (put credentials in access_key / secret_key)".into(),
        );
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unterminated IPv6 literal (missing ']')".to_string())?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err("invalid IPv6 literal".into());
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "unexpected text after IPv6 literal".to_string())?,
            ),
        };
        (inside.to_ascii_lowercase(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.contains(':') {
            return Err("IPv6 literals must be in brackets, e.g. http://[::1]:7480".into());
        }
        if host.is_empty() {
            return Err("host is missing".into());
        }
        let valid = host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !valid {
            return Err("host must be a DNS name or an IP address".into());
        }
        (host.to_ascii_lowercase(), port)
    };
    let (port, explicit_port) = match port {
        None => (scheme.default_port(), false),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => (n, true),
            _ => return Err("port must be a number in 1..=65535".into()),
        },
    };
    Ok((
        Endpoint {
            scheme,
            host,
            port,
            explicit_port,
        },
        tail,
    ))
}

/// Parses an S3 endpoint `scheme://host[:port]` (a single trailing `/` is tolerated).
///
/// Errors (stable wording, used as the message at `...s3.endpoint`): `scheme must be http or
/// https`, `host is missing`, `port must be a number in 1..=65535`, `must not contain a path,
/// query or fragment`, `must not contain user info ...`, IPv6 bracket problems.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (endpoint, tail) = split_url(url.trim())?;
    if !tail.is_empty() && tail != "/" {
        return Err("must not contain a path, query or fragment".into());
    }
    Ok(endpoint)
}

/// Checks a JWKS URL: http(s) with a host; plain http only for `localhost` or a loopback IP,
/// since keys fetched over plain HTTP could be replaced in transit.
pub(super) fn check_jwks_url(url: &str) -> Result<(), String> {
    let (endpoint, _) = split_url(url.trim())?;
    if endpoint.scheme == Scheme::Http {
        let loopback = endpoint.host == "localhost"
            || endpoint
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("must use https (http is allowed only for localhost)".into());
        }
    }
    Ok(())
}

/// The AWS S3 regional endpoint `https://s3.<region>.amazonaws.com` (port 443, implicit).
pub(super) fn aws_endpoint(region: &str) -> Endpoint {
    Endpoint {
        scheme: Scheme::Https,
        host: format!("s3.{}.amazonaws.com", region.to_ascii_lowercase()),
        port: 443,
        explicit_port: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_default_ports() {
        let e = parse_endpoint("http://127.0.0.1:7480").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.explicit_port),
            (Scheme::Http, "127.0.0.1", 7480, true)
        );
        assert_eq!(e.host_header(), "127.0.0.1:7480");
        let e = parse_endpoint("HTTPS://Minio.Example.com/").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.explicit_port),
            (Scheme::Https, "minio.example.com", 443, false)
        );
        assert_eq!(e.host_header(), "minio.example.com");
        let e = parse_endpoint("http://garage").unwrap();
        assert_eq!((e.port, e.explicit_port), (80, false));
        let e = parse_endpoint("https://s3.local:443").unwrap();
        assert_eq!((e.port, e.explicit_port), (443, true));
        assert_eq!(e.to_string(), "https://s3.local");
    }

    #[test]
    fn parses_ipv6_literals() {
        let e = parse_endpoint("http://[::1]:9000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert!(e.host_is_ip());
        assert_eq!(e.host_header(), "[::1]:9000");
        let e = parse_endpoint("https://[2001:DB8::5]").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.explicit_port),
            ("2001:db8::5", 443, false)
        );
        assert_eq!(e.to_string(), "https://[2001:db8::5]");
    }

    #[test]
    fn rejects_bad_endpoints() {
        let cases = [
            ("ftp://host", "scheme must be http or https"),
            ("127.0.0.1:7480", "expected a URL"),
            ("http://", "host is missing"),
            ("http://:80", "host is missing"),
            ("http://host:0", "port must be"),
            ("http://host:99999", "port must be"),
            ("http://host:x", "port must be"),
            ("http://host/bucket", "must not contain a path"),
            ("http://host?x=1", "must not contain a path"),
            ("http://user:pw@host", "user info"),
            ("http://::1:80", "brackets"),
            ("http://[::1", "unterminated"),
            ("http://[zz]:80", "invalid IPv6"),
            ("http://[::1]x", "unexpected text"),
            ("http://bad host", "DNS name"),
            ("http://a..b", "DNS name"),
        ];
        for (url, want) in cases {
            let err = parse_endpoint(url).unwrap_err();
            assert!(err.contains(want), "{url}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn jwks_url_needs_https_unless_loopback() {
        assert!(check_jwks_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(check_jwks_url("http://127.0.0.1:8081/jwks").is_ok());
        assert!(check_jwks_url("http://localhost/jwks").is_ok());
        assert!(check_jwks_url("http://[::1]/jwks").is_ok());
        assert!(check_jwks_url("http://idp.example.com/jwks")
            .unwrap_err()
            .contains("https"));
        assert!(check_jwks_url("idp.example.com").is_err());
    }

    #[test]
    fn aws_default() {
        let e = aws_endpoint("eu-west-1");
        assert_eq!(e.to_string(), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!((e.port, e.explicit_port), (443, false));
    }
}
