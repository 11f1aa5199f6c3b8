//! Owned-buffer I/O helpers over monoio's `AsyncReadRent`/`AsyncWriteRent`, shared by the server
//! codec and the upstream client.
//!
//! Hot path. monoio moves the buffer into the kernel op and hands it back, so the helpers take
//! `&mut Vec<u8>` and swap it in and out (`mem::take`, no copy). Reads land in the vector's spare
//! capacity; nothing here allocates unless the caller asks for more room.

use std::io;

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
