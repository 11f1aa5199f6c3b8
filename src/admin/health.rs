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

/// The last probe of one backend of a bucket.
#[derive(Clone, Debug)]
struct BackendProbe {
    /// `<bucket>` (the primary) or `<bucket>/<replica>`.
    name: String,
    state: ProbeState,
    checked: Option<Instant>,
}

/// One bucket: its primary first, then its replicas in priority order.
#[derive(Clone, Debug)]
struct BucketProbe {
    bucket: String,
    backends: Vec<BackendProbe>,
}

impl BucketProbe {
    /// A bucket is ready when any of its backends answered its last probe: requests fail over
    /// to the replicas.
    fn is_ok(&self) -> bool {
        self.backends.iter().any(|b| b.state.is_ok())
    }
}

impl BackendProbe {
    fn pending(name: String) -> BackendProbe {
        BackendProbe {
            name,
            state: ProbeState::Pending,
            checked: None,
        }
    }

    /// `state` and `status` or `error`, and `checked_seconds_ago`, into `v`.
    fn render(&self, v: &mut serde_json::Value) {
        v["checked_seconds_ago"] = json!(self.checked.map(|t| t.elapsed().as_secs()));
        match &self.state {
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
    }
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
        h.set_buckets(buckets.into_iter().map(|b| (b, false, Vec::new())));
        h
    }

    /// Replace the bucket list after a reload: `(name, keep, replicas)` in config order, where
    /// `replicas` are the backend names of its replicas (`<bucket>/<replica>`, priority
    /// order); `keep` keeps the last results of a bucket whose primary settings did not change
    /// (of the replicas still configured), otherwise they are pending until the next probe.
    pub fn set_buckets(&self, buckets: impl IntoIterator<Item = (String, bool, Vec<String>)>) {
        let buckets: Vec<(String, bool, Vec<String>)> = buckets.into_iter().collect();
        self.probes.rcu(|old| {
            buckets
                .iter()
                .map(|(bucket, keep, replicas)| {
                    let kept = old.iter().find(|p| *keep && p.bucket == *bucket);
                    let backend = |name: &String| {
                        kept.and_then(|k| k.backends.iter().find(|b| b.name == *name))
                            .cloned()
                            .unwrap_or_else(|| BackendProbe::pending(name.clone()))
                    };
                    BucketProbe {
                        bucket: bucket.clone(),
                        backends: std::iter::once(bucket)
                            .chain(replicas)
                            .map(backend)
                            .collect(),
                    }
                })
                .collect::<Vec<_>>()
        });
    }

    /// Record a probe result for backend `name` (`<bucket>` or `<bucket>/<replica>`; ignored
    /// if no longer configured).
    pub fn record(&self, name: &str, state: ProbeState) {
        let ok = state.is_ok();
        let now = Instant::now();
        self.probes.rcu(|old| {
            let mut next = Vec::clone(old);
            if let Some(p) = next
                .iter_mut()
                .flat_map(|p| p.backends.iter_mut())
                .find(|b| b.name == name)
            {
                p.state = state.clone();
                p.checked = Some(now);
            }
            next
        });
        self.metrics.probes[usize::from(!ok)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The state of backend `name`, if configured (tests; `/ready` renders all of them).
    #[cfg(test)]
    pub fn state(&self, name: &str) -> Option<ProbeState> {
        self.probes
            .load()
            .iter()
            .flat_map(|p| p.backends.iter())
            .find(|b| b.name == name)
            .map(|b| b.state.clone())
    }

    /// Circuit breakers of `bucket`'s backends open or half-open, summed over shards (the
    /// `upstream_breaker_open` gauge).
    fn breakers_open(&self, bucket: &str) -> i64 {
        self.metrics
            .shards()
            .iter()
            .flat_map(|s| s.buckets())
            .filter(|(name, _)| name == bucket)
            .map(|(_, m)| m.breaker_open.get())
            .sum()
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

    /// `GET /ready`: 200 `{"status":"ready",...}` when every bucket has a backend (its primary
    /// or a replica) that answered its last probe and the process is not draining; else 503
    /// with `status` `not_ready` or `draining`. `buckets` lists each bucket with `ok` (any
    /// backend ok), its primary's `state` (`answered`, `failed`, `pending`), `status` (HTTP
    /// status of the probe) or `error` and `checked_seconds_ago`, `breakers_open` (circuit
    /// breakers of its backends open or half-open, over all shards) and, when it has replicas,
    /// `replicas`: the same fields per replica with its `name` and own `ok`.
    pub fn ready_json(&self, draining: bool) -> (u16, String) {
        let probes = self.probes.load_full();
        let all_ok = probes.iter().all(BucketProbe::is_ok);
        let buckets: Vec<serde_json::Value> = probes
            .iter()
            .map(|p| {
                let mut v = json!({
                    "name": p.bucket,
                    "ok": p.is_ok(),
                    "breakers_open": self.breakers_open(&p.bucket),
                });
                if let Some(primary) = p.backends.first() {
                    primary.render(&mut v);
                }
                if p.backends.len() > 1 {
                    let replicas: Vec<serde_json::Value> = p.backends[1..]
                        .iter()
                        .map(|b| {
                            let short = b.name.rsplit('/').next().unwrap_or(&b.name);
                            let mut r = json!({"name": short, "ok": b.state.is_ok()});
                            b.render(&mut r);
                            r
                        })
                        .collect();
                    v["replicas"] = json!(replicas);
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
        h.set_buckets([
            ("a".into(), true, vec![]),
            ("b".into(), false, vec![]),
            ("c".into(), true, vec![]),
        ]);
        assert_eq!(h.state("a"), Some(ProbeState::Answered(200)));
        assert_eq!(h.state("b"), Some(ProbeState::Pending));
        assert_eq!(h.state("c"), Some(ProbeState::Pending));
    }

    #[test]
    fn a_bucket_with_one_answering_replica_is_ready() {
        let h = Health::new(Arc::new(Metrics::default()), ["a".into()]);
        h.set_buckets([("a".into(), false, vec!["a/eu".into(), "a/us".into()])]);
        h.record("a", ProbeState::Failed("connection refused".into()));
        h.record("a/eu", ProbeState::Failed("timeout".into()));
        assert_eq!(h.ready_json(false).0, 503);
        h.record("a/us", ProbeState::Answered(200));
        let (code, body) = h.ready_json(false);
        assert_eq!(code, 200, "{body}");
        let v = parse(&body);
        assert_eq!(v["buckets"][0]["state"], "failed");
        assert_eq!(v["buckets"][0]["ok"], true);
        assert_eq!(v["buckets"][0]["breakers_open"], 0);
        assert_eq!(v["buckets"][0]["replicas"][1]["name"], "us");
        assert_eq!(v["buckets"][0]["replicas"][0]["error"], "timeout");
        // A reload that keeps the bucket keeps the results of the replicas still there.
        h.set_buckets([("a".into(), true, vec!["a/us".into()])]);
        assert_eq!(h.state("a/us"), Some(ProbeState::Answered(200)));
        assert_eq!(h.state("a/eu"), None);
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
