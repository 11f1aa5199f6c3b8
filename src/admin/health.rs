//! `/health` and `/ready`: process facts and the last readiness probe of every bucket's S3
//! backend, as JSON. Shared (`Arc`) by the prober (writer, admin thread) and every listener
//! that answers these paths (the admin thread and each shard's data listener).
//!
//! Not on the hot path: a load balancer polls these every few seconds. Each answer is a
//! lock-free load of the probe list (copy-on-write `ArcSwap`: a probe result or a reload
//! replaces the list, ~100 bytes per bucket) and a small JSON string.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use serde_json::json;

use crate::metrics::Metrics;

/// What the last probe of one bucket's backend found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// Not probed since the bucket appeared (startup, or a reload added or changed it).
    Pending,
    /// The backend answered with this HTTP status (any status below 500 counts as answered:
    /// a 403 on `HEAD bucket` means the key lacks `s3:ListBucket`, not that S3 is down).
    Answered(u16),
    /// No usable answer: transport error, timeout, or a 5xx; the text says which.
    Failed(String),
}

impl ProbeState {
    /// Whether this state counts as ready.
    pub fn is_ok(&self) -> bool {
        matches!(self, ProbeState::Answered(s) if *s < 500)
    }
}

#[derive(Clone, Debug)]
struct BucketProbe {
    bucket: String,
    state: ProbeState,
    checked: Option<Instant>,
}

/// Readiness state and process facts. See the module docs.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    metrics: Arc<Metrics>,
    /// Written by the prober and reloads (admin/control thread), read by every listener.
    probes: ArcSwap<Vec<BucketProbe>>,
}

impl Health {
    /// A state with every bucket in `buckets` pending. `metrics` supplies the shard list.
    pub fn new(metrics: Arc<Metrics>, buckets: impl IntoIterator<Item = String>) -> Health {
        let h = Health {
            started: Instant::now(),
            metrics,
            probes: ArcSwap::from_pointee(Vec::new()),
        };
        h.set_buckets(buckets.into_iter().map(|b| (b, false)));
        h
    }

    /// Replace the bucket list after a reload: `(name, keep)` pairs, in config order; `keep`
    /// keeps the last result of a bucket whose backend settings did not change, otherwise it
    /// is pending until its next probe.
    pub fn set_buckets(&self, buckets: impl IntoIterator<Item = (String, bool)>) {
        let buckets: Vec<(String, bool)> = buckets.into_iter().collect();
        self.probes.rcu(|old| {
            buckets
                .iter()
                .map(|(bucket, keep)| {
                    let kept = old.iter().find(|p| *keep && p.bucket == *bucket).cloned();
                    kept.unwrap_or_else(|| BucketProbe {
                        bucket: bucket.clone(),
                        state: ProbeState::Pending,
                        checked: None,
                    })
                })
                .collect::<Vec<_>>()
        });
    }

    /// Record a probe result for `bucket` (ignored if the bucket is no longer configured).
    pub fn record(&self, bucket: &str, state: ProbeState) {
        let ok = state.is_ok();
        let now = Instant::now();
        self.probes.rcu(|old| {
            let mut next = Vec::clone(old);
            if let Some(p) = next.iter_mut().find(|p| p.bucket == bucket) {
                p.state = state.clone();
                p.checked = Some(now);
            }
            next
        });
        self.metrics.probes[usize::from(!ok)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The state of `bucket`'s backend, if configured (tests; `/ready` renders all of them).
    #[cfg(test)]
    pub fn state(&self, bucket: &str) -> Option<ProbeState> {
        self.probes
            .load()
            .iter()
            .find(|p| p.bucket == bucket)
            .map(|p| p.state.clone())
    }

    /// `GET /health` body: `{"status":"ok","version","uptime_seconds","shards","driver",
    /// "drivers"}`; `driver` is the shards' common driver (`io_uring`, `epoll`) or `mixed`.
    pub fn health_json(&self) -> String {
        let shards = self.metrics.shards();
        let drivers: Vec<&str> = shards.iter().map(|s| s.driver.as_str()).collect();
        let driver = match drivers.first() {
            Some(first) if drivers.iter().all(|d| d == first) => *first,
            Some(_) => "mixed",
            None => "none",
        };
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "shards": shards.len(),
            "driver": driver,
            "drivers": drivers,
        })
        .to_string()
    }

    /// `GET /ready`: 200 `{"status":"ready",...}` when every bucket's backend answered its last
    /// probe and the process is not draining; else 503 with `status` `not_ready` or `draining`.
    /// `buckets` lists each bucket with `ok`, `state` (`answered`, `failed`, `pending`),
    /// `status` (HTTP status of the probe) or `error`, and `checked_seconds_ago`.
    pub fn ready_json(&self, draining: bool) -> (u16, String) {
        let probes = self.probes.load_full();
        let all_ok = probes.iter().all(|p| p.state.is_ok());
        let buckets: Vec<serde_json::Value> = probes
            .iter()
            .map(|p| {
                let mut v = json!({
                    "name": p.bucket,
                    "ok": p.state.is_ok(),
                    "checked_seconds_ago": p.checked.map(|t| t.elapsed().as_secs()),
                });
                match &p.state {
                    ProbeState::Pending => v["state"] = json!("pending"),
                    ProbeState::Answered(s) => {
                        v["state"] = json!("answered");
                        v["status"] = json!(s);
                    }
                    ProbeState::Failed(e) => {
                        v["state"] = json!("failed");
                        v["error"] = json!(e);
                    }
                }
                v
            })
            .collect();
        let (code, status) = if draining {
            (503, "draining")
        } else if all_ok {
            (200, "ready")
        } else {
            (503, "not_ready")
        };
        (
            code,
            json!({"status": status, "buckets": buckets}).to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn ready_only_when_every_bucket_answered() {
        let h = Health::new(Arc::new(Metrics::default()), ["a".into(), "b".into()]);
        let (code, body) = h.ready_json(false);
        assert_eq!(code, 503);
        assert_eq!(parse(&body)["buckets"][0]["state"], "pending");
        h.record("a", ProbeState::Answered(200));
        h.record("b", ProbeState::Answered(403));
        let (code, body) = h.ready_json(false);
        assert_eq!(code, 200, "{body}");
        assert_eq!(parse(&body)["buckets"][1]["status"], 403);
        assert_eq!(h.ready_json(true).0, 503, "draining");
        h.record("b", ProbeState::Failed("connection refused".into()));
        let (code, body) = h.ready_json(false);
        assert_eq!(code, 503);
        assert_eq!(parse(&body)["buckets"][1]["error"], "connection refused");
        h.record("a", ProbeState::Answered(503));
        assert!(!h.state("a").unwrap().is_ok(), "5xx is not ready");
    }

    #[test]
    fn reload_keeps_unchanged_results_only() {
        let h = Health::new(Arc::new(Metrics::default()), ["a".into(), "b".into()]);
        h.record("a", ProbeState::Answered(200));
        h.record("b", ProbeState::Answered(200));
        h.set_buckets([("a".into(), true), ("b".into(), false), ("c".into(), true)]);
        assert_eq!(h.state("a"), Some(ProbeState::Answered(200)));
        assert_eq!(h.state("b"), Some(ProbeState::Pending));
        assert_eq!(h.state("c"), Some(ProbeState::Pending));
    }

    #[test]
    fn health_reports_shards_and_driver() {
        let m = Arc::new(Metrics::default());
        m.register_shard(0, "io_uring", Some(0));
        m.register_shard(1, "io_uring", Some(1));
        let h = Health::new(m.clone(), ["a".into()]);
        let v = parse(&h.health_json());
        assert_eq!(v["status"], "ok");
        assert_eq!(v["shards"], 2);
        assert_eq!(v["driver"], "io_uring");
        m.register_shard(1, "epoll", None);
        assert_eq!(parse(&h.health_json())["driver"], "mixed");
    }
}
