//! The static release agents under simulated old kernels (ci/kernelsim: a
//! seccomp filter that refuses every syscall newer than the kernel named),
//! and the foreign-architecture builds under qemu-user, each against the
//! real Cobbler peer: byte-identical delivery through a rewrite and a server
//! restart, and no spinning while idle. The qemu-user runs name the server
//! `localhost`, so each architecture's musl resolves a host name
//! (/etc/hosts) rather than parsing an address.
//!
//! These need the release builds (`make agents`, which `ci/test` runs).

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

/// Runs `prefix… agent --fg …` against the peer, naming it `server`: a
/// growing file with binary content, a rewrite in place, a server restart;
/// then checks idle CPU. Returns the agent's log.
fn ship_through_restart(prefix: &[&Path], agent: &Path, server: &str, tag: &str) -> String {
    let dir = Scratch::new(tag);
    let mut peer = Peer::start(CURRENT, &dir);
    let port = peer.port;
    let log = dir.path("anaconda.log");
    append(&log, b"old kernel, first line\n");
    let mut argv: Vec<&Path> = prefix.to_vec();
    argv.push(agent);
    let watch = ["--watchfile", log.to_str().unwrap()];
    let mut agent = Agent::start_named(&argv, server, port, &dir, &watch);
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
        "127.0.0.1",
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

#[test]
fn i586_on_2_6_9() {
    under_kernel("2.6.9", "i586-unknown-linux-musl");
}
#[test]
fn i586_on_2_6_18() {
    under_kernel("2.6.18", "i586-unknown-linux-musl");
}
#[test]
fn i586_on_2_6_32() {
    under_kernel("2.6.32", "i586-unknown-linux-musl");
}

/// `qemu-ARCH-static` plus its flags, checked to be installed.
fn qemu(arch: &str, flags: &[&'static str]) -> Vec<PathBuf> {
    let qemu = PathBuf::from(format!("/usr/bin/qemu-{arch}-static"));
    assert!(
        qemu.exists(),
        "{} is missing: qemu-user-static is not installed (ci/setup installs it)",
        qemu.display()
    );
    let mut argv = vec![qemu];
    argv.extend(flags.iter().map(PathBuf::from));
    argv
}

/// `target`'s agent under `qemu-ARCH-static flags…`, against the peer.
fn under_qemu(arch: &str, flags: &[&'static str], target: &str) {
    let agent = release_agent(target);
    let argv = qemu(arch, flags);
    let prefix: Vec<&Path> = argv.iter().map(PathBuf::as_path).collect();
    let text = ship_through_restart(&prefix, &agent, "localhost", target);
    assert!(text.contains("shipping 1 files"), "{text}");
}

#[test]
fn aarch64_under_qemu_user() {
    under_qemu("aarch64", &[], "aarch64-unknown-linux-musl");
}

/// POWER8 is RHEL 7's minimum for ppc64le (and qemu refuses a POWER9-only
/// instruction on it, as a POWER7 refuses this build: see the README).
#[test]
fn ppc64le_under_qemu_user_power8() {
    under_qemu(
        "ppc64le",
        &["-cpu", "power8"],
        "powerpc64le-unknown-linux-musl",
    );
}

/// Big-endian POWER7, the oldest CPU RHEL 7 supports on ppc64.
#[test]
fn ppc64_under_qemu_user_power7() {
    under_qemu("ppc64", &["-cpu", "power7"], "powerpc64-unknown-linux-musl");
}

#[test]
fn s390x_under_qemu_user() {
    under_qemu("s390x", &[], "s390x-unknown-linux-musl");
}

/// A Pentium (P5): no cmov (i686) and no SSE/SSE2, which qemu's model
/// refuses as the CPU would.
#[test]
fn i586_under_qemu_user_pentium() {
    under_qemu("i386", &["-cpu", "pentium"], "i586-unknown-linux-musl");
}

/// The control for the test above: the i686 build does use SSE2 and cmov,
/// and the same CPU model kills it with SIGILL (so a passing i586 run means
/// the build avoids them, not that qemu lets them through).
#[test]
fn i686_build_faults_on_a_pentium() {
    use std::os::unix::process::ExitStatusExt;
    let agent = release_agent("i686-unknown-linux-musl");
    let argv = qemu("i386", &["-cpu", "pentium"]);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .arg(&agent)
        .arg("--version")
        .output()
        .unwrap();
    // qemu-user reports the guest's SIGILL by dying of it.
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGILL),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
