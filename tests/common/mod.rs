//! Integration-test harness: the real `yatagarasu` binary in front of the real Ceph RGW started by
//! `tests/support/start-backends.sh`, driven over real sockets by a small raw HTTP/1.1 client (so
//! tests can assert exact bytes, pipelining and framing).
//!
//! Not shipped. Each test starts its own proxy on port 0 (cheap: ~50 ms) so tests can run in
//! parallel without sharing pools or counters.

#![allow(dead_code)]

pub mod drivers;
pub mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One seeded object, from the manifest written by `tests/support/seed.py`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Object {
    pub bucket: String,
    pub key: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
}

/// The backends started by `tests/support/start-backends.sh` (read from its env file).
#[derive(Debug)]
pub struct Backend {
    pub endpoint: String,
    pub tls_endpoint: String,
    pub ca_file: String,
    pub ak1: String,
    pub sk1: String,
    pub ak2: String,
    pub sk2: String,
    pub region: String,
    pub objects: Vec<Object>,
    pub ops_log: Option<PathBuf>,
}

const HOW_TO_START: &str = "the test backends are not running. Start them with \
`bash tests/support/start-backends.sh` and then `source tests/support/.state/env`, or run the \
whole suite with `bash tests/support/run-tests.sh` (it installs, starts and stops everything)";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW_TO_START}"))
}

/// The running backends. Panics (failing the test) with instructions when they are not running.
pub fn backend() -> &'static Backend {
    static B: OnceLock<Backend> = OnceLock::new();
    B.get_or_init(|| {
        let manifest = var("YATA_TEST_MANIFEST");
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("cannot read {manifest}: {e}; {HOW_TO_START}"));
        let objects: Vec<Object> = serde_json::from_str(&text).expect("manifest.json");
        let b = Backend {
            endpoint: var("YATA_TEST_S3_ENDPOINT"),
            tls_endpoint: var("YATA_TEST_S3_TLS_ENDPOINT"),
            ca_file: var("YATA_TEST_S3_CA_FILE"),
            ak1: var("YATA_TEST_AK1"),
            sk1: var("YATA_TEST_SK1"),
            ak2: var("YATA_TEST_AK2"),
            sk2: var("YATA_TEST_SK2"),
            region: std::env::var("YATA_TEST_REGION").unwrap_or_else(|_| "us-east-1".into()),
            objects,
            ops_log: std::env::var("YATA_TEST_OPS_LOG")
                .ok()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        };
        // Fail loudly, not silently, when RGW is down.
        let addr = b.endpoint.trim_start_matches("http://");
        TcpStream::connect_timeout(
            &addr.parse().expect("endpoint addr"),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("RGW at {} unreachable ({e}): {HOW_TO_START}", b.endpoint));
        b
    })
}

impl Backend {
    /// The manifest entry for `bucket`/`key`.
    pub fn object(&self, bucket: &str, key: &str) -> &Object {
        self.objects
            .iter()
            .find(|o| o.bucket == bucket && o.key == key)
            .unwrap_or_else(|| panic!("{bucket}/{key} not in manifest"))
    }

    /// The object's bytes as seeded.
    pub fn bytes(&self, o: &Object) -> Vec<u8> {
        std::fs::read(&o.file).unwrap_or_else(|e| panic!("read {}: {e}", o.file))
    }
}

/// Shard count for this run (`YATA_TEST_SHARDS`, default 2); the suite runs with 1 and 2.
pub fn shards() -> usize {
    std::env::var("YATA_TEST_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// A YAML bucket entry.
pub fn bucket_yaml(
    name: &str,
    prefix: &str,
    bucket: &str,
    endpoint: &str,
    ak: &str,
    sk: &str,
    extra_s3: &str,
) -> String {
    format!(
        "  - name: {name}\n    path_prefix: {prefix}\n    s3:\n      bucket: {bucket}\n      region: us-east-1\n      endpoint: \"{endpoint}\"\n      addressing: path\n      access_key: \"{ak}\"\n      secret_key: \"{sk}\"\n{extra_s3}"
    )
}

/// Representation and metadata fields `meta.txt` carries (seeded with every one of them): a HEAD,
/// a cache hit and a miss must answer them identically.
pub const META_FIELDS: [&str; 7] = [
    "content-type",
    "etag",
    "last-modified",
    "cache-control",
    "content-disposition",
    "content-language",
    "x-amz-meta-owner",
];

/// A bucket entry `name` at `prefix` on `yata-public` with user 1's credentials (for reload tests
/// that add and remove buckets).
pub fn public_bucket_yaml(name: &str, prefix: &str) -> String {
    let b = backend();
    bucket_yaml(name, prefix, "yata-public", &b.endpoint, &b.ak1, &b.sk1, "")
}

/// The standard test config: `/public` and `/media` (user 1), `/private` (user 2), with `server`
/// overrides in `server_extra` (YAML lines indented by 2) and extra bucket entries appended.
pub fn config(server_extra: &str, extra_buckets: &str) -> String {
    config_with_admin(server_extra, "", extra_buckets)
}

/// [`config`] with `admin_extra` (YAML lines indented by 2) added to the `admin:` section, whose
/// listener is always on an ephemeral loopback port.
pub fn config_with_admin(server_extra: &str, admin_extra: &str, extra_buckets: &str) -> String {
    let b = backend();
    // `server_extra` may set its own `shards:` (tests that need every connection on one shard).
    let shards_line = if server_extra.contains("shards:") {
        String::new()
    } else {
        format!("  shards: {}\n", shards())
    };
    let mut s = format!(
        "server:\n  listen: \"127.0.0.1:0\"\n{shards_line}  cpu_affinity: none\n  shutdown_grace_ms: 2000\n{server_extra}admin:\n  listen: \"127.0.0.1:0\"\n{admin_extra}logging: {{level: info, format: json, access_log: true}}\nbuckets:\n"
    );
    s += &bucket_yaml(
        "public",
        "/public",
        "yata-public",
        &b.endpoint,
        &b.ak1,
        &b.sk1,
        "",
    );
    s += &bucket_yaml(
        "media",
        "/media",
        "yata-media",
        &b.endpoint,
        &b.ak1,
        &b.sk1,
        "",
    );
    s += &bucket_yaml(
        "private",
        "/private",
        "yata-private",
        &b.endpoint,
        &b.ak2,
        &b.sk2,
        "",
    );
    s += extra_buckets;
    s
}

/// A running proxy process.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Start the binary with `yaml` as its config and wait (up to 15 s) for its listening line.
    pub fn start(yaml: &str) -> Proxy {
        Proxy::start_with_env(yaml, &[])
    }

    /// [`Proxy::start`] with extra environment variables for the process.
    ///
    /// Enforces the suite's driver rule ([`drivers`]) on the startup line's `drivers` field:
    /// panics when a shard fell back to epoll in an io_uring run (unless `YATA_TEST_ALLOW_EPOLL=1`)
    /// or runs io_uring although `MONOIO_FORCE_LEGACY_DRIVER=1`.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_yatagarasu"))
            .arg("--config")
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn yatagarasu");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // Record the line before announcing it, so `log_text()` already holds the
                    // startup line when `start` returns.
                    let listening = line
                        .contains("yatagarasu listening")
                        .then(|| {
                            serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default()
                        })
                        .and_then(|v| {
                            let addr = |k: &str| v[k].as_str()?.parse::<SocketAddr>().ok();
                            let drivers = v["drivers"].as_str().unwrap_or_default().to_owned();
                            Some((addr("listen")?, addr("admin")?, drivers))
                        });
                    log.lock().unwrap().push(line);
                    if let Some(addr) = listening {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok((addr, admin, shard_drivers)) => {
                let proxy = Proxy {
                    child,
                    addr,
                    admin,
                    log,
                    dir,
                };
                if let Err(e) = drivers::check(&shard_drivers, drivers::expectation(env)) {
                    // Dropping the proxy kills and reaps the process.
                    let log = proxy.log_text();
                    drop(proxy);
                    panic!("{e}; log:\n{log}");
                }
                proxy
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "proxy did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// Everything the process printed so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Replace the config file and send SIGHUP; waits (up to 5 s) for the log line that says
    /// whether the reload was applied or rejected, and returns that line.
    pub fn reload(&self, yaml: &str) -> String {
        let before = self.log.lock().unwrap().len();
        std::fs::write(self.dir.path().join("config.yaml"), yaml).expect("rewrite config");
        unsafe_kill(self.child.id(), "HUP");
        for _ in 0..100 {
            let log = self.log.lock().unwrap();
            if let Some(line) = log[before..]
                .iter()
                .find(|l| l.contains("config reloaded") || l.contains("config reload rejected"))
            {
                return line.clone();
            }
            drop(log);
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no reload outcome logged; log:\n{}", self.log_text());
    }

    /// Write `yaml` as the config file without signalling the process (for `POST /admin/reload`).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("config.yaml"), yaml).expect("rewrite config");
    }

    /// One request to the admin listener on a fresh connection.
    pub fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        Client::connect(self.admin).request(method, path, headers)
    }

    /// Send `sig` (`HUP`, `TERM`, `STOP`, `CONT`...) to the process.
    pub fn signal(&self, sig: &str) {
        unsafe_kill(self.child.id(), sig);
    }

    /// Wait (bounded by `limit`) for the process to exit; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors of the process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A new client connection to the proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client().request("GET", path, headers)
    }

    /// Send SIGTERM and wait for the exit status (bounded).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("proxy did not exit within 10 s of SIGTERM");
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Assert the JSON error contract of DESIGN section 5.
    pub fn assert_json_error(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["status"], status);
        assert!(v["error"].is_string() && v["message"].is_string());
        assert_eq!(v["request_id"].as_str(), self.header("x-request-id"));
    }
}

/// A raw HTTP/1.1 client over one TCP connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connect to `addr` (10 s read timeout so a hang fails the test).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write raw bytes.
    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write request");
    }

    /// Send one request and read its response.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(&request_bytes(method, path, headers));
        self.read_response(method == "HEAD")
    }

    /// Read one response (framing per RFC 9112 section 6.3).
    pub fn read_response(&mut self, head_request: bool) -> Response {
        loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut hdrs);
            if let httparse::Status::Complete(n) =
                resp.parse(&self.buf).expect("valid response head")
            {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..n);
                if status == 100 {
                    continue;
                }
                let get = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                let body = if head_request || status == 304 || status == 204 {
                    Vec::new()
                } else if let Some(len) = get("content-length") {
                    let len: usize = len.parse().expect("content-length");
                    self.read_exact_body(len)
                } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    self.read_chunked()
                } else {
                    let mut rest = std::mem::take(&mut self.buf);
                    self.stream.read_to_end(&mut rest).expect("read to close");
                    rest
                };
                return Response {
                    status,
                    headers,
                    body,
                };
            }
            self.fill();
        }
    }

    fn fill(&mut self) {
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp).expect("read from proxy");
        assert!(n > 0, "proxy closed the connection mid-response");
        self.buf.extend_from_slice(&tmp[..n]);
    }

    fn read_exact_body(&mut self, len: usize) -> Vec<u8> {
        while self.buf.len() < len {
            self.fill();
        }
        self.buf.drain(..len).collect()
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                self.fill();
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                16,
            )
            .unwrap();
            self.buf.drain(..line_end + 2);
            let chunk = self.read_exact_body(size + 2);
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                return body;
            }
        }
    }

    /// Whether the server closed the connection (reads EOF within 2 s).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// A request head with Host and the given headers.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: proxy.test\r\n");
    for (k, v) in headers {
        s += &format!("{k}: {v}\r\n");
    }
    s += "\r\n";
    s.into_bytes()
}

/// Percent-encode a key for a URL path: unreserved and '/' kept, everything else %XX.
pub fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// What reached RGW, and changing objects in it.

/// Requests RGW logged for `GET /<bucket>/<encoded key>` with `status` (any status when None),
/// counted in its ops log (`YATA_TEST_OPS_LOG`; see tests/support/README.md).
pub fn s3_requests(bucket: &str, key: &str, status: Option<&str>) -> usize {
    s3_requests_each(bucket, &[key], status)[0]
}

/// [`s3_requests`] for each of `keys`, from one read of the ops log.
pub fn s3_requests_each(bucket: &str, keys: &[&str], status: Option<&str>) -> Vec<usize> {
    let b = backend();
    let log = b
        .ops_log
        .as_ref()
        .expect("RGW ops log (YATA_TEST_OPS_LOG) is required for counting");
    std::thread::sleep(Duration::from_millis(300)); // RGW writes the ops log asynchronously
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let entries: Vec<&str> = text
        .split("\"bucket\":")
        .filter(|entry| status.is_none_or(|s| entry.contains(&format!("\"http_status\":\"{s}\""))))
        .collect();
    keys.iter()
        .map(|key| {
            let uri = format!("\"uri\":\"GET /{bucket}/{} HTTP/1.1\"", encode_key(key));
            entries.iter().filter(|entry| entry.contains(&uri)).count()
        })
        .collect()
}

/// Upload (or overwrite) `bucket`/`key` in RGW with `body` (`tests/support/put-object.py`).
pub fn put_object(bucket: &str, key: &str, body: &[u8]) {
    let py = std::env::var("YATA_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let mut child = Command::new(py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/put-object.py"
        ))
        .args([bucket, key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("put-object.py");
    child.stdin.take().unwrap().write_all(body).unwrap();
    assert!(child.wait().unwrap().success(), "put-object.py failed");
}

// ---------------------------------------------------------------------------------------------
// Fault injection between the proxy and RGW.

const HOW_TO_START_PYTHON: &str = "python3 is needed for tests/support/faulty-origin.py: install \
it (`apt-get install python3`, or `bash tests/support/install-deps.sh`) or point \
YATA_TEST_PYTHON at one";

/// `tests/support/faulty-origin.py` running in front of RGW: a forwarder that injects one fault
/// (`pass`, `trailing-response`, `overlong`, `head-body`, `error`; see the script's header) into
/// every response on the connections the proxy opens to it. Killed (and reaped) on drop.
pub struct FaultyOrigin {
    child: Child,
    port: u16,
}

impl FaultyOrigin {
    /// Start the forwarder towards `backend().endpoint` with `--mode mode` and `extra` arguments
    /// (e.g. `["--delay-ms", "0"]`, `["--status", "403", "--code", "AccessDenied"]`), and wait
    /// (up to 10 s) for its `listening 127.0.0.1:PORT` line. Panics, failing the test with
    /// instructions, when RGW is not running or python3 cannot be started.
    pub fn start(mode: &str, extra: &[&str]) -> FaultyOrigin {
        let upstream = backend().endpoint.clone();
        let py = std::env::var("YATA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&py)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/faulty-origin.py"
            ))
            .args(["--upstream", &upstream, "--mode", mode])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {py} ({e}): {HOW_TO_START_PYTHON}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the script never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(10));
        let port = line
            .as_deref()
            .ok()
            .and_then(|l| l.strip_prefix("listening 127.0.0.1:"))
            .and_then(|p| p.trim().parse::<u16>().ok());
        match port {
            Some(port) => FaultyOrigin { child, port },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "faulty-origin.py did not start (first line {line:?}); {HOW_TO_START_PYTHON}"
                );
            }
        }
    }

    /// The endpoint to put in a bucket's `s3.endpoint`: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultyOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64 from `seed`): any 64 of them in a row
/// are unique in practice, so a test can find a body in a data file.
pub fn object_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The proxy's `/metrics` text (admin listener).
pub fn metrics_text(p: &Proxy) -> String {
    let r = p.admin("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "GET /metrics");
    String::from_utf8(r.body).expect("metrics are UTF-8")
}

/// The sum over every series of `family` (full name) whose labels include all of `labels`.
pub fn metric_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0f64;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, label_text) = match name_labels.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (name_labels, ""),
        };
        if name != family {
            continue;
        }
        let has = |k: &str, v: &str| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\""));
        if labels.iter().all(|(k, v)| has(k, v)) {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total as u64
}

/// The bucket entry `faulty` at `/faulty`: the seeded `yata-public` bucket with user 1's keys,
/// reached through `origin`, with `s3_extra` (YAML lines indented by 6) in its `s3:` section.
pub fn faulty_bucket_yaml(origin: &FaultyOrigin, s3_extra: &str) -> String {
    let b = backend();
    bucket_yaml(
        "faulty",
        "/faulty",
        "yata-public",
        &origin.endpoint(),
        &b.ak1,
        &b.sk1,
        s3_extra,
    )
}
