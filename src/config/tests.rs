//! Tests of the config module through its public API (`parse_str`, `load_file`).
//!
//! Test-only; not compiled into the binary.

// Unit tests run on test threads, not shards: fixtures are read and written with std::fs.
#![allow(clippy::disallowed_methods)]

use super::*;

const BUCKET: &str = "
buckets:
  - name: b
    path_prefix: /b
    s3: {bucket: bkt, region: us-east-1, access_key: AK, secret_key: SK}
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(yaml: &str) -> Result<Config, ConfigErrors> {
    parse_str(yaml, &no_env)
}

fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn has(errs: &[String], prefix: &str) -> bool {
    errs.iter().any(|e| e.starts_with(prefix))
}

#[test]
fn defaults_apply_when_sections_are_omitted() {
    let c = parse(BUCKET).unwrap();
    let s = &c.server;
    assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(s.shards, Shards::Auto);
    assert_eq!(s.cpu_affinity, CpuAffinity::Auto);
    assert_eq!(s.io_uring_entries, 1024);
    assert_eq!(
        (
            s.keepalive_timeout_ms,
            s.request_header_timeout_ms,
            s.send_timeout_ms,
            s.shutdown_grace_ms
        ),
        (60_000, 10_000, 60_000, 30_000)
    );
    assert_eq!(s.max_connections_per_shard, 65_536);
    assert_eq!(
        s.limits,
        LimitsConfig {
            max_uri_bytes: 8192,
            max_header_bytes: 65_536,
            max_headers: 100,
            max_body_bytes: 0
        }
    );
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.admin.token, None);
    assert_eq!(
        c.logging,
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Json,
            access_log: true
        }
    );
    assert_eq!(c.jwt, None);
    let m = &c.cache.memory;
    assert_eq!(
        (
            m.max_cache_size_mb,
            m.max_item_size_mb,
            m.default_ttl_seconds
        ),
        (1024, 10, 3600)
    );
    let disk = &c.cache.disk;
    assert!(!disk.enabled);
    assert_eq!(disk.cache_dir, PathBuf::from("/var/cache/yatagarasu"));
    assert_eq!(disk.max_disk_cache_size_mb, 10_240);
    let r = &c.cache.redis;
    assert!(!r.enabled);
    assert_eq!(r.url.expose(), "redis://127.0.0.1:6379/0");
    assert_eq!(
        (r.key_prefix.as_str(), r.ttl_seconds, r.timeout_ms),
        ("yatagarasu:", 3600, 50)
    );
    assert_eq!(
        (
            r.cluster_nodes.len(),
            r.max_item_size_mb,
            r.purge_channel.as_str()
        ),
        (0, 4, "yatagarasu:purge")
    );
    let b = &c.buckets[0];
    assert_eq!((b.name.as_str(), b.path_prefix.as_str()), ("b", "/b"));
    assert_eq!(b.s3.connect_timeout_ms, 2000);
    assert_eq!(b.s3.first_byte_timeout_ms, 10_000);
    assert_eq!(b.s3.session_token, None);
    assert_eq!(b.s3.tls_ca_file, None);
    assert_eq!(
        b.auth,
        BucketAuthConfig {
            enabled: false,
            jwt: None
        }
    );
    assert_eq!(
        b.cache,
        BucketCacheConfig {
            enabled: true,
            ttl_seconds: None,
            max_item_size_mb: None,
            stale_if_error_seconds: 0
        }
    );
    assert_eq!(b.cors, None, "no cors block = no CORS");
    // The Default impls are the same defaults.
    assert_eq!(ServerConfig::default(), c.server);
    assert_eq!(AdminConfig::default(), c.admin);
    assert_eq!(LoggingConfig::default(), c.logging);
    assert_eq!(CacheConfig::default(), c.cache);
    assert_eq!(LimitsConfig::default(), c.server.limits);
}

#[test]
fn null_sections_take_defaults_and_jwt_defaults_apply() {
    let c = parse(&format!(
        "server:\nadmin: null\njwt: {{secret: s}}\n{BUCKET}"
    ))
    .unwrap();
    assert_eq!(c.server, ServerConfig::default());
    let jwt = c.jwt.unwrap();
    assert_eq!(jwt.algorithms, vec![JwtAlgorithm::HS256]);
    assert_eq!(jwt.token_sources, vec![TokenSource::Bearer]);
    assert_eq!((jwt.leeway_seconds, jwt.jwks_refresh_seconds), (30, 3600));
    assert!(jwt.claims.is_empty() && jwt.keys.is_empty());
}

#[test]
fn missing_buckets_is_an_error() {
    assert_eq!(
        errors("server: {}"),
        ["buckets: required (at least one bucket)"]
    );
    assert_eq!(
        errors("buckets: []"),
        ["buckets: at least one bucket is required"]
    );
    assert_eq!(errors(""), ["buckets: required (at least one bucket)"]);
}

#[test]
fn substitution_set_default_missing_numeric_and_special_chars() {
    let secret = "p#ss: 'w\"rd' ${NOT_A_VAR} $$ \n x";
    let env = move |name: &str| -> Option<String> {
        match name {
            "AK" => Some("AKIDEXAMPLE".into()),
            "SK" => Some(secret.into()),
            "KA" => Some("1234".into()),
            "LOG" => Some("false".into()),
            _ => None,
        }
    };
    let yaml = "
server:
  keepalive_timeout_ms: ${KA}
  request_header_timeout_ms: ${HT:-777}
  shards: ${SHARDS:-3}
logging: {access_log: '${LOG}'}
buckets:
  - name: b
    path_prefix: ${PREFIX:-/dflt}
    s3: {bucket: 'pre-${REGION:-x}', region: us-east-1, access_key: '${AK}', secret_key: '${SK}',
         session_token: '${TOKEN:-}'}
";
    let c = parse_str(yaml, &env).unwrap();
    assert_eq!(c.server.keepalive_timeout_ms, 1234);
    assert_eq!(c.server.request_header_timeout_ms, 777);
    assert_eq!(c.server.shards, Shards::Count(3));
    assert!(!c.logging.access_log);
    let b = &c.buckets[0];
    assert_eq!(b.path_prefix, "/dflt");
    assert_eq!(b.s3.bucket, "pre-x");
    assert_eq!(b.s3.access_key.expose(), "AKIDEXAMPLE");
    assert_eq!(
        b.s3.secret_key.expose(),
        secret,
        "env text is neither YAML-parsed nor rescanned"
    );
    assert_eq!(b.s3.session_token, None, "${{TOKEN:-}} = empty = absent");
}

#[test]
fn missing_variables_are_all_reported_with_paths() {
    let yaml = "
admin: {token: '${ADMIN_TOKEN}'}
buckets:
  - name: b
    path_prefix: /b
    s3: {bucket: x, region: us-east-1, access_key: '${AK_MISSING}', secret_key: ok}
";
    let errs = errors(yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(has(
        &errs,
        "admin.token: environment variable ADMIN_TOKEN is not set"
    ));
    assert!(
        has(
            &errs,
            "buckets[0].s3.access_key: environment variable AK_MISSING is not set"
        ),
        "no follow-on `required` error: {errs:?}"
    );
}

#[test]
fn bad_numeric_from_environment_is_reported_without_echoing_it() {
    let env = |name: &str| (name == "KA").then(|| "s3cr3t".to_string());
    let yaml = format!("server: {{keepalive_timeout_ms: '${{KA}}'}}\n{BUCKET}");
    let err = parse_str(&yaml, &env).unwrap_err().to_string();
    assert!(
        err.starts_with("server.keepalive_timeout_ms: expected a positive integer"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn literal_dollar_escape() {
    let yaml = "
buckets:
  - name: b
    path_prefix: /b
    s3: {bucket: x, region: r, access_key: a, secret_key: 'pa$$word$', endpoint: 'http://h'}
";
    let c = parse(yaml).unwrap();
    assert_eq!(c.buckets[0].s3.secret_key.expose(), "pa$word$");
}

#[test]
fn unknown_keys_at_every_depth_are_reported_together() {
    let yaml = "
servre: {}
server:
  limits: {max_uri_bytez: 1}
  listen_addr: x
logging: {colour: true}
cache: {memory: {size: 1}}
jwt: {secret: s, token_sources: [{type: bearer, name: x}], claims: [{claim: a, operator: exists, op: 1}]}
buckets:
  - name: b
    path_prefix: /b
    extra: 1
    s3: {bucket: x, region: r, access_key: a, secret_key: s, endpoint: 'http://h', tls: true}
    auth: {enabled: false, jwt: {secret: s, issuer_url: x}}
    cache: {ttl: 5}
";
    let errs = errors(yaml);
    let expected = [
        "servre: unknown key",
        "server.limits.max_uri_bytez: unknown key",
        "server.listen_addr: unknown key",
        "logging.colour: unknown key",
        "cache.memory.size: unknown key",
        "jwt.token_sources[0].name: unknown key (expected one of: type)",
        "jwt.claims[0].op: unknown key",
        "buckets[0].extra: unknown key",
        "buckets[0].s3.tls: unknown key",
        "buckets[0].auth.jwt.issuer_url: unknown key",
        "buckets[0].cache.ttl: unknown key",
    ];
    for want in expected {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    assert!(errs
        .iter()
        .any(|e| e.contains("max_uri_bytez: unknown key (expected one of: max_uri_bytes, max_header_bytes, max_headers, max_body_bytes)")));
}

#[test]
fn redis_cluster_nodes_must_be_host_port_and_sizes_positive() {
    let yaml = "
cache:
  redis: {cluster_nodes: ['10.0.0.1:7000', 'nohost', ':7001', 'h:0', 'h:99999'], max_item_size_mb: 0}
buckets:
  - name: a
    path_prefix: /a
    s3: {bucket: x, region: r, access_key: k, secret_key: s}
";
    let errs = errors(yaml);
    let expected = [
        "cache.redis.cluster_nodes[1]: \"nohost\" is not host:port",
        "cache.redis.cluster_nodes[2]: \":7001\" is not host:port",
        "cache.redis.cluster_nodes[3]: \"h:0\" is not host:port",
        "cache.redis.cluster_nodes[4]: \"h:99999\" is not host:port",
        "cache.redis.max_item_size_mb: expected a positive integer, got 0",
    ];
    for want in expected {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
}

#[test]
fn type_and_semantic_errors_are_reported_together() {
    let yaml = "
server:
  listen: nope
  shards: 0
  cpu_affinity: [0, 1, 0]
  io_uring_entries: 1000
  keepalive_timeout_ms: 0
  limits: {max_uri_bytes: abc, max_body_bytes: -1}
admin: {listen: '0.0.0.0:9090'}
logging: {level: verbose, format: xml}
cache:
  memory: {max_cache_size_mb: 5, max_item_size_mb: 6}
  redis: {url: 'http://user:hunter2@host'}
buckets:
  - name: a
    path_prefix: /a/
    s3: {bucket: x, access_key: k, secret_key: s}
  - name: a
    path_prefix: /a
    s3: {bucket: x, region: r, access_key: k, secret_key: s, endpoint: 'ftp://h'}
  - name: 'bad name'
    path_prefix: 'no-slash'
    s3: {bucket: x, region: r, access_key: k, secret_key: '', connect_timeout_ms: 0}
    auth: {enabled: true}
  - name: c
    path_prefix: /c/../d
    s3: {bucket: My_Bucket, region: r, access_key: k, secret_key: s, endpoint: 'https://h/p', addressing: virtual}
";
    let errs = errors(yaml);
    let expected = [
        "server.listen: expected an IP:port socket address",
        "server.shards: expected auto or a positive integer, got 0",
        "server.cpu_affinity[2]: CPU 0 is listed twice",
        "server.io_uring_entries: must be a power of two from 256 to 32768, got 1000",
        "server.keepalive_timeout_ms: expected a positive integer, got 0",
        "server.limits.max_uri_bytes: expected a positive integer, got \"abc\"",
        "server.limits.max_body_bytes: expected a non-negative integer, got -1",
        "logging.level: expected one of trace, debug, info, warn, error, got \"verbose\"",
        "logging.format: expected one of json, text",
        "cache.memory.max_item_size_mb: must not exceed max_cache_size_mb (5)",
        "cache.redis.url: expected redis://",
        "buckets[0].s3.region: required",
        "buckets[1].s3.endpoint: scheme must be http or https",
        "buckets[1].name: duplicate bucket name \"a\" (also buckets[0])",
        "buckets[1].path_prefix: duplicate path_prefix \"/a\" (also buckets[0])",
        "buckets[2].name: may contain only",
        "buckets[2].path_prefix: must start with '/'",
        "buckets[2].s3.secret_key: required",
        "buckets[2].s3.connect_timeout_ms: expected a positive integer, got 0",
        "buckets[2].auth.enabled: auth is enabled but no JWT settings exist",
        "buckets[3].path_prefix: must not contain '.' or '..' segments",
        "buckets[3].s3.endpoint: must not contain a path",
    ];
    for want in expected {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    assert!(
        !errs.iter().any(|e| e.contains("hunter2")),
        "redis url leaked: {errs:#?}"
    );
}

#[test]
fn virtual_addressing_checks() {
    let bucket = |s3: &str| {
        format!("buckets:\n  - name: b\n    path_prefix: /b\n    s3: {{access_key: a, secret_key: s, {s3}}}\n")
    };
    let errs = errors(&bucket("bucket: My_Bucket, region: us-east-1"));
    assert!(
        has(
            &errs,
            "buckets[0].s3.addressing: virtual needs a DNS-compatible bucket name"
        ),
        "{errs:?}"
    );
    let errs = errors(&bucket(
        "bucket: bkt, region: r, endpoint: 'http://10.0.0.1', addressing: virtual",
    ));
    assert!(
        has(
            &errs,
            "buckets[0].s3.addressing: virtual needs a DNS host name"
        ),
        "{errs:?}"
    );
    let errs = errors(&bucket(
        "bucket: bkt, region: r, endpoint: 'http://h', tls_ca_file: /ca.pem",
    ));
    assert!(
        has(
            &errs,
            "buckets[0].s3.tls_ca_file: set but the endpoint is http"
        ),
        "{errs:?}"
    );
    // Path addressing has no DNS constraint on the bucket name.
    assert!(parse(&bucket(
        "bucket: My_Bucket, region: r, endpoint: 'http://h'"
    ))
    .is_ok());
}

#[test]
fn endpoint_resolution_and_addressing_default() {
    let bucket = |s3: &str| {
        let y = format!("buckets:\n  - name: b\n    path_prefix: /b\n    s3: {{bucket: bkt, region: eu-west-1, access_key: a, secret_key: s{s3}}}\n");
        parse(&y).unwrap().buckets.remove(0).s3
    };
    let aws = bucket("");
    assert_eq!(
        aws.endpoint,
        Endpoint {
            scheme: Scheme::Https,
            host: "s3.eu-west-1.amazonaws.com".into(),
            port: 443,
            explicit_port: false
        }
    );
    assert_eq!(aws.addressing, Addressing::Virtual);

    let local = bucket(", endpoint: 'http://127.0.0.1:7480'");
    assert_eq!(
        (local.endpoint.host.as_str(), local.endpoint.port),
        ("127.0.0.1", 7480)
    );
    assert!(local.endpoint.explicit_port);
    assert_eq!(local.addressing, Addressing::Path);

    let v6 = bucket(", endpoint: 'https://[::1]:9443'");
    assert_eq!(
        (
            v6.endpoint.host.as_str(),
            v6.endpoint.port,
            v6.endpoint.scheme
        ),
        ("::1", 9443, Scheme::Https)
    );

    let http = bucket(", endpoint: 'http://minio.local'");
    assert_eq!(
        (http.endpoint.port, http.endpoint.explicit_port),
        (80, false)
    );
    let https = bucket(", endpoint: 'https://minio.local/'");
    assert_eq!(
        (https.endpoint.port, https.endpoint.explicit_port),
        (443, false)
    );

    let forced = bucket(", endpoint: 'https://minio.local', addressing: virtual");
    assert_eq!(forced.addressing, Addressing::Virtual);
    let aws_path = bucket(", addressing: path");
    assert_eq!(aws_path.addressing, Addressing::Path);
}

#[test]
fn path_prefixes_are_normalised() {
    let yaml = "
buckets:
  - {name: a, path_prefix: /a/, s3: {bucket: x, region: r, access_key: k, secret_key: s, endpoint: 'http://h'}}
  - {name: root, path_prefix: /, s3: {bucket: x, region: r, access_key: k, secret_key: s, endpoint: 'http://h'}}
  - {name: deep, path_prefix: /a/b/, s3: {bucket: x, region: r, access_key: k, secret_key: s, endpoint: 'http://h'}}
";
    let c = parse(yaml).unwrap();
    let prefixes: Vec<&str> = c.buckets.iter().map(|b| b.path_prefix.as_str()).collect();
    assert_eq!(prefixes, ["/a", "/", "/a/b"]);
    assert_eq!(
        c.bucket("deep").map(|b| b.path_prefix.as_str()),
        Some("/a/b")
    );
}

#[test]
fn secrets_are_redacted_in_debug_and_errors() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s:?}"), "<redacted>");
    assert_eq!(format!("{s}"), "<redacted>");
    assert_eq!(s.expose(), "hunter2");

    let env = |name: &str| (name == "SK").then(|| "hunter2-sk".to_string());
    let yaml = "
admin: {token: hunter2-admin}
jwt: {secret: hunter2-jwt}
cache: {redis: {url: 'redis://:hunter2-redis@h:6379/0'}}
buckets:
  - name: b
    path_prefix: /b
    s3: {bucket: x, region: r, access_key: hunter2-ak, secret_key: '${SK}', session_token: hunter2-st, endpoint: 'http://h'}
";
    let c = parse_str(yaml, &env).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"));

    // Secrets in the wrong shape, or a secret put under a non-secret key, never show up in errors.
    let bad = "
admin: {token: [hunter2-list]}
cache: {redis: {url: 'hunter2-not-a-url'}}
buckets:
  - name: b
    path_prefix: /b
    s3: {bucket: x, region: r, access_key: {k: hunter2-map}, secret_key: s, endpoint: 'http://h', connect_timeout_ms: '${SK}'}
";
    let err = parse_str(bad, &env).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 4, "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn fail_closed_auth_and_jwt_rules() {
    let with = |top: &str, auth: &str| {
        format!("{top}\nbuckets:\n  - name: b\n    path_prefix: /b\n    s3: {{bucket: x, region: r, access_key: k, secret_key: s, endpoint: 'http://h'}}\n    auth: {auth}\n")
    };
    // Enabled with nothing anywhere: error. With top-level or own jwt: fine.
    let errs = errors(&with("", "{enabled: true}"));
    assert_eq!(errs.len(), 1);
    assert!(has(
        &errs,
        "buckets[0].auth.enabled: auth is enabled but no JWT settings exist"
    ));
    let c = parse(&with("jwt: {secret: top}", "{enabled: true}")).unwrap();
    assert_eq!(
        c.jwt_for(&c.buckets[0])
            .and_then(|j| j.secret.as_ref())
            .map(Secret::expose),
        Some("top")
    );
    let c = parse(&with(
        "jwt: {secret: top}",
        "{enabled: true, jwt: {secret: own}}",
    ))
    .unwrap();
    assert_eq!(
        c.jwt_for(&c.buckets[0])
            .and_then(|j| j.secret.as_ref())
            .map(Secret::expose),
        Some("own")
    );
    let c = parse(&with("jwt: {secret: top}", "{enabled: false}")).unwrap();
    assert!(c.jwt_for(&c.buckets[0]).is_none());

    let errs = errors(&with(
        "jwt:
  algorithms: [HS256, RS256]
  jwks_url: 'http://idp.example.com/jwks'
  jwks_refresh_seconds: 0
  token_sources: [{type: query}, {type: header, name: 'Bad Name'}, {type: cookie}]
  claims:
    - {claim: role, operator: exists, value: x}
    - {claim: role, operator: in, value: admin}
    - {claim: a..b, operator: equals, value: 1}
    - {claim: role, operator: contains}
    - {claim: role, operator: like, value: 1}
  keys:
    - {kid: k1, algorithm: HS512, secret: x, public_key_path: /k.pem}
    - {kid: k2, algorithm: RS256}
    - {kid: k3, algorithm: RS384, public_key_path: /k.pem}",
        "{enabled: true, jwt: {algorithms: [], secret: s}}",
    ));
    let expected = [
        "jwt.jwks_url: must use https",
        "jwt.jwks_refresh_seconds: expected a positive integer, got 0",
        "jwt.token_sources[0].name: required",
        "jwt.token_sources[1].name: must be an HTTP field name",
        "jwt.token_sources[2].type: expected one of bearer, query, header, got \"cookie\"",
        "jwt.claims[0].value: exists takes no value",
        "jwt.claims[1].value: in needs a list value",
        "jwt.claims[2].claim: empty segment in dotted claim path",
        "jwt.claims[3].value: required for this operator",
        "jwt.claims[4].operator: expected one of equals, not_equals, in, contains, exists",
        "jwt.keys[0].public_key_path: not used by HS algorithms",
        "jwt.keys[1].public_key_path: required for RS256",
        "buckets[0].auth.jwt.algorithms: must list at least one algorithm",
        "buckets[0].auth.jwt.secret: is set but algorithms lists no HS algorithm",
    ];
    for want in expected {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");

    let errs = errors(&with("jwt: {issuer: x}", "{enabled: true}"));
    assert_eq!(
        errs,
        ["jwt: needs at least one key source: secret, public_key_path, jwks_url or keys"]
    );
    let errs = errors(&with(
        "jwt: {algorithms: [RS256, HS256], public_key_path: /k.pem}",
        "{}",
    ));
    assert_eq!(errs, ["jwt.algorithms: HS256 needs a secret (jwt secret, or a keys entry with an HS algorithm)"]);
    let errs = errors(&with(
        "jwt: {algorithms: [HS256], keys: [{kid: a, algorithm: HS256, secret: x}, {kid: a, algorithm: ES256, public_key_path: /p}]}",
        "{}",
    ));
    assert_eq!(
        errs,
        [
            "jwt.keys[1].kid: duplicate kid \"a\"",
            "jwt.keys[1].algorithm: ES256 is not listed in algorithms"
        ]
    );
    let c = parse(&with(
        "jwt: {algorithms: [RS256, EdDSA], jwks_url: 'https://idp/jwks', claims: [{claim: realm.roles, operator: contains, value: reader}, {claim: tier, operator: in, value: [1, gold]}]}",
        "{enabled: true}",
    ))
    .unwrap();
    let jwt = c.jwt.unwrap();
    assert_eq!(jwt.algorithms, [JwtAlgorithm::RS256, JwtAlgorithm::EdDSA]);
    assert_eq!(jwt.claims[1].value, Some(serde_json::json!([1, "gold"])));
    assert_eq!(jwt.claims[0].operator, ClaimOperator::Contains);
}

/// [`BUCKET`] with `cors` (a flow mapping) added to the bucket.
fn with_cors(cors: &str) -> String {
    format!("{BUCKET}    cors: {cors}\n")
}

#[test]
fn cors_defaults_and_origin_forms() {
    let c = parse(&with_cors(
        "{allowed_origins: ['https://App.Example.com', 'http://127.0.0.1:8081']}",
    ))
    .unwrap();
    let cors = c.buckets[0].cors.as_ref().unwrap();
    assert_eq!(
        *cors,
        CorsConfig {
            allowed_origins: CorsOrigins::List(vec![
                "https://app.example.com".into(),
                "http://127.0.0.1:8081".into()
            ]),
            allowed_methods: vec![CorsMethod::Get, CorsMethod::Head],
            allowed_headers: [
                "Range",
                "If-Match",
                "If-None-Match",
                "If-Modified-Since",
                "If-Unmodified-Since",
                "If-Range"
            ]
            .map(String::from)
            .to_vec(),
            expose_headers: [
                "ETag",
                "Content-Range",
                "Content-Length",
                "Accept-Ranges",
                "Last-Modified"
            ]
            .map(String::from)
            .to_vec(),
            max_age_seconds: 600,
            allow_credentials: false,
        }
    );
    let c = parse(&with_cors(
        "{allowed_origins: ['*'], allowed_methods: [get], allowed_headers: [], \
         expose_headers: [X-Cache], max_age_seconds: '0', allow_credentials: false}",
    ))
    .unwrap();
    let cors = c.buckets[0].cors.as_ref().unwrap();
    assert_eq!(cors.allowed_origins, CorsOrigins::Any);
    assert_eq!(cors.allowed_methods, [CorsMethod::Get]);
    assert!(cors.allowed_headers.is_empty());
    assert_eq!(cors.expose_headers, ["X-Cache"]);
    assert_eq!(cors.max_age_seconds, 0);
    let c = parse(&with_cors(
        "{allowed_origins: ['https://a.test'], allow_credentials: true}",
    ))
    .unwrap();
    assert!(c.buckets[0].cors.as_ref().unwrap().allow_credentials);
    // `cors: null` is the same as no block.
    assert_eq!(parse(&with_cors("null")).unwrap().buckets[0].cors, None);
}

#[test]
fn cors_errors_are_all_reported_with_their_keys() {
    let errs = errors(&with_cors(
        "{allowed_origins: ['*'], allow_credentials: true, allowed_methods: [GET, PUT], \
         allowed_headers: [Range, 'Bad Header'], expose_headers: ['a:b'], \
         max_age_seconds: 86401, allow_origin: x}",
    ));
    let expected = [
        "buckets[0].cors.allowed_methods[1]: expected one of GET, HEAD, got \"PUT\"",
        "buckets[0].cors.allowed_headers[1]: \"Bad Header\" is not an HTTP field name",
        "buckets[0].cors.expose_headers[0]: \"a:b\" is not an HTTP field name",
        "buckets[0].cors.max_age_seconds: must be at most 86400",
        "buckets[0].cors.allow_origin: unknown key (expected one of: allowed_origins,",
        "buckets[0].cors.allow_credentials: true is not allowed with allowed_origins [\"*\"]",
    ];
    for want in expected {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");

    let errs = errors(&with_cors(
        "{allowed_origins: ['https://a.test/', 'a.test', 'https://a.test:x', 'https://b.test', '*'], \
         allowed_methods: []}",
    ));
    assert_eq!(
        errs,
        [
            "buckets[0].cors.allowed_origins: \"*\" must be the only entry when present",
            "buckets[0].cors.allowed_methods: must list at least one method (GET, HEAD)",
        ]
    );
    let errs = errors(&with_cors(
        "{allowed_origins: ['https://a.test/', 'a.test', 'https://a.test:x', 'https://b.test']}",
    ));
    let expected = [
        "buckets[0].cors.allowed_origins[0]: \"https://a.test/\": an origin has no path",
        "buckets[0].cors.allowed_origins[1]: \"a.test\": expected an origin such as",
        "buckets[0].cors.allowed_origins[2]: \"https://a.test:x\": has a bad port",
    ];
    for want in expected {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    assert_eq!(
        errors(&with_cors("{}")),
        ["buckets[0].cors.allowed_origins: required"]
    );
    assert_eq!(
        errors(&with_cors("{allowed_origins: []}")),
        ["buckets[0].cors.allowed_origins: must list at least one origin, or [\"*\"] for any"]
    );
    assert_eq!(
        errors(&with_cors("[x]")),
        ["buckets[0].cors: expected a mapping, got a list"]
    );
}

#[test]
fn restart_only_changes_lists_changed_keys() {
    let a = parse(BUCKET).unwrap();
    let mut b = a.clone();
    assert!(a.restart_only_changes(&b).is_empty());
    b.logging.level = LogLevel::Debug;
    b.server.limits.max_headers = 10;
    b.buckets[0].s3.region = "eu-west-1".into();
    b.buckets[0].cors = parse(&with_cors("{allowed_origins: ['*']}"))
        .unwrap()
        .buckets[0]
        .cors
        .clone();
    assert!(
        a.restart_only_changes(&b).is_empty(),
        "reloadable keys are not restart-only"
    );
    b.server.listen = "0.0.0.0:8081".parse().unwrap();
    b.server.shards = Shards::Count(2);
    b.server.cpu_affinity = CpuAffinity::List(vec![1]);
    b.server.io_uring_entries = 2048;
    b.admin.listen = "127.0.0.1:9091".parse().unwrap();
    assert_eq!(a.restart_only_changes(&b), RESTART_ONLY_KEYS);
    let mut c = a.clone();
    c.admin.listen = "127.0.0.1:9091".parse().unwrap();
    assert_eq!(a.restart_only_changes(&c), ["admin.listen"]);

    let mut d = a.clone();
    d.cache.memory.max_cache_size_mb = 1;
    d.cache.redis.url = Secret::new("redis://other:6379/0");
    d.cache.memory.default_ttl_seconds = 5;
    d.logging.format = LogFormat::Text;
    d.logging.level = LogLevel::Debug;
    assert_eq!(
        a.startup_only_changes(&d),
        [
            "cache.memory.max_cache_size_mb",
            "cache.redis.url",
            "logging.format"
        ]
    );
    assert!(a.restart_only_changes(&d).is_empty());
}

#[test]
fn errors_display_one_per_line() {
    let e = parse("buckets: [{name: b, path_prefix: /b}]\nserver: {shards: x}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "server.shards: expected auto or a positive integer, got \"x\"\nbuckets[0].s3: required"
    );
    let e = parse("a: [").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].path.is_empty() && e.to_string().starts_with("invalid YAML"));
    let e = parse("a: 1\na: 2\n").unwrap_err();
    assert!(
        e.to_string().starts_with("invalid YAML"),
        "duplicate keys are rejected: {e}"
    );
}

#[test]
fn yaml_merge_keys_share_settings() {
    let yaml = "
x-s3: &s3 {region: r, access_key: k, secret_key: s, endpoint: 'http://h'}
buckets:
  - {name: a, path_prefix: /a, s3: {<<: *s3, bucket: one}}
";
    // The anchor holder is itself an unknown top-level key: reported, not ignored.
    assert_eq!(errors(yaml).len(), 1);
    let yaml = "
buckets:
  - {name: a, path_prefix: /a, s3: &s3 {region: r, access_key: k, secret_key: s, endpoint: 'http://h', bucket: one}}
  - {name: b, path_prefix: /b, s3: {<<: *s3, bucket: two}}
";
    let c = parse(yaml).unwrap();
    assert_eq!(c.buckets[1].s3.bucket, "two");
    assert_eq!(c.buckets[1].s3.endpoint.port, 80);
}

#[test]
fn reference_config_parses() {
    let env = |name: &str| -> Option<String> {
        match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            "JWT_SECRET" => Some("s#cret: 'x'".into()),
            _ => None,
        }
    };
    let c = match parse_str(include_str!("../../config.yaml"), &env) {
        Ok(c) => c,
        Err(e) => panic!("config.yaml does not parse:\n{e}"),
    };
    assert_eq!(
        c.server,
        ServerConfig::default(),
        "reference shows the defaults"
    );
    assert_eq!(c.cache, CacheConfig::default());
    assert_eq!(c.logging, LoggingConfig::default());
    assert_eq!(c.admin, AdminConfig::default());
    assert_eq!(c.buckets.len(), 2);
    let public = c.bucket("public").unwrap();
    assert_eq!(public.path_prefix, "/public");
    assert!(!public.auth.enabled);
    assert_eq!(public.s3.endpoint.to_string(), "http://127.0.0.1:7480");
    assert_eq!(public.s3.addressing, Addressing::Path);
    assert_eq!(public.s3.access_key.expose(), "AKIDEXAMPLE");
    let cors = public
        .cors
        .as_ref()
        .expect("the reference shows a cors block");
    assert_eq!(
        cors.allowed_origins,
        CorsOrigins::List(vec!["https://app.example.com".into()])
    );
    assert_eq!(cors.allowed_methods, [CorsMethod::Get, CorsMethod::Head]);
    assert_eq!(cors.max_age_seconds, 600);
    assert!(!cors.allow_credentials);
    let private = c.bucket("private").unwrap();
    assert!(private.auth.enabled);
    assert_eq!(private.cors, None);
    let jwt = c.jwt_for(private).unwrap();
    assert_eq!(jwt.secret.as_ref().map(Secret::expose), Some("s#cret: 'x'"));
    assert_eq!(jwt.token_sources.len(), 3);

    // Without the required variables, each one is named.
    let err = parse_str(include_str!("../../config.yaml"), &no_env)
        .unwrap_err()
        .to_string();
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JWT_SECRET"] {
        assert!(err.contains(var), "{err}");
    }
}

#[test]
fn load_file_checks_named_files() {
    let dir = std::env::temp_dir().join(format!("yatagarasu-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("key.pem");
    std::fs::write(&pem, "-----BEGIN PUBLIC KEY-----\n").unwrap();
    let cfg = dir.join("config.yaml");
    let write = |key_path: &Path| {
        let yaml = format!(
            "jwt: {{algorithms: [RS256], public_key_path: '{}'}}\n{BUCKET}",
            key_path.display()
        );
        std::fs::write(&cfg, yaml).unwrap();
    };
    write(&pem);
    assert!(load_file(&cfg).is_ok());
    write(&dir.join("missing.pem"));
    let err = load_file(&cfg).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].path, "jwt.public_key_path");
    let err = load_file(&dir.join("nope.yaml")).unwrap_err();
    assert!(err.to_string().starts_with("cannot read config file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_public_admin_listener_needs_a_token() {
    let open = parse(&format!("admin: {{listen: '0.0.0.0:9090'}}\n{BUCKET}"));
    let errs = open.expect_err("no token on 0.0.0.0");
    assert!(errs.to_string().contains("admin.token"), "{errs}");
    assert!(parse(&format!(
        "admin: {{listen: '0.0.0.0:9090', token: t}}\n{BUCKET}"
    ))
    .is_ok());
    assert!(parse(&format!("admin: {{listen: '[::1]:9090'}}\n{BUCKET}")).is_ok());
}

#[test]
fn rate_limits_and_replicas_parse_and_name_every_bad_key() {
    let c = parse(&format!(
        "server: {{rate_limit: {{per_ip_rps: 20, global_rps: 1000}}}}\n{BUCKET}    rate_limit: {{rps: 5}}\n"
    ))
    .unwrap();
    assert_eq!(
        c.server.rate_limit,
        RateLimitConfig {
            global_rps: 1000,
            per_ip_rps: 20,
            per_user_rps: 0
        }
    );
    assert_eq!(c.buckets[0].rate_limit.rps, 5);
    assert_eq!(parse(BUCKET).unwrap().server.rate_limit.per_ip_rps, 0);

    let with = |replicas: &str| {
        BUCKET.replace(
            "secret_key: SK}",
            &format!("secret_key: SK, replicas: [{replicas}]}}"),
        )
    };
    let c = parse(&with(
        "{name: b2, priority: 2, bucket: two, region: eu-west-1, endpoint: 'http://127.0.0.1:7482', access_key: A2, secret_key: S2}, \
         {name: b1, priority: 1, bucket: one, region: eu-west-1, endpoint: 'http://127.0.0.1:7481', access_key: A1, secret_key: S1}",
    ))
    .unwrap();
    let r = &c.buckets[0].s3.replicas;
    assert_eq!(
        r.iter()
            .map(|r| (r.name.as_str(), r.priority, r.s3.bucket.as_str()))
            .collect::<Vec<_>>(),
        [("b1", 1, "one"), ("b2", 2, "two")],
        "sorted by priority"
    );
    assert_eq!(r[0].s3.endpoint.port, 7481);
    assert_eq!(r[0].s3.addressing, Addressing::Path);

    let errs = errors(&with(
        "{name: x, priority: 1, bucket: o, region: r, access_key: A, secret_key: S, retry: {max_attempts: 2}}, \
         {name: x, priority: 1, bucket: o, region: r, access_key: A, secret_key: S, colour: red}, \
         {name: 'a b', bucket: o, region: r, secret_key: S}",
    ));
    for want in [
        "buckets[0].s3.replicas[0].retry",
        "buckets[0].s3.replicas[1].colour",
        "buckets[0].s3.replicas[2].name",
        "buckets[0].s3.replicas[2].priority",
        "buckets[0].s3.replicas[2].access_key",
    ] {
        assert!(has(&errs, want), "{want} missing from {errs:?}");
    }
    // Duplicates (checked once every replica decodes).
    let errs = errors(&with(
        "{name: x, priority: 1, bucket: o, region: r, access_key: A, secret_key: S}, \
         {name: x, priority: 1, bucket: o, region: r, access_key: A, secret_key: S}",
    ));
    assert!(has(&errs, "buckets[0].s3.replicas[1].priority"), "{errs:?}");
    assert!(has(&errs, "buckets[0].s3.replicas[1].name"), "{errs:?}");
}
