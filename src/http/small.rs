//! The one writer of the proxy's own small answers: every error (the codec's early 400/408/413/
//! 414/431/505, the pipeline's JSON errors, the admin API's), `OPTIONS`, `/health` and
//! `/ready` on both listeners, and the admin replies. Each is a head and a body of at most a
//! few KiB written in one piece: `Date`, `Content-Type`, `Content-Length`, `X-Request-Id`, the
//! caller's fields, `Connection`, then the body (none for HEAD).
//!
//! Not the hit path (`pipeline::cached`) nor streamed S3 responses (`pipeline::respond`),
//! which write their own heads. Hot only for errors; cost: the head and body copied into the
//! connection's reused write buffer and one write, no allocation here (an error's JSON body is
//! one `serde_json` serialisation, [`json_body`]).

use std::io;

use super::request::Version;
use super::response::{DateCache, ResponseHead};
use super::server::Conn;
use crate::error::{json_body, ErrorKind, ProxyError};

/// The request a small response answers.
#[derive(Clone, Copy, Debug)]
pub struct Answering<'a> {
    /// The `X-Request-Id` sent back (the client's, or a new UUID).
    pub request_id: &'a str,
    /// The request's HTTP version, for the `Connection` field (RFC 9112 section 9.3).
    pub version: Version,
    /// The request was HEAD: the head says what GET would get, no body follows (RFC 9110
    /// section 9.3.2).
    pub head_request: bool,
}

/// What a small response carries besides its status.
#[derive(Clone, Copy, Debug)]
pub struct SmallBody<'a> {
    /// `Content-Type`, or `None` for an empty body (`OPTIONS`).
    pub content_type: Option<&'a [u8]>,
    /// The whole body; its length is the `Content-Length` (none on 204, RFC 9110 section 8.6).
    pub bytes: &'a [u8],
}

/// Write a complete small response for `to` into `conn`: the status line, `Date`,
/// `Content-Type`, `Content-Length`, `X-Request-Id`, whatever `fields` adds, `Connection` per
/// `conn.keep_alive` and the version, the empty line, then the body unless HEAD
/// ([`encode_small`]); one write within the send timeout. Errors: the socket's (the caller
/// ends the connection).
pub async fn write_small(
    conn: &mut Conn,
    dates: &DateCache,
    to: Answering<'_>,
    status: u16,
    body: SmallBody<'_>,
    fields: impl FnOnce(&mut ResponseHead<'_>),
) -> io::Result<()> {
    let keep_alive = conn.keep_alive;
    encode_small(&mut conn.wbuf, dates, to, keep_alive, status, body, fields);
    conn.flush().await
}

/// Write `e` as the JSON error of DESIGN section 5 ([`encode_error`]) into `conn` in one write.
/// Errors: the socket's.
pub async fn write_error(
    conn: &mut Conn,
    dates: &DateCache,
    to: Answering<'_>,
    e: &ProxyError,
    fields: impl FnOnce(&mut ResponseHead<'_>),
) -> io::Result<()> {
    let keep_alive = conn.keep_alive;
    encode_error(&mut conn.wbuf, dates, to, keep_alive, e, fields);
    conn.flush().await
}

/// The bytes of [`write_small`] into `buf` (cleared first). `keep_alive` false adds
/// `Connection: close`; `Content-Length` is left out on 204 (RFC 9110 section 8.6).
pub fn encode_small(
    buf: &mut Vec<u8>,
    dates: &DateCache,
    to: Answering<'_>,
    keep_alive: bool,
    status: u16,
    body: SmallBody<'_>,
    fields: impl FnOnce(&mut ResponseHead<'_>),
) {
    debug_assert!(status >= 200, "interim responses are not small answers");
    debug_assert!(status != 204 || body.bytes.is_empty());
    let mut h = ResponseHead::new(buf, status);
    h.header("Date", &dates.now());
    if let Some(ct) = body.content_type {
        h.header("Content-Type", ct);
    }
    if status != 204 {
        h.header_u64("Content-Length", body.bytes.len() as u64);
    }
    h.header("X-Request-Id", to.request_id.as_bytes());
    fields(&mut h);
    h.connection(to.version, keep_alive);
    h.finish();
    if !to.head_request {
        buf.extend_from_slice(body.bytes);
    }
}

/// The bytes of `e` as the JSON error of DESIGN section 5, through [`encode_small`]: status
/// from [`ProxyError::status`], body `{"error", "status", "message", "request_id"}`
/// ([`json_body`]), the error's own header and `Retry-After` in seconds (RFC 9110 section
/// 10.2.3), then `fields` (the bucket's policy fields; `Cache-Control: no-store` on the admin
/// API).
pub fn encode_error(
    buf: &mut Vec<u8>,
    dates: &DateCache,
    to: Answering<'_>,
    keep_alive: bool,
    e: &ProxyError,
    fields: impl FnOnce(&mut ResponseHead<'_>),
) {
    let status = e.status();
    // Our own 429 and 503 always say when to come back (an S3 status passed through as
    // `OriginStatus` carries what S3 sent).
    debug_assert!(
        !matches!(
            e.kind,
            ErrorKind::TooManyRequests | ErrorKind::ServiceUnavailable
        ) || e.retry_after_secs.is_some(),
        "429 and 503 always carry Retry-After"
    );
    let body = json_body(status, &e.message, to.request_id);
    let body = SmallBody {
        content_type: Some(b"application/json"),
        bytes: &body,
    };
    encode_small(buf, dates, to, keep_alive, status, body, |h| {
        if let Some((name, value)) = &e.header {
            h.header(name, value.as_bytes());
        }
        if let Some(secs) = e.retry_after_secs {
            h.header_u64("Retry-After", u64::from(secs));
        }
        fields(h);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Side;

    const TO: Answering<'static> = Answering {
        request_id: "rid-1",
        version: Version::Http11,
        head_request: false,
    };

    /// The head with its `Date` value replaced by `D`, and the body.
    fn split(buf: &[u8]) -> (String, String) {
        let text = String::from_utf8(buf.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let date_at = head.find("Date: ").unwrap() + "Date: ".len();
        let head = format!("{}D{}", &head[..date_at], &head[date_at + 29..]);
        (head, body.to_owned())
    }

    #[test]
    fn small_response_head_is_exact() {
        let mut buf = Vec::new();
        let body = SmallBody {
            content_type: Some(b"application/json"),
            bytes: b"{}",
        };
        encode_small(&mut buf, &DateCache::default(), TO, true, 200, body, |h| {
            h.header("Cache-Control", b"no-store");
        });
        assert_eq!(
            split(&buf),
            (
                "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: application/json\r\n\
                 Content-Length: 2\r\nX-Request-Id: rid-1\r\nCache-Control: no-store"
                    .to_owned(),
                "{}".to_owned()
            )
        );
    }

    /// [`encode_small`] of `body` (no content type) for `to`, without extra fields, split.
    fn plain(to: Answering<'_>, keep_alive: bool, status: u16, body: &[u8]) -> (String, String) {
        let mut buf = Vec::new();
        let body = SmallBody {
            content_type: None,
            bytes: body,
        };
        let dates = DateCache::default();
        encode_small(&mut buf, &dates, to, keep_alive, status, body, |_| {});
        split(&buf)
    }

    #[test]
    fn head_requests_get_the_length_but_no_body_and_204_no_length() {
        let to = Answering {
            head_request: true,
            version: Version::Http10,
            ..TO
        };
        let (head, rest) = plain(to, false, 200, b"abc");
        assert!(head.contains("Content-Length: 3"), "{head}");
        assert!(head.ends_with("Connection: close"), "{head}");
        assert!(!head.contains("Content-Type"), "{head}");
        assert_eq!(rest, "");
        let (head, _) = plain(to, true, 200, b"");
        assert!(head.ends_with("Connection: keep-alive"), "HTTP/1.0: {head}");
        let (head, _) = plain(TO, true, 204, b"");
        assert!(!head.contains("Content-Length"), "{head}");
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
        assert!(!head.contains("Connection"), "{head}");
    }

    #[test]
    fn errors_carry_their_header_retry_after_and_the_exact_json_body() {
        let mut buf = Vec::new();
        let e = ProxyError::unavailable(Side::Origin, 1, "S3 answered 503 (SlowDown)");
        encode_error(&mut buf, &DateCache::default(), TO, true, &e, |h| {
            h.header("Cache-Control", b"private");
        });
        let (head, body) = split(&buf);
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(
            head.ends_with("\r\nRetry-After: 1\r\nCache-Control: private"),
            "{head}"
        );
        assert_eq!(body.as_bytes(), json_body(503, &e.message, "rid-1"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));

        let e = ProxyError::client(ErrorKind::MethodNotAllowed, "no").with_header("Allow", "GET");
        let to = Answering {
            head_request: true,
            ..TO
        };
        encode_error(&mut buf, &DateCache::default(), to, true, &e, |_| {});
        let (head, body) = split(&buf);
        assert!(
            head.ends_with("X-Request-Id: rid-1\r\nAllow: GET"),
            "{head}"
        );
        assert!(!head.contains("Retry-After"), "{head}");
        assert_eq!(body, "");
    }
}
