//! The single-flight table of one core: concurrent misses for one key on that core make one S3
//! fetch; the other requests wait for its outcome. The owner core of a key keeps its flight
//! here ([`super::owner::Owners`]); requests on other cores join it through the owner.
//!
//! Hot path on misses only. [`SingleFlight::begin`] is one hash probe for a follower (plus one
//! `Rc` clone and a waker slot) and two probes, one key clone and one `Rc<Slot>` allocation for a
//! leader. Completing a flight wakes every waiting task once. `!Send` by design: the table is
//! `Rc<RefCell<..>>` and wakers are plain `std::task::Waker`s, woken on the owning core; no
//! borrow is held across an `.await`. Bounded by the shard's connections: each waiting request
//! holds one waker slot in its key's flight, released when the flight ends.
//!
//! Usage (the pipeline, after a cache miss):
//!
//! ```text
//! match flights.begin(&key) {
//!     Flight::Leader(guard) => {
//!         // fetch from S3, stream to this client, fill the entry ...
//!         guard.complete(entry_if_complete); // or drop `guard` on failure
//!     }
//!     Flight::Follower(waiter) => match monoio::time::timeout(bound, waiter.wait()).await {
//!         Ok(Some(entry)) => { /* serve from entry */ }
//!         Ok(None) | Err(_) => { /* leader failed or too slow: fetch ourselves */ }
//!     },
//! }
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::Hash;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The in-flight fetches of one core, by key. Cheap to clone (shares the table).
pub struct SingleFlight<K, V> {
    inner: Rc<Inner<K, V>>,
}

struct Inner<K, V> {
    table: RefCell<HashMap<K, Rc<Slot<V>>>>,
    waiting: Rc<Cell<usize>>,
}

/// One flight: its outcome once known, and the wakers of the tasks waiting for it, indexed by
/// waiter id (a slot is `None` when its waiter was dropped or has not polled yet).
struct Slot<V> {
    state: RefCell<SlotState<V>>,
}

struct SlotState<V> {
    /// `None` while in flight; `Some(Some(v))` completed; `Some(None)` failed.
    outcome: Option<Option<V>>,
    wakers: Vec<Option<Waker>>,
}

/// What [`SingleFlight::begin`] made of this request.
pub enum Flight<K: Hash + Eq, V> {
    /// No fetch for the key was in flight: this request fetches, then completes the guard.
    Leader(LeaderGuard<K, V>),
    /// Another request is fetching the key: wait for its outcome.
    Follower(Waiter<V>),
}

/// Held by the request that fetches. [`LeaderGuard::complete`] publishes the outcome; dropping
/// the guard without completing (error, cancelled task) publishes failure (`None`). Either way
/// the key leaves the table and every waiter is woken exactly once.
pub struct LeaderGuard<K: Hash + Eq, V> {
    inner: Rc<Inner<K, V>>,
    /// `Some` until the outcome is published.
    key: Option<K>,
    slot: Rc<Slot<V>>,
}

/// Held by a request waiting for another's fetch. Dropping it (before or during
/// [`Waiter::wait`], e.g. when a timeout fires) is always safe and releases its waker slot.
pub struct Waiter<V> {
    slot: Rc<Slot<V>>,
    id: usize,
    waiting: Rc<Cell<usize>>,
}

impl<K, V> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        SingleFlight {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Hash + Eq, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inner: Rc::new(Inner {
                table: RefCell::new(HashMap::new()),
                waiting: Rc::new(Cell::new(0)),
            }),
        }
    }
}

impl<K: Hash + Eq + Clone, V> SingleFlight<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Join the flight for `key`, or start one: [`Flight::Leader`] when none is in flight (the
    /// key is cloned into the table), else [`Flight::Follower`].
    pub fn begin(&self, key: &K) -> Flight<K, V> {
        let mut table = self.inner.table.borrow_mut();
        if let Some(slot) = table.get(key) {
            let id = {
                let mut st = slot.state.borrow_mut();
                // A published flight stays in the table until it ends; its waiters return at once.
                st.wakers.push(None);
                st.wakers.len() - 1
            };
            self.inner.waiting.set(self.inner.waiting.get() + 1);
            return Flight::Follower(Waiter {
                slot: slot.clone(),
                id,
                waiting: self.inner.waiting.clone(),
            });
        }
        let slot = Rc::new(Slot {
            state: RefCell::new(SlotState {
                outcome: None,
                wakers: Vec::new(),
            }),
        });
        table.insert(key.clone(), slot.clone());
        Flight::Leader(LeaderGuard {
            inner: self.inner.clone(),
            key: Some(key.clone()),
            slot,
        })
    }

    /// Waiters alive (followers not yet dropped), over all keys.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.get()
    }

    /// Whether a fetch of `key` is in flight.
    pub fn contains(&self, key: &K) -> bool {
        self.inner.table.borrow().contains_key(key)
    }

    /// Keys with a fetch in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.table.borrow().len()
    }
}

impl<K: Hash + Eq, V> LeaderGuard<K, V> {
    /// Publish the outcome: `Some(v)` (each waiter gets a clone) or `None` (failure, or a
    /// response that was not storable: waiters fetch for themselves).
    pub fn complete(mut self, value: Option<V>) {
        self.finish(value);
    }

    /// Publish `value` now but keep the flight open: every waiter, present and joining later,
    /// gets a clone at once, and the key stays in the table (so a request arriving meanwhile
    /// joins instead of fetching again) until the guard completes or is dropped, which then
    /// keeps the published value. Used for fills streamed to followers while they arrive.
    pub fn publish(&self, value: V) {
        let wakers = {
            let mut st = self.slot.state.borrow_mut();
            debug_assert!(st.outcome.is_none(), "a flight was published twice");
            st.outcome = Some(Some(value));
            std::mem::take(&mut st.wakers)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    fn finish(&mut self, value: Option<V>) {
        let Some(key) = self.key.take() else {
            return;
        };
        {
            let mut table = self.inner.table.borrow_mut();
            if table.get(&key).is_some_and(|s| Rc::ptr_eq(s, &self.slot)) {
                table.remove(&key);
            } else {
                debug_assert!(false, "a flight's key was removed by someone else");
            }
        }
        let wakers = {
            let mut st = self.slot.state.borrow_mut();
            if st.outcome.is_none() {
                st.outcome = Some(value);
            }
            std::mem::take(&mut st.wakers)
        };
        // No borrow is held while waking.
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }
}

impl<K: Hash + Eq, V> Drop for LeaderGuard<K, V> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl<V: Clone> Waiter<V> {
    /// Wait for the leader's outcome: `Some(v)` if it completed with a value, `None` if it
    /// failed or was dropped. Cancel-safe: dropping the future drops the waiter. Unbounded by
    /// itself: wrap it in a timeout.
    pub async fn wait(self) -> Option<V> {
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<Option<V>> {
        let mut st = self.slot.state.borrow_mut();
        if let Some(outcome) = &st.outcome {
            return Poll::Ready(outcome.clone());
        }
        match st.wakers.get_mut(self.id) {
            Some(Some(w)) if w.will_wake(cx.waker()) => {}
            Some(slot) => *slot = Some(cx.waker().clone()),
            None => debug_assert!(false, "waiter id out of range while in flight"),
        }
        Poll::Pending
    }
}

impl<V> Drop for Waiter<V> {
    fn drop(&mut self) {
        self.waiting.set(self.waiting.get() - 1);
        if let Ok(mut st) = self.slot.state.try_borrow_mut() {
            if let Some(slot) = st.wakers.get_mut(self.id) {
                *slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// Counts wake-ups: a tiny stand-in for an executor.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Fut = Pin<Box<dyn Future<Output = Option<u32>>>>;

    fn poll(f: &mut Fut, waker: &Waker) -> Poll<Option<u32>> {
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    fn follower(f: Flight<&'static str, u32>) -> Waiter<u32> {
        match f {
            Flight::Follower(w) => w,
            Flight::Leader(_) => panic!("expected a follower"),
        }
    }

    fn leader(f: Flight<&'static str, u32>) -> LeaderGuard<&'static str, u32> {
        match f {
            Flight::Leader(g) => g,
            Flight::Follower(_) => panic!("expected a leader"),
        }
    }

    #[test]
    fn one_leader_many_followers_all_get_the_value() {
        let sf = SingleFlight::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let guard = leader(sf.begin(&"k"));
        let mut futs: Vec<Fut> = (0..10)
            .map(|_| Box::pin(follower(sf.begin(&"k")).wait()) as Fut)
            .collect();
        assert_eq!(sf.waiting(), 10);
        assert_eq!(sf.in_flight(), 1);
        for f in &mut futs {
            assert!(poll(f, &waker).is_pending());
        }
        // Polling again with the same waker does not duplicate it.
        assert!(poll(&mut futs[0], &waker).is_pending());
        // Another key is independent.
        let other = leader(sf.begin(&"other"));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        guard.complete(Some(42));
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            10,
            "each waiter woken once"
        );
        assert_eq!(sf.in_flight(), 1);
        for f in &mut futs {
            assert_eq!(poll(f, &waker), Poll::Ready(Some(42)));
        }
        drop(futs);
        assert_eq!(sf.waiting(), 0);
        drop(other);
        assert_eq!(sf.in_flight(), 0);
        // The key is free again: the next request leads.
        let _again = leader(sf.begin(&"k"));
    }

    #[test]
    fn published_value_reaches_present_and_later_waiters_and_survives_the_end() {
        let flights: SingleFlight<&'static str, u32> = SingleFlight::new();
        let guard = leader(flights.begin(&"k"));
        let early = follower(flights.begin(&"k"));
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut early_wait: Fut = Box::pin(early.wait());
        assert_eq!(poll(&mut early_wait, &waker), Poll::Pending);
        guard.publish(7);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "published wakes the waiter"
        );
        assert_eq!(poll(&mut early_wait, &waker), Poll::Ready(Some(7)));
        // Still in flight: a later request joins and gets the value at once.
        assert_eq!(flights.in_flight(), 1);
        let mut late_wait: Fut = Box::pin(follower(flights.begin(&"k")).wait());
        assert_eq!(poll(&mut late_wait, &waker), Poll::Ready(Some(7)));
        drop(guard);
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(flights.begin(&"k"), Flight::Leader(_)));
    }

    #[test]
    fn leader_drop_means_failure() {
        let sf = SingleFlight::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let guard = leader(sf.begin(&"k"));
        let mut a: Fut = Box::pin(follower(sf.begin(&"k")).wait());
        let mut b: Fut = Box::pin(follower(sf.begin(&"k")).wait());
        assert!(poll(&mut a, &waker).is_pending());
        // `b` never polled before the outcome: it still sees it.
        drop(guard);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut a, &waker), Poll::Ready(None));
        assert_eq!(poll(&mut b, &waker), Poll::Ready(None));
        assert_eq!(sf.in_flight(), 0);
        let guard = leader(sf.begin(&"k"));
        guard.complete(None);
        assert_eq!(sf.in_flight(), 0);
    }

    #[test]
    fn dropping_waiters_is_safe() {
        let sf = SingleFlight::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let guard = leader(sf.begin(&"k"));
        // Dropped before polling, dropped while pending (a timeout), kept.
        drop(follower(sf.begin(&"k")));
        let mut pending: Fut = Box::pin(follower(sf.begin(&"k")).wait());
        assert!(poll(&mut pending, &waker).is_pending());
        drop(pending);
        let mut kept: Fut = Box::pin(follower(sf.begin(&"k")).wait());
        assert!(poll(&mut kept, &waker).is_pending());
        assert_eq!(sf.waiting(), 1);
        guard.complete(Some(7));
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "dropped waiters are not woken"
        );
        assert_eq!(poll(&mut kept, &waker), Poll::Ready(Some(7)));
        drop(kept);
        assert_eq!((sf.waiting(), sf.in_flight()), (0, 0));
    }

    #[test]
    fn waker_is_replaced_when_the_task_moves() {
        let sf = SingleFlight::new();
        let first = Arc::new(Counter(AtomicUsize::new(0)));
        let second = Arc::new(Counter(AtomicUsize::new(0)));
        let guard = leader(sf.begin(&"k"));
        let mut f: Fut = Box::pin(follower(sf.begin(&"k")).wait());
        assert!(poll(&mut f, &Waker::from(first.clone())).is_pending());
        assert!(poll(&mut f, &Waker::from(second.clone())).is_pending());
        guard.complete(Some(1));
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn waiter_dropped_after_completion_is_fine() {
        let sf: SingleFlight<&'static str, u32> = SingleFlight::new();
        let guard = leader(sf.begin(&"k"));
        let w = follower(sf.begin(&"k"));
        guard.complete(Some(3));
        drop(w);
        assert_eq!((sf.waiting(), sf.in_flight()), (0, 0));
    }
}
