//! Phase 7, log: the request's counters (by method and status class, duration, body bytes)
//! and its access line (target `yatagarasu::access`).
//!
//! Hot path: a few single-writer counter updates; the access line is one formatted event
//! handed to the non-blocking log writer (dropped, never waited for, when its queue is full).

use super::{Local, RequestCtx, Shard, Summary};
use crate::http::forwarded::client_ip;
use crate::http::path::split_target;
use crate::http::request::RequestHead;
use crate::http::server::Conn;

/// Count the request and write its access line (when `logging.access_log`).
pub fn record(
    shard: &Shard,
    local: &Local,
    head: &RequestHead,
    conn: &Conn,
    cx: &RequestCtx<'_>,
    summary: &Summary,
) {
    let elapsed = cx.started.elapsed();
    cx.metrics
        .record_request(&head.method, summary.status, elapsed);
    cx.metrics.bytes_sent.add(summary.bytes);
    let cfg = &local.prepared.config;
    if !cfg.logging.access_log {
        return;
    }
    let (path, _) = split_target(&head.target);
    let bucket = cx
        .bucket
        .and_then(|i| cfg.buckets.get(i))
        .map_or("-", |b| b.name.as_str());
    let client = client_ip(conn.peer.ip(), &head.headers, &cfg.server.trusted_proxies);
    let subject = cx
        .subject
        .as_ref()
        .and_then(|v| v.subject.as_deref())
        .unwrap_or("-");
    tracing::info!(
        target: "yatagarasu::access",
        request_id = %cx.request_id,
        client = %client,
        method = %head.method,
        path = %path,
        bucket,
        status = summary.status,
        bytes = summary.bytes,
        duration_us = elapsed.as_micros() as u64,
        cache = cx.outcome.log_word(),
        subject,
        shard = shard.ctx.index(),
    );
}
