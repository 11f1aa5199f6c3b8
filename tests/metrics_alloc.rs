//! Counting S3 errors allocates nothing: `BucketMetrics::record_upstream_error` and
//! `record_upstream_status` run on a shard for every failed S3 exchange, so this test binary
//! installs a global allocator that counts the allocations of the calling thread and records
//! known, unknown and hostile codes between two readings. Needs no backend.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use yatagarasu::metrics::ShardMetrics;

/// `System`, counting every allocation and reallocation of the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may be gone while a thread exits; those allocations do not matter.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter
// is a const-initialised thread-local `Cell` without a destructor, so touching it never
// allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received (same contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received (same contract).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as received (same contract).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received (same contract).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn recording_upstream_errors_does_not_allocate() {
    let shard = ShardMetrics::standalone();
    let bucket = shard.bucket("public");
    let codes = [
        "NoSuchKey",
        "SlowDown",
        "timeout",
        "transport",
        "http_404",
        "http_418",
        "SomethingNew",
        "Evil\"} 1\nyatagarasu_forged_total 9",
        "",
    ];
    // The counter must see an allocation when there is one, or the assertion below proves
    // nothing.
    let before = allocations();
    let probe = String::from("allocates");
    assert!(allocations() > before, "the counting allocator counts");
    drop(probe);

    let before = allocations();
    for _ in 0..1000 {
        for code in codes {
            bucket.record_upstream_error(code);
        }
        for status in [404, 418, 503, 600] {
            bucket.record_upstream_status(status);
        }
    }
    let during = allocations() - before;
    assert_eq!(
        during, 0,
        "record_upstream_error/_status allocated {during} times"
    );

    let counted: u64 = bucket.upstream_errors().iter().map(|(_, n)| n).sum();
    assert_eq!(
        counted,
        1000 * (codes.len() as u64 + 4),
        "every call counted"
    );
}
