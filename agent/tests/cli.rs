//! The command line and detaching, driven through the real binary.

use anamon_testkit::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_command_lines_are_one_line_errors_with_status_2() {
    for args in [
        &["--server", "s"][..],
        &["--name", "n"],
        &["--name", "n", "--server", "s", "--frobnicate"],
        &["--name", "n", "--server", "s", "--port"],
        &["--name", "n", "--server", "s", "--port", "99999"],
        &["--name", "../../etc", "--server", "s"],
        &["--name", "n", "--server", "s", "--wire", "json"],
        &["--name", "n", "--server", "s", "stray"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed on stdout: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("anamon: "), "{err}");
    }
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--name",
        "--server",
        "--port",
        "--watchfile",
        "--exit",
        "--fg",
        "--debug",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("anamon {}\n", env!("CARGO_PKG_VERSION")));
}

/// Without `--fg` the agent detaches: the command returns at once, the
/// caller's stdout/stderr are released (a `%pre` reading them sees EOF), and
/// the daemon goes on shipping, in its own session, until SIGTERM.
#[test]
fn detaches_like_a_daemon_should() {
    let dir = Scratch::new("daemon");
    let peer = Peer::start("4.0.0b7", &dir);
    let log = dir.path("anaconda.log");
    append(&log, b"from the daemon\n");
    let pidfile = dir.path("anamon.pid");
    let agent_log = dir.path("agent.log");
    let t = Instant::now();
    let mut child = Command::new(agent_bin())
        .args([
            "--name",
            SYSTEM,
            "--server",
            "127.0.0.1",
            "--port",
            &peer.port.to_string(),
            "--watchfile",
        ])
        .arg(&log)
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--log")
        .arg(&agent_log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // EOF on both pipes proves no process holds them any more.
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));

    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    }));
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (sid, pgid) = sys::session_and_group(pid);
    assert_ne!(
        sid,
        sys::session_and_group(0).0,
        "daemon still in our session"
    );
    assert_ne!(
        sid, pid as i32,
        "daemon is a session leader and could acquire a terminal"
    );
    assert!(pgid > 0);
    let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(fd0, std::path::Path::new("/dev/null"));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        std::path::Path::new("/")
    );

    peer.assert_mirrors("anaconda.log", &log, Duration::from_secs(20));
    append(&log, b"more\n");
    peer.assert_mirrors("anaconda.log", &log, Duration::from_secs(20));
    sys::signal(pid, sys::SIGTERM);
    assert!(wait_until(
        Duration::from_secs(5),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    ));
    assert!(!pidfile.exists(), "pid file left behind");
    let text = std::fs::read_to_string(&agent_log).unwrap();
    assert!(text.contains("shutting down: everything shipped"), "{text}");
}
