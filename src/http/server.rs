//! The HTTP/1.1 server connection loop (RFC 9112): reads request heads under the configured
//! limits and timeouts, answers `Expect: 100-continue`, discards request bodies up to
//! `max_body_bytes`, hands each request to a [`Service`] in order (pipelining), and keeps the
//! connection alive between requests until the client, a limit, the idle timeout or a drain ends it.
//!
//! Slow and silent clients (DESIGN section 5): a connection's first request head must arrive
//! within `request_header_timeout_ms` of the accept (408, also when nothing at all was sent), so
//! idle sockets cannot hold connection slots for the keep-alive timeout; later heads get the
//! same budget from their first byte, idle gaps between requests `keepalive_timeout_ms`. Every
//! write to the client goes through [`Conn`]'s methods, which close a connection that accepts
//! no byte for `send_timeout_ms`. A request the service rejects without its body (a PUT to the
//! data plane) is answered at once and the body is drained for a bounded time, never read into
//! memory (so the client sees 405, not 413).
//!
//! Hot path. Per connection it holds one read buffer (4 KiB, growing only for large heads up to
//! `max_header_bytes`) and one write buffer for heads; per request it allocates only what
//! `httparse` -> `HeaderMap` needs. Timeouts wrap whole reads: a timed-out read closes the
//! connection, so losing the cancelled read's bytes is harmless (DESIGN section 3).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use yatagarasu_runtime::ShardContext;

use super::chunked::ChunkedDecoder;
use super::io::read_more;
use super::request::{parse_request_head, HeadError, Limits, RequestHead, Version};
use super::response::DateCache;
use super::small::{write_error, Answering};
use crate::error::{ErrorKind, ProxyError};

/// Bytes reserved per read from a client socket.
const READ_CHUNK_BYTES: usize = 4096;

/// Connection settings read from the current config snapshot before each request.
#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    /// Request limits (DESIGN section 5).
    pub limits: Limits,
    /// How long an idle keep-alive connection waits for the next request.
    pub keepalive_timeout: Duration,
    /// How long a request head (and a request body) may take to arrive once it started; for
    /// the first request of a connection, counted from the accept.
    pub request_header_timeout: Duration,
    /// How long one write to the client may accept no byte before the connection is closed.
    pub send_timeout: Duration,
}

/// One client connection: the socket, its read buffer (bytes received but not yet consumed,
/// possibly holding pipelined requests) and a reusable buffer for response heads.
pub struct Conn {
    /// The client socket.
    pub stream: TcpStream,
    /// The client's address as accepted (X-Forwarded-For handling comes with the logging issue).
    pub peer: SocketAddr,
    /// Received bytes not yet consumed.
    pub rbuf: Vec<u8>,
    /// Scratch buffer for response heads; reused across requests.
    pub wbuf: Vec<u8>,
    /// iovecs for head + body `writev`s, allocated by the first one and then reused.
    pub iovecs: Option<super::io::Iovecs>,
    /// Whether the response being written may keep the connection open: false when the client
    /// asked to close, for HTTP/1.0 without keep-alive, and while the shard drains.
    pub keep_alive: bool,
    /// Per-write deadline towards the client (`server.send_timeout_ms`), from the settings of
    /// the request being answered.
    pub send_timeout: Duration,
}

impl Conn {
    /// Write the whole of `wbuf` (then keep it, for reuse) within the send timeout per write.
    /// Errors: the socket's, or `TimedOut` when the client accepted nothing for
    /// `send_timeout`; either way the caller ends the connection.
    pub async fn flush(&mut self) -> io::Result<()> {
        super::io::write_all_within(&mut self.stream, &mut self.wbuf, self.send_timeout).await
    }

    /// Write the whole of `buf` (given back unchanged) within the send timeout per write.
    /// Errors as [`Conn::flush`].
    pub async fn send(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        super::io::write_all_within(&mut self.stream, buf, self.send_timeout).await
    }

    /// Write `wbuf` (the head) and then `body` in one `writev` where the socket takes it,
    /// within the send timeout per write (see [`super::io::write_head_and_body`]).
    pub async fn flush_with_body(&mut self, body: bytes::Bytes) -> io::Result<()> {
        super::io::write_head_and_body(
            &mut self.stream,
            &mut self.wbuf,
            &mut self.iovecs,
            body,
            self.send_timeout,
        )
        .await
    }
}

/// What a [`Service`] reports after writing a response.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// False when the response could not be completed (client or upstream failed mid-body) or
    /// announced `Connection: close`: the loop closes the connection.
    pub keep_alive: bool,
}

/// The request handler driven by [`serve`]. Implementations write the complete response to
/// `conn.stream` (head and body, honouring `conn.keep_alive` and HEAD) before returning.
#[allow(async_fn_in_trait)] // single-threaded (`!Send`) by design: one shard, one thread.
pub trait Service {
    /// Settings for the next request (read from the live config snapshot).
    fn settings(&self) -> ServerSettings;
    /// The shard's `Date` cache.
    fn dates(&self) -> &DateCache;
    /// Handle one request whose head is `head` and whose body was already consumed.
    async fn call(&self, head: &RequestHead, conn: &mut Conn) -> Outcome;
    /// A connection started being served (metrics). Default: nothing.
    fn connection_opened(&self) {}
    /// A connection ended, normally or because its task was dropped. Default: nothing.
    fn connection_closed(&self) {}
    /// Whether `head` is answered without reading its body (e.g. a method the service never
    /// serves: 405 must not become 413 because of the body's size). The loop then calls
    /// [`Service::call`] with `keep_alive` false and drains the body for a bounded time before
    /// closing. Default: false.
    fn answers_without_body(&self, _head: &RequestHead) -> bool {
        false
    }
}

/// Whether the listener that accepted a connection is draining (SIGTERM): [`serve`] then
/// closes idle keep-alive connections and answers in-flight requests with `Connection: close`.
pub trait Lifecycle {
    /// True once the drain started.
    fn is_draining(&self) -> bool;
    /// Resolves when the drain starts; cancel-safe.
    fn draining(&self) -> impl std::future::Future<Output = ()> + 'static;
}

impl Lifecycle for ShardContext {
    fn is_draining(&self) -> bool {
        ShardContext::is_draining(self)
    }
    fn draining(&self) -> impl std::future::Future<Output = ()> + 'static {
        ShardContext::draining(self)
    }
}

/// A listener that never drains: the admin listener keeps answering until the process exits,
/// so `/ready` can report the drain.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverDrains;

impl Lifecycle for NeverDrains {
    fn is_draining(&self) -> bool {
        false
    }
    fn draining(&self) -> impl std::future::Future<Output = ()> + 'static {
        std::future::pending()
    }
}

/// Calls [`Service::connection_closed`] when the connection's task ends or is dropped.
struct ConnectionGuard<'a, S: Service>(&'a S);

impl<S: Service> Drop for ConnectionGuard<'_, S> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Why reading the next request head ended without a request.
enum HeadFailure {
    /// Head started but did not complete within `request_header_timeout`.
    Timeout,
    /// The head violates a limit or the grammar.
    Parse(HeadError),
    /// Socket error or EOF mid-head.
    Closed,
}

/// Most request-body bytes read and thrown away after an early answer before closing.
const LINGER_MAX_BYTES: usize = 1 << 20;
/// Longest an early answer's connection lingers reading the unwanted body before closing.
const LINGER_MAX: Duration = Duration::from_secs(2);

/// Serve one accepted client connection until it closes. Errors are answered per DESIGN section 5
/// (JSON body, `Connection: close`) and end the connection.
pub async fn serve<S: Service, L: Lifecycle>(
    svc: Rc<S>,
    ctx: L,
    stream: TcpStream,
    peer: SocketAddr,
) {
    svc.connection_opened();
    let _guard = ConnectionGuard(&*svc);
    let mut conn = Conn {
        stream,
        peer,
        rbuf: Vec::with_capacity(READ_CHUNK_BYTES),
        wbuf: Vec::with_capacity(1024),
        iovecs: None,
        keep_alive: true,
        send_timeout: Duration::ZERO,
    };
    let mut first = true;
    loop {
        let settings = svc.settings();
        conn.send_timeout = settings.send_timeout;
        let head = read_head(&mut conn, &settings, &ctx, first).await;
        first = false;
        let (head, used) = match head {
            Ok(Some(parsed)) => parsed,
            Ok(None) | Err(HeadFailure::Closed) => return,
            Err(HeadFailure::Timeout) => {
                let e = ProxyError::client(ErrorKind::RequestTimeout, "request head timed out");
                let _ = write_early_error(&mut conn, svc.dates(), &e).await;
                return;
            }
            Err(HeadFailure::Parse(e)) => {
                let _ = write_early_error(&mut conn, svc.dates(), &e.to_error()).await;
                return;
            }
        };
        conn.rbuf.drain(..used);
        if (head.content_length.is_some_and(|n| n > 0) || head.chunked)
            && svc.answers_without_body(&head)
        {
            conn.keep_alive = false;
            svc.call(&head, &mut conn).await;
            linger(&mut conn).await;
            return;
        }
        match consume_body(&mut conn, &head, &settings).await {
            Ok(()) => {}
            Err(failure) => {
                if let Some(e) = failure.to_error() {
                    let _ = write_early_error(&mut conn, svc.dates(), &e).await;
                }
                return;
            }
        }
        conn.keep_alive = head.keep_alive && !ctx.is_draining();
        let outcome = svc.call(&head, &mut conn).await;
        if !outcome.keep_alive || !conn.keep_alive {
            return;
        }
    }
}

/// After an early answer: half-close, then read and discard what the client still sends (at
/// most [`LINGER_MAX_BYTES`] within [`LINGER_MAX`]) so closing does not reset the connection
/// before the client read the answer (RFC 9112 section 9.6).
async fn linger(conn: &mut Conn) {
    let _ = monoio::io::AsyncWriteRent::shutdown(&mut conn.stream).await;
    let deadline = Instant::now() + LINGER_MAX;
    let mut seen = 0;
    while seen < LINGER_MAX_BYTES {
        conn.rbuf.clear();
        let read = read_more(&mut conn.stream, &mut conn.rbuf, READ_CHUNK_BYTES);
        match monoio::time::timeout_at(deadline.into(), read).await {
            Ok(Ok(n)) if n > 0 => seen += n,
            _ => return,
        }
    }
}

/// Read until one request head is buffered. `Ok(None)`: the connection ended cleanly (EOF
/// between requests, idle timeout, or drain while idle). `first`: the connection was just
/// accepted, so the head timeout runs from now and covers the wait for the first byte.
async fn read_head<L: Lifecycle>(
    conn: &mut Conn,
    settings: &ServerSettings,
    ctx: &L,
    first: bool,
) -> Result<Option<(RequestHead, usize)>, HeadFailure> {
    let limits = &settings.limits;
    if first {
        // Nothing buffered yet: fall through to the head loop below, whose deadline (from the
        // accept) also bounds the wait for the first byte.
        debug_assert!(conn.rbuf.is_empty());
    } else if !conn.rbuf.is_empty() {
        if let Some(parsed) = parse_request_head(&conn.rbuf, limits).map_err(HeadFailure::Parse)? {
            return Ok(Some(parsed));
        }
    } else {
        // Idle between requests: wait for the first byte, the keep-alive timeout, or a drain.
        if ctx.is_draining() {
            return Ok(None);
        }
        let read = monoio::time::timeout(
            settings.keepalive_timeout,
            read_more(&mut conn.stream, &mut conn.rbuf, READ_CHUNK_BYTES),
        );
        let draining = ctx.draining();
        let first = monoio::select! {
            r = read => r,
            _ = draining => return Ok(None),
        };
        match first {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Ok(None),
        }
        if let Some(parsed) = parse_request_head(&conn.rbuf, limits).map_err(HeadFailure::Parse)? {
            return Ok(Some(parsed));
        }
    }
    let deadline = Instant::now() + settings.request_header_timeout;
    loop {
        let read = read_more(&mut conn.stream, &mut conn.rbuf, READ_CHUNK_BYTES);
        match monoio::time::timeout_at(deadline.into(), read).await {
            Err(_) => return Err(HeadFailure::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadFailure::Closed),
            Ok(Ok(_)) => {}
        }
        if let Some(parsed) = parse_request_head(&conn.rbuf, limits).map_err(HeadFailure::Parse)? {
            return Ok(Some(parsed));
        }
    }
}

/// Why a request body could not be consumed.
enum BodyFailure {
    /// Longer than `max_body_bytes`: 413.
    TooLarge,
    /// Broken chunked framing: 400.
    Malformed,
    /// Socket error, EOF or timeout mid-body: nothing to answer.
    Closed,
}

impl BodyFailure {
    /// The answer the failure gets, if the client can still be answered.
    fn to_error(&self) -> Option<ProxyError> {
        match self {
            BodyFailure::TooLarge => Some(ProxyError::client(
                ErrorKind::PayloadTooLarge,
                "request body too large",
            )),
            BodyFailure::Malformed => Some(ProxyError::client(
                ErrorKind::BadRequest,
                "malformed chunked body",
            )),
            BodyFailure::Closed => None,
        }
    }
}

/// Consume (and discard) the request body: GET and HEAD bodies carry no meaning for S3 reads, but
/// must be read to keep the connection's framing. Sends `100 Continue` first when the client
/// asked for it and the body is within `max_body_bytes` (RFC 9110 section 10.1.1).
async fn consume_body(
    conn: &mut Conn,
    head: &RequestHead,
    settings: &ServerSettings,
) -> Result<(), BodyFailure> {
    let max = settings.limits.max_body_bytes;
    let deadline = Instant::now() + settings.request_header_timeout;
    if let Some(len) = head.content_length {
        if len > max {
            return Err(BodyFailure::TooLarge);
        }
        if len == 0 {
            return Ok(());
        }
        continue_if_expected(conn, head).await?;
        let mut remaining = len;
        loop {
            let take = remaining.min(conn.rbuf.len() as u64) as usize;
            conn.rbuf.drain(..take);
            remaining -= take as u64;
            if remaining == 0 {
                return Ok(());
            }
            fill(conn, deadline).await?;
        }
    } else if head.chunked {
        continue_if_expected(conn, head).await?;
        let mut decoder = ChunkedDecoder::new();
        let mut total = 0u64;
        loop {
            let (used, data) = decoder
                .decode(&conn.rbuf)
                .map_err(|_| BodyFailure::Malformed)?;
            total += data.len() as u64;
            conn.rbuf.drain(..used);
            if total > max {
                return Err(BodyFailure::TooLarge);
            }
            if decoder.is_done() {
                return Ok(());
            }
            if used == 0 || conn.rbuf.is_empty() {
                fill(conn, deadline).await?;
            }
        }
    } else {
        Ok(())
    }
}

async fn continue_if_expected(conn: &mut Conn, head: &RequestHead) -> Result<(), BodyFailure> {
    if head.expect_continue && head.version == Version::Http11 && conn.rbuf.is_empty() {
        let mut msg = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        conn.send(&mut msg).await.map_err(|_| BodyFailure::Closed)?;
    }
    Ok(())
}

async fn fill(conn: &mut Conn, deadline: Instant) -> Result<(), BodyFailure> {
    let read = read_more(&mut conn.stream, &mut conn.rbuf, READ_CHUNK_BYTES);
    match monoio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        _ => Err(BodyFailure::Closed),
    }
}

/// Answer `e` as the JSON error of DESIGN section 5 with `Connection: close` and a fresh
/// request id, then half-close; for failures before a request could be handed to the service.
async fn write_early_error(conn: &mut Conn, dates: &DateCache, e: &ProxyError) -> io::Result<()> {
    conn.keep_alive = false;
    let request_id = new_request_id();
    let to = Answering {
        request_id: &request_id,
        version: Version::Http11,
        head_request: false,
    };
    let res = write_error(conn, dates, to, e, |_| {}).await;
    let _ = monoio::io::AsyncWriteRent::shutdown(&mut conn.stream).await;
    res
}

/// Longest client-supplied `X-Request-Id` we adopt, bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A request id held inline (no heap allocation on the hit path): either a generated UUID v4
/// (36 bytes, hyphenated) or a client's `X-Request-Id` of 1 to [`MAX_REQUEST_ID_BYTES`] bytes of
/// `[A-Za-z0-9._:-]`. Dereferences to `&str`; `Display` writes it as is.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; MAX_REQUEST_ID_BYTES],
    len: u8,
}

impl RequestId {
    /// `b` must be ASCII (checked by the callers) and at most [`MAX_REQUEST_ID_BYTES`] long.
    fn from_ascii(b: &[u8]) -> RequestId {
        debug_assert!(b.is_ascii() && b.len() <= MAX_REQUEST_ID_BYTES);
        let mut id = RequestId {
            bytes: [0; MAX_REQUEST_ID_BYTES],
            len: b.len() as u8,
        };
        id.bytes[..b.len()].copy_from_slice(b);
        id
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `from_ascii`'s callers).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A new request id: a UUID v4 in hyphenated form (36 bytes).
///
/// Hot path: drawn from a per-thread SplitMix64 stream seeded once from the OS (one `getrandom`
/// per thread, not per request: the syscall was 4.5% of a cache hit's cycles), formatted into
/// the inline buffer (no allocation). Ids are unique (2^64 period per thread, random 64-bit
/// seeds across threads) but not secret; nothing may use them as tokens.
pub fn new_request_id() -> RequestId {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    let next = || {
        STATE.with(|st| {
            let mut z = st.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            st.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let bits = (u128::from(next()) << 64) | u128::from(next());
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Builder::from_random_bytes(bits.to_be_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    RequestId::from_ascii(text.as_bytes())
}

/// The request id to use for `head`: the client's `X-Request-Id` if it is 1 to 128 bytes of
/// `[A-Za-z0-9._:-]` (so it is safe in logs and headers), else a new UUID v4.
pub fn request_id_for(head: &RequestHead) -> RequestId {
    if let Some(v) = head.headers.get("x-request-id") {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_BYTES
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
        {
            return RequestId::from_ascii(b);
        }
    }
    new_request_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id().to_string()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(id.len(), 36);
        }
    }

    #[test]
    fn client_request_ids_are_kept_only_when_safe_and_short() {
        let limits = Limits {
            max_uri_bytes: 8192,
            max_header_bytes: 16384,
            max_headers: 100,
            max_body_bytes: 0,
        };
        let id_for = |value: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: {value}\r\n\r\n");
            let (head, _) = parse_request_head(raw.as_bytes(), &limits)
                .unwrap()
                .unwrap();
            request_id_for(&head).to_string()
        };
        let longest = "a".repeat(MAX_REQUEST_ID_BYTES);
        assert_eq!(id_for(&longest), longest);
        assert_eq!(id_for("edge-1:req.42_x"), "edge-1:req.42_x");
        for rejected in [
            "a".repeat(MAX_REQUEST_ID_BYTES + 1),
            "a b".into(),
            "<x>".into(),
        ] {
            let got = id_for(&rejected);
            assert_eq!(got.len(), 36, "{rejected:?} was adopted as {got:?}");
            assert!(uuid::Uuid::parse_str(&got).is_ok());
        }
    }
}
