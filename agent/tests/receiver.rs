//! The agent against anamon-receiver's own features: token, allow-list,
//! caps, a full disk, a receiver killed mid-stream, the Python client, the
//! path setting and the session log. (The whole agent suite also runs
//! against the receiver with ANAMON_PEER=receiver; see ci/test.)

use anamon_testkit::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn watch(path: &std::path::Path) -> [&str; 2] {
    ["--watchfile", path.to_str().unwrap()]
}

fn receiver_log(dir: &Scratch) -> String {
    std::fs::read_to_string(dir.path("receiver.log")).unwrap_or_default()
}

#[test]
fn token_is_required_and_checked() {
    let dir = Scratch::new("token");
    std::fs::write(dir.path("token"), "s3cret-token\n").unwrap();
    let token_file = dir.path("token");
    let peer = Peer::receiver(&dir, &["--token-file", token_file.to_str().unwrap()]);
    let log = dir.path("anaconda.log");
    append(&log, b"secret install log\n");
    let [w, p] = watch(&log);
    let none = Agent::start(peer.port, &dir, &[w, p]);
    none.assert_logs("needs a token");
    let wrong = Agent::start(peer.port, &dir, &[w, p, "--token", "guess"]);
    wrong.assert_logs("wrong token");
    assert_eq!(peer.stored("anaconda.log"), None);
    drop(none);
    drop(wrong);
    let mut right = Agent::start(peer.port, &dir, &[w, p, "--token", "s3cret-token"]);
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    append(&log, &binary_bytes(5000, 3));
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    right.assert_running();
}

#[test]
fn a_token_is_accepted_and_ignored_by_cobbler() {
    // Cobbler's upload_log_data(..., token=None): the same agent flags work
    // against either server.
    let dir = Scratch::new("token-cobbler");
    let peer = Peer::start("4.0.0b7", &dir);
    let log = dir.path("anaconda.log");
    append(&log, b"line\n");
    let [w, p] = watch(&log);
    let mut agent = Agent::start(peer.port, &dir, &[w, p, "--token", "s3cret-token"]);
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn allow_list_refuses_other_systems_with_a_reason() {
    let dir = Scratch::new("allow");
    let peer = Peer::receiver(&dir, &["--allow", "web01", "--allow", "web02"]);
    let log = dir.path("anaconda.log");
    append(&log, b"from an unknown machine\n");
    // Agent::start names the system "testsys", which is not on the list.
    let mut agent = Agent::start(peer.port, &dir, &watch(&log));
    agent.assert_logs("not on this receiver's allow-list");
    agent.assert_running();
    assert!(!peer.logdir.join(SYSTEM).exists());
}

#[test]
fn caps_answer_faults_and_the_receiver_keeps_serving() {
    let dir = Scratch::new("caps");
    let peer = Peer::receiver(
        &dir,
        &["--max-file-size", "64K", "--max-system-size", "80K"],
    );
    let big = dir.path("big.log");
    let small = dir.path("small.log");
    let other = dir.path("other.log");
    append(&big, &binary_bytes(80 * 1024, 1));
    append(&small, &binary_bytes(30 * 1024, 2));
    let spec = format!("{} {}", big.display(), small.display());
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    agent.assert_logs("over this receiver's cap of 65536 bytes per file");
    peer.assert_mirrors("small.log", &small, LIMIT);
    assert_eq!(peer.stored("big.log"), None);
    // The system cap: 30 KiB stored, 60 more would pass 80 KiB.
    append(&other, &binary_bytes(60 * 1024, 3));
    let mut second = Agent::start(peer.port, &dir, &watch(&other));
    second.assert_logs("bytes per system");
    // Still serving: the small file keeps flowing.
    append(&small, b"more\n");
    peer.assert_mirrors("small.log", &small, LIMIT);
    agent.assert_running();
    second.assert_running();
}

#[test]
fn a_file_held_back_by_faults_does_not_delay_the_others() {
    // big.log is over the file cap, so the receiver faults on it and the
    // agent retries it alone with a growing backoff. Writes to small.log
    // meanwhile must ship at once, not wait for big.log's next retry.
    let dir = Scratch::new("held");
    let peer = Peer::receiver(&dir, &["--max-file-size", "16K"]);
    let big = dir.path("big.log");
    let small = dir.path("small.log");
    append(&big, &binary_bytes(20 * 1024, 1));
    append(&small, b"first line\n");
    let spec = format!("{} {}", big.display(), small.display());
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    peer.assert_mirrors("small.log", &small, LIMIT);
    let retries = || {
        agent
            .log_text()
            .matches("upload of big.log failed again")
            .count()
    };
    // After three retries the next one is 2 to 4 s away.
    assert!(
        wait_until(LIMIT, || retries() >= 3),
        "big.log was not retried:\n{}",
        agent.log_text()
    );
    let before = retries();
    append(&small, b"written while big.log is held back\n");
    peer.assert_mirrors("small.log", &small, LIMIT);
    assert_eq!(
        retries(),
        before,
        "small.log waited for big.log's retry:\n{}",
        agent.log_text()
    );
    assert_eq!(peer.stored("big.log"), None);
    agent.assert_running();
}

#[test]
fn a_full_disk_never_reports_a_chunk_stored_and_nothing_is_lost() {
    // The log directory is a 512 KiB tmpfs in the receiver's own mount
    // namespace, nearly filled; the test reaches it through /proc/PID/root.
    // The receiver keeps no floor of free space here (--min-free-space 0):
    // this is the disk filling between its check and its write, or a
    // receiver told to use it all.
    let dir = Scratch::new("enospc");
    let logdir = dir.path("server");
    std::fs::create_dir_all(&logdir).unwrap();
    let port_file = dir.path("port");
    let script = format!(
        "mount -t tmpfs -o size=512k tmpfs {d} && head -c 400000 /dev/zero > {d}/filler && exec {bin} --listen 127.0.0.1:0 --dir {d} --port-file {pf} --min-free-space 0",
        d = logdir.display(),
        bin = receiver_bin().display(),
        pf = port_file.display()
    );
    let mut server = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stderr(std::fs::File::create(dir.path("receiver.log")).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || port_file.exists()),
        "receiver did not start"
    );
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let inside =
        std::path::PathBuf::from(format!("/proc/{}/root{}", server.id(), logdir.display()));

    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(300 * 1024, 7));
    let mut agent = Agent::start(port, &dir, &watch(&log));
    agent.assert_logs("No space left on device");
    // Whatever is on disk is a prefix of the real file: never garbage.
    let want = std::fs::read(&log).unwrap();
    if let Ok(partial) = std::fs::read(inside.join(SYSTEM).join("anaconda.log")) {
        assert!(want.starts_with(&partial[..partial.len().min(want.len())]));
    }
    // Space comes back: the agent's retries complete the copy.
    std::fs::remove_file(inside.join("filler")).unwrap();
    let stored = inside.join(SYSTEM).join("anaconda.log");
    assert!(
        wait_until(Duration::from_secs(40), || std::fs::read(&stored).ok()
            == Some(want.clone())),
        "copy never completed after space returned:\n{}",
        agent.log_text()
    );
    agent.assert_running();
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn receiver_killed_mid_stream_and_restarted_loses_nothing() {
    let dir = Scratch::new("crash");
    let mut peer = Peer::receiver(&dir, &[]);
    let port = peer.port;
    let log = dir.path("anaconda.log");
    append(&log, b"start\n");
    let mut agent = Agent::start(port, &dir, &watch(&log));
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..300u32 {
                append(&log, &binary_bytes(2000 + i as usize, i));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    // SIGKILL: no chance to finish a write or say goodbye.
    sys::signal_group(peer.child_id(), sys::SIGKILL);
    peer.stop();
    std::thread::sleep(Duration::from_millis(800));
    let restarted = Peer::receiver_on(&dir, port, &[]);
    writer.join().unwrap();
    restarted.assert_mirrors("anaconda.log", &log, Duration::from_secs(60));
    agent.assert_running();
}

#[test]
fn python_anamon_from_cobbler_3_3_10_ships_to_the_receiver() {
    let dir = Scratch::new("python");
    let peer = Peer::receiver(&dir, &[]);
    let log = dir.path("anaconda.log");
    append(&log, b"python client\n");
    append(&log, &binary_bytes(300 * 1024, 5)); // two of its 256 KiB chunks
    let status = Command::new(repo_root().join("ci/peer/python-anamon"))
        .args([
            "--name",
            SYSTEM,
            "--server",
            "127.0.0.1",
            "--port",
            &peer.port.to_string(),
        ])
        .args(["--watchfile", log.to_str().unwrap(), "--exit", "--fg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "python anamon failed: {status}");
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
}

#[test]
fn path_setting_and_wrong_paths() {
    let dir = Scratch::new("path");
    let peer = Peer::receiver(&dir, &[]);
    let log = dir.path("anaconda.log");
    append(&log, b"via /RPC2\n");
    let [w, p] = watch(&log);
    let wrong = Agent::start(peer.port, &dir, &[w, p, "--path", "/nowhere"]);
    wrong.assert_logs("404");
    assert_eq!(peer.stored("anaconda.log"), None);
    drop(wrong);
    let mut agent = Agent::start(peer.port, &dir, &[w, p, "--path", "/RPC2"]);
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
}

#[test]
fn one_log_line_per_upload_session_and_a_clean_stop() {
    let dir = Scratch::new("sessions");
    // Longer than the agent's pace (1.9 s), so one burst is one session.
    let mut peer = Peer::receiver(&dir, &["--session-idle", "3"]);
    let log = dir.path("anaconda.log");
    append(&log, b"first\n");
    let mut agent = Agent::start(peer.port, &dir, &watch(&log));
    for i in 0..20 {
        append(&log, format!("line {i}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    let size = std::fs::metadata(&log).unwrap().len();
    let line = format!("{SYSTEM}/anaconda.log from 127.0.0.1: {size} bytes in");
    assert!(
        wait_until(Duration::from_secs(10), || receiver_log(&dir)
            .contains(&line)),
        "no session line {line:?}:\n{}",
        receiver_log(&dir)
    );
    // A second session after a pause, ended by SIGTERM: its line too.
    append(&log, b"after a pause\n");
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
    sys::signal_group(peer.child_id(), sys::SIGTERM);
    assert_eq!(peer.wait_exit(Duration::from_secs(5)), Some(0));
    let text = receiver_log(&dir);
    assert_eq!(
        text.matches(&format!("{SYSTEM}/anaconda.log from")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("stopping on signal"), "{text}");
}

/// Cobbler 3.3.x refuses every upload as shipped; with anamon-receiver
/// beside it at /anamon_api (its Apache snippet), the agent started with
/// Cobbler's defaults finds it and ships there, saying so once.
#[test]
fn a_refusing_cobbler_3_3_hands_over_to_the_receiver_beside_it() {
    let cobbler_dir = Scratch::new("handover-cobbler");
    let dir = Scratch::new("handover");
    let cobbler = Peer::start("3.3.10", &cobbler_dir);
    let receiver = Peer::receiver(&dir, &[]);
    let apache = Router::start(cobbler.port, receiver.port);
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(300 * 1024, 9));
    let [w, p] = watch(&log);
    let mut agent = Agent::start(apache.port, &dir, &[w, p]);
    receiver.assert_mirrors("anaconda.log", &log, LIMIT);
    append(&log, b"after the handover\n");
    receiver.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
    let text = agent.log_text();
    assert_eq!(
        text.matches("uploads now go to /anamon_api").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("Cobbler 3.3.10 refuses every anamon upload"),
        "{text}"
    );
    assert_eq!(cobbler.stored("anaconda.log"), None);
}

/// `--path` always wins: no handover, the refusal is explained and
/// retried, and the receiver gets nothing.
#[test]
fn an_explicit_path_is_never_left_for_the_receiver() {
    let cobbler_dir = Scratch::new("given-path-cobbler");
    let dir = Scratch::new("given-path");
    let cobbler = Peer::start("3.3.10", &cobbler_dir);
    let receiver = Peer::receiver(&dir, &[]);
    let apache = Router::start(cobbler.port, receiver.port);
    let log = dir.path("anaconda.log");
    append(&log, b"stays on disk\n");
    let [w, p] = watch(&log);
    let mut agent = Agent::start(apache.port, &dir, &[w, p, "--path", "/cobbler_api"]);
    agent.assert_logs("run anamon-receiver beside it");
    std::thread::sleep(Duration::from_secs(2));
    agent.assert_running();
    assert!(!agent.log_text().contains("uploads now go to"));
    assert_eq!(receiver.stored("anaconda.log"), None);
}

/// A loopback TCP relay to `upstream` that counts the connections it
/// accepted: what the agent's keep-alive saves, seen from outside.
fn counting_relay(upstream: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (port, accepted)
}

#[test]
fn uploads_of_an_install_share_one_connection() {
    // anamon-receiver keeps an idle connection for 10 s; lines 2.5 s apart
    // (a quiet file's pace, longer than the 2 s the agent once kept a
    // connection) all go on the first one.
    let dir = Scratch::new("keep-alive");
    let peer = Peer::receiver(&dir, &[]);
    let (relay, accepted) = counting_relay(peer.port);
    let log = dir.path("program.log");
    append(&log, b"line 0\n");
    let mut agent = Agent::start(relay, &dir, &watch(&log));
    peer.assert_mirrors("program.log", &log, LIMIT);
    for n in 1..4 {
        std::thread::sleep(Duration::from_millis(2500));
        append(&log, format!("line {n}\n").as_bytes());
        peer.assert_mirrors("program.log", &log, LIMIT);
    }
    agent.assert_running();
    // The receiver writes a call's log line after it has stored the bytes
    // assert_mirrors saw: wait for the line, do not race it.
    let waited = std::time::Instant::now();
    while peer.upload_calls() < 4 && waited.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let uploads = peer.upload_calls();
    assert!(uploads >= 4, "{uploads} uploads");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "connections for {uploads} uploads"
    );
}
