//! One upstream connection: plain TCP or TLS (rustls 0.23 through monoio-rustls), behind one type
//! so the pool, the client and the body reader do not care which.
//!
//! Hot path: every upstream byte passes through here. The enum dispatch is one branch per op;
//! TLS adds rustls' record processing and one copy into its buffers. [`UpstreamStream::idle_state`]
//! is the pool's check before reusing a connection: one non-blocking `recv(MSG_PEEK)` syscall
//! (~1 us), never an io_uring op, so it cannot leave a read in flight.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

/// A connected upstream stream.
pub enum UpstreamStream {
    /// Plain HTTP over TCP.
    Plain(TcpStream),
    /// HTTPS: rustls client session over TCP (boxed: the session state is ~1 KiB), with the TCP
    /// socket's descriptor (monoio-rustls 0.4 gives no access to the inner stream), valid for as
    /// long as the session lives.
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
}

/// What a non-blocking look at an idle connection's socket found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleState {
    /// Nothing to read and not closed by the peer: safe to send the next request on.
    Clean,
    /// At least one byte arrived that no request asked for (a trailing response, a body past
    /// Content-Length, a body after a HEAD response, a TLS alert): the connection is out of step.
    Pending,
    /// The peer closed its side (EOF) or the socket reports an error.
    Closed,
}

impl UpstreamStream {
    /// A connected TLS session whose TCP socket is `fd` (remembered for
    /// [`UpstreamStream::idle_state`]).
    pub fn tls(session: monoio_rustls::ClientTlsStream<TcpStream>, fd: RawFd) -> UpstreamStream {
        UpstreamStream::Tls(Box::new(session), fd)
    }

    /// The TCP socket's descriptor (the inner one for TLS).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            UpstreamStream::Plain(s) => s.as_raw_fd(),
            UpstreamStream::Tls(_, fd) => *fd,
        }
    }

    /// Whether this idle connection can carry another request: [`peek_idle`] on its TCP socket.
    /// For TLS this is conservative (any pending byte, even a harmless record such as a session
    /// ticket, discards it) but blind to bytes already decrypted into rustls' buffers; the body
    /// reader hands such bytes back as leftover (see `Body::read`), which also prevents reuse.
    pub fn idle_state(&self) -> IdleState {
        peek_idle(self.raw_fd())
    }
}

/// Look at socket `fd` without consuming or waiting: `recv(fd, 1 byte, MSG_PEEK | MSG_DONTWAIT)`
/// (recv(2)). More than 0 bytes -> [`IdleState::Pending`]; 0 (EOF) or any error other than
/// EAGAIN/EWOULDBLOCK (EINTR is retried) -> [`IdleState::Closed`]; EAGAIN/EWOULDBLOCK ->
/// [`IdleState::Clean`]. Cost: one syscall; works on blocking and non-blocking sockets alike and
/// under either monoio driver (the byte stays in the kernel, no readiness is consumed).
pub fn peek_idle(fd: RawFd) -> IdleState {
    let mut byte = 0u8;
    loop {
        // SAFETY: `byte` is a valid 1-byte buffer for the duration of the call; `fd` is an open
        // socket owned by the caller (a bad fd only yields EBADF, reported as Closed).
        let n = unsafe {
            libc::recv(
                fd,
                (&raw mut byte).cast::<libc::c_void>(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        return match n {
            1.. => IdleState::Pending,
            0 => IdleState::Closed,
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => IdleState::Clean,
                io::ErrorKind::Interrupted => continue,
                _ => IdleState::Closed,
            },
        };
    }
}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.read(buf).await,
            UpstreamStream::Tls(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.readv(buf).await,
            UpstreamStream::Tls(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.write(buf).await,
            UpstreamStream::Tls(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.writev(buf).await,
            UpstreamStream::Tls(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.flush().await,
            UpstreamStream::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.shutdown().await,
            UpstreamStream::Tls(s, _) => s.shutdown().await,
        }
    }
}

#[cfg(test)]
// Test threads, not shards: they may sleep and connect blocking.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdTcp};

    /// A connected loopback pair (client, server side).
    fn pair() -> (StdTcp, StdTcp) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    /// Poll `fd` until it leaves `Clean` (bytes travel loopback asynchronously), bounded.
    fn settled(fd: RawFd) -> IdleState {
        for _ in 0..200 {
            let st = peek_idle(fd);
            if st != IdleState::Clean {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        IdleState::Clean
    }

    #[test]
    fn quiet_connection_is_clean() {
        let (c, _s) = pair();
        assert_eq!(peek_idle(c.as_raw_fd()), IdleState::Clean);
        // Also on a non-blocking socket (the epoll driver's).
        c.set_nonblocking(true).unwrap();
        assert_eq!(peek_idle(c.as_raw_fd()), IdleState::Clean);
    }

    #[test]
    fn unsolicited_byte_is_pending_and_not_consumed() {
        let (mut c, mut s) = pair();
        s.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!(settled(c.as_raw_fd()), IdleState::Pending);
        assert_eq!(
            peek_idle(c.as_raw_fd()),
            IdleState::Pending,
            "peeking is repeatable"
        );
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP", "the peeked byte is still there");
    }

    #[test]
    fn peer_close_is_closed() {
        let (c, s) = pair();
        drop(s);
        assert_eq!(settled(c.as_raw_fd()), IdleState::Closed);
    }

    #[test]
    fn bad_descriptor_is_closed() {
        assert_eq!(peek_idle(-1), IdleState::Closed);
    }
}
