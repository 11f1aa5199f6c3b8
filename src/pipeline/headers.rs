//! The client-facing policy fields every answer of a bucket carries, whichever path built it
//! (cache hit, streamed miss, 304, 206, the proxy's JSON errors, OPTIONS): one canonical
//! header-name casing, `Cache-Control: private` for buckets with `auth.enabled` (RFC 9111
//! section 5.2.2.7), `no-store` on 401/403, and the bucket's CORS fields ([`CorsPolicy`]).
//!
//! Hot path: called while a response head is built, for every response. Costs: a `match` on
//! the field name per written field; for private buckets one pass over the `Cache-Control`
//! directives; for CORS buckets one `Origin` lookup. Everything is written straight into the
//! connection's reused head buffer: no allocation on any path, so a hit of a bucket without
//! CORS or auth costs exactly what it did before (benches/e2e asserts allocations per hit).
//!
//! # Age rule (RFC 9111 section 5.1)
//!
//! A cache hit sends `Age` only when the stored response gave its own relative freshness
//! lifetime (`Cache-Control: max-age` or `s-maxage`, [`CachedObject::has_explicit_freshness`]).
//! Without it a shared cache in front (Varnish: default TTL minus Age; nginx) must see the
//! object exactly as S3 sends it, with no Age, or it computes a negative lifetime and never
//! caches. `Expires` alone gets no `Age` either: hits carry a fresh `Date`, so `Expires - Date`
//! already is the remaining lifetime and an `Age` would be subtracted twice downstream.
//!
//! [`CachedObject::has_explicit_freshness`]: crate::cache::CachedObject::has_explicit_freshness

use http::HeaderMap;

use super::prepared::{Prepared, PreparedBucket};
use crate::http::cors::{CorsPolicy, Preflight};
use crate::http::path::normalize_path;
use crate::http::response::ResponseHead;

/// What the routed bucket asks of every response head: whether it is private (`auth.enabled`)
/// and its CORS policy. `Copy`, two words; [`EdgePolicy::default`] is the policy of answers
/// that belong to no bucket (nothing added but `no-store` on 401/403).
#[derive(Clone, Copy, Debug, Default)]
pub struct EdgePolicy<'a> {
    /// `auth.enabled`: responses are for one user only.
    private: bool,
    /// The bucket's `cors` block, compiled.
    cors: Option<&'a CorsPolicy>,
}

impl<'a> EdgePolicy<'a> {
    /// The policy of `bucket` (private when it has JWT settings, i.e. `auth.enabled`).
    pub fn of(bucket: &'a PreparedBucket) -> EdgePolicy<'a> {
        EdgePolicy {
            private: bucket.auth.is_some(),
            cors: bucket.cors.as_ref(),
        }
    }

    /// Write one pass-through or stored field: `name` as `http::HeaderName` spells it (lower
    /// case), sent in [`canonical_name`] casing. A private bucket's `Cache-Control` is held
    /// back here and written, rewritten, by [`EdgePolicy::object_fields`].
    pub fn field(&self, h: &mut ResponseHead<'_>, name: &str, value: &[u8]) {
        if self.private && name == "cache-control" {
            return;
        }
        h.header(canonical_name(name), value);
    }

    /// The policy fields of an object answer (200, 206, 304, and the 412/416 a hit answers),
    /// after its fields were written with [`EdgePolicy::field`]. `cache_control` yields the
    /// response's `Cache-Control` lines (empty for none). Private buckets get one
    /// `Cache-Control: private, <the other directives>`: `public` and `s-maxage` dropped,
    /// `max-age` and the rest kept, `private` when there were none (RFC 9111 sections 5.2.2.7,
    /// 5.2.2.9, 5.2.2.10: a shared cache in front never stores it, the browser may).
    /// CORS buckets get [`CorsPolicy::write_actual`].
    pub fn object_fields<'v>(
        &self,
        h: &mut ResponseHead<'_>,
        request: &HeaderMap,
        cache_control: impl Iterator<Item = &'v [u8]>,
    ) {
        if self.private {
            let kept = cache_control.flat_map(directives).filter(|d| {
                let name = d.split(|&b| b == b'=').next().unwrap_or(d).trim_ascii();
                !(name.eq_ignore_ascii_case(b"public")
                    || name.eq_ignore_ascii_case(b"s-maxage")
                    || name.eq_ignore_ascii_case(b"private"))
            });
            h.header_list(
                "Cache-Control",
                std::iter::once(&b"private"[..]).chain(kept),
            );
        }
        if let Some(cors) = self.cors {
            cors.write_actual(h, request);
        }
    }

    /// The policy fields of a JSON error with `status`: `Cache-Control: no-store` on 401 and
    /// 403 (whoever produced them: the proxy's auth and IP rules, or S3), `Cache-Control:
    /// private` on the other errors of a private bucket, and the CORS fields (so a page on an
    /// allowed origin can read the error).
    pub fn error_fields(&self, h: &mut ResponseHead<'_>, request: &HeaderMap, status: u16) {
        if matches!(status, 401 | 403) {
            h.header("Cache-Control", b"no-store");
        } else if self.private {
            h.header("Cache-Control", b"private");
        }
        if let Some(cors) = self.cors {
            cors.write_actual(h, request);
        }
    }
}

/// The CORS policy of the bucket `raw_path` routes to (normalised as GET routes it), if that
/// bucket has one; for answering `OPTIONS`, which is routed before anything else.
pub fn cors_for_path<'p>(prepared: &'p Prepared, raw_path: &str) -> Option<&'p CorsPolicy> {
    let path = normalize_path(raw_path).ok()?;
    let (index, _) = prepared.router.route(&path)?;
    prepared.buckets.get(index)?.cors.as_ref()
}

/// The preflight `request` makes against `cors`, when it is one the policy accepts.
pub fn accepted_preflight<'r>(
    cors: Option<&'r CorsPolicy>,
    request: &'r HeaderMap,
) -> Option<(&'r CorsPolicy, Preflight<'r>)> {
    let cors = cors?;
    cors.preflight(request).map(|p| (cors, p))
}

/// The one casing the proxy sends a field name in, on every path (DESIGN section 5): the
/// conventional capitalisation (`Content-Type`, `ETag`, RFC 9110 spellings) for the fields
/// the proxy passes through or stores; S3's own `x-amz-*` fields (version id, user metadata)
/// stay lower case, as S3 sends them. `lower` is a lower-case field name; names not listed are
/// returned as they are.
pub fn canonical_name(lower: &str) -> &str {
    match lower {
        "content-type" => "Content-Type",
        "etag" => "ETag",
        "last-modified" => "Last-Modified",
        "accept-ranges" => "Accept-Ranges",
        "content-range" => "Content-Range",
        "cache-control" => "Cache-Control",
        "content-encoding" => "Content-Encoding",
        "content-disposition" => "Content-Disposition",
        "content-language" => "Content-Language",
        "content-length" => "Content-Length",
        "expires" => "Expires",
        "vary" => "Vary",
        other => other,
    }
}

/// The directives of one `Cache-Control` line (RFC 9111 section 5.2: `#cache-directive`),
/// each trimmed of whitespace; commas inside quoted strings do not split; empty list elements
/// are skipped. Borrows from `line`, no allocation.
fn directives(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = line;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = rest[..end].trim_ascii();
        rest = rest.get(end + 1..).unwrap_or_default();
        if !item.is_empty() {
            return Some(item);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::STORED_HEADERS;

    fn private() -> EdgePolicy<'static> {
        EdgePolicy {
            private: true,
            cors: None,
        }
    }

    fn head(f: impl FnOnce(&mut ResponseHead<'_>)) -> String {
        let mut buf = Vec::new();
        let mut h = ResponseHead::new(&mut buf, 200);
        f(&mut h);
        h.finish();
        String::from_utf8(buf).unwrap()
    }

    fn private_cache_control(lines: &[&str]) -> String {
        let out = head(|h| {
            private().object_fields(h, &HeaderMap::new(), lines.iter().map(|l| l.as_bytes()))
        });
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("Cache-Control: "))
            .expect("a Cache-Control line");
        assert_eq!(out.matches("Cache-Control").count(), 1, "{out}");
        line.to_string()
    }

    #[test]
    fn private_keeps_max_age_and_drops_shared_cache_directives() {
        assert_eq!(private_cache_control(&[]), "private");
        assert_eq!(
            private_cache_control(&["public, max-age=60"]),
            "private, max-age=60"
        );
        assert_eq!(
            private_cache_control(&["max-age=60, s-maxage=600", "PUBLIC", "must-revalidate"]),
            "private, max-age=60, must-revalidate"
        );
        assert_eq!(
            private_cache_control(&["private=\"a, b\", no-cache=\"x,y\" , max-age=5,,"]),
            "private, no-cache=\"x,y\", max-age=5"
        );
        assert_eq!(private_cache_control(&["no-store"]), "private, no-store");
    }

    #[test]
    fn private_buckets_hold_back_the_stored_cache_control() {
        let out = head(|h| {
            private().field(h, "cache-control", b"public, max-age=9");
            private().field(h, "etag", b"\"x\"");
        });
        assert!(!out.contains("Cache-Control"), "{out}");
        assert!(out.contains("\r\nETag: \"x\"\r\n"));
        let out = head(|h| EdgePolicy::default().field(h, "cache-control", b"max-age=9"));
        assert!(out.contains("\r\nCache-Control: max-age=9\r\n"), "{out}");
    }

    #[test]
    fn errors_are_never_shared_cacheable() {
        let none = EdgePolicy::default();
        for status in [401, 403] {
            for p in [none, private()] {
                let out = head(|h| p.error_fields(h, &HeaderMap::new(), status));
                assert!(out.contains("\r\nCache-Control: no-store\r\n"), "{out}");
            }
        }
        let out = head(|h| private().error_fields(h, &HeaderMap::new(), 404));
        assert!(out.contains("\r\nCache-Control: private\r\n"), "{out}");
        let out = head(|h| none.error_fields(h, &HeaderMap::new(), 404));
        assert!(!out.contains("Cache-Control"), "{out}");
    }

    #[test]
    fn every_passed_through_name_has_one_casing() {
        for name in STORED_HEADERS.into_iter().chain(["content-range"]) {
            let c = canonical_name(name);
            assert!(c.eq_ignore_ascii_case(name), "{name}");
            assert!(
                name.starts_with("x-amz-") || c != name,
                "{name} would go out lower case"
            );
        }
        assert_eq!(canonical_name("x-amz-meta-owner"), "x-amz-meta-owner");
        assert_eq!(canonical_name("etag"), "ETag");
    }
}
