//! The schema of DESIGN section 6: one [`Decode`] impl per config struct, listing each key
//! once with its default, followed by the checks local to that struct (positive timeouts,
//! JWT key sources, claim rule shapes, endpoint resolution, prefix normalisation).
//!
//! Not on the hot path: runs once per config load. Defaults live here and only here;
//! `Default` impls in `mod.rs` decode an empty mapping through these same functions.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_yaml::Value;

use super::decode::{index, keyword, Decode, Decoder, Fields};
use super::endpoint::{aws_endpoint, check_jwks_url, parse_endpoint};
use super::validate;
use super::*;

/// Decodes and validates the whole file; `None` when any error was recorded in `d`.
pub(super) fn decode_config(root: &Value, d: &mut Decoder) -> Option<Config> {
    let mut f = Fields::open(root, "", d)?;
    let server = f.or_section::<ServerConfig>(d, "server");
    let admin = f.or_section::<AdminConfig>(d, "admin");
    let logging = f.or_section::<LoggingConfig>(d, "logging");
    let jwt_present = f.has_value("jwt");
    let jwt = f.opt::<JwtConfig>(d, "jwt");
    let cache = f.or_section::<CacheConfig>(d, "cache");
    let buckets_path = f.key_path("buckets");
    let buckets: Option<Vec<Option<BucketConfig>>> = match f.raw("buckets") {
        Some(Value::Sequence(seq)) if !seq.is_empty() => {
            let decoded = seq
                .iter()
                .enumerate()
                .map(|(i, b)| d.decode::<BucketConfig>(b, &index(&buckets_path, i)))
                .collect();
            validate::buckets(seq, jwt_present, &buckets_path, d);
            Some(decoded)
        }
        Some(Value::Sequence(_)) => {
            d.error(&buckets_path, "at least one bucket is required");
            None
        }
        None | Some(Value::Null) => {
            d.error(&buckets_path, "required (at least one bucket)");
            None
        }
        Some(other) => {
            let got = d.got(&buckets_path, other);
            d.error(
                &buckets_path,
                format!("expected a list of buckets, got {got}"),
            );
            None
        }
    };
    f.finish(d);
    if let (Some(server), Some(admin)) = (&server, &admin) {
        validate::listeners(server, admin, d);
    }

    Some(Config {
        server: server?,
        admin: admin?,
        logging: logging?,
        jwt: jwt?,
        cache: cache?,
        buckets: buckets?.into_iter().collect::<Option<Vec<_>>>()?,
    })
}

/// The defaults of a section: its decoder run on an empty mapping.
pub(super) fn section_defaults<T: Decode>() -> T {
    let mut d = Decoder::new(Default::default());
    match T::decode(&Value::Null, "", &mut d) {
        Some(t) => t,
        // Defaults are constants checked by tests; reaching this is a bug in this file.
        None => panic!("config defaults do not validate: {:?}", d.into_errors()),
    }
}

impl Decode for ServerConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let listen = f.or(
            d,
            "listen",
            std::net::SocketAddr::from(([0, 0, 0, 0], 8080)),
        );
        let shards = f.or(d, "shards", Shards::Auto);
        let cpu_affinity = f.or(d, "cpu_affinity", CpuAffinity::Auto);
        let entries_path = f.key_path("io_uring_entries");
        let io_uring_entries = f.or::<u32>(d, "io_uring_entries", 1024).and_then(|n| {
            if (256..=32768).contains(&n) && n.is_power_of_two() {
                Some(n)
            } else {
                d.error(
                    &entries_path,
                    format!("must be a power of two from 256 to 32768, got {n}"),
                );
                None
            }
        });
        let keepalive_timeout_ms = f.pos(d, "keepalive_timeout_ms", 60_000u64);
        let request_header_timeout_ms = f.pos(d, "request_header_timeout_ms", 10_000u64);
        let send_timeout_ms = f.pos(d, "send_timeout_ms", 60_000u64);
        let shutdown_grace_ms = f.or(d, "shutdown_grace_ms", 30_000u64);
        let max_connections_per_shard = f.pos(d, "max_connections_per_shard", 65_536usize);
        let limits = f.or_section::<LimitsConfig>(d, "limits");
        let trusted_proxies = f.or(d, "trusted_proxies", Vec::<ipnet::IpNet>::new());
        let max_concurrent_requests = f.or(d, "max_concurrent_requests", 0u64);
        let ip_allow = f.or(d, "ip_allow", Vec::<ipnet::IpNet>::new());
        let ip_block = f.or(d, "ip_block", Vec::<ipnet::IpNet>::new());
        let rate_limit = f.or_section::<RateLimitConfig>(d, "rate_limit");
        f.finish(d);
        Some(ServerConfig {
            listen: listen?,
            shards: shards?,
            cpu_affinity: cpu_affinity?,
            io_uring_entries: io_uring_entries?,
            keepalive_timeout_ms: keepalive_timeout_ms?,
            request_header_timeout_ms: request_header_timeout_ms?,
            send_timeout_ms: send_timeout_ms?,
            shutdown_grace_ms: shutdown_grace_ms?,
            max_connections_per_shard: max_connections_per_shard?,
            limits: limits?,
            trusted_proxies: trusted_proxies?,
            max_concurrent_requests: max_concurrent_requests?,
            ip_allow: ip_allow?,
            ip_block: ip_block?,
            rate_limit: rate_limit?,
        })
    }
}

impl Decode for RateLimitConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let global_rps = f.or(d, "global_rps", 0u64);
        let per_ip_rps = f.or(d, "per_ip_rps", 0u64);
        let per_user_rps = f.or(d, "per_user_rps", 0u64);
        f.finish(d);
        Some(RateLimitConfig {
            global_rps: global_rps?,
            per_ip_rps: per_ip_rps?,
            per_user_rps: per_user_rps?,
        })
    }
}

impl Decode for BucketRateLimitConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let rps = f.or(d, "rps", 0u64);
        f.finish(d);
        Some(BucketRateLimitConfig { rps: rps? })
    }
}

impl Decode for Shards {
    /// `auto` or an integer >= 1 (number or numeric string).
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        if let Value::String(s) = v {
            if s.trim().eq_ignore_ascii_case("auto") {
                return Some(Shards::Auto);
            }
        }
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n.and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n >= 1 => Some(Shards::Count(n)),
            _ => {
                let got = d.got(path, v);
                d.error(
                    path,
                    format!("expected auto or a positive integer, got {got}"),
                );
                None
            }
        }
    }
}

impl Decode for CpuAffinity {
    /// `auto`, `none`, or a non-empty list of distinct CPU ids.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        match v {
            Value::String(s) if s.trim().eq_ignore_ascii_case("auto") => Some(CpuAffinity::Auto),
            Value::String(s) if s.trim().eq_ignore_ascii_case("none") => Some(CpuAffinity::None),
            Value::Sequence(seq) if seq.is_empty() => {
                d.error(path, "must list at least one CPU id (or use auto / none)");
                None
            }
            Value::Sequence(_) => {
                let cpus: Vec<usize> = d.decode(v, path)?;
                let mut seen = HashSet::new();
                let mut ok = true;
                for (i, cpu) in cpus.iter().enumerate() {
                    if !seen.insert(*cpu) {
                        d.error(&index(path, i), format!("CPU {cpu} is listed twice"));
                        ok = false;
                    }
                }
                ok.then_some(CpuAffinity::List(cpus))
            }
            other => {
                let got = d.got(path, other);
                d.error(
                    path,
                    format!("expected auto, none or a list of CPU ids, got {got}"),
                );
                None
            }
        }
    }
}

impl Decode for LimitsConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let max_uri_bytes = f.pos(d, "max_uri_bytes", 8192usize);
        let max_header_bytes = f.pos(d, "max_header_bytes", 65_536usize);
        let max_headers = f.pos(d, "max_headers", 100usize);
        let max_body_bytes = f.or(d, "max_body_bytes", 0u64);
        f.finish(d);
        Some(LimitsConfig {
            max_uri_bytes: max_uri_bytes?,
            max_header_bytes: max_header_bytes?,
            max_headers: max_headers?,
            max_body_bytes: max_body_bytes?,
        })
    }
}

impl Decode for RetryConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let max_attempts = f.pos(d, "max_attempts", 3u32);
        let base_backoff_ms = f.or(d, "base_backoff_ms", 20u64);
        let max_backoff_ms = f.or(d, "max_backoff_ms", 500u64);
        f.finish(d);
        Some(RetryConfig {
            max_attempts: max_attempts?,
            base_backoff_ms: base_backoff_ms?,
            max_backoff_ms: max_backoff_ms?,
        })
    }
}

impl Decode for BreakerConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let failure_threshold = f.pos(d, "failure_threshold", 5u32);
        let open_ms = f.pos(d, "open_ms", 10_000u64);
        f.finish(d);
        Some(BreakerConfig {
            failure_threshold: failure_threshold?,
            open_ms: open_ms?,
        })
    }
}

impl Decode for AdminConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let listen = f.or(
            d,
            "listen",
            std::net::SocketAddr::from(([127, 0, 0, 1], 9090)),
        );
        let token = f.opt::<Secret>(d, "token");
        f.finish(d);
        Some(AdminConfig {
            listen: listen?,
            token: token?,
        })
    }
}

impl Decode for LogLevel {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        keyword(
            v,
            path,
            d,
            &[
                ("trace", LogLevel::Trace),
                ("debug", LogLevel::Debug),
                ("info", LogLevel::Info),
                ("warn", LogLevel::Warn),
                ("error", LogLevel::Error),
            ],
        )
    }
}

impl Decode for LogFormat {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        keyword(
            v,
            path,
            d,
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        )
    }
}

impl Decode for LoggingConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let level = f.or(d, "level", LogLevel::Info);
        let format = f.or(d, "format", LogFormat::Json);
        let access_log = f.or(d, "access_log", true);
        f.finish(d);
        Some(LoggingConfig {
            level: level?,
            format: format?,
            access_log: access_log?,
        })
    }
}

impl Decode for JwtAlgorithm {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let choices = JwtAlgorithm::ALL.map(|a| (a.as_str(), a));
        keyword(v, path, d, &choices)
    }
}

impl Decode for JwtConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let algorithms = f.or(d, "algorithms", vec![JwtAlgorithm::HS256]);
        let secret = f.opt::<Secret>(d, "secret");
        let public_key_path = f.opt::<PathBuf>(d, "public_key_path");
        let jwks_path = f.key_path("jwks_url");
        let jwks_url = f.opt::<String>(d, "jwks_url").and_then(|url| match &url {
            Some(u) => match check_jwks_url(u) {
                Ok(()) => Some(url),
                Err(e) => {
                    d.error(&jwks_path, e);
                    None
                }
            },
            None => Some(None),
        });
        let jwks_refresh_seconds = f.pos(d, "jwks_refresh_seconds", 3600u64);
        let keys = f.or(d, "keys", Vec::<JwtKeyConfig>::new());
        let issuer = f.opt::<String>(d, "issuer");
        let audience = f.opt::<String>(d, "audience");
        let leeway_seconds = f.or(d, "leeway_seconds", 30u64);
        let token_sources = f.or(d, "token_sources", vec![TokenSource::Bearer]);
        let claims = f.or(d, "claims", Vec::<ClaimRule>::new());
        f.finish(d);
        let jwt = JwtConfig {
            algorithms: algorithms?,
            secret: secret?,
            public_key_path: public_key_path?,
            jwks_url: jwks_url?,
            jwks_refresh_seconds: jwks_refresh_seconds?,
            keys: keys?,
            issuer: issuer?,
            audience: audience?,
            leeway_seconds: leeway_seconds?,
            token_sources: token_sources?,
            claims: claims?,
        };
        let before = d.error_count();
        check_jwt(&jwt, path, d);
        (d.error_count() == before).then_some(jwt)
    }
}

/// Checks that tie a JWT section's keys to its algorithms.
fn check_jwt(jwt: &JwtConfig, path: &str, d: &mut Decoder) {
    let at = |key: &str| super::decode::child(path, key);
    if jwt.algorithms.is_empty() {
        d.error(&at("algorithms"), "must list at least one algorithm");
    }
    if jwt.token_sources.is_empty() {
        d.error(&at("token_sources"), "must list at least one token source");
    }
    let has_source = jwt.secret.is_some()
        || jwt.public_key_path.is_some()
        || jwt.jwks_url.is_some()
        || !jwt.keys.is_empty();
    if !has_source {
        d.error(
            path,
            "needs at least one key source: secret, public_key_path, jwks_url or keys",
        );
        return;
    }
    let hmac_key = jwt.secret.is_some() || jwt.keys.iter().any(|k| k.algorithm.is_hmac());
    let public_key = jwt.public_key_path.is_some()
        || jwt.jwks_url.is_some()
        || jwt.keys.iter().any(|k| !k.algorithm.is_hmac());
    for alg in &jwt.algorithms {
        if alg.is_hmac() && !hmac_key {
            d.error(
                &at("algorithms"),
                format!(
                    "{} needs a secret (jwt secret, or a keys entry with an HS algorithm)",
                    alg.as_str()
                ),
            );
        } else if !alg.is_hmac() && !public_key {
            d.error(
                &at("algorithms"),
                format!(
                    "{} needs a public key (public_key_path, jwks_url, or a keys entry)",
                    alg.as_str()
                ),
            );
        }
    }
    if jwt.secret.is_some() && !jwt.algorithms.iter().any(|a| a.is_hmac()) {
        d.error(&at("secret"), "is set but algorithms lists no HS algorithm");
    }
    if jwt.public_key_path.is_some() && jwt.algorithms.iter().all(|a| a.is_hmac()) {
        d.error(
            &at("public_key_path"),
            "is set but algorithms lists only HS algorithms",
        );
    }
    let mut kids = HashSet::new();
    for (i, key) in jwt.keys.iter().enumerate() {
        let key_path = index(&at("keys"), i);
        if !kids.insert(key.kid.as_str()) {
            d.error(
                &super::decode::child(&key_path, "kid"),
                format!("duplicate kid {:?}", key.kid),
            );
        }
        if !jwt.algorithms.contains(&key.algorithm) {
            d.error(
                &super::decode::child(&key_path, "algorithm"),
                format!("{} is not listed in algorithms", key.algorithm.as_str()),
            );
        }
    }
}

impl Decode for JwtKeyConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let kid = f.req::<String>(d, "kid");
        let algorithm = f.req::<JwtAlgorithm>(d, "algorithm");
        let secret = f.opt::<Secret>(d, "secret");
        let public_key_path = f.opt::<PathBuf>(d, "public_key_path");
        f.finish(d);
        let key = JwtKeyConfig {
            kid: kid?,
            algorithm: algorithm?,
            secret: secret?,
            public_key_path: public_key_path?,
        };
        let at = |k: &str| super::decode::child(path, k);
        let ok = match (key.algorithm.is_hmac(), &key.secret, &key.public_key_path) {
            (true, Some(_), None) | (false, None, Some(_)) => true,
            (true, None, _) => {
                d.error(
                    &at("secret"),
                    format!("required for {}", key.algorithm.as_str()),
                );
                false
            }
            (true, Some(_), Some(_)) => {
                d.error(
                    &at("public_key_path"),
                    "not used by HS algorithms; remove it",
                );
                false
            }
            (false, _, None) => {
                d.error(
                    &at("public_key_path"),
                    format!("required for {}", key.algorithm.as_str()),
                );
                false
            }
            (false, Some(_), Some(_)) => {
                d.error(
                    &at("secret"),
                    format!("not used by {}; remove it", key.algorithm.as_str()),
                );
                false
            }
        };
        ok.then_some(key)
    }
}

impl Decode for TokenSource {
    /// `{type: bearer}`, `{type: query, name}`, `{type: header, name}`.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        #[derive(Clone, Copy)]
        enum Kind {
            Bearer,
            Query,
            Header,
        }
        let mut f = Fields::open(v, path, d)?;
        let kind = f.req_with(d, "type", |v, p, d| {
            keyword(
                v,
                p,
                d,
                &[
                    ("bearer", Kind::Bearer),
                    ("query", Kind::Query),
                    ("header", Kind::Header),
                ],
            )
        });
        // `name` is only a known key for query and header sources.
        let source = match kind {
            Some(Kind::Bearer) => Some(TokenSource::Bearer),
            Some(Kind::Query) => {
                let name_path = f.key_path("name");
                f.req::<String>(d, "name").and_then(|name| {
                    if name.contains(['&', '=', '#', '?', ' ']) {
                        d.error(&name_path, "must not contain '&', '=', '#', '?' or spaces");
                        None
                    } else {
                        Some(TokenSource::Query { name })
                    }
                })
            }
            Some(Kind::Header) => {
                let name_path = f.key_path("name");
                f.req::<String>(d, "name").and_then(|name| {
                    if is_field_name(&name) {
                        Some(TokenSource::Header { name })
                    } else {
                        d.error(
                            &name_path,
                            "must be an HTTP field name (RFC 9110 section 5.1)",
                        );
                        None
                    }
                })
            }
            None => {
                f.raw("name");
                None
            }
        };
        f.finish(d);
        source
    }
}

/// RFC 9110 section 5.6.2 `token` characters.
fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Decode for ClaimOperator {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        keyword(
            v,
            path,
            d,
            &[
                ("equals", ClaimOperator::Equals),
                ("not_equals", ClaimOperator::NotEquals),
                ("in", ClaimOperator::In),
                ("contains", ClaimOperator::Contains),
                ("exists", ClaimOperator::Exists),
            ],
        )
    }
}

impl Decode for ClaimRule {
    /// `{claim, operator, value}`; `value` is any YAML, kept as JSON.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let claim_path = f.key_path("claim");
        let claim = f.req::<String>(d, "claim").and_then(|c| {
            if c.split('.').any(|seg| seg.is_empty()) {
                d.error(&claim_path, "empty segment in dotted claim path");
                None
            } else {
                Some(c)
            }
        });
        let operator = f.req::<ClaimOperator>(d, "operator");
        let value_path = f.key_path("value");
        let value = match f.raw("value") {
            _ if d.failed_at_or_under(&value_path) => None,
            None | Some(Value::Null) => Some(None),
            Some(v) => match serde_json::to_value(v) {
                Ok(j) => Some(Some(j)),
                Err(e) => {
                    d.error(&value_path, format!("not representable as JSON: {e}"));
                    None
                }
            },
        };
        f.finish(d);
        let (claim, operator, value) = (claim?, operator?, value?);
        let problem = match (operator, &value) {
            (ClaimOperator::Exists, Some(_)) => Some("exists takes no value"),
            (ClaimOperator::In, Some(serde_json::Value::Array(_))) => None,
            (ClaimOperator::In, _) => Some("in needs a list value"),
            (ClaimOperator::Exists, None) => None,
            (_, None) => Some("required for this operator"),
            (_, Some(_)) => None,
        };
        if let Some(p) = problem {
            d.error(&value_path, p);
            return None;
        }
        Some(ClaimRule {
            claim,
            operator,
            value,
        })
    }
}

impl Decode for CacheConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let memory = f.or_section::<MemoryCacheConfig>(d, "memory");
        let disk = f.or_section::<DiskCacheConfig>(d, "disk");
        let redis = f.or_section::<RedisCacheConfig>(d, "redis");
        f.finish(d);
        Some(CacheConfig {
            memory: memory?,
            disk: disk?,
            redis: redis?,
        })
    }
}

/// `cache.memory.l1_percent` when absent.
pub const DEFAULT_L1_PERCENT: u64 = 5;
/// Largest `cache.memory.l1_percent`: the L1 holds copies, so most of a core's share must stay
/// its owner partition (DESIGN section 2, "a few percent").
pub const MAX_L1_PERCENT: u64 = 25;

impl Decode for MemoryCacheConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let max_cache_size_mb = f.or(d, "max_cache_size_mb", 1024u64);
        let item_path = f.key_path("max_item_size_mb");
        let max_item_size_mb = f.or(d, "max_item_size_mb", 10u64);
        let default_ttl_seconds = f.or(d, "default_ttl_seconds", 3600u64);
        let l1_path = f.key_path("l1_percent");
        let l1_percent = f.or(d, "l1_percent", DEFAULT_L1_PERCENT);
        f.finish(d);
        let m = MemoryCacheConfig {
            max_cache_size_mb: max_cache_size_mb?,
            max_item_size_mb: max_item_size_mb?,
            default_ttl_seconds: default_ttl_seconds?,
            l1_percent: l1_percent?,
        };
        if m.l1_percent > MAX_L1_PERCENT {
            d.error(
                &l1_path,
                format!(
                    "must be at most {MAX_L1_PERCENT} (percent of each core's memory share), got {}",
                    m.l1_percent
                ),
            );
            return None;
        }
        if m.max_cache_size_mb > 0 && m.max_item_size_mb > m.max_cache_size_mb {
            d.error(
                &item_path,
                format!(
                    "must not exceed max_cache_size_mb ({})",
                    m.max_cache_size_mb
                ),
            );
            return None;
        }
        Some(m)
    }
}

impl Decode for DiskCacheConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let enabled = f.or(d, "enabled", false);
        let cache_dir = f.or(d, "cache_dir", PathBuf::from("/var/cache/yatagarasu"));
        let max_disk_cache_size_mb = f.pos(d, "max_disk_cache_size_mb", 10_240u64);
        let max_item_size_mb = f.pos(d, "max_item_size_mb", 1024u64);
        f.finish(d);
        Some(DiskCacheConfig {
            enabled: enabled?,
            cache_dir: cache_dir?,
            max_disk_cache_size_mb: max_disk_cache_size_mb?,
            max_item_size_mb: max_item_size_mb?,
        })
    }
}

impl Decode for RedisCacheConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let enabled = f.or(d, "enabled", false);
        let url_path = f.key_path("url");
        let url = f
            .or(d, "url", Secret::new("redis://127.0.0.1:6379/0"))
            .and_then(|url| {
                let u = url.expose();
                let ok = ["redis://", "rediss://"]
                    .iter()
                    .any(|p| u.len() > p.len() && u[..p.len()].eq_ignore_ascii_case(p));
                if ok {
                    Some(url)
                } else {
                    d.error(
                        &url_path,
                        "expected redis://[user:password@]host:port/db or rediss://... (value not shown: may hold a password)",
                    );
                    None
                }
            });
        let key_prefix = f.or(d, "key_prefix", "yatagarasu:".to_string());
        let ttl_seconds = f.or(d, "ttl_seconds", 3600u64);
        let timeout_ms = f.pos(d, "timeout_ms", 50u64);
        let nodes_path = f.key_path("cluster_nodes");
        let cluster_nodes = f
            .or(d, "cluster_nodes", Vec::<String>::new())
            .and_then(|nodes| {
                let mut ok = true;
                for (i, n) in nodes.iter().enumerate() {
                    let port = n.rsplit_once(':').and_then(|(h, p)| {
                        (!h.is_empty()).then_some(())?;
                        p.parse::<u16>().ok().filter(|p| *p > 0)
                    });
                    if port.is_none() {
                        d.error(&index(&nodes_path, i), format!("{n:?} is not host:port"));
                        ok = false;
                    }
                }
                ok.then_some(nodes)
            });
        let max_item_size_mb = f.pos(d, "max_item_size_mb", 4u64);
        let purge_channel = f.or(d, "purge_channel", "yatagarasu:purge".to_string());
        f.finish(d);
        Some(RedisCacheConfig {
            enabled: enabled?,
            url: url?,
            key_prefix: key_prefix?,
            ttl_seconds: ttl_seconds?,
            timeout_ms: timeout_ms?,
            cluster_nodes: cluster_nodes?,
            max_item_size_mb: max_item_size_mb?,
            purge_channel: purge_channel?,
        })
    }
}

impl Decode for BucketConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let name_path = f.key_path("name");
        let name = f.req::<String>(d, "name").and_then(|n| {
            let ok = n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if ok {
                Some(n)
            } else {
                d.error(
                    &name_path,
                    "may contain only letters, digits, '-', '_' and '.'",
                );
                None
            }
        });
        let prefix_path = f.key_path("path_prefix");
        let path_prefix =
            f.req::<String>(d, "path_prefix")
                .and_then(|p| match normalize_prefix(&p) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        d.error(&prefix_path, e);
                        None
                    }
                });
        let s3 = f.req::<S3Config>(d, "s3");
        let auth = f.or_section::<BucketAuthConfig>(d, "auth");
        let cache = f.or_section::<BucketCacheConfig>(d, "cache");
        let cors = f.opt::<CorsConfig>(d, "cors");
        let ip_allow = f.or(d, "ip_allow", Vec::<ipnet::IpNet>::new());
        let ip_block = f.or(d, "ip_block", Vec::<ipnet::IpNet>::new());
        let rate_limit = f.or_section::<BucketRateLimitConfig>(d, "rate_limit");
        f.finish(d);
        Some(BucketConfig {
            name: name?,
            path_prefix: path_prefix?,
            s3: s3?,
            auth: auth?,
            cache: cache?,
            cors: cors?,
            ip_allow: ip_allow?,
            ip_block: ip_block?,
            rate_limit: rate_limit?,
        })
    }
}

/// Normalises a bucket `path_prefix`: must start with `/`; a trailing `/` is dropped (except
/// for `/` itself); `//`, `.` and `..` segments and `?`, `#`, whitespace or control
/// characters are errors.
pub(super) fn normalize_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if p.contains("//") {
        return Err("must not contain '//'".into());
    }
    if p.chars()
        .any(|c| c == '?' || c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err("must not contain '?', '#', whitespace or control characters".into());
    }
    if p.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("must not contain '.' or '..' segments".into());
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

impl Decode for Addressing {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        keyword(
            v,
            path,
            d,
            &[("path", Addressing::Path), ("virtual", Addressing::Virtual)],
        )
    }
}

impl Decode for S3Config {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let bucket_path = f.key_path("bucket");
        let bucket = f.req::<String>(d, "bucket").and_then(|b| {
            if b.contains('/') || b.chars().any(|c| c.is_whitespace() || c.is_control()) {
                d.error(
                    &bucket_path,
                    "must not contain '/', whitespace or control characters",
                );
                None
            } else {
                Some(b)
            }
        });
        let region_path = f.key_path("region");
        let region = f.req::<String>(d, "region").and_then(|r| {
            if r.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                Some(r)
            } else {
                d.error(
                    &region_path,
                    "may contain only letters, digits, '-', '_' and '.'",
                );
                None
            }
        });
        let endpoint_path = f.key_path("endpoint");
        let endpoint = f.opt::<String>(d, "endpoint").and_then(|e| match e {
            None => Some(None),
            Some(url) => match parse_endpoint(&url) {
                Ok(ep) => Some(Some(ep)),
                Err(msg) => {
                    d.error(&endpoint_path, msg);
                    None
                }
            },
        });
        let addressing_path = f.key_path("addressing");
        let addressing = f.opt::<Addressing>(d, "addressing");
        let access_key = f.req::<Secret>(d, "access_key");
        let secret_key = f.req::<Secret>(d, "secret_key");
        let session_token = f.opt::<Secret>(d, "session_token");
        let connect_timeout_ms = f.pos(d, "connect_timeout_ms", 2000u64);
        let first_byte_timeout_ms = f.pos(d, "first_byte_timeout_ms", 10_000u64);
        let ca_path = f.key_path("tls_ca_file");
        let tls_ca_file = f.opt::<PathBuf>(d, "tls_ca_file");
        let allow_version_id = f.or(d, "allow_version_id", false);
        let retry = f.or_section::<RetryConfig>(d, "retry");
        let circuit_breaker = f.or_section::<BreakerConfig>(d, "circuit_breaker");
        let replicas_path = f.key_path("replicas");
        let replicas = f.or(d, "replicas", Vec::<ReplicaConfig>::new());
        f.finish(d);
        let replicas = replicas.and_then(|mut list| {
            let mut ok = true;
            for (i, r) in list.iter().enumerate() {
                if list[..i].iter().any(|o| o.priority == r.priority) {
                    let p = index(&replicas_path, i) + ".priority";
                    d.error(&p, format!("{} is used by another replica", r.priority));
                    ok = false;
                }
                if list[..i].iter().any(|o| o.name == r.name) {
                    let p = index(&replicas_path, i) + ".name";
                    d.error(&p, format!("{:?} is used by another replica", r.name));
                    ok = false;
                }
            }
            list.sort_by_key(|r| r.priority);
            ok.then_some(list)
        });

        let (bucket, region, endpoint, addressing) = (bucket?, region?, endpoint?, addressing?);
        let addressing = addressing.unwrap_or(if endpoint.is_some() {
            Addressing::Path
        } else {
            Addressing::Virtual
        });
        let endpoint = endpoint.unwrap_or_else(|| aws_endpoint(&region));
        let mut ok = true;
        if addressing == Addressing::Virtual {
            if endpoint.host_is_ip() {
                d.error(
                    &addressing_path,
                    "virtual needs a DNS host name endpoint, not an IP address; use path",
                );
                ok = false;
            } else if !is_dns_bucket(&bucket) {
                d.error(
                    &addressing_path,
                    "virtual needs a DNS-compatible bucket name (a-z, 0-9, '-', '.'); use path",
                );
                ok = false;
            }
        }
        let tls_ca_file = tls_ca_file?;
        if tls_ca_file.is_some() && endpoint.scheme == Scheme::Http {
            d.error(&ca_path, "set but the endpoint is http (no TLS)");
            ok = false;
        }
        let s3 = S3Config {
            bucket,
            region,
            endpoint,
            addressing,
            access_key: access_key?,
            secret_key: secret_key?,
            session_token: session_token?,
            connect_timeout_ms: connect_timeout_ms?,
            first_byte_timeout_ms: first_byte_timeout_ms?,
            tls_ca_file,
            allow_version_id: allow_version_id?,
            retry: retry?,
            circuit_breaker: circuit_breaker?,
            replicas: replicas?,
        };
        ok.then_some(s3)
    }
}

impl Decode for ReplicaConfig {
    /// `name` and `priority`, then the rest of the mapping as a `buckets[].s3` without the keys
    /// a replica takes from the primary (`ReplicaConfig` doc).
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let name_path = f.key_path("name");
        let name = f.req::<String>(d, "name").and_then(|n| {
            if n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                Some(n)
            } else {
                d.error(
                    &name_path,
                    "may contain only letters, digits, '-', '_' and '.'",
                );
                None
            }
        });
        let priority = f.pos(d, "priority", 0u32);
        let priority = match (f.has_value("priority"), priority) {
            (false, _) => {
                d.error(&f.key_path("priority"), "required (>= 1; the primary is 0)");
                None
            }
            (true, p) => p,
        };
        let mut rest = match v {
            Value::Mapping(m) => m.clone(),
            _ => return None,
        };
        let mut ok = true;
        for key in ["retry", "circuit_breaker", "allow_version_id", "replicas"] {
            if rest.remove(key).is_some() {
                d.error(
                    &f.key_path(key),
                    "not allowed in a replica (it takes the primary's)",
                );
                ok = false;
            }
        }
        rest.remove("name");
        rest.remove("priority");
        let s3 = d.decode::<S3Config>(&Value::Mapping(rest), path);
        // The remaining keys were checked by the S3Config decoder.
        drop(f);
        let (name, priority, s3) = (name?, priority?, s3?);
        ok.then_some(ReplicaConfig { name, priority, s3 })
    }
}

/// Whether `b` can be the first labels of a host name (virtual-hosted addressing): lowercase
/// letters, digits, `-` and `.`, starting and ending with a letter or digit, no empty label.
/// AWS's own length rule (3-63) is left to S3.
fn is_dns_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    bytes
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && bytes.first().is_some_and(|c| c.is_ascii_alphanumeric())
        && bytes.last().is_some_and(|c| c.is_ascii_alphanumeric())
        && !b.contains("..")
}

impl Decode for BucketAuthConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let enabled = f.or(d, "enabled", false);
        let jwt = f.opt::<JwtConfig>(d, "jwt");
        f.finish(d);
        Some(BucketAuthConfig {
            enabled: enabled?,
            jwt: jwt?,
        })
    }
}

impl Decode for BucketCacheConfig {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let enabled = f.or(d, "enabled", true);
        let ttl_seconds = f.opt::<u64>(d, "ttl_seconds");
        let max_item_size_mb = f.opt::<u64>(d, "max_item_size_mb");
        let stale_if_error_seconds = f.or(d, "stale_if_error_seconds", 0u64);
        f.finish(d);
        Some(BucketCacheConfig {
            enabled: enabled?,
            ttl_seconds: ttl_seconds?,
            max_item_size_mb: max_item_size_mb?,
            stale_if_error_seconds: stale_if_error_seconds?,
        })
    }
}

impl Decode for CorsMethod {
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        keyword(
            v,
            path,
            d,
            &[("GET", CorsMethod::Get), ("HEAD", CorsMethod::Head)],
        )
    }
}

/// Largest `cors.max_age_seconds`: one day (Firefox's cap; Chromium caps at 7200).
const CORS_MAX_AGE_LIMIT: u64 = 86_400;

impl Decode for CorsConfig {
    /// The `cors` block of DESIGN section 6.1; every problem is reported with its key.
    fn decode(v: &Value, path: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::open(v, path, d)?;
        let origins_path = f.key_path("allowed_origins");
        let allowed_origins = f
            .req::<Vec<String>>(d, "allowed_origins")
            .and_then(|list| cors_origins(list, &origins_path, d));
        let methods_path = f.key_path("allowed_methods");
        let allowed_methods = f
            .or(
                d,
                "allowed_methods",
                vec![CorsMethod::Get, CorsMethod::Head],
            )
            .and_then(|m| {
                if m.is_empty() {
                    d.error(&methods_path, "must list at least one method (GET, HEAD)");
                    None
                } else {
                    Some(m)
                }
            });
        let default_allowed = [
            "Range",
            "If-Match",
            "If-None-Match",
            "If-Modified-Since",
            "If-Unmodified-Since",
            "If-Range",
        ];
        let allowed_headers = field_names(
            &mut f,
            d,
            "allowed_headers",
            default_allowed.map(String::from).to_vec(),
        );
        let default_exposed = [
            "ETag",
            "Content-Range",
            "Content-Length",
            "Accept-Ranges",
            "Last-Modified",
        ];
        let expose_headers = field_names(
            &mut f,
            d,
            "expose_headers",
            default_exposed.map(String::from).to_vec(),
        );
        let age_path = f.key_path("max_age_seconds");
        let max_age_seconds = f.or(d, "max_age_seconds", 600u64).and_then(|s| {
            if s <= CORS_MAX_AGE_LIMIT {
                Some(s)
            } else {
                d.error(
                    &age_path,
                    format!("must be at most {CORS_MAX_AGE_LIMIT} (browsers cap it), got {s}"),
                );
                None
            }
        });
        let credentials_path = f.key_path("allow_credentials");
        let allow_credentials = f.or(d, "allow_credentials", false);
        f.finish(d);
        if allow_credentials == Some(true) && allowed_origins == Some(CorsOrigins::Any) {
            d.error(
                &credentials_path,
                "true is not allowed with allowed_origins [\"*\"] (the Fetch standard forbids                  credentials with a wildcard origin); list the origins instead",
            );
            return None;
        }
        Some(CorsConfig {
            allowed_origins: allowed_origins?,
            allowed_methods: allowed_methods?,
            allowed_headers: allowed_headers?,
            expose_headers: expose_headers?,
            max_age_seconds: max_age_seconds?,
            allow_credentials: allow_credentials?,
        })
    }
}

/// A list of HTTP field names at `key` (default `default`); each bad name is reported.
fn field_names(
    f: &mut Fields<'_>,
    d: &mut Decoder,
    key: &'static str,
    default: Vec<String>,
) -> Option<Vec<String>> {
    let path = f.key_path(key);
    let names = f.or(d, key, default)?;
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        if !is_field_name(name) {
            d.error(
                &index(&path, i),
                format!("{name:?} is not an HTTP field name (RFC 9110 section 5.1)"),
            );
            ok = false;
        }
    }
    ok.then_some(names)
}

/// `["*"]`, or a non-empty list of serialized origins (RFC 6454 section 6.2:
/// `scheme://host[:port]`, no path), lower-cased so they compare equal to what browsers send.
fn cors_origins(list: Vec<String>, path: &str, d: &mut Decoder) -> Option<CorsOrigins> {
    if list.is_empty() {
        d.error(path, "must list at least one origin, or [\"*\"] for any");
        return None;
    }
    if list.iter().any(|o| o == "*") {
        if list.len() == 1 {
            return Some(CorsOrigins::Any);
        }
        d.error(path, "\"*\" must be the only entry when present");
        return None;
    }
    let mut ok = true;
    let mut out = Vec::with_capacity(list.len());
    for (i, origin) in list.into_iter().enumerate() {
        match check_origin(&origin) {
            Ok(()) => out.push(origin.to_ascii_lowercase()),
            Err(e) => {
                d.error(&index(path, i), format!("{origin:?}: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(CorsOrigins::List(out))
}

/// Whether `o` is a serialized origin: `scheme://host[:port]`, nothing after it.
fn check_origin(o: &str) -> Result<(), &'static str> {
    let (scheme, rest) = o
        .split_once("://")
        .ok_or("expected an origin such as https://app.example.com")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("expected an origin such as https://app.example.com (bad scheme)");
    }
    if rest.is_empty() {
        return Err("has no host");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or trailing '/': write scheme://host[:port]");
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    if let Some((_, port)) = rest.rsplit_once(':').filter(|_| !rest.ends_with(']')) {
        if port.is_empty() || port.parse::<u16>().is_err() {
            return Err("has a bad port");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_normalisation() {
        assert_eq!(normalize_prefix("/public").unwrap(), "/public");
        assert_eq!(normalize_prefix("/public/").unwrap(), "/public");
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert!(normalize_prefix("public")
            .unwrap_err()
            .contains("start with '/'"));
        assert!(normalize_prefix("/a//b").unwrap_err().contains("//"));
        assert!(normalize_prefix("//").unwrap_err().contains("//"));
        assert!(normalize_prefix("/a/../b").unwrap_err().contains(".."));
        assert!(normalize_prefix("/a/.").unwrap_err().contains(".."));
        assert!(normalize_prefix("/a b").unwrap_err().contains("whitespace"));
        assert!(normalize_prefix("/a?b").unwrap_err().contains("'?'"));
        assert_eq!(normalize_prefix("/a..b").unwrap(), "/a..b");
    }

    #[test]
    fn dns_bucket_names() {
        assert!(is_dns_bucket("my-bucket.logs"));
        assert!(!is_dns_bucket("My_Bucket"));
        assert!(is_dns_bucket("x"));
        assert!(!is_dns_bucket(""));
        assert!(!is_dns_bucket("-ab"));
        assert!(!is_dns_bucket("a..b"));
    }

    #[test]
    fn field_name_chars() {
        assert!(is_field_name("X-Auth-Token"));
        assert!(!is_field_name("X Auth"));
        assert!(!is_field_name(""));
        assert!(!is_field_name("X:Y"));
    }
}
