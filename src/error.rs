//! The proxy's one error type: what failed, on which side, whether a retry is safe, and the single
//! place where that maps to an HTTP status and the JSON body of DESIGN section 5.
//!
//! Every status the proxy makes itself comes from [`ErrorKind::status`]: the codec's early
//! errors ([`crate::http::request::HeadError::kind`]), path checks
//! ([`crate::http::path::PathError::kind`]), auth ([`crate::auth::AuthError::kind`]), the
//! pipeline's phases, S3 errors turned into ours, and the admin API. Responses are written by
//! [`crate::http::small::write_error`].
//!
//! Not on the hot path of a successful request; building an error costs nothing for a fixed
//! message (`&'static str`) and one small `String` for a formatted one, and rendering its body
//! one `serde_json` serialisation (~1 us).

use std::borrow::Cow;
use std::fmt;

/// Which side caused the failure. Drives log levels and metrics labels, never the status alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse (bad path, method, limits, auth).
    Client,
    /// The S3 origin failed, timed out or answered with an error.
    Origin,
    /// A bug or resource exhaustion in the proxy itself.
    Internal,
}

/// What went wrong; each kind maps to exactly one status code in [`ErrorKind::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: malformed request, `..` segment, bad percent-encoding.
    BadRequest,
    /// 404: no bucket routes the path, or the path names no object key.
    NotFound,
    /// 401: no token, or a token that fails verification (RFC 6750 section 3).
    Unauthorized,
    /// 403: a valid token whose claims fail the bucket's rules.
    Forbidden,
    /// 405: a method other than GET, HEAD or OPTIONS.
    MethodNotAllowed,
    /// 408: the request head did not arrive within `request_header_timeout_ms`.
    RequestTimeout,
    /// 413: a request body longer than `max_body_bytes`.
    PayloadTooLarge,
    /// 414: a request-target longer than `max_uri_bytes`.
    UriTooLong,
    /// 431: a header block over `max_header_bytes` or more than `max_headers` fields.
    HeaderFieldsTooLarge,
    /// 505: an HTTP version other than 1.0 or 1.1.
    VersionNotSupported,
    /// 429: over a rate limit; answered with `Retry-After` (RFC 6585 section 4).
    TooManyRequests,
    /// 503: over `max_concurrent_requests`, every backend's breaker open, S3 `503 SlowDown` /
    /// `ServiceUnavailable`, or shards that did not answer the admin API; answered with
    /// `Retry-After` (RFC 9110 sections 15.6.4 and 10.2.3).
    ServiceUnavailable,
    /// 502: connection refused/reset, TLS failure, DNS failure, malformed upstream response, or an
    /// upstream 5xx other than the 503s above.
    BadGateway,
    /// 504: connect or first-byte timeout towards S3.
    GatewayTimeout,
    /// 500: a bug.
    Internal,
    /// 412: the request's If-Match / If-Unmodified-Since, evaluated by the proxy against the
    /// response it was about to send, is false (RFC 9110 section 13.2.2).
    PreconditionFailed,
    /// 416: the Range selects nothing of the representation (`bytes=-0`, or a start past the
    /// end), evaluated by the proxy (RFC 9110 section 15.5.17).
    RangeNotSatisfiable,
    /// An S3 error status passed through to the client unchanged (403, 404, 412, 416, ...).
    OriginStatus(u16),
}

impl ErrorKind {
    /// The status code this kind is answered with (RFC 9110 section 15).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::HeaderFieldsTooLarge => 431,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::BadGateway => 502,
            ErrorKind::GatewayTimeout => 504,
            ErrorKind::Internal => 500,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::RangeNotSatisfiable => 416,
            ErrorKind::OriginStatus(s) => s,
        }
    }
}

/// An error the proxy answers itself. `message` is shown to the client: it must never contain a
/// secret, a token or an internal address (callers build it from fixed text and S3 error codes).
#[derive(Debug, Clone)]
pub struct ProxyError {
    /// What failed.
    pub kind: ErrorKind,
    /// Who caused it.
    pub side: Side,
    /// Whether the same request may be retried on a fresh upstream connection without the client
    /// noticing (nothing was sent to the client yet and the request is idempotent).
    pub retryable: bool,
    /// Human-readable detail for the JSON body and the log line; fixed texts are borrowed.
    pub message: Cow<'static, str>,
    /// One extra response header the status requires (`Allow` on 405, `Content-Range` on 416,
    /// `WWW-Authenticate` on 401/403).
    pub header: Option<(&'static str, Cow<'static, str>)>,
    /// `Retry-After` in seconds (RFC 9110 section 10.2.3), set on every 429 and 503.
    pub retry_after_secs: Option<u32>,
}

impl ProxyError {
    fn new(
        kind: ErrorKind,
        side: Side,
        retryable: bool,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ProxyError {
            kind,
            side,
            retryable,
            message: message.into(),
            header: None,
            retry_after_secs: None,
        }
    }

    /// A client-side error of `kind` with `message`.
    pub fn client(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError::new(kind, Side::Client, false, message)
    }

    /// An origin-side error of `kind`; `retryable` says whether a fresh connection may succeed.
    pub fn origin(kind: ErrorKind, retryable: bool, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError::new(kind, Side::Origin, retryable, message)
    }

    /// An internal error (a bug): 500.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError::new(ErrorKind::Internal, Side::Internal, false, message)
    }

    /// 429 over a rate limit, with `Retry-After: retry_after_secs` (RFC 6585 section 4).
    pub fn too_many_requests(retry_after_secs: u32, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError::client(ErrorKind::TooManyRequests, message).with_retry_after(retry_after_secs)
    }

    /// 503 caused by `side` (the proxy's own limits: [`Side::Internal`]; open breakers or S3
    /// asking to slow down: [`Side::Origin`], retryable), with `Retry-After: retry_after_secs`.
    pub fn unavailable(
        side: Side,
        retry_after_secs: u32,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ProxyError::new(
            ErrorKind::ServiceUnavailable,
            side,
            side == Side::Origin,
            message,
        )
        .with_retry_after(retry_after_secs)
    }

    /// The same error with an extra response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        debug_assert!(
            !name.eq_ignore_ascii_case("retry-after"),
            "use with_retry_after"
        );
        self.header = Some((name, value.into()));
        self
    }

    /// The same error answered with `Retry-After: secs` (delay-seconds, RFC 9110 section
    /// 10.2.3). Costs no allocation: the value is formatted into the response head.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The status code (see [`ErrorKind::status`]).
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} side): {}",
            self.status(),
            self.side,
            self.message
        )
    }
}

impl std::error::Error for ProxyError {}

/// The JSON error body of DESIGN section 5:
/// `{"error": "<reason phrase>", "status": N, "message": "...", "request_id": "..."}`.
pub fn json_body(status: u16, message: &str, request_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": crate::http::response::reason(status),
        "status": status,
        "message": message,
        "request_id": request_id,
    });
    // Serialising a `Value` built from strings and integers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_status() {
        assert_eq!(ErrorKind::BadRequest.status(), 400);
        assert_eq!(ErrorKind::UriTooLong.status(), 414);
        assert_eq!(ErrorKind::HeaderFieldsTooLarge.status(), 431);
        assert_eq!(ErrorKind::BadGateway.status(), 502);
        assert_eq!(ErrorKind::GatewayTimeout.status(), 504);
        assert_eq!(ErrorKind::TooManyRequests.status(), 429);
        assert_eq!(ErrorKind::ServiceUnavailable.status(), 503);
        assert_eq!(ErrorKind::RequestTimeout.status(), 408);
        assert_eq!(ErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorKind::VersionNotSupported.status(), 505);
    }

    #[test]
    fn limits_and_unavailability_carry_retry_after() {
        let e = ProxyError::too_many_requests(7, "rate limit");
        assert_eq!(
            (e.status(), e.side, e.retry_after_secs),
            (429, Side::Client, Some(7))
        );
        assert!(!e.retryable);
        let e = ProxyError::unavailable(Side::Origin, 1, "S3 answered 503 (SlowDown)");
        assert_eq!((e.status(), e.retry_after_secs), (503, Some(1)));
        assert!(
            e.retryable,
            "an origin asking to slow down may be retried elsewhere"
        );
        let e = ProxyError::unavailable(Side::Internal, 2, "max_concurrent_requests");
        assert!(!e.retryable);
        assert!(ProxyError::client(ErrorKind::NotFound, "x")
            .retry_after_secs
            .is_none());
    }

    #[test]
    fn fixed_messages_are_borrowed() {
        let e = ProxyError::client(ErrorKind::NotFound, "no bucket");
        assert!(matches!(e.message, Cow::Borrowed("no bucket")));
    }

    #[test]
    fn json_body_has_the_contract_fields() {
        let body = json_body(404, "no bucket \"x\"", "rid-1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "Not Found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["message"], "no bucket \"x\"");
        assert_eq!(v["request_id"], "rid-1");
    }
}
