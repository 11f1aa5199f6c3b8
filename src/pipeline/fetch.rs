//! Phase 5, fetch: the object from S3 when no tier had it fresh. The request is described as
//! an [`ObjectRequest`] (key, versionId, the forwarded conditionals and Range) and handed to
//! the upstream layer, which signs it for the backend it goes to ([`crate::s3::request`]).
//! Then the proxy decides what S3's answer means for this client, whatever S3 made of the
//! conditionals (DESIGN section 5): If-None-Match / If-Modified-Since 304, If-Match /
//! If-Unmodified-Since 412, a 206 whose validators fail the If-Range replaced by the whole
//! object, `bytes=-0` 416, and a 304 or 416 without its validators completed by a HEAD.
//! A stale entry is revalidated here too (`If-None-Match` with its ETag).
//!
//! Hot path of every miss: one signed request (~2 us of SigV4 with the cached day key, a
//! ~600-byte head); a second request only when S3 answered 412, a stale If-Range 206, or a
//! 304/416 without validators (Ceph RGW's habit).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{header, HeaderMap};

use super::lookup::{CachePlan, Fill, Miss};
use super::route::ObjectRoute;
use super::{Local, RequestCtx, Shard};
use crate::cache::{evaluate, http_date, CacheOutcome, CachedObject, Precondition};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http::range::{content_range_unsatisfied, parse_range, ByteRange};
use crate::http::request::RequestHead;
use crate::metrics::BucketMetrics;
use crate::s3::request::{Backend, ObjectRequest};
use crate::upstream::breaker::{retry_after_secs, Breaker};
use crate::upstream::retry::retryable_status;
use crate::upstream::Response;

/// Request fields forwarded to S3 as they are (If-Range is evaluated here): the name looked
/// up, the name sent.
const FORWARDED: [(&str, &str); 4] = [
    ("if-match", "If-Match"),
    ("if-none-match", "If-None-Match"),
    ("if-modified-since", "If-Modified-Since"),
    ("if-unmodified-since", "If-Unmodified-Since"),
];

/// What the fetch phase hands the respond phase.
// Returned once per request and moved once: boxing the large variant would cost an allocation
// per miss to save a memcpy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Fetched<'u> {
    /// Answer from this entry (a revalidated one, or a stale one S3 could not confirm).
    Cached(Arc<CachedObject>, CacheOutcome),
    /// Stream this S3 response (200/206/304 through, an error turned into ours).
    Origin(Response<'u>, Miss),
}

/// Revalidate a stale entry for a plain GET with `If-None-Match: <its ETag>`: 304 refreshes it
/// (RFC 9111 section 4.3.4), 200 replaces it while streaming, another 4xx drops it. When S3
/// cannot be reached or fails, the stale copy is served only within its stale-if-error window
/// ([`stale_if_error_window`], RFC 5861 section 4); past it the client gets S3's failure
/// (502/503/504), as RFC 9111 section 4.2.4 asks of a cache not allowed to serve stale.
pub async fn revalidate<'s>(
    shard: &'s Shard,
    local: &Local,
    object: &ObjectRoute<'_, '_>,
    obj: Arc<CachedObject>,
    plan: CachePlan,
    cx: &mut RequestCtx<'_>,
) -> Result<Fetched<'s>, ProxyError> {
    cx.metrics.cache_revalidations.inc();
    let Some(etag) = obj.etag.clone() else {
        debug_assert!(false, "only entries with an ETag are revalidated");
        return Ok(Fetched::Cached(obj, CacheOutcome::Stale));
    };
    let mut req = ObjectRequest::new("GET", &object.key, object.version_id.as_deref());
    req.field("If-None-Match", etag.as_bytes());
    match send(shard, cx.metrics, local, object.index, &req).await {
        Ok(r) if r.status == 304 => {
            let fresh = obj.revalidated(&r.headers, SystemTime::now(), plan.ttl);
            drop(r);
            cx.metrics.cache_revalidated_not_modified.inc();
            match fresh {
                Some(fresh) => {
                    let fresh = Arc::new(fresh);
                    shard.cache.insert(&plan.key, &fresh);
                    Ok(Fetched::Cached(fresh, CacheOutcome::Revalidated))
                }
                // Became no-store: serve this once, keep it no longer.
                None => {
                    shard.cache.remove(&plan.key);
                    Ok(Fetched::Cached(obj, CacheOutcome::Bypass))
                }
            }
        }
        // Changed in S3: stream the new body and replace the entry.
        Ok(r) if r.status == 200 => Ok(Fetched::Origin(r, Miss::filling(Fill::unguarded(plan)))),
        // Gone or forbidden now: drop the entry, report S3's answer.
        Ok(r) if r.status < 500 => {
            shard.cache.remove(&plan.key);
            Ok(Fetched::Origin(
                r,
                Miss::plain(CacheOutcome::Miss { stored: false }),
            ))
        }
        failed => {
            let window = stale_if_error_window(&obj, object.bucket.cache.stale_if_error_seconds);
            let past = SystemTime::now()
                .duration_since(obj.expires_at)
                .unwrap_or_default();
            if past <= window {
                return Ok(Fetched::Cached(obj, CacheOutcome::Stale));
            }
            // Not allowed to serve it stale: S3's answer (or the transport error) goes out; the
            // entry stays, S3 failing says nothing about the object.
            match failed {
                Ok(r) => Ok(Fetched::Origin(
                    r,
                    Miss::plain(CacheOutcome::Miss { stored: false }),
                )),
                Err(e) => Err(e),
            }
        }
    }
}

/// How long past its expiry `obj` may be served when S3 fails: the larger of the bucket's
/// `cache.stale_if_error_seconds` and the stored response's own `Cache-Control:
/// stale-if-error=N` (RFC 5861 section 4). Zero when neither is set.
pub fn stale_if_error_window(obj: &CachedObject, bucket_seconds: u64) -> std::time::Duration {
    let directive = obj
        .headers
        .iter()
        .filter(|(n, _)| *n == header::CACHE_CONTROL)
        .filter_map(|(_, v)| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let (name, value) = d.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("stale-if-error")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .max()
        .unwrap_or(0);
    std::time::Duration::from_secs(bucket_seconds.max(directive))
}

/// Fetch `object` for `head` and settle the conditionals (module doc). Errors: transport
/// failures (502/504), and the 412 / 416 the proxy decides itself.
pub async fn fetch<'s>(
    shard: &'s Shard,
    local: &Local,
    head: &RequestHead,
    object: &ObjectRoute<'_, '_>,
    miss: Miss,
    cx: &mut RequestCtx<'_>,
) -> Result<Fetched<'s>, ProxyError> {
    let plan = RangePlan::new(&head.headers);
    let method = if head.method == http::Method::HEAD {
        "HEAD"
    } else {
        "GET"
    };
    let request = |method: &'static str, forward: Forward| {
        object_request(head, object, &plan, method, forward)
    };
    let metrics = cx.metrics;
    let ask = |forward: Forward| {
        let req = request(method, forward);
        async move { send(shard, metrics, local, object.index, &req).await }
    };
    let mut resp = ask(Forward::All).await?;
    // A 412 may be S3's misreading (RGW fails If-Match lists that hold the current tag) or
    // the If-Range precondition we injected: ask again for the Range alone and decide below.
    let client_preconditions = head.headers.contains_key(header::IF_MATCH)
        || head.headers.contains_key(header::IF_UNMODIFIED_SINCE);
    if resp.status == 412 && (plan.injected.is_some() || client_preconditions) {
        drop(resp);
        resp = ask(Forward::RangeOnly).await?;
    }
    if matches!(resp.status, 200 | 206) {
        match settle_conditionals(&head.headers, &plan, &resp)? {
            Settled::Send => {}
            Settled::NotModified => resp.status = 304,
            Settled::WholeObject => {
                drop(resp);
                resp = ask(Forward::Nothing).await?;
            }
        }
    }
    // Some S3 implementations (Ceph RGW among them) answer 304 without the validators and 416
    // without `Content-Range: bytes */len`, both of which RFC 9110 (sections 15.4.5, 15.5.17)
    // and our contract require. One plain HEAD of the object supplies them; AWS S3 includes
    // them, so this costs nothing there.
    let missing = match resp.status {
        304 => !resp.headers.contains_key(header::ETAG),
        416 => !resp.headers.contains_key(header::CONTENT_RANGE),
        _ => false,
    };
    if missing {
        let meta_req = request("HEAD", Forward::Nothing);
        if let Ok(meta) = send(shard, cx.metrics, local, object.index, &meta_req).await {
            if meta.status == 200 {
                complete_metadata(&mut resp.headers, resp.status, &meta.headers);
            }
        }
    }
    Ok(Fetched::Origin(resp, miss))
}

/// What the proxy's own evaluation of the request's conditionals makes of S3's 200/206.
enum Settled {
    /// Send it as it is.
    Send,
    /// Answer 304 (the body is not read; the upstream connection closes with the response).
    NotModified,
    /// A 206 whose validators fail the If-Range: fetch and send the whole current object,
    /// never bytes of two versions.
    WholeObject,
}

/// Evaluate the request's conditionals (RFC 9110 section 13.2.2) against the validators of
/// `resp`, a 200 or 206 from S3. Errors: 412 (If-Match / If-Unmodified-Since false), 416
/// (`bytes=-0`, with `Content-Range: bytes */len`).
fn settle_conditionals(
    request: &HeaderMap,
    plan: &RangePlan<'_>,
    resp: &Response<'_>,
) -> Result<Settled, ProxyError> {
    let etag = resp.headers.get(header::ETAG);
    let last_modified = resp.headers.get(header::LAST_MODIFIED).and_then(http_date);
    match evaluate(request, etag, last_modified) {
        Precondition::Failed => Err(ProxyError::client(
            ErrorKind::PreconditionFailed,
            "a precondition failed against the object",
        )),
        Precondition::NotModified => Ok(Settled::NotModified),
        Precondition::Proceed { apply_range } => {
            if resp.status == 206 && !apply_range {
                Ok(Settled::WholeObject)
            } else if plan.empty_suffix && apply_range && resp.status == 200 {
                let len = content_length(&resp.headers).unwrap_or(0);
                Err(ProxyError::client(
                    ErrorKind::RangeNotSatisfiable,
                    "the range does not overlap the object",
                )
                .with_header("Content-Range", content_range_unsatisfied(len)))
            } else {
                Ok(Settled::Send)
            }
        }
    }
}

/// Send one object request for bucket `index` through the shard's pool: to its primary, then
/// its replicas in ascending priority ([`Local::backend`]), each signed for that backend.
/// Per backend: skipped at once while its breaker is open; tried up to the bucket's
/// `s3.retry.max_attempts` within the core's budget ([`crate::upstream::retry`]: transport
/// failures and 500/502/503/504, full-jitter backoff); a backend that still fails hands the
/// request to the next (a failover, counted in `upstream_failovers_total`; it draws nothing
/// from the retry budget, which protects the failing backend). Every attempt is counted and
/// timed in `metrics`. Runs before any response byte reaches the client, so neither a retry
/// nor a failover is ever seen by it.
///
/// Returns the first answer that is not a failure, else the last backend's failure (S3's
/// 5xx, or the transport error); when every backend was skipped by an open breaker, 503 with
/// `Retry-After` = the shortest time until one half-opens.
pub async fn send<'s>(
    shard: &'s Shard,
    metrics: &BucketMetrics,
    local: &Local,
    index: usize,
    req: &ObjectRequest<'_>,
) -> Result<Response<'s>, ProxyError> {
    let s3 = &local.prepared.config.buckets[index].s3;
    shard.retry_budget.request();
    let mut last: Option<Result<Response<'s>, ProxyError>> = None;
    let mut open_for: Option<std::time::Duration> = None;
    let mut n = 0;
    while let Some(backend) = local.backend(index, n) {
        if n > 0 {
            metrics.upstream_failovers.inc();
        }
        n += 1;
        match send_to(shard, metrics, &backend, req, s3).await {
            Ok(result) => {
                let failed = match &result {
                    Ok(r) => retryable_status(r.status),
                    Err(_) => true,
                };
                if !failed {
                    return result;
                }
                // An unread error body closes that connection when it is dropped.
                last = Some(result);
            }
            Err(wait) => open_for = Some(open_for.map_or(wait, |w| w.min(wait))),
        }
    }
    last.unwrap_or_else(|| {
        Err(ProxyError::unavailable(
            Side::Origin,
            retry_after_secs(open_for.unwrap_or_default()),
            "the S3 backend is failing: its circuit breaker is open",
        ))
    })
}

/// [`send`] on one backend: its attempts under `s3`'s retry and breaker settings (the
/// primary's). `Err(wait)`: its breaker refused the first attempt, open for `wait` more.
async fn send_to<'s>(
    shard: &'s Shard,
    metrics: &BucketMetrics,
    backend: &Backend<'_>,
    req: &ObjectRequest<'_>,
    s3: &crate::config::S3Config,
) -> Result<Result<Response<'s>, ProxyError>, std::time::Duration> {
    let breaker = shard.breaker(backend.name);
    let mut attempt = 1;
    loop {
        if let Err(wait) = breaker.allow() {
            metrics.breaker_refusals.inc();
            return Err(wait);
        }
        let was_open = breaker.code() != 0;
        let probe = Probe {
            breaker: &breaker,
            done: false,
        };
        let result = send_once(shard, metrics, backend, req).await;
        let failed = match &result {
            Ok(r) => retryable_status(r.status),
            Err(_) => true,
        };
        probe.record(failed, &s3.circuit_breaker);
        let is_open = breaker.code() != 0;
        if was_open != is_open {
            metrics.breaker_open.add(if is_open { 1 } else { -1 });
        }
        if !failed || attempt >= s3.retry.max_attempts || !shard.retry_budget.try_retry() {
            return Ok(result);
        }
        // An unread error body closes that connection; the next attempt takes another.
        drop(result);
        metrics.upstream_retries.inc();
        monoio::time::sleep(shard.retry_budget.backoff(&s3.retry, attempt)).await;
        attempt += 1;
    }
}

/// An attempt the breaker let through: recorded when it ends, or abandoned if the request is
/// dropped mid-attempt (so a half-open breaker is not left waiting for a probe that never ends).
struct Probe<'b> {
    breaker: &'b Breaker,
    done: bool,
}

impl Probe<'_> {
    fn record(mut self, failed: bool, cfg: &crate::config::BreakerConfig) {
        self.done = true;
        self.breaker.record(failed, cfg);
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.abandon();
        }
    }
}

/// One attempt of [`send`], counted and timed.
async fn send_once<'s>(
    shard: &'s Shard,
    metrics: &BucketMetrics,
    backend: &Backend<'_>,
    req: &ObjectRequest<'_>,
) -> Result<Response<'s>, ProxyError> {
    let sent = Instant::now();
    metrics.upstream_requests.inc();
    let result = shard.upstream.send_object(backend, req).await;
    metrics.upstream_duration.observe(sent.elapsed());
    if let Err(e) = &result {
        metrics.record_upstream_error(if e.kind == ErrorKind::GatewayTimeout {
            "timeout"
        } else {
            "transport"
        });
    }
    result
}

/// How the client's Range and If-Range map onto the upstream request.
struct RangePlan<'h> {
    /// The client's Range value when it is one syntactically valid range (DESIGN section 5:
    /// invalid or multi-range requests are served 200 in full, so they are not forwarded).
    /// `bytes=-0` is not forwarded either (S3 servers answer it 206 in full): see `empty_suffix`.
    range: Option<&'h [u8]>,
    /// The client asked for `bytes=-0`, which selects nothing: the object is fetched without
    /// Range only to learn its length for `416` with `Content-Range: bytes */len` (RFC 9110
    /// section 14.1.2: a suffix-length of 0 is unsatisfiable).
    empty_suffix: bool,
    /// A precondition added so S3 evaluates the client's If-Range for us: a strong ETag becomes
    /// `If-Match`, a date `If-Unmodified-Since`. A 412 caused by it means "validator stale":
    /// the request is repeated without Range and the client gets 200 with the full body.
    injected: Option<(&'static str, &'h [u8])>,
}

impl<'h> RangePlan<'h> {
    fn new(headers: &'h HeaderMap) -> RangePlan<'h> {
        let mut ranges = headers.get_all(header::RANGE).iter();
        let parsed = match (ranges.next(), ranges.next()) {
            (Some(v), None) => parse_range(v.as_bytes()).map(|r| (v, r)),
            _ => None,
        };
        let empty_suffix = matches!(parsed, Some((_, ByteRange::Suffix(0))));
        let mut range = parsed.filter(|_| !empty_suffix).map(|(v, _)| v.as_bytes());
        let mut injected = None;
        if let (Some(_), Some(if_range)) = (&range, headers.get(header::IF_RANGE)) {
            let v = if_range.as_bytes();
            if v.starts_with(b"W/") {
                // A weak validator never matches for If-Range (RFC 9110 section 13.1.5).
                range = None;
            } else if v.starts_with(b"\"") {
                if !headers.contains_key(header::IF_MATCH) {
                    injected = Some(("If-Match", v));
                }
            } else if !headers.contains_key(header::IF_UNMODIFIED_SINCE) {
                injected = Some(("If-Unmodified-Since", v));
            }
        }
        RangePlan {
            range,
            empty_suffix,
            injected,
        }
    }
}

/// Which of the client's fields go upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forward {
    /// Conditionals, Range and the If-Range precondition (the first attempt).
    All,
    /// Range only (after S3's 412: the proxy evaluates the client's preconditions itself).
    RangeOnly,
    /// None (the whole object, or a metadata HEAD of our own).
    Nothing,
}

/// The object request for `object`: only the fields S3 needs, never the client's
/// Authorization, cookies or token parameters (they are simply not copied).
fn object_request<'a>(
    head: &'a RequestHead,
    object: &'a ObjectRoute<'_, '_>,
    plan: &RangePlan<'a>,
    method: &'static str,
    forward: Forward,
) -> ObjectRequest<'a> {
    let mut req = ObjectRequest::new(method, &object.key, object.version_id.as_deref());
    if forward == Forward::All {
        for (lookup, sent) in FORWARDED {
            for v in head.headers.get_all(lookup) {
                req.field(sent, v.as_bytes());
            }
        }
    }
    if matches!(forward, Forward::All | Forward::RangeOnly) {
        if let Some(range) = plan.range {
            req.field("Range", range);
        }
    }
    if forward == Forward::All {
        if let Some((name, v)) = plan.injected {
            req.field(name, v);
        }
    }
    req
}

/// Fill what S3 left out of a 304 (ETag, Last-Modified, Cache-Control, Expires) or a 416
/// (`Content-Range: bytes */len`) from a HEAD of the same object.
fn complete_metadata(headers: &mut HeaderMap, status: u16, meta: &HeaderMap) {
    if status == 304 {
        for name in [
            header::ETAG,
            header::LAST_MODIFIED,
            header::CACHE_CONTROL,
            header::EXPIRES,
        ] {
            if let (false, Some(v)) = (headers.contains_key(&name), meta.get(&name)) {
                let v = v.clone();
                headers.insert(name, v);
            }
        }
    } else if let Some(len) = content_length(meta) {
        if let Ok(v) = http::HeaderValue::from_str(&content_range_unsatisfied(len)) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
}

/// The `Content-Length` of `headers`, when valid.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn range_plan_forwards_only_valid_single_ranges() {
        let h = headers(&[("range", "bytes=0-9")]);
        assert!(RangePlan::new(&h).range.is_some());
        let h = headers(&[("range", "bytes=0-1,4-5")]);
        assert!(RangePlan::new(&h).range.is_none());
        let h = headers(&[("range", "bytes=x")]);
        assert!(RangePlan::new(&h).range.is_none());
        let h = headers(&[("range", "bytes=-0")]);
        let p = RangePlan::new(&h);
        assert!(p.range.is_none() && p.empty_suffix);
    }

    #[test]
    fn if_range_becomes_a_precondition() {
        let h = headers(&[("range", "bytes=0-9"), ("if-range", "\"abc\"")]);
        assert_eq!(
            RangePlan::new(&h).injected,
            Some(("If-Match", &b"\"abc\""[..]))
        );
        let h = headers(&[("range", "bytes=0-9"), ("if-range", "W/\"abc\"")]);
        let p = RangePlan::new(&h);
        assert!(p.range.is_none() && p.injected.is_none());
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let h = headers(&[("range", "bytes=0-9"), ("if-range", date)]);
        assert_eq!(
            RangePlan::new(&h).injected,
            Some(("If-Unmodified-Since", date.as_bytes()))
        );
        let h = headers(&[("if-range", "\"abc\"")]);
        assert!(
            RangePlan::new(&h).injected.is_none(),
            "If-Range without Range is ignored"
        );
    }
}
