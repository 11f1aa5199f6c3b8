//! Readiness-driven splice(2) for the io_uring driver: socket -> pipe -> socket with
//! non-blocking `splice` syscalls, waiting on `IORING_OP_POLL_ADD` (monoio's `readable` /
//! `writable`) only when a side would block.
//!
//! Why not `IORING_OP_SPLICE`: the kernel cannot splice a socket without blocking inside the
//! ring, so every splice op is punted to an io-wq worker thread and its completion comes back as
//! task work. Under `IORING_SETUP_COOP_TASKRUN` (which the shards use: +30% on hits) that task
//! work waits for the shard's next kernel entry, two round trips per 64 KiB. Polling for
//! readiness is native to io_uring (no io-wq), and the splice itself then runs inline on the
//! shard, as it does under epoll. Measured 2026-12-02 (`perf/stream-1g.sh 3 5 4`, Garage, two
//! alternating rounds): 425-443 MB/s through the proxy against 376-380 MB/s with io-wq splices
//! (1.10-1.15x; 0.74-0.82x of Garage directly against 0.69-0.73x). The ring flags were tried
//! too (against RGW): a plain ring 0.77x, SINGLE_ISSUER + DEFER_TASKRUN 0.72x, COOP 0.69x.
//! Then the pipe grew to 512 KiB (`F_SETPIPE_SZ`) and both directions interleave: 0.86-0.91x
//! of Garage directly in three `perf/stream-1g.sh` runs against 0.82x with 64 KiB steps. What
//! is left is kernel work, not ours: the profile (`perf/flamegraph.sh stream-1g`) is the
//! loopback TCP transmit to the client and the wake-ups it causes (`tcp_write_xmit`,
//! `sock_def_readable`, softirqs), the second TCP hop a proxy adds on a 2-CPU machine that
//! Garage and the client already keep busy.
//!
//! Hot path of long uncached bodies only (>= 1 MiB). Costs per step: two `splice` syscalls
//! (each moves what the socket or pipe holds, up to the pipe's 512 KiB), plus one poll op per
//! side that would block; per body one `pipe2`, one `F_SETPIPE_SZ` and four `fcntl` (the two
//! sockets are switched to `O_NONBLOCK` for the body, so a splice never blocks the shard, and
//! back after it, so they are left exactly as monoio made them for its own ops). The pipe is
//! kernel memory (page references), at most 512 KiB per active long stream.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::SpliceError;

/// `O_NONBLOCK` set on `fd` for the guard's life, then restored to what it was.
struct NonBlocking {
    fd: RawFd,
    restore: Option<libc::c_int>,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on an fd the caller keeps open for the guard's life.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(NonBlocking { fd, restore: None });
        }
        // SAFETY: as above; only the O_NONBLOCK bit changes.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking {
            fd,
            restore: Some(flags),
        })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(flags) = self.restore {
            // SAFETY: the fd is still open (the guard lives inside the borrow of its stream).
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

/// A non-blocking pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Grow the pipe whose write end is `fd` to `bytes` (`F_SETPIPE_SZ`); the capacity it has
/// afterwards (the kernel rounds up to a power-of-two number of pages; on failure, e.g. past
/// `/proc/sys/fs/pipe-max-size` for an unprivileged process, the pipe keeps its default 64 KiB).
fn grow_pipe(fd: RawFd, bytes: usize) -> usize {
    // SAFETY: fcntl on a pipe fd we own; F_SETPIPE_SZ only resizes its ring.
    let got = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    if got > 0 {
        return got as usize;
    }
    // SAFETY: as above; F_GETPIPE_SZ only reads the size.
    let now = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if now > 0 {
        now as usize
    } else {
        64 * 1024
    }
}

/// One non-blocking splice of at most `len` bytes; `Ok(None)` when it would block.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: plain fds, no offsets (both are streams).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Move `remaining` bytes from `src` to `dst` through one pipe of up to `pipe_bytes`, waiting
/// at most `read_timeout` for S3 and `send_timeout` for the client whenever no side can move.
/// Both directions run interleaved: S3's bytes keep entering the pipe while the client drains
/// it, so neither side waits for the other to empty or fill a step. `moved` counts the bytes the
/// client received, also on error; `remaining` counts down as S3's bytes enter the pipe. When
/// both sides are blocked (pipe neither full nor empty), the shorter of the two timeouts ends
/// the wait and its side is reported. Errors as `Body::splice_to`.
pub(super) async fn readiness_splice(
    src: &TcpStream,
    dst: &TcpStream,
    remaining: &mut u64,
    moved: &mut u64,
    pipe_bytes: u64,
    read_timeout: Duration,
    send_timeout: Duration,
) -> Result<(), SpliceError> {
    let (pipe_r, pipe_w) = pipe().map_err(SpliceError::Client)?;
    let cap = grow_pipe(pipe_w.as_raw_fd(), pipe_bytes as usize);
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe_r.as_raw_fd(), pipe_w.as_raw_fd());
    let _src_nb = NonBlocking::set(src_fd).map_err(SpliceError::Upstream)?;
    let _dst_nb = NonBlocking::set(dst_fd).map_err(SpliceError::Client)?;
    let stalled = || SpliceError::Upstream(super::body_stalled());
    let send_timed_out = || SpliceError::Client(crate::http::io::send_timed_out());
    let mut in_pipe = 0usize;
    // The kernel counts a pipe in slots (one per page or skb fragment), not bytes: with small
    // fragments it is full well before `cap` bytes. `src_ready`: S3's socket was reported
    // readable since the last splice from it; a splice that then still would block means the
    // pipe is full (`pipe_full`) until the client takes some of it. Without that the loop
    // would spin on a readable socket while a stopped client never trips `send_timeout`.
    let (mut src_ready, mut pipe_full) = (false, false);
    while *remaining > 0 || in_pipe > 0 {
        let mut progressed = false;
        if *remaining > 0 && in_pipe < cap && !pipe_full {
            let want = (*remaining).min((cap - in_pipe) as u64) as usize;
            match splice_once(src_fd, pipe_w, want).map_err(SpliceError::Upstream)? {
                Some(0) => return Err(SpliceError::Upstream(super::body_ended_early())),
                Some(n) => {
                    *remaining -= n as u64;
                    in_pipe += n;
                    progressed = true;
                }
                None => pipe_full = src_ready && in_pipe > 0,
            }
            src_ready = false;
        }
        if in_pipe > 0 {
            match splice_once(pipe_r, dst_fd, in_pipe).map_err(SpliceError::Client)? {
                Some(0) => return Err(SpliceError::Client(io::ErrorKind::WriteZero.into())),
                Some(w) => {
                    in_pipe -= w;
                    *moved += w as u64;
                    progressed = true;
                    pipe_full = false;
                }
                None => {}
            }
        }
        if progressed {
            continue;
        }
        // Nothing moved: wait for a side that can.
        let can_read = *remaining > 0 && in_pipe < cap && !pipe_full;
        if !can_read {
            monoio::time::timeout(send_timeout, dst.writable(false))
                .await
                .map_err(|_| send_timed_out())?
                .map_err(SpliceError::Client)?;
        } else if in_pipe == 0 {
            monoio::time::timeout(read_timeout, src.readable(false))
                .await
                .map_err(|_| stalled())?
                .map_err(SpliceError::Upstream)?;
            src_ready = true;
        } else {
            let bound = read_timeout.min(send_timeout);
            monoio::select! {
                r = src.readable(false) => {
                    r.map_err(SpliceError::Upstream)?;
                    src_ready = true;
                }
                w = dst.writable(false) => w.map_err(SpliceError::Client)?,
                _ = monoio::time::sleep(bound) => {
                    return Err(if read_timeout <= send_timeout { stalled() } else { send_timed_out() });
                }
            }
        }
    }
    Ok(())
}
