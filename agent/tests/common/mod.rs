//! Test helpers: the real Cobbler peer (`ci/peer/serve`), the agent binary,
//! a fault-injecting proxy, and scratch directories. Everything listens on
//! 127.0.0.1 only.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SYSTEM: &str = "testsys";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The agent under test: `ANAMON_BIN` (e.g. a musl release build) or the
/// binary cargo built for this test run.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("ANAMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_anamon")))
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "anamon-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("ANAMON_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for `child` to exit; its status code, if it did.
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let mut code = None;
    wait_until(limit, || match child.try_wait().unwrap() {
        Some(st) => {
            code = st.code();
            true
        }
        None => false,
    });
    code
}

/// A real Cobbler server (`upload_log_data` from the PyPI release) serving
/// 127.0.0.1:`port` at /cobbler_api, storing into `logdir/SYSTEM/<file>`.
pub struct Peer {
    child: Child,
    pub port: u16,
    pub version: String,
    pub logdir: PathBuf,
    pub calls: PathBuf,
}

impl Peer {
    pub fn start(version: &str, dir: &Scratch) -> Peer {
        Peer::start_on(version, dir, 0)
    }

    /// Starts the peer on `port` (0: any free port) and waits until it
    /// accepts connections. With ANAMON_PEER=receiver, Cobbler 4.0.0b7 is
    /// stood in for by anamon-receiver with its default settings, so the
    /// same tests check both servers.
    pub fn start_on(version: &str, dir: &Scratch, port: u16) -> Peer {
        if version == "4.0.0b7" && std::env::var("ANAMON_PEER").is_ok_and(|v| v == "receiver") {
            return Peer::receiver_on(dir, port, &[]);
        }
        let logdir = dir.path("server");
        let mut cmd = Command::new(repo_root().join("ci/peer/serve"));
        cmd.args([
            "--cobbler",
            version,
            "--system",
            SYSTEM,
            "--port",
            &port.to_string(),
        ])
        .arg("--logdir")
        .arg(&logdir);
        Peer::launch(cmd, version, dir, logdir)
    }

    /// anamon-receiver (ANAMON_RECEIVER_BIN, else target/debug, built on
    /// first use) with `extra` flags; its log goes to `dir/receiver.log`.
    pub fn receiver(dir: &Scratch, extra: &[&str]) -> Peer {
        Peer::receiver_on(dir, 0, extra)
    }

    /// The same on a given port (0: any), e.g. to restart it where it was.
    pub fn receiver_on(dir: &Scratch, port: u16, extra: &[&str]) -> Peer {
        let logdir = dir.path("server");
        let mut cmd = Command::new(receiver_bin());
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--dir")
            .arg(&logdir)
            .args(extra)
            .stderr(std::fs::File::create(dir.path("receiver.log")).unwrap());
        Peer::launch(cmd, "receiver", dir, logdir)
    }

    /// Starts `cmd` (a server taking --port-file and --call-log) and waits
    /// until it accepts connections.
    fn launch(mut cmd: Command, version: &str, dir: &Scratch, logdir: PathBuf) -> Peer {
        std::fs::create_dir_all(&logdir).unwrap();
        let port_file = dir.path(&format!("peer-port-{}", free_port()));
        let calls = dir.path("calls.jsonl");
        let child = cmd
            .arg("--port-file")
            .arg(&port_file)
            .arg("--call-log")
            .arg(&calls)
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the {version} peer: {e} (run ci/peer/setup?)")
            });
        let mut peer = Peer {
            child,
            port: 0,
            version: version.into(),
            logdir,
            calls,
        };
        let up = wait_until(Duration::from_secs(60), || {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Ok(p) = s.trim().parse::<u16>() {
                    peer.port = p;
                    return TcpStream::connect(("127.0.0.1", p)).is_ok();
                }
            }
            assert!(
                peer.child.try_wait().unwrap().is_none(),
                "peer {version} exited at start (run ci/peer/setup?)"
            );
            false
        });
        assert!(up, "peer {version} did not come up in 60 s");
        peer
    }

    /// The server's copy of `file`, or None if it has none.
    pub fn stored(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.logdir.join(SYSTEM).join(file)).ok()
    }

    /// Waits until the server's copy of `file` equals `expected`.
    pub fn wait_for(&self, file: &str, expected: &[u8], limit: Duration) -> bool {
        wait_until(limit, || self.stored(file).as_deref() == Some(expected))
    }

    /// Asserts the server's copy of `file` becomes byte-identical to `path`.
    pub fn assert_mirrors(&self, file: &str, path: &Path, limit: Duration) {
        let want = std::fs::read(path).unwrap();
        if !self.wait_for(file, &want, limit) {
            let got = self.stored(file);
            panic!(
                "server copy of {file} ({:?} bytes) never matched {} ({} bytes)",
                got.as_ref().map(Vec::len),
                path.display(),
                want.len()
            );
        }
    }

    /// `upload_log_data` calls received so far.
    pub fn upload_calls(&self) -> usize {
        std::fs::read_to_string(&self.calls)
            .map(|s| s.lines().filter(|l| l.contains("upload_log_data")).count())
            .unwrap_or(0)
    }

    pub fn child_id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to exit; returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        wait_for_exit(&mut self.child, limit)
    }

    pub fn stop(&mut self) {
        // The peer runs in its own process group (a wrapper, unshare, python).
        unsafe_kill_group(self.child.id(), libc::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            self.child.try_wait().unwrap().is_some()
        }) {
            unsafe_kill_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn unsafe_kill_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process group we created; no memory involved.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// The receiver binary under test: ANAMON_RECEIVER_BIN, else the debug
/// build, which is built here if this package was tested on its own.
pub fn receiver_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ANAMON_RECEIVER_BIN") {
        return PathBuf::from(p);
    }
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let ok = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--quiet", "-p", "anamon-receiver"])
            .current_dir(repo_root())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot build anamon-receiver");
    });
    repo_root().join("target/debug/anamon-receiver")
}

/// A running agent with its log captured in a file.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `anamon --fg --debug --name SYSTEM --server 127.0.0.1 --port
    /// PORT` plus `extra`.
    pub fn start(port: u16, dir: &Scratch, extra: &[&str]) -> Agent {
        Agent::start_as(&[agent_bin().as_path()], port, dir, extra)
    }

    /// The same, with `argv` naming the agent, perhaps behind a wrapper
    /// (`kernelsim --kernel 2.6.9 -- anamon`, `qemu-aarch64-static anamon`).
    pub fn start_as(argv: &[&Path], port: u16, dir: &Scratch, extra: &[&str]) -> Agent {
        let log = dir.path(&format!("agent-{}.log", free_port()));
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .args([
                "--fg",
                "--debug",
                "--name",
                SYSTEM,
                "--server",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent's log contains `needle`: the server may store
    /// a chunk a moment before the agent hears back and logs about it.
    pub fn assert_logs(&self, needle: &str) {
        if !wait_until(Duration::from_secs(10), || self.log_text().contains(needle)) {
            panic!("agent never logged {needle:?}:\n{}", self.log_text());
        }
    }

    pub fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "agent died:\n{}",
            self.log_text()
        );
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the agent to exit; returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        wait_for_exit(&mut self.child, limit)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends `data` to `path`.
pub fn append(path: &Path, data: &[u8]) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// Deterministic bytes covering every value, NUL and invalid UTF-8 included.
pub fn binary_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// What the fault proxy does with each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // XmlRpcFault is the protocol's own word
pub enum Fault {
    /// Forward to the peer.
    Pass,
    /// Answer HTTP 502 with an Apache-style HTML page.
    Html502,
    /// Answer 200 with an HTML page.
    Html200,
    /// Answer 200 with an XML-RPC fault.
    XmlRpcFault,
    /// Answer 200 with XML that stops halfway.
    TruncatedXml,
    /// Accept, read the request, never answer.
    Hang,
    /// Accept and close at once (a reset mid-request).
    Reset,
    /// Answer 200 and stream bytes forever (bounded by the test's life).
    Endless,
}

/// A TCP listener on 127.0.0.1 that hands each connection, numbered from 0,
/// to `serve` on a thread of its own, until dropped. `serve` also gets the
/// stop flag, so that connections it keeps open can end with the test.
pub struct Listener {
    pub port: u16,
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    pub fn start(
        serve: impl Fn(TcpStream, u64, Arc<AtomicBool>) + Send + Sync + 'static,
    ) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let serve = Arc::new(serve);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (serve, stop) = (serve.clone(), s.clone());
                std::thread::spawn(move || serve(conn, n, stop));
            }
        });
        Listener {
            port,
            connections,
            stop,
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A proxy on 127.0.0.1 between the agent and the peer, whose behaviour the
/// test switches at will. Counts connections.
pub struct FaultProxy {
    pub port: u16,
    pub connections: Arc<AtomicU64>,
    mode: Arc<Mutex<Fault>>,
    _listener: Listener,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, mode: Fault) -> FaultProxy {
        let mode = Arc::new(Mutex::new(mode));
        let m = mode.clone();
        let listener = Listener::start(move |conn, _, stop| {
            let fault = *m.lock().unwrap();
            serve_one(conn, fault, upstream_port, stop)
        });
        FaultProxy {
            port: listener.port,
            connections: listener.connections.clone(),
            mode,
            _listener: listener,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.mode.lock().unwrap() = fault;
    }
}

/// Reads an HTTP request head; returns what was read (the head and any
/// body bytes that came with it), where the body starts, and the
/// Content-Length.
pub fn read_head(conn: &mut TcpStream) -> Option<(Vec<u8>, usize, usize)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let n = conn.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            return Some((buf, end + 4, len));
        }
    }
}

/// Reads one whole HTTP request (head and Content-Length body).
pub fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let (mut buf, body_at, len) = read_head(conn)?;
    let mut tmp = [0u8; 65536];
    while buf.len() < body_at + len {
        let n = conn.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(buf)
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

const FAULT_BODY: &str = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>1</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>&lt;class 'BlockingIOError'&gt;:[Errno 11] Resource temporarily unavailable</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n";

fn serve_one(mut conn: TcpStream, fault: Fault, upstream_port: u16, stop: Arc<AtomicBool>) {
    if fault == Fault::Reset {
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
    let Some(request) = read_request(&mut conn) else {
        return;
    };
    match fault {
        Fault::Pass => {
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream_port)) else { return };
            if up.write_all(&request).is_err() {
                return;
            }
            let mut resp = Vec::new();
            let _ = up.read_to_end(&mut resp);
            let _ = conn.write_all(&resp);
        }
        Fault::Html502 => respond(
            &mut conn,
            "502 Bad Gateway",
            "text/html; charset=iso-8859-1",
            b"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>502 Proxy Error</title>\n</head><body>\n<h1>Proxy Error</h1></body></html>\n",
        ),
        Fault::Html200 => respond(&mut conn, "200 OK", "text/html", b"<html><head><title>Welcome</title></head></html>"),
        Fault::XmlRpcFault => respond(&mut conn, "200 OK", "text/xml", FAULT_BODY.as_bytes()),
        Fault::TruncatedXml => respond(
            &mut conn,
            "200 OK",
            "text/xml",
            b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><bool",
        ),
        Fault::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Fault::Endless => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<methodResponse>");
            let junk = [b'x'; 8192];
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end && conn.write_all(&junk).is_ok() {}
        }
        Fault::Reset => unreachable!(),
    }
}
