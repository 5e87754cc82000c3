//! Network faults beyond `server_faults.rs`: connections reset in the middle
//! of a request or of a response, slow and stalled answers, HTTP 500, bytes
//! that are not HTTP, a lying Content-Length, a chunk the server stored but
//! whose `True` never arrived, and a seeded random mix of all of them while a
//! file grows. Each ends with the server's copy byte-identical to the disk
//! and the agent alive.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(15);

/// What the proxy does with one connection (one request: the peer speaks
/// HTTP/1.0 and closes after each answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Forward to the peer and back.
    Pass,
    /// Read the headers and half the body, then reset (RST).
    ResetMidRequest,
    /// Forward the whole request (the peer stores the chunk), then send the
    /// first `n` bytes of the peer's answer and reset. `n = 0` is the fault
    /// exactly between "stored" and "the agent sees True".
    ResetMidResponse(usize),
    /// Wait, then forward. The agent may have given up meanwhile; the late
    /// request still reaches the peer.
    Delay(Duration),
    /// Forward at once (the peer stores the chunk), wait, then answer.
    DelayAnswer(Duration),
    /// Read the request, answer HTTP 500 with Apache's HTML page, close.
    Html500,
    /// Read the request, answer these raw bytes, close.
    Raw(&'static [u8]),
}

const PAGE_500: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>500 Internal Server Error</title>\n</head><body>\n<h1>Internal Server Error</h1>\n<p>The server encountered an internal error or\nmisconfiguration and was unable to complete\nyour request.</p>\n</body></html>\n";
const GARBAGE: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\xff\xfeSSH-2.0-OpenSSH_9.2\r\n\x00\x00\x00\x00garbage\n\n\n";
const HUGE_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 99999999999\r\n\r\n<?xml version='1.0'?>\n<methodResponse>\n<params>";
const SHORT_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\r\n<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><boolean>1</boolean></value>\n</param>\n</params>\n</methodResponse>\n";

type Schedule = Box<dyn FnMut(u64) -> Act + Send>;

/// A proxy on 127.0.0.1 whose behaviour per connection comes from a
/// schedule the test sets (connection number → act).
struct ScriptProxy {
    port: u16,
    schedule: Arc<Mutex<Schedule>>,
    listener: Listener,
}

impl ScriptProxy {
    fn start(upstream: u16, schedule: Schedule) -> ScriptProxy {
        let schedule = Arc::new(Mutex::new(schedule));
        let sch = schedule.clone();
        let listener = Listener::start(move |conn, n, _| {
            let act = (sch.lock().unwrap())(n);
            serve(conn, act, upstream)
        });
        ScriptProxy {
            port: listener.port,
            schedule,
            listener,
        }
    }

    fn set(&self, schedule: Schedule) {
        *self.schedule.lock().unwrap() = schedule;
    }

    fn heal(&self) {
        self.set(Box::new(|_| Act::Pass));
    }

    fn connections(&self) -> u64 {
        self.listener.connections()
    }
}

/// Closes with a TCP reset rather than a FIN (SO_LINGER 0).
fn reset(conn: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a valid linger struct.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

fn forward(request: &[u8], upstream: u16) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    up.write_all(request).ok()?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).ok()?;
    Some(resp)
}

fn serve(mut conn: TcpStream, act: Act, upstream: u16) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    match act {
        Act::ResetMidRequest => {
            let Some((mut buf, body_at, len)) = read_head(&mut conn) else {
                return;
            };
            let mut tmp = [0u8; 4096];
            while buf.len() < body_at + len / 2 {
                match conn.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            reset(conn);
        }
        Act::Raw(bytes) => {
            if read_request(&mut conn).is_some() {
                let _ = conn.write_all(bytes);
            }
        }
        Act::Html500 => {
            if read_request(&mut conn).is_some() {
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE_500}",
                        PAGE_500.len()
                    )
                    .as_bytes(),
                );
            }
        }
        Act::Pass | Act::Delay(_) | Act::DelayAnswer(_) | Act::ResetMidResponse(_) => {
            let Some(request) = read_request(&mut conn) else {
                return;
            };
            if let Act::Delay(d) = act {
                std::thread::sleep(d);
            }
            let Some(resp) = forward(&request, upstream) else {
                return;
            };
            match act {
                Act::DelayAnswer(d) => {
                    std::thread::sleep(d);
                    let _ = conn.write_all(&resp);
                }
                Act::ResetMidResponse(n) => {
                    let _ = conn.write_all(&resp[..n.min(resp.len())]);
                    let _ = conn.flush();
                    // Let the partial answer leave before the reset.
                    std::thread::sleep(Duration::from_millis(20));
                    reset(conn);
                }
                _ => {
                    let _ = conn.write_all(&resp);
                }
            }
        }
    }
}

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
    let proxy = ScriptProxy::start(peer.port, schedule);
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

fn always(act: Act) -> Schedule {
    Box::new(move |_| act)
}

/// `act` for the first `n` connections, then pass through.
fn first(n: u64, act: Act) -> Schedule {
    Box::new(move |i| if i < n { act } else { Act::Pass })
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
    let proxy = ScriptProxy::start(
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
    let proxy = ScriptProxy::start(
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

/// Agent bug (reported, not fixed here): a request the agent abandoned after
/// `--timeout` can still reach Cobbler later (a slow Apache, a queueing
/// proxy). If it carried offset 0, Cobbler truncates the file to that chunk,
/// undoing everything shipped since; the agent never learns of it, and its
/// next upload writes past the end, leaving a hole of NULs.
#[test]
#[ignore = "agent bug: a late offset-0 request truncates the server copy (see the bench README)"]
fn late_offset_zero_request_does_not_undo_later_uploads() {
    let dir = Scratch::new("late-zero");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = ScriptProxy::start(peer.port, first(1, Act::Delay(Duration::from_secs(3))));
    let log = dir.path("anaconda.log");
    append(&log, &binary_bytes(20_000, 41));
    let mut agent = Agent::start(
        proxy.port,
        &dir,
        &["--timeout", "1", "--watchfile", log.to_str().unwrap()],
    );
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    append(&log, b"shipped before the late request lands\n");
    peer.assert_mirrors("anaconda.log", &log, LIMIT);
    // The first request lands now, 3 s after it was sent.
    std::thread::sleep(Duration::from_millis(3500));
    append(&log, b"shipped after it landed\n");
    std::thread::sleep(Duration::from_millis(1500));
    agent.assert_running();
    let got = peer.stored("anaconda.log").unwrap();
    let want = std::fs::read(&log).unwrap();
    assert!(
        got == want,
        "server copy ({} bytes, {} NULs from byte 20000) differs from the disk ({} bytes)",
        got.len(),
        got.iter().skip(20_000).take_while(|b| **b == 0).count(),
        want.len()
    );
}

#[test]
fn every_answer_500_ms_late_without_timeout_coalesces() {
    // A slow but working server: nothing fails, and appends made while a
    // request is in flight travel together in the next one.
    let dir = Scratch::new("slow");
    let peer = Peer::start(CURRENT, &dir);
    let proxy = ScriptProxy::start(peer.port, always(Act::Delay(Duration::from_millis(500))));
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
    let text = survives(always(Act::Html500), 2, &[]);
    assert!(
        text.contains("HTTP 500: 500 Internal Server Error"),
        "{text}"
    );
}

#[test]
fn garbage_bytes_instead_of_http() {
    let text = survives(always(Act::Raw(GARBAGE)), 2, &[]);
    assert!(text.contains("upload of anaconda.log failed:"), "{text}");
}

#[test]
fn huge_content_length_then_close() {
    let text = survives(always(Act::Raw(HUGE_LENGTH)), 2, &["--timeout", "3"]);
    assert!(
        text.contains("larger than 65536 bytes") || text.contains("mid-request"),
        "{text}"
    );
}

#[test]
fn content_length_longer_than_the_body_then_close() {
    // A complete `True`, but 500 bytes promised: the answer is incomplete,
    // so the chunk is not counted as stored and is resent.
    let text = survives(always(Act::Raw(SHORT_BODY)), 2, &["--timeout", "3"]);
    assert!(text.contains("failed:"), "{text}");
}

/// xorshift64*, for a fault schedule that is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn seeded_random_faults_while_two_files_grow() {
    // About a third of the connections fail, each in one of the ways above
    // (short delays only, so the test stays short); the rest pass.
    let dir = Scratch::new("random");
    let peer = Peer::start(CURRENT, &dir);
    let mut rng = Rng(0x5eed_2025);
    let proxy = ScriptProxy::start(
        peer.port,
        Box::new(move |_| {
            let r = rng.next();
            if r % 100 >= 35 {
                return Act::Pass;
            }
            match (r >> 8) % 8 {
                0 => Act::ResetMidRequest,
                1 => Act::ResetMidResponse(0),
                2 => Act::ResetMidResponse(25),
                3 => Act::Html500,
                4 => Act::Raw(GARBAGE),
                5 => Act::Raw(SHORT_BODY),
                6 => Act::Raw(HUGE_LENGTH),
                _ => Act::Delay(Duration::from_millis(300)),
            }
        }),
    );
    let a = dir.path("anaconda.log");
    let b = dir.path("packaging.log");
    let spec = format!("{} {}", a.display(), b.display());
    let mut agent = Agent::start(proxy.port, &dir, &["--timeout", "2", "--watchfile", &spec]);
    let mut wr = Rng(7);
    for i in 0..120u32 {
        let (file, len) = match wr.next() % 10 {
            0 => (&b, 40_000 + (wr.next() % 300_000) as usize),
            1..=4 => (&b, 80 + (wr.next() % 400) as usize),
            _ => (&a, 60 + (wr.next() % 200) as usize),
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
