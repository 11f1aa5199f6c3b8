//! JWT authentication through the real binary against RGW: a public and a private bucket in one
//! process, every token source, 401/403 with their headers, the token absent from what RGW
//! received and from the proxy's log, a cached private object still needing a token, and JWKS
//! rotation and outage against a real HTTP server started by the test.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "integration-test-hs256-secret-0123456789";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/").to_owned() + name)
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(kid: &str, private_pem: &str, claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(&fixture(private_pem)).unwrap(),
    )
    .unwrap()
}

fn admin() -> serde_json::Value {
    json!({"sub": "alice", "role": "admin", "exp": now() + 600})
}

/// Public bucket `/public`, private bucket `/private` (top-level HS256 jwt, role == admin).
fn auth_config(cache_mb: u64) -> String {
    let b = backend();
    let mut s = config("", "");
    s = s.replace(
        "buckets:\n",
        &format!(
            "cache:\n  memory: {{max_cache_size_mb: {cache_mb}, max_item_size_mb: 1, default_ttl_seconds: 3600}}\n\
             jwt:\n  algorithms: [HS256]\n  secret: \"{SECRET}\"\n  leeway_seconds: 0\n  \
             token_sources: [{{type: bearer}}, {{type: query, name: token}}, {{type: header, name: X-Auth-Token}}]\n  \
             claims: [{{claim: role, operator: equals, value: admin}}]\nbuckets:\n"
        ),
    );
    let private = bucket_yaml(
        "private",
        "/private",
        "yata-private",
        &b.endpoint,
        &b.ak2,
        &b.sk2,
        "",
    );
    s.replace(
        &private,
        &private.replace("    s3:\n", "    auth: {enabled: true}\n    s3:\n"),
    )
}

#[test]
fn public_and_private_buckets_and_every_token_source() {
    let b = backend();
    let secret = b.bytes(b.object("yata-private", "secret.txt"));
    let proxy = Proxy::start(&auth_config(0));
    let mut c = proxy.client();
    assert_eq!(
        c.request("GET", "/public/hello.txt", &[]).status,
        200,
        "public needs no token"
    );

    let r = c.request("GET", "/private/secret.txt", &[]);
    r.assert_json_error(401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"private\"")
    );

    let token = hs256(admin());
    let bearer = format!("Bearer {token}");
    for (path, headers) in [
        (
            "/private/secret.txt".to_string(),
            vec![("Authorization", bearer.as_str())],
        ),
        (
            "/private/secret.txt".to_string(),
            vec![("Authorization", &*format!("bearer {token}"))],
        ),
        (format!("/private/secret.txt?token={token}"), vec![]),
        (
            "/private/secret.txt".to_string(),
            vec![("X-Auth-Token", token.as_str())],
        ),
    ] {
        let r = c.request("GET", &path, &headers);
        assert_eq!(
            r.status,
            200,
            "{path} {headers:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.body, secret);
    }

    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [
        tampered,
        hs256(json!({"sub": "alice", "role": "admin", "exp": now() - 60})),
        encode(
            &Header::new(Algorithm::HS256),
            &admin(),
            &EncodingKey::from_secret(b"wrong-secret"),
        )
        .unwrap(),
        "not.a.jwt".to_string(),
    ] {
        let r = c.request(
            "GET",
            "/private/secret.txt",
            &[("Authorization", &format!("Bearer {bad}"))],
        );
        r.assert_json_error(401);
        let www = r.header("www-authenticate").unwrap();
        assert!(
            www.starts_with("Bearer realm=\"private\"") && www.contains("error=\"invalid_token\""),
            "{www}"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains(&bad),
            "the token is never echoed"
        );
    }

    let user = hs256(json!({"sub": "bob", "role": "user", "exp": now() + 600}));
    let r = c.request(
        "GET",
        "/private/secret.txt",
        &[("Authorization", &format!("Bearer {user}"))],
    );
    r.assert_json_error(403);
    assert!(
        r.json()["message"].as_str().unwrap().contains("role"),
        "says which rule failed"
    );
}

#[test]
fn the_token_never_reaches_s3_or_the_log() {
    let b = backend();
    let proxy = Proxy::start(&auth_config(0));
    let token = hs256(
        json!({"sub": "carol", "role": "admin", "exp": now() + 600, "n": "never-reaches-s3"}),
    );
    assert_eq!(
        proxy
            .get(&format!("/private/secret.txt?token={token}"), &[])
            .status,
        200
    );
    assert_eq!(
        proxy
            .get(
                "/private/secret.txt",
                &[("Authorization", &format!("Bearer {token}"))]
            )
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(400));
    if let Some(ops) = &b.ops_log {
        let text = std::fs::read_to_string(ops).unwrap();
        assert!(
            text.contains("GET /yata-private/secret.txt"),
            "RGW logged the requests"
        );
        assert!(!text.contains(&token), "the token reached S3");
    } else {
        panic!("RGW ops log (YATA_TEST_OPS_LOG) is required for this test");
    }
    let log = proxy.log_text();
    assert!(log.contains("/private/secret.txt"), "access log present");
    assert!(!log.contains(&token), "the token reached the proxy log");
}

#[test]
fn a_cached_private_object_still_needs_a_valid_token() {
    // One shard, so the second request finds the first one's entry.
    let proxy = Proxy::start(&auth_config(64).replacen(
        &format!("  shards: {}\n", shards()),
        "  shards: 1\n",
        1,
    ));
    let mut c = proxy.client();
    let bearer = format!("Bearer {}", hs256(admin()));
    let first = c.request("GET", "/private/secret.txt", &[("Authorization", &bearer)]);
    let second = c.request("GET", "/private/secret.txt", &[("Authorization", &bearer)]);
    assert_eq!(
        (first.header("x-cache"), second.header("x-cache")),
        (Some("MISS"), Some("HIT"))
    );
    c.request("GET", "/private/secret.txt", &[])
        .assert_json_error(401);
    let user = format!(
        "Bearer {}",
        hs256(json!({"role": "user", "exp": now() + 600}))
    );
    c.request("GET", "/private/secret.txt", &[("Authorization", &user)])
        .assert_json_error(403);
    assert_eq!(
        c.request("HEAD", "/private/secret.txt", &[]).status,
        401,
        "HEAD needs a token too"
    );
}

/// A minimal HTTP server for a JWKS document; `None` answers 503 (the endpoint is "down").
fn jwks_server(doc: Arc<Mutex<Option<Vec<u8>>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let doc = doc.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {}
                    let body = doc.lock().unwrap().clone();
                    let resp = match body {
                        Some(b) => {
                            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len()).into_bytes();
                            r.extend_from_slice(&b);
                            r
                        }
                        None => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                            .to_vec(),
                    };
                    if stream.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jwks_rotation_and_outage() {
    let b = backend();
    let doc = Arc::new(Mutex::new(Some(fixture("jwks.json"))));
    let port = jwks_server(doc.clone());
    let bucket = bucket_yaml("idp", "/idp", "yata-public", &b.endpoint, &b.ak1, &b.sk1, "").replace(
        "    s3:\n",
        &format!(
            "    auth:\n      enabled: true\n      jwt: {{algorithms: [RS256], jwks_url: \"http://127.0.0.1:{port}/jwks.json\", jwks_refresh_seconds: 1}}\n    s3:\n"
        ),
    );
    let proxy = Proxy::start(&config("", &bucket));
    wait_for("the first JWKS fetch", || {
        proxy.log_text().contains("jwks refreshed")
    });
    let old = rs256("rsa-1", "rsa_private.pem", admin());
    let new = rs256("rsa-2", "rsa2_private.pem", admin());
    let get = |t: &str| {
        proxy
            .get(
                "/idp/hello.txt",
                &[("Authorization", &format!("Bearer {t}"))],
            )
            .status
    };
    assert_eq!(get(&old), 200);
    assert_eq!(get(&new), 401, "rsa-2 is not published yet");

    // Rotation: the endpoint now publishes only rsa-2.
    *doc.lock().unwrap() = Some(fixture("jwks-rotated.json"));
    wait_for("rsa-2 to be accepted", || get(&new) == 200);
    assert_eq!(
        get(&old),
        401,
        "rsa-1 is gone: its tokens are rejected, even cached ones"
    );

    // Outage: refreshes fail, the keys we have stay in use.
    *doc.lock().unwrap() = None;
    wait_for("a failed refresh", || {
        proxy.log_text().contains("jwks refresh failed")
    });
    assert_eq!(get(&new), 200, "keys kept while the JWKS endpoint is down");
}

#[test]
fn sighup_with_a_new_secret_applies_and_drops_cached_verifications() {
    let proxy = Proxy::start(&auth_config(0));
    let old = format!("Bearer {}", hs256(admin()));
    assert_eq!(
        proxy
            .get("/private/secret.txt", &[("Authorization", &old)])
            .status,
        200
    );
    let rotated = "rotated-secret-for-the-reload-test-987654";
    let line = proxy.reload(&auth_config(0).replace(SECRET, rotated));
    assert!(line.contains("config reloaded"), "{line}");
    let new = encode(
        &Header::new(Algorithm::HS256),
        &admin(),
        &EncodingKey::from_secret(rotated.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        proxy
            .get(
                "/private/secret.txt",
                &[("Authorization", &format!("Bearer {new}"))]
            )
            .status,
        200
    );
    assert_eq!(
        proxy
            .get("/private/secret.txt", &[("Authorization", &old)])
            .status,
        401,
        "the old secret's token, verified and cached before, is rejected after the reload"
    );
}
