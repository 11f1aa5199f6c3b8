//! Readiness probes: every [`PROBE_INTERVAL`], and at once after a reload, send one SigV4-signed
//! `HEAD` of each configured bucket, on its primary and on each replica, (`HEAD /bucket/` path style, `HEAD /` virtual style) to its
//! endpoint and record the outcome in [`Health`]. `/ready` only reads the results: no request
//! ever waits on a probe.
//!
//! Runs on the admin thread, never on a shard. Cost per round: one small request per bucket,
//! concurrently, over the admin thread's own connection pool, each bounded by the bucket's
//! `connect_timeout_ms` + `first_byte_timeout_ms`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use yatagarasu_runtime::Snapshot;

use super::health::{Health, ProbeState};
use crate::pipeline::prepared::Prepared;
use crate::s3::request::{signer_for, upstream_target, Backend, ObjectRequest};
use crate::upstream::Upstream;

/// Time between two probe rounds.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the prober looks for a new config generation between rounds.
const RELOAD_POLL: Duration = Duration::from_millis(200);

/// Probe forever (the admin thread ends with the process).
pub async fn run(snapshot: Snapshot<Prepared>, health: Arc<Health>) {
    let upstream = Rc::new(Upstream::default());
    let mut seen: Option<(u64, Arc<Prepared>)> = None;
    loop {
        let generation = snapshot.generation();
        let prepared = snapshot.load_full();
        if seen.as_ref().map(|s| s.0) != Some(generation) {
            let old = seen.as_ref().map(|s| &s.1.config);
            health.set_buckets(prepared.config.buckets.iter().zip(&prepared.buckets).map(
                |(b, p)| {
                    let unchanged = old.and_then(|o| o.bucket(&b.name)).is_some_and(|o| {
                        o.s3.same_objects(&b.s3) && o.s3.replicas == b.s3.replicas
                    });
                    let replicas = p.replicas.iter().map(|r| r.name.clone()).collect();
                    (b.name.clone(), unchanged, replicas)
                },
            ));
            seen = Some((generation, prepared.clone()));
        }
        round(&upstream, &prepared, &health).await;
        let next = Instant::now() + PROBE_INTERVAL;
        while Instant::now() < next && snapshot.generation() == generation {
            monoio::time::sleep(RELOAD_POLL.min(next - Instant::now())).await;
        }
    }
}

/// Probe every backend (primaries and replicas) of `prepared` concurrently and record the
/// results.
async fn round(upstream: &Rc<Upstream>, prepared: &Arc<Prepared>, health: &Arc<Health>) {
    let mut tasks = Vec::with_capacity(prepared.buckets.len());
    for (index, p) in prepared.buckets.iter().enumerate() {
        for n in 0..=p.replicas.len() {
            let (upstream, prepared, health) = (upstream.clone(), prepared.clone(), health.clone());
            tasks.push(monoio::spawn(async move {
                let bucket = &prepared.config.buckets[index];
                let p = &prepared.buckets[index];
                let (s3, backend) = match n {
                    0 => (&bucket.s3, &p.primary),
                    n => (&bucket.s3.replicas[n - 1].s3, &p.replicas[n - 1]),
                };
                let state = probe(&upstream, s3, backend).await;
                health.record(&backend.name, state);
            }));
        }
    }
    for t in tasks {
        t.await;
    }
}

/// One `HEAD bucket` to backend `s3` (the primary's or a replica's settings).
async fn probe(
    upstream: &Upstream,
    s3: &crate::config::S3Config,
    p: &crate::pipeline::prepared::PreparedBackend,
) -> ProbeState {
    let pool_key: Rc<str> = Rc::from(p.pool_key.as_str());
    let signer = signer_for(s3);
    let backend = Backend {
        name: &p.name,
        s3,
        signer: &signer,
        target: upstream_target(s3, p, &pool_key),
    };
    // HEAD of the bucket itself (empty key).
    let req = ObjectRequest::new("HEAD", b"", None);
    match upstream.send_object(&backend, &req).await {
        Ok(resp) if resp.status >= 500 => {
            ProbeState::Failed(format!("S3 answered {}", resp.status))
        }
        Ok(resp) => ProbeState::Answered(resp.status),
        Err(e) => ProbeState::Failed(e.message.into_owned()),
    }
}
