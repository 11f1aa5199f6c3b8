//! The JWKS (RFC 7517) of one `jwks_url`: [`JwksStore`] holds the current signature keys,
//! shared by every shard, and [`fetch_jwks`] downloads a key set with our own upstream client.
//!
//! Process layout: one fetcher for the whole process ([`super::fetcher`], on the admin control
//! thread, off the shards) fetches at startup, every
//! `jwks_refresh_seconds`, and early when a shard saw a token whose `kid` is unknown
//! ([`JwksStore::note_unknown_kid`], rate-limited to one refresh per
//! [`UNKNOWN_KID_REFRESH_SECONDS`]); a failed fetch keeps the old keys. Shards only read.
//!
//! Hot path: shards call [`JwksStore::generation`] (one atomic load) per authenticated request
//! and load the key list (`arc_swap` load, no lock) on a token-cache miss. Replacing the set
//! converts each JWK once (base64 of the key parameters and a point/DER check, ~10 us per key)
//! off the shards.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;

use super::keys::{key_from_jwk, Key};
use crate::upstream::{Target, Upstream};

/// Shortest time between two early refreshes caused by unknown `kid`s, seconds.
pub const UNKNOWN_KID_REFRESH_SECONDS: u64 = 30;
/// Most keys kept from one JWKS (IdPs publish 2-4); the rest are ignored.
pub const MAX_JWKS_KEYS: usize = 64;
/// Largest JWKS document accepted, bytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The usable keys of one JWKS and the set they came from (to detect "no change").
struct Loaded {
    set: JwkSet,
    keys: Vec<Key>,
}

/// The signature keys published at one JWKS URL, shared by all shards (`Send + Sync`; the key
/// list sits behind an `ArcSwap`, the counters are atomics). Generation 0 is the empty store
/// before the first successful fetch.
pub struct JwksStore {
    loaded: ArcSwap<Loaded>,
    generation: AtomicU64,
    unknown_kid: AtomicBool,
    /// Unix seconds of the last refresh attempt (0 = never).
    last_refresh: AtomicU64,
}

impl std::fmt::Debug for JwksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksStore")
            .field("generation", &self.generation())
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl JwksStore {
    /// An empty store (generation 0, no keys: every `kid` is unknown until the first
    /// [`JwksStore::replace`]).
    pub fn new() -> Arc<Self> {
        Arc::new(JwksStore {
            loaded: ArcSwap::from_pointee(Loaded {
                set: JwkSet { keys: Vec::new() },
                keys: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            unknown_kid: AtomicBool::new(false),
            last_refresh: AtomicU64::new(0),
        })
    }

    /// Parses a JWKS document (RFC 7517 section 5: `{"keys": [...]}`). Errors: not JSON of
    /// that shape, or no usable signature key in it (see [`JwksStore::replace`]), so a broken
    /// or emptied endpoint never replaces working keys. Messages never quote the body.
    pub fn parse(body: &[u8]) -> Result<JwkSet, String> {
        let set: JwkSet = serde_json::from_slice(body).map_err(|e| {
            format!(
                "JWKS is not a JSON key set (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if !set.keys.iter().any(|k| key_from_jwk(k).is_ok()) {
            return Err(
                "JWKS holds no usable signature key (RSA >= 2048 bits, EC P-256/P-384, Ed25519)"
                    .to_owned(),
            );
        }
        Ok(set)
    }

    /// Publishes `set` to every shard and returns the generation now current. Keys that
    /// cannot verify signatures with our algorithms are skipped: symmetric (`oct`), `use:
    /// enc`, other curves, RSA under 2048 bits, an `alg` not fitting the key; at most
    /// [`MAX_JWKS_KEYS`] are kept. A set equal to the current one leaves the generation
    /// unchanged, so the periodic refresh does not flush the token caches.
    pub fn replace(&self, set: JwkSet) -> u64 {
        if self.loaded.load().set == set {
            return self.generation();
        }
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter_map(|jwk| key_from_jwk(jwk).ok())
            .take(MAX_JWKS_KEYS)
            .collect();
        self.loaded.store(Arc::new(Loaded { set, keys }));
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current generation: bumped by every [`JwksStore::replace`] that changed the keys.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.loaded.load().keys.len()
    }

    /// Whether there is no usable key (before the first fetch, typically).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `kid`s of the usable keys (for `/admin` and tests).
    pub fn kids(&self) -> Vec<String> {
        self.loaded
            .load()
            .keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect()
    }

    /// The usable keys, for verification.
    pub(crate) fn keys(&self) -> KeysGuard {
        KeysGuard(self.loaded.load())
    }

    /// A shard saw a token whose `kid` no key has: ask for an early refresh.
    pub fn note_unknown_kid(&self) {
        self.unknown_kid.store(true, Ordering::Release);
    }

    /// Whether the fetcher should refresh now because of an unknown `kid`: one was seen since
    /// the last refresh and that refresh is at least [`UNKNOWN_KID_REFRESH_SECONDS`] old.
    /// Reads the system clock; see [`JwksStore::wants_refresh_at`].
    pub fn wants_refresh(&self) -> bool {
        self.wants_refresh_at(unix_now())
    }

    /// [`JwksStore::wants_refresh`] at unix time `now` (seconds).
    pub fn wants_refresh_at(&self, now: u64) -> bool {
        self.unknown_kid.load(Ordering::Acquire)
            && now.saturating_sub(self.last_refresh.load(Ordering::Acquire))
                >= UNKNOWN_KID_REFRESH_SECONDS
    }

    /// Records a refresh attempt at unix time `now` (seconds), successful or not, and clears
    /// the unknown-`kid` request. Call it after every fetch so failures are rate-limited too.
    pub fn mark_refreshed(&self, now: u64) {
        self.last_refresh.store(now, Ordering::Release);
        self.unknown_kid.store(false, Ordering::Release);
    }
}

/// A loaded key list, kept alive while a verification uses it.
pub(crate) struct KeysGuard(arc_swap::Guard<Arc<Loaded>>);

impl KeysGuard {
    pub(crate) fn as_slice(&self) -> &[Key] {
        &self.0.keys
    }
}

/// Downloads and parses the JWKS at `url` (`http://` or `https://`, as validated by the
/// config) with the shard's upstream client: one `GET` with `Connection: close` (a fetch an
/// hour leaves nothing worth pooling), `timeout` as the connect budget, the first-byte budget
/// and the bound on the whole exchange. `tls` is required for `https` URLs: build it once off
/// the shards (`upstream::tls::client_config(None)` reads the system trust store, blocking).
/// Must run inside a monoio runtime with timers enabled.
///
/// Errors (short, without the body): bad URL, connect/TLS/timeout failures, a status other
/// than 200, a body over [`MAX_JWKS_BYTES`], or [`JwksStore::parse`] errors. The caller keeps
/// the old keys on error.
pub async fn fetch_jwks(
    upstream: &Upstream,
    url: &str,
    tls: Option<&monoio_rustls::TlsConnector>,
    timeout: Duration,
) -> Result<JwkSet, String> {
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|_| "jwks_url is not a valid URL".to_owned())?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err("jwks_url scheme must be http or https".to_owned()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "jwks_url has no host".to_owned())?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = match (https, tls) {
        (true, Some(c)) => Some(c),
        (true, None) => return Err("jwks_url is https but no TLS connector was given".to_owned()),
        (false, _) => None,
    };
    let scheme = if https { "https" } else { "http" };
    let pool_key: Rc<str> = Rc::from(format!("jwks+{scheme}://{host}:{port}"));
    let target = Target {
        pool_key: &pool_key,
        host,
        port,
        tls,
        connect_timeout: timeout,
        first_byte_timeout: timeout,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/jwk-set+json, application/json\r\nUser-Agent: yatagarasu/{}\r\nConnection: close\r\n\r\n",
        authority.as_str(),
        env!("CARGO_PKG_VERSION"),
    )
    .into_bytes();
    let exchange = async {
        let mut resp = upstream
            .send(&target, &mut req, false)
            .await
            .map_err(|e| format!("JWKS fetch failed: {}", e.message))?;
        if resp.status != 200 {
            return Err(format!("JWKS endpoint answered HTTP {}", resp.status));
        }
        if resp
            .body
            .declared_len()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        resp.body
            .read_to_end_limited(&mut body, MAX_JWKS_BYTES + 1)
            .await
            .map_err(|e| format!("JWKS body read failed: {}", e.kind()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        JwksStore::parse(&body)
    };
    monoio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "JWKS fetch timed out".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::fixture;

    #[test]
    fn parses_the_fixture_and_finds_kids() {
        let set = JwksStore::parse(&fixture("jwks.json")).unwrap();
        assert!(set.find("rsa-1").is_some());
        assert!(set.find("ec256-1").is_some());
        assert!(set.find("ed25519-1").is_some());
        assert!(set.find("rsa-2").is_none());
        let store = JwksStore::new();
        assert_eq!(store.generation(), 0);
        assert!(store.is_empty());
        assert_eq!(store.replace(set.clone()), 1);
        assert_eq!(store.kids(), ["rsa-1", "ec256-1", "ed25519-1"]);
        // The same set again is not a change.
        assert_eq!(store.replace(set), 1);
        let rotated = JwksStore::parse(&fixture("jwks-rotated.json")).unwrap();
        assert_eq!(store.replace(rotated), 2);
        assert_eq!(store.kids(), ["rsa-2"]);
    }

    #[test]
    fn skips_unusable_keys_and_rejects_sets_without_any() {
        let mixed = br#"{"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "RSA", "use": "enc", "kid": "enc", "e": "AQAB", "n": "AQAB"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "whatever", "kid": "odd"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
             "x": "IBXQETB9Tqx3HlXy6BIvi3Sh6s2V2cGOPHZhfFiPXFg"}
        ]}"#;
        let set = JwksStore::parse(mixed).unwrap();
        assert_eq!(set.keys.len(), 5);
        let store = JwksStore::new();
        store.replace(set);
        assert_eq!(store.kids(), ["ed"]);

        let useless = br#"{"keys": [{"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}]}"#;
        assert!(JwksStore::parse(useless).unwrap_err().contains("no usable"));
        assert!(JwksStore::parse(br#"{"keys": []}"#).is_err());
        assert!(JwksStore::parse(b"<html>").unwrap_err().contains("line 1"));
        // An RSA key whose alg says ES256 does not fit.
        let misfit =
            br#"{"keys": [{"kty": "RSA", "alg": "ES256", "kid": "x", "e": "AQAB", "n": "AQAB"}]}"#;
        assert!(JwksStore::parse(misfit).is_err());
    }

    #[test]
    fn unknown_kid_refresh_is_rate_limited() {
        let store = JwksStore::new();
        assert!(!store.wants_refresh_at(1_000));
        store.note_unknown_kid();
        // Never refreshed: refresh at once.
        assert!(store.wants_refresh_at(1_000));
        store.mark_refreshed(1_000);
        assert!(!store.wants_refresh_at(1_000));
        store.note_unknown_kid();
        assert!(!store.wants_refresh_at(1_029));
        assert!(store.wants_refresh_at(1_030));
    }

    /// A one-shot HTTP server on 127.0.0.1 answering `response` to the first request.
    fn serve_once(response: Vec<u8>) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(&response).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (port, handle)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn fetches_over_http() {
        let body = fixture("jwks.json");
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        resp.extend_from_slice(&body);
        let (port, server) = serve_once(resp);
        let url = format!("http://127.0.0.1:{port}/.well-known/jwks.json?v=1");
        let set = run(async {
            let upstream = Upstream::default();
            fetch_jwks(&upstream, &url, None, Duration::from_secs(5)).await
        })
        .unwrap();
        assert!(set.find("rsa-1").is_some());
        let req = server.join().unwrap();
        assert!(
            req.starts_with("GET /.well-known/jwks.json?v=1 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
    }

    #[test]
    fn fetch_errors() {
        let (port, server) = serve_once(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec());
        let url = format!("http://127.0.0.1:{port}/jwks");
        let err = run(async {
            fetch_jwks(&Upstream::default(), &url, None, Duration::from_secs(5)).await
        })
        .unwrap_err();
        assert_eq!(err, "JWKS endpoint answered HTTP 503");
        server.join().unwrap();

        let err = run(async {
            let up = Upstream::default();
            fetch_jwks(
                &up,
                "https://127.0.0.1:1/jwks",
                None,
                Duration::from_secs(1),
            )
            .await
        })
        .unwrap_err();
        assert!(err.contains("no TLS connector"), "{err}");

        // Nothing listens on the port: connection refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/jwks");
        let err = run(async {
            fetch_jwks(&Upstream::default(), &url, None, Duration::from_secs(2)).await
        })
        .unwrap_err();
        assert!(err.starts_with("JWKS fetch failed"), "{err}");
    }
}
