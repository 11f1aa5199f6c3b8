//! Typed configuration of DESIGN section 6: the YAML file operators write, parsed into
//! [`Config`] with `${VAR}` substitution and validation that reports every error at once.
//!
//! Not on the hot path: this runs at startup, on `--check` and on each reload (SIGHUP), off the
//! cores. Cost: one `serde_yaml::Value` tree plus the typed copy; the reference `config.yaml`
//! (two buckets, every key) takes about 3 ms in a debug build. Cores never parse; they load
//! the published snapshot.
//!
//! Pipeline, one mechanism per step:
//! 1. `serde_yaml` parses the text into a `Value` tree (YAML anchors and `<<` merges resolved).
//! 2. `env` substitutes `${VAR}` / `${VAR:-default}` / `$$` inside string scalars of that tree,
//!    never in the raw text, so a secret holding `#`, `:` or quotes cannot change the YAML
//!    structure. Errors name the variable and the key path.
//! 3. `decode` (the walker) and `schema` (one decoder per struct) turn the tree into the typed
//!    structs. serde's derive stops at the first error, so decoding is a small path-tracking
//!    walker instead: every struct lists its keys once
//!    (required, optional or defaulted), unknown keys, wrong types and missing keys are all
//!    collected with their paths (`buckets[1].s3.region: required`), and numeric / boolean
//!    fields accept a string that parses (`keepalive_timeout_ms: ${KA:-60000}`).
//!    Local semantic checks (a JWT key source exists, HS* has a secret, ...) run per struct.
//! 4. `validate` runs the checks that span sections: unique bucket names and prefixes, the
//!    fail-closed auth rule, admin vs data listener.
//!
//! Secrets are held in [`Secret`], which prints `<redacted>`; no error message contains a
//! secret value, and a value that came from the environment is never echoed in an error.
//! This module logs and prints nothing.

mod decode;
mod endpoint;
mod env;
mod schema;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use endpoint::parse_endpoint;

/// Reads the YAML file at `path`, substitutes `${VAR}` from the process environment
/// (`std::env::var`), decodes and validates it.
///
/// On top of [`parse_str`] this checks that every file the config names (`jwt.public_key_path`,
/// `jwt.keys[].public_key_path`, `s3.tls_ca_file`, also under bucket `auth.jwt`) exists and is a
/// regular file; relative paths are taken relative to the current directory, as written.
///
/// Errors: every problem found, each with its key path; an unreadable file is a single error
/// with an empty path. Blocking (`std::fs`): call from the main thread, never from a core.
// Off the shards: start (main thread) and reload (signal/control thread).
#[allow(clippy::disallowed_methods)]
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )])
    })?;
    let config = parse_str(&text, &|name| std::env::var(name).ok())?;
    let missing = validate::referenced_files(&config);
    if missing.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(missing))
    }
}

/// Parses YAML text into a validated [`Config`], resolving `${VAR}` through `env`
/// (`env(name)` returns the variable's value, `None` when unset). Performs no I/O.
///
/// Substitution rules (applied to string scalars only, never to keys; the result is not
/// re-scanned, so a value from the environment may itself contain `$`):
/// - `${VAR}`: the value of `VAR`; unset is an error naming `VAR` and the key path.
/// - `${VAR:-default}`: `default` when `VAR` is unset or empty (POSIX `:-`); `default` is
///   literal text up to the first `}`.
/// - `$$`: a literal `$` (as in docker compose). A `$` followed by anything else is literal.
///
/// A scalar that becomes the empty string counts as absent for optional keys
/// (`token: ${ADMIN_TOKEN:-}` means no token) and as missing for required keys.
///
/// Errors: all problems found, each with its key path (see [`ConfigError`]).
pub fn parse_str(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut root: serde_yaml::Value = serde_yaml::from_str(yaml)
        .map_err(|e| ConfigErrors(vec![ConfigError::new("", format!("invalid YAML: {e}"))]))?;
    root.apply_merge().map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("invalid YAML merge (<<): {e}"),
        )])
    })?;
    let subst = env::substitute_tree(&mut root, env);
    let mut d = decode::Decoder::new(subst);
    let config = schema::decode_config(&root, &mut d);
    let errors = d.into_errors();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ if !errors.is_empty() => Err(ConfigErrors(errors)),
        _ => Err(ConfigErrors(vec![ConfigError::new(
            "",
            "internal error: config decoding failed without reporting why",
        )])),
    }
}

/// One validation problem: `path` is the key path in the YAML (`buckets[1].s3.region`,
/// `server.limits.max_uri_bytes`; empty for whole-file problems such as a YAML syntax error),
/// `message` says what is wrong. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path: dot-separated keys, `[i]` for list elements; empty for whole-file errors.
    pub path: String,
    /// What is wrong, e.g. `required`, `unknown key`, `scheme must be http or https`.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `path` (see [`ConfigError::path`]).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config, in document order of discovery. `Display` prints one
/// error per line as `path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A credential (S3 keys, JWT secret, admin token, Redis URL). `Debug` and `Display` print
/// `<redacted>`; read the value only where it is used, with [`Secret::expose`]. Deserializes
/// transparently from a string. Deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself. Do not log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole config file. `buckets` is required (at least one); every other section may be
/// omitted and then takes the defaults of DESIGN section 6.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Data-plane listener, shards and HTTP limits.
    pub server: ServerConfig,
    /// Admin listener (`/health`, `/ready`, `/metrics`, `/admin/*`).
    pub admin: AdminConfig,
    /// Log level and format.
    pub logging: LoggingConfig,
    /// Default JWT settings for buckets with `auth.enabled: true` and no `auth.jwt`.
    pub jwt: Option<JwtConfig>,
    /// Memory, disk and Redis cache tiers.
    pub cache: CacheConfig,
    /// Path-prefix to S3 bucket mappings, in file order; names and prefixes are unique.
    pub buckets: Vec<BucketConfig>,
}

/// Restart-only keys compared by [`Config::restart_only_changes`].
pub const RESTART_ONLY_KEYS: [&str; 5] = [
    "server.listen",
    "server.shards",
    "server.cpu_affinity",
    "server.io_uring_entries",
    "admin.listen",
];

/// Keys a reload accepts but that take effect only at the next restart (they size or open
/// per-core state built at startup). Compared by [`Config::startup_only_changes`].
pub const STARTUP_ONLY_KEYS: [&str; 15] = [
    "cache.memory.max_cache_size_mb",
    "cache.memory.l1_percent",
    "cache.disk.enabled",
    "cache.disk.cache_dir",
    "cache.disk.max_disk_cache_size_mb",
    "cache.disk.max_item_size_mb",
    "cache.redis.enabled",
    "cache.redis.url",
    "cache.redis.cluster_nodes",
    "cache.redis.key_prefix",
    "cache.redis.ttl_seconds",
    "cache.redis.timeout_ms",
    "cache.redis.max_item_size_mb",
    "cache.redis.purge_channel",
    "logging.format",
];

impl Config {
    /// Paths of restart-only keys ([`RESTART_ONLY_KEYS`]: listeners, shard count, CPU
    /// affinity, ring size) whose value differs between `self` (running) and `new`. A reload
    /// with a non-empty result must be rejected, naming these paths (DESIGN section 6).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let (a, b) = (&self.server, &new.server);
        let changed = [
            a.listen != b.listen,
            a.shards != b.shards,
            a.cpu_affinity != b.cpu_affinity,
            a.io_uring_entries != b.io_uring_entries,
            self.admin.listen != new.admin.listen,
        ];
        RESTART_ONLY_KEYS
            .iter()
            .zip(changed)
            .filter(|(_, c)| *c)
            .map(|(k, _)| (*k).to_string())
            .collect()
    }

    /// Paths of [`STARTUP_ONLY_KEYS`] whose value differs between `self` and `new`: a reload
    /// may proceed, but these values keep their running setting until restart (worth a
    /// warning in the reload log line).
    pub fn startup_only_changes(&self, new: &Config) -> Vec<String> {
        let (a, b) = (&self.cache, &new.cache);
        let changed = [
            a.memory.max_cache_size_mb != b.memory.max_cache_size_mb,
            a.memory.l1_percent != b.memory.l1_percent,
            a.disk.enabled != b.disk.enabled,
            a.disk.cache_dir != b.disk.cache_dir,
            a.disk.max_disk_cache_size_mb != b.disk.max_disk_cache_size_mb,
            a.disk.max_item_size_mb != b.disk.max_item_size_mb,
            a.redis.enabled != b.redis.enabled,
            a.redis.url != b.redis.url,
            a.redis.cluster_nodes != b.redis.cluster_nodes,
            a.redis.key_prefix != b.redis.key_prefix,
            a.redis.ttl_seconds != b.redis.ttl_seconds,
            a.redis.timeout_ms != b.redis.timeout_ms,
            a.redis.max_item_size_mb != b.redis.max_item_size_mb,
            a.redis.purge_channel != b.redis.purge_channel,
            self.logging.format != new.logging.format,
        ];
        STARTUP_ONLY_KEYS
            .iter()
            .zip(changed)
            .filter(|(_, c)| *c)
            .map(|(k, _)| (*k).to_string())
            .collect()
    }

    /// The JWT settings that apply to `bucket`: `None` when its auth is disabled, else its
    /// own `auth.jwt` or, failing that, the top-level `jwt` (validation guarantees one exists
    /// when auth is enabled).
    pub fn jwt_for<'a>(&'a self, bucket: &'a BucketConfig) -> Option<&'a JwtConfig> {
        if !bucket.auth.enabled {
            return None;
        }
        bucket.auth.jwt.as_ref().or(self.jwt.as_ref())
    }

    /// The bucket with this `name`, if any.
    pub fn bucket(&self, name: &str) -> Option<&BucketConfig> {
        self.buckets.iter().find(|b| b.name == name)
    }
}

/// `server`: the data plane.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Data-plane address; one SO_REUSEPORT socket per shard. Default `0.0.0.0:8080`.
    /// Restart-only.
    pub listen: SocketAddr,
    /// Number of shards (one thread and event loop each). Default auto. Restart-only.
    pub shards: Shards,
    /// Pinning of shards to CPUs. Default auto. Restart-only.
    pub cpu_affinity: CpuAffinity,
    /// io_uring submission queue entries per shard: a power of two in 256..=32768
    /// (monoio's minimum is 256). Default 1024. Restart-only.
    pub io_uring_entries: u32,
    /// Idle time allowed between requests on a keep-alive connection, ms (> 0). Default 60000.
    pub keepalive_timeout_ms: u64,
    /// Time allowed to receive a whole request header block, ms (> 0), counted from the accept
    /// for a connection's first request and from its first byte for later ones; over it the
    /// connection gets 408 and is closed. Default 10000.
    pub request_header_timeout_ms: u64,
    /// Longest a client may accept no byte of a response, ms (> 0): a write that makes no
    /// progress this long closes the connection and releases its upstream connection, pipe and
    /// buffers. Per write, not per response (a slow but steady download is never cut). Default
    /// 60000. Reloadable (new requests).
    pub send_timeout_ms: u64,
    /// Time in-flight requests get to finish after SIGTERM before connections are closed, ms
    /// (0 = close at once). Default 30000.
    pub shutdown_grace_ms: u64,
    /// Open client connections allowed per shard (> 0). Default 65536.
    pub max_connections_per_shard: usize,
    /// Request size limits (DESIGN section 5).
    pub limits: LimitsConfig,
    /// Proxies (CIDR blocks or addresses) whose `X-Forwarded-For` is believed when logging the
    /// client address; empty (default) = the peer address is always the client. Reloadable.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Data-plane requests in flight on the node at once (every shard together, cache hits
    /// included); over it 503 with `Retry-After`. 0 (default) = no limit. Reloadable.
    pub max_concurrent_requests: u64,
    /// Client networks (after `trusted_proxies`) allowed; non-empty = every other client gets
    /// 403. Default empty. Reloadable.
    pub ip_allow: Vec<ipnet::IpNet>,
    /// Client networks refused with 403, unless `ip_allow` also names them. Default empty.
    /// Reloadable.
    pub ip_block: Vec<ipnet::IpNet>,
    /// Node-wide request rates (`crate::ratelimit`); all 0 (default) = off. Reloadable.
    pub rate_limit: RateLimitConfig,
}

/// `server.rate_limit`: token buckets, node-wide whatever the shard count; burst = 2 x rate.
/// Over a limit: 429 with `Retry-After` (RFC 6585 section 4). Each rate is requests per
/// second, 0 = off (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Every data-plane request of the node together.
    pub global_rps: u64,
    /// Per client address (after `trusted_proxies`, IPv4-mapped IPv6 as IPv4); an IPv6
    /// address counts by its /64 (a host may rotate through its whole /64).
    pub per_ip_rps: u64,
    /// Per JWT `sub` claim, on buckets that authenticate (a token without `sub` is not
    /// limited by this rate).
    pub per_user_rps: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        schema::section_defaults()
    }
}

/// `buckets[].rate_limit`: the bucket's own rate, node-wide (all clients together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRateLimitConfig {
    /// Requests per second to this bucket; 0 (default) = off.
    pub rps: u64,
}

impl Default for BucketRateLimitConfig {
    fn default() -> Self {
        schema::section_defaults()
    }
}

/// `server.shards`: `auto` (one per CPU in the process's affinity mask) or a count >= 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// One shard per CPU in the process's affinity mask.
    Auto,
    /// Exactly this many shards (>= 1).
    Count(usize),
}

/// `server.cpu_affinity`: `auto`, `none` or a non-empty list of distinct CPU ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Pin shard i to the i-th CPU of the process's affinity mask.
    Auto,
    /// Do not pin.
    None,
    /// Pin shards to these CPU ids, in order (non-empty, no duplicates).
    List(Vec<usize>),
}

/// `server.limits` (DESIGN section 5 gives the status codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest request target accepted, bytes (> 0); over it: 414. Default 8192.
    pub max_uri_bytes: usize,
    /// Largest request header block, bytes (> 0); over it: 431. Default 65536.
    pub max_header_bytes: usize,
    /// Most header fields in one request (> 0); over it: 431. Default 100.
    pub max_headers: usize,
    /// Largest request body accepted on GET/HEAD, bytes (0 = none); over it: 413. Default 0.
    pub max_body_bytes: u64,
}

/// `admin`: the admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Admin address, bound without SO_REUSEPORT. Default `127.0.0.1:9090`. Restart-only.
    pub listen: SocketAddr,
    /// Bearer token for `/admin/*`; `None` (absent or empty string) = loopback-only admin.
    pub token: Option<Secret>,
}

/// `logging`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// Minimum level logged. Default info.
    pub level: LogLevel,
    /// Line format. Default json.
    pub format: LogFormat,
    /// One access-log line per request. Default true.
    pub access_log: bool,
}

/// `logging.level`: `trace | debug | info | warn | error` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (default).
    Info,
    /// Something degraded.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The lowercase name, as written in the config and understood by `tracing` filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `logging.format`: `json | text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default).
    Json,
    /// Human-readable lines.
    Text,
}

/// JWT verification settings (RFC 7519 tokens, RFC 7517 JWKS), top-level `jwt` or a
/// bucket's `auth.jwt`. At least one key source (`secret`, `public_key_path`, `jwks_url`,
/// `keys`) is present; every algorithm in `algorithms` has a matching key source.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    /// Accepted `alg` header values (non-empty). Default `[HS256]`.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Shared secret for HS* (raw bytes of the string; empty = none).
    pub secret: Option<Secret>,
    /// PEM file with an RSA, EC or Ed25519 public key, for RS*/PS*/ES*/EdDSA.
    pub public_key_path: Option<PathBuf>,
    /// JWKS URL (RFC 7517); https, or http only for localhost / loopback.
    pub jwks_url: Option<String>,
    /// How often the JWKS is refetched, seconds (> 0). Default 3600.
    pub jwks_refresh_seconds: u64,
    /// Keys selected by the token's `kid` header (distinct kids).
    pub keys: Vec<JwtKeyConfig>,
    /// Required `iss` claim, if any.
    pub issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences), if any.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` / `nbf`, seconds. Default 30.
    pub leeway_seconds: u64,
    /// Where the token is looked for, in order (non-empty). Default `[{type: bearer}]`.
    pub token_sources: Vec<TokenSource>,
    /// Claim rules, all of which must hold (else 403). Default none.
    pub claims: Vec<ClaimRule>,
}

/// A JWS `alg` value (RFC 7518 section 3.1, RFC 8037 for EdDSA). Config spelling is the
/// JOSE name, case-insensitive (`HS256`, `EdDSA`).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// All algorithms, in config-documentation order.
    pub const ALL: [JwtAlgorithm; 12] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The JOSE `alg` name (`HS256`, ..., `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// True for the HMAC algorithms (HS*), which verify with a shared secret; the others
    /// verify with a public key.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

/// One entry of `jwt.keys`, chosen by the token's `kid` header: HS* keys carry `secret`,
/// the others `public_key_path` (exactly one of the two).
#[derive(Debug, Clone, PartialEq)]
pub struct JwtKeyConfig {
    /// Key id matched against the token's `kid` header (non-empty, unique in the list).
    pub kid: String,
    /// The only algorithm this key verifies; must be listed in `algorithms`.
    pub algorithm: JwtAlgorithm,
    /// HS* shared secret.
    pub secret: Option<Secret>,
    /// PEM public key file for asymmetric algorithms.
    pub public_key_path: Option<PathBuf>,
}

/// Where a token is read from. YAML: `{type: bearer}` (`Authorization: Bearer <token>`),
/// `{type: query, name: token}`, `{type: header, name: X-Auth-Token}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 section 2.1).
    Bearer,
    /// A query parameter (RFC 6750 section 2.3 style); stripped before signing.
    Query {
        /// Parameter name (non-empty, no `&`, `=`, `#`, `?`).
        name: String,
    },
    /// A request header carrying the bare token.
    Header {
        /// Field name, RFC 9110 section 5.1 token characters.
        name: String,
    },
}

/// One claims rule: `{claim: role, operator: equals, value: admin}`. `claim` may be a dotted
/// path into nested objects (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    /// Claim name or dotted path (non-empty segments).
    pub claim: String,
    /// Comparison.
    pub operator: ClaimOperator,
    /// Operand: absent for `exists`, a JSON array for `in`, present for the others.
    pub value: Option<serde_json::Value>,
}

/// `equals | not_equals | in | contains | exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOperator {
    /// Claim equals the value.
    Equals,
    /// Claim is present and differs from the value.
    NotEquals,
    /// Claim equals one element of the value (a list).
    In,
    /// Claim (a list or string) contains the value.
    Contains,
    /// Claim is present (no value).
    Exists,
}

/// `cache`: the three tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Per-core memory shards.
    pub memory: MemoryCacheConfig,
    /// Per-core io_uring disk shards.
    pub disk: DiskCacheConfig,
    /// Shared Redis tier.
    pub redis: RedisCacheConfig,
}

/// `cache.memory`. Sizes are totals, split evenly across the shards' owner partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCacheConfig {
    /// Total memory cache size, MiB (0 = memory cache off). Default 1024.
    pub max_cache_size_mb: u64,
    /// Largest object cached in memory, MiB (<= max_cache_size_mb). Default 10.
    pub max_item_size_mb: u64,
    /// TTL of cached objects, seconds. Default 3600.
    pub default_ttl_seconds: u64,
    /// Share of each core's memory budget (`max_cache_size_mb / shards`) kept as its L1: hot
    /// copies of objects other cores own, so the most requested objects never cross cores
    /// (DESIGN section 2). Percent, 0..=25, 0 = no L1. Default 5. Startup-only.
    pub l1_percent: u64,
}

/// `cache.disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheConfig {
    /// Disk tier on/off. Default false.
    pub enabled: bool,
    /// Directory holding one subdirectory per shard. Default `/var/cache/yatagarasu`.
    pub cache_dir: PathBuf,
    /// Total disk cache size, MiB (> 0 when enabled). Default 10240.
    pub max_disk_cache_size_mb: u64,
    /// Largest object stored on disk, MiB (> 0). Default 1024.
    pub max_item_size_mb: u64,
}

/// `cache.redis`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisCacheConfig {
    /// Redis tier on/off. Default false.
    pub enabled: bool,
    /// `redis://[user:password@]host:port/db` (or `rediss://`); a [`Secret`] because it may
    /// hold a password. Default `redis://127.0.0.1:6379/0`.
    pub url: Secret,
    /// Prefix of every key written. Default `yatagarasu:`.
    pub key_prefix: String,
    /// TTL of Redis entries, seconds. Default 3600.
    pub ttl_seconds: u64,
    /// Per-command timeout, ms (> 0). Default 50. A request waits on Redis at most this long
    /// in total; a slower answer is a miss.
    pub timeout_ms: u64,
    /// `host:port` of Redis Cluster nodes (seeds of the slot map); non-empty = Cluster mode,
    /// and `url` then only lends its credentials and scheme. Default empty.
    pub cluster_nodes: Vec<String>,
    /// Largest object stored in Redis, MiB (> 0). Default 4.
    pub max_item_size_mb: u64,
    /// Pub/sub channel purges are published on (every node subscribes). Default
    /// `yatagarasu:purge`.
    pub purge_channel: String,
}

/// One entry of `buckets`: a path prefix mapped to an S3 bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketConfig {
    /// Unique name (letters, digits, `-`, `_`, `.`); used in metrics labels and admin URLs.
    pub name: String,
    /// Normalised URL prefix: leading `/`, no trailing `/` unless it is exactly `/`, no `.`,
    /// `..` or empty segments; unique across buckets.
    pub path_prefix: String,
    /// Upstream bucket, endpoint and credentials.
    pub s3: S3Config,
    /// JWT auth for this bucket.
    pub auth: BucketAuthConfig,
    /// Cache overrides for this bucket.
    pub cache: BucketCacheConfig,
    /// Client networks allowed on this bucket (same rules as `server.ip_allow`, applied after
    /// the server's lists). Default empty.
    pub ip_allow: Vec<ipnet::IpNet>,
    /// Client networks refused on this bucket unless its `ip_allow` names them. Default empty.
    pub ip_block: Vec<ipnet::IpNet>,
    /// The bucket's own request rate (`crate::ratelimit`). Default off. Reloadable.
    pub rate_limit: BucketRateLimitConfig,
    /// CORS for pages on other origins; `None` (key absent) = no CORS headers are ever sent.
    pub cors: Option<CorsConfig>,
}

/// `buckets[].s3`.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    /// S3 bucket name (required; DNS-compatible when addressing is virtual).
    pub bucket: String,
    /// SigV4 region, e.g. `us-east-1` (required).
    pub region: String,
    /// Resolved endpoint: as written, or `https://s3.<region>.amazonaws.com:443` if omitted.
    pub endpoint: Endpoint,
    /// Path-style or virtual-hosted-style requests.
    pub addressing: Addressing,
    /// AWS access key id (required).
    pub access_key: Secret,
    /// AWS secret access key (required).
    pub secret_key: Secret,
    /// STS session token, sent as `x-amz-security-token`.
    pub session_token: Option<Secret>,
    /// TCP (+TLS) connect timeout, ms (> 0). Default 2000.
    pub connect_timeout_ms: u64,
    /// Time from request sent to first response byte, ms (> 0). Default 10000.
    pub first_byte_timeout_ms: u64,
    /// PEM CA bundle trusted for this endpoint instead of the system roots (https only).
    pub tls_ca_file: Option<PathBuf>,
    /// Whether a client's `?versionId=` is forwarded (reads of non-current versions, signed
    /// with the bucket's credentials) and made part of the cache key. Default false: a
    /// `versionId` then gets 400, never another version's bytes. Reloadable.
    pub allow_version_id: bool,
    /// Retries of a failed GET/HEAD before its response head reached the client. Reloadable.
    pub retry: RetryConfig,
    /// The per-core circuit breaker of this backend. Reloadable.
    pub circuit_breaker: BreakerConfig,
    /// Other backends holding the same objects, in ascending `priority` (validated unique, at
    /// least 1); tried in that order when the one before fails (connect error, timeout, 5xx, open
    /// breaker). Default none. Reloadable (the cache is kept: replicas hold the same objects).
    pub replicas: Vec<ReplicaConfig>,
}

/// One entry of `buckets[].s3.replicas`: another S3 backend with the same objects, its own
/// endpoint, bucket, region and credentials (signed for separately, SigV4 per backend), its
/// own breaker on every core. It takes the primary's `retry` and `circuit_breaker` settings;
/// those keys, `allow_version_id` and `replicas` are not accepted inside a replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaConfig {
    /// Name (letters, digits, `-`, `_`, `.`), unique in the bucket; in logs, `/ready` and
    /// the breaker's identity (`<bucket>/<name>`).
    pub name: String,
    /// Order of trial, >= 1 and unique in the bucket (the primary is 0).
    pub priority: u32,
    /// The backend: `bucket`, `region`, `endpoint`, `addressing`, the keys, timeouts and
    /// `tls_ca_file`, with the same rules and defaults as `buckets[].s3`.
    pub s3: S3Config,
}

/// `buckets[].s3.circuit_breaker`: after `failure_threshold` consecutive failed attempts
/// (retries included) a core stops sending to the backend for `open_ms`, answering 503 with
/// `Retry-After` at once; then one request probes it (half-open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker (>= 1). Default 5.
    pub failure_threshold: u32,
    /// How long an open breaker refuses before one probe, ms (> 0). Default 10000.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        schema::section_defaults()
    }
}

impl S3Config {
    /// Whether `other` reads the same objects (bucket, region, endpoint, addressing,
    /// credentials, trust, versions): what decides whether cached entries still match S3 after
    /// a reload. Retry settings and timeouts do not.
    pub fn same_objects(&self, other: &S3Config) -> bool {
        self.bucket == other.bucket
            && self.region == other.region
            && self.endpoint == other.endpoint
            && self.addressing == other.addressing
            && self.access_key == other.access_key
            && self.secret_key == other.secret_key
            && self.session_token == other.session_token
            && self.tls_ca_file == other.tls_ca_file
            && self.allow_version_id == other.allow_version_id
    }
}

/// `buckets[].s3.retry`: how a GET/HEAD that failed before its response head reached the
/// client is tried again (connect errors, timeouts, 500/502/503/504, S3 `SlowDown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per request, the first included (>= 1; 1 = no retry). Default 3.
    pub max_attempts: u32,
    /// Backoff before the second attempt, ms: attempt n waits a uniform random time in
    /// `[0, min(max_backoff_ms, base_backoff_ms * 2^(n-2))]` (full jitter). Default 20.
    pub base_backoff_ms: u64,
    /// Longest backoff, ms. Default 500.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        schema::section_defaults()
    }
}

/// A parsed S3 endpoint: `scheme://host[:port]`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Lowercased host name or IP literal; IPv6 without brackets.
    pub host: String,
    /// Port: as written, else 80 (http) / 443 (https).
    pub port: u16,
    /// Whether the port was written in the URL.
    pub explicit_port: bool,
}

impl Endpoint {
    /// The `Host` header value (RFC 9110 section 7.2): host, IPv6 in brackets, `:port` only
    /// when the port is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// True when `host` is an IPv4 or IPv6 literal rather than a DNS name.
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host_header())
    }
}

/// URL scheme of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 for http, 443 for https.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// S3 request addressing (AWS "Virtual hosting of buckets"): `path` sends
/// `host/bucket/key`, `virtual` sends `bucket.host/key`. Default: virtual when the endpoint
/// is omitted (AWS), path otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Path-style: `https://host/bucket/key`.
    Path,
    /// Virtual-hosted-style: `https://bucket.host/key`.
    Virtual,
}

/// `buckets[].auth`.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketAuthConfig {
    /// Require a valid JWT. Default false. When true, `jwt` or the top-level `jwt` must exist.
    pub enabled: bool,
    /// Bucket-specific JWT settings; replace the top-level `jwt` entirely when present.
    pub jwt: Option<JwtConfig>,
}

/// `buckets[].cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCacheConfig {
    /// Cache this bucket's objects. Default true.
    pub enabled: bool,
    /// Overrides `cache.memory.default_ttl_seconds` / `cache.redis.ttl_seconds`, seconds.
    pub ttl_seconds: Option<u64>,
    /// Overrides `cache.memory.max_item_size_mb`, MiB.
    pub max_item_size_mb: Option<u64>,
    /// How long past its expiry an entry may still be served when S3 cannot be reached or
    /// fails (RFC 5861 `stale-if-error`), seconds; the response's own `stale-if-error`
    /// directive, when present, is honoured too (the larger wins). Default 0: an expired entry
    /// is never served on an S3 failure without that directive (RFC 9111 section 4.2.4).
    pub stale_if_error_seconds: u64,
}

/// `buckets[].cors`: which pages on other origins may read this bucket's objects (Fetch
/// standard, section 3.2 "CORS protocol"). Reloadable with the bucket; nothing of it is cached
/// with an object (the headers are written per response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins allowed (required): exact serialized origins (`scheme://host[:port]`, stored
    /// lower case, no path), or [`CorsOrigins::Any`] for `["*"]`.
    pub allowed_origins: CorsOrigins,
    /// Methods a preflight may ask for (`Access-Control-Request-Method`). GET and HEAD only
    /// (the proxy serves nothing else). Default `[GET, HEAD]`; never empty.
    pub allowed_methods: Vec<CorsMethod>,
    /// Request header names a preflight may ask for (`Access-Control-Request-Headers`), RFC
    /// 9110 field names as written. Default `[Range, If-Match, If-None-Match,
    /// If-Modified-Since, If-Unmodified-Since, If-Range]` (the request fields the proxy acts
    /// on). Add `Authorization` / `X-Auth-Token` for token-protected buckets.
    pub allowed_headers: Vec<String>,
    /// Response header names scripts may read (`Access-Control-Expose-Headers`). Default
    /// `[ETag, Content-Range, Content-Length, Accept-Ranges, Last-Modified]`.
    pub expose_headers: Vec<String>,
    /// How long a browser may reuse a preflight answer (`Access-Control-Max-Age`), seconds,
    /// 0..=86400. Default 600.
    pub max_age_seconds: u64,
    /// Send `Access-Control-Allow-Credentials: true` (cookies / HTTP auth / client certs may be
    /// sent). Default false; true with `allowed_origins: ["*"]` is a config error (the Fetch
    /// standard forbids `*` with credentials).
    pub allow_credentials: bool,
}

/// `cors.allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `["*"]`: any origin.
    Any,
    /// Exact origins, lower case, e.g. `https://app.example.com`, `http://127.0.0.1:8081`.
    List(Vec<String>),
}

/// A method a CORS preflight may be allowed to request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorsMethod {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
}

impl CorsMethod {
    /// The method token as sent on the wire (`GET`, `HEAD`).
    pub fn as_str(self) -> &'static str {
        match self {
            CorsMethod::Get => "GET",
            CorsMethod::Head => "HEAD",
        }
    }
}

impl Default for ServerConfig {
    /// DESIGN section 6 defaults (`server:` omitted).
    fn default() -> Self {
        schema::section_defaults()
    }
}

impl Default for LimitsConfig {
    /// 8192 / 65536 / 100 / 0.
    fn default() -> Self {
        schema::section_defaults()
    }
}

impl Default for AdminConfig {
    /// `127.0.0.1:9090`, no token.
    fn default() -> Self {
        schema::section_defaults()
    }
}

impl Default for LoggingConfig {
    /// info / json / access log on.
    fn default() -> Self {
        schema::section_defaults()
    }
}

impl Default for CacheConfig {
    /// DESIGN section 6 defaults (`cache:` omitted): memory on, disk and Redis off.
    fn default() -> Self {
        schema::section_defaults()
    }
}

#[cfg(test)]
mod tests;
