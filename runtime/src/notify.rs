//! [`LocalNotify`]: a single-thread "wake every waiter" event for tasks of one shard.
//!
//! Used for the drain signal, the hard-stop signal and "a connection closed" (accept
//! back-pressure and drain wait). Warm path: every connection task polls a hard-stop
//! `Notified` alongside its handler, so the costs matter: `notified()` is allocation-free;
//! the first poll takes a slot in a slab (amortised O(1), grows to the peak number of
//! concurrent waiters and is reused); later polls are one `Cell` read plus a
//! `Waker::will_wake` compare. `notify_all` bumps a generation counter and wakes every
//! registered waker (O(waiters)). Not `Send`: wakers are woken on the shard thread.
//!
//! A `Notified` resolves once the generation differs from the one it was created at, so a
//! notification between creating and first polling it is not lost. Dropping it (e.g. in a
//! `select!`) releases its slot: cancel-safe.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

#[derive(Default)]
struct Slab {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

/// Single-thread broadcast event. See the module docs.
#[derive(Default)]
pub(crate) struct LocalNotify {
    generation: Cell<u64>,
    waiters: RefCell<Slab>,
}

impl LocalNotify {
    /// Wakes every task currently waiting in a [`Notified`] of this event.
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers: Vec<Waker> = {
            let mut slab = self.waiters.borrow_mut();
            slab.slots.iter_mut().filter_map(Option::take).collect()
        };
        // Wake outside the borrow: a waker may run code that registers again.
        for w in wakers {
            w.wake();
        }
    }

    /// A future resolving at the next `notify_all` after this call.
    pub(crate) fn notified(self: &Rc<Self>) -> Notified {
        Notified {
            event: Rc::clone(self),
            generation: self.generation.get(),
            slot: None,
        }
    }

    #[cfg(test)]
    fn slot_count(&self) -> usize {
        let slab = self.waiters.borrow();
        slab.slots.len() - slab.free.len()
    }
}

/// Future returned by [`LocalNotify::notified`].
pub(crate) struct Notified {
    event: Rc<LocalNotify>,
    generation: u64,
    slot: Option<usize>,
}

impl Notified {
    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut slab = self.event.waiters.borrow_mut();
            debug_assert!(i < slab.slots.len(), "slot index from this slab");
            slab.slots[i] = None;
            slab.free.push(i);
        }
    }
}

impl Future for Notified {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.event.generation.get() != this.generation {
            this.release();
            return Poll::Ready(());
        }
        let mut slab = this.event.waiters.borrow_mut();
        match this.slot {
            Some(i) => match &mut slab.slots[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let i = match slab.free.pop() {
                    Some(i) => {
                        slab.slots[i] = waker;
                        i
                    }
                    None => {
                        slab.slots.push(waker);
                        slab.slots.len() - 1
                    }
                };
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::Wake,
    };

    struct CountWaker(AtomicUsize);
    impl Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_all_waiters_and_reuses_slots() {
        let ev = Rc::new(LocalNotify::default());
        let counter = Arc::new(CountWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);

        let mut a = Box::pin(ev.notified());
        let mut b = Box::pin(ev.notified());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        // Re-polling does not take a second slot.
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ev.slot_count(), 2);

        ev.notify_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        assert_eq!(ev.slot_count(), 0);

        let mut c = Box::pin(ev.notified());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        drop(c);
        assert_eq!(ev.slot_count(), 0, "dropping a waiter frees its slot");
        assert_eq!(ev.waiters.borrow().slots.len(), 2, "slots are reused");
    }

    #[test]
    fn notification_before_first_poll_is_not_lost() {
        let ev = Rc::new(LocalNotify::default());
        let waker = Waker::from(Arc::new(CountWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mut n = Box::pin(ev.notified());
        ev.notify_all();
        assert!(n.as_mut().poll(&mut cx).is_ready());
        // A future created after the notification waits for the next one.
        let mut m = Box::pin(ev.notified());
        assert!(m.as_mut().poll(&mut cx).is_pending());
    }
}
