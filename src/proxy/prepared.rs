//! A validated config turned into what the shards need, built once per load or reload on the main
//! thread and published to every shard through the runtime's `Snapshot` (arc_swap).
//!
//! Not on the hot path: building reads CA files and the system trust store (blocking I/O, which
//! is why it happens off the shards). Shards derive their own `!Sync` per-bucket state (SigV4
//! signers with their per-day key caches) from it when they first see a new generation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, Scheme};
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
}

/// Per-bucket derived state.
pub struct PreparedBucket {
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

impl Prepared {
    /// Derive shard inputs from a validated `config`. Errors (one line each, naming the bucket):
    /// an unreadable or empty `tls_ca_file`, or no system roots for an HTTPS endpoint.
    pub fn new(config: Config) -> Result<Prepared, Vec<String>> {
        let mut errors = Vec::new();
        let mut tls_by_ca: HashMap<Option<PathBuf>, monoio_rustls::TlsConnector> = HashMap::new();
        let mut buckets = Vec::with_capacity(config.buckets.len());
        for (i, b) in config.buckets.iter().enumerate() {
            let ep = &b.s3.endpoint;
            let tls = match ep.scheme {
                Scheme::Http => None,
                Scheme::Https => {
                    let ca = b.s3.tls_ca_file.clone();
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
                                errors.push(format!("buckets[{i}].s3: {e}"));
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
            if let (Scheme::Https, Some(ca)) = (ep.scheme, &b.s3.tls_ca_file) {
                pool_key.push_str("#ca=");
                pool_key.push_str(&ca.to_string_lossy());
            }
            buckets.push(PreparedBucket {
                tls,
                pool_key,
                connect_timeout: Duration::from_millis(b.s3.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(b.s3.first_byte_timeout_ms),
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
        };
        Ok(Prepared {
            config,
            router,
            buckets,
            settings,
        })
    }
}
