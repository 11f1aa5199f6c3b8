//! A control thread: one unpinned thread running its own small monoio runtime (epoll driver,
//! timer, a one-thread blocking pool), for work that must not share a shard's event loop:
//! the admin listener, readiness probes, reloads requested over HTTP.
//!
//! Not on the hot path. It uses the epoll (`LegacyDriver`) runtime on purpose: its traffic is a
//! few requests per scrape interval, and it then needs no io_uring ring (no memlock budget, no
//! seccomp exception) and keeps working where the shards fell back. Cost: one thread, one
//! epoll fd, one blocking-pool thread.

use std::future::Future;
use std::thread::JoinHandle;

use monoio::{LegacyDriver, RuntimeBuilder};

/// Start thread `name` running `make()`'s future to completion on a fresh monoio runtime with
/// timers and `monoio::spawn_blocking` available. The runtime is built on the new thread;
/// `make` runs there too, so the future may be `!Send`.
///
/// Errors: the thread cannot be spawned. A runtime that cannot be built is logged at `error`
/// and ends the thread.
pub fn spawn_control_thread<F, Fut>(name: &str, make: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let pool = monoio::blocking::DefaultThreadPool::new(1);
            let rt = RuntimeBuilder::<LegacyDriver>::new()
                .attach_thread_pool(Box::new(pool))
                .enable_timer()
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(make()),
                Err(e) => {
                    tracing::error!(thread = %thread_name, error = %e, "cannot build the control thread's runtime")
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_non_send_future_with_timers_and_blocking_pool() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = spawn_control_thread("test-control", move || async move {
            let local = std::rc::Rc::new(5u32); // !Send is fine
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            let v = monoio::spawn_blocking(|| 37u32).await.unwrap_or(0);
            let _ = tx.send(*local + v);
        })
        .unwrap();
        t.join().unwrap();
        assert_eq!(rx.recv().unwrap(), 42);
    }
}
