//! JWT authentication of bucket requests (DESIGN section 5, issue 3): where a token is found
//! (RFC 6750 bearer header, query parameter, named header), which key verifies it (shared
//! secret, PEM public key, `keys:` by `kid`, JWKS by `kid`), the RFC 7519 checks (`exp`/`nbf`
//! with leeway, `iss`, `aud`), the bucket's claims rules, and the per-shard cache of verified
//! tokens.
//!
//! Hot path, per request on an auth-enabled bucket: [`extract_token`] (a header probe or a
//! query scan, one small allocation for header tokens; 0.1-0.6 us) then [`authenticate`]: one
//! SHA-256 of the token and one probe of the shard's [`TokenCache`]; a hit costs 0.4-0.75 us
//! for an 800-byte token. A miss runs the signature verification, measured in a release build
//! with the RustCrypto backend on a loaded 2-core machine (`benches/jwt.rs`): HS256 6-8 us,
//! EdDSA 50-65 us, RS256 220-310 us, ES256 300-440 us, then the claims rules (a few JSON
//! lookups).
//! Failures are never cached, so a flood of forged tokens costs one verification each.
//!
//! Pieces:
//! - [`keys`]: [`Verifier`], built once per config on the main thread (reads PEM files).
//! - [`jwks`]: [`JwksStore`], the process-wide JWKS key set of one URL, and [`fetch_jwks`].
//! - [`claims`]: the claims rules (`equals`, `not_equals`, `in`, `contains`, `exists`).
//! - [`cache`]: [`TokenCache`], per shard, keyed by SHA-256 of the token (never the token).
//!
//! Tokens never appear in errors, logs or metrics: [`AuthError`] carries fixed reasons and the
//! text of the failed rule, and nothing here logs a token or a claim value.

pub mod cache;
pub mod claims;
pub mod fetcher;
pub mod jwks;
pub mod keys;

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

pub use crate::config::TokenSource;
use crate::error::ErrorKind;
pub use cache::TokenCache;
pub use jwks::{fetch_jwks, JwksStore};
pub use keys::Verifier;

/// Longest token accepted, bytes. Longer ones fail as `malformed token` before any hashing or
/// verification (IdP tokens are typically 0.5-2 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a request was not authenticated. Each variant maps to one status and one
/// `WWW-Authenticate` challenge (RFC 6750 section 3). Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in any configured source: 401, challenge without an error code (RFC 6750
    /// section 3.1: a request without credentials gets no error information).
    Missing,
    /// The token failed verification: 401 `invalid_token`. The reason is client-safe fixed
    /// text: `bad signature`, `expired`, `not yet valid`, `algorithm not allowed`,
    /// `unknown key id`, `issuer mismatch`, `audience mismatch`, `missing exp claim`,
    /// `malformed token`.
    Invalid(&'static str),
    /// The token is valid but a claims rule failed: 403 `insufficient_scope`. The text names
    /// the rule from the config (`claim role must equal "admin"`), never a claim value.
    Forbidden(String),
}

/// Client-safe reasons of [`AuthError::Invalid`].
pub mod reason {
    /// The signature does not verify with any candidate key.
    pub const BAD_SIGNATURE: &str = "bad signature";
    /// `now >= exp + leeway` (RFC 7519 section 4.1.4).
    pub const EXPIRED: &str = "expired";
    /// `now + leeway < nbf` (RFC 7519 section 4.1.5).
    pub const NOT_YET_VALID: &str = "not yet valid";
    /// The header `alg` is not configured, not allowed for the selected key, or `none`.
    pub const ALGORITHM_NOT_ALLOWED: &str = "algorithm not allowed";
    /// The header `kid` names no configured or JWKS key.
    pub const UNKNOWN_KEY_ID: &str = "unknown key id";
    /// `iss` differs from the configured issuer, or is absent while one is configured.
    pub const ISSUER_MISMATCH: &str = "issuer mismatch";
    /// No `aud` value equals the configured audience, or `aud` is absent while one is
    /// configured.
    pub const AUDIENCE_MISMATCH: &str = "audience mismatch";
    /// The token has no (numeric) `exp`: tokens must expire.
    pub const MISSING_EXP: &str = "missing exp claim";
    /// Not three base64url parts of JSON, an unsupported `crit` header, a non-object claims
    /// set, or longer than [`super::MAX_TOKEN_BYTES`].
    pub const MALFORMED: &str = "malformed token";
}

impl AuthError {
    /// The error kind answered: [`ErrorKind::Unauthorized`] (401) for [`AuthError::Missing`]
    /// and [`AuthError::Invalid`], [`ErrorKind::Forbidden`] (403) for [`AuthError::Forbidden`]
    /// (DESIGN section 5; RFC 6750 section 3.1).
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => ErrorKind::Unauthorized,
            AuthError::Forbidden(_) => ErrorKind::Forbidden,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 section 3), `realm` being the bucket name:
    /// `Bearer realm="x"` (missing), `Bearer realm="x", error="invalid_token",
    /// error_description="expired"` (invalid), `Bearer realm="x", error="insufficient_scope"`
    /// (forbidden). `"` and `\` in the realm are escaped (RFC 9110 section 5.6.4).
    pub fn www_authenticate(&self, realm: &str) -> String {
        let mut out = String::with_capacity(64 + realm.len());
        out.push_str("Bearer realm=\"");
        for c in realm.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        match self {
            AuthError::Missing => {}
            AuthError::Invalid(why) => {
                out.push_str(", error=\"invalid_token\", error_description=\"");
                out.push_str(why);
                out.push('"');
            }
            AuthError::Forbidden(_) => out.push_str(", error=\"insufficient_scope\""),
        }
        out
    }
}

impl fmt::Display for AuthError {
    /// The `message` of the JSON error body: `missing bearer token`, `invalid token: expired`,
    /// `forbidden: claim role must equal "admin"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("missing bearer token"),
            AuthError::Invalid(why) => write!(f, "invalid token: {why}"),
            AuthError::Forbidden(rule) => write!(f, "forbidden: {rule}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// What a verified token says. Shared through `Rc` from the shard's [`TokenCache`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The `sub` claim when it is a string.
    pub subject: Option<String>,
    /// The whole claims set (a JSON object).
    pub claims: serde_json::Value,
    /// `exp`, unix seconds (always present: tokens without `exp` are rejected).
    pub expires_at: Option<u64>,
}

/// The token of a request, per `sources` in order (the first source that yields a non-empty
/// token wins):
/// - `bearer`: the first `Authorization` field whose scheme is `Bearer`, matched
///   case-insensitively (RFC 6750 section 2.1, RFC 9110 section 11.1), then `1*SP token`;
/// - `query`: the first parameter named `name` in `query` (the part after `?`), decoded as
///   `application/x-www-form-urlencoded` with [`crate::http::path::query_pairs`], the same
///   decoding used to strip it (so `%74oken=` is found and stripped alike);
/// - `header`: the first field named `name`, trimmed.
///
/// Returns `None` when no source has a token. Borrowed from `query` when no decoding was
/// needed; header tokens are copied (one allocation).
pub fn extract_token<'a>(
    sources: &[TokenSource],
    headers: &http::HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    find_token(sources, headers, query).map(|(token, _)| token)
}

/// [`extract_token`], also returning the source the token came from (for stripping it and for
/// metrics labels; the token itself must never be logged).
pub fn find_token<'s, 'a>(
    sources: &'s [TokenSource],
    headers: &http::HeaderMap,
    query: Option<&'a str>,
) -> Option<(Cow<'a, str>, &'s TokenSource)> {
    for source in sources {
        let found = match source {
            TokenSource::Bearer => bearer_token(headers).map(|t| Cow::Owned(t.to_owned())),
            TokenSource::Query { name } => query.and_then(|q| query_token(q, name)),
            TokenSource::Header { name } => headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| Cow::Owned(t.to_owned())),
        };
        if let Some(token) = found {
            return Some((token, source));
        }
    }
    None
}

/// The credentials of the first `Authorization: Bearer <token>` field (scheme
/// case-insensitive, one or more spaces before the token), or `None`.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            let token = rest.trim_start_matches(' ').trim_end();
            (!token.is_empty()).then_some(token)
        })
}

/// The first non-empty value of parameter `name` in `query`, decoded exactly as
/// [`crate::http::path::query_pairs`] decodes it. Pairs without `%` or `+` are compared and
/// returned without decoding (a plain token is borrowed after one scan for those bytes).
fn query_token<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let plain = |s: &str| !s.bytes().any(|b| b == b'%' || b == b'+');
    for pair in query.split('&') {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if plain(n) {
            if n != name {
                continue;
            }
            if plain(v) {
                if v.is_empty() {
                    continue;
                }
                return Some(Cow::Borrowed(v));
            }
        }
        if let Some((n, v)) = crate::http::path::query_pairs(pair).next() {
            if n == name && !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

/// Names of the query parameters that may carry a token (the `query` sources, in order): the
/// proxy removes them from the query before SigV4 signing and before logging the target.
pub fn token_query_params(sources: &[TokenSource]) -> impl Iterator<Item = &str> {
    sources.iter().filter_map(|s| match s {
        TokenSource::Query { name } => Some(name.as_str()),
        _ => None,
    })
}

/// Verifies `token` (unix time `now`, seconds) with `verifier` and, when it has a
/// `jwks_url`, the keys in `jwks`; then checks the claims rules. Uses and fills `cache`:
/// a token already verified by this shard under the same verifier, the same `generation`
/// (the caller's config generation) and the same JWKS generation is answered from the cache
/// without verifying again, until `exp + leeway`.
///
/// Errors: [`AuthError::Invalid`] (401, never cached) or [`AuthError::Forbidden`] (403,
/// cached like a success: it is a property of a valid token). An empty token is
/// [`AuthError::Missing`].
pub fn authenticate(
    verifier: &Verifier,
    jwks: Option<&JwksStore>,
    cache: &TokenCache,
    generation: u64,
    token: &str,
    now: u64,
) -> Result<Rc<Verified>, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(reason::MALFORMED));
    }
    let jwks = jwks.filter(|_| verifier.jwks_url().is_some());
    let stamp = cache::Stamp {
        verifier: verifier.id(),
        generation,
        jwks_generation: jwks.map_or(0, JwksStore::generation),
    };
    let key = cache::CacheKey::new(stamp.verifier, token);
    if let Some(outcome) = cache.lookup(&key, &stamp, now) {
        return outcome.map_err(|rule| AuthError::Forbidden(rule.to_string()));
    }
    let verified = verifier
        .verify(token, jwks, now)
        .map_err(AuthError::Invalid)?;
    let valid_until = verifier.valid_until(&verified);
    let outcome = match claims::check_rules(verifier.claims_rules(), &verified.claims) {
        Ok(()) => Ok(Rc::new(verified)),
        Err(rule) => Err(Rc::<str>::from(rule)),
    };
    cache.insert(key, stamp, valid_until, outcome.clone());
    outcome.map_err(|rule| AuthError::Forbidden(rule.to_string()))
}

#[cfg(test)]
mod tests;
