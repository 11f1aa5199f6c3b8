//! S3 request addressing: which `Host` header and path name an object, for path-style
//! (`host/bucket/key`) and virtual-hosted-style (`bucket.host/key`) endpoints, following the S3
//! user guide "Virtual hosting of buckets" and "Methods for accessing a bucket".
//!
//! Hot path: `object_target` runs once per upstream request. Cost: two `String` allocations
//! (host, path) sized up front, plus the key encoding of [`crate::s3::uri::encode_key_path`].
//! The strings it returns are both sent and signed, so what S3 sees is exactly what was signed.

use super::uri::{encode_key_path, encode_query_component};

/// How the bucket is named in a request. The config module has its own enum with the same
/// variants; this one is independent so the s3 module needs nothing from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// `Host: host[:port]`, path `/bucket/key`: RGW, Garage, MinIO and most non-AWS endpoints.
    Path,
    /// `Host: bucket.host[:port]`, path `/key`: AWS's default. Needs DNS (or `rgw dns name`) for
    /// `bucket.host`.
    Virtual,
}

/// `true` if `host` is an IPv6 literal (contains ':' — a DNS name or IPv4 address never does),
/// bracketed or not.
fn is_ipv6_literal(host: &str) -> bool {
    host.contains(':')
}

/// Appends `host` to `out`, adding brackets around a bare IPv6 literal (RFC 9110 section 7.2,
/// RFC 3986 section 3.2.2: `[::1]`).
fn push_host(host: &str, out: &mut String) {
    if is_ipv6_literal(host) && !host.starts_with('[') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
}

/// Returns `(Host header value, canonical URI)` for an object.
///
/// - `host`: the endpoint's host name or IP literal, without port (`127.0.0.1`,
///   `s3.eu-west-1.amazonaws.com`, `::1` or `[::1]`).
/// - `port`, `explicit_port`: the port is appended as `:port` only when `explicit_port` is true;
///   the caller passes false for the scheme's default (80 for http, 443 for https), as clients
///   and SigV4 signers omit it there.
/// - `bucket`: the S3 bucket name (percent-encoded like a query component in path style; valid
///   bucket names never need it).
/// - `key`: raw object key bytes, already percent-decoded from the client path.
///
/// Path style gives `("host[:port]", "/bucket/<encoded key>")`; virtual-hosted style gives
/// `("bucket.host[:port]", "/<encoded key>")`. The key is encoded with
/// [`encode_key_path`] (S3's single encoding, `/` kept). IPv6 literals get brackets. Virtual style
/// on an IPv6 literal is impossible (no DNS name to prefix), so it falls back to path style;
/// [`supports_virtual`] lets config validation reject that combination up front.
#[must_use]
pub fn object_target(
    addressing: Addressing,
    host: &str,
    port: u16,
    explicit_port: bool,
    bucket: &str,
    key: &[u8],
) -> (String, String) {
    let addressing = if addressing == Addressing::Virtual && is_ipv6_literal(host) {
        Addressing::Path
    } else {
        addressing
    };
    let mut host_header = String::with_capacity(bucket.len() + host.len() + 9);
    let mut path = String::with_capacity(bucket.len() + key.len() + key.len() / 2 + 2);
    match addressing {
        Addressing::Path => {
            push_host(host, &mut host_header);
            path.push('/');
            encode_query_component(bucket.as_bytes(), &mut path);
            path.push('/');
        }
        Addressing::Virtual => {
            host_header.push_str(bucket);
            host_header.push('.');
            push_host(host, &mut host_header);
            path.push('/');
        }
    }
    if explicit_port {
        host_header.push(':');
        host_header.push_str(itoa_u16(port, &mut [0u8; 5]));
    }
    encode_key_path(key, &mut path);
    (host_header, path)
}

/// Whether virtual-hosted style can address `bucket` on `host`: false for IP literals (v4 or v6;
/// `bucket.127.0.0.1` is not a name anything resolves) and for bucket names that are not a valid
/// DNS label sequence (`a-z 0-9 - .`, labels 1-63 bytes, no leading/trailing `-`). Source: S3
/// user guide, "Bucket naming rules" and "Virtual hosting of buckets".
#[must_use]
pub fn supports_virtual(host: &str, bucket: &str) -> bool {
    let host_is_ip =
        is_ipv6_literal(host) || host.parse::<std::net::Ipv4Addr>().is_ok() || host.is_empty();
    let bucket_is_dns = !bucket.is_empty()
        && bucket.len() <= 63
        && bucket.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    !host_is_ip && bucket_is_dns
}

/// Formats a port number without allocating.
fn itoa_u16(mut value: u16, buf: &mut [u8; 5]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        // `value % 10` < 10, so the cast is lossless.
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[start..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_with_explicit_port() {
        let (host, path) = object_target(
            Addressing::Path,
            "127.0.0.1",
            7480,
            true,
            "test-bucket",
            "dir/a+b (1).txt".as_bytes(),
        );
        assert_eq!(host, "127.0.0.1:7480");
        assert_eq!(path, "/test-bucket/dir/a%2Bb%20%281%29.txt");
    }

    #[test]
    fn path_style_default_port_is_omitted() {
        let (host, path) =
            object_target(Addressing::Path, "minio.internal", 80, false, "b", b"k.txt");
        assert_eq!(host, "minio.internal");
        assert_eq!(path, "/b/k.txt");
    }

    #[test]
    fn virtual_style() {
        let (host, path) = object_target(
            Addressing::Virtual,
            "s3.eu-west-1.amazonaws.com",
            443,
            false,
            "my-bucket",
            "unicode-ß/x y".as_bytes(),
        );
        assert_eq!(host, "my-bucket.s3.eu-west-1.amazonaws.com");
        assert_eq!(path, "/unicode-%C3%9F/x%20y");

        let (host, path) = object_target(Addressing::Virtual, "localhost", 9000, true, "b", b"k");
        assert_eq!(host, "b.localhost:9000");
        assert_eq!(path, "/k");
    }

    #[test]
    fn ipv6_gets_brackets_once() {
        let (host, path) = object_target(Addressing::Path, "::1", 7480, true, "b", b"k");
        assert_eq!(host, "[::1]:7480");
        assert_eq!(path, "/b/k");
        let (host, _) = object_target(Addressing::Path, "[fd00::2]", 443, false, "b", b"k");
        assert_eq!(host, "[fd00::2]");
        // Virtual style cannot prefix an IPv6 literal: falls back to path style.
        let (host, path) = object_target(Addressing::Virtual, "::1", 65535, true, "b", b"k");
        assert_eq!(host, "[::1]:65535");
        assert_eq!(path, "/b/k");
    }

    #[test]
    fn keys_with_slashes_and_empty_keys() {
        let (_, path) = object_target(Addressing::Path, "h", 1, true, "b", b"/lead//x/");
        assert_eq!(path, "/b//lead//x/");
        let (_, path) = object_target(Addressing::Virtual, "h", 1, true, "b", b"");
        assert_eq!(path, "/");
        let (host, _) = object_target(Addressing::Path, "h", 0, true, "b", b"");
        assert_eq!(host, "h:0");
    }

    #[test]
    fn virtual_support_rules() {
        assert!(supports_virtual("s3.amazonaws.com", "my-bucket"));
        assert!(supports_virtual("localhost", "a.b-c.1"));
        assert!(!supports_virtual("127.0.0.1", "my-bucket"));
        assert!(!supports_virtual("::1", "my-bucket"));
        assert!(!supports_virtual("s3.amazonaws.com", "My_Bucket"));
        assert!(!supports_virtual("s3.amazonaws.com", "-bad"));
        assert!(!supports_virtual("s3.amazonaws.com", "a..b"));
        assert!(!supports_virtual("s3.amazonaws.com", ""));
    }
}
