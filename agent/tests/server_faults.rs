//! A server that is down, restarts, faults, answers HTML or hangs: the agent
//! keeps the bytes, retries with backoff, and the server's copy ends
//! byte-identical to the disk.

use anamon_testkit::*;
use std::time::{Duration, Instant};

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn server_down_at_start_then_up() {
    let dir = Scratch::new("down-up");
    let port = free_port();
    let log = dir.path("anaconda.log");
    append(&log, b"written before the server exists\n");
    let mut agent = Agent::start(port, &dir, &["--watchfile", log.to_str().unwrap()]);
    // Backoff from 0.5 s doubling: about five attempts in 4 s.
    std::thread::sleep(Duration::from_millis(4000));
    append(&log, &binary_bytes(3000, 1));
    agent.assert_running();
    let before = agent.log_text();
    assert_eq!(
        before.lines().filter(|l| l.contains("failed:")).count(),
        1,
        "one line per outage, not per retry:\n{before}"
    );
    assert!(before.contains("failed: cannot connect"), "{before}");
    let peer = Peer::start_on(CURRENT, &dir, port);
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_logs("taking uploads again");
}

#[test]
fn server_restarted_mid_stream() {
    let dir = Scratch::new("restart");
    let mut peer = Peer::start(CURRENT, &dir);
    let port = peer.port;
    let log = dir.path("program.log");
    append(&log, b"before the restart\n");
    let mut agent = Agent::start(port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("program.log", &log, LIMIT);
    peer.stop();
    for i in 0..50 {
        append(&log, format!("while the server is down {i}\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(800));
    let peer = Peer::start_on(CURRENT, &dir, port);
    append(&log, b"after the restart\n");
    peer.assert_mirrors("program.log", &log, LIMIT);
    agent.assert_running();
}

/// Runs the agent through a proxy that misbehaves as `fault`, then heals.
fn survives(act: Act, extra: &[&str]) -> String {
    let dir = Scratch::new("fault");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(peer.port, always(act));
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(10_000, 7));
    let mut args = vec!["--watchfile", log.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut agent = Agent::start(proxy.port, &dir, &args);
    assert!(wait_until(Duration::from_secs(10), || proxy.connections() >= 2));
    append(&log, b"written during the fault\n");
    std::thread::sleep(Duration::from_millis(500));
    agent.assert_running();
    assert_eq!(peer.stored("anaconda.log"), None);
    proxy.heal();
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
    agent.log_text()
}

#[test]
fn html_502_from_apache() {
    let text = survives(Act::Answer(answers::HTML_502), &[]);
    assert!(text.contains("HTTP 502: 502 Proxy Error"), "{text}");
}

#[test]
fn html_page_with_status_200() {
    let text = survives(Act::Answer(answers::HTML_200), &[]);
    assert!(
        text.contains("not XML-RPC (an HTML page: Welcome)"),
        "{text}"
    );
}

#[test]
fn xmlrpc_fault() {
    let text = survives(Act::Answer(answers::XMLRPC_FAULT), &[]);
    assert!(
        text.contains("server fault 1: <class 'BlockingIOError'>"),
        "{text}"
    );
}

#[test]
fn truncated_xml() {
    let text = survives(Act::Answer(answers::TRUNCATED_XML), &[]);
    assert!(text.contains("not XML-RPC"), "{text}");
}

#[test]
fn connection_reset() {
    let text = survives(Act::CloseAtOnce, &[]);
    assert!(text.contains("failed:"), "{text}");
}

#[test]
fn endless_response_is_cut_off() {
    let text = survives(Act::Endless, &["--timeout", "2"]);
    assert!(
        text.contains("larger than 65536 bytes") || text.contains("no answer in time"),
        "{text}"
    );
}

#[test]
fn server_that_never_answers_times_out_then_recovers() {
    let text = survives(Act::Hang, &["--timeout", "1"]);
    assert!(text.contains("no answer in time"), "{text}");
}

#[test]
fn sigterm_ships_what_is_pending_then_exits_0() {
    let dir = Scratch::new("sigterm");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("anaconda.log");
    append(&log, b"start\n");
    let mut agent = Agent::start(
        peer.port,
        &dir,
        &["--poll", "--watchfile", log.to_str().unwrap()],
    );
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    // Poll mode would not look for up to a second: the signal must.
    append(&log, &binary_bytes(300 * 1024, 5));
    let t = Instant::now();
    agent.signal(sys::SIGTERM);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        agent.log_text()
    );
    let took = t.elapsed();
    assert_eq!(
        peer.stored("anaconda.log").unwrap(),
        std::fs::read(&log).unwrap(),
        "{}",
        agent.log_text()
    );
    assert!(took < Duration::from_millis(2000), "flush took {took:?}");
}

#[test]
fn sigterm_with_server_hung_still_exits_in_time() {
    let dir = Scratch::new("sigterm-hang");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(peer.port, always(Act::Hang));
    let log = dir.path("anaconda.log");
    append(&log, b"pending\n");
    let mut agent = Agent::start(proxy.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(5), || proxy.connections() >= 1));
    let t = Instant::now();
    agent.signal(sys::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn exit_mode_ships_everything_and_exits_0() {
    let dir = Scratch::new("exit");
    let peer = Peer::start(CURRENT, &dir);
    let a = dir.path("boot.log");
    let b = dir.path("messages");
    append(&a, &binary_bytes(600 * 1024, 11));
    append(&b, b"kernel: hello\n");
    let spec = format!(
        "{} {} {}",
        a.display(),
        b.display(),
        dir.path("absent.log").display()
    );
    let mut agent = Agent::start(peer.port, &dir, &["--exit", "--watchfile", &spec]);
    assert_eq!(agent.wait_exit(LIMIT), Some(0), "{}", agent.log_text());
    assert_eq!(peer.stored("boot.log").unwrap(), std::fs::read(&a).unwrap());
    assert_eq!(peer.stored("messages").unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn exit_mode_waits_for_a_late_server_and_gives_up_with_1() {
    let dir = Scratch::new("exit-late");
    let port = free_port();
    let a = dir.path("boot.log");
    append(&a, b"boot\n");
    let mut agent = Agent::start(port, &dir, &["--exit", "--watchfile", a.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(1));
    let peer = Peer::start_on(CURRENT, &dir, port);
    assert_eq!(agent.wait_exit(LIMIT), Some(0), "{}", agent.log_text());
    assert_eq!(peer.stored("boot.log").unwrap(), b"boot\n");

    let mut agent = Agent::start(
        free_port(),
        &dir,
        &[
            "--exit",
            "--exit-timeout",
            "2",
            "--watchfile",
            a.to_str().unwrap(),
        ],
    );
    let started = std::time::Instant::now();
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(1),
        "{}",
        agent.log_text()
    );
    // It tries until shortly before the deadline, not just until the
    // backoff first overshoots it.
    assert!(
        started.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    assert!(
        agent.log_text().contains("(--exit-timeout 2)"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn refusing_cobbler_3_3_is_explained_and_not_flooded() {
    let dir = Scratch::new("refuse");
    let peer = Peer::start("3.3.10", &dir);
    let log = dir.path("anaconda.log");
    append(&log, b"refused\n");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(12));
    agent.assert_running();
    let text = agent.log_text();
    // --debug adds a line per retry ("failed again"); the state change is
    // logged once.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("answered False") && !l.contains("failed again"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the refusal:\n{text}");
    assert!(
        lines[0].contains("Cobbler 3.3.10 refuses every anamon upload")
            && lines[0].contains("anamon-receiver"),
        "{}",
        lines[0]
    );
    // Backoff starts at 5 s (jittered down to 2.5 s) and doubles: at most 4
    // attempts in 12 s, each possibly trying both wire forms once.
    let calls = peer.upload_calls();
    assert!((1..=8).contains(&calls), "{calls} upload calls in 12 s");
}

#[test]
fn old_string_contract_of_cobbler_3_1_2() {
    let dir = Scratch::new("old");
    let peer = Peer::start("3.1.2", &dir);
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(20_000, 13));
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    append(&log, &binary_bytes(300 * 1024, 14));
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_logs("server accepts uploads as base64 text in <string>");
    agent.assert_running();

    // The same with the form forced.
    let dir = Scratch::new("old-forced");
    let peer = Peer::start("3.1.2", &dir);
    let log = dir.path("x.log");
    append(&log, b"\0forced\xff\n");
    let _agent = Agent::start(
        peer.port,
        &dir,
        &["--wire", "string", "--watchfile", log.to_str().unwrap()],
    );
    peer.assert_mirrors("x.log", &log, LIMIT);
}
