//! The runtime's one error type, [`RuntimeError`].
//!
//! Cold path only: errors are built at startup (shard resolution, bind, pinning, runtime
//! build), on `wait()` and on control-plane calls (mailbox, signals). Every `Display`
//! names the cause and the likely fix, because these messages are what an operator sees
//! when the process refuses to start.

use std::{io, net::SocketAddr};

/// Why a mailbox job could not be delivered or answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxErrorKind {
    /// The shard's bounded mailbox held `MAILBOX_CAPACITY` jobs (non-blocking send only).
    Full,
    /// The shard has exited (drained or failed); the job was dropped unrun, or it panicked
    /// and its result never came back.
    Closed,
    /// The blocking call waited `BROADCAST_TIMEOUT` for room or for the result.
    Timeout,
    /// The shard index is not below the shard count.
    NoSuchShard,
}

impl std::fmt::Display for MailboxErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MailboxErrorKind::Full => "mailbox full",
            MailboxErrorKind::Closed => "shard exited or the job panicked",
            MailboxErrorKind::Timeout => "timed out",
            MailboxErrorKind::NoSuchShard => "no such shard",
        })
    }
}

/// Errors of the thread-per-core runtime. Startup errors (every variant but `Mailbox`,
/// `ShardPanicked` and `BroadcastOnShard`) leave no thread running.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting is out of range (`max_connections_per_shard: 0`, `shards: 0`, ...).
    #[error("invalid runtime option: {reason}")]
    InvalidOptions {
        /// What is wrong and the accepted range.
        reason: String,
    },

    /// The process affinity mask could not be read (`sched_getaffinity` failed).
    #[error(
        "cannot read the process CPU affinity mask; set `cpu_affinity: none` and an explicit \
         `shards: N` to run without pinning"
    )]
    AffinityUnavailable,

    /// `cpu_affinity` lists a CPU id outside the process affinity mask.
    #[error(
        "cpu_affinity lists CPU {cpu}, which is not in this process's affinity mask {mask:?} \
         (taskset/cpuset/systemd CPUAffinity restrict it); list only CPUs from the mask or use \
         `cpu_affinity: auto`"
    )]
    CpuNotInMask {
        /// The offending CPU id.
        cpu: usize,
        /// The CPUs the process may run on, ascending.
        mask: Vec<usize>,
    },

    /// `cpu_affinity` lists a CPU twice, or is an empty list.
    #[error("cpu_affinity list is invalid: {reason}")]
    BadCpuList {
        /// Duplicate id or empty list.
        reason: String,
    },

    /// More shards than the runtime supports.
    #[error(
        "{requested} shards requested; at most {max} are supported (one per CPU is the intent)"
    )]
    TooManyShards {
        /// Requested shard count.
        requested: usize,
        /// [`crate::MAX_SHARDS`].
        max: usize,
    },

    /// Creating, binding or listening on a shard's SO_REUSEPORT socket failed.
    #[error("cannot listen on {addr} (shard {shard}): {source}; {hint}")]
    Bind {
        /// The address being bound (port already resolved for shards > 0).
        addr: SocketAddr,
        /// The shard whose socket failed.
        shard: usize,
        /// The OS error.
        source: io::Error,
        /// Likely cause and fix, derived from the error kind.
        hint: &'static str,
    },

    /// Handing the bound socket to the shard's runtime failed.
    #[error("shard {shard}: cannot register the listener with its runtime: {source}")]
    Listener {
        /// The shard.
        shard: usize,
        /// The OS error.
        source: io::Error,
    },

    /// `sched_setaffinity` refused to pin a shard thread.
    #[error(
        "shard {shard}: cannot pin the thread to CPU {cpu}; the CPU may be offline or outside \
         the cgroup cpuset; use `cpu_affinity: none` or list online CPUs"
    )]
    Pin {
        /// The shard.
        shard: usize,
        /// The CPU it was to be pinned to.
        cpu: usize,
    },

    /// Neither the io_uring nor the epoll runtime could be built.
    #[error("shard {shard}: cannot build a monoio runtime (io_uring and epoll both failed): {source}; check RLIMIT_NOFILE and memory")]
    RuntimeBuild {
        /// The shard.
        shard: usize,
        /// The epoll driver's error (the io_uring one was logged).
        source: io::Error,
    },

    /// The OS refused to start a shard thread.
    #[error("cannot spawn the thread for shard {shard}: {source}; check RLIMIT_NPROC and memory")]
    ThreadSpawn {
        /// The shard.
        shard: usize,
        /// The OS error.
        source: io::Error,
    },

    /// A shard failed between thread start and readiness (state factory panicked, startup
    /// took longer than the startup timeout, ...).
    #[error("shard {shard} failed to start: {reason}")]
    ShardStart {
        /// The shard.
        shard: usize,
        /// What happened.
        reason: String,
    },

    /// A shard thread panicked after startup (seen by `wait()`).
    #[error("shard {shard} panicked; see the log for the panic message")]
    ShardPanicked {
        /// The shard.
        shard: usize,
    },

    /// A mailbox job could not be delivered or answered.
    #[error("mailbox of shard {shard}: {kind}")]
    Mailbox {
        /// The shard.
        shard: usize,
        /// Full, closed or timed out.
        kind: MailboxErrorKind,
    },

    /// A blocking control call was made on a shard thread, where it would stall the event
    /// loop (and deadlock on its own mailbox).
    #[error("blocking broadcast called on a shard thread; use Control::broadcast_async there")]
    BroadcastOnShard,

    /// Signal handlers could not be installed (or were installed twice).
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// Likely cause and fix for a bind/listen error, by error kind.
pub(crate) fn bind_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => {
            "the address is in use by a socket without SO_REUSEPORT (another server, or a \
             previous instance still shutting down); stop it or choose another `listen` port"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need CAP_NET_BIND_SERVICE (systemd AmbientCapabilities) or a \
             higher port"
        }
        io::ErrorKind::AddrNotAvailable => {
            "the IP address is not assigned to any interface of this host; use 0.0.0.0 or a \
             local address"
        }
        _ => "check the `listen` address and RLIMIT_NOFILE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_error_names_cause_and_fix() {
        let err = RuntimeError::Bind {
            addr: "127.0.0.1:80".parse().expect("literal address"),
            shard: 0,
            hint: bind_hint(&io::Error::from(io::ErrorKind::AddrInUse)),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:80"), "{text}");
        assert!(text.contains("SO_REUSEPORT"), "{text}");
        let perm = bind_hint(&io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(perm.contains("CAP_NET_BIND_SERVICE"));
    }

    #[test]
    fn cpu_error_lists_mask() {
        let text = RuntimeError::CpuNotInMask {
            cpu: 7,
            mask: vec![0, 1],
        }
        .to_string();
        assert!(text.contains("CPU 7") && text.contains("[0, 1]"), "{text}");
    }
}
