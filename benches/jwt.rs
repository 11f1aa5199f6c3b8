//! JWT authentication costs (issue 3): verification of HS256, RS256, ES256 and EdDSA tokens
//! cold (a token-cache miss: SHA-256 of the token, signature check, claims, cache insert) and
//! through the shard's token cache (a hit: SHA-256 and one probe), plus token extraction from
//! the bearer header, a query parameter and a named header.
//!
//! Before Criterion runs, each operation's allocations are counted (`benches/support/alloc.rs`)
//! and printed as `alloc/op <bench>: <n>`; a count above its bound fails the run, also under
//! `cargo bench -- --test`.
//!
//! Not shipped code. Keys are the committed test fixtures in `tests/fixtures/jwt`. Run with
//! `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 2`.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, BatchSize, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use yatagarasu::auth::{authenticate, extract_token, TokenCache, Verifier};
use yatagarasu::config::{ClaimOperator, ClaimRule, JwtAlgorithm, JwtConfig, Secret, TokenSource};

#[path = "support/alloc.rs"]
mod alloc;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "a-bench-secret-that-is-32-bytes!";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt")).join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture key (run tests/fixtures/jwt/gen.sh)")
}

/// A verifier for `alg` with the fixture key and one claims rule, and a typical IdP-sized token
/// (~600-900 bytes) signed for it.
fn setup(alg: JwtAlgorithm) -> (Verifier, String) {
    let (jalg, key, secret, pem) = match alg {
        JwtAlgorithm::HS256 => (
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET.as_bytes()),
            Some(Secret::new(SECRET)),
            None,
        ),
        JwtAlgorithm::RS256 => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rsa_private.pem")).expect("rsa key"),
            None,
            Some(fixture("rsa_public.pem")),
        ),
        JwtAlgorithm::ES256 => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec256_private.pem")).expect("ec key"),
            None,
            Some(fixture("ec256_public.pem")),
        ),
        _ => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed25519_private.pem")).expect("ed key"),
            None,
            Some(fixture("ed25519_public.pem")),
        ),
    };
    let cfg = JwtConfig {
        algorithms: vec![alg],
        secret,
        public_key_path: pem,
        jwks_url: None,
        jwks_refresh_seconds: 3600,
        keys: Vec::new(),
        issuer: Some("https://idp.example.com/".into()),
        audience: Some("yatagarasu".into()),
        leeway_seconds: 30,
        token_sources: vec![TokenSource::Bearer],
        claims: vec![ClaimRule {
            claim: "realm_access.roles".into(),
            operator: ClaimOperator::Contains,
            value: Some(json!("reader")),
        }],
    };
    let verifier = Verifier::from_config(&cfg).expect("bench config");
    let claims = json!({
        "iss": "https://idp.example.com/",
        "aud": "yatagarasu",
        "sub": "f1b9c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "exp": NOW + 3600,
        "iat": NOW,
        "nbf": NOW,
        "scope": "openid profile email read:objects",
        "realm_access": {"roles": ["reader", "offline_access", "uma_authorization"]},
        "email": "alice@example.com",
        "name": "Alice Example"
    });
    let token = encode(&Header::new(jalg), &claims, &key).expect("sign");
    (verifier, token)
}

const ALGS: [(&str, JwtAlgorithm); 4] = [
    ("HS256", JwtAlgorithm::HS256),
    ("RS256", JwtAlgorithm::RS256),
    ("ES256", JwtAlgorithm::ES256),
    ("EdDSA", JwtAlgorithm::EdDSA),
];

fn verification(c: &mut Criterion) {
    let mut cold = c.benchmark_group("jwt_verify_cold");
    for (name, alg) in ALGS {
        let (verifier, token) = setup(alg);
        cold.bench_function(name, |b| {
            b.iter_batched(
                || TokenCache::new(16),
                |cache| {
                    let v = authenticate(&verifier, None, &cache, 1, black_box(&token), NOW);
                    assert!(v.is_ok());
                    cache
                },
                BatchSize::SmallInput,
            )
        });
    }
    cold.finish();

    let mut cached = c.benchmark_group("jwt_verify_cached");
    for (name, alg) in ALGS {
        let (verifier, token) = setup(alg);
        let cache = TokenCache::new(10_000);
        assert!(authenticate(&verifier, None, &cache, 1, &token, NOW).is_ok());
        cached.bench_function(name, |b| {
            b.iter(|| authenticate(&verifier, None, &cache, 1, black_box(&token), NOW))
        });
        assert!(cache.hits() > 0 && cache.misses() == 1);
    }
    cached.finish();
}

/// Token sources (query, bearer, header, in that order), a typical header set without a
/// token, the same with a bearer token, the same with an `X-Auth-Token` header, and a query
/// string carrying the token.
struct Extraction {
    sources: [TokenSource; 3],
    typical: http::HeaderMap,
    bearer: http::HeaderMap,
    header: http::HeaderMap,
    query: String,
}

fn extraction_inputs() -> Extraction {
    let (_, token) = setup(JwtAlgorithm::HS256);
    let sources = [
        TokenSource::Query {
            name: "token".into(),
        },
        TokenSource::Bearer,
        TokenSource::Header {
            name: "X-Auth-Token".into(),
        },
    ];
    let mut typical = http::HeaderMap::new();
    for (n, v) in [
        ("host", "cdn.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-request-id", "0b7e3b3c-1f5e-4a44-9d1e-4c1d2b6b8e21"),
    ] {
        typical.insert(
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        );
    }
    let mut bearer = typical.clone();
    bearer.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let mut header = typical.clone();
    header.insert(
        http::HeaderName::from_static("x-auth-token"),
        http::HeaderValue::from_str(&token).expect("header"),
    );
    let query = format!("versionId=3&token={token}");

    Extraction {
        sources,
        typical,
        bearer,
        header,
        query,
    }
}

fn extraction(c: &mut Criterion) {
    let Extraction {
        sources,
        typical,
        bearer,
        header,
        query,
    } = extraction_inputs();
    let mut g = c.benchmark_group("jwt_extract");
    g.bench_function("bearer", |b| {
        b.iter(|| extract_token(&sources, black_box(&bearer), Some("versionId=3")))
    });
    g.bench_function("query", |b| {
        b.iter(|| extract_token(&sources, black_box(&typical), Some(black_box(&query))))
    });
    g.bench_function("header", |b| {
        b.iter(|| extract_token(&sources, black_box(&header), None))
    });
    g.bench_function("absent", |b| {
        b.iter(|| extract_token(&sources, black_box(&typical), Some("versionId=3")))
    });
    g.finish();
}

/// Allocation counts per operation, with their bounds (today's counts; see the module docs).
fn allocation_bounds() {
    for (name, alg) in ALGS {
        let (verifier, token) = setup(alg);
        let cold_bound = match alg {
            JwtAlgorithm::HS256 => BOUND_COLD_HS256,
            JwtAlgorithm::RS256 => BOUND_COLD_RS256,
            JwtAlgorithm::ES256 => BOUND_COLD_ES256,
            _ => BOUND_COLD_EDDSA,
        };
        let cache = TokenCache::new(10_000);
        alloc::expect_at_most(
            &format!("jwt_verify_cached/{name}"),
            BOUND_CACHED,
            1000,
            || {
                let v = authenticate(&verifier, None, &cache, 1, black_box(&token), NOW);
                assert!(v.is_ok());
                v
            },
        );
        // A miss on an empty cache each time, as the Criterion bench measures; the caches are
        // built before counting, one per call.
        const COLD: u64 = 100;
        let mut caches = (0..=alloc::ROUNDS as u64 * COLD)
            .map(|_| TokenCache::new(16))
            .collect::<Vec<_>>()
            .into_iter();
        alloc::expect_at_most(&format!("jwt_verify_cold/{name}"), cold_bound, COLD, || {
            let cache = caches.next().expect("one cache per call");
            let v = authenticate(&verifier, None, &cache, 1, black_box(&token), NOW);
            assert!(v.is_ok());
            (v, cache)
        });
    }
    let x = extraction_inputs();
    let sources = &x.sources;
    for (name, headers, query, bound) in [
        (
            "bearer",
            &x.bearer,
            Some("versionId=3"),
            BOUND_EXTRACT_BEARER,
        ),
        (
            "query",
            &x.typical,
            Some(x.query.as_str()),
            BOUND_EXTRACT_QUERY,
        ),
        ("header", &x.header, None, BOUND_EXTRACT_HEADER),
        ("absent", &x.typical, Some("versionId=3"), 0.0),
    ] {
        alloc::expect_at_most(&format!("jwt_extract/{name}"), bound, 1000, || {
            extract_token(sources, black_box(headers), query)
        });
    }
}

// Bounds: the counts measured when they were written. A token-cache hit allocates nothing; a
// miss decodes the header and claims (serde_json values), checks the signature (RSA's big
// integers account for RS256's extra) and inserts. Bearer and header tokens are returned owned,
// a query token borrowed.
const BOUND_CACHED: f64 = 0.0;
const BOUND_COLD_HS256: f64 = 39.0;
const BOUND_COLD_RS256: f64 = 147.0;
const BOUND_COLD_ES256: f64 = 39.0;
const BOUND_COLD_EDDSA: f64 = 39.0;
const BOUND_EXTRACT_BEARER: f64 = 1.0;
const BOUND_EXTRACT_QUERY: f64 = 0.0;
const BOUND_EXTRACT_HEADER: f64 = 1.0;

criterion_group!(benches, verification, extraction);

fn main() {
    allocation_bounds();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
