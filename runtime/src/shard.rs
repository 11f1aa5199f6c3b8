//! One shard: a pinned thread running one monoio runtime, one SO_REUSEPORT listener, its
//! `!Send` state, its mailbox, and the accept / drain loop.
//!
//! Hot path: the accept loop and the per-connection wrapper. Per accepted connection the
//! shard pays one `setsockopt(TCP_NODELAY)`, one task spawn (one allocation), a live-count
//! increment, and on every wake of the handler a `Cell` read for the hard-stop check plus a
//! `catch_unwind` frame (zero cost unless a handler panics). Nothing here blocks.
//!
//! # Drain protocol (per shard)
//!
//! 1. `Server::shutdown()` / SIGTERM / SIGINT moves the server to *draining*; each shard
//!    receives it through its phase channel (not the mailbox, so a full mailbox cannot
//!    delay it).
//! 2. The shard sets `is_draining()`, wakes every `draining()` future (handlers use it to
//!    finish the current response and close keep-alive connections) and cancels its
//!    pending accept (`cancelable_accept`, so a connection the kernel already accepted is
//!    still served rather than lost).
//! 3. The listener is closed. New connections go to shards still listening, and are
//!    refused once every shard has closed (connections left in a closed socket's backlog
//!    are reset by the kernel).
//! 4. The shard waits until its live connection count reaches 0 or `shutdown_grace` has
//!    passed since it received the drain, whichever comes first. `stop_now()` or a second
//!    SIGTERM/SIGINT ends the wait at once.
//! 5. Remaining connections are closed: each connection task drops its handler future
//!    (closing the socket) at its next poll, which happens immediately. The mailbox and
//!    phase tasks end, queued jobs are dropped, the services
//!    ([`ShardContext::spawn_service`]) end and are awaited, the state is dropped on the
//!    shard thread, and the thread exits. `Server::wait()` returns after every shard exited.
//!
//! `max_connections_per_shard`: while the live count is at the limit the shard does not
//! call accept; the kernel keeps further connections in the listen backlog (or sends them
//! to other shards' listeners if they were hashed there) until a connection closes.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use monoio::{
    blocking::DefaultThreadPool,
    io::Canceller,
    net::{TcpListener, TcpStream},
};

use crate::{
    driver::{build_shard_runtime, Driver, HostFacts},
    error::RuntimeError,
    mailbox::{Job, Phase},
    notify::LocalNotify,
};

thread_local! {
    static ON_SHARD: Cell<bool> = const { Cell::new(false) };
}

/// True on a shard thread (used to refuse blocking control calls there).
pub(crate) fn on_shard_thread() -> bool {
    ON_SHARD.with(Cell::get)
}

/// How long the shard waits for connection tasks to drop after the hard stop.
const HARD_STOP_WAIT: Duration = Duration::from_secs(1);
/// At most one "connection limit reached" warning per shard per this interval.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Longest pause after a failing `accept` (EMFILE, ENOBUFS, ...), doubling from 5 ms.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where and how a shard runs, as reported by `Server::shards()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard index, 0-based, dense.
    pub index: usize,
    /// CPU the shard thread is pinned to; `None` when not pinned.
    pub cpu: Option<usize>,
    /// The I/O driver the shard's runtime really uses.
    pub driver: Driver,
}

struct ShardInner {
    info: ShardInfo,
    shard_count: usize,
    draining: Cell<bool>,
    drain_event: Rc<LocalNotify>,
    stopping: Cell<bool>,
    stop_event: Rc<LocalNotify>,
    live: Cell<usize>,
    closed_event: Rc<LocalNotify>,
    finished: Cell<bool>,
    finish_event: Rc<LocalNotify>,
    accept_canceller: RefCell<Option<Canceller>>,
    services: RefCell<Vec<monoio::task::JoinHandle<()>>>,
}

/// Cheap-to-clone handle given to every connection task on a shard (one `Rc`). `!Send`:
/// it belongs to its shard.
#[derive(Clone)]
pub struct ShardContext {
    inner: Rc<ShardInner>,
}

impl std::fmt::Debug for ShardContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardContext")
            .field("info", &self.inner.info)
            .field("draining", &self.inner.draining.get())
            .field("live", &self.inner.live.get())
            .finish()
    }
}

impl ShardContext {
    fn new(info: ShardInfo, shard_count: usize) -> Self {
        debug_assert!(info.index < shard_count);
        Self {
            inner: Rc::new(ShardInner {
                info,
                shard_count,
                draining: Cell::new(false),
                drain_event: Rc::default(),
                stopping: Cell::new(false),
                stop_event: Rc::default(),
                live: Cell::new(0),
                closed_event: Rc::default(),
                finished: Cell::new(false),
                finish_event: Rc::default(),
                accept_canceller: RefCell::new(None),
                services: RefCell::new(Vec::new()),
            }),
        }
    }

    /// How many shards this server runs (per-shard budgets such as cache capacity divide by it).
    pub fn shard_count(&self) -> usize {
        self.inner.shard_count
    }

    /// Shard index, 0-based.
    pub fn index(&self) -> usize {
        self.inner.info.index
    }

    /// CPU this shard is pinned to, if any.
    pub fn cpu(&self) -> Option<usize> {
        self.inner.info.cpu
    }

    /// The I/O driver this shard's runtime uses.
    pub fn driver(&self) -> Driver {
        self.inner.info.driver
    }

    /// Index, CPU and driver together.
    pub fn info(&self) -> ShardInfo {
        self.inner.info
    }

    /// True once the drain has started on this shard.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.get()
    }

    /// Connections currently being handled on this shard.
    pub fn live_connections(&self) -> usize {
        self.inner.live.get()
    }

    /// Resolves when the drain starts (immediately if it already has). Any number of
    /// tasks of the shard may wait at once; dropping the future is cancel-safe. Allocation
    /// free; see `notify.rs` for its per-poll cost.
    pub fn draining(&self) -> impl Future<Output = ()> + 'static {
        let inner = Rc::clone(&self.inner);
        async move {
            while !inner.draining.get() {
                inner.drain_event.notified().await;
            }
        }
    }

    /// Resolves when the hard stop starts (grace over or `stop_now`). Connection handlers
    /// need not use it: the runtime drops them at that point anyway.
    pub fn stopping(&self) -> impl Future<Output = ()> + 'static {
        let inner = Rc::clone(&self.inner);
        async move {
            while !inner.stopping.get() {
                inner.stop_event.notified().await;
            }
        }
    }

    /// Spawn a task that serves for the shard's whole life, such as the loop answering a queue
    /// other cores send to ([`crate::Peers`]): it runs until `service` ends or the shard
    /// finishes (drained: every connection closed), and the shard awaits it before it drops
    /// its state and exits. So the task always ends on this thread, inside this runtime:
    /// never left behind with a waker that another core would drop after the runtime is gone.
    /// One spawn (one allocation) per call; call it while building the state.
    pub fn spawn_service<F: Future<Output = ()> + 'static>(&self, service: F) {
        let finished = self.finished();
        let handle = monoio::spawn(async move {
            monoio::select! {
                _ = service => {},
                _ = finished => {},
            }
        });
        self.inner.services.borrow_mut().push(handle);
    }

    fn finished(&self) -> impl Future<Output = ()> + 'static {
        let inner = Rc::clone(&self.inner);
        async move {
            while !inner.finished.get() {
                inner.finish_event.notified().await;
            }
        }
    }

    fn begin_drain(&self) {
        if self.inner.draining.replace(true) {
            return;
        }
        if let Some(c) = self.inner.accept_canceller.borrow_mut().take() {
            drop(c.cancel());
        }
        self.inner.drain_event.notify_all();
    }

    fn begin_stop(&self) {
        self.begin_drain();
        if !self.inner.stopping.replace(true) {
            self.inner.stop_event.notify_all();
        }
    }

    fn finish(&self) {
        self.inner.finished.set(true);
        self.inner.finish_event.notify_all();
    }
}

/// Decrements the live count when a connection task ends or is dropped.
struct ConnGuard {
    inner: Rc<ShardInner>,
}

impl ConnGuard {
    fn new(inner: Rc<ShardInner>) -> Self {
        inner.live.set(inner.live.get() + 1);
        Self { inner }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let live = self.inner.live.get();
        debug_assert!(live > 0, "live connection count underflow");
        self.inner.live.set(live.saturating_sub(1));
        self.inner.closed_event.notify_all();
    }
}

/// Polls a future inside `catch_unwind`: a panicking connection handler or mailbox job
/// ends that task, not the shard. Returns `None` on panic.
struct CatchUnwind<F>(F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field; CatchUnwind has no Drop impl and
        // never moves the field out.
        let fut = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Some(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(None),
        }
    }
}

/// Everything a shard thread needs, moved into it.
pub(crate) struct ShardSpec<S, F, H> {
    pub index: usize,
    pub shard_count: usize,
    pub cpu: Option<usize>,
    pub listener: std::net::TcpListener,
    pub io_uring_entries: u32,
    pub force_legacy: Option<&'static str>,
    pub pool: DefaultThreadPool,
    pub facts: Arc<HostFacts>,
    pub make_state: Arc<F>,
    pub handle: Arc<H>,
    pub mailbox_rx: async_channel::Receiver<Job<S>>,
    pub phase_rx: async_channel::Receiver<Phase>,
    pub ready_tx: std::sync::mpsc::Sender<(usize, Result<Driver, RuntimeError>)>,
    pub max_connections: usize,
    pub grace: Duration,
}

/// Shard thread body. Startup failures are reported on `ready_tx` (and the thread returns
/// `Ok`); after readiness the thread returns when the shard has drained.
pub(crate) fn run<S, F, H, Fut>(spec: ShardSpec<S, F, H>) -> Result<(), RuntimeError>
where
    S: 'static,
    F: Fn(&ShardContext) -> S + Send + Sync + 'static,
    H: Fn(Rc<S>, ShardContext, TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    ON_SHARD.with(|f| f.set(true));
    let ShardSpec {
        index,
        shard_count,
        cpu,
        listener,
        io_uring_entries,
        force_legacy,
        pool,
        facts,
        make_state,
        handle,
        mailbox_rx,
        phase_rx,
        ready_tx,
        max_connections,
        grace,
    } = spec;
    let fail = |e: RuntimeError| {
        let _ = ready_tx.send((index, Err(e)));
        Ok(())
    };
    if let Some(cpu) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            return fail(RuntimeError::Pin { shard: index, cpu });
        }
    }
    let built = match build_shard_runtime(index, io_uring_entries, force_legacy, &pool, &facts) {
        Ok(b) => b,
        Err(source) => {
            return fail(RuntimeError::RuntimeBuild {
                shard: index,
                source,
            })
        }
    };
    drop(pool);
    if let Some(cause) = &built.fallback_cause {
        tracing::warn!(shard = index, cause = %cause, "shard runs on epoll");
    }
    let mut runtime = built.runtime;
    let running = Running {
        shard_count,
        info: ShardInfo {
            index,
            cpu,
            driver: built.driver,
        },
        listener,
        make_state,
        handle,
        mailbox_rx,
        phase_rx,
        ready_tx,
        max_connections,
        grace,
    };
    runtime.block_on(shard_main(running))
}

struct Running<S, F, H> {
    shard_count: usize,
    info: ShardInfo,
    listener: std::net::TcpListener,
    make_state: Arc<F>,
    handle: Arc<H>,
    mailbox_rx: async_channel::Receiver<Job<S>>,
    phase_rx: async_channel::Receiver<Phase>,
    ready_tx: std::sync::mpsc::Sender<(usize, Result<Driver, RuntimeError>)>,
    max_connections: usize,
    grace: Duration,
}

async fn shard_main<S, F, H, Fut>(r: Running<S, F, H>) -> Result<(), RuntimeError>
where
    S: 'static,
    F: Fn(&ShardContext) -> S + Send + Sync + 'static,
    H: Fn(Rc<S>, ShardContext, TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let index = r.info.index;
    debug_assert_eq!(
        monoio::utils::is_legacy(),
        r.info.driver == Driver::Legacy,
        "reported driver matches the running one"
    );
    let fail = |e: RuntimeError| {
        let _ = r.ready_tx.send((index, Err(e)));
        Ok(())
    };
    // The epoll driver needs a non-blocking socket (monoio's own bind does the same).
    if r.info.driver == Driver::Legacy {
        if let Err(source) = r.listener.set_nonblocking(true) {
            return fail(RuntimeError::Listener {
                shard: index,
                source,
            });
        }
    }
    let listener = match TcpListener::from_std(r.listener) {
        Ok(l) => l,
        Err(source) => {
            return fail(RuntimeError::Listener {
                shard: index,
                source,
            })
        }
    };
    let ctx = ShardContext::new(r.info, r.shard_count);
    let make_state = Arc::clone(&r.make_state);
    let state = match std::panic::catch_unwind(AssertUnwindSafe(|| make_state(&ctx))) {
        Ok(s) => Rc::new(s),
        Err(_) => {
            return fail(RuntimeError::ShardStart {
                shard: index,
                reason: "the per-shard state factory panicked (see the log)".into(),
            })
        }
    };
    tracing::info!(
        shard = index,
        cpu = ?r.info.cpu,
        driver = %r.info.driver,
        "shard started"
    );
    let _ = r.ready_tx.send((index, Ok(r.info.driver)));
    drop(r.ready_tx);

    let phase_task = monoio::spawn(phase_loop(r.phase_rx, ctx.clone()));
    let mailbox_task = monoio::spawn(mailbox_loop(r.mailbox_rx, Rc::clone(&state), ctx.clone()));

    accept_loop(&ctx, &listener, &state, &r.handle, r.max_connections).await;
    drop(listener);
    let drain_started = Instant::now();
    tracing::info!(
        shard = index,
        live = ctx.live_connections(),
        grace_ms = r.grace.as_millis() as u64,
        "draining: stopped accepting"
    );

    let deadline = drain_started + r.grace;
    loop {
        let inner = &ctx.inner;
        if inner.live.get() == 0 || inner.stopping.get() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let closed = inner.closed_event.notified();
        let stop = inner.stop_event.notified();
        monoio::select! {
            _ = closed => {},
            _ = stop => {},
            _ = monoio::time::sleep(left) => {},
        }
    }

    let abandoned = ctx.live_connections();
    if abandoned > 0 {
        tracing::warn!(
            shard = index,
            abandoned,
            after_ms = drain_started.elapsed().as_millis() as u64,
            "grace period over or stop requested: closing remaining connections"
        );
    }
    ctx.begin_stop();
    let until = Instant::now() + HARD_STOP_WAIT;
    while ctx.live_connections() > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::error!(
                shard = index,
                live = ctx.live_connections(),
                "connection tasks did not stop; exiting anyway"
            );
            break;
        }
        let closed = ctx.inner.closed_event.notified();
        monoio::select! {
            _ = closed => {},
            _ = monoio::time::sleep(left) => {},
        }
    }

    ctx.finish();
    let _ = phase_task.await;
    let _ = mailbox_task.await;
    let services = std::mem::take(&mut *ctx.inner.services.borrow_mut());
    for service in services {
        service.await;
    }
    drop(state);
    // One timer tick so the driver submits the close operations of dropped sockets.
    monoio::time::sleep(Duration::from_millis(1)).await;
    tracing::info!(
        shard = index,
        drain_ms = drain_started.elapsed().as_millis() as u64,
        "shard stopped"
    );
    Ok(())
}

async fn accept_loop<S, H, Fut>(
    ctx: &ShardContext,
    listener: &TcpListener,
    state: &Rc<S>,
    handle: &Arc<H>,
    max_connections: usize,
) where
    S: 'static,
    H: Fn(Rc<S>, ShardContext, TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let canceller = Canceller::new();
    let cancel = canceller.handle();
    *ctx.inner.accept_canceller.borrow_mut() = Some(canceller);
    let mut backoff = Duration::from_millis(5);
    let mut last_limit_warning: Option<Instant> = None;
    loop {
        if ctx.is_draining() {
            break;
        }
        if ctx.live_connections() >= max_connections {
            if last_limit_warning.is_none_or(|t| t.elapsed() >= LIMIT_WARNING_INTERVAL) {
                last_limit_warning = Some(Instant::now());
                tracing::warn!(
                    shard = ctx.index(),
                    max_connections,
                    "connection limit reached: not accepting until one closes"
                );
            }
            let closed = ctx.inner.closed_event.notified();
            let drain = ctx.draining();
            monoio::select! {
                _ = closed => {},
                _ = drain => {},
            }
            continue;
        }
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                spawn_connection(ctx, state, handle, stream, peer);
            }
            Err(_) if ctx.is_draining() => break,
            Err(e) => {
                let transient = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO)
                );
                if transient {
                    continue;
                }
                tracing::warn!(
                    shard = ctx.index(),
                    error = %e,
                    backoff_ms = backoff.as_millis() as u64,
                    "accept failed (EMFILE: raise LimitNOFILE); backing off"
                );
                let drain = ctx.draining();
                monoio::select! {
                    _ = monoio::time::sleep(backoff) => {},
                    _ = drain => {},
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    // A canceller left over (drain came through begin_drain, which took it) is dropped.
    ctx.inner.accept_canceller.borrow_mut().take();
}

fn spawn_connection<S, H, Fut>(
    ctx: &ShardContext,
    state: &Rc<S>,
    handle: &Arc<H>,
    stream: TcpStream,
    peer: SocketAddr,
) where
    S: 'static,
    H: Fn(Rc<S>, ShardContext, TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(shard = ctx.index(), error = %e, "TCP_NODELAY failed");
    }
    let guard = ConnGuard::new(Rc::clone(&ctx.inner));
    let conn = handle(Rc::clone(state), ctx.clone(), stream, peer);
    let stop = ctx.stopping();
    let index = ctx.index();
    monoio::spawn(async move {
        let _guard = guard;
        let finished = CatchUnwind(async move {
            monoio::select! {
                biased;
                _ = conn => {},
                _ = stop => {},
            }
        })
        .await;
        if finished.is_none() {
            tracing::error!(shard = index, %peer, "connection handler panicked; connection closed");
        }
    });
}

async fn phase_loop(rx: async_channel::Receiver<Phase>, ctx: ShardContext) {
    loop {
        let finished = ctx.finished();
        monoio::select! {
            msg = rx.recv() => match msg {
                Ok(Phase::Running) => {}
                Ok(Phase::Draining) => ctx.begin_drain(),
                Ok(Phase::Stopping) => ctx.begin_stop(),
                Err(_) => {
                    // Server and every Control dropped: nobody can stop us later.
                    ctx.begin_drain();
                    ctx.finished().await;
                    break;
                }
            },
            _ = finished => break,
        }
    }
}

async fn mailbox_loop<S: 'static>(
    rx: async_channel::Receiver<Job<S>>,
    state: Rc<S>,
    ctx: ShardContext,
) {
    loop {
        let finished = ctx.finished();
        monoio::select! {
            job = rx.recv() => match job {
                Ok(job) => {
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&state))).is_err() {
                        tracing::error!(shard = ctx.index(), "mailbox job panicked");
                    }
                }
                Err(_) => break,
            },
            _ = finished => break,
        }
    }
    // Queued jobs are dropped unrun; their callers see Closed.
    rx.close();
}
