//! Slow and silent clients through the real binary against RGW (issue 11, items 2-4): a
//! connection that sends nothing gets 408 within `request_header_timeout_ms` of the accept; a
//! client that stops reading is closed after `send_timeout_ms` and everything it held (client
//! socket, upstream connection, splice pipe) is released; a client that stops reading in the
//! middle of a cacheable miss does not hold back the fill or any other client of that key.
//!
//! Not shipped. Each test runs its own proxy with one shard, so every connection shares one
//! pool, one cache partition and one single-flight table.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

/// The value of one series in the proxy's `/metrics` (0 when absent).
fn metric(proxy: &Proxy, series: &str) -> f64 {
    let r = proxy.admin("GET", "/metrics", &[]);
    assert_eq!(r.status, 200);
    String::from_utf8(r.body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A client socket whose receive buffer is small, so a response it does not read fills it
/// quickly and the proxy's writes stop making progress.
fn stalled_client(proxy: &Proxy) -> Client {
    let c = proxy.client();
    shrink_receive_buffer(&c.stream);
    c
}

fn shrink_receive_buffer(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 * 1024;
    // SAFETY: setsockopt on an open socket with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
}

/// Wait (bounded by `limit`) until `cond` holds; whether it did.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Read from `c` until the proxy closes the connection or `limit` passes; bytes read and
/// whether it closed.
fn read_until_closed(c: &mut Client, limit: Duration) -> (usize, bool) {
    c.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    while Instant::now() < deadline {
        match c.stream.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (total, true),
        }
    }
    (total, false)
}

#[test]
fn a_silent_connection_gets_408_within_the_header_timeout_from_accept() {
    let proxy = Proxy::start(&config(
        "  shards: 1\n  request_header_timeout_ms: 600\n  keepalive_timeout_ms: 60000\n",
        "",
    ));
    let started = Instant::now();
    let mut silent = proxy.client();
    let r = silent.read_response(false);
    let waited = started.elapsed();
    r.assert_json_error(408);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "408 after {waited:?} (request_header_timeout_ms is 600, keepalive 60000)"
    );
    assert!(silent.is_closed(), "the connection is closed after the 408");

    // A connection that already answered a request waits for the keep-alive timeout instead.
    let mut busy = proxy.client();
    assert_eq!(busy.request("GET", "/public/hello.txt", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        busy.request("GET", "/public/hello.txt", &[]).status,
        200,
        "an idle keep-alive connection lives for keepalive_timeout_ms"
    );
}

#[test]
fn silent_connections_do_not_lock_out_new_clients() {
    let proxy = Proxy::start(&config(
        "  shards: 1\n  request_header_timeout_ms: 500\n  max_connections_per_shard: 4\n",
        "",
    ));
    let silent: Vec<Client> = (0..4).map(|_| proxy.client()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let r = proxy.get("/public/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a new client waited {:?} behind 4 silent connections",
        started.elapsed()
    );
    drop(silent);
}

/// A client that reads nothing of a 100 MiB object: closed after `send_timeout_ms`, and the
/// proxy is back to its idle descriptors (client socket, upstream connection and the splice
/// pipe of an uncached body all released). `cache` picks the fill path (the object fits the
/// item limit) or the pass-through splice path (cache off for the bucket).
fn stalled_download_is_released(cache_on: bool) {
    let extra = if cache_on {
        "cache:\n  memory: {max_cache_size_mb: 512, max_item_size_mb: 128}\nlogging:"
    } else {
        // 100 MiB is over the 10 MiB item limit: streamed by splice(2), not cached.
        "cache:\n  memory: {max_cache_size_mb: 64, max_item_size_mb: 10}\nlogging:"
    };
    let yaml = config("  shards: 1\n  send_timeout_ms: 800\n", "").replace("logging:", extra);
    let proxy = Proxy::start(&yaml);
    // Warm the pool and take the idle baseline after a complete small request.
    assert_eq!(proxy.get("/public/hello.txt", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = proxy.fd_count();

    let mut stalled = stalled_client(&proxy);
    stalled.send(&request_bytes("GET", "/public/100m.bin", &[]));
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || proxy.fd_count() > baseline),
        "the download started"
    );
    assert!(
        eventually(Duration::from_secs(20), || proxy.fd_count() <= baseline),
        "descriptors not released {:?} after the client stopped reading ({} open, baseline {baseline})",
        started.elapsed(),
        proxy.fd_count()
    );
    let (got, closed) = read_until_closed(&mut stalled, Duration::from_secs(10));
    assert!(closed, "the proxy closed the stalled connection");
    assert!(
        got < 100 << 20,
        "a short response ends in a close, never a complete-looking one ({got} bytes)"
    );
    assert_eq!(
        metric(&proxy, "yatagarasu_connections_active{shard=\"0\"}"),
        0.0
    );
    // The proxy still serves.
    let r = proxy.get("/public/1k.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1024);
}

#[test]
fn a_client_that_stops_reading_a_streamed_object_is_closed_and_released() {
    stalled_download_is_released(false);
}

#[test]
fn a_client_that_stops_reading_a_cache_fill_is_closed_and_released() {
    stalled_download_is_released(true);
}

#[test]
fn a_stalled_leader_does_not_slow_the_fill_or_other_clients() {
    let b = backend();
    let object = b.object("yata-public", "100m.bin");
    let yaml = config("  shards: 1\n", "").replace(
        "logging:",
        "cache:\n  memory: {max_cache_size_mb: 512, max_item_size_mb: 128}\nlogging:",
    );
    // first_byte_timeout_ms bounds how long a follower waits for the leader's head: keep it
    // well under the time a stalled leader would take (forever).
    let yaml = yaml.replace(
        "      secret_key: \"",
        "      first_byte_timeout_ms: 3000\n      secret_key: \"",
    );
    let proxy = Proxy::start(&yaml);
    let upstream = "yatagarasu_upstream_requests_total{bucket=\"public\"}";
    let before = metric(&proxy, upstream);

    // The leader asks and reads nothing.
    let mut leader = stalled_client(&proxy);
    leader.send(&request_bytes("GET", "/public/100m.bin", &[]));
    std::thread::sleep(Duration::from_millis(300));

    // Followers on their own connections, started while the leader stalls: each gets the whole
    // object, correct to the byte, from the fill the leader started, without a fetch of its own.
    let started = Instant::now();
    let followers: Vec<_> = (0..2)
        .map(|_| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let r = Client::connect(addr).request("GET", "/public/100m.bin", &[]);
                (
                    r.status,
                    r.header("x-cache").map(str::to_owned),
                    r.header("cache-status").map(str::to_owned),
                    sha256_hex(&r.body),
                )
            })
        })
        .collect();
    for f in followers {
        let (status, x_cache, cache_status, sha) = f.join().unwrap();
        assert_eq!(status, 200);
        // Collapsed into the fill while it runs, or a plain hit once it ended (RGW fills
        // 100 MiB in well under the 300 ms the leader stalls first): never a fetch of its own.
        assert!(
            matches!(
                cache_status.as_deref(),
                Some("yatagarasu; fwd=miss; collapsed" | "yatagarasu; hit; detail=memory")
            ),
            "{cache_status:?}"
        );
        assert_eq!(
            x_cache.as_deref(),
            Some("HIT"),
            "a follower is served by the fill"
        );
        assert_eq!(sha, object.sha256);
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "followers took {:?} behind a stalled leader",
        started.elapsed()
    );
    // The fill completed at the origin's pace although the leader read nothing: a new request
    // is a plain hit.
    let hit = proxy.get("/public/100m.bin", &[("Range", "bytes=0-9")]);
    assert_eq!(hit.status, 206);
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(
        metric(&proxy, upstream) - before,
        1.0,
        "one S3 request for the leader, its followers and the hit"
    );
    assert_eq!(
        metric(
            &proxy,
            "yatagarasu_cache_single_flight_timeouts_total{bucket=\"public\",layer=\"memory\"}"
        ),
        0.0
    );

    // The leader finally reads: its copy is whole and intact.
    leader
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = leader.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(sha256_hex(&r.body), object.sha256);
}

#[test]
fn a_follower_of_an_uncacheable_leader_fetches_itself_and_is_counted_as_abandoned() {
    let proxy = Proxy::start(&config("  shards: 1\n", ""));
    let abandoned =
        "yatagarasu_cache_single_flight_abandoned_total{bucket=\"public\",layer=\"memory\"}";
    let timeouts =
        "yatagarasu_cache_single_flight_timeouts_total{bucket=\"public\",layer=\"memory\"}";
    let waits_series =
        "yatagarasu_cache_single_flight_waits_total{bucket=\"public\",layer=\"memory\"}";
    // Bursts of concurrent plain GETs of a key S3 does not have, until some overlapped: one
    // leads, the others follow, the leader gets a 404 (nothing to share) and the followers ask
    // S3 themselves.
    for _ in 0..20 {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let addr = proxy.addr;
                std::thread::spawn(move || {
                    Client::connect(addr)
                        .request("GET", "/public/missing-sf-key.txt", &[])
                        .status
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), 404);
        }
        if metric(&proxy, waits_series) > 0.0 {
            break;
        }
    }
    let waits = metric(&proxy, waits_series);
    assert!(waits > 0.0, "no request ever followed another's fetch");
    assert_eq!(metric(&proxy, timeouts), 0.0, "no wait timed out");
    assert_eq!(
        metric(&proxy, abandoned),
        waits,
        "every wait ended because the leader got no object"
    );
}

/// The seconds since `t`, for messages.
fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

#[test]
fn followers_stream_from_a_fill_while_it_runs_and_the_fill_outlives_its_leader() {
    let b = backend();
    let object = b.object("yata-media", "video.bin"); // 1 MiB
                                                      // 16 pieces of 64 KiB, 100 ms apart: the fill takes about 1.6 s.
    let origin = FaultyOrigin::start("slow-body", &["--delay-ms", "100"]);
    let slow = bucket_yaml(
        "slow",
        "/slow",
        "yata-media",
        &origin.endpoint(),
        &b.ak1,
        &b.sk1,
        "",
    );
    let yaml = config("  shards: 1\n", &slow).replace(
        "logging:",
        "cache:\n  memory: {max_cache_size_mb: 64, max_item_size_mb: 10}\nlogging:",
    );
    let proxy = Proxy::start(&yaml);
    let upstream = "yatagarasu_upstream_requests_total{bucket=\"slow\"}";

    // The leader reads its head, then goes away: the fill must go on without it.
    let started = Instant::now();
    let mut leader = proxy.client();
    leader.send(&request_bytes("GET", "/slow/video.bin", &[]));
    let mut first = [0u8; 12];
    leader.stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    drop(leader);

    // A follower arriving while the fill runs gets its head at once and its body as the bytes
    // arrive, not after the fill ended.
    let asked = Instant::now();
    let mut follower = proxy.client();
    follower.send(&request_bytes(
        "GET",
        "/slow/video.bin",
        &[("Connection", "close")],
    ));
    let mut head = [0u8; 12];
    follower.stream.read_exact(&mut head).unwrap();
    let head_after = asked.elapsed();
    let r = {
        // The rest of the response (the status line was consumed above).
        let mut rest = Vec::new();
        follower.stream.read_to_end(&mut rest).ok();
        let mut whole = head.to_vec();
        whole.extend_from_slice(&rest);
        whole
    };
    assert!(
        head_after < Duration::from_millis(900),
        "the follower waited {head_after:?} for its head (the fill takes ~1.6 s; started {:.2} s in)",
        since(started)
    );
    let text = String::from_utf8_lossy(&r[..r.len().min(2048)]).into_owned();
    assert!(
        text.contains("Cache-Status: yatagarasu; fwd=miss; collapsed"),
        "{text}"
    );
    let split = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        sha256_hex(&r[split..]),
        object.sha256,
        "the follower's bytes"
    );

    // The fill completed although its leader left: the next request is a hit, and S3 saw one
    // request for all three.
    let hit = proxy.get("/slow/video.bin", &[]);
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(sha256_hex(&hit.body), object.sha256);
    assert_eq!(metric(&proxy, upstream), 1.0);
}
