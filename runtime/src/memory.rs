//! Process memory policy: transparent huge pages (THP) off unless the operator asks for them.
//!
//! Why: the allocator (mimalloc) reserves its arena as one 1 GiB region and, by default,
//! advises the kernel to back it with 2 MiB huge pages. Every thread that allocates then faults
//! in at least one whole huge page for its first small allocation, so a 2-shard proxy at rest
//! (shards, blocking pools, admin, signal and log threads) holds ~16 MiB of mostly empty huge
//! pages: measured 21.9 MiB idle RSS with THP, 10.8 MiB without (`perf/idle-rss.sh`). Idle
//! footprint per node matters more to our operators than the TLB reach huge pages buy a large
//! memory cache, so THP is off by default and `MIMALLOC_ALLOW_THP=1` (mimalloc's own switch,
//! which then also lets mimalloc advise huge pages) turns it back on.
//!
//! Not on the hot path: one `prctl(2)` before `main`. Costs nothing afterwards.

/// Disable THP for this process (`prctl(PR_SET_THP_DISABLE, 1)`, Linux 3.15+) unless the
/// environment variable `MIMALLOC_ALLOW_THP` is set (to anything; mimalloc then reads its value).
///
/// Meant to run before the first allocation, from a constructor in the binary (the flag is
/// checked at page-fault time, so pages faulted before the call keep their size). Allocates
/// nothing and takes no lock, so it is safe in a constructor. Errors are ignored: a kernel
/// without the flag simply keeps its THP policy.
pub fn disable_transparent_huge_pages_unless_requested() {
    // SAFETY: getenv reads the process environment with a NUL-terminated name; called before
    // main (no other thread can be modifying the environment) or from a single-threaded start.
    let requested = unsafe { !libc::getenv(c"MIMALLOC_ALLOW_THP".as_ptr()).is_null() };
    if !requested {
        // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The flag is set on the calling process unless `MIMALLOC_ALLOW_THP` is in the environment.
    #[test]
    fn disables_thp_for_the_process() {
        assert!(
            std::env::var_os("MIMALLOC_ALLOW_THP").is_none(),
            "unset MIMALLOC_ALLOW_THP to run this test (it asks for THP to stay on)"
        );
        super::disable_transparent_huge_pages_unless_requested();
        // SAFETY: PR_GET_THP_DISABLE takes no pointers.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1, "PR_GET_THP_DISABLE after the call");
    }
}
