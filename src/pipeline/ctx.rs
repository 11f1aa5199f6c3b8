//! The state one request carries through the phases ([`RequestCtx`]) and how its response
//! went ([`Summary`]).
//!
//! Hot path: built once per request on the stack (the request id inline, no allocation).

use std::rc::Rc;
use std::time::Instant;

use super::headers::EdgePolicy;
use crate::auth::Verified;
use crate::cache::CacheOutcome;
use crate::http::server::RequestId;
use crate::metrics::BucketMetrics;

/// What the phases know about a request, filled in as it moves through them; read by the
/// respond and log phases.
pub struct RequestCtx<'l> {
    /// The client's valid `X-Request-Id`, or a new UUID v4.
    pub request_id: RequestId,
    /// When the request head was handed to the pipeline (for `duration_us`).
    pub started: Instant,
    /// The routed bucket's index in the snapshot, once routed.
    pub bucket: Option<usize>,
    /// Counters of the routed bucket (or of unrouted requests).
    pub metrics: &'l BucketMetrics,
    /// The verified token, when the bucket requires one.
    pub subject: Option<Rc<Verified>>,
    /// What the cache did (`X-Cache`, `Cache-Status`, the access line's `cache`).
    pub outcome: CacheOutcome,
    /// The routed bucket's response policy (casing, `Cache-Control: private`, CORS).
    pub policy: EdgePolicy<'l>,
}

impl<'l> RequestCtx<'l> {
    /// A request not routed yet, counted under `unrouted` until it is.
    pub fn new(request_id: RequestId, started: Instant, unrouted: &'l BucketMetrics) -> Self {
        RequestCtx {
            request_id,
            started,
            bucket: None,
            metrics: unrouted,
            subject: None,
            outcome: CacheOutcome::None,
            policy: EdgePolicy::default(),
        }
    }

    /// Record the cache outcome and count it (hits with their body bytes, misses, bypasses).
    pub fn count_outcome(&mut self, outcome: CacheOutcome, body_bytes: u64) {
        self.outcome = outcome;
        match outcome {
            CacheOutcome::None => {}
            CacheOutcome::Bypass => self.metrics.cache_bypasses.inc(),
            CacheOutcome::Miss { .. } => self.metrics.cache_misses.inc(),
            CacheOutcome::Hit { tier: "disk" } => {
                self.metrics.disk.hits.inc();
                self.metrics.cache_hit_bytes.add(body_bytes);
            }
            CacheOutcome::Hit { tier: "redis" } => {
                self.metrics.redis.hits.inc();
                self.metrics.cache_hit_bytes.add(body_bytes);
            }
            _ => {
                self.metrics.cache_hits.inc();
                self.metrics.cache_hit_bytes.add(body_bytes);
            }
        }
    }
}

/// How a finished response went.
pub struct Summary {
    /// Status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the connection stays usable.
    pub keep_alive: bool,
}
