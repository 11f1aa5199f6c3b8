//! Operations under load, through the real binary against the real RGW (loopback only, bounded
//! in time and request count): 20 reloads while 16 connections stay busy lose no request, and a
//! SIGTERM during 8 slow 100 MiB downloads lets every one finish intact before the process
//! exits 0.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn twenty_reloads_under_load_fail_no_request() {
    let b = backend();
    let small = b.object("yata-public", "1k.bin").clone();
    let secret = b.object("yata-private", "secret.txt").clone();
    let base = config("", "");
    // The other config: one more bucket, and /public uncached (so requests go to S3).
    let extra = public_bucket_yaml("extra", "/extra");
    let other = config("", &extra).replacen(
        "path_prefix: /public\n",
        "path_prefix: /public\n    cache: {enabled: false}\n",
        1,
    );
    let proxy = Proxy::start(&base);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..16 {
        let (stop, ok) = (stop.clone(), ok.clone());
        let addr = proxy.addr;
        let (small, secret) = (small.clone(), secret.clone());
        workers.push(std::thread::spawn(move || -> Result<(), String> {
            let mut c = Client::connect(addr);
            // Bounded: at most 20 000 requests per connection.
            for n in 0..20_000u32 {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let (path, want) = if (n + i) % 3 == 0 {
                    ("/private/secret.txt", &secret)
                } else {
                    ("/public/1k.bin", &small)
                };
                let r = c.request("GET", path, &[]);
                if r.status != 200 || r.body.len() as u64 != want.size {
                    return Err(format!(
                        "connection {i} request {n} {path}: {} with {} bytes",
                        r.status,
                        r.body.len()
                    ));
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    for round in 0..20 {
        proxy.write_config(if round % 2 == 0 { &other } else { &base });
        let r = proxy.admin("POST", "/admin/reload", &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["config_generation"], round + 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let before_stop = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap().unwrap();
    }
    assert!(
        before_stop > 100,
        "the load ran during the reloads ({before_stop} requests)"
    );
}

/// One streamed download read slowly, compared with `want` as it arrives (memcmp: a debug-build
/// SHA-256 of 800 MiB would dominate the test). Returns (status line, body intact, bytes, EOF
/// after the body).
fn slow_download(
    addr: std::net::SocketAddr,
    path: &str,
    want: Arc<Vec<u8>>,
    started: Arc<AtomicU64>,
) -> (String, bool, u64, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut len = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse::<u64>().ok();
        }
    }
    let len = len.expect("Content-Length");
    let mut intact = len == want.len() as u64;
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut announced = false;
    while got < len {
        let take = buf.len().min((len - got) as usize);
        let n = r.read(&mut buf[..take]).unwrap();
        if n == 0 {
            break;
        }
        let at = got as usize;
        intact &= want.get(at..at + n) == Some(&buf[..n]);
        got += n as u64;
        if !announced && got >= 4 << 20 {
            started.fetch_add(1, Ordering::SeqCst);
            announced = true;
        }
        // ~25 MB/s per download: 100 MiB takes ~4 s, long enough to straddle the SIGTERM.
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut rest = [0u8; 1];
    let eof = matches!(r.read(&mut rest), Ok(0));
    (status, intact, got, eof)
}

#[test]
fn sigterm_lets_eight_slow_100mib_downloads_finish_then_exits_0() {
    let b = backend();
    let big = b.object("yata-public", "100m.bin").clone();
    let yaml = config("", "").replace("shutdown_grace_ms: 2000", "shutdown_grace_ms: 60000");
    let mut proxy = Proxy::start(&yaml);
    let want = Arc::new(b.bytes(&big));
    let started = Arc::new(AtomicU64::new(0));
    let downloads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, want, started) = (proxy.addr, want.clone(), started.clone());
            std::thread::spawn(move || slow_download(addr, "/public/100m.bin", want, started))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "downloads did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.signal("TERM");
    // Draining: /ready says so on the admin listener while the downloads go on.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = proxy.admin("GET", "/ready", &[]);
        if r.status == 503 && r.json()["status"] == "draining" {
            break;
        }
        assert!(Instant::now() < deadline, "/ready did not report the drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in downloads {
        let (status, intact, got, eof) = d.join().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(got, big.size);
        assert!(intact, "body identical to the seeded object");
        assert!(
            eof,
            "the connection closes after the response during a drain"
        );
    }
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("exits once the downloads finished");
    assert!(status.success(), "{status:?}");
    assert!(proxy.log_text().contains("drained, exiting"));
}
