//! Phase 1, route: what the request is. Local answers first (`/health`, `/ready`, `OPTIONS`),
//! then the path (normalised once: repeated slashes, escapes of unreserved characters, `..`
//! rejected), the method, the longest-prefix bucket, the object key and `versionId` (DESIGN
//! section 5).
//!
//! Hot path: one pass over the path (borrowed when already normal), one routing probe per
//! path segment, one pass over the query for `versionId`; no allocation for a plain path.

use std::borrow::Cow;

use http::Method;

use super::headers::{self, EdgePolicy};
use super::{Local, RequestCtx, ALLOW};
use crate::config::BucketConfig;
use crate::error::{ErrorKind, ProxyError};
use crate::http::cors::CorsPolicy;
use crate::http::path::{decode_path, normalize_path, query_pairs, split_target, PathError};
use crate::http::request::RequestHead;

/// What the route phase made of a request.
pub enum Route<'l, 'h> {
    /// Answered by the proxy itself, without a bucket.
    Local(LocalAnswer<'l, 'h>),
    /// An object of a bucket.
    Object(ObjectRoute<'l, 'h>),
}

/// A request the proxy answers itself.
pub enum LocalAnswer<'l, 'h> {
    /// `GET`/`HEAD` of `/health` or `/ready` (the path).
    Health(&'h str),
    /// `OPTIONS`, with the CORS policy of the bucket its path routes to.
    Options(Option<&'l CorsPolicy>),
}

/// A routed object request.
pub struct ObjectRoute<'l, 'h> {
    /// The bucket's index in the snapshot.
    pub index: usize,
    /// The bucket's config.
    pub bucket: &'l BucketConfig,
    /// The object key, percent-decoded bytes (non-empty).
    pub key: Cow<'h, [u8]>,
    /// The request's query string (the token source may read it).
    pub query: Option<&'h str>,
    /// `versionId`, when the bucket allows it (`s3.allow_version_id`).
    pub version_id: Option<String>,
}

/// Route `head`; sets the context's bucket, metrics and edge policy once a bucket matched.
/// Errors: 400 (bad path, `versionId` where not allowed), 405 (method, with `Allow`), 404 (no
/// bucket, or no key).
pub fn route<'l, 'h>(
    local: &'l Local,
    head: &'h RequestHead,
    cx: &mut RequestCtx<'l>,
) -> Result<Route<'l, 'h>, ProxyError> {
    let (raw_path, query) = split_target(&head.target);
    if matches!(raw_path, "/health" | "/ready")
        && (head.method == Method::GET || head.method == Method::HEAD)
    {
        return Ok(Route::Local(LocalAnswer::Health(raw_path)));
    }
    if head.method == Method::OPTIONS {
        let cors = headers::cors_for_path(&local.prepared, raw_path);
        return Ok(Route::Local(LocalAnswer::Options(cors)));
    }
    let path = normalize_path(raw_path)
        .map_err(|e| ProxyError::client(e.kind(), format!("invalid path: {e}")))?;
    if head.method != Method::GET && head.method != Method::HEAD {
        return Err(ProxyError::client(
            ErrorKind::MethodNotAllowed,
            "only GET, HEAD and OPTIONS are served",
        )
        .with_header("Allow", ALLOW));
    }
    let (index, rest) = local.prepared.router.route(&path).ok_or_else(|| {
        ProxyError::client(ErrorKind::NotFound, "no bucket is mapped to this path")
    })?;
    cx.bucket = Some(index);
    cx.metrics = &local.buckets[index].metrics;
    cx.policy = EdgePolicy::of(&local.prepared.buckets[index]);
    if rest.is_empty() {
        return Err(ProxyError::client(
            ErrorKind::NotFound,
            "the path names a bucket but no object key",
        ));
    }
    // The key borrows the request target when the path needed no normalising (the common
    // case: no allocation), else it is decoded from the normalised copy.
    debug_assert!(path.ends_with(rest));
    let rest_start = path.len() - rest.len();
    let bad = |e: PathError| ProxyError::client(e.kind(), format!("invalid path: {e}"));
    let key: Cow<'h, [u8]> = match path {
        Cow::Borrowed(p) => decode_path(&p[rest_start..]).map_err(bad)?,
        Cow::Owned(p) => Cow::Owned(decode_path(&p[rest_start..]).map_err(bad)?.into_owned()),
    };
    let bucket = &local.prepared.config.buckets[index];
    let version_id = query.and_then(|q| {
        query_pairs(q)
            .find(|(k, _)| k == "versionId")
            .map(|(_, v)| v.into_owned())
    });
    if version_id.is_some() && !bucket.s3.allow_version_id {
        return Err(ProxyError::client(
            ErrorKind::BadRequest,
            "versionId is not allowed on this bucket (s3.allow_version_id is false)",
        ));
    }
    Ok(Route::Object(ObjectRoute {
        index,
        bucket,
        key,
        query,
        version_id,
    }))
}
