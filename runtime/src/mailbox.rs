//! The per-shard control mailbox and [`Control`], the cross-thread handle that feeds it
//! and drives shutdown.
//!
//! Control path (reload, purge, stats, drain), never the request path. Costs: one bounded
//! `async_channel` per shard holding at most [`MAILBOX_CAPACITY`] boxed jobs; a broadcast
//! allocates one box per shard and one result channel.
//!
//! # Mailbox contract
//!
//! - A job is `Box<dyn FnOnce(&S) + Send>`. It runs on the shard's thread, with the shard's
//!   `!Send` state, inside the shard's runtime (so it may `monoio::spawn` async follow-up
//!   work), between I/O events. Jobs of one shard run one at a time in FIFO order; jobs
//!   sent to different shards run concurrently.
//! - A job must not block (no sleeping, blocking I/O or waiting on locks held elsewhere):
//!   it stalls every connection of that shard while it runs.
//! - Bounded: each mailbox holds at most [`MAILBOX_CAPACITY`] queued jobs. When full,
//!   [`Control::try_send`] fails at once with [`MailboxErrorKind::Full`];
//!   [`Control::send`] and [`Control::broadcast_async`] wait for room (back-pressure, no
//!   job is ever dropped to make room); the blocking [`Control::broadcast`] waits at most
//!   [`BROADCAST_TIMEOUT`] for room and results, then fails with `Timeout`.
//! - A job that panics is caught and logged; its shard keeps running and the caller sees
//!   `Closed` for that shard's result.
//! - Jobs still queued when a shard exits are dropped unrun (`Closed` to their callers).
//!   Mailboxes are served while a shard drains, until it exits.
//! - The blocking `broadcast` refuses to run on a shard thread
//!   ([`RuntimeError::BroadcastOnShard`]): it would stall the loop and deadlock on its own
//!   mailbox. Use `broadcast_async` there.

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

// Off the shards: `Shared::signals` is locked by the main thread only (install, wait).
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;

use crate::error::{MailboxErrorKind, RuntimeError};

/// A control job run on one shard with its state.
pub type Job<S> = Box<dyn FnOnce(&S) + Send + 'static>;

/// Queued jobs per shard mailbox.
pub const MAILBOX_CAPACITY: usize = 64;

/// How long the blocking [`Control::broadcast`] waits for room and for all results.
pub const BROADCAST_TIMEOUT: Duration = Duration::from_secs(5);

/// Server lifecycle phase; only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Phase {
    Running = 0,
    /// Stop accepting, let connections finish within the grace period.
    Draining = 1,
    /// End the grace period now: close every connection.
    Stopping = 2,
}

pub(crate) struct SignalThread {
    pub handle: signal_hook::iterator::Handle,
    pub thread: std::thread::JoinHandle<()>,
}

/// State shared by `Server`, every `Control` and the signal thread.
pub(crate) struct Shared<S> {
    pub mailboxes: Vec<async_channel::Sender<Job<S>>>,
    /// Per shard, capacity 2: each phase transition is sent at most once.
    pub phase_tx: Vec<async_channel::Sender<Phase>>,
    pub phase: AtomicU8,
    /// The signal thread, once installed. Off the shards: main thread only.
    #[allow(clippy::disallowed_types)]
    pub signals: Mutex<Option<SignalThread>>,
}

impl<S> Shared<S> {
    /// Moves the phase forward to `to`; tells every shard if it moved. Returns whether it
    /// moved.
    pub(crate) fn advance(&self, to: Phase) -> bool {
        let prev = self.phase.fetch_max(to as u8, Ordering::AcqRel);
        if prev >= to as u8 {
            return false;
        }
        if prev < Phase::Draining as u8 {
            crate::systemd::notify_stopping();
        }
        for tx in &self.phase_tx {
            // Cannot be full (capacity 2, at most two transitions); Closed means the shard
            // already exited.
            let _ = tx.try_send(to);
        }
        true
    }

    pub(crate) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }
}

/// Cross-thread handle to the shards' mailboxes and lifecycle. `Clone + Send + Sync`
/// (for any `S`); cheap to clone (one `Arc`). Obtain it with `Server::control()`.
pub struct Control<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for Control<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: 'static> Control<S> {
    /// Number of shards (mailboxes), fixed for the server's life.
    pub fn shard_count(&self) -> usize {
        self.shared.mailboxes.len()
    }

    fn mailbox(&self, shard: usize) -> Result<&async_channel::Sender<Job<S>>, RuntimeError> {
        self.shared
            .mailboxes
            .get(shard)
            .ok_or(RuntimeError::Mailbox {
                shard,
                kind: MailboxErrorKind::NoSuchShard,
            })
    }

    /// Queues `job` on one shard without waiting. Errors: `Full`, `Closed`, `NoSuchShard`.
    pub fn try_send(
        &self,
        shard: usize,
        job: impl FnOnce(&S) + Send + 'static,
    ) -> Result<(), RuntimeError> {
        self.mailbox(shard)?
            .try_send(Box::new(job))
            .map_err(|e| RuntimeError::Mailbox {
                shard,
                kind: if e.is_full() {
                    MailboxErrorKind::Full
                } else {
                    MailboxErrorKind::Closed
                },
            })
    }

    /// Queues `job` on one shard, waiting for room. Usable on any thread that polls
    /// futures, including a shard. Errors: `Closed`, `NoSuchShard`.
    pub async fn send(
        &self,
        shard: usize,
        job: impl FnOnce(&S) + Send + 'static,
    ) -> Result<(), RuntimeError> {
        self.mailbox(shard)?
            .send(Box::new(job))
            .await
            .map_err(|_| RuntimeError::Mailbox {
                shard,
                kind: MailboxErrorKind::Closed,
            })
    }

    /// Runs `job` on every shard and returns the results in shard order. Waits for
    /// mailbox room and for results without a time limit (wrap it in
    /// `monoio::time::timeout` on a shard). Usable on a shard, including for its own
    /// mailbox. Errors: `Closed` naming the first shard that did not answer.
    pub async fn broadcast_async<R: Send + 'static>(
        &self,
        job: impl Fn(&S) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, RuntimeError> {
        let n = self.shard_count();
        let job = Arc::new(job);
        let (tx, rx) = async_channel::bounded::<(usize, R)>(n.max(1));
        for (shard, mailbox) in self.shared.mailboxes.iter().enumerate() {
            let job = Arc::clone(&job);
            let tx = tx.clone();
            mailbox
                .send(Box::new(move |s: &S| {
                    // Capacity n: never full. Closed: the caller gave up.
                    let _ = tx.try_send((shard, job(s)));
                }))
                .await
                .map_err(|_| RuntimeError::Mailbox {
                    shard,
                    kind: MailboxErrorKind::Closed,
                })?;
        }
        drop(tx);
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            match rx.recv().await {
                Ok((shard, r)) => out[shard] = Some(r),
                Err(_) => break,
            }
        }
        collect(out, MailboxErrorKind::Closed)
    }

    /// Blocking broadcast for non-shard threads (admin thread, tests): runs `job` on every
    /// shard and returns the results in shard order, waiting at most
    /// [`BROADCAST_TIMEOUT`] overall. Errors: `BroadcastOnShard`; `Mailbox { Closed |
    /// Timeout }` naming the first shard that did not answer.
    pub fn broadcast<R: Send + 'static>(
        &self,
        job: impl Fn(&S) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, RuntimeError> {
        if crate::shard::on_shard_thread() {
            return Err(RuntimeError::BroadcastOnShard);
        }
        let deadline = Instant::now() + BROADCAST_TIMEOUT;
        let n = self.shard_count();
        let job = Arc::new(job);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, R)>(n.max(1));
        for (shard, mailbox) in self.shared.mailboxes.iter().enumerate() {
            let job = Arc::clone(&job);
            let tx = tx.clone();
            let mut boxed: Job<S> = Box::new(move |s: &S| {
                let _ = tx.try_send((shard, job(s)));
            });
            let mut pause = Duration::from_millis(1);
            loop {
                match mailbox.try_send(boxed) {
                    Ok(()) => break,
                    Err(async_channel::TrySendError::Closed(_)) => {
                        return Err(RuntimeError::Mailbox {
                            shard,
                            kind: MailboxErrorKind::Closed,
                        })
                    }
                    Err(async_channel::TrySendError::Full(back)) => {
                        if Instant::now() >= deadline {
                            return Err(RuntimeError::Mailbox {
                                shard,
                                kind: MailboxErrorKind::Timeout,
                            });
                        }
                        boxed = back;
                        // Not a shard thread (checked above): sleeping is allowed here.
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                }
            }
        }
        drop(tx);
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        let mut kind = MailboxErrorKind::Closed;
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((shard, r)) => out[shard] = Some(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    kind = MailboxErrorKind::Timeout;
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        collect(out, kind)
    }

    /// Starts the drain on every shard (same as SIGTERM). Idempotent.
    pub fn shutdown(&self) {
        if self.shared.advance(Phase::Draining) {
            tracing::info!("shutdown requested: draining");
        }
    }

    /// Ends the grace period now: every shard closes its remaining connections and exits
    /// (same as a second SIGTERM). Idempotent.
    pub fn stop_now(&self) {
        if self.shared.advance(Phase::Stopping) {
            tracing::warn!("immediate stop requested: closing remaining connections");
        }
    }

    /// True once `shutdown`, `stop_now` or a signal started the drain.
    pub fn is_draining(&self) -> bool {
        self.shared.phase() >= Phase::Draining as u8
    }
}

fn collect<R>(out: Vec<Option<R>>, kind: MailboxErrorKind) -> Result<Vec<R>, RuntimeError> {
    if let Some(shard) = out.iter().position(Option::is_none) {
        return Err(RuntimeError::Mailbox { shard, kind });
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
// Test threads, not shards: they may sleep and lock.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;

    fn control(shards: usize) -> (Control<u32>, Vec<async_channel::Receiver<Job<u32>>>) {
        let mut mailboxes = Vec::new();
        let mut rxs = Vec::new();
        let mut phase_tx = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = async_channel::bounded(MAILBOX_CAPACITY);
            mailboxes.push(tx);
            rxs.push(rx);
            phase_tx.push(async_channel::bounded(2).0);
        }
        let shared = Shared {
            mailboxes,
            phase_tx,
            phase: AtomicU8::new(0),
            signals: Mutex::new(None),
        };
        (
            Control {
                shared: Arc::new(shared),
            },
            rxs,
        )
    }

    #[test]
    fn try_send_reports_full_at_capacity_and_closed_after_exit() {
        let (c, rxs) = control(1);
        for _ in 0..MAILBOX_CAPACITY {
            c.try_send(0, |_| {}).expect("room");
        }
        let err = c.try_send(0, |_| {}).expect_err("full");
        assert!(matches!(
            err,
            RuntimeError::Mailbox {
                shard: 0,
                kind: MailboxErrorKind::Full
            }
        ));
        assert!(matches!(
            c.try_send(3, |_| {}),
            Err(RuntimeError::Mailbox {
                shard: 3,
                kind: MailboxErrorKind::NoSuchShard
            })
        ));
        drop(rxs);
        assert!(matches!(
            c.try_send(0, |_| {}),
            Err(RuntimeError::Mailbox {
                kind: MailboxErrorKind::Closed,
                ..
            })
        ));
    }

    #[test]
    fn blocking_broadcast_collects_in_shard_order() {
        let (c, rxs) = control(3);
        let workers: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                std::thread::spawn(move || {
                    let state = 10 * i as u32;
                    // Answer in reverse speed order so results arrive out of order.
                    std::thread::sleep(Duration::from_millis(30 * (3 - i as u64)));
                    if let Ok(job) = rx.recv_blocking() {
                        job(&state);
                    }
                })
            })
            .collect();
        let got = c.broadcast(|s: &u32| *s + 1).expect("all shards answer");
        assert_eq!(got, vec![1, 11, 21]);
        for w in workers {
            w.join().expect("worker");
        }
    }

    #[test]
    fn blocking_broadcast_names_the_shard_that_is_gone() {
        let (c, mut rxs) = control(2);
        drop(rxs.pop());
        let err = c.broadcast(|s: &u32| *s).expect_err("shard 1 gone");
        assert!(matches!(
            err,
            RuntimeError::Mailbox {
                shard: 1,
                kind: MailboxErrorKind::Closed
            }
        ));
    }

    #[test]
    fn phase_only_moves_forward_and_is_sent_once() {
        let (c, _rxs) = control(1);
        let rx = {
            let (tx, rx) = async_channel::bounded(2);
            let shared = Arc::new(Shared {
                mailboxes: c.shared.mailboxes.clone(),
                phase_tx: vec![tx],
                phase: AtomicU8::new(0),
                signals: Mutex::new(None),
            });
            let c2 = Control { shared };
            c2.shutdown();
            c2.shutdown();
            assert!(c2.is_draining());
            c2.stop_now();
            c2.shutdown();
            rx
        };
        assert_eq!(rx.try_recv().ok(), Some(Phase::Draining));
        assert_eq!(rx.try_recv().ok(), Some(Phase::Stopping));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn control_is_send_and_sync_for_non_send_state() {
        fn assert_send_sync<X: Send + Sync>() {}
        assert_send_sync::<Control<std::rc::Rc<u8>>>();
    }
}
