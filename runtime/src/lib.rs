//! `yatagarasu-runtime`: the thread-per-core substrate. It knows nothing of S3, HTTP or
//! caches; it runs "one pinned event loop per CPU, each with its own listener and state".
//!
//! What [`start`] does, once, on the calling (main) thread:
//! 1. Reads the process CPU affinity mask (`core_affinity::get_core_ids()`, before any
//!    pinning, since it reads the calling thread's mask) and resolves the shard layout
//!    from `shards` and `cpu_affinity` ([`resolve_shards`]; rules in `topology.rs`).
//! 2. Binds one SO_REUSEPORT listener per shard with socket2 (port 0: shard 0 binds, the
//!    rest bind the port it got), so bind errors surface before any thread starts.
//! 3. Starts one thread per shard. Each pins itself, builds a monoio runtime
//!    (io_uring via `FusionDriver`, epoll fallback with the likely cause logged; see
//!    `driver.rs`), wraps its listener with `TcpListener::from_std`, builds its `!Send`
//!    state with `make_state(&ShardContext)`, reports ready, and accepts: each connection
//!    gets TCP_NODELAY and runs `handle(state, ctx, stream, peer)` as a task.
//! 4. Returns a [`Server`] once every shard is ready (or the first startup error, after
//!    stopping the shards already started).
//!
//! Every shard runtime has the same small blocking pool attached
//! ([`BLOCKING_POOL_THREADS`] threads, monoio `DefaultThreadPool`), so
//! `monoio::spawn_blocking` works on every shard (DNS resolution, fallocate).
//!
//! Shared between cores: only [`Snapshot`] (config, arc-swap), the control plane
//! ([`Control`]: bounded per-shard mailboxes, lifecycle phase) and the request-path queues
//! between cores ([`Peers`]: one bounded queue of opaque messages per owner shard, `peer.rs`). The drain protocol is
//! documented in `shard.rs`, the mailbox contract in `mailbox.rs`; both are summarised on
//! [`Server`].
//!
//! Cost: startup only, plus per connection what `shard.rs` lists. Nothing here blocks a
//! shard's event loop.

#![warn(missing_docs)]

mod control_thread;
mod driver;
mod error;
mod listener;
mod mailbox;
mod memory;
mod notify;
mod peer;
mod shard;
mod signals;
mod snapshot;
mod systemd;
mod topology;

use std::{
    future::Future,
    net::SocketAddr,
    rc::Rc,
    sync::{atomic::AtomicU8, Arc, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

// Off the shards: the signal-thread slot, locked by the main thread only (install, wait).
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;

pub use control_thread::spawn_control_thread;
pub use driver::{legacy_forced_by_env, Driver};
pub use error::{MailboxErrorKind, RuntimeError};
pub use listener::LISTEN_BACKLOG;
pub use mailbox::{Control, Job, BROADCAST_TIMEOUT, MAILBOX_CAPACITY};
pub use memory::disable_transparent_huge_pages_unless_requested;
pub use peer::{Inbox, PeerSendError, Peers};
pub use shard::{ShardContext, ShardInfo};
pub use signals::install_signal_handlers;
pub use snapshot::Snapshot;
pub use systemd::{notify_ready, notify_reloading, notify_stopping};
pub use topology::{resolve_shards, CpuAffinity, ShardPlan, Shards, MAX_SHARDS};

use mailbox::{Phase, Shared};

/// Threads of the blocking pool shared by all shards (`monoio::spawn_blocking`).
pub const BLOCKING_POOL_THREADS: usize = 4;

/// How long `start()` waits for every shard to report ready (runtime built, state made).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest accepted `io_uring_entries` (the kernel's `IORING_MAX_ENTRIES`).
pub const MAX_IO_URING_ENTRIES: u32 = 32768;

/// Runtime settings (the `server:` section of the config, minus HTTP limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Data-plane address; port 0 picks a free port shared by every shard.
    pub listen: SocketAddr,
    /// Shard count (see `topology.rs` for the rules).
    pub shards: Shards,
    /// Pinning.
    pub cpu_affinity: CpuAffinity,
    /// io_uring submission queue entries per shard, 1..=32768; monoio raises values below
    /// 256 to 256 and the kernel rounds up to a power of two. Default 1024.
    pub io_uring_entries: u32,
    /// Longest time a shard waits for its connections after the drain starts.
    pub shutdown_grace: Duration,
    /// Live connections per shard at which the shard stops accepting (>= 1).
    pub max_connections_per_shard: usize,
    /// Use the epoll driver even where io_uring works (tests, debugging). The environment
    /// variable `MONOIO_FORCE_LEGACY_DRIVER=1` has the same effect.
    pub force_legacy: bool,
}

impl Default for Options {
    /// `0.0.0.0:8080`, shards auto, affinity auto, 1024 entries, 30 s grace, 65536
    /// connections per shard, io_uring allowed: the config file's defaults.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            shards: Shards::Auto,
            cpu_affinity: CpuAffinity::Auto,
            io_uring_entries: 1024,
            shutdown_grace: Duration::from_secs(30),
            max_connections_per_shard: 65536,
            force_legacy: false,
        }
    }
}

/// A started server.
///
/// Drain: [`Server::shutdown`] (or SIGTERM/SIGINT after [`install_signal_handlers`]) makes
/// every shard stop accepting, wake its `ShardContext::draining()` futures, and wait until
/// its connections end or `shutdown_grace` passes; then remaining connections are closed
/// and the shard exits. [`Server::wait`] blocks until every shard exited. Dropping a
/// `Server` without waiting starts the drain and detaches the threads.
///
/// Mailboxes: [`Server::broadcast`] / [`Control`] queue `FnOnce(&S)` jobs on each shard's
/// bounded mailbox ([`MAILBOX_CAPACITY`]); see `mailbox.rs` for what happens when full.
pub struct Server<S> {
    local_addr: SocketAddr,
    shards: Vec<ShardInfo>,
    threads: Vec<JoinHandle<Result<(), RuntimeError>>>,
    shared: Arc<Shared<S>>,
}

impl<S: 'static> Server<S> {
    /// The address every shard listens on (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Index, CPU and driver of every shard, in shard order.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    /// A `Clone + Send + Sync` handle to the mailboxes and lifecycle, for the admin
    /// listener, reload code and shard tasks (`broadcast_async`).
    pub fn control(&self) -> Control<S> {
        Control {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `job` on every shard with its state and returns the results in shard order.
    /// Blocking: for non-shard threads (admin thread, tests); waits at most
    /// [`BROADCAST_TIMEOUT`]. On a shard use `control().broadcast_async`. Errors: see
    /// [`Control::broadcast`].
    pub fn broadcast<R: Send + 'static>(
        &self,
        job: impl Fn(&S) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, RuntimeError> {
        self.control().broadcast(job)
    }

    /// Starts the drain on every shard (same as SIGTERM). Idempotent, non-blocking.
    pub fn shutdown(&self) {
        self.control().shutdown();
    }

    /// Ends the grace period now (same as a second SIGTERM). Idempotent, non-blocking.
    pub fn stop_now(&self) {
        self.control().stop_now();
    }

    /// Blocks until every shard has drained and exited, then stops the signal thread.
    /// Errors: the first shard that panicked or failed.
    pub fn wait(mut self) -> Result<(), RuntimeError> {
        let threads = std::mem::take(&mut self.threads);
        let mut result = Ok(());
        for (index, t) in threads.into_iter().enumerate() {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(RuntimeError::ShardPanicked { shard: index }),
            };
            if result.is_ok() {
                result = r;
            }
        }
        self.stop_signal_thread(true);
        tracing::info!("all shards stopped");
        result
    }

    fn stop_signal_thread(&self, join: bool) {
        let taken = self
            .shared
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(st) = taken {
            st.handle.close();
            if join {
                let _ = st.thread.join();
            }
        }
    }
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shared.advance(Phase::Draining);
        }
        if let Some(st) = self
            .shared
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            st.handle.close();
        }
    }
}

fn validate(opts: &Options) -> Result<(), RuntimeError> {
    if opts.max_connections_per_shard == 0 {
        return Err(RuntimeError::InvalidOptions {
            reason: "max_connections_per_shard must be >= 1".into(),
        });
    }
    if opts.io_uring_entries == 0 || opts.io_uring_entries > MAX_IO_URING_ENTRIES {
        return Err(RuntimeError::InvalidOptions {
            reason: format!(
                "io_uring_entries must be within 1..={MAX_IO_URING_ENTRIES}, got {}",
                opts.io_uring_entries
            ),
        });
    }
    Ok(())
}

/// The shard layout `opts` gives on this machine (the calling thread's CPU mask, as
/// [`start`] reads it), and that mask. Call it on the main thread before pinning anything.
fn plan_for(opts: &Options) -> Result<(ShardPlan, Option<Vec<usize>>), RuntimeError> {
    let mask: Option<Vec<usize>> =
        core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect());
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    let plan = resolve_shards(
        &opts.shards,
        &opts.cpu_affinity,
        mask.as_deref(),
        parallelism,
    )?;
    Ok((plan, mask))
}

/// How many shards [`start`] will run for `opts` on this machine (what state sized per shard
/// before the start, such as the disk tier's directories, needs). Main thread only.
pub fn shard_count(opts: &Options) -> Result<usize, RuntimeError> {
    Ok(plan_for(opts)?.0.cpus.len())
}

/// Starts the shards and returns once every one is ready.
///
/// `make_state` runs once on each shard thread, after pinning and runtime build, inside
/// the runtime (it may `monoio::spawn`). `handle` is called for each accepted connection
/// on that shard and spawned as a task; the runtime counts live connections, stops
/// accepting at `max_connections_per_shard`, and on drain stops accepting, waits until
/// live connections reach 0 or the grace period passes, then ends the shard (see
/// [`Server`]). A panicking handler closes its connection only.
///
/// Errors (no thread left running): invalid options, shard layout errors
/// ([`RuntimeError::CpuNotInMask`], ...), bind errors, thread spawn, pinning, runtime
/// build, state factory panic, startup timeout ([`STARTUP_TIMEOUT`]).
pub fn start<S, F, H, Fut>(
    opts: Options,
    make_state: F,
    handle: H,
) -> Result<Server<S>, RuntimeError>
where
    S: 'static,
    F: Fn(&ShardContext) -> S + Send + Sync + 'static,
    H: Fn(Rc<S>, ShardContext, monoio::net::TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    validate(&opts)?;
    let (plan, mask) = plan_for(&opts)?;
    let count = plan.cpus.len();
    if plan.oversubscribed {
        tracing::warn!(
            shards = count,
            mask = ?mask,
            "more shards than CPUs to pin to: shards share CPUs round-robin; set \
             `cpu_affinity: none` to let the scheduler place them"
        );
    }
    tracing::info!(shards = count, cpus = ?plan.cpus, mask = ?mask, "shard layout");

    let (listeners, local_addr) = listener::bind_reuseport(opts.listen, count)?;
    let facts = Arc::new(driver::HostFacts::read());
    let force_legacy = if opts.force_legacy {
        Some("Options::force_legacy")
    } else if legacy_forced_by_env() {
        Some("MONOIO_FORCE_LEGACY_DRIVER")
    } else {
        None
    };
    let pool = monoio::blocking::DefaultThreadPool::new(BLOCKING_POOL_THREADS);
    let make_state = Arc::new(make_state);
    let handle = Arc::new(handle);

    let mut mailboxes = Vec::with_capacity(count);
    let mut phase_tx = Vec::with_capacity(count);
    let mut receivers = Vec::with_capacity(count);
    for _ in 0..count {
        let (mtx, mrx) = async_channel::bounded(MAILBOX_CAPACITY);
        let (ptx, prx) = async_channel::bounded(2);
        mailboxes.push(mtx);
        phase_tx.push(ptx);
        receivers.push((mrx, prx));
    }
    // Off the shards: the signal-thread slot (main thread only).
    #[allow(clippy::disallowed_types)]
    let shared = Arc::new(Shared {
        mailboxes,
        phase_tx,
        phase: AtomicU8::new(Phase::Running as u8),
        signals: Mutex::new(None),
    });

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(count);
    let mut failure: Option<RuntimeError> = None;
    for (index, ((listener, cpu), (mailbox_rx, phase_rx))) in listeners
        .into_iter()
        .zip(plan.cpus.iter().copied())
        .zip(receivers)
        .enumerate()
    {
        let spec = shard::ShardSpec {
            index,
            shard_count: count,
            cpu,
            listener,
            io_uring_entries: opts.io_uring_entries,
            force_legacy,
            pool: pool.clone(),
            facts: Arc::clone(&facts),
            make_state: Arc::clone(&make_state),
            handle: Arc::clone(&handle),
            mailbox_rx,
            phase_rx,
            ready_tx: ready_tx.clone(),
            max_connections: opts.max_connections_per_shard,
            grace: opts.shutdown_grace,
        };
        match std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || shard::run(spec))
        {
            Ok(t) => threads.push(t),
            Err(source) => {
                failure = Some(RuntimeError::ThreadSpawn {
                    shard: index,
                    source,
                });
                break;
            }
        }
    }
    drop(ready_tx);
    drop(pool);

    let mut drivers: Vec<Option<Driver>> = vec![None; count];
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut timed_out = false;
    if failure.is_none() {
        for _ in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok((index, Ok(driver))) => drivers[index] = Some(driver),
                Ok((_, Err(e))) => {
                    failure = Some(e);
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let shard = drivers.iter().position(Option::is_none).unwrap_or(0);
                    failure = Some(RuntimeError::ShardStart {
                        shard,
                        reason: format!(
                            "not ready after {} s (state factory blocked?)",
                            STARTUP_TIMEOUT.as_secs()
                        ),
                    });
                    timed_out = true;
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let shard = drivers.iter().position(Option::is_none).unwrap_or(0);
                    failure = Some(RuntimeError::ShardStart {
                        shard,
                        reason: "the shard thread exited during startup (panic? see the log)"
                            .into(),
                    });
                    break;
                }
            }
        }
    }

    if let Some(err) = failure {
        tracing::error!(error = %err, "startup failed; stopping the shards already started");
        shared.advance(Phase::Stopping);
        if !timed_out {
            for t in threads {
                let _ = t.join();
            }
        }
        return Err(err);
    }

    let shards = drivers
        .into_iter()
        .enumerate()
        .map(|(index, driver)| ShardInfo {
            index,
            cpu: plan.cpus[index],
            // Every shard reported Ok above, so each slot is filled.
            driver: driver.unwrap_or(Driver::Legacy),
        })
        .collect();
    Ok(Server {
        local_addr,
        shards,
        threads,
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let bad = Options {
            max_connections_per_shard: 0,
            ..Options::default()
        };
        assert!(matches!(
            validate(&bad),
            Err(RuntimeError::InvalidOptions { .. })
        ));
        let big = Options {
            io_uring_entries: MAX_IO_URING_ENTRIES + 1,
            ..Options::default()
        };
        assert!(matches!(
            validate(&big),
            Err(RuntimeError::InvalidOptions { .. })
        ));
        assert!(validate(&Options::default()).is_ok());
    }

    #[test]
    fn server_and_control_are_send_and_sync_even_for_non_send_state() {
        fn assert_send_sync<X: Send + Sync>() {}
        assert_send_sync::<Server<std::rc::Rc<u8>>>();
        assert_send_sync::<Control<std::rc::Rc<u8>>>();
    }
}
