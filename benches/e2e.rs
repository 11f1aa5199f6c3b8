//! End-to-end bench of the cache-hit path: one keep-alive `GET` at a time through one shard,
//! over the loopback, answered from the memory cache. The proxy runs in-process
//! (`yatagarasu::app::start`, the same wiring as the binary) with one shard pinned to one CPU,
//! and the bench thread (the client) pins itself to that same CPU, so the time per request is
//! what one core spends on it: client write, shard read, parse, route, cache lookup, response
//! write, client read. The bucket is public (no JWT) and points at the Ceph RGW the integration
//! tests use; RGW is only contacted by the warm-up request that fills the cache.
//!
//! Run (needs the test backends, started by `bash tests/support/start-backends.sh`):
//! `source tests/support/.state/env && cargo bench --bench e2e`
//! (add `-- --warm-up-time 1 --measurement-time 2` for a quick run). Without the backends'
//! environment the bench panics with instructions; it never passes silently.
//!
//! Before Criterion runs, allocations per request are counted and checked against bounds, like
//! the other benches' `alloc/op` lines: first the client's alone (it reuses its buffers: 0),
//! then the client's and the shard thread's, i.e. the server side of a hit. Access logging is
//! off (`logging.access_log: false`): no log subscriber is installed in this process, so the
//! line would be skipped anyway, and the counts and timings exclude it.
//!
//! Not shipped code. Cost: a proxy (shard thread, admin thread) runs for the life of the bench
//! process; the timings use the system allocator (through the counting wrapper), not mimalloc.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use sha2::{Digest, Sha256};

#[path = "support/alloc.rs"]
mod alloc;

const HOW_TO_START: &str = "the test backends are not running. Start them with \
`bash tests/support/start-backends.sh` and then `source tests/support/.state/env` before \
`cargo bench --bench e2e`";

/// Requests per allocation-count round, and rounds (the lowest count is kept: a round that
/// overlaps a periodic shard task or the once-a-second `Date` re-formatting counts it too).
const ALLOC_REQUESTS: u64 = 200;
const ALLOC_ROUNDS: usize = 5;

/// The hit path's allocations per request (shard thread; the client allocates nothing), as
/// measured when written: all five are `parse_request_head`'s (the owned target, the copy of the
/// head bytes, the shared `Bytes` header the field values point into, the `HeaderMap`'s indices
/// and entries); it was 9 while a hit also built the request id, the S3 host and URI, and an
/// owned cache key. Lower the bound when a change removes one.
const BOUND_HIT_1KIB: f64 = 5.0;
const BOUND_HIT_100KIB: f64 = 5.0;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW_TO_START}"))
}

/// One seeded object of the `yata-public` bucket, from the seeding manifest.
struct Seeded {
    key: String,
    size: u64,
    sha256: String,
}

/// The `yata-public` objects listed in the manifest at `$YATA_TEST_MANIFEST`.
fn seeded_objects() -> Vec<Seeded> {
    let path = var("YATA_TEST_MANIFEST");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}; {HOW_TO_START}"));
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest.json");
    manifest
        .as_array()
        .expect("manifest.json is a list")
        .iter()
        .filter(|o| o["bucket"] == "yata-public")
        .map(|o| Seeded {
            key: o["key"].as_str().expect("key").to_owned(),
            size: o["size"].as_u64().expect("size"),
            sha256: o["sha256"].as_str().expect("sha256").to_owned(),
        })
        .collect()
}

/// Whether `key` can go into a request line as is (no percent-encoding needed).
fn plain_key(key: &str) -> bool {
    key.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

/// The seeded object whose size is nearest to `target` bytes, if one is within a factor of two.
fn nearest(objects: &[Seeded], target: u64) -> Option<&Seeded> {
    objects
        .iter()
        .filter(|o| plain_key(&o.key) && o.size >= target / 2 && o.size <= target * 2)
        .min_by_key(|o| o.size.abs_diff(target))
}

/// The proxy's config: one shard on `cpu`, ephemeral ports, one public bucket on RGW. The S3
/// address and credentials stay `${VAR}` references, resolved by the config loader.
fn config_yaml(cpu: usize) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:0"
  shards: 1
  cpu_affinity: [{cpu}]
  shutdown_grace_ms: 1000
admin:
  listen: "127.0.0.1:0"
logging: {{level: warn, format: json, access_log: false}}
cache:
  memory: {{max_cache_size_mb: 64, max_item_size_mb: 1, default_ttl_seconds: 3600}}
buckets:
  - name: public
    path_prefix: /public
    s3:
      bucket: yata-public
      region: "${{YATA_TEST_REGION:-us-east-1}}"
      endpoint: "${{YATA_TEST_S3_ENDPOINT}}"
      addressing: path
      access_key: "${{YATA_TEST_AK1}}"
      secret_key: "${{YATA_TEST_SK1}}"
"#
    )
}

/// A keep-alive HTTP/1.1 client that reads one response per request into a reused buffer.
struct Client {
    stream: TcpStream,
    /// Received bytes; sized once for the largest response, never grown in the loop.
    buf: Vec<u8>,
}

/// What one response carried.
struct Response {
    status: u16,
    /// `X-Cache` value: true for `HIT`.
    hit: bool,
    /// The body's range in `Client::buf`.
    body: std::ops::Range<usize>,
}

impl Client {
    fn connect(addr: std::net::SocketAddr, max_body: usize) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the proxy");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Client {
            stream,
            buf: vec![0; max_body + 16 * 1024],
        }
    }

    /// Send `request` and read exactly one response (head, then `Content-Length` body bytes).
    fn get(&mut self, request: &[u8]) -> Response {
        self.stream.write_all(request).expect("send request");
        let mut filled = 0;
        loop {
            let n = self.stream.read(&mut self.buf[filled..]).expect("read");
            assert!(n > 0, "the proxy closed the connection");
            filled += n;
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut head = httparse::Response::new(&mut fields);
            let used = match head.parse(&self.buf[..filled]).expect("response head") {
                httparse::Status::Complete(used) => used,
                httparse::Status::Partial => continue,
            };
            let status = head.code.expect("status");
            let mut length = None;
            let mut hit = false;
            for f in head.headers.iter() {
                if f.name.eq_ignore_ascii_case("content-length") {
                    let text = std::str::from_utf8(f.value).expect("Content-Length");
                    length = Some(text.parse::<usize>().expect("Content-Length"));
                } else if f.name.eq_ignore_ascii_case("x-cache") {
                    hit = f.value == b"HIT";
                }
            }
            let end = used + length.expect("Content-Length in the response");
            assert!(
                end <= self.buf.len(),
                "response larger than the client buffer"
            );
            assert!(filled <= end, "bytes after the response body");
            self.stream
                .read_exact(&mut self.buf[filled..end])
                .expect("read body");
            return Response {
                status,
                hit,
                body: used..end,
            };
        }
    }
}

/// One object to bench: its request and the bytes its body must hash to.
struct Target<'m> {
    name: &'static str,
    object: &'m Seeded,
    request: Vec<u8>,
    bound: f64,
}

/// GET until the proxy answers from its cache (the first GET is a miss that fills it), checking
/// the body against the manifest.
fn warm(client: &mut Client, t: &Target) {
    for attempt in 0.. {
        let r = client.get(&t.request);
        assert_eq!(r.status, 200, "GET /public/{}", t.object.key);
        let digest = hex::encode(Sha256::digest(&client.buf[r.body.clone()]));
        assert_eq!(digest, t.object.sha256, "body of /public/{}", t.object.key);
        if r.hit {
            return;
        }
        assert!(
            attempt < 20,
            "/public/{} is never served from the cache",
            t.object.key
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One hit, checked.
fn hit(client: &mut Client, request: &[u8]) -> usize {
    let r = client.get(request);
    assert!(r.status == 200 && r.hit, "expected a 200 cache hit");
    r.body.len()
}

fn main() {
    let objects = seeded_objects();
    let endpoint = var("YATA_TEST_S3_ENDPOINT");
    for name in ["YATA_TEST_AK1", "YATA_TEST_SK1"] {
        var(name);
    }
    let rgw = endpoint.trim_start_matches("http://");
    TcpStream::connect_timeout(&rgw.parse().expect("endpoint addr"), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("RGW at {endpoint} unreachable ({e}): {HOW_TO_START}"));

    // ~1 KiB (else the smallest object) and ~100 KiB when seeded.
    let small = nearest(&objects, 1024)
        .or_else(|| {
            objects
                .iter()
                .filter(|o| plain_key(&o.key) && o.size > 0)
                .min_by_key(|o| o.size)
        })
        .unwrap_or_else(|| panic!("the manifest lists no yata-public object: {HOW_TO_START}"));
    let large = nearest(&objects, 100 * 1024);
    if large.is_none() {
        println!("e2e: no seeded object near 100 KiB; that bench is skipped");
    }
    let targets: Vec<Target> = [("1KiB", Some(small), BOUND_HIT_1KIB)]
        .into_iter()
        .chain([("100KiB", large, BOUND_HIT_100KIB)])
        .filter_map(|(name, object, bound)| {
            let object = object?;
            Some(Target {
                name,
                object,
                request: format!(
                    "GET /public/{} HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: yatagarasu-bench\r\n\r\n",
                    object.key
                )
                .into_bytes(),
                bound,
            })
        })
        .collect();

    // Read the CPU mask before anything is pinned (the runtime reads it on this thread too).
    let cpus = core_affinity::get_core_ids().expect("CPU affinity mask");
    let cpu = *cpus.last().expect("at least one CPU");
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("e2e.yaml");
    std::fs::write(&path, config_yaml(cpu.id)).expect("write config");
    let cfg = yatagarasu::config::load_file(&path)
        .unwrap_or_else(|e| panic!("bench config: {e}; {HOW_TO_START}"));
    let running = yatagarasu::app::start(cfg, &path).expect("start the proxy");
    let server = running.server;
    let shard = &server.shards()[0];
    println!(
        "e2e: proxy on {} (shard on CPU {:?}, driver {}), client pinned to the same CPU",
        server.local_addr(),
        shard.cpu,
        shard.driver
    );
    assert!(core_affinity::set_for_current(cpu), "pin the client thread");

    let max_body = targets.iter().map(|t| t.object.size).max().unwrap_or(0) as usize;
    let mut client = Client::connect(server.local_addr(), max_body);
    for t in &targets {
        warm(&mut client, t);
    }

    // Count this thread (the client) alone, then with the shard thread: the admin thread's
    // readiness probes and timers are not part of a request.
    alloc::mark_this_thread();
    alloc::count_marked_threads_only();
    for t in &targets {
        let per_request = alloc::per_op_in_rounds(ALLOC_ROUNDS, ALLOC_REQUESTS, || {
            hit(&mut client, &t.request)
        });
        // The client reuses its buffers: anything here would be counted as the server's below.
        alloc::check(&format!("e2e_client/{}", t.name), per_request, 0.0);
    }
    server
        .broadcast(|_| alloc::mark_this_thread())
        .expect("mark the shard thread");
    for t in &targets {
        let per_request = alloc::per_op_in_rounds(ALLOC_ROUNDS, ALLOC_REQUESTS, || {
            hit(&mut client, &t.request)
        });
        // The hit path's allocations per request (plus the client's, which are 0).
        alloc::check(&format!("e2e_hit/{}", t.name), per_request, t.bound);
    }

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("e2e_hit");
    for t in &targets {
        g.throughput(Throughput::Bytes(t.object.size));
        g.bench_function(t.name, |b| b.iter(|| hit(&mut client, &t.request)));
        // The last body must still be the object (the loop checks status and X-Cache only).
        let r = client.get(&t.request);
        let digest = hex::encode(Sha256::digest(&client.buf[r.body]));
        assert_eq!(digest, t.object.sha256, "body of /public/{}", t.object.key);
    }
    g.finish();
    c.final_summary();

    drop(client);
    server.shutdown();
    server.wait().expect("the shard exits cleanly");
}
