//! Real `redis-server` processes for the Redis-tier tests (tests/redis.rs): a standalone server
//! ([`RedisServer`]) or a 3-master, 3-replica Redis Cluster ([`RedisCluster`]) per test, each on
//! free loopback ports with its data and logs in its own temp dir, no persistence.
//!
//! Every process is started by this harness and stopped by the PID of its [`Child`] (SIGTERM or
//! SIGKILL, then reaped), never by name; `Drop` kills and reaps whatever is still running, a
//! paused (SIGSTOPped) server included. A missing `redis-server` / `redis-cli` fails the test
//! with how to install it.
//!
//! Besides `redis-cli` ([`RedisServer::cli`], [`RedisCluster::cli`]) the harness speaks RESP
//! itself over one short TCP connection per command ([`RedisServer::cmd`]): binary-safe keys and
//! values (the proxy's keys may hold a `\0`), no process spawned per poll, and, for the cluster,
//! `MOVED` redirections followed so a test can address a key without knowing its slot.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const HOW_TO_INSTALL: &str = "redis-server and redis-cli (Debian package redis-server, 7.0) are \
needed by the Redis tests: install them with `apt-get install redis-server`, or run \
`bash tests/support/install-deps.sh`";

/// How long a server may take to answer its first PING.
const START_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Ports.

/// Ports handed out by this process (and their cluster bus ports), so parallel tests do not get
/// the same one between our probe and redis-server's bind.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static S: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashSet::new()))
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port nobody listens on right now (kernel-chosen), below 55535 with `port + 10000`
/// (Redis Cluster's bus port) free too, and not handed out before by this process.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if port >= 55535 || !can_bind(port + 10000) {
            continue;
        }
        let mut used = handed_out().lock().unwrap();
        if used.contains(&port) || used.contains(&(port + 10000)) {
            continue;
        }
        used.insert(port);
        used.insert(port + 10000);
        return port;
    }
    panic!("no free loopback port pair (P, P+10000) found");
}

// ---------------------------------------------------------------------------------------------
// RESP, the Redis wire protocol (enough for tests).

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status, bulk or error text; an integer printed).
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => String::new(),
            Reply::Array(Some(items)) => {
                items.iter().map(Reply::text).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// The integer of an `Int` reply (panics otherwise).
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// The bytes of a bulk reply (`None` for the null bulk string; panics on other kinds).
    pub fn bulk(&self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => b.clone(),
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short RESP line {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    Ok(match line[0] {
        b'+' => Reply::Status(body),
        b'-' => Reply::Error(body),
        b':' => Reply::Int(body.parse().map_err(|_| bad("RESP integer"))?),
        b'$' => {
            let n: i64 = body.parse().map_err(|_| bad("RESP bulk length"))?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n: i64 = body.parse().map_err(|_| bad("RESP array length"))?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(bad("unknown RESP type")),
    })
}

/// Send each of `cmds` on one new connection to 127.0.0.1:`port` and return the last reply
/// (an `Error` reply of an earlier command, e.g. a failed AUTH, is returned instead). 2 s
/// connect / read / write timeouts, so a paused server is an error, not a hang.
pub fn resp(port: u16, cmds: &[&[&[u8]]]) -> std::io::Result<Reply> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut out = Vec::new();
    for c in cmds {
        out.extend_from_slice(&encode(c));
    }
    (&stream).write_all(&out)?;
    let mut r = BufReader::new(&stream);
    let mut last = Reply::Status(String::new());
    for i in 0..cmds.len() {
        last = read_reply(&mut r)?;
        if matches!(last, Reply::Error(_)) && i + 1 < cmds.len() {
            return Ok(last);
        }
    }
    Ok(last)
}

/// Spawn `redis-cli` with `args`; its stdout (panics with install instructions when missing,
/// and with its stderr when it fails).
fn run_cli(args: &[String]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {HOW_TO_INSTALL}"));
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// The last `n` lines of `path` (for failure messages).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// One server.

/// One `redis-server` process on 127.0.0.1, started by this harness; killed and reaped on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Extra command-line options (`--requirepass pw`, cluster options), kept for `restart`.
    extra: Vec<String>,
    password: Option<String>,
    dir: tempfile::TempDir,
    paused: bool,
}

impl RedisServer {
    /// A standalone server on a free port; waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with extra `redis-server` options, e.g. `["--requirepass", "pw"]`
    /// (then [`cli`](Self::cli) and [`cmd`](Self::cmd) authenticate with it).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| p.to_string());
        let mut last_err = String::new();
        // A port probed free may be taken before redis-server binds it (another process): retry.
        for _ in 0..5 {
            let mut s = RedisServer {
                child: None,
                port: free_port(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                password: password.clone(),
                dir: tempfile::tempdir().expect("tempdir"),
                paused: false,
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawn on `self.port` and wait for PING (and that the answering server is our child).
    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("stderr.log")).expect("stderr.log"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): {HOW_TO_INSTALL}"));
        let pid = child.id();
        self.child = Some(child);
        self.paused = false;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited ({st}): {}\n{}",
                    self.port,
                    tail(&self.dir.path().join("stderr.log"), 20),
                    tail(&self.log_path(), 20)
                ));
            }
            // PING answers once it listens; INFO names the process so a server that somebody
            // else started on the same port is not mistaken for ours.
            if let Ok(r) = self.cmd(&[b"INFO", b"server"]) {
                if r.text().contains(&format!("process_id:{pid}\r")) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer within {START_LIMIT:?}\n{}",
                    self.port,
                    tail(&self.log_path(), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0` (with the password when one is set).
    pub fn url(&self) -> String {
        self.url_db(0)
    }

    /// `redis://[:password@]127.0.0.1:PORT/db`.
    pub fn url_db(&self, db: u32) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's PID (panics when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is stopped").id()
    }

    /// Whether the process is running (a paused one counts as running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM by PID and wait (up to 5 s, then SIGKILL) for it to exit. No-op when stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.paused {
            // A stopped process does not act on SIGTERM until continued.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            self.paused = false;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL by PID and reap. No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Start again on the same port with the same options (empty: no persistence) and wait for
    /// PING. Stops it first when it runs. Retries for up to 5 s while the port is still busy.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGSTOP by PID: the server keeps its sockets (connections are accepted by the kernel) but
    /// answers nothing, as a hung server does.
    pub fn pause(&mut self) {
        signal(self.pid(), "STOP");
        self.paused = true;
    }

    /// SIGCONT by PID after [`pause`](Self::pause).
    pub fn resume(&mut self) {
        signal(self.pid(), "CONT");
        self.paused = false;
    }

    /// `redis-cli -h 127.0.0.1 -p PORT [-a pw --no-auth-warning] args...`; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        if let Some(pw) = &self.password {
            all.extend(["-a".to_string(), pw.clone(), "--no-auth-warning".into()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        run_cli(&all)
    }

    /// One command over RESP on db 0 (authenticated when a password is set).
    pub fn cmd(&self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.cmd_db(0, args)
    }

    /// One command over RESP on `db` (SELECT first when not 0).
    pub fn cmd_db(&self, db: u32, args: &[&[u8]]) -> std::io::Result<Reply> {
        let db_text = db.to_string();
        let mut cmds: Vec<&[&[u8]]> = Vec::new();
        let auth: [&[u8]; 2];
        if let Some(pw) = &self.password {
            auth = [b"AUTH", pw.as_bytes()];
            cmds.push(&auth);
        }
        let select: [&[u8]; 2] = [b"SELECT", db_text.as_bytes()];
        if db != 0 {
            cmds.push(&select);
        }
        cmds.push(args);
        resp(self.port, &cmds)
    }

    /// [`cmd`](Self::cmd), panicking on an I/O error or an error reply.
    pub fn must(&self, args: &[&[u8]]) -> Reply {
        self.must_db(0, args)
    }

    /// [`cmd_db`](Self::cmd_db), panicking on an I/O error or an error reply.
    pub fn must_db(&self, db: u32, args: &[&[u8]]) -> Reply {
        match self.cmd_db(db, args) {
            Ok(Reply::Error(e)) => panic!("redis {:?}: {e}", show(args)),
            Ok(r) => r,
            Err(e) => panic!("redis {:?} on port {}: {e}", show(args), self.port),
        }
    }

    /// Whether `key` exists in db 0.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.must(&[b"EXISTS", key]).int() == 1
    }

    /// The value of `key` in db 0.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.must(&[b"GET", key]).bulk()
    }

    /// Every key of `db` matching the glob `pattern` (SCAN, so never blocking the server).
    pub fn scan_db(&self, db: u32, pattern: &str) -> Vec<Vec<u8>> {
        scan(|args| self.must_db(db, args), pattern)
    }

    /// Every key of db 0 matching `pattern`.
    pub fn scan(&self, pattern: &str) -> Vec<Vec<u8>> {
        self.scan_db(0, pattern)
    }

    /// The server's log file (in its temp dir).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL works on a stopped (paused) process too.
        self.kill();
    }
}

fn show(args: &[&[u8]]) -> Vec<String> {
    args.iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn scan(mut run: impl FnMut(&[&[u8]]) -> Reply, pattern: &str) -> Vec<Vec<u8>> {
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    loop {
        let r = run(&[
            b"SCAN",
            &cursor,
            b"MATCH",
            pattern.as_bytes(),
            b"COUNT",
            b"1000",
        ]);
        let Reply::Array(Some(parts)) = r else {
            panic!("SCAN reply {r:?}");
        };
        cursor = parts[0].bulk().expect("SCAN cursor");
        if let Reply::Array(Some(ks)) = &parts[1] {
            keys.extend(ks.iter().filter_map(|k| k.bulk()));
        }
        if cursor == b"0" {
            return keys;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A cluster.

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Slot ranges served (masters), inclusive.
    pub slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeInfo {
                id: f[0].to_string(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// A Redis Cluster of 3 masters and 3 replicas (6 `redis-server` processes, cluster-node-timeout
/// 1000 ms), each node its own [`RedisServer`]; every process is killed and reaped on drop.
pub struct RedisCluster {
    servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start 6 nodes, `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, and
    /// wait (up to 20 s) until every node says `cluster_state:ok` with all 16384 slots covered
    /// and every replica's link to its master is up.
    pub fn start() -> RedisCluster {
        let servers: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // Failover must happen however long a replica was disconnected.
                    "--cluster-replica-validity-factor",
                    "0",
                    // Replicas sync at once (the default waits 5 s for more replicas to join).
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let mut args = vec!["--cluster".to_string(), "create".into()];
        args.extend(servers.iter().map(|s| s.addr()));
        args.extend([
            "--cluster-replicas".to_string(),
            "1".into(),
            "--cluster-yes".into(),
        ]);
        run_cli(&args);
        let c = RedisCluster { servers };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ports: Vec<u16> = c.servers.iter().map(|s| s.port).collect();
            let ok = c.all_ok(&ports) && c.replicas_linked();
            if ok {
                return c;
            }
            if Instant::now() > deadline {
                let states: Vec<String> = c
                    .servers
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: {}",
                            s.port,
                            s.cmd(&[b"CLUSTER", b"INFO"])
                                .map(|r| r.text())
                                .unwrap_or_else(|e| e.to_string())
                        )
                    })
                    .collect();
                panic!(
                    "the cluster did not become ok in 20 s:\n{}",
                    states.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Ports of the nodes still running.
    fn live_ports(&mut self) -> Vec<u16> {
        self.servers
            .iter_mut()
            .filter_map(|s| s.is_running().then_some(s.port))
            .collect()
    }

    fn any_live(&self) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.child.is_some())
            .expect("no cluster node running")
    }

    /// `cluster_state:ok` and all slots ok on every one of `ports`.
    fn all_ok(&self, ports: &[u16]) -> bool {
        ports.iter().all(|&p| {
            self.server(p)
                .cmd(&[b"CLUSTER", b"INFO"])
                .map(|r| {
                    let t = r.text();
                    t.contains("cluster_state:ok") && t.contains("cluster_slots_ok:16384")
                })
                .unwrap_or(false)
        })
    }

    fn replicas_linked(&self) -> bool {
        let nodes = self.topology();
        nodes.iter().filter(|n| !n.master).count() == 3
            && nodes.iter().filter(|n| !n.master).all(|n| {
                self.server(n.port)
                    .cmd(&[b"INFO", b"replication"])
                    .map(|r| r.text().contains("master_link_status:up"))
                    .unwrap_or(false)
            })
    }

    /// `CLUSTER NODES` as seen by a running node.
    pub fn topology(&self) -> Vec<NodeInfo> {
        parse_nodes(&self.any_live().must(&[b"CLUSTER", b"NODES"]).text())
    }

    /// "127.0.0.1:port" of every node, the current masters first.
    pub fn nodes(&self) -> Vec<String> {
        let mut t = self.topology();
        t.sort_by_key(|n| (!n.master, n.port));
        t.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// "127.0.0.1:port" of the current masters that are not failed.
    pub fn masters(&self) -> Vec<String> {
        self.master_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Ports of the current masters that are not failed and serve slots.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .topology()
            .iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        ports.sort();
        ports
    }

    /// The port of a replica of the master on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> Option<u16> {
        let t = self.topology();
        let id = &t.iter().find(|n| n.port == master_port)?.id;
        t.iter()
            .find(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &[u8]) -> u16 {
        self.any_live().must(&[b"CLUSTER", b"KEYSLOT", key]).int() as u16
    }

    /// The port of the (non-failed) master serving `slot`, per a running node's view.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.topology()
            .iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
    }

    /// SIGKILL, by PID, the master serving `key`'s slot; its port.
    pub fn kill_master_of_key(&mut self, key: &[u8]) -> u16 {
        let slot = self.keyslot(key);
        let port = self
            .master_of_slot(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap()
            .kill();
        port
    }

    /// Wait (up to 15 s) until every surviving node says `cluster_state:ok` and a survivor
    /// serves every slot the master on `dead_port` served. Panics on timeout.
    pub fn wait_failover(&mut self, dead_port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let survivors = self.live_ports();
        loop {
            let t = self
                .server(survivors[0])
                .cmd(&[b"CLUSTER", b"NODES"])
                .map(|r| parse_nodes(&r.text()))
                .unwrap_or_default();
            let covered = t
                .iter()
                .filter(|n| n.master && n.port != dead_port && !n.failed)
                .map(|n| {
                    n.slots
                        .iter()
                        .map(|&(a, b)| (b - a) as u32 + 1)
                        .sum::<u32>()
                })
                .sum::<u32>()
                == 16384;
            if covered && self.all_ok(&survivors) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "no failover of the master on port {dead_port} within 15 s; nodes:\n{}",
                    t.iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cli -h 127.0.0.1 -p port args...`; its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.server(port).cli(args)
    }

    /// One command to the node on `port`.
    pub fn cmd(&self, port: u16, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.server(port).cmd(args)
    }

    /// One command about a key, sent to any running node and following `MOVED`/`ASK`
    /// redirections (up to 5).
    pub fn key_cmd(&self, args: &[&[u8]]) -> Reply {
        let mut port = self.any_live().port;
        for _ in 0..5 {
            match resp(port, &[args]) {
                Ok(Reply::Error(e)) if e.starts_with("MOVED ") || e.starts_with("ASK ") => {
                    port = e
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or_else(|| panic!("redirection {e}"));
                    if e.starts_with("ASK ") {
                        return resp(port, &[&[b"ASKING"], args])
                            .unwrap_or_else(|e| panic!("redis {:?}: {e}", show(args)));
                    }
                }
                Ok(r) => return r,
                Err(e) => panic!("redis {:?} on port {port}: {e}", show(args)),
            }
        }
        panic!("too many redirections for {:?}", show(args));
    }

    /// Whether `key` exists in the cluster.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.key_cmd(&[b"EXISTS", key]).int() == 1
    }

    /// Every key matching `pattern` on every current master.
    pub fn scan(&self, pattern: &str) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for p in self.master_ports() {
            keys.extend(scan(|args| self.server(p).must(args), pattern));
        }
        keys
    }
}
