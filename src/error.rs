//! The proxy's one error type: what failed, on which side, whether a retry is safe, and the single
//! place where that maps to an HTTP status and the JSON body of DESIGN section 5.
//!
//! Not on the hot path of a successful request; building an error costs one small `String` for the
//! message, and rendering its body one `serde_json` serialisation (~1 us).

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
    /// 502: connection refused/reset, TLS failure, DNS failure, malformed upstream response, or an
    /// upstream 5xx.
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
    /// Human-readable detail for the JSON body and the log line.
    pub message: String,
    /// One extra response header the status requires (`Allow` on 405, `Content-Range` on 416).
    pub header: Option<(&'static str, String)>,
}

impl ProxyError {
    /// A client-side error of `kind` with `message`.
    pub fn client(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProxyError {
            kind,
            side: Side::Client,
            retryable: false,
            message: message.into(),
            header: None,
        }
    }

    /// An origin-side error of `kind`; `retryable` says whether a fresh connection may succeed.
    pub fn origin(kind: ErrorKind, retryable: bool, message: impl Into<String>) -> Self {
        ProxyError {
            kind,
            side: Side::Origin,
            retryable,
            message: message.into(),
            header: None,
        }
    }

    /// An internal error (a bug): 500.
    pub fn internal(message: impl Into<String>) -> Self {
        ProxyError {
            kind: ErrorKind::Internal,
            side: Side::Internal,
            retryable: false,
            message: message.into(),
            header: None,
        }
    }

    /// The same error with an extra response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.header = Some((name, value.into()));
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
