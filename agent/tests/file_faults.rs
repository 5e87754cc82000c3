//! What can happen to a watched file while the agent runs, beyond
//! `delivery.rs`: truncation and deletion in the middle of a multi-chunk
//! upload, log rotation with the writer still on the old inode, permissions
//! revoked and restored (the agent as an unprivileged user), a sparse 5 GiB
//! file, a file swapped at run time for a FIFO, a directory, a symlink loop or
//! `/dev/zero`, a file replaced by a symlink to another, and a writer holding
//! exclusive locks. Each is logged, nothing hangs, memory stays bounded, and
//! the server's copy ends byte-identical to the disk.

use anamon_testkit::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(15);

/// The agent's peak resident set (VmHWM) in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn stored_len(peer: &Peer, file: &str) -> u64 {
    std::fs::metadata(peer.logdir.join(SYSTEM).join(file)).map_or(0, |m| m.len())
}

/// Replaces `path` atomically by whatever `make` creates at a temporary name.
fn swap_in(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_extension("swap");
    let _ = std::fs::remove_file(&tmp);
    make(&tmp);
    if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir(path).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn truncated_to_zero_in_the_middle_of_a_multi_chunk_upload() {
    let dir = Scratch::new("trunc-mid");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("packaging.log");
    append(&log, &binary_bytes(3 << 20, 1));
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    assert!(wait_until(LIMIT, || stored_len(&peer, "packaging.log") > 0));
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    append(&log, b"after the truncation, much shorter\n");
    peer.assert_mirrors("packaging.log", &log, LIMIT);
    agent.assert_logs("replaced, truncated or changed in place");
    agent.assert_running();
}

#[test]
fn rewritten_shorter_then_regrown_past_the_old_end() {
    // Same inode, same first bytes, size beyond the cursor again: only the
    // shipped tail tells that the bytes under the cursor changed.
    let dir = Scratch::new("rewrite-short");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("storage.log");
    let first: Vec<u8> = (0..400)
        .flat_map(|i| format!("line {i:04} first\n").into_bytes())
        .collect();
    append(&log, &first);
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("storage.log", &log, LIMIT);
    // Rewrite shorter, keeping a common prefix, in one open(O_TRUNC)+write.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    f.write_all(&first[..first.len() / 3]).unwrap();
    f.write_all(b"REWRITTEN\n").unwrap();
    drop(f);
    peer.assert_mirrors("storage.log", &log, LIMIT);
    // Grow the same inode past the old end, with other bytes there.
    let more: Vec<u8> = (0..600)
        .flat_map(|i| format!("line {i:04} second\n").into_bytes())
        .collect();
    append(&log, &more);
    peer.assert_mirrors("storage.log", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn rotated_away_while_the_writer_keeps_the_old_inode() {
    // logrotate without copytruncate: mv log log.1; a new log appears; the
    // old writer still appends to log.1, which is no longer watched.
    let dir = Scratch::new("rotate");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("syslog");
    let mut old = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    old.write_all(&binary_bytes(700 * 1024, 2)).unwrap();
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    assert!(wait_until(LIMIT, || stored_len(&peer, "syslog") > 0));
    std::fs::rename(&log, dir.path("syslog.1")).unwrap();
    old.write_all(b"to the rotated file\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    append(&log, b"the new syslog\n");
    old.write_all(b"more to the rotated file\n").unwrap();
    peer.assert_mirrors("syslog", &log, LIMIT);
    append(&log, &binary_bytes(300 * 1024, 3));
    peer.assert_mirrors("syslog", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn deleted_in_the_middle_of_an_upload_then_recreated() {
    let dir = Scratch::new("delete-mid");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("program.log");
    let other = dir.path("anaconda.log");
    append(&log, &binary_bytes(3 << 20, 4));
    append(&other, b"other file\n");
    let spec = format!("{} {}", log.display(), other.display());
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    assert!(wait_until(LIMIT, || stored_len(&peer, "program.log") > 0));
    std::fs::remove_file(&log).unwrap();
    agent.assert_logs("program.log: does not exist (yet)");
    // While it is gone, the other file keeps shipping.
    append(&other, b"while program.log is gone\n");
    peer.assert_mirrors("anaconda.log", &other, LIMIT);
    append(&log, b"recreated, new content\n");
    peer.assert_mirrors("program.log", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn permissions_revoked_then_restored_for_an_unprivileged_agent() {
    // Root ignores file modes, so the agent runs as nobody (65534) here.
    let dir = Scratch::new("perms");
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("anaconda.log");
    let other = dir.path("program.log");
    append(&log, b"readable at first\n");
    append(&other, b"always readable\n");
    for f in [&log, &other] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let agent_log = dir.path("agent-nobody.log");
    let spec = format!("{} {}", log.display(), other.display());
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(agent_bin())
        .args(["--fg", "--debug", "--name", SYSTEM, "--server", "127.0.0.1"])
        .args(["--port", &peer.port.to_string(), "--watchfile", &spec])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .expect("setpriv (util-linux) is needed to run the agent unprivileged");
    let mut agent = Agent {
        child,
        log: agent_log,
    };
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o000)).unwrap();
    append(&log, b"written while unreadable\n");
    agent.assert_logs("anaconda.log: cannot be read: Permission denied");
    append(&other, b"still shipped meanwhile\n");
    peer.assert_mirrors("program.log", &other, LIMIT);
    assert_eq!(
        peer.stored("anaconda.log").unwrap(),
        b"readable at first\n",
        "nothing new could have been read"
    );
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_logs("anaconda.log: readable again");
    agent.assert_running();
    let text = agent.log_text();
    assert_eq!(
        text.matches("Permission denied").count(),
        1,
        "logged once, not per look:\n{text}"
    );
}

#[test]
fn sparse_5_gib_file_ships_in_bounded_memory_and_others_keep_flowing() {
    // Shipping all of it would write 5 GiB on the server: this checks the
    // first chunks, the agent's peak memory, and that a small file's lines
    // reach the server while the big one is still being sent (one chunk
    // per file per turn), not after it. How soon they get there is the
    // benches' figure (the replays' crash-dump bursts): a time limit here
    // only measures how loaded the test machine is, and a loaded server's
    // slow answers rightly widen the pace.
    let dir = Scratch::new("sparse");
    let peer = Peer::start(CURRENT, &dir);
    let big = dir.path("anaconda-tb-all.log");
    let small = dir.path("anaconda.log");
    let size = 5u64 << 30;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    append(&small, b"small log\n");
    let spec = format!("{} {}", big.display(), small.display());
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    assert!(
        wait_until(LIMIT, || stored_len(&peer, "anaconda-tb-all.log")
            >= 4 << 20),
        "4 MiB of the sparse file never arrived:\n{}",
        agent.log_text()
    );
    for i in 0..5 {
        append(
            &small,
            format!("line {i} while the big one ships\n").as_bytes(),
        );
        let before = stored_len(&peer, "anaconda-tb-all.log");
        let t = std::time::Instant::now();
        peer.assert_mirrors("anaconda.log", &small, LIMIT);
        let after = stored_len(&peer, "anaconda-tb-all.log");
        eprintln!(
            "sparse: line {i} on the server after {:?}, the big file at {after} B",
            t.elapsed()
        );
        assert!(
            after > before && after < size,
            "the big file did not go on shipping around line {i}: {before} -> {after} B"
        );
    }
    let hwm = vm_hwm_kib(agent.child.id());
    agent.assert_running();
    let stored = peer.stored("anaconda-tb-all.log").unwrap();
    assert!(
        stored.iter().all(|b| *b == 0),
        "the sparse file is all NULs"
    );
    assert!(hwm < 10 * 1024, "agent VmHWM {hwm} KiB >= 10 MiB");
    eprintln!(
        "sparse: agent VmHWM {hwm} KiB after {} bytes shipped",
        stored.len()
    );
}

#[test]
fn swapped_at_run_time_for_special_files_then_back() {
    // A regular file becomes a FIFO, a directory, a symlink loop and a symlink
    // to /dev/zero, then a regular file again: one log line per state, no
    // hang on the FIFO, no endless read of /dev/zero.
    let dir = Scratch::new("swap-special");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("X.log");
    let other = dir.path("anaconda.log");
    append(&log, b"regular at first\n");
    append(&other, b"a\n");
    let spec = format!("{} {}", log.display(), other.display());
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    peer.assert_mirrors("X.log", &log, LIMIT);

    swap_in(&log, sys::mkfifo);
    agent.assert_logs("X.log: is a FIFO, not a regular file");
    // A writer on the FIFO must not make the agent read from it.
    let fifo_writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .unwrap();
    (&fifo_writer).write_all(b"into the fifo\n").unwrap();
    append(&other, b"b\n");
    peer.assert_mirrors("anaconda.log", &other, LIMIT);
    drop(fifo_writer);

    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    append(&other, b"c\n");
    agent.assert_logs("X.log: is a directory, not a regular file");

    std::fs::remove_dir(&log).unwrap();
    std::os::unix::fs::symlink(&log, &log).unwrap();
    append(&other, b"d\n");
    agent.assert_logs("X.log: cannot be read");

    swap_in(&log, |t| {
        std::os::unix::fs::symlink("/dev/zero", t).unwrap()
    });
    append(&other, b"e\n");
    agent.assert_logs("X.log: is a character device, not a regular file");
    peer.assert_mirrors("anaconda.log", &other, LIMIT);

    swap_in(&log, |t| std::fs::write(t, b"regular again\n").unwrap());
    peer.assert_mirrors("X.log", &log, LIMIT);
    agent.assert_running();
    assert!(vm_hwm_kib(agent.child.id()) < 10 * 1024);
}

#[test]
fn replaced_by_a_symlink_to_another_file() {
    // Renaming a symlink over the log: the agent follows it and ships the
    // target's bytes under the log's name. An event wakes the agent, since
    // the rename happens in the watched directory.
    let dir = Scratch::new("symlink-swap");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("ks-script.log");
    let target = dir.path("real-ks-script.log");
    append(&log, b"the original, longer than the target\n");
    append(&target, b"the target\n");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("ks-script.log", &log, LIMIT);
    swap_in(&log, |t| std::os::unix::fs::symlink(&target, t).unwrap());
    peer.assert_mirrors("ks-script.log", &target, LIMIT);
    agent.assert_logs("replaced, truncated or changed in place");
    // Appends to the target reach the server once something wakes the agent
    // (here: a touch of the link's own name). See the bench README: events
    // on the target alone do not.
    append(&target, b"appended to the target\n");
    swap_in(&log, |t| std::os::unix::fs::symlink(&target, t).unwrap());
    peer.assert_mirrors("ks-script.log", &target, LIMIT);
    agent.assert_running();
}

/// A watched path that is a symlink: inotify reports writes under the
/// target's name, in the target's directory, which the agent must watch too.
#[test]
fn appends_to_a_symlink_target_are_shipped() {
    let dir = Scratch::new("symlink-target");
    let peer = Peer::start(CURRENT, &dir);
    std::fs::create_dir(dir.path("real")).unwrap();
    let target = dir.path("real/anaconda.log");
    let log = dir.path("anaconda.log");
    append(&target, b"first\n");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("anaconda.log", &target, LIMIT);
    append(&target, b"appended to the target\n");
    peer.assert_mirrors("anaconda.log", &target, Duration::from_secs(5));
    agent.assert_running();
}

#[test]
fn writer_holding_exclusive_locks() {
    // flock(LOCK_EX) and a POSIX write lock over the whole file are advisory
    // on Linux (mandatory locking is gone since 5.15): the agent neither
    // waits on them nor fails.
    let dir = Scratch::new("locked");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("ks-pre.log");
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut f = file.try_clone().unwrap();
    let _locks = sys::lock_both_ways(file);
    f.write_all(b"written under an exclusive lock\n").unwrap();
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("ks-pre.log", &log, LIMIT);
    for i in 0..20 {
        f.write_all(format!("still locked {i}\n").as_bytes())
            .unwrap();
    }
    peer.assert_mirrors("ks-pre.log", &log, LIMIT);
    agent.assert_running();
    let text = agent.log_text();
    assert!(!text.contains("cannot be read"), "{text}");
}
