//! How the agent ends, and what it leaves alone: a shutdown signal at any
//! moment ends it within the grace period even against a server that
//! hangs; its abort touches only its own connection, never one the
//! installer shares with it; and its pid file goes with it.

use anamon_testkit::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// RHEL 4/5's loader sends SIGKILL 2 s after SIGTERM; the agent must be
/// gone by then. Its own grace period is 1 s (`SHUTDOWN_GRACE`); the rest is
/// what a loaded machine takes to run it and this test: with the VM lane's
/// qemu beside `cargo test`, CI once measured 1.53 s from the signal to the
/// exit seen here (every other trial 1.03-1.05 s).
const EXIT_WITHIN: Duration = Duration::from_millis(2000);

/// A parent like Anaconda's Python 2 `%pre` runner: it holds a live TCP
/// connection as descriptor 5, inheritable, starts the agent (which
/// inherits it), reports the agent's pid, and on "check" sends a ping over
/// the connection and prints what comes back.
const PARENT: &str = r#"
import os, socket, subprocess, sys, time
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
os.dup2(conn.fileno(), 5)
os.set_inheritable(5, True)
detached = sys.argv[2] == "detached"
pidfile = sys.argv[3]
agent = subprocess.Popen(sys.argv[4:], close_fds=False, stdin=subprocess.DEVNULL)
if detached:
    agent.wait()
    while not os.path.exists(pidfile) or not open(pidfile).read().endswith("\n"):
        time.sleep(0.01)
    pid = int(open(pidfile).read())
else:
    pid = agent.pid
print(pid, flush=True)
sys.stdin.readline()
s = socket.socket(fileno=os.dup(5))
s.settimeout(5)
try:
    s.sendall(b"ping")
    print("got", s.recv(16).decode(), flush=True)
except OSError as e:
    print("broken", e, flush=True)
if not detached:
    agent.wait()
"#;

fn an_inherited_connection_survives(detach: bool) {
    let dir = Scratch::new("inherited");
    // The installer's peer on the shared connection: echoes what it gets.
    let echo = Listener::start(|mut c, _, _| {
        let mut buf = [0u8; 16];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let hung = FaultProxy::start(free_port(), always(Act::Hang));
    let log = dir.path("anaconda.log");
    append(&log, b"pending when the signal comes\n");
    let script = dir.path("parent.py");
    std::fs::write(&script, PARENT).unwrap();
    let pidfile = dir.path("anamon.pid");
    let agent_log = dir.path("agent.log");
    let port = hung.port.to_string();
    let mut argv = vec![
        agent_bin().to_str().unwrap().to_string(),
        "--name".into(),
        SYSTEM.into(),
        "--server".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port,
        "--watchfile".into(),
        log.to_str().unwrap().into(),
        "--pidfile".into(),
        pidfile.to_str().unwrap().into(),
        "--log".into(),
        agent_log.to_str().unwrap().into(),
    ];
    if !detach {
        argv.push("--fg".into());
    }
    let mut parent = Command::new("python3")
        .arg(&script)
        .arg(echo.port.to_string())
        .arg(if detach { "detached" } else { "foreground" })
        .arg(&pidfile)
        .args(&argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid: u32 = line
        .trim()
        .parse()
        .expect("the parent reports the agent's pid");
    // The agent's request hangs at the server.
    assert!(
        wait_until(Duration::from_secs(10), || hung.connections() >= 1),
        "the agent never connected"
    );
    // daemon(7): nothing of the caller's stays open in the agent.
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count();
    assert_eq!(
        sockets, 1,
        "the agent holds sockets besides its own request"
    );
    let t = Instant::now();
    sys::signal(pid, sys::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || !is_running(pid)),
        "the agent did not exit"
    );
    assert!(t.elapsed() < EXIT_WITHIN, "took {:?}", t.elapsed());
    parent
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"check\n")
        .unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "got ping",
        "the installer's connection was cut"
    );
    let _ = parent.wait();
    let text = std::fs::read_to_string(&agent_log).unwrap();
    assert!(text.contains("shutting down"), "{text}");
}

/// Alive and not a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn an_inherited_connection_survives_a_detached_agent() {
    an_inherited_connection_survives(true);
}

#[test]
fn an_inherited_connection_survives_an_agent_in_the_foreground() {
    an_inherited_connection_survives(false);
}

/// A signal can fall anywhere: before a request is registered for the
/// abort, while the next chunk is read and encoded, between the two
/// requests of the wire-form fallback, in the middle of one. A backlog of
/// many chunks puts the agent in each of those places often; at a
/// different moment each time the server starts hanging and the signal
/// comes. Every time the agent must be gone within the grace period, and
/// what the server had answered must be intact.
#[test]
fn sigterm_at_any_moment_against_a_hanging_server_exits_in_time() {
    let dir = Scratch::new("sigterm-race");
    let peer = Peer::start("4.0.0b7", &dir);
    let mut slow = Vec::new();
    for trial in 0..12u64 {
        let proxy = FaultProxy::start(peer.port, always(Act::Pass));
        let name = format!("trial{trial}.log");
        let log = dir.path(&name);
        append(&log, &binary_bytes(4 << 20, trial as u32));
        let mut agent = Agent::start(proxy.port, &dir, &["--watchfile", log.to_str().unwrap()]);
        // A different moment each trial: after 1 to 12 requests.
        let after = 1 + trial;
        assert!(wait_until(Duration::from_secs(20), || proxy.connections() >= after));
        proxy.set(always(Act::Hang));
        let t = Instant::now();
        agent.signal(sys::SIGTERM);
        let code = agent.wait_exit(Duration::from_secs(25));
        let took = t.elapsed();
        assert_eq!(code, Some(0), "trial {trial}:\n{}", agent.log_text());
        eprintln!("trial {trial}: exit after {took:?}");
        if took >= EXIT_WITHIN {
            slow.push(format!("trial {trial}: {took:?}\n{}", agent.log_text()));
        }
        let stored = peer.stored(&name).unwrap_or_default();
        let disk = std::fs::read(&log).unwrap();
        assert!(
            disk.starts_with(&stored),
            "trial {trial}: the server's {} bytes are not the file's first bytes",
            stored.len()
        );
        std::fs::remove_file(&log).unwrap();
    }
    assert!(
        slow.is_empty(),
        "exits after the loader's SIGKILL would have come:\n{}",
        slow.join("\n")
    );
}

/// Every way out removes the pid file, including failing to start: with
/// four descriptors allowed, the pid file is written and then the wake-up
/// pipe cannot be made.
#[test]
fn the_pid_file_goes_on_every_way_out() {
    let dir = Scratch::new("pidfile");
    let pidfile = dir.path("anamon.pid");
    let log = dir.path("x.log");
    append(&log, b"x\n");
    let status = Command::new("prlimit")
        .arg("--nofile=4")
        .arg("--")
        .arg(agent_bin())
        .args([
            "--fg",
            "--name",
            SYSTEM,
            "--server",
            "127.0.0.1",
            "--port",
            "9",
            "--watchfile",
        ])
        .arg(&log)
        .arg("--pidfile")
        .arg(&pidfile)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot set up signal handling"), "{text}");
    assert!(!pidfile.exists(), "pid file left behind");
}

/// `--exit` promises status 0 only when the server has everything: stopped
/// by SIGTERM with data still unshipped (the server hangs), it exits 1.
#[test]
fn exit_mode_stopped_by_sigterm_with_data_left_exits_1() {
    let dir = Scratch::new("exit-sigterm");
    let hung = FaultProxy::start(free_port(), always(Act::Hang));
    let log = dir.path("boot.log");
    append(&log, b"never shipped\n");
    let mut agent = Agent::start(
        hung.port,
        &dir,
        &["--exit", "--watchfile", log.to_str().unwrap()],
    );
    assert!(wait_until(Duration::from_secs(10), || hung.connections() >= 1));
    agent.signal(sys::SIGTERM);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(5)),
        Some(1),
        "{}",
        agent.log_text()
    );
}
