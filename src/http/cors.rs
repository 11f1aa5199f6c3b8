//! CORS for browsers on other origins (Fetch standard, section 3.2 "CORS protocol"): matching a
//! request's `Origin` and preflight (`Access-Control-Request-Method` / `-Headers`) against a
//! bucket's `cors` block, and writing the `Access-Control-*` and `Vary` fields straight into a
//! [`ResponseHead`].
//!
//! Hot path for buckets with `cors` (every GET/HEAD answer, hit or miss): one `Origin` lookup
//! in the request's `HeaderMap`, one comparison per configured origin, and a few header lines
//! appended to the connection's reused head buffer. No allocation: the `Allow-Methods` and
//! `Expose-Headers` values are joined once when the config is prepared ([`CorsPolicy::new`]).
//! Buckets without `cors` never reach this module. Preflights (`OPTIONS`) are not a hot path.

use http::header::{self, HeaderMap};

use super::response::ResponseHead;
use crate::config::{CorsConfig, CorsOrigins};

/// A bucket's compiled `cors` block (see [`CorsConfig`] for the meaning of each key). Built on
/// the main thread per config generation; shared read-only by every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `None` = any origin (`["*"]`); else the exact lower-case serialized origins.
    origins: Option<Vec<String>>,
    /// The configured methods, for matching `Access-Control-Request-Method`.
    methods: Vec<&'static str>,
    /// `Access-Control-Allow-Methods` value, e.g. `GET, HEAD`.
    allow_methods: String,
    /// Request header names a preflight may ask for, as configured.
    allowed_headers: Vec<String>,
    /// `Access-Control-Expose-Headers` value; empty = the field is not sent.
    expose: String,
    /// `Access-Control-Max-Age`, seconds.
    max_age_seconds: u64,
    /// Whether `Access-Control-Allow-Credentials: true` is sent (never with any-origin).
    credentials: bool,
}

/// A preflight the policy accepts: what [`CorsPolicy::write_preflight`] answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preflight<'r> {
    /// `Access-Control-Allow-Origin` value: the request's origin, or `*`.
    allow_origin: &'r [u8],
    /// The raw `Access-Control-Request-Headers` value, if any (filtered when written).
    requested_headers: Option<&'r [u8]>,
}

impl CorsPolicy {
    /// Compile `cfg` (already validated: origins lower case, `allow_credentials` never with
    /// `*`, methods GET/HEAD). Allocates the joined header values once.
    pub fn new(cfg: &CorsConfig) -> CorsPolicy {
        let origins = match &cfg.allowed_origins {
            CorsOrigins::Any => None,
            CorsOrigins::List(list) => Some(list.clone()),
        };
        let methods: Vec<&'static str> = cfg.allowed_methods.iter().map(|m| m.as_str()).collect();
        debug_assert!(!(origins.is_none() && cfg.allow_credentials));
        CorsPolicy {
            origins,
            allow_methods: methods.join(", "),
            methods,
            allowed_headers: cfg.allowed_headers.clone(),
            expose: cfg.expose_headers.join(", "),
            max_age_seconds: cfg.max_age_seconds,
            credentials: cfg.allow_credentials,
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request whose `Origin` is `origin`, or
    /// `None` when that origin is not allowed (or the request has no `Origin`). Fetch section
    /// 3.2.3: `*` for any-origin without credentials, else the origin itself, byte for byte.
    pub fn allow_origin<'r>(&'r self, origin: Option<&'r [u8]>) -> Option<&'r [u8]> {
        let origin = origin?;
        match &self.origins {
            None => Some(b"*"),
            Some(list) => list
                .iter()
                .any(|o| o.as_bytes() == origin)
                .then_some(origin),
        }
    }

    /// Write the CORS fields of an actual (non-preflight) response (Fetch section 3.2.3):
    /// `Vary: Origin` always (the answer depends on `Origin`, so a shared cache in front must
    /// key on it, Fetch section 3.2.5), and, when the request's `Origin` is allowed,
    /// `Access-Control-Allow-Origin`, `Access-Control-Allow-Credentials: true` (if set) and
    /// `Access-Control-Expose-Headers` (if any are configured). No allocation.
    pub fn write_actual(&self, h: &mut ResponseHead<'_>, request: &HeaderMap) {
        h.header("Vary", b"Origin");
        let origin = request.get(header::ORIGIN).map(|v| v.as_bytes());
        let Some(allow) = self.allow_origin(origin) else {
            return;
        };
        h.header("Access-Control-Allow-Origin", allow);
        if self.credentials {
            h.header("Access-Control-Allow-Credentials", b"true");
        }
        if !self.expose.is_empty() {
            h.header("Access-Control-Expose-Headers", self.expose.as_bytes());
        }
    }

    /// Whether `request` (an `OPTIONS`) is a CORS preflight this policy accepts (Fetch section
    /// 3.2.2): it has an allowed `Origin` and an `Access-Control-Request-Method` listed in
    /// `allowed_methods` (compared ASCII case-insensitively, as Fetch normalises GET/HEAD).
    /// `None` means "answer as a plain OPTIONS, with no CORS fields".
    pub fn preflight<'r>(&'r self, request: &'r HeaderMap) -> Option<Preflight<'r>> {
        let method = request.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let origin = request.get(header::ORIGIN).map(|v| v.as_bytes());
        let allow_origin = self.allow_origin(origin)?;
        let method = method.as_bytes().trim_ascii();
        if !self
            .methods
            .iter()
            .any(|m| m.as_bytes().eq_ignore_ascii_case(method))
        {
            return None;
        }
        Some(Preflight {
            allow_origin,
            requested_headers: request
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .map(|v| v.as_bytes()),
        })
    }

    /// Write the fields of the 204 answer to an accepted preflight (Fetch section 3.2.3):
    /// `Access-Control-Allow-Origin`, `-Allow-Credentials` (if set), `-Allow-Methods` (the
    /// configured methods), `-Allow-Headers` (those of the requested names that are allowed,
    /// in the configured spelling; omitted when none are), `-Max-Age`, and `Vary` on the three
    /// request fields the answer depends on.
    pub fn write_preflight(&self, h: &mut ResponseHead<'_>, p: &Preflight<'_>) {
        h.header("Access-Control-Allow-Origin", p.allow_origin);
        if self.credentials {
            h.header("Access-Control-Allow-Credentials", b"true");
        }
        h.header(
            "Access-Control-Allow-Methods",
            self.allow_methods.as_bytes(),
        );
        if let Some(requested) = p.requested_headers {
            let allowed = self.allowed_headers.iter().filter(|a| {
                requested
                    .split(|&b| b == b',')
                    .any(|r| r.trim_ascii().eq_ignore_ascii_case(a.as_bytes()))
            });
            h.header_list(
                "Access-Control-Allow-Headers",
                allowed.map(|a| a.as_bytes()),
            );
        }
        h.header_u64("Access-Control-Max-Age", self.max_age_seconds);
        h.header(
            "Vary",
            b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorsMethod;
    use http::HeaderValue;

    fn policy(origins: CorsOrigins, credentials: bool) -> CorsPolicy {
        CorsPolicy::new(&CorsConfig {
            allowed_origins: origins,
            allowed_methods: vec![CorsMethod::Get, CorsMethod::Head],
            allowed_headers: vec!["Range".into(), "If-None-Match".into()],
            expose_headers: vec!["ETag".into(), "Content-Range".into()],
            max_age_seconds: 600,
            allow_credentials: credentials,
        })
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn written(f: impl FnOnce(&mut ResponseHead<'_>)) -> String {
        let mut buf = Vec::new();
        let mut h = ResponseHead::new(&mut buf, 200);
        f(&mut h);
        h.finish();
        String::from_utf8(buf).unwrap()
    }

    const APP: &str = "https://app.example.com";

    #[test]
    fn exact_origins_are_echoed_and_others_get_only_vary() {
        let p = policy(CorsOrigins::List(vec![APP.into()]), true);
        let out = written(|h| p.write_actual(h, &request(&[("origin", APP)])));
        assert!(out.contains("\r\nVary: Origin\r\n"), "{out}");
        assert!(out.contains("\r\nAccess-Control-Allow-Origin: https://app.example.com\r\n"));
        assert!(out.contains("\r\nAccess-Control-Allow-Credentials: true\r\n"));
        assert!(out.contains("\r\nAccess-Control-Expose-Headers: ETag, Content-Range\r\n"));
        for other in [
            "https://evil.example.com",
            "https://app.example.com.evil",
            "null",
        ] {
            let mut r = HeaderMap::new();
            r.insert(header::ORIGIN, HeaderValue::from_str(other).unwrap());
            let out = written(|h| p.write_actual(h, &r));
            assert!(!out.contains("Access-Control"), "{other}: {out}");
            assert!(out.contains("\r\nVary: Origin\r\n"));
        }
        let out = written(|h| p.write_actual(h, &request(&[])));
        assert!(!out.contains("Access-Control"), "{out}");
    }

    #[test]
    fn any_origin_answers_star_without_credentials() {
        let p = policy(CorsOrigins::Any, false);
        assert_eq!(p.allow_origin(Some(b"http://x.test:81")), Some(&b"*"[..]));
        assert_eq!(p.allow_origin(None), None);
        let out = written(|h| p.write_actual(h, &request(&[("origin", "http://x.test")])));
        assert!(
            out.contains("\r\nAccess-Control-Allow-Origin: *\r\n"),
            "{out}"
        );
        assert!(!out.contains("Credentials"), "{out}");
    }

    #[test]
    fn preflight_needs_allowed_origin_and_method() {
        let p = policy(CorsOrigins::List(vec![APP.into()]), false);
        let ok = request(&[
            ("origin", APP),
            ("access-control-request-method", "GET"),
            (
                "access-control-request-headers",
                "if-none-match, range, x-other",
            ),
        ]);
        let pf = p.preflight(&ok).expect("accepted");
        let out = written(|h| p.write_preflight(h, &pf));
        assert!(out.contains("\r\nAccess-Control-Allow-Origin: https://app.example.com\r\n"));
        assert!(
            out.contains("\r\nAccess-Control-Allow-Methods: GET, HEAD\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nAccess-Control-Allow-Headers: Range, If-None-Match\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nAccess-Control-Max-Age: 600\r\n"));
        assert!(out.contains("\r\nVary: Origin, "));
        assert!(!out.contains("Credentials"));

        let no_headers = request(&[("origin", APP), ("access-control-request-method", "head")]);
        let out = written(|h| p.write_preflight(h, &p.preflight(&no_headers).unwrap()));
        assert!(!out.contains("Allow-Headers"), "{out}");

        for bad in [
            request(&[("origin", APP), ("access-control-request-method", "PUT")]),
            request(&[
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "GET"),
            ]),
            request(&[("origin", APP)]),
            request(&[("access-control-request-method", "GET")]),
        ] {
            assert!(p.preflight(&bad).is_none(), "{bad:?}");
        }
    }
}
