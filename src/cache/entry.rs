//! The cache key, the cached entry and its freshness (RFC 9111 sections 3, 4.2 and 4.3.4).
//!
//! Hot path: a [`CacheKey`] is built once per cacheable request (one allocation holding bucket,
//! object key and versionId together); [`CachedObject::is_fresh`] and [`CachedObject::age`] are
//! a comparison each. Building a [`CachedObject`] ([`CachedObject::from_response`]) and
//! [`storable_ttl`] run once per miss: one pass over the response headers, one `Vec` of ~10
//! header pairs; the body `Bytes` is moved in, never copied.

use std::time::{Duration, SystemTime};

use std::sync::Arc;

use bytes::Bytes;

use super::disk::DiskBody;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Response headers kept in an entry and replayed on a hit, in the order the proxy writes them
/// on a miss (the proxy's pass-through list minus `Content-Range`), followed by every
/// `x-amz-meta-*` field. `Content-Length`, `Content-Range` and `Date` are never stored: they are
/// generated per response. Names are lower case, as `http::HeaderName` stores them.
pub const STORED_HEADERS: [&str; 11] = [
    "content-type",
    "etag",
    "last-modified",
    "accept-ranges",
    "cache-control",
    "content-encoding",
    "content-disposition",
    "content-language",
    "expires",
    "x-amz-version-id",
    "vary",
];

/// Bytes charged per entry on top of its body, headers and key: the `Arc<CachedObject>`
/// allocation (160 bytes on x86_64) and the cache's slot and map entry (~80); rounded up.
/// Also guarantees no entry weighs 0, which quick_cache would never evict.
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// Bytes charged per stored header on top of its name and value: one `(HeaderName,
/// HeaderValue)` slot in the entry's `Vec`.
const HEADER_OVERHEAD_BYTES: u64 = std::mem::size_of::<(HeaderName, HeaderValue)>() as u64;

/// Largest freshness lifetime a delta-seconds value can express here (RFC 9111 section 1.2.2:
/// a value too large to represent is taken as 2^31 seconds).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Identity of a cached representation: (bucket name, object key bytes, versionId).
///
/// The bucket name is the config bucket's `name` (the one admin purges use), the object key the
/// percent-decoded key bytes after the bucket's path prefix, the versionId the request's
/// `versionId` query parameter if any. Nothing else from the request (tokens, signatures, other
/// query parameters, headers) is part of the key, by construction: there is no field for it.
///
/// Layout: one boxed slice `bucket ++ key ++ version` plus lengths, so building a key is one
/// allocation, hashing is one pass and equality one `memcmp`. `Some("")` and `None` as versionId
/// are different keys. `Hash` feeds the three parts separately, as [`CacheKeyRef`] does, so a
/// lookup needs no key allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheKey {
    bytes: Box<[u8]>,
    bucket_len: usize,
    key_len: usize,
    has_version: bool,
}

impl CacheKey {
    /// Key for object `key` (decoded bytes) of config bucket `bucket`, optionally at `version_id`.
    pub fn new(bucket: &str, key: &[u8], version_id: Option<&str>) -> Self {
        let version = version_id.unwrap_or("").as_bytes();
        let mut bytes = Vec::with_capacity(bucket.len() + key.len() + version.len());
        bytes.extend_from_slice(bucket.as_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(version);
        CacheKey {
            bytes: bytes.into_boxed_slice(),
            bucket_len: bucket.len(),
            key_len: key.len(),
            has_version: version_id.is_some(),
        }
    }

    /// The config bucket name.
    pub fn bucket(&self) -> &str {
        // Built from a `&str`, so always valid UTF-8.
        std::str::from_utf8(self.bucket_bytes()).unwrap_or_default()
    }

    /// The config bucket name as bytes (no UTF-8 check; what purges compare).
    pub fn bucket_bytes(&self) -> &[u8] {
        &self.bytes[..self.bucket_len]
    }

    /// The object key bytes (percent-decoded).
    pub fn key(&self) -> &[u8] {
        &self.bytes[self.bucket_len..self.bucket_len + self.key_len]
    }

    /// The versionId, if the request named one.
    pub fn version_id(&self) -> Option<&str> {
        self.has_version.then(|| {
            std::str::from_utf8(&self.bytes[self.bucket_len + self.key_len..]).unwrap_or_default()
        })
    }

    /// Address of this key object's buffer: distinct for every live key object (equal keys
    /// included), so the shard can recognise "this very key" among quick_cache's reports.
    pub(crate) fn identity(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    /// Bytes this key costs in a cache: its buffer plus the struct.
    pub fn weight(&self) -> u64 {
        (self.bytes.len() + std::mem::size_of::<CacheKey>()) as u64
    }
}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref_key().hash(state);
    }
}

impl CacheKey {
    /// The borrowed form of this key (equal hash, equivalent for lookups).
    pub fn as_ref_key(&self) -> CacheKeyRef<'_> {
        CacheKeyRef {
            bucket: self.bucket_bytes(),
            key: self.key(),
            version_id: self
                .has_version
                .then(|| &self.bytes[self.bucket_len + self.key_len..]),
        }
    }
}

/// A [`CacheKey`] made of borrowed parts, for lookups on the hit path without building (and
/// allocating) the owned key: same hash, and `Equivalent` to the owned key with the same parts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CacheKeyRef<'a> {
    /// The config bucket name.
    pub bucket: &'a [u8],
    /// The object key bytes (percent-decoded).
    pub key: &'a [u8],
    /// The versionId, if the request named one.
    pub version_id: Option<&'a [u8]>,
}

impl<'a> CacheKeyRef<'a> {
    /// Key parts as [`CacheKey::new`] takes them.
    pub fn new(bucket: &'a str, key: &'a [u8], version_id: Option<&'a str>) -> Self {
        CacheKeyRef {
            bucket: bucket.as_bytes(),
            key,
            version_id: version_id.map(str::as_bytes),
        }
    }
}

impl CacheKeyRef<'_> {
    /// The owned key with these parts (one allocation of the key's bytes).
    pub fn to_key(&self) -> CacheKey {
        let version = self.version_id.unwrap_or_default();
        let mut bytes = Vec::with_capacity(self.bucket.len() + self.key.len() + version.len());
        bytes.extend_from_slice(self.bucket);
        bytes.extend_from_slice(self.key);
        bytes.extend_from_slice(version);
        CacheKey {
            bytes: bytes.into_boxed_slice(),
            bucket_len: self.bucket.len(),
            key_len: self.key.len(),
            has_version: self.version_id.is_some(),
        }
    }
}

impl quick_cache::Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, owned: &CacheKey) -> bool {
        *self == owned.as_ref_key()
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKey")
            .field("bucket", &self.bucket())
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("version_id", &self.version_id())
            .finish()
    }
}

/// One cached representation: a complete 200 response to a GET (its status is implicit).
///
/// Immutable once built: tiers hand out `Arc<CachedObject>` and a revalidation builds a new
/// object ([`CachedObject::refreshed`], [`CachedObject::revalidated`]) that shares the body.
#[derive(Clone, Debug)]
pub struct CachedObject {
    /// The whole representation; its length is the `Content-Length` a hit sends.
    pub body: Bytes,
    /// The pass-through response headers as received, in [`STORED_HEADERS`] order then
    /// `x-amz-meta-*`; never `Content-Length`, `Content-Range` or `Date`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `ETag` as received, quotes (and any `W/`) included.
    pub etag: Option<HeaderValue>,
    /// `Last-Modified`, parsed (second resolution).
    pub last_modified: Option<SystemTime>,
    /// When the body was stored or last revalidated; `Age` counts from here.
    pub stored_at: SystemTime,
    /// End of freshness: fresh while `now < expires_at`, then stale (revalidate before use).
    pub expires_at: SystemTime,
    /// Set on an entry the disk tier answered without reading its body (HEAD, Range,
    /// conditionals, bodies over the memory item limit): `body` is then empty and the body is
    /// read from disk in verified chunks as it is sent ([`crate::cache::disk::DiskReader`]).
    /// Such an entry is never put in the memory tier or an L1.
    pub disk: Option<Arc<DiskBody>>,
}

impl CachedObject {
    /// Build an entry from its complete `body` and the already selected pass-through `headers`
    /// (see [`STORED_HEADERS`]), fresh for `ttl` from `now`. `etag` and `last_modified` are
    /// taken from those headers (first value; an unparsable date is `None`).
    pub fn new(
        body: Bytes,
        headers: Vec<(HeaderName, HeaderValue)>,
        now: SystemTime,
        ttl: Duration,
    ) -> CachedObject {
        let first = |name: HeaderName| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let etag = first(header::ETAG);
        let last_modified = first(header::LAST_MODIFIED).as_ref().and_then(http_date);
        CachedObject {
            body,
            headers,
            etag,
            last_modified,
            stored_at: now,
            expires_at: expiry(now, ttl),
            disk: None,
        }
    }

    /// Build an entry from a 200 GET response's `headers` and its complete `body`, fresh for
    /// `ttl` (from [`storable_ttl`]) from `now`. Keeps only the [`STORED_HEADERS`] and
    /// `x-amz-meta-*`; parses `ETag` and `Last-Modified` (an unparsable date is `None`).
    pub fn from_response(
        body: Bytes,
        headers: &HeaderMap,
        now: SystemTime,
        ttl: Duration,
    ) -> CachedObject {
        let mut stored = Vec::with_capacity(headers.len().min(32));
        for name in STORED_HEADERS {
            for v in headers.get_all(name) {
                stored.push((HeaderName::from_static(name), v.clone()));
            }
        }
        for (name, v) in headers {
            if name.as_str().starts_with("x-amz-meta-") {
                stored.push((name.clone(), v.clone()));
            }
        }
        CachedObject {
            body,
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).and_then(http_date),
            headers: stored,
            stored_at: now,
            expires_at: expiry(now, ttl),
            disk: None,
        }
    }

    /// The body length, bytes: the in-memory body's, or the disk body's for an entry served
    /// from disk ([`CachedObject::disk`]).
    pub fn len(&self) -> u64 {
        match &self.disk {
            Some(d) => d.body_len,
            None => self.body.len() as u64,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this entry costs in memory: body + every stored header (name, value and its slot) +
    /// [`ENTRY_OVERHEAD_BYTES`]. Never 0. Computed on demand (a pass over ~10 headers); constant
    /// for the entry's life because the entry is immutable.
    pub fn weight(&self) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(n, v)| HEADER_OVERHEAD_BYTES + n.as_str().len() as u64 + v.len() as u64)
            .sum();
        self.body.len() as u64 + headers + ENTRY_OVERHEAD_BYTES
    }

    /// Time since the entry was stored or last revalidated, for the `Age` header (RFC 9111
    /// section 5.1; send whole seconds). Zero if the clock went backwards.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or(Duration::ZERO)
    }

    /// Whether the stored response gave its own relative freshness lifetime: a `Cache-Control`
    /// `max-age` or `s-maxage` directive, valid or not (RFC 9111 sections 5.2.2.1, 5.2.2.10).
    /// A hit sends `Age` only then (the Age rule in `pipeline::headers`): without it, a shared cache
    /// in front would subtract our Age from its own default lifetime and never store the object.
    /// One pass over the stored headers, no allocation.
    pub fn has_explicit_freshness(&self) -> bool {
        self.headers.iter().any(|(name, value)| {
            *name == header::CACHE_CONTROL && {
                let mut d = Directives::default();
                d.parse(value.as_bytes());
                d.max_age.is_some() || d.s_maxage.is_some()
            }
        })
    }

    /// Whether the entry may be served without revalidation at `now` (RFC 9111 section 4.2).
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }

    /// The entry after a 304 revalidation at `now`, fresh for `ttl`; same headers, body shared
    /// (a `Bytes` clone, no copy). Prefer [`CachedObject::revalidated`], which also applies the
    /// 304's headers as RFC 9111 section 4.3.4 requires.
    pub fn refreshed(&self, now: SystemTime, ttl: Duration) -> CachedObject {
        CachedObject {
            body: self.body.clone(),
            headers: self.headers.clone(),
            etag: self.etag.clone(),
            last_modified: self.last_modified,
            stored_at: now,
            expires_at: expiry(now, ttl),
            disk: self.disk.clone(),
        }
    }

    /// The entry after S3 answered a conditional GET with 304 (RFC 9111 section 4.3.4): every
    /// stored header the 304 carries is replaced by the 304's values (in place, so the order is
    /// kept), headers the entry lacked are appended, the rest is kept (Ceph RGW sends 304s
    /// without ETag or Cache-Control). Freshness is recomputed from the merged headers with
    /// [`storable_ttl`] and `default_ttl` (the bucket's ttl). Returns `None` when the merged
    /// headers forbid storing (e.g. the object gained `Cache-Control: no-store`): drop the entry,
    /// but the stored body may still answer this one request. Body shared, not copied.
    pub fn revalidated(
        &self,
        not_modified: &HeaderMap,
        now: SystemTime,
        default_ttl: Duration,
    ) -> Option<CachedObject> {
        let stored = |name: &HeaderName| {
            STORED_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("x-amz-meta-")
        };
        let mut merged: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(self.headers.len() + 2);
        for (name, value) in &self.headers {
            if !not_modified.contains_key(name) {
                merged.push((name.clone(), value.clone()));
            } else if !merged.iter().any(|(n, _)| n == name) {
                for v in not_modified.get_all(name) {
                    merged.push((name.clone(), v.clone()));
                }
            }
        }
        for name in not_modified.keys() {
            if stored(name) && !self.headers.iter().any(|(n, _)| n == name) {
                for v in not_modified.get_all(name) {
                    merged.push((name.clone(), v.clone()));
                }
            }
        }
        let mut map = HeaderMap::with_capacity(merged.len() + 1);
        for (name, value) in &merged {
            map.append(name.clone(), value.clone());
        }
        for v in not_modified.get_all(header::DATE) {
            map.append(header::DATE, v.clone());
        }
        let ttl = storable_ttl_at(200, true, &map, default_ttl, now)?;
        Some(CachedObject {
            body: self.body.clone(),
            etag: map.get(header::ETAG).cloned(),
            last_modified: map.get(header::LAST_MODIFIED).and_then(http_date),
            headers: merged,
            stored_at: now,
            expires_at: expiry(now, ttl),
            disk: self.disk.clone(),
        })
    }
}

/// `now + ttl`, saturating at ~100 years instead of overflowing `SystemTime`.
fn expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(ttl.min(FAR)).unwrap_or(now)
}

/// Parse an HTTP-date header value (RFC 9110 section 5.6.7: IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms). `None` if it is not one.
pub(crate) fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    let s = v.to_str().ok()?;
    httpdate::parse_http_date(s.trim()).ok()
}

/// Freshness lifetime for storing a response (RFC 9111 sections 3 and 4.2.1), or `None` when it
/// must not be stored.
///
/// Stored: only `status == 200` to a GET (`is_get`). Not stored: `Cache-Control: no-store`,
/// `private` (any form; we are a shared cache, section 5.2.2.7), `Vary: *`. Decided here:
/// `no-cache` (any form) is storable with a ttl of 0, so every use revalidates with S3 (a 304
/// then costs no body transfer; section 5.2.2.4 allows this).
///
/// The ttl is `default_ttl` (pass the bucket's `cache.ttl_seconds` override if set, else
/// `cache.memory.default_ttl_seconds`), capped by the origin's freshness lifetime when it gives
/// one: `s-maxage` (shared caches prefer it, 5.2.2.10), else `max-age`, else `Expires - Date`
/// (`Date` absent: `Expires - now`). A directive appearing twice uses its first value; an
/// invalid value (non-digits, empty) or an invalid `Expires` (e.g. `0`) means already stale
/// (ttl 0, sections 4.2.1 and 5.3); too large a value counts as 2^31 s (1.2.2). The response's
/// `Age`, if any, is subtracted. `Authorization` on the client's request does not prevent
/// storing (section 3.5): the client's token is for this proxy, which authorizes every hit
/// itself, and S3 is always called with the proxy's own credentials.
///
/// Other request headers cannot vary the response (the proxy forwards none but conditionals and
/// Range), so `Vary` other than `*` is ignored.
pub fn storable_ttl(
    status: u16,
    is_get: bool,
    headers: &HeaderMap,
    default_ttl: Duration,
) -> Option<Duration> {
    storable_ttl_with(status, is_get, headers, default_ttl, SystemTime::now)
}

/// [`storable_ttl`] with an explicit `now` (used when `Expires` comes without `Date`).
pub(crate) fn storable_ttl_at(
    status: u16,
    is_get: bool,
    headers: &HeaderMap,
    default_ttl: Duration,
    now: SystemTime,
) -> Option<Duration> {
    storable_ttl_with(status, is_get, headers, default_ttl, || now)
}

fn storable_ttl_with(
    status: u16,
    is_get: bool,
    headers: &HeaderMap,
    default_ttl: Duration,
    now: impl FnOnce() -> SystemTime,
) -> Option<Duration> {
    if status != 200 || !is_get {
        return None;
    }
    if headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == b"*")
    }) {
        return None;
    }
    let mut d = Directives::default();
    for line in headers.get_all(header::CACHE_CONTROL) {
        d.parse(line.as_bytes());
    }
    if d.no_store || d.private {
        return None;
    }
    if d.no_cache {
        return Some(Duration::ZERO);
    }
    let lifetime = match (d.s_maxage, d.max_age) {
        (Some(v), _) | (None, Some(v)) => Some(Duration::from_secs(v.unwrap_or(0))),
        (None, None) => headers.get(header::EXPIRES).map(|v| match http_date(v) {
            Some(expires) => {
                let base = headers
                    .get(header::DATE)
                    .and_then(http_date)
                    .unwrap_or_else(now);
                expires.duration_since(base).unwrap_or(Duration::ZERO)
            }
            None => Duration::ZERO,
        }),
    };
    let ttl = lifetime.map_or(default_ttl, |l| l.min(default_ttl));
    let age = headers
        .get(header::AGE)
        .and_then(|v| delta_seconds(v.as_bytes()))
        .map_or(Duration::ZERO, Duration::from_secs);
    Some(ttl.saturating_sub(age))
}

/// The `Cache-Control` response directives freshness depends on (RFC 9111 section 5.2.2).
/// `max_age`/`s_maxage`: `None` absent, `Some(None)` present but invalid, `Some(Some(s))`.
#[derive(Default, Debug)]
struct Directives {
    no_store: bool,
    private: bool,
    no_cache: bool,
    max_age: Option<Option<u64>>,
    s_maxage: Option<Option<u64>>,
}

impl Directives {
    /// Fold one `Cache-Control` field line in: `#cache-directive`, each `token [ "=" ( token /
    /// quoted-string ) ]`, names case-insensitive (RFC 9111 section 5.2). Commas inside quoted
    /// strings do not split. Unknown directives are ignored.
    fn parse(&mut self, line: &[u8]) {
        let mut rest = line;
        loop {
            rest = skip(rest, |b| b == b',' || b == b' ' || b == b'\t');
            if rest.is_empty() {
                return;
            }
            let name_end = rest
                .iter()
                .position(|&b| matches!(b, b'=' | b',' | b' ' | b'\t'))
                .unwrap_or(rest.len());
            let name = &rest[..name_end];
            rest = skip(&rest[name_end..], |b| b == b' ' || b == b'\t');
            let mut value = None;
            if let Some(after_eq) = rest.strip_prefix(b"=") {
                let v = skip(after_eq, |b| b == b' ' || b == b'\t');
                if let Some(quoted) = v.strip_prefix(b"\"") {
                    let (inner, after) = quoted_string(quoted);
                    value = Some(inner);
                    rest = after;
                } else {
                    let end = v
                        .iter()
                        .position(|&b| matches!(b, b',' | b' ' | b'\t'))
                        .unwrap_or(v.len());
                    value = Some(&v[..end]);
                    rest = &v[end..];
                }
            }
            // Anything else up to the next comma is malformed; skip it.
            let next = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            rest = &rest[next..];
            self.apply(name, value);
        }
    }

    fn apply(&mut self, name: &[u8], value: Option<&[u8]>) {
        let seconds = || value.and_then(delta_seconds);
        if name.eq_ignore_ascii_case(b"no-store") {
            self.no_store = true;
        } else if name.eq_ignore_ascii_case(b"private") {
            self.private = true;
        } else if name.eq_ignore_ascii_case(b"no-cache") {
            self.no_cache = true;
        } else if name.eq_ignore_ascii_case(b"max-age") {
            self.max_age.get_or_insert_with(seconds);
        } else if name.eq_ignore_ascii_case(b"s-maxage") {
            self.s_maxage.get_or_insert_with(seconds);
        }
    }
}

fn skip(s: &[u8], f: impl Fn(u8) -> bool) -> &[u8] {
    let n = s.iter().position(|&b| !f(b)).unwrap_or(s.len());
    &s[n..]
}

/// Split a quoted-string body (after the opening quote) into (content, rest after the closing
/// quote). `\x` escapes are skipped over, not unescaped. Unterminated: everything is content.
fn quoted_string(s: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return (&s[..i], &s[i + 1..]),
            _ => i += 1,
        }
    }
    (s, &[])
}

/// `delta-seconds = 1*DIGIT` (RFC 9111 section 1.2.2), surrounding whitespace allowed; values
/// beyond 2^31 are 2^31. `None` if not all digits or empty.
fn delta_seconds(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v.iter().fold(0u64, |acc, &b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    Some(n.min(MAX_DELTA_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// The borrowed key hashes like the owned one and is equivalent to exactly it: the hit
    /// path looks entries up by `CacheKeyRef`, so any difference would turn hits into misses
    /// (or, worse, serve another key's entry).
    #[test]
    fn borrowed_keys_hash_and_compare_like_owned_keys() {
        use quick_cache::Equivalent;
        use std::hash::BuildHasher;
        let parts: [(&str, &[u8], Option<&str>); 5] = [
            ("media", b"a/b.txt", None),
            ("media", b"a/b.txt", Some("")),
            ("media", b"a/b.txt", Some("v1")),
            ("medi", b"aa/b.txt", None),
            ("media", b"a/b.tx", Some("tv1")),
        ];
        let hasher = quick_cache::DefaultHashBuilder::default();
        for (i, (b, k, v)) in parts.iter().enumerate() {
            let owned = CacheKey::new(b, k, *v);
            let borrowed = CacheKeyRef::new(b, k, *v);
            assert_eq!(
                hasher.hash_one(&owned),
                hasher.hash_one(borrowed),
                "{owned:?}"
            );
            for (j, (b2, k2, v2)) in parts.iter().enumerate() {
                let other = CacheKey::new(b2, k2, *v2);
                assert_eq!(
                    borrowed.equivalent(&other),
                    i == j,
                    "{borrowed:?} vs {other:?}"
                );
                assert_eq!(owned == other, i == j);
            }
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ttl(pairs: &[(&'static str, &'static str)]) -> Option<Duration> {
        storable_ttl(200, true, &map(pairs), HOUR)
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn explicit_freshness_is_max_age_or_s_maxage_only() {
        let explicit = |pairs: &[(&'static str, &'static str)]| {
            CachedObject::from_response(Bytes::new(), &map(pairs), SystemTime::now(), HOUR)
                .has_explicit_freshness()
        };
        assert!(explicit(&[("cache-control", "max-age=60")]));
        assert!(explicit(&[("cache-control", "public, S-MAXAGE=5")]));
        assert!(explicit(&[
            ("cache-control", "no-cache"),
            ("cache-control", "max-age=x")
        ]));
        assert!(!explicit(&[]));
        assert!(!explicit(&[(
            "cache-control",
            "no-cache, private=\"max-age=1\""
        )]));
        assert!(!explicit(&[("expires", "Wed, 21 Oct 2099 07:28:00 GMT")]));
        assert!(!explicit(&[("content-type", "text/plain")]));
    }

    #[test]
    fn key_parts_round_trip_and_never_mix() {
        let k = CacheKey::new("public", b"dir/a b+c", Some("v1"));
        assert_eq!(k.bucket(), "public");
        assert_eq!(k.key(), b"dir/a b+c");
        assert_eq!(k.version_id(), Some("v1"));
        let none = CacheKey::new("public", b"dir/a b+c", None);
        assert_eq!(none.version_id(), None);
        assert_ne!(k, none);
        assert_ne!(
            CacheKey::new("public", b"x", Some("")),
            CacheKey::new("public", b"x", None)
        );
        // Same concatenated bytes, different split: different keys.
        assert_ne!(
            CacheKey::new("ab", b"c", None),
            CacheKey::new("a", b"bc", None)
        );
        assert_ne!(
            CacheKey::new("a", b"b", Some("c")),
            CacheKey::new("a", b"bc", None)
        );
        assert_eq!(k.clone(), k);
        assert!(k.weight() > 15);
        let dbg = format!("{k:?}");
        assert!(dbg.contains("public") && dbg.contains("v1"), "{dbg}");
    }

    #[test]
    fn only_200_get_is_stored() {
        assert_eq!(ttl(&[]), Some(HOUR));
        for status in [206, 304, 404, 500] {
            assert_eq!(storable_ttl(status, true, &HeaderMap::new(), HOUR), None);
        }
        assert_eq!(storable_ttl(200, false, &HeaderMap::new(), HOUR), None);
    }

    #[test]
    fn no_store_and_private_forbid_storing() {
        assert_eq!(ttl(&[("cache-control", "no-store")]), None);
        assert_eq!(ttl(&[("cache-control", "max-age=60, No-Store")]), None);
        assert_eq!(ttl(&[("cache-control", "private")]), None);
        assert_eq!(ttl(&[("cache-control", "PRIVATE=\"set-cookie, x\"")]), None);
        assert_eq!(
            ttl(&[
                ("cache-control", "max-age=60"),
                ("cache-control", "no-store")
            ]),
            None
        );
        assert_eq!(ttl(&[("vary", "accept-encoding, *")]), None);
        // Not the directive itself: a quoted value mentioning it.
        assert_eq!(
            ttl(&[("cache-control", "ext=\"no-store, private\", max-age=5")]),
            secs(5)
        );
        assert_eq!(ttl(&[("cache-control", "no-storex")]), Some(HOUR));
    }

    #[test]
    fn no_cache_is_stored_but_always_stale() {
        assert_eq!(ttl(&[("cache-control", "no-cache")]), secs(0));
        assert_eq!(ttl(&[("cache-control", "max-age=600, no-cache")]), secs(0));
        assert_eq!(
            ttl(&[("cache-control", "no-cache=\"set-cookie\"")]),
            secs(0)
        );
    }

    #[test]
    fn max_age_caps_default_ttl() {
        assert_eq!(ttl(&[("cache-control", "max-age=60")]), secs(60));
        assert_eq!(ttl(&[("cache-control", "public, max-age=60")]), secs(60));
        assert_eq!(ttl(&[("cache-control", "Max-Age = 60")]), secs(60));
        assert_eq!(ttl(&[("cache-control", "max-age=\"60\"")]), secs(60));
        // Longer than the default: the default (the operator's ttl) wins.
        assert_eq!(ttl(&[("cache-control", "max-age=86400")]), Some(HOUR));
        assert_eq!(ttl(&[("cache-control", "max-age=0")]), secs(0));
        // Invalid values: stale. Duplicates: the first wins.
        assert_eq!(ttl(&[("cache-control", "max-age=abc")]), secs(0));
        assert_eq!(ttl(&[("cache-control", "max-age=")]), secs(0));
        assert_eq!(ttl(&[("cache-control", "max-age=-1")]), secs(0));
        assert_eq!(
            ttl(&[("cache-control", "max-age=10, max-age=20")]),
            secs(10)
        );
        // Overflow is 2^31 s, then capped by the default.
        assert_eq!(
            ttl(&[("cache-control", "max-age=99999999999999999999999")]),
            Some(HOUR)
        );
    }

    #[test]
    fn s_maxage_takes_precedence() {
        assert_eq!(
            ttl(&[("cache-control", "max-age=10, s-maxage=100")]),
            secs(100)
        );
        assert_eq!(
            ttl(&[
                ("cache-control", "s-maxage=100"),
                ("cache-control", "max-age=10")
            ]),
            secs(100)
        );
        assert_eq!(
            ttl(&[("cache-control", "s-maxage=5, max-age=100")]),
            secs(5)
        );
        assert_eq!(ttl(&[("cache-control", "S-MAXAGE=7200")]), Some(HOUR));
    }

    #[test]
    fn bucket_override_is_the_default_ttl() {
        let h = map(&[("cache-control", "max-age=600")]);
        assert_eq!(
            storable_ttl(200, true, &h, Duration::from_secs(30)),
            secs(30)
        );
        assert_eq!(storable_ttl(200, true, &h, Duration::from_secs(0)), secs(0));
        let none = HeaderMap::new();
        assert_eq!(
            storable_ttl(200, true, &none, Duration::from_secs(30)),
            secs(30)
        );
    }

    #[test]
    fn expires_caps_when_no_max_age() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            ttl(&[("date", date), ("expires", "Wed, 21 Oct 2015 07:29:00 GMT")]),
            secs(60)
        );
        assert_eq!(
            ttl(&[("date", date), ("expires", "Wed, 21 Oct 2015 07:27:00 GMT")]),
            secs(0)
        );
        assert_eq!(ttl(&[("date", date), ("expires", "0")]), secs(0));
        // max-age wins over Expires.
        assert_eq!(
            ttl(&[
                ("date", date),
                ("expires", "Wed, 21 Oct 2015 07:29:00 GMT"),
                ("cache-control", "max-age=5")
            ]),
            secs(5)
        );
        // Without Date: relative to now.
        let now = httpdate::parse_http_date(date).unwrap();
        let h = map(&[("expires", "Wed, 21 Oct 2015 07:30:00 GMT")]);
        assert_eq!(storable_ttl_at(200, true, &h, HOUR, now), secs(120));
    }

    #[test]
    fn age_is_subtracted() {
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("age", "15")]),
            secs(45)
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("age", "90")]),
            secs(0)
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("age", "x")]),
            secs(60)
        );
    }

    fn response() -> HeaderMap {
        map(&[
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("etag", "\"abc\""),
            ("last-modified", "Tue, 20 Oct 2015 07:28:00 GMT"),
            ("x-amz-meta-owner", "yata"),
            ("x-amz-request-id", "tx1"),
            ("cache-control", "max-age=60"),
            ("content-range", "bytes 0-4/5"),
        ])
    }

    #[test]
    fn entry_keeps_only_pass_through_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = CachedObject::from_response(Bytes::from_static(b"hello"), &response(), now, HOUR);
        let names: Vec<&str> = o.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "etag",
                "last-modified",
                "cache-control",
                "x-amz-meta-owner"
            ]
        );
        assert_eq!(o.etag.as_ref().map(|v| v.as_bytes()), Some(&b"\"abc\""[..]));
        assert_eq!(
            o.last_modified,
            httpdate::parse_http_date("Tue, 20 Oct 2015 07:28:00 GMT").ok()
        );
        assert_eq!(o.expires_at, now + HOUR);
        assert!(o.is_fresh(now));
        assert!(o.is_fresh(now + HOUR - Duration::from_secs(1)));
        assert!(!o.is_fresh(now + HOUR));
        assert_eq!(o.age(now + Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(o.age(now - Duration::from_secs(7)), Duration::ZERO);
        // `new` over the same selected headers builds the same entry.
        let n = CachedObject::new(o.body.clone(), o.headers.clone(), now, HOUR);
        assert_eq!((&n.etag, n.last_modified), (&o.etag, o.last_modified));
        assert_eq!((n.stored_at, n.expires_at), (o.stored_at, o.expires_at));
    }

    #[test]
    fn weight_counts_body_headers_and_overhead() {
        let now = SystemTime::UNIX_EPOCH;
        let small = CachedObject::from_response(Bytes::new(), &HeaderMap::new(), now, HOUR);
        assert_eq!(small.weight(), ENTRY_OVERHEAD_BYTES);
        let body = Bytes::from(vec![0u8; 1000]);
        let o = CachedObject::from_response(body, &response(), now, HOUR);
        let header_bytes: u64 = o
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
            .sum();
        assert_eq!(
            o.weight(),
            1000 + header_bytes + 5 * HEADER_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES
        );
    }

    #[test]
    fn refreshed_shares_the_body() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = CachedObject::from_response(Bytes::from(vec![7u8; 64]), &response(), now, HOUR);
        let later = now + 2 * HOUR;
        assert!(!o.is_fresh(later));
        let r = o.refreshed(later, HOUR);
        assert!(r.is_fresh(later));
        assert_eq!(r.age(later), Duration::ZERO);
        assert_eq!(r.body.as_ptr(), o.body.as_ptr(), "body must not be copied");
        assert_eq!(r.headers, o.headers);
        // Overflowing ttls saturate instead of panicking.
        let far = o.refreshed(later, Duration::MAX);
        assert!(far.expires_at > later + HOUR);
    }

    #[test]
    fn revalidated_merges_304_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = CachedObject::from_response(Bytes::from_static(b"hello"), &response(), now, HOUR);
        let later = now + 2 * HOUR;
        // RGW-style 304: no validators, no Cache-Control. Everything kept.
        let r = o
            .revalidated(&map(&[("x-amz-request-id", "tx2")]), later, HOUR)
            .unwrap();
        assert_eq!(r.headers, o.headers);
        assert_eq!(r.expires_at, later + Duration::from_secs(60));
        assert_eq!(r.body.as_ptr(), o.body.as_ptr());
        // A 304 with a new Cache-Control: replaced in place; new Expires appended.
        let r = o
            .revalidated(
                &map(&[
                    ("cache-control", "max-age=10"),
                    ("expires", "Thu, 22 Oct 2015 07:28:00 GMT"),
                ]),
                later,
                HOUR,
            )
            .unwrap();
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "etag",
                "last-modified",
                "cache-control",
                "x-amz-meta-owner",
                "expires"
            ]
        );
        assert_eq!(r.headers[3].1, "max-age=10");
        assert_eq!(r.expires_at, later + Duration::from_secs(10));
        assert_eq!(r.etag, o.etag);
        // The object became no-store: do not keep it.
        assert!(o
            .revalidated(&map(&[("cache-control", "no-store")]), later, HOUR)
            .is_none());
    }
}
