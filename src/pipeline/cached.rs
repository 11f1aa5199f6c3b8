//! Answering a request from a cached object: conditionals evaluated at the proxy (RFC 9110
//! section 13.2.2), Range sliced from memory (206/416), HEAD without body, `X-Cache`,
//! `Cache-Status` (both from one [`CacheOutcome`]) and `Age`
//! (only for responses with their own max-age, see [`super::headers`]), and the bucket's policy
//! fields (casing, `Cache-Control: private`, CORS) exactly as a miss writes them.
//!
//! Hot path of a cache hit. Costs: one response head built in the connection's reusable buffer,
//! no copy of the body: small bodies (up to [`INLINE_BODY_BYTES`]) are appended to the head so a
//! hit is one `write`, larger ones go with the head in one `writev` as a `Bytes` slice of the
//! cached entry (reference-counted, zero-copy).

use std::time::SystemTime;

use http::Method;

use crate::cache::{evaluate, select_range, CacheOutcome, CachedObject, Precondition, RangeResult};

use crate::http::range::content_range_unsatisfied;
use crate::http::request::RequestHead;
use crate::http::response::{DateCache, ResponseHead};
use crate::http::server::Conn;

use super::headers::EdgePolicy;

/// Bodies up to this size are copied behind the head and written with it in one syscall.
pub const INLINE_BODY_BYTES: usize = 16 * 1024;

/// What a cached answer did, for the access log and the counters.
pub struct Served {
    /// Status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the connection stays usable.
    pub keep_alive: bool,
}

/// Answer `head` from `obj`. `outcome` says how (a hit, a revalidated entry, or `STALE` when S3 could not be reached to
/// revalidate). `policy` is the bucket's: field casing, `Cache-Control: private`, CORS
/// ([`EdgePolicy`]). `Age` follows the Age rule of [`super::headers`].
pub async fn serve(
    head: &RequestHead,
    conn: &mut Conn,
    dates: &DateCache,
    request_id: &str,
    obj: &CachedObject,
    outcome: CacheOutcome,
    policy: &EdgePolicy<'_>,
) -> Served {
    let now = SystemTime::now();
    let len = obj.body.len() as u64;
    let (status, slice) = match evaluate(&head.headers, obj.etag.as_ref(), obj.last_modified) {
        Precondition::NotModified => (304, None),
        Precondition::Failed => (412, None),
        Precondition::Proceed { apply_range } => {
            match select_range(&head.headers, len, apply_range) {
                RangeResult::Full => (200, Some((0, len.saturating_sub(1)))),
                RangeResult::Partial(first, last) => (206, Some((first, last))),
                RangeResult::Unsatisfiable => (416, None),
            }
        }
    };
    let body: &[u8] = match (status, slice) {
        (200 | 206, Some((first, last))) if len > 0 => &obj.body[first as usize..=last as usize],
        _ => &[],
    };
    let error_body = match status {
        412 => Some(crate::error::json_body(
            412,
            "a precondition failed against the cached object",
            request_id,
        )),
        416 => Some(crate::error::json_body(
            416,
            "the range does not overlap the object",
            request_id,
        )),
        _ => None,
    };
    if status == 200 {
        stored_head(head, conn, dates, request_id, obj, len, outcome, policy);
    } else {
        let mut h = ResponseHead::new(&mut conn.wbuf, status);
        h.header("Date", &dates.now());
        match status {
            304 => {
                // RFC 9110 section 15.4.5: the validators and caching fields of the 200.
                for (name, value) in &obj.headers {
                    if super::NOT_MODIFIED_FIELDS.contains(&name.as_str()) {
                        policy.field(&mut h, name.as_str(), value.as_bytes());
                    }
                }
            }
            206 => {
                for (name, value) in &obj.headers {
                    policy.field(&mut h, name.as_str(), value.as_bytes());
                }
            }
            _ => {}
        }
        if status == 206 {
            if let Some((first, last)) = slice {
                h.content_range(first, last, len);
            }
        }
        if status == 416 {
            h.header("Content-Range", content_range_unsatisfied(len).as_bytes());
        }
        let cache_control = obj
            .headers
            .iter()
            .filter(|(name, _)| {
                *name == http::header::CACHE_CONTROL && status != 412 && status != 416
            })
            .map(|(_, v)| v.as_bytes());
        policy.object_fields(&mut h, &head.headers, cache_control);
        // Same field order as a streamed miss: policy fields, cache outcome, Content-Length.
        outcome_fields(&mut h, outcome);
        match (&error_body, status) {
            (Some(b), _) => {
                h.header("Content-Type", b"application/json")
                    .header_u64("Content-Length", b.len() as u64);
            }
            (None, 304) => {}
            (None, _) => {
                h.header_u64("Content-Length", body.len() as u64);
            }
        }
        // The Age rule (pipeline::headers): only with the response's own max-age / s-maxage.
        if obj.has_explicit_freshness() {
            h.header_u64("Age", obj.age(now).as_secs());
        }
        h.header("X-Request-Id", request_id.as_bytes())
            .connection(head.version, conn.keep_alive);
        h.finish();
    }

    let send_body = head.method != Method::HEAD;
    let ok;
    let mut sent = 0u64;
    if let (true, Some(b)) = (send_body, &error_body) {
        conn.wbuf.extend_from_slice(b);
        ok = conn.flush().await.is_ok();
    } else if !send_body || body.is_empty() {
        ok = conn.flush().await.is_ok();
    } else if body.len() <= INLINE_BODY_BYTES {
        conn.wbuf.extend_from_slice(body);
        ok = conn.flush().await.is_ok();
        sent = body.len() as u64;
    } else {
        let (first, last) = slice.unwrap_or((0, 0));
        let bytes = obj.body.slice(first as usize..=last as usize);
        ok = conn.flush_with_body(bytes).await.is_ok();
        sent = body.len() as u64;
    }
    Served {
        status,
        bytes: sent,
        keep_alive: ok && conn.keep_alive,
    }
}

/// The head of a 200 answered from `obj`'s stored headers with a body of `len` bytes (the
/// entry's own, or one still being filled, whose `obj` has an empty body), into `conn.wbuf`,
/// in the field order of a streamed miss: policy fields ([`EdgePolicy`]), `X-Cache`,
/// `Content-Length`, `Age` by the Age rule of [`super::headers`]. The caller writes it and
/// the body.
#[allow(clippy::too_many_arguments)] // two call sites; the pieces are distinct and named
pub fn stored_head(
    head: &RequestHead,
    conn: &mut Conn,
    dates: &DateCache,
    request_id: &str,
    obj: &CachedObject,
    len: u64,
    outcome: CacheOutcome,
    policy: &EdgePolicy<'_>,
) {
    let mut h = ResponseHead::new(&mut conn.wbuf, 200);
    h.header("Date", &dates.now());
    for (name, value) in &obj.headers {
        policy.field(&mut h, name.as_str(), value.as_bytes());
    }
    let cache_control = obj
        .headers
        .iter()
        .filter(|(name, _)| *name == http::header::CACHE_CONTROL)
        .map(|(_, v)| v.as_bytes());
    policy.object_fields(&mut h, &head.headers, cache_control);
    outcome_fields(&mut h, outcome);
    h.header_u64("Content-Length", len);
    if obj.has_explicit_freshness() {
        h.header_u64("Age", obj.age(SystemTime::now()).as_secs());
    }
    h.header("X-Request-Id", request_id.as_bytes())
        .connection(head.version, conn.keep_alive);
    h.finish();
}

/// `X-Cache` and the RFC 9211 `Cache-Status` of `outcome` (none for [`CacheOutcome::None`]).
pub fn outcome_fields(h: &mut ResponseHead<'_>, outcome: CacheOutcome) {
    if let Some(x) = outcome.x_cache() {
        h.header("X-Cache", x.as_bytes());
    }
    if let Some(status) = outcome.cache_status() {
        h.header("Cache-Status", status.as_bytes());
    }
}
