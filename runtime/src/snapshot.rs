//! [`Snapshot`]: a shared, atomically swapped value (the config snapshot) with a
//! generation counter, on `arc_swap::ArcSwap`.
//!
//! Hot path: `load()` runs once per request on every shard. It is lock-free and
//! wait-free for readers (arc-swap's debt slots: a few atomic ops, no refcount bump,
//! no contention between cores); `load_full()` adds one `Arc` refcount increment and is
//! what a request should use to hold the snapshot across `.await`. `store()` is cold
//! (reload): it swaps the pointer under a writer-side mutex so generations and values are
//! published in the same order; readers never take that mutex.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, PoisonError,
};

// Off the shards: only publishers (`store`, reload on the control thread) take the writer
// lock; shards only load.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;

use arc_swap::{ArcSwap, Guard};

struct Cell<T> {
    value: ArcSwap<T>,
    generation: AtomicU64,
    /// Serialises publishers; readers never take it. Off the shards.
    #[allow(clippy::disallowed_types)]
    writer: Mutex<()>,
}

/// Shared, atomically swapped snapshot with a generation counter.
///
/// `Send + Sync` when `T` is; `clone()` gives another handle to the same cell. A new
/// snapshot has generation 0; every `store` increments it by one and returns the new
/// value. Ordering: the value is published before its generation, so a reader that
/// observes generation `g` and then loads sees the value stored as `g` or a newer one.
pub struct Snapshot<T> {
    cell: Arc<Cell<T>>,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Self {
            cell: Arc::clone(&self.cell),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation())
            .field("value", &*self.load())
            .finish()
    }
}

impl<T> Snapshot<T> {
    /// A snapshot holding `v` at generation 0.
    // The writer lock is created here, taken only by publishers (off the shards).
    #[allow(clippy::disallowed_types)]
    pub fn new(v: T) -> Self {
        Self {
            cell: Arc::new(Cell {
                value: ArcSwap::from_pointee(v),
                generation: AtomicU64::new(0),
                writer: Mutex::new(()),
            }),
        }
    }

    /// The current value, for use within one synchronous stretch of code (do not hold the
    /// guard across `.await`; many live guards per thread fall back to a slower path).
    pub fn load(&self) -> Guard<Arc<T>> {
        self.cell.value.load()
    }

    /// The current value as an owned `Arc`, safe to hold across `.await` (a request keeps
    /// its snapshot until it ends).
    pub fn load_full(&self) -> Arc<T> {
        self.cell.value.load_full()
    }

    /// Publishes `v` and returns its generation (previous generation + 1).
    pub fn store(&self, v: T) -> u64 {
        // The mutex only orders concurrent writers (reloads); a poisoned lock still
        // protects nothing but ordering, so recover it.
        let _writer = self
            .cell
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.cell.value.store(Arc::new(v));
        self.cell.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The generation of the latest `store` (0 if none).
    pub fn generation(&self) -> u64 {
        self.cell.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_bumps_generation_and_load_sees_value() {
        let s = Snapshot::new(String::from("a"));
        assert_eq!(s.generation(), 0);
        assert_eq!(**s.load(), "a");
        let held = s.load_full();
        assert_eq!(s.store("b".into()), 1);
        assert_eq!(s.store("c".into()), 2);
        assert_eq!(s.generation(), 2);
        assert_eq!(**s.load(), "c");
        assert_eq!(*s.load_full(), "c");
        // A holder keeps its old snapshot.
        assert_eq!(*held, "a");
    }

    #[test]
    fn clones_share_the_cell_across_threads() {
        let s = Snapshot::new(0u64);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        s.store(t * 1000 + i);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread");
        }
        assert_eq!(s.generation(), 400);
        let last = *s.load_full();
        assert!(
            last % 1000 == 99,
            "last value {last} is some writer's last store"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<X: Send + Sync>() {}
        assert_send_sync::<Snapshot<Vec<u8>>>();
    }
}
