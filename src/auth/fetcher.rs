//! The process-wide JWKS fetcher: fetches every JWKS URL of the current config at start, then
//! every `jwks_refresh_seconds`, and early (rate-limited by the store to once per 30 s) when a
//! shard saw an unknown `kid`. A failed fetch keeps the previous keys.
//!
//! Off the shards: it runs on the admin control thread (next to the readiness probes), with our
//! own upstream client (HTTPS, timeouts) and its own small pool, so no shard pays for key
//! downloads or their conversion (~10 us per key). Not on the hot path; one look at the
//! config's JWKS sources per second.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use yatagarasu_runtime::Snapshot;

use crate::pipeline::prepared::Prepared;
use crate::upstream::Upstream;

/// How often the fetcher looks for due or requested refreshes.
const TICK: Duration = Duration::from_secs(1);
/// Budget for one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Refresh the JWKS stores of `snapshot`'s current config, forever (the control thread ends
/// with the process).
pub async fn run(snapshot: Snapshot<Prepared>) {
    let upstream = Upstream::default();
    let mut fetched_at: HashMap<String, Instant> = HashMap::new();
    loop {
        let prepared = snapshot.load_full();
        for source in &prepared.jwks {
            let due = fetched_at
                .get(&source.url)
                .is_none_or(|at| at.elapsed() >= source.refresh)
                || source.store.wants_refresh();
            if !due {
                continue;
            }
            match super::fetch_jwks(&upstream, &source.url, source.tls.as_ref(), FETCH_TIMEOUT)
                .await
            {
                Ok(set) => {
                    let generation = source.store.replace(set);
                    tracing::info!(url = %source.url, jwks_generation = generation, keys = source.store.len(), "jwks refreshed");
                }
                Err(e) => {
                    tracing::warn!(url = %source.url, error = %e, "jwks refresh failed; keeping the previous keys")
                }
            }
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            source.store.mark_refreshed(now);
            fetched_at.insert(source.url.clone(), Instant::now());
        }
        monoio::time::sleep(TICK).await;
    }
}
