//! A validated config turned into what the shards need, built once per load or reload on the main
//! thread and published to every shard through the runtime's `Snapshot` (arc_swap).
//!
//! Not on the hot path: building reads CA files and the system trust store (blocking I/O, which
//! is why it happens off the shards). Shards derive their own `!Sync` per-bucket state (SigV4
//! signers with their per-day key caches) from it when they first see a new generation.

use std::collections::HashMap;
use std::path::PathBuf;
// The JWKS store registry is touched on the main, signal and admin threads, never a shard.
#[allow(clippy::disallowed_types)]
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::auth::{JwksStore, Verifier};

use crate::config::{Config, S3Config, Scheme};
use crate::http::cors::CorsPolicy;
use crate::http::request::Limits;
use crate::http::server::ServerSettings;
use crate::router::Router;
use crate::upstream::tls;

/// Everything derived from one config that is `Send + Sync`.
pub struct Prepared {
    /// The validated config.
    pub config: Config,
    /// Longest-prefix router over `config.buckets` (values index into it).
    pub router: Router,
    /// Per bucket, same order as `config.buckets`.
    pub buckets: Vec<PreparedBucket>,
    /// Connection settings for the HTTP server loop.
    pub settings: ServerSettings,
    /// Every distinct JWKS URL in use, for the process-wide fetcher.
    pub jwks: Vec<JwksSource>,
}

/// One JWKS endpoint: its key store (shared by all cores and kept across reloads) and how to
/// fetch it.
pub struct JwksSource {
    /// The endpoint.
    pub url: String,
    /// The keys published to every core.
    pub store: Arc<JwksStore>,
    /// TLS connector (system roots) for an https URL.
    pub tls: Option<monoio_rustls::TlsConnector>,
    /// Scheduled refresh interval (`jwks_refresh_seconds`).
    pub refresh: Duration,
}

/// JWT settings of a private bucket.
pub struct BucketAuth {
    /// Keys, algorithms, claims rules and token sources.
    pub verifier: Arc<Verifier>,
    /// The JWKS store when the settings name a `jwks_url`.
    pub jwks: Option<Arc<JwksStore>>,
}

/// The JWKS store for `url`: one per URL for the life of the process, so a reload that keeps the
/// URL keeps the fetched keys. Touched only on the main and signal threads (never a shard).
#[allow(clippy::disallowed_types)] // off the shards: see above
fn jwks_store(url: &str) -> Arc<JwksStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<JwksStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    stores
        .entry(url.to_owned())
        .or_insert_with(JwksStore::new)
        .clone()
}

/// How to reach one S3 backend (the primary or a replica).
pub struct PreparedBackend {
    /// `<bucket>` for the primary, `<bucket>/<replica>` for a replica: the breaker's identity
    /// and the name in `/ready` and logs.
    pub name: String,
    /// TLS connector for an HTTPS endpoint (shared `Arc<ClientConfig>` inside); `None` for HTTP.
    pub tls: Option<monoio_rustls::TlsConnector>,
    /// Upstream pool key: `scheme://host:port` plus `#ca=<file>` when a private CA is used, so
    /// connections trusted under different roots are never shared.
    pub pool_key: String,
    /// Connect budget (resolve + TCP + TLS).
    pub connect_timeout: Duration,
    /// First-byte and body-stall budget.
    pub first_byte_timeout: Duration,
}

/// Per-bucket derived state.
pub struct PreparedBucket {
    /// The primary backend (`buckets[].s3`).
    pub primary: PreparedBackend,
    /// The replicas (`s3.replicas`), in ascending priority, same order as the config's.
    pub replicas: Vec<PreparedBackend>,
    /// JWT settings when `auth.enabled` (bucket `auth.jwt`, else top-level `jwt`).
    pub auth: Option<BucketAuth>,
    /// The bucket's compiled `cors` block; `None` = no CORS fields are ever sent.
    pub cors: Option<CorsPolicy>,
}

/// The connection settings of backend `s3` (named `name`; errors prefixed with `path`): its
/// TLS connector (one per CA file, shared through `tls_by_ca`), pool key and timeouts.
fn prepare_backend(
    name: String,
    s3: &S3Config,
    path: &str,
    tls_by_ca: &mut HashMap<Option<PathBuf>, monoio_rustls::TlsConnector>,
    errors: &mut Vec<String>,
) -> PreparedBackend {
    let ep = &s3.endpoint;
    let tls = match ep.scheme {
        Scheme::Http => None,
        Scheme::Https => {
            let ca = s3.tls_ca_file.clone();
            if let Some(c) = tls_by_ca.get(&ca) {
                Some(c.clone())
            } else {
                match tls::client_config(ca.as_deref()) {
                    Ok(cfg) => {
                        let c = monoio_rustls::TlsConnector::from(cfg);
                        tls_by_ca.insert(ca, c.clone());
                        Some(c)
                    }
                    Err(e) => {
                        errors.push(format!("{path}: {e}"));
                        None
                    }
                }
            }
        }
    };
    let scheme = match ep.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let mut pool_key = format!("{scheme}://{}:{}", ep.host, ep.port);
    if let (Scheme::Https, Some(ca)) = (ep.scheme, &s3.tls_ca_file) {
        pool_key.push_str("#ca=");
        pool_key.push_str(&ca.to_string_lossy());
    }
    PreparedBackend {
        name,
        tls,
        pool_key,
        connect_timeout: Duration::from_millis(s3.connect_timeout_ms),
        first_byte_timeout: Duration::from_millis(s3.first_byte_timeout_ms),
    }
}

impl Prepared {
    /// Derive shard inputs from a validated `config`. Errors (one line each, naming the bucket):
    /// an unreadable or empty `tls_ca_file`, or no system roots for an HTTPS endpoint.
    pub fn new(config: Config) -> Result<Prepared, Vec<String>> {
        let mut errors = Vec::new();
        let mut tls_by_ca: HashMap<Option<PathBuf>, monoio_rustls::TlsConnector> = HashMap::new();
        let mut buckets = Vec::with_capacity(config.buckets.len());
        let mut jwks: Vec<JwksSource> = Vec::new();
        for (i, b) in config.buckets.iter().enumerate() {
            let primary = prepare_backend(
                b.name.clone(),
                &b.s3,
                &format!("buckets[{i}].s3"),
                &mut tls_by_ca,
                &mut errors,
            );
            let replicas =
                b.s3.replicas
                    .iter()
                    .enumerate()
                    .map(|(r, replica)| {
                        prepare_backend(
                            format!("{}/{}", b.name, replica.name),
                            &replica.s3,
                            &format!("buckets[{i}].s3.replicas[{r}]"),
                            &mut tls_by_ca,
                            &mut errors,
                        )
                    })
                    .collect();
            let auth = match config.jwt_for(b) {
                None => None,
                Some(jwt) => match Verifier::from_config(jwt) {
                    Ok(verifier) => {
                        let jwks = verifier.jwks_url().map(|url| {
                            let store = jwks_store(url);
                            if !jwks.iter().any(|j: &JwksSource| j.url == url) {
                                let tls = url.starts_with("https://").then(|| {
                                    tls::client_config(None).map(monoio_rustls::TlsConnector::from)
                                });
                                match tls.transpose() {
                                    Ok(tls) => jwks.push(JwksSource {
                                        url: url.to_owned(),
                                        store: store.clone(),
                                        tls,
                                        refresh: Duration::from_secs(
                                            verifier.jwks_refresh_seconds().max(1),
                                        ),
                                    }),
                                    Err(e) => {
                                        errors.push(format!("buckets[{i}].auth: jwks_url: {e}"))
                                    }
                                }
                            }
                            store
                        });
                        Some(BucketAuth {
                            verifier: Arc::new(verifier),
                            jwks,
                        })
                    }
                    Err(errs) => {
                        errors.extend(errs.into_iter().map(|e| format!("buckets[{i}].auth: {e}")));
                        None
                    }
                },
            };
            buckets.push(PreparedBucket {
                primary,
                replicas,
                auth,
                cors: b.cors.as_ref().map(CorsPolicy::new),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let router = Router::new(
            config
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| (b.path_prefix.clone(), i)),
        );
        let s = &config.server;
        let settings = ServerSettings {
            limits: Limits {
                max_uri_bytes: s.limits.max_uri_bytes,
                max_header_bytes: s.limits.max_header_bytes,
                max_headers: s.limits.max_headers,
                max_body_bytes: s.limits.max_body_bytes,
            },
            keepalive_timeout: Duration::from_millis(s.keepalive_timeout_ms),
            request_header_timeout: Duration::from_millis(s.request_header_timeout_ms),
            send_timeout: Duration::from_millis(s.send_timeout_ms),
        };
        Ok(Prepared {
            config,
            router,
            buckets,
            settings,
            jwks,
        })
    }
}
