//! The answers the proxy makes itself on the data listener: `/health` and `/ready` (the same
//! JSON as the admin listener, so a load balancer can check each node where it sends traffic),
//! `OPTIONS` (`Allow`, or a CORS preflight), and every error as the JSON body of DESIGN
//! section 5.
//!
//! Hot path only for errors (one small head and body in the connection's buffer, one write).

use http::Method;

use super::headers;
use super::route::LocalAnswer;
use super::{Local, RequestCtx, Shard, Summary, ALLOW};
use crate::error::{json_body, ProxyError};
use crate::http::cors::CorsPolicy;
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::http::server::Conn;

/// Answer a request the route phase kept for the proxy itself.
pub async fn answer(
    shard: &Shard,
    _local: &Local,
    head: &RequestHead,
    conn: &mut Conn,
    cx: &RequestCtx<'_>,
    answer: LocalAnswer<'_, '_>,
) -> Summary {
    match answer {
        LocalAnswer::Health(path) => health(shard, head, conn, cx, path).await,
        LocalAnswer::Options(cors) => options(shard, head, conn, cx, cors).await,
    }
}

/// `/health` and `/ready`: `/ready` is 503 while this shard drains.
async fn health(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    cx: &RequestCtx<'_>,
    path: &str,
) -> Summary {
    let (status, body) = if path == "/health" {
        (200, shard.health.health_json())
    } else {
        shard.health.ready_json(shard.ctx.is_draining())
    };
    let mut h = ResponseHead::new(&mut conn.wbuf, status);
    h.header("Date", &shard.dates.now())
        .header("Content-Type", b"application/json")
        .header("Cache-Control", b"no-store")
        .header_u64("Content-Length", body.len() as u64)
        .header("X-Request-Id", cx.request_id.as_bytes());
    h.connection(head.version, conn.keep_alive);
    h.finish();
    let is_head = head.method == Method::HEAD;
    if !is_head {
        conn.wbuf.extend_from_slice(body.as_bytes());
    }
    let ok = conn.flush().await.is_ok();
    Summary {
        status,
        bytes: if is_head { 0 } else { body.len() as u64 },
        keep_alive: ok && conn.keep_alive,
    }
}

/// `OPTIONS`: 200 with `Allow` (DESIGN section 5), or 204 with the CORS fields when it is a
/// preflight the routed bucket's `cors` accepts (DESIGN section 6.1, Fetch section 3.2.2).
async fn options(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    cx: &RequestCtx<'_>,
    cors: Option<&CorsPolicy>,
) -> Summary {
    let preflight = headers::accepted_preflight(cors, &head.headers);
    let status = if preflight.is_some() { 204 } else { 200 };
    let mut h = ResponseHead::new(&mut conn.wbuf, status);
    h.header("Date", &shard.dates.now());
    match &preflight {
        Some((policy, p)) => policy.write_preflight(&mut h, p),
        None => {
            h.header("Allow", ALLOW.as_bytes())
                .header("Content-Length", b"0");
        }
    }
    h.header("X-Request-Id", cx.request_id.as_bytes())
        .connection(head.version, conn.keep_alive);
    h.finish();
    let ok = conn.flush().await.is_ok();
    Summary {
        status,
        bytes: 0,
        keep_alive: ok && conn.keep_alive,
    }
}

/// Write `e` as the JSON error of DESIGN section 5 (no body for HEAD), with the routed
/// bucket's policy fields ([`headers::EdgePolicy::error_fields`]). Failures of ours or of S3
/// (5xx) are logged; S3's 4xx answers are the client's business and only get the access line.
pub async fn error(
    shard: &Shard,
    head: &RequestHead,
    conn: &mut Conn,
    e: &ProxyError,
    cx: &RequestCtx<'_>,
) -> Summary {
    let status = e.status();
    if status >= 500 {
        tracing::warn!(request_id = %cx.request_id, status, error = %e.message, "request failed");
    }
    let body = json_body(status, &e.message, &cx.request_id);
    let mut h = ResponseHead::new(&mut conn.wbuf, status);
    h.header("Date", &shard.dates.now())
        .header("Content-Type", b"application/json")
        .header_u64("Content-Length", body.len() as u64)
        .header("X-Request-Id", cx.request_id.as_bytes());
    if let Some((name, value)) = &e.header {
        h.header(name, value.as_bytes());
    }
    if let Some(secs) = e.retry_after_secs {
        h.header_u64("Retry-After", u64::from(secs));
    }
    cx.policy.error_fields(&mut h, &head.headers, status);
    h.connection(head.version, conn.keep_alive);
    h.finish();
    if head.method != Method::HEAD {
        conn.wbuf.extend_from_slice(&body);
    }
    let ok = conn.flush().await.is_ok();
    Summary {
        status,
        bytes: 0,
        keep_alive: ok && conn.keep_alive,
    }
}
