//! HTTP/1.1 request-head parsing (RFC 9112 sections 2-3, 5-6) on `httparse`.
//!
//! Hot path: runs once per request on every connection. `httparse` scans the head in place
//! (SIMD where available) into a stack array of header slots; this module then checks framing
//! (Content-Length / Transfer-Encoding), Host, Connection and Expect in the same pass that copies
//! the fields into an [`http::HeaderMap`]. Cost: one linear scan of the head plus the allocations
//! `HeaderMap` itself needs (the map, one per non-standard field name), one copy of the head
//! that every header value shares (so values keep at most `max_header_bytes` alive), and one
//! `String` for the request-target. Measured ~1.2 us for a 609-byte Chrome GET with 14 fields,
//! ~0.3 us of it in httparse (benches/http_parse.rs, shared 2-core box). The limits are
//! enforced on incomplete heads too, and only the first `max_header_bytes` of the buffer are
//! ever scanned, so a client trickling an endless head costs at most O(max_header_bytes) per
//! call.
//!
//! The h1 codec is ours rather than monoio-http's because that codec has no header size limit and
//! ignores `Expect: 100-continue` (DESIGN section 3).

use std::fmt;
use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::error::{ErrorKind, ProxyError};

/// Header slots kept on the stack; a `max_headers` above this uses a heap array instead.
const STACK_HEADER_SLOTS: usize = 128;

/// Size limits applied while parsing a request head (DESIGN section 5, config `server.limits`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request-target accepted, in bytes, as sent on the wire (414 above it).
    pub max_uri_bytes: usize,
    /// Longest request head accepted, in bytes: request line, header fields and the empty line
    /// that ends the head (431 above it; 414 when the request line alone overflows it).
    pub max_header_bytes: usize,
    /// Most header fields accepted; each field line counts once (431 above it).
    pub max_headers: usize,
    /// Largest request body accepted on GET/HEAD, in bytes (413 above it). Not used by
    /// [`parse_request_head`]; the connection loop applies it to `content_length` and to the
    /// decoded chunked body.
    pub max_body_bytes: u64,
}

/// HTTP version of a request (RFC 9112 section 2.3). Only HTTP/1.0 and HTTP/1.1 are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`: persistent only with `Connection: keep-alive`.
    Http10,
    /// `HTTP/1.1`: persistent unless `Connection: close`.
    Http11,
}

/// One parsed request head (RFC 9112 section 3 request line plus section 5 field lines).
#[derive(Debug)]
pub struct RequestHead {
    /// Request method (RFC 9110 section 9); extension methods are kept, the proxy answers 405.
    pub method: Method,
    /// Request-target: origin-form `"/path?query"` exactly as sent, `"*"` (OPTIONS only), or an
    /// absolute-form target `"http://host/p?q"` reduced to its path and query (`"/p?q"`; `"/"`
    /// when the URI has no path). RFC 9112 section 3.2.
    pub target: String,
    /// Protocol version of the request line.
    pub version: Version,
    /// Every header field in arrival order; repeated names keep every value.
    pub headers: HeaderMap,
    /// Value of Content-Length (RFC 9110 section 8.6), when present; repeated identical values
    /// are folded into one.
    pub content_length: Option<u64>,
    /// Transfer-Encoding is present and its final coding is `chunked` (RFC 9112 section 6.1).
    pub chunked: bool,
    /// The connection stays open after the response (RFC 9112 section 9.3): HTTP/1.1 unless a
    /// `close` Connection option, HTTP/1.0 only with a `keep-alive` option and no `close`.
    pub keep_alive: bool,
    /// HTTP/1.1 request carrying `Expect: 100-continue` (RFC 9110 section 10.1.1); the
    /// expectation is ignored on HTTP/1.0 as that section requires. Other expectations are
    /// ignored.
    pub expect_continue: bool,
}

/// Why a request head was rejected; [`HeadError::kind`] gives the error kind (and through
/// [`ErrorKind::status`] the response status), [`HeadError::message`] the client-facing text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Request-target longer than `max_uri_bytes`, or a request line that fills
    /// `max_header_bytes` on its own: 414 (RFC 9112 section 3).
    UriTooLong,
    /// Head longer than `max_header_bytes`: 431 (RFC 6585 section 5).
    HeaderTooLarge,
    /// More than `max_headers` field lines: 431 (RFC 6585 section 5).
    TooManyHeaders,
    /// Malformed or ambiguous head: 400. The string is a short fixed reason, safe to send to the
    /// client.
    BadRequest(&'static str),
    /// A request line with an HTTP version other than 1.0 or 1.1: 505 (RFC 9110 section 15.6.6).
    VersionNotSupported,
}

impl HeadError {
    /// The error kind answered: [`ErrorKind::UriTooLong`] (414),
    /// [`ErrorKind::HeaderFieldsTooLarge`] (431, both size and count),
    /// [`ErrorKind::BadRequest`] (400) or [`ErrorKind::VersionNotSupported`] (505).
    pub fn kind(&self) -> ErrorKind {
        match self {
            HeadError::UriTooLong => ErrorKind::UriTooLong,
            HeadError::HeaderTooLarge | HeadError::TooManyHeaders => {
                ErrorKind::HeaderFieldsTooLarge
            }
            HeadError::BadRequest(_) => ErrorKind::BadRequest,
            HeadError::VersionNotSupported => ErrorKind::VersionNotSupported,
        }
    }

    /// The `message` of the JSON error body: fixed text naming the limit or the reason.
    pub fn message(&self) -> &'static str {
        match self {
            HeadError::UriTooLong => "request-target longer than max_uri_bytes",
            HeadError::HeaderTooLarge => "header block larger than max_header_bytes",
            HeadError::TooManyHeaders => "more header fields than max_headers",
            HeadError::BadRequest(why) => why,
            HeadError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }

    /// The client error this head gets: [`HeadError::kind`] with [`HeadError::message`].
    pub fn to_error(&self) -> ProxyError {
        ProxyError::client(self.kind(), self.message())
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::UriTooLong => f.write_str("request-target too long"),
            HeadError::HeaderTooLarge => f.write_str("request header section too large"),
            HeadError::TooManyHeaders => f.write_str("too many request header fields"),
            HeadError::BadRequest(reason) => write!(f, "bad request: {reason}"),
            HeadError::VersionNotSupported => f.write_str("HTTP version not supported"),
        }
    }
}

impl std::error::Error for HeadError {}

/// Parse one request head from the start of `buf` (RFC 9112).
///
/// Returns `Ok(None)` when the head is incomplete (read more and call again with the grown
/// buffer), or `Ok(Some((head, n)))` when a head was parsed from `buf[..n]`; the body or the next
/// pipelined request starts at `buf[n]`. Empty lines before the request line are skipped and
/// counted in `n` (RFC 9112 section 2.2).
///
/// Limits apply to incomplete heads as well: a request-target already longer than
/// `max_uri_bytes` gives [`HeadError::UriTooLong`]; `max_header_bytes` buffered without a
/// complete head gives [`HeadError::HeaderTooLarge`] ([`HeadError::UriTooLong`] if the request
/// line is not yet complete); more than `max_headers` fields gives
/// [`HeadError::TooManyHeaders`] as soon as the extra field line is complete.
///
/// [`HeadError::BadRequest`] on: syntax errors (including whitespace before a field colon and
/// obs-fold, RFC 9112 section 5); both Content-Length and Transfer-Encoding; an invalid or
/// differing repeated Content-Length; Transfer-Encoding not ending in `chunked`, `chunked` twice,
/// or Transfer-Encoding on HTTP/1.0 (RFC 9112 section 6.1); a missing Host on HTTP/1.1 or more
/// than one Host (RFC 9112 section 3.2); a request-target not in origin-form, except
/// absolute-form `http(s)://` and `*` for OPTIONS.
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    if limits.max_headers <= STACK_HEADER_SLOTS {
        let mut slots =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_SLOTS];
        parse_with_slots(buf, limits, &mut slots[..limits.max_headers])
    } else {
        let mut slots = Vec::with_capacity(limits.max_headers);
        slots.resize_with(limits.max_headers, MaybeUninit::uninit);
        parse_with_slots(buf, limits, &mut slots)
    }
}

fn parse_with_slots<'b>(
    buf: &'b [u8],
    limits: &Limits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Never look past the head limit: a complete head is then within the limit by construction.
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return check_partial(window, req.path, req.version.is_some(), limits).map(|()| None)
        }
        Err(e) => return Err(map_httparse_error(e, window, req.path, limits)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        debug_assert!(false, "httparse returned Complete without a request line");
        return Err(HeadError::BadRequest("malformed request line"));
    };
    if target.len() > limits.max_uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::BadRequest("malformed method"))?;
    let target = origin_target(&method, target)?;

    let mut headers =
        HeaderMap::try_with_capacity(req.headers.len()).map_err(|_| HeadError::TooManyHeaders)?;
    let mut framing = Framing::default();
    let head_bytes = Bytes::copy_from_slice(&buf[..n]);
    for h in req.headers.iter() {
        framing.observe(h.name, h.value)?;
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::BadRequest("malformed header name"))?;
        // Values share one copy of the head instead of one allocation each. httparse returns
        // sub-slices of `buf`, so the offset arithmetic stays inside `head_bytes`.
        let offset = (h.value.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        let value_bytes = head_bytes
            .get(offset..)
            .and_then(|rest| rest.get(..h.value.len()))
            .ok_or(HeadError::BadRequest("malformed header value"))?;
        debug_assert_eq!(value_bytes, h.value);
        let value = HeaderValue::from_maybe_shared(head_bytes.slice_ref(value_bytes))
            .map_err(|_| HeadError::BadRequest("malformed header value"))?;
        headers
            .try_append(name, value)
            .map_err(|_| HeadError::TooManyHeaders)?;
    }
    let head = framing.finish(method, target, version, headers)?;
    debug_assert!(n <= limits.max_header_bytes && n <= buf.len());
    Ok(Some((head, n)))
}

/// Limit checks on an incomplete head. `path` is the request-target if httparse already
/// delimited it; `line_done` is true once the version was read.
fn check_partial(
    window: &[u8],
    path: Option<&str>,
    line_done: bool,
    limits: &Limits,
) -> Result<(), HeadError> {
    let target_len = match path {
        Some(p) => p.len(),
        None => partial_target(window).len(),
    };
    if target_len > limits.max_uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    if window.len() >= limits.max_header_bytes {
        // The head cannot complete within the limit any more.
        return Err(if line_done {
            HeadError::HeaderTooLarge
        } else {
            HeadError::UriTooLong
        });
    }
    Ok(())
}

/// The request-target bytes received so far in an incomplete request line (empty if the method
/// is not complete yet).
fn partial_target(window: &[u8]) -> &[u8] {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = &window[start..];
    match line.iter().position(|&b| b == b' ') {
        Some(sp) => {
            let rest = &line[sp + 1..];
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            &rest[..end]
        }
        None => &[],
    }
}

fn map_httparse_error(
    e: httparse::Error,
    window: &[u8],
    path: Option<&str>,
    limits: &Limits,
) -> HeadError {
    // A target over the limit is reported as such even when a later byte is malformed.
    let target_len = path.map_or_else(|| partial_target(window).len(), str::len);
    if target_len > limits.max_uri_bytes {
        return HeadError::UriTooLong;
    }
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => {
            // "HTTP/2.0" and friends are well-formed but unsupported; anything else is garbage.
            let line_end = window
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(window.len());
            let line = &window[..line_end];
            let proto = match line.iter().rposition(|&b| b == b' ') {
                Some(sp) => &line[sp + 1..],
                None => &[][..],
            };
            if is_http_version_syntax(proto) {
                HeadError::VersionNotSupported
            } else {
                HeadError::BadRequest("malformed HTTP version")
            }
        }
        httparse::Error::HeaderName => HeadError::BadRequest("malformed header name"),
        httparse::Error::HeaderValue => HeadError::BadRequest("malformed header value"),
        httparse::Error::NewLine => HeadError::BadRequest("malformed line ending"),
        httparse::Error::Token => HeadError::BadRequest("malformed request line"),
        _ => HeadError::BadRequest("malformed request head"),
    }
}

/// `HTTP/<digit>.<digit>` (RFC 9112 section 2.3), or a prefix of it cut off by the buffer end.
fn is_http_version_syntax(proto: &[u8]) -> bool {
    const SHAPE: &[u8] = b"HTTP/0.0";
    proto.len() <= SHAPE.len()
        && proto.len() > 5
        && proto.iter().zip(SHAPE).all(|(&b, &s)| {
            if s == b'0' {
                b.is_ascii_digit()
            } else {
                b == s
            }
        })
}

/// Reduce the request-target to origin-form (RFC 9112 section 3.2).
fn origin_target(method: &Method, target: &str) -> Result<String, HeadError> {
    let bytes = target.as_bytes();
    if bytes.first() == Some(&b'/') {
        return Ok(target.to_owned());
    }
    if target == "*" {
        return if *method == Method::OPTIONS {
            Ok(target.to_owned())
        } else {
            Err(HeadError::BadRequest(
                "asterisk-form is only allowed for OPTIONS",
            ))
        };
    }
    let after_scheme = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(HeadError::BadRequest("request-target must be origin-form"))?;
    let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    if authority_end == 0 {
        return Err(HeadError::BadRequest(
            "absolute-form request-target without host",
        ));
    }
    let path_and_query = &after_scheme[authority_end..];
    if path_and_query.starts_with('/') {
        Ok(path_and_query.to_owned())
    } else {
        // "http://host" or "http://host?q": the path is empty, which means "/".
        let mut t = String::with_capacity(path_and_query.len() + 1);
        t.push('/');
        t.push_str(path_and_query);
        Ok(t)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        // The prefix is ASCII, so this index is a char boundary.
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Comma-separated list elements with surrounding OWS removed; empty elements skipped
/// (RFC 9110 section 5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// Message framing and connection options gathered while walking the header fields once.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    te_last_chunked: bool,
    te_chunked_count: u32,
    hosts: u32,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
}

impl Framing {
    fn observe(&mut self, name: &str, value: &[u8]) -> Result<(), HeadError> {
        // Dispatch on length first: most fields are none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => self.hosts += 1,
            6 if name.eq_ignore_ascii_case("expect")
                && value.trim_ascii().eq_ignore_ascii_case(b"100-continue") =>
            {
                self.expect_continue = true;
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for opt in list_elements(value) {
                    if opt.eq_ignore_ascii_case(b"close") {
                        self.conn_close = true;
                    } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                        self.conn_keep_alive = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let mut any = false;
                for element in list_elements(value) {
                    any = true;
                    let len = parse_decimal(element)
                        .ok_or(HeadError::BadRequest("invalid Content-Length"))?;
                    match self.content_length {
                        Some(prev) if prev != len => {
                            return Err(HeadError::BadRequest("conflicting Content-Length"))
                        }
                        _ => self.content_length = Some(len),
                    }
                }
                if !any {
                    return Err(HeadError::BadRequest("invalid Content-Length"));
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                self.transfer_encoding = true;
                // An empty field value leaves the coding list not ending in chunked.
                self.te_last_chunked = false;
                for coding in list_elements(value) {
                    // A coding may carry parameters ("gzip;q=1"): compare the name only.
                    let name_end = coding
                        .iter()
                        .position(|&b| b == b';' || b == b' ' || b == b'\t')
                        .unwrap_or(coding.len());
                    self.te_last_chunked = coding[..name_end].eq_ignore_ascii_case(b"chunked");
                    if self.te_last_chunked {
                        self.te_chunked_count += 1;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(
        self,
        method: Method,
        target: String,
        version: Version,
        headers: HeaderMap,
    ) -> Result<RequestHead, HeadError> {
        if self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(HeadError::BadRequest(
                    "both Content-Length and Transfer-Encoding",
                ));
            }
            if version == Version::Http10 {
                return Err(HeadError::BadRequest(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            if !self.te_last_chunked {
                return Err(HeadError::BadRequest(
                    "Transfer-Encoding does not end in chunked",
                ));
            }
            if self.te_chunked_count > 1 {
                return Err(HeadError::BadRequest("chunked applied more than once"));
            }
        }
        if self.hosts > 1 {
            return Err(HeadError::BadRequest("more than one Host"));
        }
        if self.hosts == 0 && version == Version::Http11 {
            return Err(HeadError::BadRequest("missing Host"));
        }
        let keep_alive = match version {
            Version::Http11 => !self.conn_close,
            Version::Http10 => self.conn_keep_alive && !self.conn_close,
        };
        Ok(RequestHead {
            method,
            target,
            version,
            headers,
            content_length: self.content_length,
            chunked: self.transfer_encoding,
            keep_alive,
            expect_continue: self.expect_continue && version == Version::Http11,
        })
    }
}

/// `1*DIGIT` as u64; None on any other byte, empty input or overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_uri_bytes: 8192,
        max_header_bytes: 16384,
        max_headers: 100,
        max_body_bytes: 1024,
    };

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request_head(buf, &LIMITS)
    }

    fn parse_ok(buf: &[u8]) -> (RequestHead, usize) {
        match parse(buf) {
            Ok(Some(v)) => v,
            other => panic!(
                "expected a head from {:?}, got {:?}",
                String::from_utf8_lossy(buf),
                other.map(|o| o.map(|(_, n)| n))
            ),
        }
    }

    fn parse_err(buf: &[u8]) -> HeadError {
        match parse(buf) {
            Err(e) => e,
            Ok(v) => panic!(
                "expected an error from {:?}, got {:?}",
                String::from_utf8_lossy(buf),
                v.map(|(h, n)| (h.target, n))
            ),
        }
    }

    const SIMPLE: &[u8] =
        b"GET /bucket/key.txt?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

    #[test]
    fn parses_simple_get() {
        let (head, n) = parse_ok(SIMPLE);
        assert_eq!(n, SIMPLE.len());
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target, "/bucket/key.txt?x=1");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers["host"], "example.com");
        assert_eq!(head.headers["accept"], "*/*");
        assert_eq!(head.content_length, None);
        assert!(!head.chunked);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn pipelined_heads_consume_exactly_one() {
        let second = b"HEAD /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        let mut buf = SIMPLE.to_vec();
        buf.extend_from_slice(second);
        let (first, n) = parse_ok(&buf);
        assert_eq!(n, SIMPLE.len());
        assert_eq!(first.target, "/bucket/key.txt?x=1");
        let (next, m) = parse_ok(&buf[n..]);
        assert_eq!(m, second.len());
        assert_eq!(next.method, Method::HEAD);
        assert_eq!(next.target, "/b");
        assert!(!next.keep_alive);
    }

    #[test]
    fn head_followed_by_body_bytes() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let (head, n) = parse_ok(buf);
        assert_eq!(&buf[n..], b"hello");
        assert_eq!(head.content_length, Some(5));
    }

    #[test]
    fn every_split_point_is_incomplete() {
        for cut in 0..SIMPLE.len() {
            assert!(
                matches!(parse(&SIMPLE[..cut]), Ok(None)),
                "prefix of {cut} bytes should be incomplete"
            );
        }
        assert!(parse(SIMPLE).unwrap().is_some());
    }

    #[test]
    fn bare_lf_heads_and_leading_empty_lines() {
        let buf = b"\r\n\nGET /a HTTP/1.1\nHost: h\n\n";
        let (head, n) = parse_ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(head.target, "/a");
    }

    #[test]
    fn uri_limit_boundary() {
        let limits = Limits {
            max_uri_bytes: 10,
            ..LIMITS
        };
        let ok = b"GET /123456789 HTTP/1.1\r\nHost: h\r\n\r\n"; // target is 10 bytes
        assert!(parse_request_head(ok, &limits).unwrap().is_some());
        let long = b"GET /1234567890 HTTP/1.1\r\nHost: h\r\n\r\n"; // 11 bytes
        assert_eq!(
            parse_request_head(long, &limits).unwrap_err(),
            HeadError::UriTooLong
        );
        // Incomplete request line: exactly 10 target bytes so far is fine, 11 is not.
        assert!(parse_request_head(b"GET /123456789", &limits)
            .unwrap()
            .is_none());
        assert_eq!(
            parse_request_head(b"GET /1234567890", &limits).unwrap_err(),
            HeadError::UriTooLong
        );
        // Target complete, rest of the head still missing.
        assert_eq!(
            parse_request_head(b"GET /1234567890 HTT", &limits).unwrap_err(),
            HeadError::UriTooLong
        );
        assert_eq!(HeadError::UriTooLong.kind().status(), 414);
    }

    #[test]
    fn uri_limit_applies_to_absolute_form_as_sent() {
        let limits = Limits {
            max_uri_bytes: 12,
            ..LIMITS
        };
        let buf = b"GET http://h/abcdef HTTP/1.1\r\nHost: h\r\n\r\n"; // 19 bytes as sent
        assert_eq!(
            parse_request_head(buf, &limits).unwrap_err(),
            HeadError::UriTooLong
        );
    }

    #[test]
    fn header_bytes_limit_boundary() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: aaaa\r\n\r\n";
        let exact = Limits {
            max_header_bytes: buf.len(),
            ..LIMITS
        };
        let (_, n) = parse_request_head(buf, &exact).unwrap().unwrap();
        assert_eq!(n, buf.len());
        let short = Limits {
            max_header_bytes: buf.len() - 1,
            ..LIMITS
        };
        assert_eq!(
            parse_request_head(buf, &short).unwrap_err(),
            HeadError::HeaderTooLarge
        );
        // The same limit hits a head that is still incomplete.
        assert_eq!(
            parse_request_head(&buf[..buf.len() - 1], &short).unwrap_err(),
            HeadError::HeaderTooLarge
        );
        assert!(parse_request_head(&buf[..buf.len() - 2], &short)
            .unwrap()
            .is_none());
        // Extra bytes after a head within the limit (a body, a pipelined request) are fine.
        let mut with_body = buf.to_vec();
        with_body.extend_from_slice(&[b'x'; 64]);
        assert!(parse_request_head(&with_body, &exact).unwrap().is_some());
        assert_eq!(HeadError::HeaderTooLarge.kind().status(), 431);
    }

    #[test]
    fn header_bytes_limit_in_request_line_is_uri_too_long() {
        let limits = Limits {
            max_uri_bytes: 1000,
            max_header_bytes: 20,
            ..LIMITS
        };
        assert_eq!(
            parse_request_head(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa", &limits).unwrap_err(),
            HeadError::UriTooLong
        );
        // Request line complete (17 bytes), a field line still arriving: 431, not 414.
        assert_eq!(
            parse_request_head(b"GET /a HTTP/1.1\r\nHost: xxx", &limits).unwrap_err(),
            HeadError::HeaderTooLarge
        );
    }

    #[test]
    fn header_count_limit_boundary() {
        let limits = Limits {
            max_headers: 3,
            ..LIMITS
        };
        let ok = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            parse_request_head(ok, &limits)
                .unwrap()
                .unwrap()
                .0
                .headers
                .len(),
            3
        );
        let over = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_request_head(over, &limits).unwrap_err(),
            HeadError::TooManyHeaders
        );
        // Detected once the extra field line is complete, before the head is.
        let partial = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3";
        assert!(parse_request_head(partial, &limits).unwrap().is_none());
        let partial = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
        assert_eq!(
            parse_request_head(partial, &limits).unwrap_err(),
            HeadError::TooManyHeaders
        );
        assert_eq!(HeadError::TooManyHeaders.kind().status(), 431);
    }

    #[test]
    fn header_count_above_stack_slots_uses_heap() {
        let limits = Limits {
            max_headers: 200,
            ..LIMITS
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..199 {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let (head, n) = parse_request_head(&buf, &limits).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(head.headers.len(), 200);
        let mut over = buf[..buf.len() - 2].to_vec();
        over.extend_from_slice(b"X-Last: v\r\n\r\n");
        assert_eq!(
            parse_request_head(&over, &limits).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn repeated_headers_are_all_kept() {
        let (head, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n",
                true,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: foo ,Keep-Alive\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n", false),
        ];
        for (buf, want) in cases {
            let (head, _) = parse_ok(buf);
            assert_eq!(head.keep_alive, *want, "{}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn http10_needs_no_host() {
        let (head, _) = parse_ok(b"GET /x HTTP/1.0\r\n\r\n");
        assert_eq!(head.version, Version::Http10);
    }

    #[test]
    fn expect_continue() {
        let (head, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n");
        assert!(head.expect_continue);
        let (head, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n");
        assert!(!head.expect_continue);
        // RFC 9110 section 10.1.1: ignored on HTTP/1.0.
        let (head, _) = parse_ok(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(!head.expect_continue);
    }

    #[test]
    fn absolute_form_is_reduced_to_path_and_query() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n",
                "/a/b?c=d",
            ),
            (
                b"GET HTTPS://example.com:8443/k HTTP/1.1\r\nHost: x\r\n\r\n",
                "/k",
            ),
            (b"GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n", "/"),
            (
                b"GET http://example.com?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                "/?q=1",
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(parse_ok(buf).0.target, *want);
        }
        assert!(matches!(
            parse_err(b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
        assert!(matches!(
            parse_err(b"GET ftp://h/a HTTP/1.1\r\nHost: x\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
    }

    #[test]
    fn target_forms() {
        assert_eq!(
            parse_ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").0.target,
            "*"
        );
        assert!(matches!(
            parse_err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
        assert!(matches!(
            parse_err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
        assert!(matches!(
            parse_err(b"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
        let (head, _) = parse_ok("GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes());
        assert_eq!(head.target, "/caf\u{e9}");
    }

    #[test]
    fn extension_methods_are_kept() {
        let (head, _) = parse_ok(b"PURGE /a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.method.as_str(), "PURGE");
    }

    #[test]
    fn content_length_rules() {
        let (h, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.content_length, Some(0));
        let (h, _) = parse_ok(
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
        );
        assert_eq!(h.content_length, Some(7));
        let (h, _) = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(h.content_length, Some(7));
        let (h, _) =
            parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(h.content_length, Some(u64::MAX));
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 8\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n",
        ] {
            assert!(
                matches!(parse_err(bad), HeadError::BadRequest(r) if r.contains("Content-Length")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        let (h, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert!(h.chunked);
        assert_eq!(h.content_length, None);
        let (h, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.chunked);
        let (h, _) =
            parse_ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(h.chunked);
        for bad in [
            // CL + TE conflict (request smuggling).
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parse_err(bad).kind().status(), 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            HeadError::BadRequest("missing Host")
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::BadRequest("more than one Host")
        );
        // An empty Host value is allowed (RFC 9112 section 3.2).
        assert!(parse_ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n")
            .0
            .headers
            .contains_key("host"));
    }

    #[test]
    fn version_errors() {
        assert_eq!(
            parse_err(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"),
            HeadError::VersionNotSupported
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"),
            HeadError::VersionNotSupported
        );
        assert_eq!(parse_err(b"GET / HTTP/2"), HeadError::VersionNotSupported);
        assert_eq!(HeadError::VersionNotSupported.kind().status(), 505);
        assert!(matches!(
            parse_err(b"GET / FOO/1.1\r\nHost: h\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
        assert!(matches!(
            parse_err(b"GET / HTTP/x.1\r\n\r\n"),
            HeadError::BadRequest(_)
        ));
    }

    #[test]
    fn syntax_errors_are_bad_request() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"[..], // space before colon (RFC 9112 section 5.1)
            b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n", // obs-fold
            b"GET / HTTP/1.1\r\nHost: h\r\nBad\x01Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\rHost: h\r\n\r\n",
            b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(
                parse_err(bad).kind().status(),
                400,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn error_display_is_client_safe() {
        assert_eq!(
            HeadError::BadRequest("missing Host").to_string(),
            "bad request: missing Host"
        );
        assert_eq!(HeadError::UriTooLong.to_string(), "request-target too long");
    }

    #[test]
    fn chrome_like_get() {
        let buf = concat!(
            "GET /assets/img/logo.png?v=3 HTTP/1.1\r\n",
            "Host: cdn.example.com\r\n",
            "Connection: keep-alive\r\n",
            "sec-ch-ua: \"Chromium\";v=\"130\", \"Google Chrome\";v=\"130\"\r\n",
            "sec-ch-ua-mobile: ?0\r\n",
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n",
            "Accept: image/avif,image/webp,*/*;q=0.8\r\n",
            "Sec-Fetch-Site: same-origin\r\n",
            "Accept-Encoding: gzip, deflate, br, zstd\r\n",
            "Range: bytes=0-1023\r\n",
            "\r\n"
        )
        .as_bytes();
        let (head, n) = parse_ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(head.headers.len(), 9);
        assert_eq!(head.headers["range"], "bytes=0-1023");
        assert_eq!(head.headers["sec-ch-ua-mobile"], "?0");
        assert!(head.keep_alive);
    }
}
