//! A cache fill decoupled from delivery (DESIGN section 5, "a slow client never slows another
//! client's copy of the same object"): the fill reads the S3 body at the origin's pace into one
//! [`Growing`] entry, and every client of the key, the leader's own included, copies from it at
//! its own pace through a [`Reader`]. Followers on the same core start streaming as soon as the
//! response head is known, not when the fill ends.
//!
//! Miss path only (hits never come here). Costs per fill: one buffer of the declared length
//! (bounded by the item size limit, so by the shard's memory share), allocated once and frozen
//! into the entry's `Bytes` at the end with no copy; one 64 KiB read buffer for the fill; per
//! reader one 64 KiB copy-out buffer and one waker slot. Each body byte is copied once into the
//! entry and once out of it per reader while the fill runs (a memcpy, ~10 GB/s, against a
//! network that moves <= 1.25 GB/s); after the fill ended, readers write the rest straight from
//! the frozen `Bytes` (zero-copy `writev`). A reader whose client stops reading is cut by
//! `send_timeout_ms` and never holds the fill back: the fill has no backpressure from readers.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};

use crate::cache::CachedObject;
use crate::http::server::Conn;
use crate::upstream::Body;

use super::BODY_CHUNK_BYTES;

/// One entry being filled: the metadata of the response (headers, validators, freshness; its
/// `body` is empty) and the body bytes received so far. Shared by the fill and its readers
/// (`Rc`, one core).
pub struct Growing {
    meta: CachedObject,
    len: u64,
    state: RefCell<State>,
}

struct State {
    /// Bytes received so far, in a buffer of capacity `len` (never reallocated).
    body: BytesMut,
    /// Set when the fill ended: `Some(entry)` complete, `None` failed.
    end: Option<Option<Arc<CachedObject>>>,
    /// Waker per reader (index = reader id; `None` when not waiting or dropped).
    wakers: Vec<Option<Waker>>,
}

/// Why a reader could not get its next bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillFailed;

/// What a reader got.
pub enum Next {
    /// `n` more bytes were appended to the caller's buffer.
    Copied(usize),
    /// The fill is complete: the rest of the body from the reader's position, zero-copy.
    Rest(Bytes),
}

impl Growing {
    /// An empty entry for a body of `len` bytes whose response is described by `meta` (an entry
    /// with an empty body: headers, validators, `stored_at`, `expires_at`).
    pub fn new(len: u64, meta: CachedObject) -> Rc<Growing> {
        debug_assert!(meta.body.is_empty());
        Rc::new(Growing {
            meta,
            len,
            state: RefCell::new(State {
                body: BytesMut::with_capacity(len as usize),
                end: None,
                wakers: Vec::new(),
            }),
        })
    }

    /// The declared body length, bytes.
    pub fn body_len(&self) -> u64 {
        self.len
    }

    /// The response's metadata (its body is empty).
    pub fn meta(&self) -> &CachedObject {
        &self.meta
    }

    /// Whether the fill failed (the entry will never be complete).
    pub fn failed(&self) -> bool {
        matches!(self.state.borrow().end, Some(None))
    }

    /// The complete entry, once the fill succeeded.
    pub fn complete(&self) -> Option<Arc<CachedObject>> {
        self.state.borrow().end.clone().flatten()
    }

    /// A reader from the first byte.
    pub fn reader(self: &Rc<Self>) -> Reader {
        let mut st = self.state.borrow_mut();
        st.wakers.push(None);
        Reader {
            growing: self.clone(),
            id: st.wakers.len() - 1,
            pos: 0,
        }
    }

    /// Read `body` to its end at the origin's pace into the entry. Returns the complete entry
    /// (fresh from `meta`'s `stored_at`), or `None` when S3 failed, stalled past the body's
    /// read timeout or sent a different length than declared; readers are told either way.
    pub async fn fill_from(&self, body: &mut Body<'_>) -> Option<Arc<CachedObject>> {
        let mut buf = Vec::with_capacity(BODY_CHUNK_BYTES);
        let ok = loop {
            buf.clear();
            match body.read(&mut buf).await {
                Ok(0) => break body.is_done(),
                Ok(_) => {
                    let mut st = self.state.borrow_mut();
                    if st.body.len() + buf.len() > self.len as usize {
                        break false;
                    }
                    st.body.extend_from_slice(&buf);
                    drop(st);
                    self.wake_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, received = self.state.borrow().body.len(), "S3 body failed mid-fill");
                    break false;
                }
            }
        };
        let entry = {
            let mut st = self.state.borrow_mut();
            let entry = (ok && st.body.len() as u64 == self.len).then(|| {
                let body = std::mem::take(&mut st.body).freeze();
                Arc::new(CachedObject {
                    body,
                    ..self.meta.clone()
                })
            });
            st.end = Some(entry.clone());
            entry
        };
        self.wake_all();
        entry
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .state
            .borrow_mut()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }
}

/// One client's position in a [`Growing`] entry.
pub struct Reader {
    growing: Rc<Growing>,
    id: usize,
    pos: u64,
}

impl Reader {
    /// Bytes of the body handed out so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Wait for bytes past the reader's position: copies up to `max` of them into `out` while
    /// the fill runs, or hands out the whole rest once it is complete. `Ok(None)` at the end of
    /// the body. Errors: the fill failed before the reader's position was reached.
    pub async fn next(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<Option<Next>, FillFailed> {
        poll_fn(|cx| {
            let mut st = self.growing.state.borrow_mut();
            let pos = self.pos as usize;
            if let Some(end) = &st.end {
                let Some(entry) = end else {
                    return Poll::Ready(Err(FillFailed));
                };
                if pos >= entry.body.len() {
                    return Poll::Ready(Ok(None));
                }
                let rest = entry.body.slice(pos..);
                self.pos = entry.body.len() as u64;
                return Poll::Ready(Ok(Some(Next::Rest(rest))));
            }
            if st.body.len() > pos {
                let n = (st.body.len() - pos).min(max);
                out.extend_from_slice(&st.body[pos..pos + n]);
                self.pos += n as u64;
                return Poll::Ready(Ok(Some(Next::Copied(n))));
            }
            match st.wakers.get_mut(self.id) {
                Some(Some(w)) if w.will_wake(cx.waker()) => {}
                Some(slot) => *slot = Some(cx.waker().clone()),
                None => debug_assert!(false, "reader id out of range"),
            }
            Poll::Pending
        })
        .await
    }

    /// Write the body from the reader's position to the client on `conn` (whose head was
    /// already written), counting delivered bytes in `sent`. Errors: the client failed or
    /// accepted nothing for `send_timeout_ms` (`io::Error`), or the fill failed (reported as
    /// `UnexpectedEof`); either way the connection must be closed (the head promised the full
    /// length).
    pub async fn deliver(&mut self, conn: &mut Conn, sent: &mut u64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(BODY_CHUNK_BYTES);
        loop {
            buf.clear();
            match self.next(&mut buf, BODY_CHUNK_BYTES).await {
                Ok(None) => return Ok(()),
                Ok(Some(Next::Copied(n))) => {
                    conn.send(&mut buf).await?;
                    *sent += n as u64;
                }
                Ok(Some(Next::Rest(rest))) => {
                    let n = rest.len() as u64;
                    conn.wbuf.clear();
                    conn.flush_with_body(rest).await?;
                    *sent += n;
                }
                Err(FillFailed) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the cache fill this response streams from failed",
                    ))
                }
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Ok(mut st) = self.growing.state.try_borrow_mut() {
            if let Some(slot) = st.wakers.get_mut(self.id) {
                *slot = None;
            }
        }
    }
}
