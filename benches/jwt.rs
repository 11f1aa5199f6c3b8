//! JWT authentication costs (issue 3): verification of HS256, RS256, ES256 and EdDSA tokens
//! cold (a token-cache miss: SHA-256 of the token, signature check, claims, cache insert) and
//! through the shard's token cache (a hit: SHA-256 and one probe), plus token extraction from
//! the bearer header, a query parameter and a named header.
//!
//! Not shipped code. Keys are the committed test fixtures in `tests/fixtures/jwt`. Run with
//! `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use yatagarasu::auth::{authenticate, extract_token, TokenCache, Verifier};
use yatagarasu::config::{ClaimOperator, ClaimRule, JwtAlgorithm, JwtConfig, Secret, TokenSource};

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

fn verification(c: &mut Criterion) {
    let algs = [
        ("HS256", JwtAlgorithm::HS256),
        ("RS256", JwtAlgorithm::RS256),
        ("ES256", JwtAlgorithm::ES256),
        ("EdDSA", JwtAlgorithm::EdDSA),
    ];
    let mut cold = c.benchmark_group("jwt_verify_cold");
    for (name, alg) in algs {
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
    for (name, alg) in algs {
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

fn extraction(c: &mut Criterion) {
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

criterion_group!(benches, verification, extraction);
criterion_main!(benches);
