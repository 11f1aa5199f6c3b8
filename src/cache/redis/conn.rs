//! One connection from one core to one Redis node: RESP2 over a monoio `TcpStream` (or rustls
//! through monoio-rustls for `rediss://`), commands packed and non-bulk replies parsed by the
//! `redis` crate (default features off: its async client needs tokio, DESIGN section 3), with
//! auto-pipelining, a per-command deadline and reconnection with capped, jittered backoff.
//!
//! Hot path of every Redis lookup and fill. Cost per command: one packed-command append to
//! the outgoing buffer and one oneshot allocation; per *batch* of commands one `write` and as
//! many `read`s as the replies need (auto-pipelining: every command queued while the previous
//! batch was on the wire goes out in the next single write, so 50 concurrent lookups cost ~2
//! syscalls each way, not 100). Replies are framed here: a bulk reply (a GET's value) is one
//! copy out of the read buffer, or read from the socket into its own exact-size buffer when it
//! is large, and becomes the entry's `Bytes` without another copy; other replies are parsed by
//! `redis::parse_redis_value` ([`Replies`] says why not `redis::Parser`).
//!
//! # Lifecycle
//!
//! [`Conn::run`] (a task on the core, ended when the shard drains) connects, sends AUTH,
//! SELECT and PING (a server that accepts but does not answer is not up), then serves batches
//! until the connection breaks: EOF, an I/O error, a reply that does not parse, or a batch not
//! answered within `max(4 x timeout_ms, 250 ms)` (a hung server). [`SUSPECT_AFTER`] caller
//! timeouts in a row already make the node skipped until a reply comes; an idle connection is
//! PINGed every [`IDLE_PING`], so a server that went away is noticed without traffic. Then
//! every queued and in-flight command is failed at once (a miss for its caller), the node is
//! marked *down* and a reconnect is attempted after a backoff of `min(2 s, 50 ms * 2^n)` with
//! full jitter (so fills resume within ~2 s of Redis coming back, DESIGN section 6.1 asks 10).
//! While down, [`Conn::call`] returns at once without I/O: a dead Redis adds no
//! latency to a request.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use redis::Value;
use rustls::pki_types::ServerName;

use crate::http::io::{read_more, write_all};
use crate::metrics::ShardMetrics;
use crate::upstream::dns::Resolver;
use crate::upstream::stream::UpstreamStream;

/// Bytes of packed commands a connection queues before it refuses more (fills are dropped and
/// counted; lookups become misses).
pub const QUEUE_BYTES: usize = 64 << 20;
/// Commands a connection keeps waiting for replies (queued + in flight) before it refuses more.
pub const MAX_PENDING: usize = 8192;
/// Longest a connect (resolve + TCP + TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First reconnect backoff; doubled per failed attempt up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Longest reconnect backoff.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// An idle connection sends a PING this often.
pub const IDLE_PING: Duration = Duration::from_secs(1);
/// Consecutive caller timeouts after which a node is skipped without waiting for its
/// connection to be declared broken.
pub const SUSPECT_AFTER: u32 = 3;
/// How often one connection logs the same kind of failure.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where and how to connect: one node, with the URL's credentials.
#[derive(Clone)]
pub struct Endpoint {
    /// Host name or IP literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `rediss://`: TLS with the system roots (rustls-native-certs, which honours
    /// `SSL_CERT_FILE`).
    pub tls: Option<Rc<monoio_rustls::TlsConnector>>,
    /// ACL user (Redis 6+), if any.
    pub username: Option<String>,
    /// Password (`AUTH`), if any.
    pub password: Option<String>,
    /// Database (`SELECT`; 0 skips it, and Redis Cluster has only 0).
    pub db: i64,
    /// Largest reply accepted, bytes: a longer bulk string, or a partial reply that grows past
    /// it, breaks the connection (a hostile or confused server cannot make a core allocate
    /// what it announces). The tier sets it to its item limit plus metadata slack.
    pub max_reply: usize,
}

impl Endpoint {
    /// `host:port`, as Redis Cluster names nodes.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Where a reply goes.
enum Reply {
    /// Nobody waits (`ASKING`, idle PINGs): an error reply is only counted.
    Discard,
    /// A caller waits, at most until its deadline.
    To(oneshot::Sender<Value>),
}

#[derive(Default)]
struct Queue {
    /// Packed commands not yet written.
    out: Vec<u8>,
    /// One entry per command in `out`, in order.
    replies: Vec<Reply>,
    /// Commands written whose replies have not been read, in order.
    in_flight: usize,
}

/// Whether a connection takes commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connecting, or backing off after a failure: commands are refused at once.
    Down,
    /// Connected and past AUTH/SELECT.
    Up,
}

/// One connection to one Redis node (module doc). `!Send`: lives on one core.
pub struct Conn {
    endpoint: Endpoint,
    /// A batch not answered within this long breaks the connection (a hung server).
    io_timeout: Duration,
    queue: RefCell<Queue>,
    wake: Notify,
    state: Cell<State>,
    /// Set when the cluster map no longer uses this node: [`Conn::run`] ends.
    retired: Cell<bool>,
    /// Caller timeouts since the last reply; at [`SUSPECT_AFTER`] the node is treated as down
    /// until a reply arrives (or the connection breaks and is reopened).
    timeouts_in_row: Cell<u32>,
    resolver: Resolver,
    metrics: Arc<ShardMetrics>,
    last_log: Cell<Option<Instant>>,
}

impl Conn {
    /// A connection to `endpoint`, down until [`Conn::run`] connects it. `timeout` is
    /// `cache.redis.timeout_ms`; a batch may take `max(4 x timeout, 250 ms)` before the
    /// connection is declared hung.
    pub fn new(endpoint: Endpoint, timeout: Duration, metrics: Arc<ShardMetrics>) -> Rc<Conn> {
        metrics.redis.connections.add(1);
        Rc::new(Conn {
            endpoint,
            io_timeout: (timeout * 4).max(Duration::from_millis(250)),
            queue: RefCell::default(),
            wake: Notify::default(),
            state: Cell::new(State::Down),
            retired: Cell::new(false),
            timeouts_in_row: Cell::new(0),
            resolver: Resolver::default(),
            metrics,
            last_log: Cell::new(None),
        })
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> String {
        self.endpoint.addr()
    }

    /// Whether the connection takes commands now: connected, and not [`SUSPECT_AFTER`]
    /// timeouts in a row without a reply since.
    pub fn is_up(&self) -> bool {
        self.state.get() == State::Up && self.timeouts_in_row.get() < SUSPECT_AFTER
    }

    /// Stop using this connection: its task ends and queued commands fail.
    pub fn retire(&self) {
        if !self.retired.replace(true) {
            self.metrics.redis.connections.add(-1);
            if self.state.get() == State::Up {
                self.metrics.redis.connections_up.add(-1);
            }
            self.state.set(State::Down);
            self.fail_queued();
            self.wake.notify();
        }
    }

    /// Send `packed` (one command; with `asking`, preceded by `ASKING` for a cluster ASK
    /// redirection) and wait for its reply until `deadline`. `None`: down, queue full, timed
    /// out (counted) or the connection broke; never blocks past the deadline.
    pub async fn call(&self, packed: &[u8], asking: bool, deadline: Instant) -> Option<Value> {
        let rx = {
            let mut q = self.queue.borrow_mut();
            if !self.is_up()
                || q.out.len() + packed.len() > QUEUE_BYTES
                || q.replies.len() + q.in_flight + 2 > MAX_PENDING
            {
                return None;
            }
            if asking {
                q.out.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
                q.replies.push(Reply::Discard);
            }
            q.out.extend_from_slice(packed);
            let (tx, rx) = oneshot::channel();
            q.replies.push(Reply::To(tx));
            rx
        };
        self.wake.notify();
        match monoio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(_)) => None,
            Err(_) => {
                self.metrics.redis.timeouts.inc();
                self.timeouts_in_row.set(self.timeouts_in_row.get() + 1);
                None
            }
        }
    }

    /// Fail every queued command (its caller sees a miss).
    fn fail_queued(&self) {
        let mut q = self.queue.borrow_mut();
        q.out.clear();
        q.replies.clear();
        q.in_flight = 0;
    }

    /// Log `what` at most once per [`LOG_INTERVAL`] for this connection.
    fn log_failure(&self, what: &str, why: &str) {
        let now = Instant::now();
        if self
            .last_log
            .get()
            .is_some_and(|t| now.duration_since(t) < LOG_INTERVAL)
        {
            return;
        }
        self.last_log.set(Some(now));
        tracing::warn!(
            redis = %self.addr(),
            error = why,
            "{what}; the Redis tier is skipped on this node until it reconnects (lookups are misses, fills are dropped)"
        );
    }

    /// Connect, serve until the connection breaks, back off, repeat, until retired. Run it with
    /// `ShardContext::spawn_service` (it ends when the shard drains).
    pub async fn run(self: Rc<Self>) {
        let mut failures = 0u32;
        let mut seed = jitter_seed(&self);
        while !self.retired.get() {
            match self.open().await {
                Ok(stream) if !self.retired.get() => {
                    if failures > 0 {
                        self.metrics.redis.reconnects.inc();
                        tracing::info!(redis = %self.addr(), "Redis connection restored");
                    }
                    failures = 0;
                    self.timeouts_in_row.set(0);
                    self.state.set(State::Up);
                    self.metrics.redis.connections_up.add(1);
                    let why = self.serve(stream).await;
                    if self.state.get() == State::Up {
                        self.metrics.redis.connections_up.add(-1);
                    }
                    self.state.set(State::Down);
                    self.fail_queued();
                    if self.retired.get() {
                        return;
                    }
                    self.metrics.redis.errors.inc();
                    self.log_failure("Redis connection lost", &why);
                }
                Ok(_) => return,
                Err(why) => {
                    self.metrics.redis.errors.inc();
                    self.log_failure("cannot connect to Redis", &why);
                }
            }
            failures = failures.saturating_add(1);
            let cap = BACKOFF_BASE
                .saturating_mul(1 << failures.min(10))
                .min(BACKOFF_CAP);
            seed = splitmix(seed);
            let delay = cap.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64);
            monoio::time::sleep(delay.max(Duration::from_millis(5))).await;
        }
    }

    /// Resolve, connect, TLS, AUTH, SELECT, PING; within [`CONNECT_TIMEOUT`] (+ `io_timeout`
    /// for the handshake commands).
    async fn open(&self) -> Result<UpstreamStream, String> {
        let e = &self.endpoint;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let addrs =
            match monoio::time::timeout_at(deadline.into(), self.resolver.resolve(&e.host, e.port))
                .await
            {
                Ok(Ok(a)) => a,
                Ok(Err(err)) => return Err(format!("resolve {}: {}", e.host, err.kind())),
                Err(_) => return Err("connect timed out".into()),
            };
        let mut last = String::from("no address");
        let mut tcp = None;
        for addr in addrs {
            match monoio::time::timeout_at(deadline.into(), TcpStream::connect_addr(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    tcp = Some(s);
                    break;
                }
                Ok(Err(err)) => last = err.kind().to_string(),
                Err(_) => return Err("connect timed out".into()),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let mut stream = match &e.tls {
            None => UpstreamStream::Plain(tcp),
            Some(connector) => {
                let name = ServerName::try_from(e.host.clone())
                    .map_err(|_| "host is not a valid TLS server name".to_owned())?;
                let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                match monoio::time::timeout_at(deadline.into(), connector.connect(name, tcp)).await
                {
                    Ok(Ok(s)) => UpstreamStream::tls(s, fd),
                    Ok(Err(err)) => return Err(format!("TLS handshake failed: {err}")),
                    Err(_) => return Err("TLS handshake timed out".into()),
                }
            }
        };
        let mut hello = Vec::new();
        let mut replies = 0;
        if let Some(pw) = &e.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &e.username {
                auth.arg(user);
            }
            auth.arg(pw).write_packed_command(&mut hello);
            replies += 1;
        }
        if e.db != 0 {
            redis::cmd("SELECT")
                .arg(e.db)
                .write_packed_command(&mut hello);
            replies += 1;
        }
        // A server that accepts but does not answer (stopped, overloaded) is not up.
        redis::cmd("PING").write_packed_command(&mut hello);
        replies += 1;
        let mut parser = Replies::new(self.endpoint.max_reply);
        let exchange = async {
            write_all(&mut stream, &mut hello)
                .await
                .map_err(|e| e.kind().to_string())?;
            for _ in 0..replies {
                match parser.next(&mut stream).await? {
                    Value::ServerError(err) => {
                        // Never the password: the code and detail only name the failure.
                        return Err(format!(
                            "AUTH/SELECT refused: {} {}",
                            err.code(),
                            err.details().unwrap_or_default()
                        ));
                    }
                    _ => continue,
                }
            }
            Ok::<(), String>(())
        };
        match monoio::time::timeout(self.io_timeout, exchange).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(why)) => Err(why),
            Err(_) => Err("AUTH/SELECT timed out".into()),
        }
    }

    /// Write queued batches and hand out their replies until the connection breaks or the
    /// connection is retired; why it ended.
    async fn serve(&self, mut stream: UpstreamStream) -> String {
        let mut parser = Replies::new(self.endpoint.max_reply);
        let mut out = Vec::new();
        let mut waiting: VecDeque<Reply> = VecDeque::new();
        loop {
            // An idle connection is PINGed, so a server that went away is noticed (and the
            // node marked down) without a request paying for it.
            let idle = monoio::time::timeout(IDLE_PING, self.wake.wait())
                .await
                .is_err();
            if self.retired.get() {
                return "retired".into();
            }
            {
                let mut q = self.queue.borrow_mut();
                if idle && q.replies.is_empty() {
                    q.out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
                    q.replies.push(Reply::Discard);
                }
                if q.replies.is_empty() {
                    continue;
                }
                std::mem::swap(&mut out, &mut q.out);
                q.in_flight += q.replies.len();
                waiting.extend(q.replies.drain(..));
            }
            let batch = async {
                write_all(&mut stream, &mut out)
                    .await
                    .map_err(|e| format!("write: {:?}", e.kind()))?;
                out.clear();
                while let Some(reply) = waiting.pop_front() {
                    let v = parser.next(&mut stream).await?;
                    let mut q = self.queue.borrow_mut();
                    q.in_flight = q.in_flight.saturating_sub(1);
                    drop(q);
                    self.timeouts_in_row.set(0);
                    match reply {
                        Reply::To(tx) => {
                            let _ = tx.send(v);
                        }
                        Reply::Discard => {
                            if matches!(v, Value::ServerError(_)) {
                                self.metrics.redis.errors.inc();
                            }
                        }
                    }
                }
                Ok::<(), String>(())
            };
            match monoio::time::timeout(self.io_timeout, batch).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return why,
                Err(_) => {
                    self.metrics.redis.timeouts.inc();
                    return format!("no reply within {} ms", self.io_timeout.as_millis());
                }
            }
            if self.retired.get() {
                return "retired".into();
            }
            // Commands queued while this batch was on the wire: the next turn takes them.
            if !self.queue.borrow().replies.is_empty() {
                self.wake.notify();
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.retired.get() {
            self.metrics.redis.connections.add(-1);
        }
    }
}

/// Replies read off a stream. Each reply is framed here (RESP2: the type byte, the line, a bulk
/// string's length, an array's elements); a bulk string, the reply of every GET, is taken
/// straight out of the read buffer, and one of [`DIRECT_BULK`] bytes or more is read from the
/// socket into a buffer of its exact size. Every other reply is parsed by
/// `redis::parse_redis_value` on its exact bytes. Why not `redis::Parser` over the stream: it
/// copies each reply into its own buffer, grown 8 KiB at a time and zero-filled, re-runs the
/// partial parse per chunk and copies a bulk string out again
/// (`perf/results/2026-12-02-redis-hit.md`: memmove and memset were 12% of a 100 KiB Redis hit).
struct Replies {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    pos: usize,
    /// Largest reply accepted ([`Endpoint::max_reply`]).
    max: usize,
}

/// Bulk replies at least this long are read into their own exact-size buffer.
pub const DIRECT_BULK: usize = 16 << 10;

/// Bytes that are not a RESP2 reply (the connection is out of step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotResp;

/// Length of the one complete RESP2 reply at the start of `b`: `Ok(None)` if `b` holds only part
/// of it, `Err` if it is not RESP2. Arrays nest at most 8 deep (`CLUSTER SLOTS` needs 3).
pub fn frame(b: &[u8], depth: u8) -> Result<Option<usize>, NotResp> {
    let Some(cr) = b.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let after = cr + 2;
    let int = || -> Result<i64, NotResp> {
        std::str::from_utf8(&b[1..cr])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(NotResp)
    };
    match b.first() {
        Some(b'+' | b'-' | b':') => Ok(Some(after)),
        Some(b'$') => match int()? {
            -1 => Ok(Some(after)),
            n if n < 0 => Err(NotResp),
            n => {
                let total = after + n as usize + 2;
                Ok((b.len() >= total).then_some(total))
            }
        },
        Some(b'*') if depth < 8 => {
            let n = int()?;
            let mut at = after;
            for _ in 0..n.max(0) {
                match frame(&b[at..], depth + 1)? {
                    Some(k) => at += k,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(NotResp),
    }
}

/// A bulk reply's header, when its line is complete at the start of `b`: (header bytes, body
/// bytes). `None` for anything else (other types, nil, a partial line).
fn bulk_header(b: &[u8]) -> Option<(usize, usize)> {
    if b.first() != Some(&b'$') {
        return None;
    }
    let cr = b.windows(2).position(|w| w == b"\r\n")?;
    let n: usize = std::str::from_utf8(&b[1..cr]).ok()?.parse().ok()?;
    Some((cr + 2, n))
}

impl Replies {
    fn new(max: usize) -> Replies {
        Replies {
            buf: Vec::new(),
            pos: 0,
            max,
        }
    }

    /// The next reply, reading as needed. Errors: EOF, I/O errors and replies that do not
    /// parse (the connection is then out of step and must close).
    async fn next(&mut self, stream: &mut UpstreamStream) -> Result<Value, String> {
        loop {
            let b = &self.buf[self.pos..];
            match frame(b, 0) {
                Ok(Some(n)) => {
                    let reply = &b[..n];
                    let v = match bulk_header(reply) {
                        Some((h, len)) => Value::BulkString(reply[h..h + len].to_vec()),
                        None => redis::parse_redis_value(reply)
                            .map_err(|e| format!("reply does not parse: {e}"))?,
                    };
                    self.pos += n;
                    return Ok(v);
                }
                Ok(None) => {}
                Err(NotResp) => return Err("reply is not RESP2".into()),
            }
            let bulk = bulk_header(b);
            if bulk.is_some_and(|(_, len)| len > self.max) || b.len() > self.max {
                return Err(format!("reply over {} bytes", self.max));
            }
            if let Some((h, len)) = bulk.filter(|(_, len)| *len >= DIRECT_BULK) {
                return self.direct(stream, h, len).await;
            }
            // Keep the unread part at the front, then read more after it.
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.fill(stream).await?;
        }
    }

    async fn fill(&mut self, stream: &mut UpstreamStream) -> Result<(), String> {
        match read_more(stream, &mut self.buf, 64 << 10).await {
            Ok(0) => Err("closed by Redis".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {}", e.kind())),
        }
    }

    /// A bulk reply of `len` bytes whose `h`-byte header starts at `pos`, read into a buffer of
    /// its own: what is buffered is copied once, the rest comes straight from the socket. Only
    /// called when the reply is not complete in the buffer, so nothing after it is buffered.
    async fn direct(
        &mut self,
        stream: &mut UpstreamStream,
        h: usize,
        len: usize,
    ) -> Result<Value, String> {
        let want = len + 2;
        let mut body = Vec::with_capacity(want);
        body.extend_from_slice(&self.buf[self.pos + h..]);
        self.buf.clear();
        self.pos = 0;
        while body.len() < want {
            let at = body.len();
            let (r, slice) = stream.read(body.slice_mut(at..want)).await;
            body = slice.into_inner();
            match r {
                Ok(0) => return Err("closed by Redis".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {}", e.kind())),
            }
        }
        if body[len..] != *b"\r\n" {
            return Err("bulk reply not terminated by CRLF".into());
        }
        body.truncate(len);
        Ok(Value::BulkString(body))
    }
}

/// A wake-up for the one task that waits on it (the connection's writer).
#[derive(Default)]
struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

fn jitter_seed(conn: &Conn) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Each connection lives at its own address: cores and nodes start apart.
    t ^ (conn as *const Conn as u64).rotate_left(17)
}

/// SplitMix64 step: the jitter of reconnect backoffs (not cryptographic; it only spreads
/// reconnects of many cores and nodes apart).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn replies_are_framed_exactly_and_partial_ones_wait() {
        let cases: [&[u8]; 6] = [
            b"+OK\r\n",
            b"-MOVED 3999 127.0.0.1:6381\r\n",
            b":42\r\n",
            b"$-1\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"*2\r\n*3\r\n:0\r\n:5460\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n$0\r\n\r\n",
        ];
        for c in cases {
            let mut two = c.to_vec();
            two.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(
                frame(&two, 0),
                Ok(Some(c.len())),
                "{}",
                String::from_utf8_lossy(c)
            );
            for cut in 0..c.len() {
                assert_eq!(frame(&c[..cut], 0), Ok(None), "cut {cut} of {c:?}");
            }
        }
        assert!(frame(b"?what\r\n", 0).is_err());
        assert!(frame(b"$x\r\n", 0).is_err());
        assert!(frame(b"$-2\r\n", 0).is_err());
        let deep = "*1\r\n".repeat(9) + ":1\r\n";
        assert!(frame(deep.as_bytes(), 0).is_err());
    }
}
