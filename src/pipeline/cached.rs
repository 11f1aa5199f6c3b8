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

use crate::cache::disk::{DiskBody, DiskReader, READ_CHUNK_BYTES};
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
    /// A disk body chunk after the first could not be read or did not verify: the response
    /// was cut short and the entry must be dropped (else every later hit is cut short too).
    pub disk_failed: bool,
}

/// A disk-backed entry whose first body bytes could not be read or did not verify: nothing was
/// written to the client; serve the request as a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Answer `head` from `obj`. `outcome` says how (a hit, a revalidated entry, or `STALE` when
/// S3 could not be reached to revalidate). `policy` is the bucket's: field casing,
/// `Cache-Control: private`, CORS ([`EdgePolicy`]). `Age` follows the Age rule of
/// [`super::headers`]. An entry whose body is on disk ([`CachedObject::disk`]) streams from
/// `disk` in verified chunks; its first chunk is read before anything is written, so a bad
/// disk is [`Unreadable`] (a miss), and a later bad chunk ends the connection short (reported
/// in [`Served::disk_failed`], so the caller drops the entry).
#[allow(clippy::too_many_arguments)] // one call site; the pieces are distinct and named
pub async fn serve(
    head: &RequestHead,
    conn: &mut Conn,
    dates: &DateCache,
    request_id: &str,
    obj: &CachedObject,
    outcome: CacheOutcome,
    policy: &EdgePolicy<'_>,
    disk: Option<&DiskReader>,
) -> Result<Served, Unreadable> {
    let len = obj.len();
    let (status, slice) = decide(head, obj);
    let sends_body = head.method != Method::HEAD && matches!(status, 200 | 206) && len > 0;
    // A disk body: read (and verify) its first chunk before any byte goes out.
    let on_disk = match (&obj.disk, slice, disk) {
        (Some(body), Some((first, last)), Some(reader)) if sends_body => {
            let want = ((last - first + 1) as usize).min(READ_CHUNK_BYTES);
            let chunk = reader
                .read_chunk(body, first, want)
                .await
                .map_err(|_| Unreadable)?;
            Some((reader, body, chunk))
        }
        (Some(_), _, None) if sends_body => return Err(Unreadable),
        _ => None,
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
        let answer = Answer {
            status,
            slice,
            error_len: error_body.as_ref().map(|b| b.len()),
        };
        other_head(head, conn, dates, request_id, obj, &answer, outcome, policy);
    }
    let body = match (head.method == Method::HEAD, &error_body, slice) {
        (true, _, _) => Body::None,
        (false, Some(b), _) => Body::Copied(b),
        (false, None, Some((first, last))) if len > 0 && matches!(status, 200 | 206) => {
            Body::Slice(first as usize, last as usize)
        }
        _ => Body::None,
    };
    let (ok, sent, disk_failed) = match (on_disk, body) {
        (Some((reader, disk_body, chunk)), Body::Slice(first, last)) => {
            write_from_disk(conn, reader, disk_body, chunk, first as u64, last as u64).await
        }
        (_, body) => {
            let (ok, sent) = write(conn, obj, body).await;
            (ok, sent, false)
        }
    };
    Ok(Served {
        status,
        bytes: sent,
        keep_alive: ok && conn.keep_alive,
        disk_failed,
    })
}

/// Write the head in `conn.wbuf` with `first_chunk` (body bytes from `first`), then the rest
/// of `first..=last` from disk, one verified chunk at a time as the client takes them
/// (constant memory: one chunk per connection). A chunk that cannot be read or verified ends
/// the connection short of its `Content-Length`, never with a wrong byte, and is reported
/// (the third value) so the caller drops the entry.
async fn write_from_disk(
    conn: &mut Conn,
    reader: &DiskReader,
    body: &DiskBody,
    first_chunk: bytes::Bytes,
    first: u64,
    last: u64,
) -> (bool, u64, bool) {
    let mut at = first + first_chunk.len() as u64;
    let mut sent = first_chunk.len() as u64;
    if conn.flush_with_body(first_chunk).await.is_err() {
        return (false, 0, false);
    }
    // The head went out with the first chunk; `flush_with_body` keeps it in `wbuf`.
    conn.wbuf.clear();
    while at <= last {
        let want = ((last - at + 1) as usize).min(READ_CHUNK_BYTES);
        let chunk = match reader.read_chunk(body, at, want).await {
            Ok(c) if !c.is_empty() => c,
            _ => {
                tracing::warn!(
                    at,
                    "disk body unreadable mid-response; closing the connection"
                );
                return (false, sent, true);
            }
        };
        at += chunk.len() as u64;
        sent += chunk.len() as u64;
        if conn.flush_with_body(chunk).await.is_err() {
            return (false, sent, false);
        }
    }
    (true, sent, false)
}

/// The status of the answer and the body slice `(first, last)` it sends: conditionals first
/// (RFC 9110 section 13.2.2), then Range (section 14.2).
fn decide(head: &RequestHead, obj: &CachedObject) -> (u16, Option<(u64, u64)>) {
    let len = obj.len();
    match evaluate(&head.headers, obj.etag.as_ref(), obj.last_modified) {
        Precondition::NotModified => (304, None),
        Precondition::Failed => (412, None),
        Precondition::Proceed { apply_range } => {
            match select_range(&head.headers, len, apply_range) {
                RangeResult::Full => (200, Some((0, len.saturating_sub(1)))),
                RangeResult::Partial(first, last) => (206, Some((first, last))),
                RangeResult::Unsatisfiable => (416, None),
            }
        }
    }
}

/// A non-200 answer from an entry: its status, its slice (206), its JSON body length (412/416).
struct Answer {
    status: u16,
    slice: Option<(u64, u64)>,
    error_len: Option<usize>,
}

/// The head of a 206, 304, 412 or 416 answered from `obj`, into `conn.wbuf`, in the field order
/// of a streamed miss: policy fields, cache outcome, framing, `Age` by the Age rule.
#[allow(clippy::too_many_arguments)] // one call site; the pieces are distinct and named
fn other_head(
    head: &RequestHead,
    conn: &mut Conn,
    dates: &DateCache,
    request_id: &str,
    obj: &CachedObject,
    answer: &Answer,
    outcome: CacheOutcome,
    policy: &EdgePolicy<'_>,
) {
    let status = answer.status;
    let len = obj.len();
    let mut h = ResponseHead::new(&mut conn.wbuf, status);
    h.header("Date", &dates.now());
    for (name, value) in &obj.headers {
        // RFC 9110 section 15.4.5: a 304 carries the validators and caching fields of the 200.
        let wanted = match status {
            304 => super::NOT_MODIFIED_FIELDS.contains(&name.as_str()),
            206 => true,
            _ => false,
        };
        if wanted {
            policy.field(&mut h, name.as_str(), value.as_bytes());
        }
    }
    match (status, answer.slice) {
        (206, Some((first, last))) => {
            h.content_range(first, last, len);
        }
        (416, _) => {
            h.header("Content-Range", content_range_unsatisfied(len).as_bytes());
        }
        _ => {}
    }
    let cache_control = obj
        .headers
        .iter()
        .filter(|(name, _)| *name == http::header::CACHE_CONTROL && status != 412 && status != 416)
        .map(|(_, v)| v.as_bytes());
    policy.object_fields(&mut h, &head.headers, cache_control);
    outcome_fields(&mut h, outcome);
    match (answer.error_len, answer.slice) {
        (Some(n), _) => {
            h.header("Content-Type", b"application/json")
                .header_u64("Content-Length", n as u64);
        }
        (None, Some((first, last))) if status == 206 => {
            h.header_u64("Content-Length", last - first + 1);
        }
        _ => {}
    }
    // The Age rule (pipeline::headers): only with the response's own max-age / s-maxage.
    if obj.has_explicit_freshness() {
        h.header_u64("Age", obj.age(SystemTime::now()).as_secs());
    }
    h.header("X-Request-Id", request_id.as_bytes())
        .connection(head.version, conn.keep_alive);
    h.finish();
}

/// What follows the head in `conn.wbuf`.
enum Body<'b> {
    /// Nothing (HEAD, 304).
    None,
    /// A small body of the proxy's own (a JSON error).
    Copied(&'b [u8]),
    /// Bytes `first..=last` of the entry's body.
    Slice(usize, usize),
}

/// Write the head in `conn.wbuf` and `body`: bodies up to [`INLINE_BODY_BYTES`] behind the head
/// in one `write`, larger ones in one `writev` straight from the entry's `Bytes`. Returns
/// whether the write succeeded and the entry bytes sent.
async fn write(conn: &mut Conn, obj: &CachedObject, body: Body<'_>) -> (bool, u64) {
    match body {
        Body::None => (conn.flush().await.is_ok(), 0),
        Body::Copied(b) => {
            conn.wbuf.extend_from_slice(b);
            (conn.flush().await.is_ok(), 0)
        }
        Body::Slice(first, last) if last - first < INLINE_BODY_BYTES => {
            conn.wbuf.extend_from_slice(&obj.body[first..=last]);
            (conn.flush().await.is_ok(), (last - first + 1) as u64)
        }
        Body::Slice(first, last) => {
            let bytes = obj.body.slice(first..=last);
            (
                conn.flush_with_body(bytes).await.is_ok(),
                (last - first + 1) as u64,
            )
        }
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
