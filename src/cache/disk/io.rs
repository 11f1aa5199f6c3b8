//! Positional reads and writes of a disk shard's data file from a core: through the core's
//! io_uring ring (monoio `File::read_at`/`write_at` on an `O_DIRECT` descriptor), or, under the
//! epoll driver, on the blocking pool (a blocking `pread`/`pwrite` would stall the core's
//! event loop: DESIGN section 3 measured one blocking read at a time, ~17k IOPS, starving timers
//! and sockets).
//!
//! Hot path of disk hits and fills. Costs: io_uring, one SQE and one CQE per operation, no
//! syscall of its own when the ring is busy; the pool, one hop to a pool thread and a
//! cross-thread wake back (~20-50 us), bounded by [`POOL_IN_FLIGHT`] per core so a slow disk
//! cannot queue unbounded work (a read over the bound is a miss, a write a drop).

use std::cell::Cell;
use std::io;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;

use super::aligned::AlignedBuf;

/// Operations one core may have on the blocking pool at once (epoll driver only).
pub const POOL_IN_FLIGHT: usize = 32;

/// One core's handle on one disk shard's data file.
pub enum DiskFile {
    /// Through the core's io_uring ring.
    Uring(monoio::fs::File),
    /// On the blocking pool (epoll driver): the shared descriptor and this core's in-flight
    /// count.
    Pool(Arc<std::fs::File>, Rc<Cell<usize>>),
}

impl DiskFile {
    /// This core's handle on `file` (an `O_DIRECT` descriptor opened at start): a duplicate
    /// descriptor registered with nothing, used through the ring when `uring`, else the shared
    /// descriptor on the blocking pool.
    pub fn new(
        file: &Arc<std::fs::File>,
        uring: bool,
        in_flight: Rc<Cell<usize>>,
    ) -> io::Result<Self> {
        if uring {
            Ok(DiskFile::Uring(monoio::fs::File::from_std(
                file.try_clone()?,
            )?))
        } else {
            Ok(DiskFile::Pool(file.clone(), in_flight))
        }
    }

    /// Read up to `buf.capacity()` bytes at `pos` (aligned) into `buf`; the buffer's length is
    /// what was read (short at the end of the file; the pool loops over short reads, the ring
    /// returns one read's count, which for `O_DIRECT` on a regular file is short only at its
    /// end; callers treat short as failed).
    pub async fn read_at(&self, buf: AlignedBuf, pos: u64) -> (io::Result<usize>, AlignedBuf) {
        match self {
            DiskFile::Uring(f) => f.read_at(buf, pos).await,
            DiskFile::Pool(f, n) => {
                let f = f.clone();
                on_pool(n, buf, move |mut buf| {
                    let cap = buf.capacity();
                    let mut done = 0;
                    let res = loop {
                        match f.read_at(&mut buf.as_mut_full()[done..cap], pos + done as u64) {
                            Ok(0) => break Ok(done),
                            Ok(k) => {
                                done += k;
                                if done == cap {
                                    break Ok(done);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    buf.set_len(done);
                    (res, buf)
                })
                .await
            }
        }
    }

    /// Write all of `buf` (aligned length) at `pos` (aligned).
    pub async fn write_all_at(&self, buf: AlignedBuf, pos: u64) -> (io::Result<()>, AlignedBuf) {
        match self {
            DiskFile::Uring(f) => f.write_all_at(buf, pos).await,
            DiskFile::Pool(f, n) => {
                let f = f.clone();
                on_pool(n, buf, move |buf| (f.write_all_at(buf.as_ref(), pos), buf)).await
            }
        }
    }
}

/// Run `op` (a blocking read or write of `buf`) on the blocking pool, counted in `in_flight`:
/// over [`POOL_IN_FLIGHT`] it is refused (`WouldBlock`: a read is a miss, a write a drop).
async fn on_pool<R: Send + 'static>(
    in_flight: &Cell<usize>,
    buf: AlignedBuf,
    op: impl FnOnce(AlignedBuf) -> (io::Result<R>, AlignedBuf) + Send + 'static,
) -> (io::Result<R>, AlignedBuf) {
    if in_flight.get() >= POOL_IN_FLIGHT {
        return (Err(io::ErrorKind::WouldBlock.into()), buf);
    }
    /// Gives the slot back however the wait ends (a read timed out and dropped included: the
    /// pool thread finishes the call, the count must not leak).
    struct Slot<'a>(&'a Cell<usize>);
    impl Drop for Slot<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    in_flight.set(in_flight.get() + 1);
    let _slot = Slot(in_flight);
    let joined = monoio::spawn_blocking(move || op(buf)).await;
    joined.unwrap_or_else(|_| {
        (
            Err(io::Error::other("the blocking pool dropped the operation")),
            AlignedBuf::zeroed(1),
        )
    })
}
