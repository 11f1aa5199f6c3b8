//! The Redis tier's control plane, off the cores: purges deleted in Redis and announced on
//! `cache.redis.purge_channel`, and the node's one subscription to that channel. Uses the
//! `redis` crate's own blocking client (a well-kept client is right here: this is not the data
//! path), on the admin purge's helper thread and on one subscriber thread per node.
//!
//! Not hot: a key purge is one connection and a few commands; a bucket or all-purge is one
//! `SCAN` cursor walk per master (`COUNT 1000`, never `KEYS`, which blocks Redis) with the
//! found keys `UNLINK`ed in pipelines of up to 1000 (one key per command, so a Cluster master
//! never sees a cross-slot command).
//!
//! # Purge messages
//!
//! JSON: `{"origin": "<node id>", "scope": "all"}`, `{"origin": ..., "scope": "bucket",
//! "bucket": "b"}`, `{"origin": ..., "scope": "object", "bucket": "b", "key_b64": "..."}`
//! (the object key's bytes, base64). A node ignores its own messages (it purged already).
//!
//! # A lost subscription
//!
//! A node whose subscription broke (Redis restarted, a network cut) may have missed purges.
//! When it subscribes again, it drops its memory and disk entries (`PurgeScope::All` on its
//! own tiers, not in Redis): it cannot prove any of them fresh, since a purge in the gap may
//! have named any. Redis itself needs nothing: every purge deletes its keys there before it is
//! published. The node then refills from Redis (cheap) rather than from S3. The first
//! subscription at start drops nothing: purges made while a node was stopped are not replayed
//! (documented in the README: purge again after a node that missed one restarts).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use redis::{ConnectionAddr, IntoConnectionInfo, Value};

use super::client::parse_slots;
use super::value::{bucket_prefix, match_prefix, redis_key};
use super::RedisSettings;
use crate::cache::entry::CacheKeyRef;
use crate::cache::tier::PurgeScope;

/// Longest a control-plane connect, read or write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys per `SCAN` step and per `UNLINK` pipeline.
const BATCH: usize = 1000;
/// First and largest wait between two subscription attempts.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A quiet subscription is checked with a PING this often.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A blocking connection to `host:port` with the URL's credentials (and `SELECT` db).
fn connect(s: &RedisSettings, host: &str, port: u16) -> Result<redis::Connection, String> {
    let info = s
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("cache.redis.url: {:?}", e.kind()))?;
    let addr = match info.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    let mut redis_info = info.redis_settings().clone();
    if s.cluster {
        redis_info = redis_info.set_db(0);
    }
    let info = info.set_addr(addr).set_redis_settings(redis_info);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let con = client
        .get_connection_with_timeout(IO_TIMEOUT)
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    con.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|_| con.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(con)
}

/// The first node that accepts a connection.
fn any_node(s: &RedisSettings) -> Result<(redis::Connection, String), String> {
    let mut last = String::from("no Redis node configured");
    for (h, p) in &s.nodes {
        match connect(s, h, *p) {
            Ok(c) => return Ok((c, h.clone())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Every master to scan: the URL's node, or every master of the Cluster's slot map.
fn masters(s: &RedisSettings) -> Result<Vec<redis::Connection>, String> {
    if !s.cluster {
        let (h, p) = &s.nodes[0];
        return Ok(vec![connect(s, h, *p)?]);
    }
    let (mut con, host) = any_node(s)?;
    let v: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut con)
        .map_err(|e| format!("CLUSTER SLOTS: {:?}", e.kind()))?;
    let ranges = parse_slots(&v, &host).ok_or("CLUSTER SLOTS: unexpected reply")?;
    let mut seen: Vec<(String, u16)> = Vec::new();
    for (_, _, h, p) in ranges {
        if !seen.contains(&(h.clone(), p)) {
            seen.push((h, p));
        }
    }
    seen.iter().map(|(h, p)| connect(s, h, *p)).collect()
}

/// `UNLINK` every key matching `pattern` on `con`; how many were deleted.
fn unlink_matching(con: &mut redis::Connection, pattern: &[u8]) -> Result<u64, String> {
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query(con)
            .map_err(|e| format!("SCAN: {:?}", e.kind()))?;
        deleted += unlink(con, &keys)?;
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `UNLINK` each of `keys` (one per command, pipelined); how many existed.
fn unlink(con: &mut redis::Connection, keys: &[Vec<u8>]) -> Result<u64, String> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("UNLINK").arg(k);
    }
    let counts: Vec<u64> = pipe
        .query(con)
        .map_err(|e| format!("UNLINK: {:?}", e.kind()))?;
    Ok(counts.iter().sum())
}

/// Delete what `scope` names in Redis, then publish it on the purge channel (module doc);
/// how many keys were deleted. Blocking (run it off the cores). Errors name the command and
/// the failure, never the URL.
pub fn purge(s: &RedisSettings, scope: &PurgeScope, origin: &str) -> Result<u64, String> {
    let mut deleted = 0;
    match scope {
        PurgeScope::Object(bucket, key) => {
            let exact = redis_key(&s.key_prefix, &CacheKeyRef::new(bucket, key, None));
            let mut versions = exact.clone();
            versions.extend_from_slice(b"\0v:");
            let pattern = match_prefix(&versions);
            if s.cluster {
                // The key and its versions hash to slots of any master: scan them all.
                for mut con in masters(s)? {
                    deleted += unlink(&mut con, std::slice::from_ref(&exact))?;
                    deleted += unlink_matching(&mut con, &pattern)?;
                }
            } else {
                let mut con = masters(s)?.remove(0);
                deleted += unlink(&mut con, std::slice::from_ref(&exact))?;
                deleted += unlink_matching(&mut con, &pattern)?;
            }
        }
        PurgeScope::Bucket(bucket) => {
            let pattern = match_prefix(bucket_prefix(&s.key_prefix, bucket).as_bytes());
            for mut con in masters(s)? {
                deleted += unlink_matching(&mut con, &pattern)?;
            }
        }
        PurgeScope::All => {
            let pattern = match_prefix(format!("{}obj:", s.key_prefix).as_bytes());
            for mut con in masters(s)? {
                deleted += unlink_matching(&mut con, &pattern)?;
            }
        }
    }
    publish(s, scope, origin)?;
    Ok(deleted)
}

/// Publish `scope` on the purge channel (in a Cluster, any node reaches every subscriber).
fn publish(s: &RedisSettings, scope: &PurgeScope, origin: &str) -> Result<(), String> {
    let (mut con, _) = any_node(s)?;
    redis::cmd("PUBLISH")
        .arg(&s.purge_channel)
        .arg(encode_message(scope, origin))
        .query::<i64>(&mut con)
        .map(|_| ())
        .map_err(|e| format!("PUBLISH: {:?}", e.kind()))
}

/// The purge message of `scope` from node `origin` (module doc).
pub fn encode_message(scope: &PurgeScope, origin: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    match scope {
        PurgeScope::All => serde_json::json!({"origin": origin, "scope": "all"}),
        PurgeScope::Bucket(b) => {
            serde_json::json!({"origin": origin, "scope": "bucket", "bucket": b})
        }
        PurgeScope::Object(b, k) => serde_json::json!({
            "origin": origin, "scope": "object", "bucket": b, "key_b64": b64.encode(k)
        }),
    }
    .to_string()
}

/// The (origin, scope) of a purge message, `None` if it is not one.
pub fn decode_message(payload: &[u8]) -> Option<(String, PurgeScope)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let origin = v["origin"].as_str()?.to_owned();
    let bucket = || v["bucket"].as_str().map(str::to_owned);
    let scope = match v["scope"].as_str()? {
        "all" => PurgeScope::All,
        "bucket" => PurgeScope::Bucket(bucket()?),
        "object" => {
            let key = base64::engine::general_purpose::STANDARD
                .decode(v["key_b64"].as_str()?)
                .ok()?;
            PurgeScope::Object(bucket()?, key)
        }
        _ => return None,
    };
    Some((origin, scope))
}

/// Start the node's subscriber thread: it subscribes to the purge channel, applies every
/// other node's purge with `apply` (this node's memory and disk tiers), resubscribes with
/// backoff when the subscription breaks and then applies `PurgeScope::All` (module doc),
/// until `stop` is set (checked every second).
pub fn subscribe(
    s: RedisSettings,
    origin: String,
    apply: impl Fn(PurgeScope) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("yata-redis-sub".into())
        .spawn(move || {
            let mut had_subscription = false;
            let mut wait = RETRY_MIN;
            let mut logged: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let why = match any_node(&s) {
                    Ok((mut con, _)) => {
                        let r = listen(&mut con, &s, &origin, &apply, &stop, &mut || {
                            if had_subscription {
                                tracing::warn!("Redis purge subscription restored; purges may have been missed, so this node's memory and disk entries are dropped");
                                apply(PurgeScope::All);
                            } else {
                                tracing::info!(channel = %s.purge_channel, "subscribed to Redis purges");
                            }
                            had_subscription = true;
                        });
                        wait = RETRY_MIN;
                        r
                    }
                    Err(e) => e,
                };
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %why, "Redis purge subscription down; retrying");
                    logged = Some(Instant::now());
                }
                #[allow(clippy::disallowed_methods)] // the subscriber thread, never a shard
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_MAX);
            }
        })
}

/// Subscribe on `con` and apply messages until the connection fails or `stop`; why it ended.
fn listen(
    con: &mut redis::Connection,
    s: &RedisSettings,
    origin: &str,
    apply: &impl Fn(PurgeScope),
    stop: &AtomicBool,
    subscribed: &mut dyn FnMut(),
) -> String {
    let mut ps = con.as_pubsub();
    if let Err(e) = ps.subscribe(&s.purge_channel) {
        return format!("SUBSCRIBE: {:?}", e.kind());
    }
    if let Err(e) = ps.set_read_timeout(Some(Duration::from_secs(1))) {
        return e.to_string();
    }
    subscribed();
    let mut last_seen = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match ps.get_message() {
            Ok(msg) => {
                last_seen = Instant::now();
                match decode_message(msg.get_payload_bytes()) {
                    Some((from, _)) if from == origin => {}
                    Some((_, scope)) => apply(scope),
                    None => {
                        tracing::warn!("ignored a message on the purge channel that is not a purge")
                    }
                }
            }
            Err(e) if e.is_timeout() => {
                if last_seen.elapsed() >= PING_EVERY {
                    if let Err(e) = ps.ping::<Value>() {
                        return format!("PING: {:?}", e.kind());
                    }
                    last_seen = Instant::now();
                }
            }
            Err(e) => return format!("subscription: {:?}", e.kind()),
        }
    }
    String::from("stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_messages_round_trip_and_junk_is_refused() {
        for scope in [
            PurgeScope::All,
            PurgeScope::Bucket("media".into()),
            PurgeScope::Object("media".into(), b"a/\xff\x00b".to_vec()),
        ] {
            let m = encode_message(&scope, "node-1");
            assert_eq!(
                decode_message(m.as_bytes()),
                Some(("node-1".to_owned(), scope))
            );
        }
        assert_eq!(decode_message(b"hello"), None);
        assert_eq!(decode_message(br#"{"origin":"x","scope":"bucket"}"#), None);
    }
}
