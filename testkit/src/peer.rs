//! The servers and the agent under test, as child processes.

use crate::{free_port, repo_root, wait_for_exit, wait_until, Scratch};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The system name every test ships as.
pub const SYSTEM: &str = "testsys";

/// The agent under test: `ANAMON_BIN` (e.g. a musl release build), else the
/// `anamon` cargo built beside the running test executable (`target/debug/`,
/// one level above `deps/`).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ANAMON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    dir.join("anamon")
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
        Peer::receiver_binary(&receiver_bin(), dir, port, extra)
    }

    /// The receiver binary `bin` (the receiver's own tests name the one
    /// cargo built for them) on `port` (0: any) with `extra` flags.
    pub fn receiver_binary(bin: &Path, dir: &Scratch, port: u16, extra: &[&str]) -> Peer {
        let logdir = dir.path("server");
        let mut cmd = Command::new(bin);
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

    /// A connection to the server, reads bounded by 20 s.
    pub fn connect(&self) -> TcpStream {
        let c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    /// Sends raw bytes on a fresh connection; returns the whole answer
    /// (one response, see [`crate::proxy::read_response`]).
    pub fn raw(&self, request: &[u8]) -> String {
        use std::io::Write;
        let mut c = self.connect();
        let _ = c.write_all(request);
        String::from_utf8_lossy(&crate::proxy::read_response(&mut c)).into_owned()
    }

    /// POSTs an XML-RPC `body` to /cobbler_api; returns the whole answer.
    pub fn post(&self, body: &str) -> String {
        self.raw(
            format!(
                "POST /cobbler_api HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The server process's threads.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .unwrap()
            .count()
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
        crate::sys::signal_group(self.child.id(), crate::sys::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            self.child.try_wait().unwrap().is_some()
        }) {
            crate::sys::signal_group(self.child.id(), crate::sys::SIGKILL);
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
        Agent::start_named(&[agent_bin().as_path()], "127.0.0.1", port, dir, extra)
    }

    /// `argv… --fg --debug --name SYSTEM --server SERVER --port PORT extra…`,
    /// with `argv` naming the agent, perhaps behind a wrapper (`kernelsim
    /// --kernel 2.6.9 -- anamon`, `qemu-s390x anamon`) and the server given
    /// by name or address.
    pub fn start_named(
        argv: &[&Path],
        server: &str,
        port: u16,
        dir: &Scratch,
        extra: &[&str],
    ) -> Agent {
        let log = dir.path(&format!("agent-{}.log", free_port()));
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .args(["--fg", "--debug", "--name", SYSTEM, "--server", server])
            .args(["--port", &port.to_string()])
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

    pub fn signal(&self, sig: crate::sys::Signal) {
        crate::sys::signal(self.child.id(), sig);
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
