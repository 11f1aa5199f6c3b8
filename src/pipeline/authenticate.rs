//! Phase 3, authenticate: the bucket's JWT (RFC 7519), before any cache lookup, so a hit on a
//! private bucket still needs a valid token. Missing token 401 with `WWW-Authenticate:
//! Bearer`, a token that fails verification 401 `invalid_token`, claims that fail the bucket's
//! rules 403 (DESIGN section 5).
//!
//! Hot path for private buckets: token extraction (header or query probes), then a hash probe
//! of the shard's verified-token cache; a cold token costs one signature verification (HMAC
//! ~1 us, RSA-2048 ~30 us, ECDSA P-256 ~60 us). Free for public buckets.

use std::time::SystemTime;

use super::route::ObjectRoute;
use super::{Local, RequestCtx, Shard};
use crate::auth::{authenticate, extract_token, AuthError};
use crate::error::ProxyError;
use crate::http::request::RequestHead;

/// Verify the request's token when `object`'s bucket requires one; the verified claims go
/// into `cx.subject`. Errors: 401 / 403 as the module doc says, with `WWW-Authenticate`.
pub fn check<'l>(
    shard: &Shard,
    local: &'l Local,
    head: &RequestHead,
    object: &ObjectRoute<'l, '_>,
    cx: &mut RequestCtx<'l>,
) -> Result<(), ProxyError> {
    let Some(auth) = &local.prepared.buckets[object.index].auth else {
        return Ok(());
    };
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let result = match extract_token(auth.verifier.token_sources(), &head.headers, object.query) {
        None => Err(AuthError::Missing),
        Some(token) => authenticate(
            &auth.verifier,
            auth.jwks.as_deref(),
            &shard.tokens,
            local.generation,
            &token,
            now,
        ),
    };
    match result {
        Ok(verified) => {
            cx.subject = Some(verified);
            Ok(())
        }
        Err(e) => Err(ProxyError::client(e.kind(), e.to_string())
            .with_header("WWW-Authenticate", e.www_authenticate(&object.bucket.name))),
    }
}
