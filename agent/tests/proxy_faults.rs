//! Network faults beyond `server_faults.rs`: connections reset in the middle
//! of a request or of a response, slow and stalled answers, HTTP 500, bytes
//! that are not HTTP, a lying Content-Length, a chunk the server stored but
//! whose `True` never arrived, and a seeded random mix of all of them while a
//! file grows. Each ends with the server's copy byte-identical to the disk
//! and the agent alive.

use anamon_testkit::*;
use std::time::Duration;

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(15);

/// (file, offset, data_len) of each `upload_log_data` call that returned True.
fn stored_calls(peer: &Peer) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(&peer.calls).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"upload_log_data\"") && l.contains("\"result\": true"))
        .map(|l| {
            (
                json_str(l, "file"),
                json_num(l, "offset"),
                json_num(l, "data_len"),
            )
        })
        .collect()
}

fn json_field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    &line[at + key.len() + 4..]
}

fn json_num(line: &str, key: &str) -> u64 {
    let v = json_field(line, key);
    v.chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect::<String>()
        .parse::<i64>()
        .unwrap() as u64
}

fn json_str(line: &str, key: &str) -> String {
    let v = json_field(line, key);
    v[1..].split('"').next().unwrap().to_string()
}

/// Starts a peer, a proxy with `schedule`, a file with 10 000 bytes, and the
/// agent through the proxy; waits until the proxy saw `conns` connections,
/// appends during the fault, heals, and checks the copy. Returns the log.
fn survives(schedule: Schedule, conns: u64, extra: &[&str]) -> String {
    let dir = Scratch::new("pfault");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(peer.port, schedule);
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(10_000, 21));
    let mut args = vec!["--watchfile", log.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut agent = Agent::start(proxy.port, &dir, &args);
    assert!(
        wait_until(Duration::from_secs(12), || proxy.connections() >= conns),
        "only {} connections:\n{}",
        proxy.connections(),
        agent.log_text()
    );
    append(&log, b"written during the fault\n");
    agent.assert_running();
    proxy.heal();
    append(&log, b"written after the fault\n");
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
    // The server stores the last chunk a moment before the agent hears back
    // and logs the recovery: wait for that line wherever an outage was logged.
    if agent.log_text().contains("failed:") {
        agent.assert_logs("taking uploads again");
    }
    agent.log_text()
}

#[test]
fn reset_in_the_middle_of_the_request_body() {
    let text = survives(always(Act::ResetMidRequest), 3, &[]);
    assert!(
        text.contains("failed: connection failed mid-request"),
        "{text}"
    );
    assert!(text.contains("taking uploads again"), "{text}");
}

#[test]
fn reset_in_the_middle_of_the_response_headers() {
    // "HTTP/1.0 200 OK\r\nServer: Base" and then a reset; the peer stored
    // each chunk, so every retry rewrites the same bytes at the same offset.
    let text = survives(always(Act::ResetMidResponse(30)), 3, &[]);
    assert!(text.contains("failed:"), "{text}");
}

#[test]
fn reset_in_the_middle_of_the_response_body() {
    // The whole head and part of the XML.
    let dir = Scratch::new("midbody");
    let peer = Peer::start(CURRENT, &dir);
    // Find the length of a real head first, so the cut lands in the body.
    let probe = forward(
        b"POST /cobbler_api HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: 76\r\n\r\n<?xml version=\"1.0\"?><methodCall><methodName>version</methodName></methodCall>",
        peer.port,
    )
    .unwrap();
    let head = probe.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    drop(peer);
    let text = survives(always(Act::ResetMidResponse(head + 40)), 3, &[]);
    assert!(text.contains("failed:"), "{text}");
}

#[test]
fn stored_but_true_never_arrives_then_resent_byte_identical() {
    // Every second upload is stored by Cobbler but its answer is lost: the
    // agent must resend that chunk (Cobbler writes at the offset, so the
    // resend is harmless) while the file keeps growing across chunk edges.
    let dir = Scratch::new("stored-lost");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(
        peer.port,
        Box::new(|n| {
            if n % 2 == 0 {
                Act::ResetMidResponse(0)
            } else {
                Act::Pass
            }
        }),
    );
    let log = dir.path("program.log");
    append(&log, &binary_bytes(300 * 1024, 31));
    let mut agent = Agent::start(proxy.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    for i in 0..20u32 {
        append(&log, &binary_bytes(1000 + 997 * i as usize, 100 + i));
        std::thread::sleep(Duration::from_millis(100));
    }
    append(&log, &binary_bytes(200 * 1024, 32));
    peer.assert_mirrors("program.log", &log, Duration::from_secs(20));
    agent.assert_running();
    let calls = stored_calls(&peer);
    // A resend stores at an offset already stored (with as many or more
    // bytes: the file grew in between).
    let mut seen = std::collections::HashSet::new();
    let resent = calls
        .iter()
        .filter(|(f, off, _)| !seen.insert((f.clone(), *off)))
        .count();
    assert!(
        resent >= 3,
        "expected chunks stored twice (resends), got {resent} in {calls:?}"
    );
}

#[test]
fn three_second_stall_with_one_second_timeout_then_recovery() {
    // The first three answers come 3 s late (the server stored the chunk at
    // once); the agent abandons each after 1 s and resends, then the proxy
    // heals.
    let dir = Scratch::new("stall");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(
        peer.port,
        first(3, Act::DelayAnswer(Duration::from_secs(3))),
    );
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(20_000, 41));
    let mut agent = Agent::start(
        proxy.port,
        &dir,
        &["--timeout", "1", "--watchfile", log.to_str().unwrap()],
    );
    assert!(wait_until(Duration::from_secs(10), || proxy.connections() >= 3));
    append(&log, b"after the stall\n");
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    agent.assert_running();
    agent.assert_logs("taking uploads again");
    let text = agent.log_text();
    assert!(text.contains("failed: no answer in time"), "{text}");
}

/// A request the agent abandoned after `--timeout` can still reach Cobbler
/// later (a slow Apache, a queueing proxy). If it carried offset 0, Cobbler
/// truncates the file to that chunk, undoing everything shipped since, and
/// the next upload writes past the end, leaving a hole of NULs. The agent
/// re-sends the bytes after that chunk at their offsets once the timeout has
/// passed again, and again later, so the copy heals.
#[test]
fn late_offset_zero_request_does_not_undo_later_uploads() {
    let dir = Scratch::new("late-zero");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(peer.port, first(1, Act::Delay(Duration::from_secs(3))));
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(20_000, 41));
    let mut agent = Agent::start(
        proxy.port,
        &dir,
        // A short pace, so the next append is shipped before the late
        // request lands, as it would be on a busier log.
        &[
            "--timeout",
            "1",
            "--pace",
            "200",
            "--watchfile",
            log.to_str().unwrap(),
        ],
    );
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    append(&log, b"shipped before the late request lands\n");
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    // The first request lands now, 3 s after it was sent, and truncates
    // the server's copy to its 20 000 bytes.
    assert!(
        wait_until(Duration::from_secs(10), || {
            peer.stored("anaconda.log")
                .is_some_and(|s| s.len() == 20_000)
        }),
        "the late request never landed: the test proves nothing"
    );
    append(&log, b"shipped after it landed\n");
    let want = std::fs::read(&log).unwrap();
    if !peer.wait_for("anaconda.log", &want, LIMIT) {
        let got = peer.stored("anaconda.log").unwrap_or_default();
        panic!(
            "server copy ({} bytes, {} NULs from byte 20000) never healed to the disk's {} bytes:\n{}",
            got.len(),
            got.iter().skip(20_000).take_while(|b| **b == 0).count(),
            want.len(),
            agent.log_text()
        );
    }
    agent.assert_running();
}

#[test]
fn every_answer_500_ms_late_without_timeout_coalesces() {
    // A slow but working server: nothing fails, and appends made while a
    // request is in flight travel together in the next one.
    let dir = Scratch::new("slow");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = FaultProxy::start(peer.port, always(Act::Delay(Duration::from_millis(500))));
    let log = dir.path("storage.log");
    append(&log, b"first\n");
    let mut agent = Agent::start(proxy.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    let writing = std::time::Instant::now();
    for i in 0..60 {
        append(
            &log,
            format!("{i:04} DEBUG blivet: slow server line\n").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrote_for = writing.elapsed();
    peer.assert_mirrors("storage.log", &log, LIMIT);
    agent.assert_running();
    // One request at a time, each at least 500 ms: one per 500 ms of
    // writing, plus the one in flight at the start and the last.
    let calls = peer.upload_calls();
    let bound = (wrote_for.as_millis() / 500) as usize + 3;
    assert!(
        calls <= bound,
        "{calls} requests for 61 appends in {wrote_for:?} (at most {bound})"
    );
    let text = agent.log_text();
    assert!(!text.contains("failed"), "{text}");
}

#[test]
fn http_500_with_an_html_page() {
    let text = survives(always(Act::Answer(answers::HTML_500)), 2, &[]);
    assert!(
        text.contains("HTTP 500: 500 Internal Server Error"),
        "{text}"
    );
}

#[test]
fn garbage_bytes_instead_of_http() {
    let text = survives(always(Act::Raw(answers::GARBAGE)), 2, &[]);
    assert!(text.contains("upload of anaconda.log failed:"), "{text}");
}

#[test]
fn huge_content_length_then_close() {
    let text = survives(
        always(Act::Raw(answers::HUGE_LENGTH)),
        2,
        &["--timeout", "3"],
    );
    assert!(
        text.contains("larger than 65536 bytes") || text.contains("mid-request"),
        "{text}"
    );
}

#[test]
fn content_length_longer_than_the_body_then_close() {
    // A complete `True`, but 500 bytes promised: the answer is incomplete,
    // so the chunk is not counted as stored and is resent.
    let text = survives(
        always(Act::Raw(answers::SHORT_BODY)),
        2,
        &["--timeout", "3"],
    );
    assert!(text.contains("failed:"), "{text}");
}

#[test]
fn seeded_random_faults_while_two_files_grow() {
    // About a third of the connections fail, each in one of the ways above
    // (short delays only, so the test stays short); the rest pass.
    let dir = Scratch::new("random");
    let peer = Peer::start(CURRENT, &dir);
    let mut rng = Rng(0x5eed_2025);
    let proxy = FaultProxy::start(
        peer.port,
        Box::new(move |_| {
            let r = rng.next_u64();
            if r % 100 >= 35 {
                return Act::Pass;
            }
            match (r >> 8) % 8 {
                0 => Act::ResetMidRequest,
                1 => Act::ResetMidResponse(0),
                2 => Act::ResetMidResponse(25),
                3 => Act::Answer(answers::HTML_500),
                4 => Act::Raw(answers::GARBAGE),
                5 => Act::Raw(answers::SHORT_BODY),
                6 => Act::Raw(answers::HUGE_LENGTH),
                _ => Act::Delay(Duration::from_millis(300)),
            }
        }),
    );
    let a = dir.path("anaconda.log");
    let b = dir.path("packaging.log");
    let spec = format!("{} {}", a.display(), b.display());
    // A short pace: the point is to exercise the fault schedule, and the
    // default pace (widened by every fault) would make few requests.
    let mut agent = Agent::start(
        proxy.port,
        &dir,
        &["--timeout", "2", "--pace", "50", "--watchfile", &spec],
    );
    let mut wr = Rng(7);
    for i in 0..120u32 {
        let (file, len) = match wr.next_u64() % 10 {
            0 => (&b, 40_000 + (wr.next_u64() % 300_000) as usize),
            1..=4 => (&b, 80 + (wr.next_u64() % 400) as usize),
            _ => (&a, 60 + (wr.next_u64() % 200) as usize),
        };
        append(file, &binary_bytes(len, i));
        std::thread::sleep(Duration::from_millis(40));
    }
    agent.assert_running();
    let during = proxy.connections();
    proxy.heal();
    peer.assert_mirrors("anaconda.log", &a, Duration::from_secs(40));
    peer.assert_mirrors("packaging.log", &b, Duration::from_secs(40));
    agent.assert_running();
    // How many connections the 5 s of writing see depends on the agent's
    // jittered backoff after each failure (0.5 s doubling); 8 means the
    // schedule was exercised well beyond its first few entries.
    assert!(during >= 8, "only {during} connections during the faults");
}
