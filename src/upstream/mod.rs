//! Our HTTP/1.1 client towards S3: per-shard keep-alive pool, name resolution off the shard,
//! connect and first-byte timeouts, HTTPS through rustls, and a body reader that streams the
//! response in caller-sized chunks.
//!
//! Why not monoio-transports' client (DESIGN section 3): it reads whole bodies into memory and
//! hangs on HEAD responses, and we must stream 100 MiB objects in constant memory.
//!
//! Hot path. Per request: one pool probe, one write of the signed request head, reads of 16 KiB
//! into a per-response head buffer until the status line and headers parse (`httparse`), then the
//! body moves through the caller's buffer. A connection goes back to the pool only when its
//! response body was read exactly to its end (no byte past it) and the response allowed
//! keep-alive; otherwise it is closed (dropping [`Body`] closes it). The pool checks again at
//! checkout that nothing arrived since (see [`pool`]: one `recv(MSG_PEEK)` per reuse). A request that failed on a pooled connection before any response
//! byte arrived is retried once on a fresh connection (GET/HEAD are idempotent).

pub mod breaker;
pub mod dns;
pub mod pool;
pub mod retry;
mod splice;
pub mod stream;
pub mod tls;

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::error::{ErrorKind, ProxyError};
use crate::http::chunked::ChunkedDecoder;
use crate::http::io::{read_more, write_all};
use dns::Resolver;
use pool::Pool;
use stream::UpstreamStream;

/// Largest upstream response head accepted, bytes.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields accepted in an upstream response head.
pub const MAX_RESPONSE_HEADERS: usize = 128;
/// Bytes reserved per read while waiting for a response head.
const HEAD_READ_BYTES: usize = 16 * 1024;

/// Smallest remaining body that [`Body::splice_to`] moves: below it the pipe's two extra
/// descriptors and the per-step kernel work cost more than the copies they save.
pub const SPLICE_MIN_BYTES: u64 = 1 << 20;
/// Bytes per splice step of the epoll path: a default pipe's capacity (16 pages).
const PIPE_BYTES: u64 = 64 * 1024;
/// The pipe of the io_uring readiness path (`splice.rs`), grown with `F_SETPIPE_SZ`: 512 KiB
/// moved 1 GiB at 0.90x of Garage directly against 0.82x with the default 64 KiB (1 MiB: 0.90x,
/// 4 MiB: 0.75x, as its pages fall out of cache; `perf/stream-1g.sh 3 5 4`, 2026-12-02). Kernel
/// memory (page references) per active long stream, never user-space RSS.
const READINESS_PIPE_BYTES: u64 = 512 * 1024;

/// Which side of a spliced body failed.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading from S3 failed, stalled or ended before Content-Length.
    Upstream(io::Error),
    /// Making the pipe or writing to the client failed.
    Client(io::Error),
}

/// Where and how to send one request.
pub struct Target<'a> {
    /// Pool key: scheme, host, port and TLS trust identity (see [`pool`]).
    pub pool_key: &'a Rc<str>,
    /// Host name or IP literal to connect to (also the TLS server name).
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
    /// TLS connector for HTTPS endpoints; `None` for plain HTTP.
    pub tls: Option<&'a monoio_rustls::TlsConnector>,
    /// Budget for resolve + TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Budget from the request being written to the response head being complete; also the
    /// longest the body may stall between two reads.
    pub first_byte_timeout: Duration,
}

/// The shard's upstream client state: idle connections and the resolver cache.
#[derive(Default)]
pub struct Upstream {
    /// Idle keep-alive connections.
    pub pool: Pool,
    /// Name resolution cache.
    pub resolver: Resolver,
}

/// An upstream response whose head has been read; the body is read through [`Body::read`].
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// Response header fields (names lowercase).
    pub headers: HeaderMap,
    /// The body.
    pub body: Body<'a>,
}

/// How the response body is delimited (RFC 9112 section 6.3).
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
}

/// Streaming reader of one upstream response body. Dropping it before the end closes the
/// connection; reading to the end returns a reusable connection to the pool.
pub struct Body<'a> {
    stream: Option<UpstreamStream>,
    framing: Framing,
    /// Bytes read past the head (or raw chunked bytes not yet decoded).
    leftover: Vec<u8>,
    pool: &'a Pool,
    key: Rc<str>,
    reusable: bool,
    read_timeout: Duration,
    done: bool,
}

impl Upstream {
    /// Send the request head `req` (complete, including the final CRLF; GET/HEAD carry no body)
    /// to `target` and read the response head. `head_request` says the request was HEAD (the
    /// response then has no body whatever its Content-Length says).
    ///
    /// Errors: 502 (refused, reset, DNS failure, TLS failure, malformed response), 504 (connect
    /// or first-byte timeout). `req` is handed back unchanged through the `&mut`.
    pub async fn send<'a>(
        &'a self,
        target: &Target<'_>,
        req: &mut Vec<u8>,
        head_request: bool,
    ) -> Result<Response<'a>, ProxyError> {
        if let Some(stream) = self.pool.take(target.pool_key) {
            match self.exchange(stream, target, req, head_request).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.retryable => {
                    tracing::debug!(error = %e, "pooled upstream connection failed, retrying on a fresh one");
                }
                Err(e) => return Err(e),
            }
        }
        let stream = self.connect(target).await?;
        self.exchange(stream, target, req, head_request)
            .await
            .map_err(|mut e| {
                e.retryable = false;
                e
            })
    }

    /// Sign `req` for `backend` (SigV4 with the backend's credentials, its host and canonical
    /// URI) and send it through [`Upstream::send`]: the backend seam, so a retry on another
    /// backend signs anew. Errors as [`Upstream::send`].
    pub async fn send_object<'a>(
        &'a self,
        backend: &crate::s3::request::Backend<'_>,
        req: &crate::s3::request::ObjectRequest<'_>,
    ) -> Result<Response<'a>, ProxyError> {
        let mut head = backend.signed_head(req);
        self.send(&backend.target, &mut head, req.is_head()).await
    }

    /// Resolve, connect and (for HTTPS) handshake within `connect_timeout`.
    async fn connect(&self, t: &Target<'_>) -> Result<UpstreamStream, ProxyError> {
        let deadline = Instant::now() + t.connect_timeout;
        let timed_out = || {
            ProxyError::origin(
                ErrorKind::GatewayTimeout,
                false,
                "connect to S3 endpoint timed out",
            )
        };
        let addrs =
            match monoio::time::timeout_at(deadline.into(), self.resolver.resolve(t.host, t.port))
                .await
            {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    return Err(ProxyError::origin(
                        ErrorKind::BadGateway,
                        false,
                        format!("cannot resolve S3 endpoint host: {}", e.kind()),
                    ))
                }
                Ok(Ok(a)) => a,
            };
        let mut last_err = None;
        let mut tcp = None;
        for addr in addrs {
            match monoio::time::timeout_at(deadline.into(), TcpStream::connect_addr(addr)).await {
                Err(_) => return Err(timed_out()),
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last_err = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            let why = last_err.map_or_else(|| "no address".to_owned(), |e| e.kind().to_string());
            ProxyError::origin(
                ErrorKind::BadGateway,
                false,
                format!("cannot connect to S3 endpoint: {why}"),
            )
        })?;
        let Some(connector) = t.tls else {
            return Ok(UpstreamStream::Plain(tcp));
        };
        let name = ServerName::try_from(t.host.to_owned()).map_err(|_| {
            ProxyError::origin(
                ErrorKind::BadGateway,
                false,
                "S3 endpoint host is not a valid TLS server name",
            )
        })?;
        let fd = tcp.as_raw_fd();
        match monoio::time::timeout_at(deadline.into(), connector.connect(name, tcp)).await {
            Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(ProxyError::origin(
                ErrorKind::BadGateway,
                false,
                format!("TLS handshake with S3 endpoint failed: {e}"),
            )),
            Ok(Ok(s)) => Ok(UpstreamStream::tls(s, fd)),
        }
    }

    /// Write the request and read the response head on `stream`.
    async fn exchange<'a>(
        &'a self,
        mut stream: UpstreamStream,
        t: &Target<'_>,
        req: &mut Vec<u8>,
        head_request: bool,
    ) -> Result<Response<'a>, ProxyError> {
        if write_all(&mut stream, req).await.is_err() {
            return Err(ProxyError::origin(
                ErrorKind::BadGateway,
                true,
                "S3 endpoint closed the connection",
            ));
        }
        let deadline = Instant::now() + t.first_byte_timeout;
        let mut buf = Vec::with_capacity(HEAD_READ_BYTES);
        loop {
            let received_before = buf.len();
            match monoio::time::timeout_at(
                deadline.into(),
                read_more(&mut stream, &mut buf, HEAD_READ_BYTES),
            )
            .await
            {
                Err(_) => {
                    return Err(ProxyError::origin(
                        ErrorKind::GatewayTimeout,
                        false,
                        "S3 endpoint did not answer within first_byte_timeout_ms",
                    ))
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    // Nothing at all received: the pooled connection was stale; safe to retry.
                    let retryable = received_before == 0;
                    return Err(ProxyError::origin(
                        ErrorKind::BadGateway,
                        retryable,
                        "S3 endpoint closed the connection before answering",
                    ));
                }
                Ok(Ok(_)) => {}
            }
            loop {
                match parse_response_head(&buf)? {
                    None => break,
                    Some(head) if (100..200).contains(&head.status) => {
                        // Interim response (e.g. 100 Continue): skip it, keep reading.
                        buf.drain(..head.len);
                    }
                    Some(head) => {
                        buf.drain(..head.len);
                        return Ok(self.response(stream, t, head, buf, head_request));
                    }
                }
            }
            if buf.len() >= MAX_RESPONSE_HEAD_BYTES {
                return Err(ProxyError::origin(
                    ErrorKind::BadGateway,
                    false,
                    "S3 response head too large",
                ));
            }
        }
    }

    fn response<'a>(
        &'a self,
        stream: UpstreamStream,
        t: &Target<'_>,
        head: ParsedHead,
        leftover: Vec<u8>,
        head_request: bool,
    ) -> Response<'a> {
        let no_body = head_request || head.status == 204 || head.status == 304;
        let framing = if no_body {
            Framing::Length(0)
        } else if head.chunked {
            Framing::Chunked(ChunkedDecoder::new())
        } else if let Some(len) = head.content_length {
            Framing::Length(len)
        } else {
            Framing::Close
        };
        let reusable = head.keep_alive && !matches!(framing, Framing::Close);
        let mut body = Body {
            stream: Some(stream),
            framing,
            leftover,
            pool: &self.pool,
            key: t.pool_key.clone(),
            reusable,
            read_timeout: t.first_byte_timeout,
            done: false,
        };
        if matches!(body.framing, Framing::Length(0)) {
            body.finish();
        }
        Response {
            status: head.status,
            headers: head.headers,
            body,
        }
    }
}

struct ParsedHead {
    status: u16,
    headers: HeaderMap,
    len: usize,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

/// Parse a response head at the start of `buf`; `Ok(None)` when incomplete.
fn parse_response_head(buf: &[u8]) -> Result<Option<ParsedHead>, ProxyError> {
    let bad = |why: &str| {
        ProxyError::origin(
            ErrorKind::BadGateway,
            false,
            format!("malformed S3 response: {why}"),
        )
    };
    let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let status = resp.code.ok_or_else(|| bad("no status"))?;
    let http11 = resp.version == Some(1);
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = http11;
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("header value"))?;
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("content-length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(bad("conflicting content-length"));
            }
            content_length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == http::header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        headers.append(name, value);
    }
    Ok(Some(ParsedHead {
        status,
        headers,
        len,
        content_length,
        chunked,
        keep_alive,
    }))
}

impl Body<'_> {
    /// The body length when the response declared one (Content-Length framing).
    pub fn declared_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) if !self.done => Some(n),
            _ => None,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Append the next body bytes to `out` (which the caller empties between calls; at most its
    /// spare capacity is filled for Content-Length bodies). Returns the number of bytes appended;
    /// 0 means the body is complete. Errors: the connection failed, stalled longer than
    /// `first_byte_timeout`, or ended before the declared length.
    pub async fn read(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let before = out.len();
        match &mut self.framing {
            Framing::Length(remaining) => {
                if !self.leftover.is_empty() {
                    let n = (*remaining).min(self.leftover.len() as u64) as usize;
                    out.extend_from_slice(&self.leftover[..n]);
                    self.leftover.drain(..n);
                    *remaining -= n as u64;
                } else {
                    if out.capacity() == out.len() {
                        out.reserve(HEAD_READ_BYTES);
                    }
                    let room = (out.capacity() - out.len()) as u64;
                    let stream = self.stream.as_mut().ok_or_else(closed)?;
                    // Over TCP, never read past the body: stray bytes stay in the socket, where
                    // the pool's checkout check sees them. Over TLS, take whatever rustls has
                    // already decrypted (up to `room`): bytes past the body land in `leftover`,
                    // which keeps the connection out of the pool (the socket check cannot see
                    // rustls' buffers).
                    let want = if matches!(stream, UpstreamStream::Tls(..)) {
                        room as usize
                    } else {
                        room.min(*remaining) as usize
                    };
                    let owned = std::mem::take(out);
                    let start = owned.len();
                    let read = stream.read(owned.slice_mut(start..start + want));
                    let (res, slice) = monoio::time::timeout(self.read_timeout, read)
                        .await
                        .map_err(|_| body_stalled())?;
                    *out = slice.into_inner();
                    let n = res?;
                    if n == 0 {
                        return Err(body_ended_early());
                    }
                    if n as u64 > *remaining {
                        let body_end = start + *remaining as usize;
                        self.leftover.extend_from_slice(&out[body_end..]);
                        out.truncate(body_end);
                        *remaining = 0;
                    } else {
                        *remaining -= n as u64;
                    }
                }
                if *remaining == 0 {
                    self.finish();
                }
            }
            Framing::Chunked(decoder) => loop {
                if !self.leftover.is_empty() {
                    let (used, data) = decoder.decode(&self.leftover).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}"))
                    })?;
                    out.extend_from_slice(data);
                    self.leftover.drain(..used);
                    if decoder.is_done() {
                        self.finish();
                        break;
                    }
                    if out.len() > before {
                        break;
                    }
                    if used > 0 && !self.leftover.is_empty() {
                        continue;
                    }
                }
                let stream = self.stream.as_mut().ok_or_else(closed)?;
                let n = monoio::time::timeout(
                    self.read_timeout,
                    read_more(stream, &mut self.leftover, HEAD_READ_BYTES),
                )
                .await
                .map_err(|_| body_stalled())??;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "S3 chunked body ended early",
                    ));
                }
            },
            Framing::Close => {
                if !self.leftover.is_empty() {
                    out.append(&mut self.leftover);
                } else {
                    let stream = self.stream.as_mut().ok_or_else(closed)?;
                    let n = monoio::time::timeout(
                        self.read_timeout,
                        read_more(stream, out, HEAD_READ_BYTES),
                    )
                    .await
                    .map_err(|_| body_stalled())??;
                    if n == 0 {
                        self.done = true;
                        self.stream = None;
                    }
                }
            }
        }
        Ok(out.len() - before)
    }

    /// Whether [`Body::splice_to`] can move the rest of this body: Content-Length framing over
    /// plain TCP, no body bytes buffered in user space, and at least [`SPLICE_MIN_BYTES`] left.
    pub fn spliceable(&self) -> bool {
        matches!(self.framing, Framing::Length(n) if n >= SPLICE_MIN_BYTES)
            && !self.done
            && self.leftover.is_empty()
            && matches!(self.stream, Some(UpstreamStream::Plain(_)))
    }

    /// Move the rest of a [`Body::spliceable`] body to `dst` through a pipe with splice(2)
    /// (non-blocking `splice` on readiness: io_uring poll ops, see `splice.rs`, or the epoll
    /// driver's readiness): the bytes go socket -> pipe -> socket as page references inside the kernel and
    /// never through a user-space buffer. Under io_uring the pipe holds up to 512 KiB and S3's
    /// bytes keep entering it while the client drains it, until it is full; under epoll each
    /// step moves at most one default pipe (64 KiB) and waits until the client took it. Either
    /// way S3 is read no faster than the client takes the bytes, plus one pipe, so
    /// backpressure is what it is with [`Body::read`]. `moved` counts the bytes the client received, also on error.
    ///
    /// Errors: [`SpliceError::Upstream`] when S3 fails, stalls longer than `first_byte_timeout`
    /// or ends early; [`SpliceError::Client`] when the pipe cannot be made, the client socket
    /// fails or accepts nothing for `send_timeout` (`TimedOut`). Either way the upstream
    /// connection is not reused (dropping the body closes it).
    pub async fn splice_to(
        &mut self,
        dst: &mut TcpStream,
        moved: &mut u64,
        send_timeout: Duration,
    ) -> Result<(), SpliceError> {
        use monoio::io::splice::{SpliceDestination, SpliceSource};
        let Framing::Length(remaining) = &mut self.framing else {
            return Err(SpliceError::Upstream(closed()));
        };
        let Some(UpstreamStream::Plain(src)) = self.stream.as_mut() else {
            return Err(SpliceError::Upstream(closed()));
        };
        if !monoio::utils::is_legacy() {
            // io_uring: readiness polls plus inline splices, not io-wq splice ops (splice.rs).
            splice::readiness_splice(
                src,
                dst,
                remaining,
                moved,
                READINESS_PIPE_BYTES,
                self.read_timeout,
                send_timeout,
            )
            .await?;
            self.finish();
            return Ok(());
        }
        let (mut pipe_out, mut pipe_in) =
            monoio::net::unix::new_pipe().map_err(SpliceError::Client)?;
        while *remaining > 0 {
            let want = (*remaining).min(PIPE_BYTES) as u32;
            let n =
                monoio::time::timeout(self.read_timeout, src.splice_to_pipe(&mut pipe_in, want))
                    .await
                    .map_err(|_| SpliceError::Upstream(body_stalled()))?
                    .map_err(SpliceError::Upstream)?;
            if n == 0 {
                return Err(SpliceError::Upstream(body_ended_early()));
            }
            *remaining -= u64::from(n);
            let mut in_pipe = n;
            while in_pipe > 0 {
                let w = monoio::time::timeout(
                    send_timeout,
                    dst.splice_from_pipe(&mut pipe_out, in_pipe),
                )
                .await
                .map_err(|_| SpliceError::Client(crate::http::io::send_timed_out()))?
                .map_err(SpliceError::Client)?;
                if w == 0 {
                    return Err(SpliceError::Client(io::ErrorKind::WriteZero.into()));
                }
                in_pipe -= w;
                *moved += u64::from(w);
            }
        }
        self.finish();
        Ok(())
    }

    /// Read and discard the rest of the body, keeping at most `limit` bytes of it in `into`
    /// (used for small S3 error bodies). Errors as [`Body::read`].
    pub async fn read_to_end_limited(
        &mut self,
        into: &mut Vec<u8>,
        limit: usize,
    ) -> io::Result<()> {
        let mut scratch = Vec::with_capacity(HEAD_READ_BYTES);
        loop {
            scratch.clear();
            if self.read(&mut scratch).await? == 0 {
                return Ok(());
            }
            let room = limit.saturating_sub(into.len());
            into.extend_from_slice(&scratch[..scratch.len().min(room)]);
        }
    }

    /// The body is complete (for HEAD, 204 and 304 as soon as the head is: no body is ever read
    /// after them): hand the connection back to the pool if the response allowed keep-alive and
    /// no byte past the response was read (`leftover` empty); otherwise close it.
    fn finish(&mut self) {
        self.done = true;
        if let Some(stream) = self.stream.take() {
            if self.reusable && self.leftover.is_empty() {
                self.pool.put(&self.key, stream);
            } else if !self.leftover.is_empty() {
                tracing::debug!(
                    extra_bytes = self.leftover.len(),
                    "S3 sent bytes past the end of its response, closing the connection"
                );
            }
        }
    }
}

/// The body stalled longer than the read timeout (`first_byte_timeout_ms`).
fn body_stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "S3 body stalled")
}

/// S3 closed the connection before the declared length.
fn body_ended_early() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "S3 body ended early")
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "upstream connection already released",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_like_head() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"abc\"\r\nConnection: keep-alive\r\n\r\nhello";
        let head = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, Some(5));
        assert!(head.keep_alive);
        assert_eq!(&raw[head.len..], b"hello");
        assert_eq!(head.headers.get("etag").unwrap(), "\"abc\"");
    }

    #[test]
    fn partial_and_conflicting_heads() {
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        let conflict = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(parse_response_head(conflict).err().unwrap().status(), 502);
        let close = b"HTTP/1.0 200 OK\r\n\r\n";
        assert!(!parse_response_head(close).unwrap().unwrap().keep_alive);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(parse_response_head(chunked).unwrap().unwrap().chunked);
    }
}
