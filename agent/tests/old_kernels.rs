//! The static release agents under simulated old kernels (ci/kernelsim: a
//! seccomp filter that refuses every syscall newer than the kernel named),
//! and the foreign-architecture builds under qemu-user, each against the
//! real Cobbler peer: byte-identical delivery through a rewrite and a server
//! restart, and no spinning while idle.
//!
//! These need the release builds (`ci/test` makes them):
//!   cargo build --release --target x86_64-unknown-linux-musl -p anamon
//!   cargo build --release --target i686-unknown-linux-musl -p anamon

use anamon_testkit::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(30);

fn release_agent(target: &str) -> PathBuf {
    let p = repo_root()
        .join("target")
        .join(target)
        .join("release/anamon");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release --target {target} -p anamon` (ci/test does)",
        p.display()
    );
    p
}

/// ci/kernelsim, built on first use.
fn kernelsim() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let bin = repo_root().join("target/kernelsim/kernelsim");
    BUILD.call_once(|| {
        let st = Command::new(repo_root().join("ci/kernelsim/build"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ci/kernelsim/build failed");
    });
    bin
}

/// utime + stime of `pid`, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after_comm` starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Runs `prefix… agent --fg …` against the peer: a growing file with binary
/// content, a rewrite in place, a server restart; then checks idle CPU.
/// Returns the agent's log.
fn ship_through_restart(prefix: &[&Path], agent: &Path, tag: &str) -> String {
    let dir = Scratch::new(tag);
    let mut peer = Peer::start(CURRENT, &dir);
    let port = peer.port;
    let log = dir.path("anaconda.log");
    append(&log, b"old kernel, first line\n");
    let mut argv: Vec<&Path> = prefix.to_vec();
    argv.push(agent);
    let mut agent = Agent::start_as(&argv, port, &dir, &["--watchfile", log.to_str().unwrap()]);
    let fail = |agent: &Agent, what: &str| -> ! { panic!("{tag}: {what}\n{}", agent.log_text()) };

    if !peer.wait_for("anaconda.log", &std::fs::read(&log).unwrap(), LIMIT) {
        fail(&agent, "first line never arrived");
    }
    append(&log, &binary_bytes(300 * 1024, 21));
    if !peer.wait_for("anaconda.log", &std::fs::read(&log).unwrap(), LIMIT) {
        fail(&agent, "growth never arrived");
    }
    std::fs::write(
        &log,
        b"rewritten in place, and now longer than a single line was\n",
    )
    .unwrap();
    if !peer.wait_for("anaconda.log", &std::fs::read(&log).unwrap(), LIMIT) {
        fail(&agent, "rewrite never arrived");
    }
    peer.stop();
    append(&log, b"written while the server restarts\n");
    std::thread::sleep(Duration::from_millis(700));
    let peer = Peer::start_on(CURRENT, &dir, port);
    if !peer.wait_for("anaconda.log", &std::fs::read(&log).unwrap(), LIMIT) {
        fail(&agent, "data written during the restart never arrived");
    }
    if agent.child.try_wait().unwrap().is_some() {
        fail(&agent, "agent exited");
    }

    // Idle: nothing changes for 3 s. A spinning futex wait or a busy poll
    // would burn ~300 ticks; polling once a second costs well under one.
    // (Under qemu-user every wake-up is emulated and dearer, hence the slack.)
    let pid = agent.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let idle = cpu_ticks(pid) - before;
    let limit = if prefix.is_empty() { 3 } else { 10 };
    if idle > limit {
        fail(&agent, &format!("used {idle} CPU ticks in 3 idle seconds"));
    }
    agent.log_text()
}

fn under_kernel(kernel: &str, target: &str) {
    let sim = kernelsim();
    let agent = release_agent(target);
    let kernel_arg = format!("--kernel={kernel}");
    let tag = format!("{kernel}-{target}");
    let text = ship_through_restart(
        &[&sim, Path::new(&kernel_arg), Path::new("--")],
        &agent,
        &tag,
    );
    // Before 2.6.27 notify's inotify backend cannot start: the agent says so
    // once and polls from its single thread.
    let old = matches!(kernel, "2.6.9" | "2.6.18");
    assert_eq!(
        text.contains("polling every 1 s (inotify is unavailable"),
        old,
        "{tag}:\n{text}"
    );
    assert_eq!(
        text.contains("file events from inotify"),
        !old,
        "{tag}:\n{text}"
    );
}

#[test]
fn x86_64_on_2_6_9() {
    under_kernel("2.6.9", "x86_64-unknown-linux-musl");
}
#[test]
fn x86_64_on_2_6_18() {
    under_kernel("2.6.18", "x86_64-unknown-linux-musl");
}
#[test]
fn x86_64_on_2_6_32() {
    under_kernel("2.6.32", "x86_64-unknown-linux-musl");
}
#[test]
fn x86_64_on_3_10() {
    under_kernel("3.10", "x86_64-unknown-linux-musl");
}
#[test]
fn i686_on_2_6_9() {
    under_kernel("2.6.9", "i686-unknown-linux-musl");
}
#[test]
fn i686_on_2_6_18() {
    under_kernel("2.6.18", "i686-unknown-linux-musl");
}
#[test]
fn i686_on_2_6_32() {
    under_kernel("2.6.32", "i686-unknown-linux-musl");
}
#[test]
fn i686_on_3_10() {
    under_kernel("3.10", "i686-unknown-linux-musl");
}

/// aarch64 under qemu-user (`qemu-aarch64-static`).
#[test]
fn aarch64_under_qemu_user() {
    let agent = release_agent("aarch64-unknown-linux-musl");
    let qemu = Path::new("/usr/bin/qemu-aarch64-static");
    assert!(
        qemu.exists(),
        "qemu-user-static is not installed (ci/setup installs it)"
    );
    let text = ship_through_restart(&[qemu], &agent, "aarch64");
    assert!(text.contains("shipping 1 files"), "{text}");
}
