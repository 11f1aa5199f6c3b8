//! Phase 6, respond: the answer to the client, from a cache entry ([`cached`]), from a fill in
//! progress ([`collapsed`]) or streamed from S3 ([`origin`]), with the bucket's edge policy
//! ([`super::headers`]) and the `X-Cache` / `Cache-Status` fields of one [`CacheOutcome`].
//! S3 errors become the proxy's JSON errors here ([`origin_error`]).
//!
//! Hot path. A hit: one response head in the connection's reused buffer and one `write` (or
//! `writev` with the entry's `Bytes`, zero-copy). A streamed miss: one 64 KiB buffer for the
//! life of the response, read from S3 only after the previous chunk reached the client
//! (backpressure); a body of 1 MiB or more that is not being cached moves by splice(2) through
//! a pipe instead, with no user-space copy. A cacheable miss is filled at the origin's pace and
//! delivered from the fill at the client's ([`super::fill`]). A client that goes away ends the
//! upstream read at the next write (the upstream connection is closed, not pooled).

use std::time::SystemTime;

use http::{header, Method};

use super::fetch::content_length;
use super::fill::Growing;
use super::lookup::{Fill, Miss};
use super::{cached, RequestCtx, Shard, Summary, BODY_CHUNK_BYTES, NOT_MODIFIED_FIELDS};
use crate::cache::{storable_ttl, CacheOutcome, CachedObject, STORED_HEADERS};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::request::{RequestHead, Version};
use crate::http::response::ResponseHead;
use crate::http::server::Conn;
use crate::metrics::BucketMetrics;
use crate::s3::error::parse_error_xml;
use crate::upstream::{Response, SpliceError};

use std::rc::Rc;

/// Most bytes of an S3 error body kept for parsing its Code and Message.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// Response headers passed from S3 to the client: the fields a cache entry stores
/// ([`STORED_HEADERS`]: representation and validator fields, S3's version id) plus
/// `Content-Range` for 206. Everything else, hop-by-hop fields included, is dropped. One list
/// for both, so a cached answer and a streamed one carry the same fields.
fn pass_through() -> impl Iterator<Item = &'static str> {
    STORED_HEADERS.into_iter().chain(["content-range"])
}

/// Answer from a cache entry with `outcome` (HIT, revalidated, STALE, or BYPASS for an entry
/// served once that may no longer be kept) and count it. [`cached::Unreadable`]: the entry's
/// body is on disk and its first chunk could not be read; nothing was written (serve a miss).
/// With the summary: whether a later disk chunk failed (the response was cut short; the
/// caller drops the entry, see [`cached::Served::disk_failed`]).
pub async fn cached(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    obj: &CachedObject,
    outcome: CacheOutcome,
    cx: &mut RequestCtx<'_>,
) -> Result<(Summary, bool), cached::Unreadable> {
    let served = cached::serve(
        head,
        conn,
        &shard.dates,
        &cx.request_id,
        obj,
        outcome,
        &cx.policy,
        shard.disk_reader.as_deref(),
    )
    .await?;
    cx.count_outcome(outcome, served.bytes);
    Ok((
        Summary {
            status: served.status,
            bytes: served.bytes,
            keep_alive: served.keep_alive,
        },
        served.disk_failed,
    ))
}

/// Answer a follower of a fill: from the complete entry when the fill already ended, else 200
/// with the entry's headers and its body streamed as it arrives (a follower is a plain GET).
/// Counted as a hit: the request caused no S3 fetch.
pub async fn collapsed(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    growing: &Rc<Growing>,
    cx: &mut RequestCtx<'_>,
) -> Summary {
    if let Some(obj) = growing.complete() {
        // A fill's entry has its body in memory: never `Unreadable`.
        if let Ok((summary, _)) = cached(shard, head, conn, &obj, CacheOutcome::Collapsed, cx).await
        {
            return summary;
        }
    }
    let mut reader = growing.reader();
    cached::stored_head(
        head,
        conn,
        &shard.dates,
        &cx.request_id,
        growing.meta(),
        growing.body_len(),
        CacheOutcome::Collapsed,
        &cx.policy,
    );
    let mut sent = 0;
    let ok = match conn.flush().await {
        Ok(()) => reader.deliver(conn, &mut sent).await.is_ok(),
        Err(_) => false,
    };
    cx.count_outcome(CacheOutcome::Collapsed, sent);
    Summary {
        status: 200,
        bytes: sent,
        keep_alive: ok && conn.keep_alive,
    }
}

/// A miss whose response turned out storable: its declared body length (within the item
/// limit), its freshness lifetime and the fill it makes.
struct Filling {
    len: u64,
    ttl: std::time::Duration,
    fill: Fill,
    /// Held while a disk-only body is assembled in memory.
    _staging: Option<Staging>,
}

/// Bytes of disk-only fills (bodies over the memory tier's item limit) one core assembles in
/// memory at once; a fill that would exceed it streams through unstored.
pub const DISK_STAGING_BYTES: u64 = 128 << 20;

/// A reservation of `len` bytes of a core's disk staging budget, released on drop.
struct Staging {
    budget: Rc<std::cell::Cell<u64>>,
    len: u64,
}

impl Staging {
    /// Reserve `len` bytes of `budget` (bytes in use), if they fit [`DISK_STAGING_BYTES`].
    fn reserve(budget: &Rc<std::cell::Cell<u64>>, len: u64) -> Option<Staging> {
        let used = budget.get();
        (used + len <= DISK_STAGING_BYTES).then(|| {
            budget.set(used + len);
            Staging {
                budget: budget.clone(),
                len,
            }
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.budget.set(self.budget.get() - self.len);
    }
}

/// A body streamed to its owner's disk tier as it passes through.
type DiskTee = crate::cache::owner::Tee<Rc<Growing>>;

/// How a storable 200 of `len` bytes fills the cache: assembled in memory ([`Filling`]) when it
/// fits the item limit (bodies only the disk tier keeps also need room in the core's
/// [`DISK_STAGING_BYTES`]); else, with a disk tier, streamed to the owner's disk as it passes
/// through (a [`DiskTee`]; the key's flight ends at once, so requests waiting on it fetch for
/// themselves instead of waiting for a fill they cannot share); else not at all.
fn plan_fill(
    shard: &Shard,
    resp: &Response<'_>,
    f: Fill,
    ttl: std::time::Duration,
    len: u64,
) -> (Option<Filling>, Option<DiskTee>) {
    if len <= f.max_item_bytes {
        let staging = if len > shard.cache.memory_item_max() {
            Staging::reserve(&shard.disk_staging, len)
        } else {
            None
        };
        if staging.is_some() || len <= shard.cache.memory_item_max() {
            let filling = Filling {
                len,
                ttl,
                fill: f,
                _staging: staging,
            };
            return (Some(filling), None);
        }
    }
    let meta =
        CachedObject::from_response(bytes::Bytes::new(), &resp.headers, SystemTime::now(), ttl);
    (None, shard.cache.tee(&f.key, meta, len))
}

/// How the body goes to the client (RFC 9112 section 6).
struct Framing {
    /// The body length sent as `Content-Length` (0 for 304; the upstream length for HEAD).
    body_len: Option<u64>,
    /// `Transfer-Encoding: chunked` (an HTTP/1.1 client, a body of unknown length).
    chunked: bool,
}

/// Stream S3's 200/206/304 through, filling the cache when `miss` may and the response is
/// storable, or turn an S3 error into ours (`Err`, nothing written yet).
pub async fn origin(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    mut resp: Response<'_>,
    miss: Miss,
    cx: &mut RequestCtx<'_>,
) -> Result<Summary, ProxyError> {
    let status = resp.status;
    if !matches!(status, 200 | 206 | 304) {
        cx.count_outcome(miss.outcome, 0);
        return Err(origin_error(&mut resp, &cx.request_id, cx.metrics).await);
    }
    let is_head = head.method == Method::HEAD;
    let body_len = match status {
        304 => Some(0),
        _ if is_head => content_length(&resp.headers),
        _ => resp.body.declared_len(),
    };
    let framing = Framing {
        body_len,
        chunked: !is_head && status != 304 && body_len.is_none() && head.version == Version::Http11,
    };
    let keep_alive = conn.keep_alive && (framing.body_len.is_some() || framing.chunked || is_head);
    // Fill while streaming: only a complete 200 to a plain GET whose length is declared,
    // within the item limit, and storable per Cache-Control.
    let (fill, tee) = match miss.fill.and_then(|f| {
        let ttl = storable_ttl(status, !is_head, &resp.headers, f.ttl)?;
        (status == 200 && !is_head).then_some((f, ttl, body_len?))
    }) {
        Some((f, ttl, len)) => plan_fill(shard, &resp, f, ttl, len),
        None => (None, None),
    };
    let outcome = match (&fill, miss.outcome) {
        (Some(_), _) => CacheOutcome::Miss { stored: true },
        (None, _) if tee.is_some() => CacheOutcome::Miss { stored: true },
        // A cacheable request whose 200 may not be stored.
        (None, CacheOutcome::Miss { .. }) if status == 200 => CacheOutcome::Bypass,
        (None, o) => o,
    };
    cx.count_outcome(outcome, 0);
    write_origin_head(shard, head, conn, &resp, &framing, keep_alive, cx);
    if is_head || status == 304 {
        let ok = conn.flush().await.is_ok();
        return Ok(Summary {
            status,
            bytes: 0,
            keep_alive: keep_alive && ok,
        });
    }
    if let Some(f) = fill {
        return Ok(fill_and_deliver(shard, conn, resp, f, keep_alive).await);
    }
    let mut tee = tee;
    let (sent, ok) = stream_body(
        conn,
        &mut resp,
        framing.chunked,
        &cx.request_id,
        tee.as_mut(),
    )
    .await;
    let complete = framing.body_len.is_none_or(|n| n == sent);
    if let Some(t) = tee {
        t.finish(ok && complete);
    }
    Ok(Summary {
        status,
        bytes: sent,
        keep_alive: keep_alive && ok && complete,
    })
}

/// The head of a response streamed from S3, into `conn.wbuf`: the pass-through fields in one
/// casing (a 304 only its validator fields), `x-amz-meta-*`, the bucket's policy fields, the
/// cache outcome, the framing.
fn write_origin_head(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    resp: &Response<'_>,
    framing: &Framing,
    keep_alive: bool,
    cx: &RequestCtx<'_>,
) {
    let status = resp.status;
    let mut h = ResponseHead::new(&mut conn.wbuf, status);
    h.header("Date", &shard.dates.now());
    for name in pass_through() {
        // A 304 carries the validators and caching fields of the 200 (RFC 9110 section
        // 15.4.5), not its representation metadata.
        if status == 304 && !NOT_MODIFIED_FIELDS.contains(&name) {
            continue;
        }
        for v in resp.headers.get_all(name) {
            cx.policy.field(&mut h, name, v.as_bytes());
        }
    }
    for (name, v) in resp.headers.iter() {
        if status != 304 && name.as_str().starts_with("x-amz-meta-") {
            h.header(name.as_str(), v.as_bytes());
        }
    }
    let cache_control = resp.headers.get_all(header::CACHE_CONTROL).iter();
    cx.policy
        .object_fields(&mut h, &head.headers, cache_control.map(|v| v.as_bytes()));
    cached::outcome_fields(&mut h, cx.outcome);
    match framing.body_len {
        Some(n) if status != 304 => {
            h.header_u64("Content-Length", n);
        }
        _ => {}
    }
    if framing.chunked {
        h.header("Transfer-Encoding", b"chunked");
    }
    h.header("X-Request-Id", cx.request_id.as_bytes());
    h.connection(head.version, keep_alive);
    h.finish();
}

/// Write the head in `conn.wbuf`, then move the body from S3 to the client: one buffer, read
/// from S3 only after the previous chunk reached the client; a long body moves by splice(2)
/// instead, without the copies. Returns the body bytes the client got and whether both sides
/// ended cleanly.
async fn stream_body(
    conn: &mut Conn,
    resp: &mut Response<'_>,
    chunked: bool,
    request_id: &str,
    mut tee: Option<&mut DiskTee>,
) -> (u64, bool) {
    let mut sent = 0u64;
    let mut buf = Vec::new();
    let mut framed: Vec<u8> = Vec::new();
    let mut ok = conn.flush().await.is_ok();
    while ok {
        // A body teed to the disk tier passes through user space; others may splice.
        if !chunked && tee.is_none() && resp.body.spliceable() {
            match resp
                .body
                .splice_to(&mut conn.stream, &mut sent, conn.send_timeout)
                .await
            {
                Ok(()) => {}
                Err(SpliceError::Upstream(e)) => {
                    tracing::warn!(request_id, error = %e, sent, "S3 body failed mid-stream");
                    ok = false;
                }
                Err(SpliceError::Client(_)) => ok = false,
            }
            break;
        }
        buf.clear();
        buf.reserve_exact(BODY_CHUNK_BYTES);
        let n = match resp.body.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(request_id, error = %e, sent, "S3 body failed mid-stream");
                ok = false;
                break;
            }
        };
        if let Some(t) = tee.as_mut() {
            t.push(&buf);
        }
        if chunked {
            // RFC 9112 section 7.1: hex size, CRLF, data, CRLF, in one reused buffer.
            framed.clear();
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_fmt(&mut framed, format_args!("{n:x}\r\n"));
            framed.extend_from_slice(&buf);
            framed.extend_from_slice(b"\r\n");
            ok = conn.send(&mut framed).await.is_ok();
        } else {
            ok = conn.send(&mut buf).await.is_ok();
        }
        sent += n as u64;
    }
    if ok && chunked {
        let mut last = b"0\r\n\r\n".to_vec();
        ok = conn.send(&mut last).await.is_ok();
    }
    (sent, ok)
}

/// The body of a cacheable 200 whose head is in `conn.wbuf`: the fill reads S3 at the origin's
/// pace into a [`Growing`] entry (published to the key's followers at once and offered to the
/// tiers the moment it completes), while this client is served from it at its own pace.
/// Returns when both ended; the upstream connection is back in the pool as soon as the fill
/// ended, however slow this client is.
async fn fill_and_deliver(
    shard: &Shard,
    conn: &mut Conn,
    mut resp: Response<'_>,
    f: Filling,
    keep_alive: bool,
) -> Summary {
    let meta =
        CachedObject::from_response(bytes::Bytes::new(), &resp.headers, SystemTime::now(), f.ttl);
    let growing = Growing::new(f.len, meta);
    let Fill { key, lease, .. } = f.fill;
    if let Some(l) = &lease {
        l.publish(growing.clone());
    }
    let mut reader = growing.reader();
    let mut sent = 0u64;
    let filling = async {
        let entry = growing.fill_from(&mut resp.body).await;
        let complete = entry.is_some();
        match lease {
            // The key's owner inserts it and hands it to followers on other cores; followers
            // here already hold the published fill. The flight ends here.
            Some(lease) => {
                lease.complete(entry);
            }
            None => {
                if let Some(obj) = &entry {
                    shard.cache.insert(&key, obj);
                }
            }
        }
        complete
    };
    let delivering = async {
        conn.flush().await?;
        reader.deliver(conn, &mut sent).await
    };
    let (_, delivered) = monoio::join!(filling, delivering);
    let ok = delivered.is_ok() && sent == f.len;
    Summary {
        status: 200,
        bytes: sent,
        keep_alive: keep_alive && ok,
    }
}

/// Read S3's (small) error body, log its Code and Message (with the request id), and build the
/// client error: `503 SlowDown` / `503 ServiceUnavailable` (or a 503 without a code) -> 503
/// with `Retry-After: 1`, retryable; other 5xx -> 502; anything else keeps its status (DESIGN section 5). The client
/// sees only the status and S3's code, bounded as the metrics label is
/// ([`crate::metrics::label_safe_code`]), in a fixed text: `S3 answered 500 (InternalError)`.
/// S3's Message never reaches the client: origins put internal hosts, addresses and bucket
/// names there.
pub async fn origin_error(
    resp: &mut Response<'_>,
    request_id: &str,
    metrics: &BucketMetrics,
) -> ProxyError {
    let status = resp.status;
    let mut body = Vec::new();
    let _ = resp
        .body
        .read_to_end_limited(&mut body, ERROR_BODY_LIMIT)
        .await;
    let info = parse_error_xml(&body);
    let code = info.as_ref().map_or("", |i| i.code.as_str());
    let message = info.as_ref().map_or("", |i| i.message.as_str());
    // The raw code and message go to the log only (its encoder escapes them). A missing key,
    // a failed precondition or an unsatisfiable range is the client's business: the access
    // line says it. Anything else (403: credentials or policy; 5xx) is logged.
    if !matches!(status, 404 | 412 | 416) {
        tracing::info!(
            request_id,
            status,
            s3_code = code,
            s3_message = message,
            "S3 returned an error"
        );
    } else {
        tracing::debug!(
            request_id,
            status,
            s3_code = code,
            s3_message = message,
            "S3 returned an error"
        );
    }
    let detail = if code.is_empty() {
        metrics.record_upstream_status(status);
        format!("S3 answered {status}")
    } else {
        metrics.record_upstream_error(code);
        format!(
            "S3 answered {status} ({})",
            crate::metrics::label_safe_code(code)
        )
    };
    if is_slow_down(status, code) {
        return ProxyError::unavailable(Side::Origin, SLOW_DOWN_RETRY_AFTER_SECS, detail);
    }
    if status >= 500 {
        return ProxyError::origin(ErrorKind::BadGateway, false, detail);
    }
    let mut e = ProxyError::origin(ErrorKind::OriginStatus(status), false, detail);
    if status == 416 {
        if let Some(v) = resp
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
        {
            e = e.with_header("Content-Range", v.to_owned());
        }
    }
    e
}

/// `Retry-After` sent with a 503 that passes on S3's request to slow down, seconds.
const SLOW_DOWN_RETRY_AFTER_SECS: u32 = 1;

/// Whether S3 asked us to back off: `503 SlowDown` or `503 ServiceUnavailable` (AWS S3 error
/// responses: "Reduce your request rate"), or a 503 without a readable code (S3 sends no error
/// body to HEAD, so a HEAD's SlowDown has no code). A 503 with any other code is a failure of
/// the origin like any 5xx.
fn is_slow_down(status: u16, code: &str) -> bool {
    status == 503 && matches!(code, "" | "SlowDown" | "ServiceUnavailable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3_slow_down_codes_become_503() {
        assert!(is_slow_down(503, "SlowDown"));
        assert!(is_slow_down(503, "ServiceUnavailable"));
        assert!(is_slow_down(503, ""), "a HEAD's 503 has no body");
        assert!(!is_slow_down(503, "InternalError"));
        assert!(!is_slow_down(502, ""));
        assert!(!is_slow_down(500, "SlowDown"));
    }

    #[test]
    fn pass_through_names_are_all_canonicalised() {
        for name in pass_through() {
            let canonical = super::super::headers::canonical_name(name);
            assert!(canonical.eq_ignore_ascii_case(name), "{name}");
            if !name.starts_with("x-amz-") {
                assert_ne!(canonical, name, "{name} has a canonical casing");
            }
        }
    }
}
