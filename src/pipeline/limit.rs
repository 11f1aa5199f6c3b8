//! Phase 2, limit: where rate limits (429 with `Retry-After`), the node-wide concurrency limit
//! (503 with `Retry-After`) and IP allow/block lists (403) will be enforced, between routing
//! and authentication (DESIGN section 5, Limits). Nothing is limited yet: the resilience and
//! limits issue fills this phase in, behind this one call.
//!
//! Hot path: free today (an inlined `Ok`).

use super::route::ObjectRoute;
use super::{RequestCtx, Shard};
use crate::error::ProxyError;

/// Whether `object` may proceed. Today always `Ok`.
#[inline]
pub fn check(
    _shard: &Shard,
    _object: &ObjectRoute<'_, '_>,
    _cx: &RequestCtx<'_>,
) -> Result<(), ProxyError> {
    Ok(())
}
