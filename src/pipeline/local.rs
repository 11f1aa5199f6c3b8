//! The answers the proxy makes itself on the data listener: `/health` and `/ready` (the same
//! JSON as the admin listener, so a load balancer can check each node where it sends traffic),
//! `OPTIONS` (`Allow`, or a CORS preflight), and every error as the JSON body of DESIGN
//! section 5.
//!
//! Every answer goes through the one small-response writer ([`crate::http::small`]).
//!
//! Hot path only for errors (one small head and body in the connection's buffer, one write).

use http::Method;

use super::headers;
use super::route::LocalAnswer;
use super::{Local, RequestCtx, Shard, Summary, ALLOW};
use crate::error::ProxyError;
use crate::http::cors::CorsPolicy;
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::http::server::Conn;
use crate::http::small::{write_error, write_small, Answering, SmallBody};

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

/// The request `head` as a small response answers it.
fn answering<'a>(head: &RequestHead, cx: &'a RequestCtx<'_>) -> Answering<'a> {
    Answering {
        request_id: &cx.request_id,
        version: head.version,
        head_request: head.method == Method::HEAD,
    }
}

/// What a small answer of `status` with `bytes` of body did: the connection stays usable when
/// the write succeeded and it was to be kept alive.
fn summary(status: u16, bytes: u64, written: std::io::Result<()>, conn: &Conn) -> Summary {
    Summary {
        status,
        bytes,
        keep_alive: written.is_ok() && conn.keep_alive,
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
    let to = answering(head, cx);
    let small = SmallBody {
        content_type: Some(b"application/json"),
        bytes: body.as_bytes(),
    };
    let written = write_small(conn, &shard.dates, to, status, small, |h| {
        h.header("Cache-Control", b"no-store");
    })
    .await;
    let bytes = if to.head_request { 0 } else { body.len() };
    summary(status, bytes as u64, written, conn)
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
    let empty = SmallBody {
        content_type: None,
        bytes: b"",
    };
    let fields = |h: &mut ResponseHead<'_>| match &preflight {
        Some((policy, p)) => policy.write_preflight(h, p),
        None => {
            h.header("Allow", ALLOW.as_bytes());
        }
    };
    let to = answering(head, cx);
    let written = write_small(conn, &shard.dates, to, status, empty, fields).await;
    summary(status, 0, written, conn)
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
    let fields = |h: &mut ResponseHead<'_>| cx.policy.error_fields(h, &head.headers, status);
    let written = write_error(conn, &shard.dates, answering(head, cx), e, fields).await;
    summary(status, 0, written, conn)
}
