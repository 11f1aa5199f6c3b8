//! Per-shard keep-alive pool of upstream connections, keyed by scheme/host/port (plus the TLS
//! trust configuration, so buckets with different CAs never share a connection).
//!
//! Hot path: a checkout is one `HashMap` probe and a `Vec::pop`; a return is a push. LIFO reuse
//! keeps the most recently used (most likely still open) connection in play. Bounded: at most
//! [`MAX_IDLE_PER_KEY`] idle connections per key; older ones are closed on return. A connection
//! idle longer than [`IDLE_TIMEOUT`] is closed at checkout instead of reused (S3 closes idle
//! connections after ~20 s). `!Sync`: one pool per shard, never shared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::stream::UpstreamStream;

/// Idle connections kept per key.
pub const MAX_IDLE_PER_KEY: usize = 128;
/// How long an idle connection is trusted to still be open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

/// The shard's idle upstream connections.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<Rc<str>, Vec<Idle>>>,
}

impl Pool {
    /// Take the most recently returned live connection for `key`, if any.
    pub fn take(&self, key: &str) -> Option<UpstreamStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() < IDLE_TIMEOUT {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Return a connection whose last response was read completely and allowed keep-alive.
    pub fn put(&self, key: &Rc<str>, stream: UpstreamStream) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key.clone()).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
        debug_assert!(list.len() <= MAX_IDLE_PER_KEY);
    }
}
