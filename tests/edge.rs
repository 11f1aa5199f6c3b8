//! What clients, shared caches and browsers in front of the proxy see (issue 11, items 9-12),
//! through the real binary against RGW: one header-name casing on every path, `Cache-Control:
//! private` on authenticated buckets and `no-store` on 401/403, the `Age` rule (with real nginx
//! `proxy_cache` in front), and per-bucket CORS with the raw client and with headless Chromium
//! fetching from a second origin.

// A test/bench crate: runs on test threads, not shards (clippy.toml's bans are for shard code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "edge-test-hs256-secret-0123456789abcdef";
const APP: &str = "http://app.test";

fn token(role: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "role": role, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A bucket entry on `yata-public` (user 1) with bucket-level `extra` YAML (4-space indent).
fn public_on(name: &str, prefix: &str, extra: &str) -> String {
    public_bucket_yaml(name, prefix) + extra
}

/// The standard config plus a memory cache, a top-level HS256 `jwt` (role == admin) and
/// `extra_buckets`.
fn edge_config(extra_buckets: &str) -> String {
    edge_config_with("", extra_buckets)
}

/// [`edge_config`] with `server` overrides (YAML lines indented by 2).
fn edge_config_with(server_extra: &str, extra_buckets: &str) -> String {
    config(server_extra, extra_buckets).replace(
        "buckets:\n",
        &format!(
            "cache:\n  memory: {{max_cache_size_mb: 64, max_item_size_mb: 4, default_ttl_seconds: 3600}}\n\
             jwt:\n  algorithms: [HS256]\n  secret: \"{SECRET}\"\n  leeway_seconds: 0\n  \
             token_sources: [{{type: bearer}}]\n  \
             claims: [{{claim: role, operator: equals, value: admin}}]\nbuckets:\n"
        ),
    )
}

/// Header names of `r` in order, without the ones listed in `skip` (compared exactly).
fn names<'r>(r: &'r Response, skip: &[&str]) -> Vec<&'r str> {
    r.headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !skip.contains(k))
        .collect()
}

/// Every field name of `r` is in the proxy's one casing: S3's `x-amz-*` lower case, anything
/// else with each `-`-separated word capitalised (`ETag` included).
fn assert_canonical(r: &Response, what: &str) {
    for (name, _) in &r.headers {
        let ok = if name.starts_with("x-amz-") {
            name.bytes().all(|b| !b.is_ascii_uppercase())
        } else {
            name.split('-')
                .all(|w| w.bytes().next().is_some_and(|b| b.is_ascii_uppercase()))
        };
        assert!(ok, "{what}: {name:?} is not canonical: {:?}", r.headers);
    }
}

#[test]
fn one_header_casing_on_miss_hit_304_206_and_errors() {
    let proxy = Proxy::start(&edge_config(&public_on(
        "nocache",
        "/nocache",
        "    cache: {enabled: false}\n",
    )));
    let mut c = proxy.client();
    let miss = c.request("GET", "/public/meta.txt", &[]);
    let hit = c.request("GET", "/public/meta.txt", &[]);
    assert_eq!(miss.status, 200);
    assert_eq!(miss.header("X-Cache"), Some("MISS"));
    assert_eq!(hit.header("X-Cache"), Some("HIT"));
    for field in META_FIELDS {
        assert!(miss.header(field).is_some(), "meta.txt lacks {field}");
    }
    // Byte for byte, in the same order; only a hit has Age.
    assert_eq!(names(&miss, &[]), names(&hit, &["Age"]), "MISS vs HIT");
    for ((name, mv), (_, hv)) in miss
        .headers
        .iter()
        .zip(hit.headers.iter().filter(|(k, _)| k != "Age"))
    {
        if !matches!(
            name.as_str(),
            "Date" | "X-Cache" | "Cache-Status" | "X-Request-Id"
        ) {
            assert_eq!(mv, hv, "{name}");
        }
    }
    for (r, what) in [(&miss, "miss"), (&hit, "hit")] {
        assert_canonical(r, what);
        for spelled in ["Content-Type", "ETag", "Last-Modified", "Cache-Control"] {
            assert!(
                r.headers.iter().any(|(k, _)| k == spelled),
                "{what} {spelled}"
            );
        }
        assert!(r.headers.iter().any(|(k, _)| k == "x-amz-meta-owner"));
    }

    // 304 and 206 from S3 (cache off) and from the cache: same names.
    let etag = miss.header("ETag").unwrap().to_string();
    let sorted = |r: &Response| {
        let mut n: Vec<String> = names(r, &["Age"]).into_iter().map(String::from).collect();
        n.sort();
        n
    };
    for (h, status) in [
        (("If-None-Match", etag.as_str()), 304),
        (("Range", "bytes=0-9"), 206),
    ] {
        let s3 = c.request("GET", "/nocache/meta.txt", &[h]);
        let cached = c.request("GET", "/public/meta.txt", &[h]);
        assert_eq!((s3.status, cached.status), (status, status), "{h:?}");
        assert_eq!(s3.header("X-Cache"), Some("BYPASS"));
        assert_eq!(cached.header("X-Cache"), Some("HIT"));
        assert_eq!(sorted(&s3), sorted(&cached), "{h:?}");
        assert_canonical(&s3, "S3 answer");
        assert_canonical(&cached, "cached answer");
    }

    // Errors: S3's 404, the proxy's 404, a cached 416.
    for (path, hdrs, status) in [
        ("/public/no-such-key.txt", vec![], 404),
        ("/unmapped/x", vec![], 404),
        ("/public/meta.txt", vec![("Range", "bytes=999-")], 416),
    ] {
        let r = c.request("GET", path, &hdrs);
        r.assert_json_error(status);
        assert_canonical(&r, path);
    }
}

#[test]
fn authenticated_buckets_are_private_and_401_403_are_never_stored() {
    let b = backend();
    let extra = public_on("privpub", "/privpub", "    auth: {enabled: true}\n")
        + &bucket_yaml(
            "badcreds",
            "/badcreds",
            "yata-public",
            &b.endpoint,
            &b.ak1,
            "not-the-secret-key",
            "",
        );
    let yaml = edge_config(&extra).replace(
        "  - name: private\n",
        "  - name: private\n    auth: {enabled: true}\n",
    );
    let proxy = Proxy::start(&yaml);
    let mut c = proxy.client();
    let bearer = format!("Bearer {}", token("admin"));
    let auth = [("Authorization", bearer.as_str())];

    // An object with max-age: the lifetime is kept, only private caches may store it.
    let miss = c.request("GET", "/privpub/meta.txt", &auth);
    let hit = c.request("GET", "/privpub/meta.txt", &auth);
    assert_eq!((miss.status, hit.status), (200, 200));
    assert_eq!(
        (miss.header("X-Cache"), hit.header("X-Cache")),
        (Some("MISS"), Some("HIT"))
    );
    let etag = miss.header("ETag").unwrap().to_string();
    let not_modified = c.request(
        "GET",
        "/privpub/meta.txt",
        &[auth[0], ("If-None-Match", etag.as_str())],
    );
    assert_eq!(not_modified.status, 304);
    let head = c.request("HEAD", "/privpub/meta.txt", &auth);
    for (r, what) in [
        (&miss, "miss"),
        (&hit, "hit"),
        (&not_modified, "304"),
        (&head, "HEAD"),
    ] {
        let cc: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cc, ["private, max-age=60"], "{what}");
    }
    // The same object from the public bucket keeps S3's Cache-Control as is.
    assert_eq!(
        c.request("GET", "/public/meta.txt", &[])
            .header("Cache-Control"),
        Some("max-age=60")
    );

    // An object without Cache-Control, on the real private bucket: plain `private`.
    for _ in 0..2 {
        let r = c.request("GET", "/private/secret.txt", &auth);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Cache-Control"), Some("private"));
    }
    // Another error of a private bucket (S3's 404) is private too.
    let r = c.request("GET", "/private/nope.txt", &auth);
    r.assert_json_error(404);
    assert_eq!(r.header("Cache-Control"), Some("private"));

    // 401 (no token, bad token), 403 (claims), and S3's own 403: never stored anywhere.
    let wrong_role = format!("Bearer {}", token("guest"));
    for (path, hdrs, status) in [
        ("/private/secret.txt", vec![], 401),
        (
            "/private/secret.txt",
            vec![("Authorization", "Bearer not.a.jwt")],
            401,
        ),
        (
            "/private/secret.txt",
            vec![("Authorization", wrong_role.as_str())],
            403,
        ),
        ("/badcreds/hello.txt", vec![], 403),
    ] {
        let r = c.request("GET", path, &hdrs);
        r.assert_json_error(status);
        assert_eq!(
            r.header("Cache-Control"),
            Some("no-store"),
            "{path} {hdrs:?}"
        );
    }
}

#[test]
fn age_only_for_responses_with_their_own_max_age() {
    let proxy = Proxy::start(&edge_config(""));
    let mut c = proxy.client();
    for path in ["/public/hello.txt", "/public/meta.txt"] {
        let miss = c.request("GET", path, &[]);
        assert_eq!(miss.header("X-Cache"), Some("MISS"), "{path}");
        assert_eq!(miss.header("Age"), None, "{path}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let hit = c.request("GET", "/public/hello.txt", &[]);
    assert_eq!(hit.header("X-Cache"), Some("HIT"));
    assert_eq!(
        hit.header("Cache-Control"),
        None,
        "hello.txt has no freshness of its own"
    );
    assert_eq!(
        hit.header("Age"),
        None,
        "no Age without max-age: a CDN would subtract it from its own default TTL"
    );
    let hit = c.request("GET", "/public/meta.txt", &[]);
    assert_eq!(hit.header("X-Cache"), Some("HIT"));
    let age: u64 = hit
        .header("Age")
        .expect("Age with max-age")
        .parse()
        .unwrap();
    assert!((1..60).contains(&age), "Age {age}");
}

/// A child process in its own process group, killed (the whole group) when dropped.
struct Spawned {
    child: Child,
    what: &'static str,
}

impl Spawned {
    fn spawn(mut cmd: Command, what: &'static str, install_hint: &str) -> Spawned {
        cmd.process_group(0);
        match cmd.spawn() {
            Ok(child) => Spawned { child, what },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{what} is not installed ({e}): {install_hint}")
            }
            Err(e) => panic!("cannot start {what}: {e}"),
        }
    }

    /// Wait up to `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SIGKILL to the child's own process group (its id is the child's PID, from
        // process_group(0)), so helpers it forked (Chromium's zygote and renderers) go too.
        // Through libc, never by running `kill -KILL -PID`: procps kill parses that "-PID" as an
        // option and signals pid -1, i.e. every process on the machine.
        let pgid = libc::pid_t::try_from(self.child.id()).unwrap_or(0);
        assert!(pgid > 1, "refusing to signal process group {pgid}");
        // SAFETY: kill(2) with a negative pid > 1 only signals that one process group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        if self.wait(Duration::from_secs(5)).is_none() {
            eprintln!(
                "{} (pid {}) did not exit after SIGKILL",
                self.what,
                self.child.id()
            );
        }
    }
}

/// A free loopback port (bound and released; nginx binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn nginx_proxy_cache_in_front_stores_our_hits_and_never_private_answers() {
    // One shard: nginx's connection must reach the shard whose memory cache holds the object
    // (the memory cache is per shard until keys have owner shards).
    let proxy = Proxy::start(&edge_config_with(
        "  shards: 1\n",
        &public_on("privpub", "/privpub", "    auth: {enabled: true}\n"),
    ));
    // Our cache gets the object first, and holds it for a while.
    let first = proxy.get("/public/meta.txt", &[]);
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    std::thread::sleep(Duration::from_millis(1100));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = free_port();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log info;\n\
         pid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         proxy_cache_path {d}/cache keys_zone=edge:1m;\n  server {{\n    listen 127.0.0.1:{port};\n    \
         location / {{\n      proxy_pass http://{};\n      proxy_http_version 1.1;\n      \
         proxy_cache edge;\n      add_header X-Nginx-Cache $upstream_cache_status always;\n    }}\n  }}\n}}\n",
        proxy.addr
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut nginx = Spawned::spawn(
        cmd,
        "nginx",
        "install the Debian package nginx-light (bash tests/support/install-deps.sh)",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(st) = nginx.wait(Duration::from_millis(50)) {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx exited ({st}): {log}");
        }
        assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
    }
    let via_nginx =
        |path: &str, headers: &[(&str, &str)]| Client::connect(addr).request("GET", path, headers);

    // Default proxy_cache settings (no proxy_cache_valid): stored for the object's own
    // max-age, even though the object came from our cache.
    let r1 = via_nginx("/public/meta.txt", &[]);
    assert_eq!(r1.status, 200);
    assert_eq!(r1.header("X-Nginx-Cache"), Some("MISS"));
    assert_eq!(
        r1.header("X-Cache"),
        Some("HIT"),
        "nginx's fetch was our hit"
    );
    assert!(
        r1.header("Age").is_some_and(|a| a != "0"),
        "{:?}",
        r1.headers
    );
    let r2 = via_nginx("/public/meta.txt", &[]);
    assert_eq!(r2.header("X-Nginx-Cache"), Some("HIT"), "{:?}", r2.headers);
    assert_eq!(r2.body, first.body);

    // An authenticated answer is never stored by nginx, so a client without a token gets 401.
    let bearer = format!("Bearer {}", token("admin"));
    for _ in 0..2 {
        let r = via_nginx("/privpub/meta.txt", &[("Authorization", bearer.as_str())]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-Nginx-Cache"), Some("MISS"), "{:?}", r.headers);
    }
    let anonymous = via_nginx("/privpub/meta.txt", &[]);
    assert_eq!(
        anonymous.status, 401,
        "a shared cache leaked a private object"
    );
    drop(nginx);
}

/// Buckets on `yata-public`: `/cors` (exact origin `APP`), `/corsany` (`*`), `/corscred`
/// (exact origin, credentials), with the standard `/public` (no cors) beside them.
fn cors_config() -> String {
    edge_config(
        &(public_on(
            "cors",
            "/cors",
            &format!(
                "    cors:\n      allowed_origins: [\"{APP}\"]\n      allowed_headers: [Range, If-None-Match]\n      \
                 expose_headers: [ETag, Content-Range, X-Cache]\n      max_age_seconds: 321\n"
            ),
        ) + &public_on(
            "corsany",
            "/corsany",
            "    cors: {allowed_origins: [\"*\"]}\n",
        ) + &public_on(
            "corscred",
            "/corscred",
            &format!("    cors: {{allowed_origins: [\"{APP}\"], allow_credentials: true}}\n"),
        )),
    )
}

fn acao(r: &Response) -> Option<&str> {
    r.header("Access-Control-Allow-Origin")
}

fn no_cors(r: &Response, what: &str) {
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")),
        "{what}: {:?}",
        r.headers
    );
}

#[test]
fn cors_preflight_and_actual_responses_per_bucket() {
    let proxy = Proxy::start(&cors_config());
    let mut c = proxy.client();
    let origin = ("Origin", APP);

    // Preflight: allowed origin and method -> 204 with the Allow-* fields.
    let pre = c.request(
        "OPTIONS",
        "/cors/100k.bin",
        &[
            origin,
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range, x-not-allowed"),
        ],
    );
    assert_eq!(pre.status, 204, "{:?}", pre.headers);
    assert_eq!(acao(&pre), Some(APP));
    assert_eq!(
        pre.header("Access-Control-Allow-Methods"),
        Some("GET, HEAD")
    );
    assert_eq!(pre.header("Access-Control-Allow-Headers"), Some("Range"));
    assert_eq!(pre.header("Access-Control-Max-Age"), Some("321"));
    assert!(pre.header("Vary").is_some_and(|v| v.starts_with("Origin")));
    assert_eq!(pre.header("Access-Control-Allow-Credentials"), None);
    assert_eq!(
        pre.header("Content-Length"),
        None,
        "204 has no Content-Length"
    );
    let cred = c.request(
        "OPTIONS",
        "/corscred/x",
        &[origin, ("Access-Control-Request-Method", "HEAD")],
    );
    assert_eq!(cred.status, 204);
    assert_eq!(
        cred.header("Access-Control-Allow-Credentials"),
        Some("true")
    );

    // Not an accepted preflight -> the plain OPTIONS answer, no CORS fields.
    for (path, hdrs) in [
        (
            "/cors/100k.bin",
            vec![
                ("Origin", "http://evil.test"),
                ("Access-Control-Request-Method", "GET"),
            ],
        ),
        (
            "/cors/100k.bin",
            vec![origin, ("Access-Control-Request-Method", "PUT")],
        ),
        ("/cors/100k.bin", vec![]),
        (
            "/public/100k.bin",
            vec![origin, ("Access-Control-Request-Method", "GET")],
        ),
        ("*", vec![]),
    ] {
        let r = c.request("OPTIONS", path, &hdrs);
        assert_eq!(r.status, 200, "{path} {hdrs:?}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD, OPTIONS"));
        no_cors(&r, path);
    }

    // Actual responses from the allowed origin, on every path.
    let miss = c.request("GET", "/cors/100k.bin", &[origin]);
    let etag = miss.header("ETag").unwrap().to_string();
    let range_miss = c.request("GET", "/cors/1k.bin", &[origin, ("Range", "bytes=0-9")]);
    let answers = [
        ("miss", miss),
        ("hit", c.request("GET", "/cors/100k.bin", &[origin])),
        (
            "304",
            c.request(
                "GET",
                "/cors/100k.bin",
                &[origin, ("If-None-Match", etag.as_str())],
            ),
        ),
        (
            "206 hit",
            c.request("GET", "/cors/100k.bin", &[origin, ("Range", "bytes=0-9")]),
        ),
        ("206 miss", range_miss),
        ("HEAD", c.request("HEAD", "/cors/100k.bin", &[origin])),
        ("404", c.request("GET", "/cors/missing.bin", &[origin])),
    ];
    let statuses: Vec<u16> = answers.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses, [200, 200, 304, 206, 206, 200, 404]);
    assert_eq!(answers[1].1.header("X-Cache"), Some("HIT"));
    assert_eq!(answers[3].1.header("X-Cache"), Some("HIT"));
    assert_eq!(
        answers[4].1.header("X-Cache"),
        Some("MISS"),
        "a Range miss passes through"
    );
    for (what, r) in &answers {
        assert_eq!(acao(r), Some(APP), "{what}: {:?}", r.headers);
        assert_eq!(
            r.header("Access-Control-Expose-Headers"),
            Some("ETag, Content-Range, X-Cache"),
            "{what}"
        );
        assert!(
            r.headers.iter().any(|(k, v)| k == "Vary" && v == "Origin"),
            "{what}"
        );
        assert_eq!(r.header("Access-Control-Allow-Credentials"), None, "{what}");
    }

    // Other origins: no CORS fields (the answer still says it varies on Origin).
    let other = c.request("GET", "/cors/100k.bin", &[("Origin", "http://evil.test")]);
    assert_eq!(other.status, 200);
    no_cors(&other, "other origin");
    assert_eq!(other.header("Vary"), Some("Origin"));
    // Buckets without cors: nothing at all.
    for r in [
        c.request("GET", "/public/100k.bin", &[origin]),
        c.request("GET", "/public/missing.bin", &[origin]),
    ] {
        no_cors(&r, "bucket without cors");
        assert_eq!(r.header("Vary"), None);
    }

    // ["*"]: any origin gets `*`; credentials only where configured (and echoed origin).
    let any = c.request(
        "GET",
        "/corsany/hello.txt",
        &[("Origin", "http://x.test:9")],
    );
    assert_eq!(acao(&any), Some("*"));
    assert_eq!(any.header("Access-Control-Allow-Credentials"), None);
    let cred = c.request("GET", "/corscred/hello.txt", &[origin]);
    assert_eq!(acao(&cred), Some(APP));
    assert_eq!(
        cred.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
}

/// Serves `page` to every GET on a loopback port until dropped.
struct PageServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start() -> (PageServer, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (
            PageServer {
                port,
                stop: Arc::new(AtomicBool::new(false)),
                thread: None,
            },
            listener,
        )
    }

    fn serve(&mut self, listener: TcpListener, page: String) {
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut request_line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if request_line.is_empty() {
                        request_line = line.clone();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let (status, body) = if request_line.starts_with("GET / ") {
                    ("200 OK", page.as_str())
                } else {
                    ("404 Not Found", "")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }));
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn chromium_fetches_from_a_second_origin_only_where_cors_allows() {
    let b = backend();
    let (mut pages, listener) = PageServer::start();
    let page_origin = format!("http://127.0.0.1:{}", pages.port);
    // One shard, so the browser's third fetch is a cache hit whichever connection it uses.
    let proxy = Proxy::start(&edge_config_with(
        "  shards: 1\n",
        &public_on(
            "cors",
            "/cors",
            &format!(
                "    cors:\n      allowed_origins: [\"{page_origin}\"]\n      \
             expose_headers: [ETag, Content-Range, X-Cache]\n"
            ),
        ),
    ));
    let api = format!("http://{}", proxy.addr);
    let page = format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
async function probe(path, headers) {{
  try {{
    const r = await fetch("{api}" + path, {{headers, cache: "no-store"}});
    const body = await r.arrayBuffer();
    return {{ok: true, status: r.status, etag: r.headers.get("ETag"),
             range: r.headers.get("Content-Range"), xcache: r.headers.get("X-Cache"),
             bytes: body.byteLength}};
  }} catch (e) {{
    return {{ok: false, error: String(e)}};
  }}
}}
(async () => {{
  const out = {{}};
  out.ranged_miss = await probe("/cors/100k.bin", {{"Range": "bytes=0-9"}});
  out.full = await probe("/cors/100k.bin", {{}});
  out.ranged_hit = await probe("/cors/100k.bin", {{"Range": "bytes=0-9"}});
  out.no_cors = await probe("/public/100k.bin", {{"Range": "bytes=0-9"}});
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(out) + " END";
}})();
</script></body></html>"#
    );
    pages.serve(listener, page);

    let profile = tempfile::tempdir().unwrap();
    let stdout_path = profile.path().join("dom.html");
    let stderr_path = profile.path().join("chromium.log");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .arg("--virtual-time-budget=10000")
    .arg("--dump-dom")
    .arg(format!("http://127.0.0.1:{}/", pages.port))
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&stdout_path).unwrap())
    .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut chromium = Spawned::spawn(
        cmd,
        "chromium",
        "install the Debian package chromium (apt-get install chromium, or bash \
         tests/support/install-deps.sh)",
    );
    let status = chromium.wait(Duration::from_secs(60));
    drop(chromium);
    let mut dom = String::new();
    std::fs::File::open(&stdout_path)
        .unwrap()
        .read_to_string(&mut dom)
        .unwrap();
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium did not finish within 60 s ({status:?}); stderr:\n{log}"
    );
    let result = dom
        .split_once("RESULT ")
        .and_then(|(_, rest)| rest.split_once(" END"))
        .map(|(json, _)| {
            json.replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
        })
        .unwrap_or_else(|| panic!("no result in the page; DOM:\n{dom}\nstderr:\n{log}"));
    let out: serde_json::Value = serde_json::from_str(&result).unwrap();

    let etag = proxy
        .get("/cors/100k.bin", &[])
        .header("ETag")
        .unwrap()
        .to_string();
    let len = b.object("yata-public", "100k.bin").size;
    for (probe, x_cache) in [("ranged_miss", "MISS"), ("ranged_hit", "HIT")] {
        let r = &out[probe];
        assert_eq!(r["ok"], true, "{probe}: {r}");
        assert_eq!(r["status"], 206, "{probe}: {r}");
        assert_eq!(r["etag"], etag.as_str(), "{probe}: {r}");
        assert_eq!(r["range"], format!("bytes 0-9/{len}"), "{probe}: {r}");
        assert_eq!(r["bytes"], 10, "{probe}: {r}");
        assert_eq!(r["xcache"], x_cache, "{probe}: {r}");
    }
    assert_eq!(out["full"]["status"], 200, "{}", out["full"]);
    assert_eq!(out["full"]["bytes"], len, "{}", out["full"]);
    let denied = &out["no_cors"];
    assert_eq!(
        denied["ok"], false,
        "a bucket without cors was readable: {denied}"
    );
    assert!(
        denied["error"]
            .as_str()
            .is_some_and(|e| e.contains("TypeError")),
        "{denied}"
    );
}
