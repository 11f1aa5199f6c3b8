//! HTTP/1.1 response-head encoding (RFC 9112 section 4) and the per-shard `Date` cache.
//!
//! Hot path: every response head is written by [`ResponseHead`] into one `Vec<u8>` reused per
//! connection, without `format!`: integers go through `itoa`-style formatting on the stack. The
//! `Date` value (RFC 9110 section 6.6.1) is formatted at most once per second per shard.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::request::Version;

/// The reason phrase for `status` (RFC 9110 section 15); "Unknown" for codes we never send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Builder of one response head in a caller-provided buffer.
///
/// Shape: `HTTP/1.1 <status> <reason>\r\n` then `name: value\r\n` per header, then `\r\n` from
/// [`ResponseHead::finish`]. Values must not contain CR or LF (callers pass values parsed by
/// httparse or built by the proxy; a debug assertion checks it).
pub struct ResponseHead<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> ResponseHead<'b> {
    /// Start a head for `status` in `buf` (cleared first). The status line always says HTTP/1.1
    /// (RFC 9110 section 2.5: a server sends its own highest version), also to 1.0 clients.
    pub fn new(buf: &'b mut Vec<u8>, status: u16) -> Self {
        buf.clear();
        buf.extend_from_slice(b"HTTP/1.1 ");
        push_u64(buf, u64::from(status));
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\n");
        ResponseHead { buf }
    }

    /// Append `name: value`.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        debug_assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n'));
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Append `name: v1, v2, ...` (an RFC 9110 section 5.6.1 list) without allocating; writes
    /// nothing when `values` is empty. Values must not contain CR or LF.
    pub fn header_list<'v>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> &mut Self {
        let mut first = true;
        for v in values {
            debug_assert!(!v.iter().any(|&b| b == b'\r' || b == b'\n'));
            if first {
                self.buf.extend_from_slice(name.as_bytes());
                self.buf.extend_from_slice(b": ");
                first = false;
            } else {
                self.buf.extend_from_slice(b", ");
            }
            self.buf.extend_from_slice(v);
        }
        if !first {
            self.buf.extend_from_slice(b"\r\n");
        }
        self
    }

    /// Append `name: <decimal n>` without allocating.
    pub fn header_u64(&mut self, name: &str, n: u64) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        push_u64(self.buf, n);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Append `Content-Range: bytes first-last/len` (RFC 9110 section 14.4) without allocating.
    pub fn content_range(&mut self, first: u64, last: u64, len: u64) -> &mut Self {
        debug_assert!(first <= last && last < len);
        self.buf.extend_from_slice(b"Content-Range: bytes ");
        push_u64(self.buf, first);
        self.buf.push(b'-');
        push_u64(self.buf, last);
        self.buf.push(b'/');
        push_u64(self.buf, len);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Append the `Connection` header a response needs for `version` and `keep_alive`: HTTP/1.1
    /// keeps alive by default so only `close` is sent; HTTP/1.0 needs `keep-alive` spelled out.
    pub fn connection(&mut self, version: Version, keep_alive: bool) -> &mut Self {
        match (version, keep_alive) {
            (Version::Http11, true) => self,
            (Version::Http10, true) => self.header("Connection", b"keep-alive"),
            (_, false) => self.header("Connection", b"close"),
        }
    }

    /// Terminate the head with the empty line.
    pub fn finish(self) {
        self.buf.extend_from_slice(b"\r\n");
    }
}

/// Append the decimal form of `n` to `buf`.
pub fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Per-shard cache of the IMF-fixdate for the current second (29 bytes, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`). `!Sync` by design: one per shard.
#[derive(Default)]
pub struct DateCache {
    inner: RefCell<(u64, [u8; 29])>,
}

impl DateCache {
    /// The `Date` header value for now; re-formatted only when the second changed.
    pub fn now(&self) -> [u8; 29] {
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cached = self.inner.borrow_mut();
        if cached.0 != secs || cached.1[0] == 0 {
            let s = httpdate::fmt_http_date(now);
            debug_assert_eq!(s.len(), 29);
            if s.len() == 29 {
                cached.1.copy_from_slice(s.as_bytes());
                cached.0 = secs;
            }
        }
        cached.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_written_in_place() {
        let mut buf = Vec::new();
        let mut h = ResponseHead::new(&mut buf, 206);
        h.content_range(0, 9, 100).content_range(99, 99, 100);
        h.finish();
        assert!(buf
            .ends_with(b"Content-Range: bytes 0-9/100\r\nContent-Range: bytes 99-99/100\r\n\r\n"));
    }

    #[test]
    fn head_encoding_is_exact() {
        let mut buf = Vec::new();
        let mut h = ResponseHead::new(&mut buf, 206);
        h.header("Content-Type", b"text/plain")
            .header_u64("Content-Length", 10)
            .connection(Version::Http10, true);
        h.finish();
        assert_eq!(
            buf,
            b"HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn header_list_joins_and_skips_empty() {
        let mut buf = Vec::new();
        let mut h = ResponseHead::new(&mut buf, 200);
        h.header_list("A", [&b"x"[..], b"y=1"])
            .header_list("B", std::iter::empty())
            .header_list("C", [&b"z"[..]]);
        h.finish();
        assert!(buf.ends_with(b"OK\r\nA: x, y=1\r\nC: z\r\n\r\n"));
    }

    #[test]
    fn push_u64_edges() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut b = Vec::new();
            push_u64(&mut b, n);
            assert_eq!(String::from_utf8(b).unwrap(), n.to_string());
        }
    }

    #[test]
    fn date_is_imf_fixdate() {
        let d = DateCache::default().now();
        let s = std::str::from_utf8(&d).unwrap();
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(s).is_ok());
    }
}
