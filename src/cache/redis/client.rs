//! The Redis tier's client on one core: a single node (`cache.redis.url`) or a Redis Cluster
//! (`cache.redis.cluster_nodes`), behind one `call(key, command)`.
//!
//! Hot path of every Redis lookup and fill: standalone, one [`Conn::call`]; Cluster, one CRC16
//! of the key (the `crc16` crate's XMODEM, the Redis Cluster specification's key hash, ~1 ns
//! per byte) and one slot-table index on top.
//!
//! # Redis Cluster
//!
//! The slot map (16384 slots -> master) comes from `CLUSTER SLOTS`, asked of any reachable
//! node (seeds first: `cluster_nodes`) at start, every [`REFRESH_EVERY`], and at once (at most
//! every [`REFRESH_MIN_GAP`]) when a reply says `MOVED`, when a slot's master is unreachable,
//! or when a slot has no master. One connection per master per core; a node that leaves the
//! map is retired. `MOVED slot host:port` re-points the slot and retries there; `ASK slot
//! host:port` retries once there behind `ASKING`; at most [`MAX_REDIRECTS`] per command, all
//! within the command's deadline. A failover (a master dies, its replica is promoted) costs
//! misses for that master's slots until the next refresh sees the new master: about the
//! cluster's `cluster-node-timeout` plus [`REFRESH_MIN_GAP`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::conn::{Conn, Endpoint};
use crate::metrics::ShardMetrics;

/// Hash slots of a Redis Cluster.
pub const SLOTS: usize = 16384;
/// A Cluster's slot map is asked again this often even when nothing failed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Shortest gap between two slot-map refreshes.
pub const REFRESH_MIN_GAP: Duration = Duration::from_millis(250);
/// Redirections followed per command.
pub const MAX_REDIRECTS: usize = 3;

/// Starts a connection's task on the core (`ShardContext::spawn_service`).
pub type Spawner = Rc<dyn Fn(Rc<Conn>)>;

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of the key, or of its `{hash tag}`
/// when it has a non-empty one, mod 16384; Redis Cluster specification, "Keys distribution
/// model").
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS as u16
}

/// `CLUSTER SLOTS` reply -> (first slot, last slot, master host, master port) per range. An
/// empty host means the node that answered (`fallback`). `None` if the reply is not that shape.
pub fn parse_slots(v: &Value, fallback: &str) -> Option<Vec<(u16, u16, String, u16)>> {
    let Value::Array(ranges) = v else {
        return None;
    };
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let Value::Array(items) = r else {
            return None;
        };
        let int = |v: &Value| match v {
            Value::Int(i) => u16::try_from(*i).ok(),
            _ => None,
        };
        let (first, last) = (int(items.first()?)?, int(items.get(1)?)?);
        let Value::Array(master) = items.get(2)? else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(h) => String::from_utf8(h.clone()).ok()?,
            Value::SimpleString(h) => h.clone(),
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            fallback.to_owned()
        } else {
            host
        };
        let port = int(master.get(1)?)?;
        if usize::from(last) >= SLOTS || first > last {
            return None;
        }
        out.push((first, last, host, port));
    }
    Some(out)
}

/// Why a command got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The node's connection is down or its queue full: nothing was sent.
    Unavailable,
    /// Sent, but no usable reply by the deadline (timeout, broken connection, redirections).
    NoReply,
}

/// A cluster redirection in an error reply.
enum Redirect {
    Moved(u16, String),
    Ask(String),
}

fn redirect(v: &Value) -> Option<Redirect> {
    let Value::ServerError(e) = v else {
        return None;
    };
    let mut parts = e.details()?.split_whitespace();
    let slot = parts.next()?.parse::<u16>().ok()?;
    let addr = parts.next()?.to_owned();
    match e.code() {
        "MOVED" => Some(Redirect::Moved(slot, addr)),
        "ASK" => Some(Redirect::Ask(addr)),
        _ => None,
    }
}

/// One core's way to Redis (module doc).
pub enum Client {
    /// `cache.redis.url`.
    Single(Rc<Conn>),
    /// `cache.redis.cluster_nodes`.
    Cluster(Rc<Cluster>),
}

impl Client {
    /// Send `packed` (one command on `key`) and wait for its reply until `deadline`.
    pub async fn call(
        &self,
        key: &[u8],
        packed: &[u8],
        deadline: Instant,
    ) -> Result<Value, Failure> {
        match self {
            Client::Single(c) => {
                if !c.is_up() {
                    return Err(Failure::Unavailable);
                }
                c.call(packed, false, deadline)
                    .await
                    .ok_or(Failure::NoReply)
            }
            Client::Cluster(c) => c.call(key, packed, deadline).await,
        }
    }

    /// Whether a command on `key` would be sent now (its node's connection is up).
    pub fn available(&self, key: &[u8]) -> bool {
        match self {
            Client::Single(c) => c.is_up(),
            Client::Cluster(c) => c.conn_for(slot_of(key)).is_some_and(|c| c.is_up()),
        }
    }
}

/// One core's view of a Redis Cluster (module doc).
pub struct Cluster {
    /// Credentials and TLS of every node; host and port are replaced per node.
    template: Endpoint,
    seeds: Vec<(String, u16)>,
    timeout: Duration,
    nodes: RefCell<HashMap<String, Rc<Conn>>>,
    /// Slot -> master connection (`None`: no master known).
    slots: RefCell<Vec<Option<Rc<Conn>>>>,
    refresh_asked: Cell<bool>,
    last_refresh: Cell<Option<Instant>>,
    /// A slot map was applied at least once.
    last_refresh_ok: Cell<bool>,
    spawn: Spawner,
    metrics: Arc<ShardMetrics>,
}

impl Cluster {
    /// A cluster client seeded with `seeds`; connects to the seeds now and maps slots once
    /// [`Cluster::run`] runs.
    pub fn new(
        template: Endpoint,
        seeds: Vec<(String, u16)>,
        timeout: Duration,
        spawn: Spawner,
        metrics: Arc<ShardMetrics>,
    ) -> Rc<Cluster> {
        let c = Rc::new(Cluster {
            template,
            seeds,
            timeout,
            nodes: RefCell::default(),
            slots: RefCell::new(vec![None; SLOTS]),
            refresh_asked: Cell::new(true),
            last_refresh: Cell::new(None),
            last_refresh_ok: Cell::new(false),
            spawn,
            metrics,
        });
        for (host, port) in c.seeds.clone() {
            c.node(&host, port);
        }
        c
    }

    /// The connection to `host:port`, made (and its task started) if new.
    fn node(&self, host: &str, port: u16) -> Rc<Conn> {
        let addr = format!("{host}:{port}");
        if let Some(c) = self.nodes.borrow().get(&addr) {
            return c.clone();
        }
        let mut e = self.template.clone();
        e.host = host.to_owned();
        e.port = port;
        let conn = Conn::new(e, self.timeout, self.metrics.clone());
        self.nodes.borrow_mut().insert(addr, conn.clone());
        (self.spawn)(conn.clone());
        conn
    }

    fn node_at(&self, addr: &str) -> Option<Rc<Conn>> {
        let (host, port) = addr.rsplit_once(':')?;
        Some(self.node(host, port.parse().ok()?))
    }

    fn conn_for(&self, slot: u16) -> Option<Rc<Conn>> {
        self.slots.borrow()[usize::from(slot)].clone()
    }

    async fn call(&self, key: &[u8], packed: &[u8], deadline: Instant) -> Result<Value, Failure> {
        let slot = slot_of(key);
        let Some(mut conn) = self.conn_for(slot).filter(|c| c.is_up()) else {
            self.refresh_asked.set(true);
            return Err(Failure::Unavailable);
        };
        let mut asking = false;
        for _ in 0..=MAX_REDIRECTS {
            let v = match conn.call(packed, asking, deadline).await {
                Some(v) => v,
                None => {
                    if !conn.is_up() {
                        self.refresh_asked.set(true);
                    }
                    return Err(Failure::NoReply);
                }
            };
            let Some(r) = redirect(&v) else {
                return Ok(v);
            };
            self.metrics.redis.redirects.inc();
            match r {
                Redirect::Moved(s, addr) => {
                    let Some(next) = self.node_at(&addr) else {
                        return Err(Failure::NoReply);
                    };
                    self.slots.borrow_mut()[usize::from(s) % SLOTS] = Some(next.clone());
                    self.refresh_asked.set(true);
                    conn = next;
                    asking = false;
                }
                Redirect::Ask(addr) => {
                    let Some(next) = self.node_at(&addr) else {
                        return Err(Failure::NoReply);
                    };
                    conn = next;
                    asking = true;
                }
            }
            if !conn.is_up() {
                return Err(Failure::NoReply);
            }
        }
        Err(Failure::NoReply)
    }

    /// Keep the slot map current until the shard drains (module doc). Run it with
    /// `ShardContext::spawn_service`.
    pub async fn run(self: Rc<Self>) {
        loop {
            let due = self
                .last_refresh
                .get()
                .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
            if self.refresh_asked.get() || due {
                self.refresh_asked.set(false);
                if self.refresh().await {
                    self.last_refresh_ok.set(true);
                } else {
                    // Nobody answered: ask again at the next turn.
                    self.refresh_asked.set(true);
                }
                self.last_refresh.set(Some(Instant::now()));
            }
            // Until the first map arrives, lookups skip Redis: ask again soon.
            let gap = if self.last_refresh_ok.get() {
                REFRESH_MIN_GAP
            } else {
                Duration::from_millis(20)
            };
            monoio::time::sleep(gap).await;
        }
    }

    /// Ask one reachable node for the slot map and apply it; whether a node answered.
    async fn refresh(&self) -> bool {
        let mut packed = Vec::new();
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .write_packed_command(&mut packed);
        // Known nodes first (they are connected), then the seeds.
        let mut candidates: Vec<Rc<Conn>> = self.nodes.borrow().values().cloned().collect();
        candidates.sort_by_key(|c| !c.is_up());
        for conn in candidates {
            if !conn.is_up() {
                continue;
            }
            let deadline = Instant::now() + self.timeout.max(Duration::from_millis(200));
            let Some(v) = conn.call(&packed, false, deadline).await else {
                continue;
            };
            let host = conn.addr();
            let host = host.rsplit_once(':').map_or("", |(h, _)| h);
            let Some(ranges) = parse_slots(&v, host) else {
                continue;
            };
            self.apply(&ranges);
            return true;
        }
        // No connection is up yet: make sure every seed has one trying.
        for (host, port) in self.seeds.clone() {
            self.node(&host, port);
        }
        false
    }

    fn apply(&self, ranges: &[(u16, u16, String, u16)]) {
        let mut map: Vec<Option<Rc<Conn>>> = vec![None; SLOTS];
        let mut used: HashMap<String, ()> = HashMap::new();
        for (first, last, host, port) in ranges {
            let conn = self.node(host, *port);
            used.insert(conn.addr(), ());
            for s in *first..=*last {
                map[usize::from(s)] = Some(conn.clone());
            }
        }
        if map.iter().any(Option::is_none) {
            self.refresh_asked.set(true);
        }
        *self.slots.borrow_mut() = map;
        // Nodes no longer masters (a failed-over master, a removed node), seeds excepted:
        // retire them so their tasks end.
        let seeds: Vec<String> = self.seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        self.nodes.borrow_mut().retain(|addr, conn| {
            let keep = used.contains_key(addr) || seeds.contains(addr);
            if !keep {
                conn.retire();
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(
            slot_of(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384
        );
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn moved_and_ask_replies_are_redirections() {
        let parse = |b: &[u8]| redis::parse_redis_value(b).expect("parses");
        match redirect(&parse(b"-MOVED 3999 127.0.0.1:6381\r\n")) {
            Some(Redirect::Moved(3999, addr)) => assert_eq!(addr, "127.0.0.1:6381"),
            _ => panic!("MOVED not understood"),
        }
        assert!(matches!(
            redirect(&parse(b"-ASK 12 10.0.0.2:7002\r\n")),
            Some(Redirect::Ask(a)) if a == "10.0.0.2:7002"
        ));
        assert!(redirect(&parse(b"-ERR wrong type\r\n")).is_none());
        assert!(redirect(&parse(b"+OK\r\n")).is_none());
    }

    #[test]
    fn a_cluster_slots_reply_maps_ranges_to_masters() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let r = parse_slots(&reply, "10.0.0.9").expect("parses");
        assert_eq!(
            r,
            vec![
                (0, 5460, "10.0.0.1".to_owned(), 7000),
                (5461, 16383, "10.0.0.9".to_owned(), 7001)
            ]
        );
        assert!(parse_slots(&Value::Int(1), "h").is_none());
    }
}
