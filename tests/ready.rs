//! `/ready` follows the real RGW: it turns 503 while radosgw is stopped (SIGSTOP: it accepts
//! connections but answers nothing, like a hung backend) and 200 once it runs again (SIGCONT).
//!
//! Its own test binary on purpose: stopping RGW would stall every other test running in parallel,
//! and cargo runs test binaries one after another. The test always resumes RGW, even when it
//! fails (a drop guard).

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::{Duration, Instant};

use common::*;

struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

fn wait_for(proxy: &Proxy, status: u16, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let r = proxy.admin("GET", "/ready", &[]);
        if r.status == status {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "/ready did not turn {status} within {within:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ready_turns_503_while_rgw_is_stopped_and_200_when_it_is_back() {
    backend();
    let rgw = std::env::var("YATA_TEST_RGW_PID")
        .expect("YATA_TEST_RGW_PID is not set: run `source tests/support/.state/env` after start-backends.sh");
    // Probes give up after 1 s without an answer.
    let yaml = config("", "").replace(
        "addressing: path\n",
        "addressing: path\n      first_byte_timeout_ms: 1000\n      connect_timeout_ms: 1000\n",
    );
    let proxy = Proxy::start(&yaml);
    wait_for(&proxy, 200, Duration::from_secs(10));

    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &rgw])
        .status()
        .unwrap();
    assert!(stopped.success());
    let guard = Resume(rgw.clone());
    // Next round within 5 s, failing after 1 s.
    let v = wait_for(&proxy, 503, Duration::from_secs(15));
    assert_eq!(v["status"], "not_ready");
    assert!(
        v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["state"] == "failed"),
        "{v}"
    );
    assert_eq!(proxy.get("/ready", &[]).status, 503, "data listener agrees");

    drop(guard); // SIGCONT
    let v = wait_for(&proxy, 200, Duration::from_secs(15));
    assert!(v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["ok"] == true));
    assert_eq!(proxy.get("/public/hello.txt", &[]).status, 200);
}
