//! Owned-buffer I/O helpers over monoio's `AsyncReadRent`/`AsyncWriteRent`, shared by the server
//! codec and the upstream client.
//!
//! Hot path. monoio moves the buffer into the kernel op and hands it back, so the helpers take
//! `&mut Vec<u8>` and swap it in and out (`mem::take`, no copy). Reads land in the vector's spare
//! capacity; nothing here allocates unless the caller asks for more room.
//!
//! Writes towards clients take a per-write deadline (`server.send_timeout_ms`): each write
//! syscall (or io_uring op) must make progress within it, so a slow but steady reader is never
//! cut while one that stopped reading is detected within one deadline. A timed-out write drops
//! its in-flight op together with the buffer; callers close the connection then (DESIGN
//! section 3: a cancelled op may have completed).

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Read once into the spare capacity of `buf`, first reserving so at least `min_spare` bytes are
/// free. Returns the number of bytes appended (0 = end of stream). If the future is dropped
/// mid-read, `buf` is left empty: callers only drop it when they close the connection anyway.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    min_spare: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let owned = std::mem::take(buf);
    let (start, end) = (owned.len(), owned.capacity());
    let (res, slice) = stream.read(owned.slice_mut(start..end)).await;
    *buf = slice.into_inner();
    res
}

/// Write all of `buf` to `stream`, then give the (unchanged) buffer back through `buf`.
pub async fn write_all<S: AsyncWriteRent>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let owned = std::mem::take(buf);
    let (res, owned) = stream.write_all(owned).await;
    *buf = owned;
    res.map(|_| ())
}

/// The error a write that made no progress within its deadline returns.
pub fn send_timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client accepted no byte within send_timeout_ms",
    )
}

/// Write all of `buf` to `stream`, each write allowed `per_write` to accept at least one byte;
/// then give the (unchanged) buffer back through `buf`. On `TimedOut` (see [`send_timed_out`])
/// `buf` is left empty and the connection must be closed.
pub async fn write_all_within<S: AsyncWriteRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    per_write: Duration,
) -> io::Result<()> {
    use monoio::buf::IoBuf;
    let mut owned = std::mem::take(buf);
    let mut pos = 0;
    while pos < owned.len() {
        let len = owned.len();
        let (res, slice) = monoio::time::timeout(per_write, stream.write(owned.slice(pos..len)))
            .await
            .map_err(|_| send_timed_out())?;
        owned = slice.into_inner();
        match res {
            Ok(0) => {
                *buf = owned;
                return Err(io::ErrorKind::WriteZero.into());
            }
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                *buf = owned;
                return Err(e);
            }
        }
    }
    *buf = owned;
    Ok(())
}

/// Two iovecs on the heap, kept by a connection across writes (see [`write_head_and_body`]):
/// the kernel reads them while the op is in flight, so they must not move with the value that
/// owns them, and allocating them once per connection keeps the write allocation-free.
pub type Iovecs = Box<[libc::iovec; 2]>;

/// A response head and a body slice written with one `writev` (two iovecs): the head from the
/// connection's buffer, the body straight from the cached entry's memory, no copy. The iovecs
/// (on the heap, see [`Iovecs`]) point into heap memory owned by the value itself, so they stay
/// valid while the kernel op holds it, wherever the value moves.
struct HeadAndBody {
    iov: Iovecs,
    /// Index of the first iovec not yet completely written.
    first: usize,
    head: Vec<u8>,
    /// Owns the memory `iov[1]` points into; never read through this field.
    #[allow(dead_code)]
    body: bytes::Bytes,
}

impl HeadAndBody {
    fn new(iov: Option<Iovecs>, head: Vec<u8>, body: bytes::Bytes) -> Self {
        let pair = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ];
        let iov = match iov {
            Some(mut reused) => {
                *reused = pair;
                reused
            }
            None => Box::new(pair),
        };
        HeadAndBody {
            iov,
            first: 0,
            head,
            body,
        }
    }

    fn remaining(&self) -> usize {
        self.iov[self.first..].iter().map(|v| v.iov_len).sum()
    }

    /// Drop `n` written bytes from the front.
    fn consume(&mut self, mut n: usize) {
        while n > 0 && self.first < self.iov.len() {
            let v = &mut self.iov[self.first];
            let step = n.min(v.iov_len);
            // SAFETY: `step <= iov_len`, so the base stays inside (or one past) its buffer.
            v.iov_base = unsafe { (v.iov_base as *mut u8).add(step) } as *mut libc::c_void;
            v.iov_len -= step;
            n -= step;
            if v.iov_len == 0 {
                self.first += 1;
            }
        }
    }
}

// SAFETY: the iovecs point into `head`'s heap buffer and `body`'s shared memory, both owned by
// the value and never reallocated while it exists; `first..` only covers initialised iovecs.
unsafe impl monoio::buf::IoVecBuf for HeadAndBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.first..].as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iov.len() - self.first
    }
}

/// Write `head` then `body` with `writev` (one syscall when the socket takes it all, as it
/// usually does), then give the head buffer back through `head` (unchanged, for reuse) and the
/// iovecs through `iovecs` (allocated on the first call when `None`). Each `writev` must accept
/// a byte within `per_write`. If the future is dropped mid-write or a write times out, both
/// stay with the cancelled op: `head` is left empty and `iovecs` `None`.
/// Errors: the socket's, `WriteZero` when it accepts nothing, `TimedOut` ([`send_timed_out`]).
pub async fn write_head_and_body<S: AsyncWriteRent>(
    stream: &mut S,
    head: &mut Vec<u8>,
    iovecs: &mut Option<Iovecs>,
    body: bytes::Bytes,
    per_write: Duration,
) -> io::Result<()> {
    let mut buf = HeadAndBody::new(iovecs.take(), std::mem::take(head), body);
    let mut result = Ok(());
    while buf.remaining() > 0 {
        let (res, back) = monoio::time::timeout(per_write, stream.writev(buf))
            .await
            .map_err(|_| send_timed_out())?;
        buf = back;
        match res {
            Ok(0) => {
                result = Err(io::ErrorKind::WriteZero.into());
                break;
            }
            Ok(n) => buf.consume(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    *head = buf.head;
    *iovecs = Some(buf.iov);
    result
}

#[cfg(test)]
mod tests {
    use super::HeadAndBody;

    fn written(b: &HeadAndBody) -> Vec<u8> {
        b.iov[b.first..]
            .iter()
            // SAFETY: each iovec points into `b`'s head or body with its length.
            .flat_map(|v| unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len).to_vec()
            })
            .collect()
    }

    #[test]
    fn partial_writes_advance_across_the_head_and_the_body() {
        let mut b = HeadAndBody::new(None, b"HEAD".to_vec(), bytes::Bytes::from_static(b"body!"));
        assert_eq!(b.remaining(), 9);
        b.consume(2);
        assert_eq!(written(&b), b"ADbody!");
        b.consume(3);
        assert_eq!((b.first, written(&b)), (1, b"ody!".to_vec()));
        b.consume(4);
        assert_eq!(b.remaining(), 0);
        assert_eq!(b.first, 2);
    }
}
