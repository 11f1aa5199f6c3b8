//! Per-core counters and histograms, aggregated on scrape into Prometheus text
//! (`prometheus-client`'s OpenMetrics encoder, through a [`Collector`] that reads the counters
//! when `/metrics` is fetched).
//!
//! Hot path (writes). Every shard owns one [`ShardMetrics`] and, in it, one [`BucketMetrics`]
//! per config bucket name; only that shard writes them, so an update is a relaxed load and
//! store of a core-private cache line (~1 ns, no `lock` prefix, no contention). The scraper
//! reads them with relaxed loads from the admin thread: a scrape may see one request's
//! counters half-updated, never a torn value. Bucket lookup by name is a lock-free load of a
//! copy-on-write map (`arc_swap`) and a string lookup; the proxy does it once per config
//! generation and bucket (and the cache on inserts and evictions), never per hit. Creating a
//! bucket's entry copies the map (once per bucket and shard).
//!
//! Cold path (scrape): O(shards x buckets) loads and one text buffer (~100 bytes per series).
//! Series are summed over shards, except those that describe a shard (`shard` label). Labels
//! carry config bucket names, methods, status classes and S3 error codes: never paths, keys or
//! tokens. Metrics of a bucket removed by a reload stay (counters never go backwards) until the
//! process restarts.
//!
//! Label values are untrusted text (an S3 error code is whatever the origin wrote): an error
//! code is counted under one of the fixed [`UPSTREAM_ERROR_CODES`] (binary search, no lock, no
//! allocation; anything else is `other`), so the `code` label has at most 64 values, each of
//! which passes [`label_safe_code`]; and every label value is escaped per OpenMetrics when it is
//! written ([`escape_label_value`]), which prometheus-client 0.24 does not do itself (its text
//! `LabelValueEncoder` writes values raw; upstream issue prometheus/client_rust#151).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A counter written by one thread only (its shard). `add` is a load and a store, not an
/// atomic read-modify-write: correct only because a single thread writes it.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n` (wrapping). Call only from the owning shard.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Add 1.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge written by one thread only (its shard); may go negative transiently per shard (an
/// entry counted on one shard cannot leave from another, so sums stay exact).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Add `n` (may be negative). Call only from the owning shard.
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of the latency histograms, seconds (the last bucket is `+Inf`).
pub const LATENCY_BOUNDS_SECONDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The same bounds in microseconds, for the hot-path comparison.
const LATENCY_BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// A latency histogram with [`LATENCY_BOUNDS_SECONDS`], single writer. Observing is a scan of
/// 15 bounds and three stores.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (non-cumulative) counts; index 15 is `+Inf`.
    buckets: [Counter; 16],
    sum_us: Counter,
    count: Counter,
}

impl Histogram {
    /// Record one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].inc();
        self.sum_us.add(us);
        self.count.inc();
    }

    fn add_into(&self, acc: &mut HistogramSnapshot) {
        for (a, b) in acc.buckets.iter_mut().zip(&self.buckets) {
            *a += b.get();
        }
        acc.sum_us += self.sum_us.get();
        acc.count += self.count.get();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct HistogramSnapshot {
    buckets: [u64; 16],
    sum_us: u64,
    count: u64,
}

/// The bucket label of requests that matched no bucket.
pub const UNROUTED: &str = "-";
/// The `reason` label of a rate-limit refusal, indexed like `ShardMetrics::limited_rate` (and
/// `crate::ratelimit::Scope`).
pub const RATE_REASONS: [&str; 4] = ["rate_global", "rate_bucket", "rate_ip", "rate_user"];

/// Request methods counted separately; everything else is `other`.
pub const METHODS: [&str; 3] = ["GET", "HEAD", "other"];
/// Status classes, index = first digit - 1.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The counters of one config bucket on one shard. Bucket `-` collects requests that matched no
/// bucket (404 by path, 400 before routing, OPTIONS).
#[derive(Debug, Default)]
pub struct BucketMetrics {
    /// Responses by method ([`METHODS`]) and status class ([`STATUS_CLASSES`]).
    pub requests: [[Counter; 5]; 3],
    /// Time from the request head to the last response byte.
    pub duration: Histogram,
    /// Response body bytes written to clients.
    pub bytes_sent: Counter,
    /// Requests sent to S3 (misses, bypasses, revalidations, HEADs completing metadata),
    /// retries included.
    pub upstream_requests: Counter,
    /// Of those, retries of a failed attempt (`s3.retry`).
    pub upstream_retries: Counter,
    /// Requests handed to the next backend (a replica) after the one before failed or its
    /// breaker was open (`s3.replicas`).
    pub upstream_failovers: Counter,
    /// This shard's breakers of the bucket's backends (primary, replicas) open or half-open.
    pub breaker_open: Gauge,
    /// Requests answered 503 at once because the breaker was open.
    pub breaker_refusals: Counter,
    /// Time from sending an S3 request to its response head.
    pub upstream_duration: Histogram,
    /// S3 failures by code: the S3 error code of 4xx/5xx answers (`NoSuchKey`, `SlowDown`...,
    /// `http_<status>` without an XML body), or `timeout` / `transport` for failures to get an
    /// answer; one counter per [`UPSTREAM_ERROR_CODES`] entry.
    pub upstream_errors: UpstreamErrors,
    /// Responses answered from the cache (HIT and STALE).
    pub cache_hits: Counter,
    /// Cacheable requests no tier could answer.
    pub cache_misses: Counter,
    /// Requests that skipped the cache (bucket not cached, too large, not storable, Range...).
    pub cache_bypasses: Counter,
    /// Entries pushed out of the memory layer by capacity.
    pub cache_evictions: Counter,
    /// Entries admitted into the memory layer.
    pub cache_inserts: Counter,
    /// Entries refused by the memory layer because they outweigh a shard.
    pub cache_rejected: Counter,
    /// Body bytes sent from cache entries.
    pub cache_hit_bytes: Counter,
    /// Conditional GETs sent to S3 for stale entries.
    pub cache_revalidations: Counter,
    /// Of those, the ones S3 answered 304 (the entry was still good).
    pub cache_revalidated_not_modified: Counter,
    /// Requests that waited for another request's fetch of the same key (single-flight).
    pub cache_single_flight_waits: Counter,
    /// Of those, the ones that gave up after first_byte_timeout_ms and fetched themselves.
    pub cache_single_flight_timeouts: Counter,
    /// Of those, the ones whose leader got no storable object (an S3 error, a response too
    /// large or not cacheable, a failed fill) and that fetched themselves.
    pub cache_single_flight_abandoned: Counter,
    /// Lookups this core sent to the key's owner core (DESIGN section 2).
    pub cache_remote_lookups: Counter,
    /// Time from sending a lookup to another core to its answer.
    pub cache_remote_lookup_duration: Histogram,
    /// Hits answered from this core's L1 copy of a key another core owns.
    pub cache_l1_hits: Counter,
    /// Requests served from S3 without a fill because the key's owner core did not answer
    /// (its queue was full, it was slower than the reply bound, or it had exited).
    pub cache_owner_busy: Counter,
    /// Entries held in the memory layer.
    pub cache_items: Gauge,
    /// Bytes held in the memory layer (entry weights: body, headers, key).
    pub cache_bytes: Gauge,
    /// The disk layer's share of this bucket's cache series ([`LayerCounters`]).
    pub disk: LayerCounters,
    /// The Redis layer's share (hits, misses, inserts; Redis holds the items, so no gauges).
    pub redis: LayerCounters,
}

/// Per-bucket counters of one lower cache layer (disk, Redis): exported with `layer="disk"` in the
/// same families as the memory layer's.
#[derive(Debug, Default)]
pub struct LayerCounters {
    /// Responses answered from this layer.
    pub hits: Counter,
    /// Lookups that reached this layer and found nothing usable.
    pub misses: Counter,
    /// Entries written to this layer.
    pub inserts: Counter,
    /// Entries pushed out by capacity.
    pub evictions: Counter,
    /// Entries held.
    pub items: Gauge,
    /// Bytes held (record lengths on disk).
    pub bytes: Gauge,
}

/// One shard's disk-tier health counters (not per bucket: a disk error is the disk's).
#[derive(Debug, Default)]
pub struct DiskMetrics {
    /// Whether this shard has a disk tier (the `layer="disk"` series are exported only then).
    pub enabled: std::sync::atomic::AtomicBool,
    /// Writes that failed (ENOSPC, EIO, EROFS...).
    pub write_errors: Counter,
    /// Reads that failed (EIO, short file, pool full).
    pub read_errors: Counter,
    /// Records or blocks whose checksum did not verify (treated as a miss and dropped).
    pub checksum_failures: Counter,
    /// Fills not written because the write-behind queue was full.
    pub queue_drops: Counter,
    /// Bytes read from the data files (hits, Range reads, revalidation rewrites).
    pub read_bytes: Counter,
    /// Bytes written to the data files.
    pub write_bytes: Counter,
    /// Capacity of this shard's data file, bytes.
    pub capacity_bytes: Gauge,
}

/// One shard's Redis-tier health counters (not per bucket: a Redis failure is the server's).
#[derive(Debug, Default)]
pub struct RedisMetrics {
    /// Whether this shard has a Redis tier (the `layer="redis"` series are exported only then).
    pub enabled: std::sync::atomic::AtomicBool,
    /// Connections this shard keeps (one per Redis node it talks to).
    pub connections: Gauge,
    /// Of those, connections up (connected and past AUTH/SELECT).
    pub connections_up: Gauge,
    /// Commands whose answer did not come within `timeout_ms` (a miss for a lookup).
    pub timeouts: Counter,
    /// Error replies, broken connections and failed connects.
    pub errors: Counter,
    /// Connections re-established after a failure.
    pub reconnects: Counter,
    /// Fills not sent because the connection's queue was full or the connection was down.
    pub queue_drops: Counter,
    /// Lookups not sent because the node's connection was down (backing off).
    pub skipped: Counter,
    /// Values that did not decode or verify (a miss; the key is deleted).
    pub corrupt: Counter,
    /// Cluster redirections followed (MOVED and ASK).
    pub redirects: Counter,
}

impl BucketMetrics {
    /// Count one response: `method` as received, `status` as sent.
    #[inline]
    pub fn record_request(&self, method: &http::Method, status: u16, elapsed: Duration) {
        let m = if method == http::Method::GET {
            0
        } else if method == http::Method::HEAD {
            1
        } else {
            2
        };
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[m][class].inc();
        self.duration.observe(elapsed);
    }

    /// Count one failed S3 exchange under `code` (see [`UpstreamErrors::record`]): a lookup in
    /// a fixed table and one single-writer counter store, no lock, no allocation. Call only
    /// from the owning shard.
    #[inline]
    pub fn record_upstream_error(&self, code: &str) {
        self.upstream_errors.record(code);
    }

    /// Count one failed S3 exchange that had no S3 error code, as `http_<status>` (see
    /// [`UpstreamErrors::record_status`]); the allocation-free form of
    /// `record_upstream_error(&format!("http_{status}"))`.
    #[inline]
    pub fn record_upstream_status(&self, status: u16) {
        self.upstream_errors.record_status(status);
    }

    /// Responses counted so far with this method index and status class index.
    pub fn requests_of(&self, method: usize, class: usize) -> u64 {
        self.requests[method][class].get()
    }

    /// The non-zero upstream error counts, by code (table order).
    pub fn upstream_errors(&self) -> Vec<(&'static str, u64)> {
        UPSTREAM_ERROR_CODES
            .iter()
            .zip(&self.upstream_errors.0)
            .map(|(code, c)| (*code, c.get()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// The `code` label values of `yatagarasu_upstream_errors_total`, sorted by bytes (checked at
/// compile time) so [`upstream_error_index`] can binary-search them. An S3 error code, or one of
/// ours, that is not listed is counted as `other`.
///
/// Chosen from the AWS S3 error code list (S3 API reference, "Error responses", "List of error
/// codes") for what a read path (signed GET/HEAD of an object, path or virtual-host addressing)
/// can get back, plus the codes a write path would add first (`BadDigest`, `EntityTooLarge`):
/// - credentials and signing: `AccessDenied`, `AccountProblem`, `AllAccessDisabled`,
///   `AuthorizationHeaderMalformed` (wrong region in the scope), `ExpiredToken`,
///   `InvalidAccessKeyId`, `InvalidSecurity`, `InvalidToken`, `MissingSecurityHeader`,
///   `NotSignedUp`, `RequestTimeTooSkewed`, `SignatureDoesNotMatch`, `TokenRefreshRequired`, and
///   Ceph RGW's `UserSuspended`;
/// - the object and bucket: `NoSuchBucket`, `NoSuchKey`, `NoSuchVersion`, `InvalidObjectState`
///   (an archived object), `InvalidBucketName`, `KeyTooLongError`, `InvalidURI`;
/// - the request: `InvalidArgument`, `InvalidRequest`, `InvalidRange`, `PreconditionFailed`,
///   `MethodNotAllowed`, `NotImplemented`, `RequestTimeout`, `OperationAborted`;
/// - redirects (wrong endpoint or region): `PermanentRedirect`, `Redirect`, `TemporaryRedirect`;
/// - the service: `InternalError`, `ServiceUnavailable`, `SlowDown`;
/// - ours: `http_<status>` for an answer without an S3 error body (every HEAD error) with the
///   statuses S3 and its proxies answer (301 302 307 400 401 403 404 405 408 409 411 412 416 429
///   500 501 502 503 504), `http_1xx`..`http_5xx` for any other status of that class, `timeout`
///   and `transport` for exchanges that got no answer, and `other`.
///
/// 64 entries: 512 bytes of counters per bucket and shard.
pub const UPSTREAM_ERROR_CODES: [&str; 64] = [
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "BadDigest",
    "EntityTooLarge",
    "ExpiredToken",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidArgument",
    "InvalidBucketName",
    "InvalidObjectState",
    "InvalidRange",
    "InvalidRequest",
    "InvalidSecurity",
    "InvalidToken",
    "InvalidURI",
    "KeyTooLongError",
    "MethodNotAllowed",
    "MissingSecurityHeader",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchVersion",
    "NotImplemented",
    "NotSignedUp",
    "OperationAborted",
    "PermanentRedirect",
    "PreconditionFailed",
    "Redirect",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SlowDown",
    "TemporaryRedirect",
    "TokenRefreshRequired",
    "UserSuspended",
    "http_1xx",
    "http_2xx",
    "http_301",
    "http_302",
    "http_307",
    "http_3xx",
    "http_400",
    "http_401",
    "http_403",
    "http_404",
    "http_405",
    "http_408",
    "http_409",
    "http_411",
    "http_412",
    "http_416",
    "http_429",
    "http_4xx",
    "http_500",
    "http_501",
    "http_502",
    "http_503",
    "http_504",
    "http_5xx",
    "other",
    "timeout",
    "transport",
];

/// `a < b` by bytes, usable in a constant.
const fn bytes_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// Index of `name` in [`UPSTREAM_ERROR_CODES`]; fails the build when it is absent.
const fn code_index(name: &str) -> usize {
    let mut i = 0;
    while i < UPSTREAM_ERROR_CODES.len() {
        let c = UPSTREAM_ERROR_CODES[i];
        if !bytes_less(c, name) && !bytes_less(name, c) {
            return i;
        }
        i += 1;
    }
    panic!("code missing from UPSTREAM_ERROR_CODES");
}

// The table is strictly sorted (so binary search finds every entry) and every entry is a safe
// label value: checked when the crate is built.
const _: () = {
    let mut i = 0;
    while i < UPSTREAM_ERROR_CODES.len() {
        let c = UPSTREAM_ERROR_CODES[i].as_bytes();
        assert!(!c.is_empty() && c.len() <= MAX_CODE_LABEL_BYTES);
        let mut j = 0;
        while j < c.len() {
            assert!(c[j].is_ascii_alphanumeric() || c[j] == b'_');
            j += 1;
        }
        if i > 0 {
            assert!(bytes_less(
                UPSTREAM_ERROR_CODES[i - 1],
                UPSTREAM_ERROR_CODES[i]
            ));
        }
        i += 1;
    }
};

/// Index of `other` in [`UPSTREAM_ERROR_CODES`].
const OTHER: usize = code_index("other");

/// Indices of `http_1xx`..`http_5xx` in [`UPSTREAM_ERROR_CODES`].
const HTTP_CLASSES: [usize; 5] = [
    code_index("http_1xx"),
    code_index("http_2xx"),
    code_index("http_3xx"),
    code_index("http_4xx"),
    code_index("http_5xx"),
];

/// The [`UPSTREAM_ERROR_CODES`] index that counts `code`: its own entry when listed; for an
/// unlisted `http_NNN` (status 100-599) the entry of its class (`http_4xx`...); else `other`.
/// A binary search over 64 entries (at most 7 string comparisons), no allocation.
pub fn upstream_error_index(code: &str) -> usize {
    if let Ok(i) = UPSTREAM_ERROR_CODES.binary_search(&code) {
        return i;
    }
    match code.strip_prefix("http_").map(str::as_bytes) {
        Some(&[c @ b'1'..=b'5', d, u]) if d.is_ascii_digit() && u.is_ascii_digit() => {
            HTTP_CLASSES[usize::from(c - b'1')]
        }
        _ => OTHER,
    }
}

/// Failed S3 exchanges of one bucket on one shard, one single-writer [`Counter`] per
/// [`UPSTREAM_ERROR_CODES`] entry (same index).
#[derive(Debug)]
pub struct UpstreamErrors([Counter; UPSTREAM_ERROR_CODES.len()]);

impl Default for UpstreamErrors {
    fn default() -> Self {
        UpstreamErrors(std::array::from_fn(|_| Counter::default()))
    }
}

impl UpstreamErrors {
    /// Count one failure under `code` ([`upstream_error_index`]: unknown codes count as
    /// `other`). Call only from the owning shard.
    #[inline]
    pub fn record(&self, code: &str) {
        self.0[upstream_error_index(code)].inc();
    }

    /// Count one failure without an S3 error code as `http_<status>` (or its class entry, or
    /// `other` outside 100-599). No formatting, no allocation.
    #[inline]
    pub fn record_status(&self, status: u16) {
        let mut name = *b"http_000";
        let digits = [status / 100 % 10, status / 10 % 10, status % 10];
        for (b, d) in name[5..].iter_mut().zip(digits) {
            // d < 10: the cast cannot truncate.
            *b = b'0' + d as u8;
        }
        let code = if status > 999 {
            "other"
        } else {
            // ASCII by construction.
            std::str::from_utf8(&name).unwrap_or("other")
        };
        self.record(code);
    }

    /// The count under [`UPSTREAM_ERROR_CODES`]`[index]`; 0 past the end.
    pub fn get(&self, index: usize) -> u64 {
        self.0.get(index).map_or(0, Counter::get)
    }

    fn add_into(&self, acc: &mut [u64; UPSTREAM_ERROR_CODES.len()]) {
        for (a, c) in acc.iter_mut().zip(&self.0) {
            *a += c.get();
        }
    }
}

/// Longest S3 error code kept as a label value, bytes. AWS's longest documented code is 47 bytes
/// (`ServerSideEncryptionConfigurationNotFoundError`).
pub const MAX_CODE_LABEL_BYTES: usize = 64;

/// `code` if it can be a `code` label value as is, else `other`: 1 to [`MAX_CODE_LABEL_BYTES`]
/// bytes of ASCII letters, digits and `_` (S3 error codes such as `NoSuchKey`, and our own
/// `http_502`, `timeout`, `transport`). Bounds what an origin can put into the exposition and
/// into client error messages. No allocation.
pub fn label_safe_code(code: &str) -> &str {
    let ok = !code.is_empty()
        && code.len() <= MAX_CODE_LABEL_BYTES
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        code
    } else {
        "other"
    }
}

/// Write `value` into `out` escaped as an OpenMetrics label value (OpenMetrics 1.0 "Escaping";
/// the same rules as the Prometheus text format): `\` -> `\\`, `"` -> `\"`, line feed ->
/// `\n`; everything else verbatim. Errors only when `out` does.
pub fn escape_label_value(out: &mut impl std::fmt::Write, value: &str) -> std::fmt::Result {
    let mut rest = value;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

/// A label value that is escaped when encoded (see [`escape_label_value`]).
#[derive(Clone, Copy, Debug)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        escape_label_value(encoder, self.0)
    }
}

/// `labels` with every value escaped, for `encode_family` (scrape path: one small Vec per series).
fn escaped<'a>(labels: &[(&'static str, &'a str)]) -> Vec<(&'static str, Escaped<'a>)> {
    labels.iter().map(|&(k, v)| (k, Escaped(v))).collect()
}

/// One shard's metrics, registered with the process [`Metrics`] when the shard starts.
#[derive(Debug)]
pub struct ShardMetrics {
    /// Shard index.
    pub shard: usize,
    /// `io_uring` or `epoll`.
    pub driver: String,
    /// Pinned CPU, if any.
    pub cpu: Option<usize>,
    /// Open client connections on this shard.
    pub connections: Gauge,
    /// Connections accepted so far.
    pub connections_accepted: Counter,
    /// This shard's disk-tier counters.
    pub disk: DiskMetrics,
    /// This shard's Redis-tier counters.
    pub redis: RedisMetrics,
    /// Requests refused by the IP lists (403).
    pub limited_ip: Counter,
    /// Requests shed by `max_concurrent_requests` (503).
    pub limited_shed: Counter,
    /// Requests refused by a rate limit (429), by scope: global, bucket, ip, user
    /// ([`RATE_REASONS`]).
    pub limited_rate: [Counter; 4],
    /// Copy-on-write: readers (the shard, the scraper) load without a lock; a new bucket
    /// replaces the map (once per bucket name and shard).
    buckets: ArcSwap<BTreeMap<String, Arc<BucketMetrics>>>,
}

impl ShardMetrics {
    /// Metrics registered nowhere (benches, unit tests, tools): shard 0, no driver.
    pub fn standalone() -> ShardMetrics {
        ShardMetrics::new(0, "none", None)
    }

    fn new(shard: usize, driver: &str, cpu: Option<usize>) -> ShardMetrics {
        ShardMetrics {
            shard,
            driver: driver.to_owned(),
            cpu,
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            disk: DiskMetrics::default(),
            redis: RedisMetrics::default(),
            limited_ip: Counter::default(),
            limited_shed: Counter::default(),
            limited_rate: Default::default(),
            buckets: ArcSwap::from_pointee(BTreeMap::new()),
        }
    }

    /// The metrics of config bucket `name` on this shard, created on first use. A lock-free
    /// load and a map lookup; the first use of a name copies the map. Keep the `Arc` (once
    /// per config generation) rather than calling this per request.
    pub fn bucket(&self, name: &str) -> Arc<BucketMetrics> {
        if let Some(b) = self.buckets.load().get(name) {
            return b.clone();
        }
        let fresh = Arc::new(BucketMetrics::default());
        self.buckets.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.entry(name.to_owned()).or_insert_with(|| fresh.clone());
            next
        });
        // Entries are never removed, so the name is in the map now (ours or a racing one).
        let got = self.buckets.load().get(name).cloned();
        debug_assert!(got.is_some(), "bucket {name} vanished from the map");
        got.unwrap_or(fresh)
    }

    /// Every bucket with metrics on this shard, by name.
    pub fn buckets(&self) -> Vec<(String, Arc<BucketMetrics>)> {
        self.buckets
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Process-wide metrics: every shard's [`ShardMetrics`] plus the few process-level values.
/// Shared (`Arc`) between the shards (registration only), the reload path and the admin thread.
#[derive(Debug)]
pub struct Metrics {
    /// Copy-on-write list, sorted by shard index: written when a shard registers, read by
    /// the scraper without a lock.
    shards: ArcSwap<Vec<Arc<ShardMetrics>>>,
    started: Instant,
    /// Current config generation (0 at start, +1 per published reload).
    pub config_generation: AtomicU64,
    /// Reloads applied.
    pub reloads_ok: AtomicU64,
    /// Reloads rejected (invalid config or restart-only change).
    pub reloads_failed: AtomicU64,
    /// Readiness probes by outcome: `[ok, failed]`.
    pub probes: [AtomicU64; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: ArcSwap::from_pointee(Vec::new()),
            started: Instant::now(),
            config_generation: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            probes: Default::default(),
        }
    }
}

impl Metrics {
    /// Register shard `shard` (called by the shard itself when it starts) and return its
    /// metrics. Registering an index twice replaces the earlier entry.
    pub fn register_shard(
        &self,
        shard: usize,
        driver: &str,
        cpu: Option<usize>,
    ) -> Arc<ShardMetrics> {
        let m = Arc::new(ShardMetrics::new(shard, driver, cpu));
        self.shards.rcu(|current| {
            let mut next: Vec<Arc<ShardMetrics>> = current
                .iter()
                .filter(|s| s.shard != shard)
                .cloned()
                .collect();
            next.push(m.clone());
            next.sort_by_key(|s| s.shard);
            next
        });
        m
    }

    /// The registered shards, by index.
    pub fn shards(&self) -> Vec<Arc<ShardMetrics>> {
        self.shards.load().as_ref().clone()
    }

    /// Seconds since the metrics (the process) started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Render every metric as OpenMetrics text (`application/openmetrics-text; version=1.0.0`),
    /// which Prometheus scrapes natively. Reads `/proc/self` for RSS and open fds.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("yatagarasu");
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The collector: reads every shard's counters at scrape time.
#[derive(Debug)]
struct Scrape(Arc<Metrics>);

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One counter or gauge family: a single unlabelled series is written bare, anything else
/// as labelled series (values escaped per OpenMetrics).
fn scalar<V: Copy, M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: &[(Labels<'_>, V)],
    make: impl Fn(V) -> M,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, metric_type)?;
    if let [(labels, v)] = series {
        if labels.is_empty() {
            return make(*v).encode(m);
        }
    }
    for (labels, v) in series {
        make(*v).encode(m.encode_family(&escaped(labels))?)?;
    }
    Ok(())
}

/// The per-shard Redis-tier families: connection state, timeouts, errors, reconnects, drops,
/// skipped lookups, corrupt values, cluster redirections.
fn redis_families(
    enc: &mut DescriptorEncoder<'_>,
    shards: &[Arc<ShardMetrics>],
    ids: &[String],
) -> Result<(), std::fmt::Error> {
    let per_shard = |read: &dyn Fn(&RedisMetrics) -> i64| -> Vec<(Labels<'_>, i64)> {
        shards
            .iter()
            .zip(ids)
            .map(|(s, id)| (vec![("shard", id.as_str())], read(&s.redis)))
            .collect()
    };
    let connected = per_shard(&|r| {
        let (n, up) = (r.connections.get(), r.connections_up.get());
        i64::from(n > 0 && up == n)
    });
    gauge(
        enc,
        "cache_redis_connected",
        "1 when every Redis connection of the shard is up (past AUTH/SELECT), else 0.",
        &connected,
    )?;
    gauge(
        enc,
        "cache_redis_connections_up",
        "Redis connections up on the shard (one per Redis node it talks to).",
        &per_shard(&|r| r.connections_up.get()),
    )?;
    type RedisReader = fn(&RedisMetrics) -> u64;
    let families: [(&str, &str, RedisReader); 7] = [
        (
            "cache_redis_timeouts",
            "Redis commands not answered within cache.redis.timeout_ms (lookups become misses), by shard.",
            |r| r.timeouts.get(),
        ),
        (
            "cache_redis_errors",
            "Redis error replies, broken connections and failed connects, by shard.",
            |r| r.errors.get(),
        ),
        (
            "cache_redis_reconnects",
            "Redis connections re-established after a failure, by shard.",
            |r| r.reconnects.get(),
        ),
        (
            "cache_redis_queue_drops",
            "Fills not sent to Redis (queue full or connection down), by shard.",
            |r| r.queue_drops.get(),
        ),
        (
            "cache_redis_skipped",
            "Lookups not sent to Redis because its connection was down (backing off), by shard.",
            |r| r.skipped.get(),
        ),
        (
            "cache_redis_corrupt",
            "Redis values that did not decode or verify (misses; the key is deleted), by shard.",
            |r| r.corrupt.get(),
        ),
        (
            "cache_redis_redirects",
            "Redis Cluster redirections followed (MOVED, ASK), by shard.",
            |r| r.redirects.get(),
        ),
    ];
    for (name, help, read) in families {
        let series: Vec<(Labels<'_>, u64)> = shards
            .iter()
            .zip(ids)
            .map(|(s, id)| (vec![("shard", id.as_str())], read(&s.redis)))
            .collect();
        counter(enc, name, help, &series)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    scalar(
        enc,
        name,
        help,
        MetricType::Counter,
        series,
        ConstCounter::new,
    )
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, i64)],
) -> Result<(), std::fmt::Error> {
    scalar(enc, name, help, MetricType::Gauge, series, ConstGauge::new)
}

fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, HistogramSnapshot)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_SECONDS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(h.buckets)
            .collect();
        m.encode_family(&escaped(labels))?
            .encode_histogram::<NoLabelSet>(h.sum_us as f64 / 1e6, h.count, &buckets, None)?;
    }
    Ok(())
}

/// The cache counters exported per bucket and layer: (name, help, reader).
type CacheCounter = (&'static str, &'static str, fn(&BucketMetrics) -> u64);
const CACHE_COUNTERS: [CacheCounter; 15] = [
    ("cache_hits", "Responses answered from the cache.", |b| {
        b.cache_hits.get()
    }),
    (
        "cache_misses",
        "Cacheable requests no layer could answer.",
        |b| b.cache_misses.get(),
    ),
    ("cache_bypasses", "Requests that skipped the cache.", |b| {
        b.cache_bypasses.get()
    }),
    ("cache_evictions", "Entries pushed out by capacity.", |b| {
        b.cache_evictions.get()
    }),
    ("cache_inserts", "Entries admitted.", |b| {
        b.cache_inserts.get()
    }),
    (
        "cache_rejected",
        "Entries refused as heavier than a shard.",
        |b| b.cache_rejected.get(),
    ),
    (
        "cache_hit_body_bytes",
        "Body bytes sent from cache entries.",
        |b| b.cache_hit_bytes.get(),
    ),
    (
        "cache_revalidations",
        "Conditional GETs sent for stale entries.",
        |b| b.cache_revalidations.get(),
    ),
    (
        "cache_revalidated_not_modified",
        "Revalidations S3 answered 304.",
        |b| b.cache_revalidated_not_modified.get(),
    ),
    (
        "cache_single_flight_waits",
        "Requests that waited for another's fetch of the key.",
        |b| b.cache_single_flight_waits.get(),
    ),
    (
        "cache_single_flight_timeouts",
        "Waits that timed out and fetched themselves.",
        |b| b.cache_single_flight_timeouts.get(),
    ),
    (
        "cache_single_flight_abandoned",
        "Waits whose leader got no storable object; they fetched themselves.",
        |b| b.cache_single_flight_abandoned.get(),
    ),
    (
        "cache_remote_lookups",
        "Lookups sent to the key's owner core.",
        |b| b.cache_remote_lookups.get(),
    ),
    (
        "cache_l1_hits",
        "Hits answered from this core's L1 copy of another core's key.",
        |b| b.cache_l1_hits.get(),
    ),
    (
        "cache_owner_busy",
        "Requests served from S3 without a fill: the key's owner core did not answer in time.",
        |b| b.cache_owner_busy.get(),
    ),
];

/// Per-bucket sums over shards.
struct BucketSums {
    requests: [[u64; 5]; 3],
    duration: HistogramSnapshot,
    bytes_sent: u64,
    upstream_requests: u64,
    upstream_retries: u64,
    upstream_failovers: u64,
    breaker_open: i64,
    breaker_refusals: u64,
    upstream_duration: HistogramSnapshot,
    upstream_errors: [u64; UPSTREAM_ERROR_CODES.len()],
    cache: [u64; CACHE_COUNTERS.len()],
    remote_lookup_duration: HistogramSnapshot,
    cache_items: i64,
    cache_bytes: i64,
    /// Disk layer: hits, misses, evictions, inserts, items, bytes.
    disk: [i64; 6],
    /// Redis layer: hits, misses, inserts.
    redis: [u64; 3],
}

impl Default for BucketSums {
    fn default() -> Self {
        BucketSums {
            requests: Default::default(),
            duration: HistogramSnapshot::default(),
            bytes_sent: 0,
            upstream_requests: 0,
            upstream_retries: 0,
            upstream_failovers: 0,
            breaker_open: 0,
            breaker_refusals: 0,
            upstream_duration: HistogramSnapshot::default(),
            upstream_errors: [0; UPSTREAM_ERROR_CODES.len()],
            cache: Default::default(),
            remote_lookup_duration: HistogramSnapshot::default(),
            cache_items: 0,
            cache_bytes: 0,
            disk: [0; 6],
            redis: [0; 3],
        }
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let shards = m.shards();
        let mut sums: BTreeMap<String, BucketSums> = BTreeMap::new();
        for s in &shards {
            for (name, b) in s.buckets() {
                let acc = sums.entry(name).or_default();
                for (mi, row) in acc.requests.iter_mut().enumerate() {
                    for (ci, v) in row.iter_mut().enumerate() {
                        *v += b.requests_of(mi, ci);
                    }
                }
                b.duration.add_into(&mut acc.duration);
                acc.bytes_sent += b.bytes_sent.get();
                acc.upstream_requests += b.upstream_requests.get();
                acc.upstream_retries += b.upstream_retries.get();
                acc.upstream_failovers += b.upstream_failovers.get();
                acc.breaker_open += b.breaker_open.get();
                acc.breaker_refusals += b.breaker_refusals.get();
                b.upstream_duration.add_into(&mut acc.upstream_duration);
                b.upstream_errors.add_into(&mut acc.upstream_errors);
                for (a, (_, _, read)) in acc.cache.iter_mut().zip(CACHE_COUNTERS) {
                    *a += read(&b);
                }
                b.cache_remote_lookup_duration
                    .add_into(&mut acc.remote_lookup_duration);
                acc.cache_items += b.cache_items.get();
                acc.cache_bytes += b.cache_bytes.get();
                let d = &b.disk;
                let disk = [
                    d.hits.get() as i64,
                    d.misses.get() as i64,
                    d.evictions.get() as i64,
                    d.inserts.get() as i64,
                    d.items.get(),
                    d.bytes.get(),
                ];
                for (a, v) in acc.disk.iter_mut().zip(disk) {
                    *a += v;
                }
                let r = &b.redis;
                for (a, v) in
                    acc.redis
                        .iter_mut()
                        .zip([r.hits.get(), r.misses.get(), r.inserts.get()])
                {
                    *a += v;
                }
            }
        }

        let mut requests = Vec::new();
        let mut durations = Vec::new();
        let mut bytes = Vec::new();
        let mut up_requests = Vec::new();
        let mut up_retries = Vec::new();
        let mut up_failovers = Vec::new();
        let mut breaker_open = Vec::new();
        let mut breaker_refusals = Vec::new();
        let mut up_durations = Vec::new();
        let mut up_errors = Vec::new();
        let mut cache: Vec<Vec<(Labels<'_>, u64)>> = vec![Vec::new(); CACHE_COUNTERS.len()];
        let mut items = Vec::new();
        let mut sizes = Vec::new();
        let mut remote_durations = Vec::new();
        let disk_enabled = shards.iter().any(|s| s.disk.enabled.load(Relaxed));
        let redis_enabled = shards.iter().any(|s| s.redis.enabled.load(Relaxed));
        for (name, s) in &sums {
            for (mi, row) in s.requests.iter().enumerate() {
                for (ci, v) in row.iter().enumerate() {
                    if *v > 0 {
                        requests.push((
                            vec![
                                ("bucket", name.as_str()),
                                ("method", METHODS[mi]),
                                ("status_class", STATUS_CLASSES[ci]),
                            ],
                            *v,
                        ));
                    }
                }
            }
            let b = vec![("bucket", name.as_str())];
            durations.push((b.clone(), s.duration));
            bytes.push((b.clone(), s.bytes_sent));
            if name == UNROUTED {
                // Unrouted requests never reach S3 or the cache.
                continue;
            }
            up_requests.push((b.clone(), s.upstream_requests));
            up_retries.push((b.clone(), s.upstream_retries));
            up_failovers.push((b.clone(), s.upstream_failovers));
            breaker_open.push((b.clone(), s.breaker_open));
            breaker_refusals.push((b.clone(), s.breaker_refusals));
            up_durations.push((b.clone(), s.upstream_duration));
            for (code, &n) in UPSTREAM_ERROR_CODES.iter().zip(&s.upstream_errors) {
                if n > 0 {
                    up_errors.push((vec![("bucket", name.as_str()), ("code", *code)], n));
                }
            }
            let layer = vec![("bucket", name.as_str()), ("layer", "memory")];
            for (series, v) in cache.iter_mut().zip(s.cache) {
                series.push((layer.clone(), v));
            }
            items.push((layer.clone(), s.cache_items));
            sizes.push((layer, s.cache_bytes));
            if disk_enabled {
                let layer = vec![("bucket", name.as_str()), ("layer", "disk")];
                // Same families as the memory layer: hits, misses, evictions, inserts.
                for (family, v) in [0usize, 1, 3, 4].into_iter().zip(s.disk) {
                    cache[family].push((layer.clone(), v.max(0) as u64));
                }
                items.push((layer.clone(), s.disk[4]));
                sizes.push((layer, s.disk[5]));
            }
            if redis_enabled {
                let layer = vec![("bucket", name.as_str()), ("layer", "redis")];
                // Hits, misses, inserts, in the memory layer's families.
                for (family, v) in [0usize, 1, 4].into_iter().zip(s.redis) {
                    cache[family].push((layer.clone(), v));
                }
            }
            remote_durations.push((b.clone(), s.remote_lookup_duration));
        }
        counter(
            &mut enc,
            "requests",
            "Responses by bucket, method and status class.",
            &requests,
        )?;
        histogram(
            &mut enc,
            "request_duration_seconds",
            "Time from request head to last response byte, by bucket.",
            &durations,
        )?;
        counter(
            &mut enc,
            "response_body_bytes",
            "Response body bytes sent to clients, by bucket.",
            &bytes,
        )?;
        counter(
            &mut enc,
            "upstream_requests",
            "Requests sent to S3, by bucket.",
            &up_requests,
        )?;
        counter(
            &mut enc,
            "upstream_retries",
            "Retries of failed S3 attempts (s3.retry), by bucket.",
            &up_retries,
        )?;
        counter(
            &mut enc,
            "upstream_failovers",
            "Requests handed to the next backend (s3.replicas) because the one before failed or its breaker was open, by bucket.",
            &up_failovers,
        )?;
        gauge(
            &mut enc,
            "upstream_breaker_open",
            "Circuit breakers of the bucket's backends (primary and replicas) open or half-open, summed over shards.",
            &breaker_open,
        )?;
        counter(
            &mut enc,
            "upstream_breaker_refusals",
            "Requests answered 503 at once because the backend's circuit breaker was open, by bucket.",
            &breaker_refusals,
        )?;
        histogram(
            &mut enc,
            "upstream_duration_seconds",
            "Time from sending an S3 request to its response head, by bucket.",
            &up_durations,
        )?;
        counter(
            &mut enc,
            "upstream_errors",
            "Failed S3 exchanges by bucket and S3 error code (or http_<status>, timeout, transport, other).",
            &up_errors,
        )?;
        for ((name, help, _), series) in CACHE_COUNTERS.iter().zip(&cache) {
            counter(&mut enc, name, help, series)?;
        }
        histogram(
            &mut enc,
            "cache_remote_lookup_duration_seconds",
            "Time from a lookup sent to the key's owner core to its answer, by bucket.",
            &remote_durations,
        )?;
        gauge(
            &mut enc,
            "cache_items",
            "Entries held, by bucket and layer.",
            &items,
        )?;
        gauge(
            &mut enc,
            "cache_size_bytes",
            "Bytes held (entry weights), by bucket and layer.",
            &sizes,
        )?;

        let shard_ids: Vec<String> = shards.iter().map(|s| s.shard.to_string()).collect();
        if disk_enabled {
            type DiskReader = fn(&DiskMetrics) -> i64;
            let families: [(&str, &str, DiskReader); 6] = [
                (
                    "cache_disk_write_errors",
                    "Disk-tier writes that failed (ENOSPC, EIO, EROFS), by shard.",
                    |d| d.write_errors.get() as i64,
                ),
                (
                    "cache_disk_read_errors",
                    "Disk-tier reads that failed, by shard.",
                    |d| d.read_errors.get() as i64,
                ),
                (
                    "cache_disk_checksum_failures",
                    "Disk records or blocks that did not verify (served as misses), by shard.",
                    |d| d.checksum_failures.get() as i64,
                ),
                (
                    "cache_disk_queue_drops",
                    "Fills not written to disk because the write-behind queue was full, by shard.",
                    |d| d.queue_drops.get() as i64,
                ),
                (
                    "cache_disk_read_bytes",
                    "Bytes read from the disk tier's data files, by shard.",
                    |d| d.read_bytes.get() as i64,
                ),
                (
                    "cache_disk_write_bytes",
                    "Bytes written to the disk tier's data files, by shard.",
                    |d| d.write_bytes.get() as i64,
                ),
            ];
            for (name, help, read) in families {
                let series: Vec<(Labels<'_>, u64)> = shards
                    .iter()
                    .zip(&shard_ids)
                    .map(|(s, id)| {
                        (
                            vec![("shard", id.as_str()), ("layer", "disk")],
                            read(&s.disk).max(0) as u64,
                        )
                    })
                    .collect();
                counter(&mut enc, name, help, &series)?;
            }
            let caps: Vec<(Labels<'_>, i64)> = shards
                .iter()
                .zip(&shard_ids)
                .map(|(s, id)| {
                    (
                        vec![("shard", id.as_str()), ("layer", "disk")],
                        s.disk.capacity_bytes.get(),
                    )
                })
                .collect();
            gauge(
                &mut enc,
                "cache_capacity_bytes",
                "Capacity of a lower cache layer on a shard, bytes.",
                &caps,
            )?;
        }
        if redis_enabled {
            redis_families(&mut enc, &shards, &shard_ids)?;
        }
        let (ip, shed) = shards.iter().fold((0, 0), |(i, s), m| {
            (i + m.limited_ip.get(), s + m.limited_shed.get())
        });
        let mut limited = vec![
            (vec![("reason", "ip_blocked")], ip),
            (vec![("reason", "shed")], shed),
        ];
        for (i, reason) in RATE_REASONS.iter().enumerate() {
            let n = shards.iter().map(|m| m.limited_rate[i].get()).sum();
            limited.push((vec![("reason", *reason)], n));
        }
        counter(
            &mut enc,
            "requests_limited",
            "Requests refused by the limit phase, by reason: ip_blocked (403), shed (503, max_concurrent_requests), rate_global / rate_bucket / rate_ip / rate_user (429, rate_limit).",
            &limited,
        )?;
        let cpus: Vec<String> = shards
            .iter()
            .map(|s| s.cpu.map_or_else(|| "none".to_owned(), |c| c.to_string()))
            .collect();
        let mut active = Vec::new();
        let mut accepted = Vec::new();
        let mut info = Vec::new();
        for ((s, id), cpu) in shards.iter().zip(&shard_ids).zip(&cpus) {
            active.push((vec![("shard", id.as_str())], s.connections.get()));
            accepted.push((vec![("shard", id.as_str())], s.connections_accepted.get()));
            info.push((
                vec![
                    ("shard", id.as_str()),
                    ("driver", s.driver.as_str()),
                    ("cpu", cpu.as_str()),
                ],
                1,
            ));
        }
        gauge(
            &mut enc,
            "connections_active",
            "Open client connections, by shard.",
            &active,
        )?;
        counter(
            &mut enc,
            "connections_accepted",
            "Client connections accepted, by shard.",
            &accepted,
        )?;
        gauge(
            &mut enc,
            "shard_info",
            "One series per shard with its I/O driver and pinned CPU (value 1).",
            &info,
        )?;
        gauge(
            &mut enc,
            "shards",
            "Shards running.",
            &[(vec![], shards.len() as i64)],
        )?;
        gauge(
            &mut enc,
            "config_generation",
            "Generation of the config in use (0 at start, +1 per applied reload).",
            &[(vec![], m.config_generation.load(Relaxed) as i64)],
        )?;
        counter(
            &mut enc,
            "config_reloads",
            "Reload attempts by result.",
            &[
                (vec![("result", "ok")], m.reloads_ok.load(Relaxed)),
                (vec![("result", "error")], m.reloads_failed.load(Relaxed)),
            ],
        )?;
        counter(
            &mut enc,
            "readiness_probes",
            "Backend readiness probes by result.",
            &[
                (vec![("result", "ok")], m.probes[0].load(Relaxed)),
                (vec![("result", "failed")], m.probes[1].load(Relaxed)),
            ],
        )?;
        let (rss, fds) = process_usage();
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident set size of the process.",
            &[(vec![], rss)],
        )?;
        gauge(
            &mut enc,
            "process_open_fds",
            "Open file descriptors of the process.",
            &[(vec![], fds)],
        )?;
        gauge(
            &mut enc,
            "uptime_seconds",
            "Seconds since the process started.",
            &[(vec![], m.uptime().as_secs() as i64)],
        )?;
        Ok(())
    }
}

/// Resident set size in bytes (`VmRSS` of `/proc/self/status`, reported in kB whatever the page
/// size) and open fds (`/proc/self/fd` entries, minus the one reading it); -1 where `/proc`
/// cannot be read. Blocking: admin thread only.
// Off the shards: called by the scraper on the admin thread.
#[allow(clippy::disallowed_methods)]
pub fn process_usage() -> (i64, i64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        })
        .map_or(-1, |kib| kib * 1024);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(-1, |d| d.count() as i64 - 1);
    (rss, fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(400));
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut s = HistogramSnapshot::default();
        h.add_into(&mut s);
        assert_eq!(s.buckets[0], 2, "<= 0.5 ms");
        assert_eq!(s.buckets[3], 1, "<= 5 ms");
        assert_eq!(s.buckets[15], 1, "+Inf");
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 400 + 500 + 3000 + 100_000_000);
    }

    #[test]
    fn render_sums_shards_and_names_series() {
        let m = Arc::new(Metrics::default());
        let a = m.register_shard(0, "io_uring", Some(0));
        let b = m.register_shard(1, "epoll", None);
        for s in [&a, &b] {
            let pb = s.bucket("public");
            pb.record_request(&http::Method::GET, 200, Duration::from_millis(2));
            pb.bytes_sent.add(1024);
            pb.cache_hits.inc();
        }
        a.bucket("public")
            .record_request(&http::Method::HEAD, 404, Duration::from_millis(1));
        a.bucket("public").record_upstream_error("NoSuchKey");
        b.bucket("public").record_upstream_error("NoSuchKey");
        b.bucket("public").record_upstream_error("timeout");
        a.bucket("public").record_upstream_status(502);
        a.connections.add(3);
        let text = m.render();
        for line in [
            "yatagarasu_requests_total{bucket=\"public\",method=\"GET\",status_class=\"2xx\"} 2",
            "yatagarasu_requests_total{bucket=\"public\",method=\"HEAD\",status_class=\"4xx\"} 1",
            "yatagarasu_response_body_bytes_total{bucket=\"public\"} 2048",
            "yatagarasu_upstream_errors_total{bucket=\"public\",code=\"NoSuchKey\"} 2",
            // Table order, which is the byte order the old map rendered in.
            "yatagarasu_upstream_errors_total{bucket=\"public\",code=\"NoSuchKey\"} 2\n\
             yatagarasu_upstream_errors_total{bucket=\"public\",code=\"http_502\"} 1\n\
             yatagarasu_upstream_errors_total{bucket=\"public\",code=\"timeout\"} 1\n",
            "yatagarasu_cache_hits_total{bucket=\"public\",layer=\"memory\"} 2",
            "yatagarasu_request_duration_seconds_count{bucket=\"public\"} 3",
            "yatagarasu_request_duration_seconds_bucket{le=\"+Inf\",bucket=\"public\"} 3",
            "yatagarasu_connections_active{shard=\"0\"} 3",
            "yatagarasu_shard_info{shard=\"1\",driver=\"epoll\",cpu=\"none\"} 1",
            "yatagarasu_shards 2",
            "yatagarasu_config_generation 0",
            "yatagarasu_config_reloads_total{result=\"ok\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            text.matches("yatagarasu_upstream_errors_total{").count(),
            3,
            "only codes with a count are emitted:\n{text}"
        );
    }

    #[test]
    fn bucket_is_created_once_per_name_even_when_racing() {
        let shard = Arc::new(ShardMetrics::standalone());
        let names: Vec<String> = (0..50).map(|i| format!("b{i}")).collect();
        let got: Vec<Vec<Arc<BucketMetrics>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| names.iter().map(|n| shard.bucket(n)).collect()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for (i, name) in names.iter().enumerate() {
            let first = &got[0][i];
            for per_thread in &got[1..] {
                assert!(Arc::ptr_eq(first, &per_thread[i]), "{name}: two entries");
            }
            assert!(Arc::ptr_eq(first, &shard.bucket(name)));
        }
        assert_eq!(shard.buckets().len(), names.len());
        let m = Metrics::default();
        m.register_shard(1, "epoll", None);
        m.register_shard(0, "io_uring", None);
        m.register_shard(1, "io_uring", None);
        let listed: Vec<(usize, String)> = m
            .shards()
            .iter()
            .map(|s| (s.shard, s.driver.clone()))
            .collect();
        assert_eq!(
            listed,
            vec![(0, "io_uring".to_owned()), (1, "io_uring".to_owned())],
            "sorted, re-registration replaces"
        );
    }

    #[test]
    fn upstream_error_codes_are_bounded() {
        let b = BucketMetrics::default();
        for i in 0..300 {
            b.record_upstream_error(&format!("Code{i}"));
        }
        assert_eq!(b.upstream_errors(), vec![("other", 300)]);
    }

    #[test]
    fn every_listed_code_counts_under_itself() {
        let b = BucketMetrics::default();
        for (i, code) in UPSTREAM_ERROR_CODES.iter().enumerate() {
            assert_eq!(upstream_error_index(code), i, "{code}");
            for _ in 0..=i {
                b.record_upstream_error(code);
            }
        }
        for (i, code) in UPSTREAM_ERROR_CODES.iter().enumerate() {
            assert_eq!(b.upstream_errors.get(i), i as u64 + 1, "{code}");
        }
        assert_eq!(b.upstream_errors().len(), UPSTREAM_ERROR_CODES.len());
    }

    #[test]
    fn the_code_table_is_sorted_unique_and_label_safe() {
        // Also checked at compile time; this keeps the property visible in the test report.
        for w in UPSTREAM_ERROR_CODES.windows(2) {
            assert!(w[0] < w[1], "{} before {}", w[0], w[1]);
        }
        for code in UPSTREAM_ERROR_CODES {
            assert_eq!(label_safe_code(code), code);
        }
        for name in [
            "NoSuchKey",
            "AccessDenied",
            "SlowDown",
            "timeout",
            "transport",
            "other",
        ] {
            assert!(UPSTREAM_ERROR_CODES.contains(&name), "{name}");
        }
    }

    #[test]
    fn unknown_codes_count_as_other() {
        let b = BucketMetrics::default();
        for code in [
            "",
            "nosuchkey",
            "NoSuchKeyX",
            "NoSuch",
            "XMinioServerNotInitialized",
            "Evil\"} 1\nyatagarasu_forged_total 9",
            "http_",
            "http_6xx",
            "http_600",
            "http_099",
            "http_4041",
            "http_40",
            "http_4x4",
            "HTTP_404",
        ] {
            assert_eq!(upstream_error_index(code), OTHER, "{code:?}");
            b.record_upstream_error(code);
        }
        assert_eq!(b.upstream_errors(), vec![("other", 14)]);
    }

    #[test]
    fn http_statuses_count_as_listed_or_by_class() {
        let b = BucketMetrics::default();
        b.record_upstream_status(404);
        b.record_upstream_status(404);
        b.record_upstream_status(418);
        b.record_upstream_status(599);
        b.record_upstream_status(201);
        b.record_upstream_error("http_503");
        b.record_upstream_error("http_451");
        b.record_upstream_status(600);
        b.record_upstream_status(42);
        b.record_upstream_status(u16::MAX);
        assert_eq!(
            b.upstream_errors(),
            vec![
                ("http_2xx", 1),
                ("http_404", 2),
                ("http_4xx", 2),
                ("http_503", 1),
                ("http_5xx", 1),
                ("other", 3),
            ]
        );
        // The numeric form counts exactly where the text the proxy formats would.
        for status in 0..=u16::MAX {
            let text = format!("http_{status}");
            let a = BucketMetrics::default();
            a.record_upstream_status(status);
            let want = upstream_error_index(&text);
            assert_eq!(a.upstream_errors.get(want), 1, "{status}");
        }
    }

    #[test]
    fn error_codes_outside_the_alphabet_or_too_long_are_other() {
        for ok in ["NoSuchKey", "SlowDown", "http_502", "timeout", "A1"] {
            assert_eq!(label_safe_code(ok), ok);
        }
        let longest = "C".repeat(MAX_CODE_LABEL_BYTES);
        assert_eq!(label_safe_code(&longest), longest);
        for bad in [
            "",
            "Evil\"} 1\nyatagarasu_forged_total 9",
            "No Such Key",
            "back\\slash",
            "dash-code",
            "Ünïcode",
            &"C".repeat(MAX_CODE_LABEL_BYTES + 1),
        ] {
            assert_eq!(label_safe_code(bad), "other", "{bad:?}");
        }
        let b = BucketMetrics::default();
        b.record_upstream_error("Evil\"} 1\nyatagarasu_forged_total 9");
        b.record_upstream_error("InternalError");
        assert_eq!(
            b.upstream_errors(),
            vec![("InternalError", 1), ("other", 1)]
        );
    }

    #[test]
    fn label_values_are_escaped_per_openmetrics() {
        let esc = |v: &str| {
            let mut out = String::new();
            escape_label_value(&mut out, v).unwrap();
            out
        };
        assert_eq!(esc("plain"), "plain");
        assert_eq!(esc(""), "");
        assert_eq!(esc("a\"b"), "a\\\"b");
        assert_eq!(esc("a\\b"), "a\\\\b");
        assert_eq!(esc("a\nb"), "a\\nb");
        assert_eq!(esc("\"}\n\\"), "\\\"}\\n\\\\");
        assert_eq!(
            esc("tab\tand ünï"),
            "tab\tand ünï",
            "only three characters escape"
        );
    }

    #[test]
    fn render_escapes_hostile_label_values() {
        // A bucket name is operator text, but nothing stops it from holding a quote or newline.
        let m = Arc::new(Metrics::default());
        let s = m.register_shard(0, "epoll", None);
        s.bucket("we\"ird\nname")
            .record_request(&http::Method::GET, 200, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                "yatagarasu_requests_total{bucket=\"we\\\"ird\\nname\",method=\"GET\",status_class=\"2xx\"} 1"
            ),
            "{text}"
        );
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("yatagarasu_"),
                "a label value broke a line: {line:?}"
            );
        }
    }
}
