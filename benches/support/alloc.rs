//! Allocation counting for the benches: a `#[global_allocator]` that forwards to the system
//! allocator and counts every `alloc`, `alloc_zeroed` and `realloc`, plus helpers that turn the
//! count into allocations per operation and fail the bench when a count grows past its bound.
//!
//! Each bench includes it with `#[path = "support/alloc.rs"] mod alloc;` (which installs the
//! allocator for that bench binary), and so does `tests/metrics_alloc.rs`. It is not a bench
//! target itself: Cargo only discovers `benches/*.rs` and `benches/*/main.rs`.
//!
//! Not shipped (the proxy uses mimalloc). Cost: one relaxed atomic load and, for counted
//! threads, one relaxed atomic add per allocation, on top of the system allocator; the timings
//! of a bench that includes it are therefore those of glibc malloc, not of mimalloc.
//!
//! By default every thread counts. [`count_marked_threads_only`] restricts counting to the
//! threads that called [`mark_this_thread`], so a bench that runs a server in-process can count
//! its client and server threads without the noise of unrelated background threads (timers,
//! readiness probes).

// Each bench uses a subset of the helpers.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts allocations (alloc, alloc_zeroed and realloc) made through the global allocator.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static MARKED_ONLY: AtomicBool = AtomicBool::new(false);

thread_local! {
    // `const` initialisation without a destructor: reading it never allocates, so it is safe to
    // read from inside the allocator.
    static MARKED: Cell<bool> = const { Cell::new(false) };
}

#[inline]
fn count() {
    if !MARKED_ONLY.load(Ordering::Relaxed) || MARKED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter
// is a relaxed atomic increment and a thread-local read with no other effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's `layout` is forwarded unchanged (same contract as ours).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's `layout` is forwarded unchanged (same contract as ours).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator, i.e. from `System`; arguments unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`; arguments unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations counted since the process started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// From now on count only the threads that called [`mark_this_thread`].
pub fn count_marked_threads_only() {
    MARKED_ONLY.store(true, Ordering::Relaxed);
}

/// Count this thread's allocations once [`count_marked_threads_only`] is in effect.
pub fn mark_this_thread() {
    MARKED.with(|m| m.set(true));
}

/// Allocations per call of `op`, averaged over `iterations` calls after one uncounted warm-up
/// call (which fills caches and lazily initialised statics). The result of each call is passed
/// through `black_box` and dropped inside the loop; frees are not counted.
pub fn per_op<R>(iterations: u64, op: impl FnMut() -> R) -> f64 {
    per_op_in_rounds(1, iterations, op)
}

/// Rounds [`expect_at_most`] counts: a real per-operation allocation shows in every round, an
/// occasional one (the `Date` cache re-formatting once a second, a periodic task) in one at most.
pub const ROUNDS: usize = 3;

/// The lowest of `rounds` [`per_op`] counts of `iterations` calls each (one warm-up call in all),
/// so an allocation that happens once in a while, not per operation, cannot make a bound flaky.
pub fn per_op_in_rounds<R>(rounds: usize, iterations: u64, mut op: impl FnMut() -> R) -> f64 {
    assert!(rounds > 0 && iterations > 0);
    black_box(op());
    let mut lowest = f64::INFINITY;
    for _ in 0..rounds {
        let before = allocations();
        for _ in 0..iterations {
            black_box(op());
        }
        lowest = lowest.min((allocations() - before) as f64 / iterations as f64);
    }
    lowest
}

/// Print `alloc/op <name>: <measured>` and panic when `measured` exceeds `bound`, so that an
/// allocation regression fails `cargo bench -- --test`. The bounds are the counts measured when
/// they were written (rounded up): lower one when a change removes allocations.
pub fn check(name: &str, measured: f64, bound: f64) {
    println!("alloc/op {name}: {measured:.2}");
    assert!(
        measured <= bound,
        "allocation regression in bench {name}: {measured:.2} allocations per operation, bound \
         {bound:.2}; find the new allocation, or raise the bound in the bench if it is intended"
    );
}

/// [`per_op_in_rounds`] over [`ROUNDS`] rounds, then [`check`]. `op` runs
/// `ROUNDS * iterations + 1` times.
pub fn expect_at_most<R>(name: &str, bound: f64, iterations: u64, op: impl FnMut() -> R) {
    check(name, per_op_in_rounds(ROUNDS, iterations, op), bound);
}
