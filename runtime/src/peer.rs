//! Cross-core request queues: one bounded multi-producer queue per shard ("owner") that any
//! core may send opaque messages to, and the [`Inbox`] the owner serves them from.
//!
//! Request path (the cache layer sends a lookup to a key's owner core per remote lookup). The
//! runtime knows nothing of what the messages mean: `M` is defined by the layer above
//! (the cache's owner protocol), which also carries its own reply channels inside `M`.
//!
//! Costs per message: one lock-free push onto an `async_channel` queue (a `concurrent-queue`
//! ring, no allocation once the ring exists) and, when the owner's receiving task is parked
//! on the queue, one wake through monoio's cross-thread waker: a push onto the owner runtime's
//! remote-wake channel, and an eventfd write **only if the owner's thread is parked in the
//! kernel** (monoio skips the write while the thread is awake), so a busy owner costs no
//! syscall. The owner drains every queued message each time it is woken.
//!
//! # Bound and back-pressure
//!
//! [`Peers::try_send`] refuses a message once `capacity` messages wait in the owner's queue
//! ([`PeerSendError::Full`]): the caller never waits for room and treats the owner as busy
//! (the cache layer then serves from the origin without a fill). [`Peers::send_always`]
//! ignores the bound for messages that must not be lost and whose number is bounded by other
//! means (a completion per fill a core leads). The bound is checked against the queue length
//! before the push, so concurrent senders may exceed it by at most one message each.
//!
//! # Lifetime
//!
//! An owner closes its queue with [`Inbox::close`] when it stops serving (its shard drained):
//! later sends fail with [`PeerSendError::Closed`], and `close` hands back the messages
//! already queued so the owner can answer them. Inboxes are clones of one receiver, so
//! dropping one does not close the queue; closing any of them does.

use std::sync::Arc;

/// Why [`Peers::try_send`] or [`Peers::send_always`] did not queue a message; the message is
/// handed back.
#[derive(Debug)]
pub enum PeerSendError<M> {
    /// The owner's queue holds `capacity` messages already (only from `try_send`).
    Full(M),
    /// The owner's inbox is gone (its shard exited), or `to` is not a shard index.
    Closed(M),
}

impl<M> PeerSendError<M> {
    /// The message that was not queued.
    pub fn into_inner(self) -> M {
        match self {
            PeerSendError::Full(m) | PeerSendError::Closed(m) => m,
        }
    }
}

/// The sending side of every shard's queue. Cheap to clone (`Arc`); `Send + Sync` when `M` is
/// `Send`, so one handle serves every core.
pub struct Peers<M> {
    queues: Arc<[async_channel::Sender<M>]>,
    capacity: usize,
}

impl<M> Clone for Peers<M> {
    fn clone(&self) -> Self {
        Peers {
            queues: self.queues.clone(),
            capacity: self.capacity,
        }
    }
}

/// The receiving side of one shard's queue, served on that shard. Clones receive from the same
/// queue (so a factory shared by every shard can hand each its inbox).
pub struct Inbox<M> {
    rx: async_channel::Receiver<M>,
}

impl<M> Clone for Inbox<M> {
    fn clone(&self) -> Self {
        Inbox {
            rx: self.rx.clone(),
        }
    }
}

impl<M: Send> Peers<M> {
    /// Queues for `shards` owners, each refusing [`Peers::try_send`] past `capacity` waiting
    /// messages (`capacity` >= 1); returns the senders and one inbox per shard, in shard order.
    pub fn new(shards: usize, capacity: usize) -> (Peers<M>, Vec<Inbox<M>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| async_channel::unbounded()).unzip();
        let inboxes = rxs.into_iter().map(|rx| Inbox { rx }).collect();
        (
            Peers {
                queues: txs.into(),
                capacity: capacity.max(1),
            },
            inboxes,
        )
    }

    /// Owners (shards) reachable.
    pub fn shards(&self) -> usize {
        self.queues.len()
    }

    /// Messages waiting in `to`'s queue (0 for an unknown shard).
    pub fn queued(&self, to: usize) -> usize {
        self.queues.get(to).map_or(0, |q| q.len())
    }

    /// Queue `msg` for shard `to` unless its queue is full; never waits.
    pub fn try_send(&self, to: usize, msg: M) -> Result<(), PeerSendError<M>> {
        let Some(q) = self.queues.get(to) else {
            return Err(PeerSendError::Closed(msg));
        };
        if q.len() >= self.capacity {
            return Err(PeerSendError::Full(msg));
        }
        q.try_send(msg)
            .map_err(|e| PeerSendError::Closed(e.into_inner()))
    }

    /// Queue `msg` for shard `to` whatever the queue length (see the module doc); never waits.
    /// Errors: only [`PeerSendError::Closed`].
    pub fn send_always(&self, to: usize, msg: M) -> Result<(), PeerSendError<M>> {
        let Some(q) = self.queues.get(to) else {
            return Err(PeerSendError::Closed(msg));
        };
        q.try_send(msg)
            .map_err(|e| PeerSendError::Closed(e.into_inner()))
    }
}

impl<M> Inbox<M> {
    /// The next message, waiting for one; `None` once every [`Peers`] handle is gone.
    pub async fn recv(&self) -> Option<M> {
        self.rx.recv().await.ok()
    }

    /// The next message if one is queued; never waits.
    pub fn try_recv(&self) -> Option<M> {
        self.rx.try_recv().ok()
    }

    /// Stop accepting: later sends fail with `Closed`; returns the messages already queued so
    /// the owner can answer them before it exits.
    pub fn close(&self) -> Vec<M> {
        self.rx.close();
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_send_refuses_past_capacity_and_send_always_does_not() {
        let (peers, inboxes) = Peers::<u32>::new(2, 2);
        peers.try_send(1, 1).unwrap();
        peers.try_send(1, 2).unwrap();
        assert!(matches!(peers.try_send(1, 3), Err(PeerSendError::Full(3))));
        peers.send_always(1, 4).unwrap();
        assert_eq!(peers.queued(1), 3);
        assert_eq!(inboxes[1].try_recv(), Some(1));
        assert_eq!(inboxes[0].try_recv(), None);
        assert!(matches!(
            peers.try_send(7, 1),
            Err(PeerSendError::Closed(1))
        ));
    }

    #[test]
    fn a_closed_inbox_refuses_and_hands_back_what_was_queued() {
        let (peers, inboxes) = Peers::<u32>::new(1, 8);
        peers.try_send(0, 5).unwrap();
        assert_eq!(inboxes[0].close(), vec![5]);
        assert!(matches!(
            peers.try_send(0, 6),
            Err(PeerSendError::Closed(6))
        ));
        assert!(matches!(
            peers.send_always(0, 7),
            Err(PeerSendError::Closed(7))
        ));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test thread, not a shard
    fn a_message_crosses_threads_and_wakes_the_receiving_runtime() {
        let (peers, mut inboxes) = Peers::<u64>::new(1, 4);
        let inbox = inboxes.pop().unwrap();
        let rx = std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap();
            rt.block_on(async move { inbox.recv().await })
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        peers.try_send(0, 42).unwrap();
        assert_eq!(rx.join().unwrap(), Some(42));
    }
}
