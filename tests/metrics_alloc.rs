//! Counting S3 errors allocates nothing: `BucketMetrics::record_upstream_error` and
//! `record_upstream_status` run on a shard for every failed S3 exchange. This test binary
//! installs the benches' counting allocator (`benches/support/alloc.rs`, counting only this
//! test's thread) and records known, unknown and hostile codes between two readings. Needs no
//! backend.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../benches/support/alloc.rs"]
mod alloc;

use yatagarasu::metrics::ShardMetrics;

#[test]
fn recording_upstream_errors_does_not_allocate() {
    alloc::count_marked_threads_only();
    alloc::mark_this_thread();
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
    // The counter must see an allocation when there is one, or the bound below proves nothing.
    let grows = alloc::per_op(10, || String::from("allocates"));
    assert!(grows >= 1.0, "the counting allocator counts ({grows})");

    let per_call = alloc::per_op(1000, || {
        for code in codes {
            bucket.record_upstream_error(code);
        }
        for status in [404, 418, 503, 600] {
            bucket.record_upstream_status(status);
        }
    });
    assert_eq!(per_call, 0.0, "record_upstream_error/_status allocated");

    let counted: u64 = bucket.upstream_errors().iter().map(|(_, n)| n).sum();
    // One warm-up call plus 1000 counted ones, 13 records each.
    assert_eq!(
        counted,
        1001 * (codes.len() as u64 + 4),
        "every call counted"
    );
}
