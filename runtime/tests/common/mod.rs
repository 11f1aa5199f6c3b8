//! Shared helpers for the runtime's integration tests: options on 127.0.0.1:0, a bounded
//! `wait()`, and a blocking line client with timeouts. Test-only; not on any hot path.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use yatagarasu_runtime::{
    legacy_forced_by_env, CpuAffinity, Driver, Options, RuntimeError, Server, Shards,
};

/// Upper bound for any single client read in these tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the runtime's logs to the test harness's captured output (RUST_LOG filters;
/// default `info`). Idempotent.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// Loopback, port 0, `shards` pinned shards (affinity auto; wraps on small machines).
/// Also installs the test log writer.
pub fn opts(shards: usize) -> Options {
    init_logs();
    Options {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        shards: Shards::Count(shards),
        cpu_affinity: CpuAffinity::Auto,
        io_uring_entries: 256,
        shutdown_grace: Duration::from_secs(5),
        max_connections_per_shard: 1024,
        force_legacy: false,
    }
}

/// The suite's driver rule (issue 12 item 9), for a server started with `Options::force_legacy
/// = force_legacy`: forced epoll (that option or `MONOIO_FORCE_LEGACY_DRIVER=1`) means every
/// shard runs epoll; otherwise every shard must run io_uring, unless `YATA_TEST_ALLOW_EPOLL=1`
/// says this machine cannot do io_uring. Panics naming the shards that broke it.
pub fn assert_drivers<S: 'static>(server: &Server<S>, force_legacy: bool) {
    let drivers: Vec<Driver> = server.shards().iter().map(|s| s.driver).collect();
    let allow_epoll = std::env::var("YATA_TEST_ALLOW_EPOLL")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let want = if force_legacy || legacy_forced_by_env() {
        Driver::Legacy
    } else if allow_epoll {
        return;
    } else {
        Driver::IoUring
    };
    let wrong: Vec<usize> = (0..drivers.len()).filter(|&i| drivers[i] != want).collect();
    assert!(
        wrong.is_empty(),
        "shard(s) {wrong:?} do not run {want} (drivers {drivers:?}); an io_uring run fails when a \
         shard fell back to epoll: the runtime's warning names the cause. If this machine cannot \
         do io_uring set YATA_TEST_ALLOW_EPOLL=1; to test epoll set MONOIO_FORCE_LEGACY_DRIVER=1"
    );
}

/// Runs `server.wait()` on a helper thread; panics if it takes longer than `limit`.
/// Returns the result and how long it took.
pub fn wait_bounded<S: 'static>(
    server: Server<S>,
    limit: Duration,
) -> (Result<(), RuntimeError>, Duration) {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    // Wait on this thread; a watchdog aborts the test binary on overrun, so a hung drain
    // fails loudly instead of hanging the suite.
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            eprintln!("wait() did not return within {limit:?}");
            std::process::abort();
        }
    });
    let r = server.wait();
    let _ = tx.send(());
    let _ = watchdog.join();
    (r, started.elapsed())
}

/// Connects, sends `msg`, half-closes nothing, reads until EOF or timeout.
pub fn request(addr: SocketAddr, msg: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(msg.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Polls `cond` every 10 ms until true or `limit` passes; returns whether it became true.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
