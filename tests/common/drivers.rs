//! The suite's driver rule (issue 12 item 9): an io_uring run must really run io_uring. A shard
//! that fell back to epoll (memlock, seccomp, `kernel.io_uring_disabled`) would otherwise turn
//! the io_uring half of the suite into a second epoll run without anyone noticing.
//!
//! - `MONOIO_FORCE_LEGACY_DRIVER=1` (or `true` / `yes`, any case, as monoio reads it): every
//!   shard must run epoll.
//! - otherwise every shard must run io_uring, unless `YATA_TEST_ALLOW_EPOLL=1` says this machine
//!   cannot do io_uring (then either driver passes).
//!
//! Pure functions over the proxy's `drivers=` field (`io_uring,epoll`, one entry per shard, from
//! its `yatagarasu listening` line); test-only, no I/O beyond reading two variables.

/// The variable that says the machine cannot do io_uring, so a fallback to epoll is expected.
pub const ALLOW_EPOLL: &str = "YATA_TEST_ALLOW_EPOLL";
/// The variable that forces the epoll driver (read by monoio and by the runtime crate).
pub const FORCE_LEGACY: &str = "MONOIO_FORCE_LEGACY_DRIVER";

/// Whether `value` switches a flag on: `1`, `true` or `yes`, any case.
pub fn truthy(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}

/// The value of `name` for the proxy process: from `overrides` (what the test passes to the
/// child) when present there, else from this process's environment (inherited by the child).
pub fn effective(name: &str, overrides: &[(&str, &str)]) -> Option<String> {
    overrides
        .iter()
        .rev()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| (*v).to_owned())
        .or_else(|| std::env::var(name).ok())
}

/// What the rule expects of each shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `MONOIO_FORCE_LEGACY_DRIVER` is on: epoll everywhere.
    Epoll,
    /// The default: io_uring everywhere.
    IoUring,
    /// `YATA_TEST_ALLOW_EPOLL` is on (and epoll is not forced): either driver.
    Either,
}

/// The expectation for a proxy started with `overrides` on top of this process's environment.
pub fn expectation(overrides: &[(&str, &str)]) -> Expect {
    let on = |name| effective(name, overrides).is_some_and(|v| truthy(&v));
    if on(FORCE_LEGACY) {
        Expect::Epoll
    } else if on(ALLOW_EPOLL) {
        Expect::Either
    } else {
        Expect::IoUring
    }
}

/// Check the `drivers=` field against `expect`; the error says which shards broke the rule and
/// what to do about it.
pub fn check(drivers: &str, expect: Expect) -> Result<(), String> {
    let list: Vec<&str> = drivers.split(',').map(str::trim).collect();
    if list.iter().any(|d| !matches!(*d, "io_uring" | "epoll")) {
        return Err(format!(
            "cannot read the shards' drivers from drivers={drivers:?} (want io_uring/epoll, \
             comma-separated)"
        ));
    }
    let shards_on = |driver: &str| -> Vec<String> {
        list.iter()
            .enumerate()
            .filter(|(_, d)| **d == driver)
            .map(|(i, _)| i.to_string())
            .collect()
    };
    match expect {
        Expect::Either => Ok(()),
        Expect::Epoll => {
            let wrong = shards_on("io_uring");
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{FORCE_LEGACY}=1 but shard(s) {} run io_uring (drivers={drivers})",
                    wrong.join(",")
                ))
            }
        }
        Expect::IoUring => {
            let wrong = shards_on("epoll");
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "an io_uring run, but shard(s) {} fell back to epoll (drivers={drivers}); \
                     the proxy's warning `io_uring unavailable, falling back` names the cause \
                     (RLIMIT_MEMLOCK, seccomp, kernel.io_uring_disabled). If this machine cannot \
                     do io_uring, run with {ALLOW_EPOLL}=1; to test epoll on purpose, set \
                     {FORCE_LEGACY}=1",
                    wrong.join(",")
                ))
            }
        }
    }
}

/// The `drivers` value of a text-format log line (`... drivers=io_uring,epoll ...`).
pub fn from_text_line(line: &str) -> Option<&str> {
    let rest = &line[line.find("drivers=")? + "drivers=".len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}
