//! anamon-receiver over raw HTTP: every bound holds (head and body size,
//! framing, deadline, connection count, request rate), hostile names never
//! leave the log directory, and each refusal is an answer, never a crash.

mod common;

use anamon_testkit::{Peer, Scratch};
use common::{is_false, is_fault, is_true, tree, upload};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn receiver(dir: &Scratch, extra: &[&str]) -> Peer {
    Peer::receiver_binary(
        Path::new(env!("CARGO_BIN_EXE_anamon-receiver")),
        dir,
        0,
        extra,
    )
}

#[test]
fn http_framing_and_size_bounds() {
    let dir = Scratch::new("framing");
    let mut r = receiver(&dir, &["--max-request-size", "4K"]);
    let ok = upload("web01", "a.log", 5, 0, "aGVsbG8=");
    assert!(is_true(&r.post(&ok)));
    for (request, status) in [
        ("GET /cobbler_api HTTP/1.1\r\n\r\n".to_string(), "405"),
        (
            "POST /etc/passwd HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
            "404",
        ),
        ("POST / HTTP/1.1\r\n\r\n".to_string(), "411"),
        (
            "POST / HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n".to_string(),
            "413",
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
            "501",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_string(),
            "400",
        ),
        (
            format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000)),
            "431",
        ),
        // hyper's parser takes HTTP/1.0 and 1.1 only: any other version is
        // a malformed request line (400; it was 505 before hyper).
        (
            "POST / HTTP/2.0\r\nContent-Length: 0\r\n\r\n".to_string(),
            "400",
        ),
        ("garbage\r\n\r\n".to_string(), "400"),
    ] {
        let resp = r.raw(request.as_bytes());
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {resp:?}"
        );
    }
    // The 413 is answered from the head alone: nothing of the body is read.
    let mut c = r.connect();
    c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    // Not XML-RPC, or an unknown method: a fault, not a crash.
    assert!(is_fault(&r.post("<html>hello</html>")));
    assert!(is_fault(&r.post(
        "<methodCall><methodName>system.listMethods</methodName></methodCall>"
    )));
    assert!(r.is_running());
    assert_eq!(
        std::fs::read(r.logdir.clone().join("web01/a.log")).unwrap(),
        b"hello"
    );
}

#[test]
fn a_silent_client_is_cut_off_at_the_deadline() {
    let dir = Scratch::new("deadline");
    let r = receiver(&dir, &["--timeout", "1"]);
    // A head that does not end in time: hyper closes the connection
    // without an answer (before hyper, a 408 came first).
    let mut c = r.connect();
    c.write_all(b"POST / HTTP/1.1\r\nContent-Le").unwrap();
    let t = Instant::now();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert_eq!(out, "", "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Trickling the head one byte at a time does not extend the deadline.
    let mut c = r.connect();
    let t = Instant::now();
    let out = trickle(&mut c, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n", 60);
    assert_eq!(out, "", "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(4));
    // Nor does trickling the body: 408 at --timeout.
    let mut c = r.connect();
    c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let out = trickle(&mut c, b"0123456789", 300);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(4));
}

/// Sends `bytes` one at a time, `gap_ms` apart, until the server stops
/// taking them; returns its answer.
fn trickle(c: &mut TcpStream, bytes: &[u8], gap_ms: u64) -> String {
    for b in bytes {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(gap_ms));
    }
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn connections_beyond_the_cap_wait_their_turn() {
    let dir = Scratch::new("slots");
    let r = receiver(&dir, &["--max-connections", "2", "--timeout", "2"]);
    // Two clients hold both slots without sending a byte.
    let idle: Vec<TcpStream> = (0..2).map(|_| r.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let threads_busy = r.threads();
    // A third is served once a slot frees (the idle ones time out), not
    // refused, and no thread was spent on it meanwhile.
    let t = Instant::now();
    let resp = r.post(&upload("web01", "a.log", 1, 0, "eA=="));
    assert!(is_true(&resp), "{resp}");
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "served before a slot was free"
    );
    assert!(
        threads_busy <= 3,
        "{threads_busy} threads for 2 connections"
    );
    drop(idle);
}

#[test]
fn request_rate_cap_per_client_answers_faults() {
    let dir = Scratch::new("rate");
    let mut r = receiver(&dir, &["--rate", "2", "--burst", "3"]);
    let results: Vec<String> = (0..6)
        .map(|i| r.post(&upload("web01", "a.log", 1, i, "eA==")))
        .collect();
    assert!(results[..3].iter().all(|x| is_true(x)), "{results:?}");
    assert!(
        results[3..]
            .iter()
            .all(|x| is_fault(x) && x.contains("too many requests")),
        "{results:?}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(is_true(&r.post(&upload("web01", "a.log", 1, 3, "eA=="))));
    assert!(r.is_running());
}

#[test]
fn hostile_names_never_leave_the_log_directory() {
    let dir = Scratch::new("names");
    let mut r = receiver(&dir, &[]);
    let before = tree(dir.root());
    let tmp_x = Path::new("/tmp/x.log").exists();
    for (system, file) in [
        ("..", "x.log"),
        ("../escape", "x.log"),
        ("/tmp", "x.log"),
        ("web01", "../../escape.log"),
        ("web01", "/etc/passwd"),
        ("web01/../..", "x.log"),
        ("web01", "a&#0;b"),
        ("web&#0;01", "x.log"),
        ("web01", "a\u{2044}b"),
        ("web01", ".."),
        ("", "x.log"),
    ] {
        let resp = r.post(&upload(system, file, 1, 0, "eA=="));
        assert!(
            is_false(&resp) || is_fault(&resp),
            "{system:?}/{file:?}: {resp}"
        );
    }
    assert!(r.is_running());
    let after = tree(dir.root());
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(
        new.iter().all(|p| p.starts_with(r.logdir.clone())),
        "written outside: {new:?}"
    );
    assert_eq!(Path::new("/tmp/x.log").exists(), tmp_x, "wrote /tmp/x.log");
    assert!(
        !r.logdir.clone().join("web01").exists()
            || tree(&r.logdir.clone().join("web01")).is_empty()
    );
}

#[test]
fn the_whole_disk_caps_answer_faults_and_count_in_metrics() {
    // Issue 22: invented system names each under their own cap added up
    // past any budget, and empty files were free.
    let r = common::Receiver::start(
        "disk-caps",
        &[
            "--max-total-size",
            "16K",
            "--max-files-per-system",
            "2",
            "--view",
            "127.0.0.1:0",
        ],
    );
    let six_k = vec![b'x'; 6 << 10];
    assert!(r.upload("fake1", "a.log", 0, &six_k));
    assert!(r.upload("fake2", "a.log", 0, &six_k));
    let answer = r.post(&upload("fake3", "a.log", 6 << 10, 0, &common::b64(&six_k)));
    assert!(
        is_fault(&answer) && answer.contains("--max-total-size"),
        "{answer}"
    );
    assert!(!r.logs().join("fake3").exists());
    // Empty files count against the file cap (and 4 KiB each against the total).
    assert!(r.upload("fake1", "b.log", 0, b""));
    let answer = r.post(&upload("fake1", "c.log", 0, 0, ""));
    assert!(
        is_fault(&answer) && answer.contains("cap per system"),
        "{answer}"
    );
    let metrics = r.get("/metrics").text();
    for cause in ["total_cap", "files_per_system"] {
        assert!(
            metrics.contains(&format!(
                "anamon_receiver_refusals_total{{cause=\"{cause}\"}} 1\n"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn a_forged_request_line_is_one_escaped_log_line() {
    // ESC, BEL and U+202E in a request's path: each log line stays one
    // line of printable ASCII (they were written raw).
    // (A client's unreadable requests are logged once a minute: one is
    // enough.)
    // hyper's parser refuses such a request line (400) without repeating
    // it; the refusal is logged, and nothing the client sent is, raw.
    let mut r = common::Receiver::start("forged", &[]);
    r.raw(b"POST /x\x1b[2J\x07\xe2\x80\xae HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    r.peer.stop();
    let log = r.log_text();
    assert!(log.contains("HTTP 400"), "{log}");
    for line in log.lines() {
        assert!(
            line.chars().all(|c| (' '..='~').contains(&c)) && line.contains("anamon-receiver["),
            "{line:?}"
        );
    }
}
