//! The live view (`--view`) of the real binary, over raw HTTP: states as
//! uploads arrive, hostile contents escaped, hostile names and planted
//! links refused, nothing written, event streams that follow and reset,
//! its own bounded connections, and a huge log checked in bounded steps.

mod common;

use common::{tree, Receiver, Response};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, 15, f)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits until the API says `system` is in state `want`; returns what it
/// said.
fn wait_state(r: &Receiver, system: &str, want: &str) -> String {
    wait_for(&format!("{system} {want}"), || {
        let j = r.get(&format!("/api/systems/{system}")).text();
        let state = serde_json::from_str::<serde_json::Value>(&j).ok()?["state"].clone();
        (state == want).then_some(j)
    })
}

#[test]
fn states_follow_what_arrives_and_link_to_the_line() {
    let r = Receiver::start(
        "view-states",
        &[
            "--view",
            "127.0.0.1:0",
            "--view-window",
            "3",
            "--max-file-size",
            "64K",
        ],
    );
    assert!(r.upload("web01", "anaconda.log", 0, b"INFO anaconda: started\n"));
    wait_state(&r, "web01", "installing");
    // A crash dump arrives: failed, pointing at the traceback in it.
    let dump = b"anaconda 34.25 exception report\nTraceback (most recent call last):\n";
    assert!(r.upload("web01", "anaconda-tb-x1y2z3", 0, dump));
    let j = wait_state(&r, "web01", "failed");
    assert_eq!(
        json(&j)["reasons"][0],
        serde_json::json!({"file": "anaconda-tb-x1y2z3", "why": "an Anaconda crash dump arrived", "line": 2, "offset": 32, "text": "Traceback (most recent call last):"}),
        "{j}"
    );

    // A %post that failed, in the middle of a log sent in two uploads.
    let first = b"INFO anaconda: ok\nERR anaconda.kickstart: Error code 1 running the ";
    let second = b"kickstart script at line 12 <&>\nINFO anaconda: more\n";
    assert!(r.upload("web02", "anaconda.log", 0, first));
    assert!(r.upload("web02", "anaconda.log", first.len() as i64, second));
    let j = wait_state(&r, "web02", "failed");
    let why = &json(&j)["reasons"][0];
    assert_eq!(
        (&why["why"], &why["line"], &why["offset"]),
        (
            &serde_json::json!("a kickstart %pre/%post script failed"),
            &serde_json::json!(2),
            &serde_json::json!(18)
        ),
        "{j}"
    );
    // The list links the line; the link shows it in place, marked.
    let list = r.get("/").text();
    let link = "/s/web02/anaconda.log?at=18&amp;line=2#match";
    assert!(
        list.contains(&format!("<a href=\"{link}\">anaconda.log:2</a>")),
        "{list}"
    );
    assert!(list.contains("<code>ERR anaconda.kickstart: Error code 1 running the kickstart script at line 12 &lt;&amp;&gt;</code>"));
    let page = r.get("/s/web02/anaconda.log?at=18&line=2").text();
    assert!(
        page.contains("<mark id=\"match\" title=\"line 2\">ERR anaconda.kickstart: Error code 1 running the kickstart script at line 12 &lt;&amp;&gt;</mark>"),
        "{page}"
    );

    // The installer's own end, and the first boot (a kernel trace there is
    // no failure of the install).
    assert!(r.upload(
        "web03",
        "anaconda.log",
        0,
        b"INFO anaconda.threading: Thread Done: AnaInstallThread (14)\n"
    ));
    assert!(r.upload("web04", "anaconda.log", 0, b"INFO anaconda: started\n"));
    assert!(r.upload("web04", "dmesg.log", 0, b"[    3.2] Call Trace:\n"));
    wait_state(&r, "web03", "finished");
    let j = wait_state(&r, "web04", "finished");
    assert_eq!(
        json(&j)["reasons"][0],
        serde_json::json!({"file": "dmesg.log", "why": "the first boot's logs arrived"}),
        "{j}"
    );
    // Nothing for longer than the window: idle.
    assert!(r.upload("web05", "anaconda.log", 0, b"INFO anaconda: waiting\n"));
    wait_state(&r, "web05", "idle");
    let failed = r.get("/?state=failed").text();
    for (name, shown) in [
        ("web01", true),
        ("web02", true),
        ("web03", false),
        ("web05", false),
    ] {
        assert_eq!(
            failed.contains(&format!("data-system=\"{name}\"")),
            shown,
            "{name}: {failed}"
        );
    }
    // Refusals by cause, uploads, systems by state.
    assert!(!r.upload("web 06", "a.log", 0, b"x")); // Cobbler's name rules: False
    assert!(!r.upload("web06", "big.log", 0, &vec![b'x'; 65 << 10]));
    let m = r.get("/metrics").text();
    for line in [
        "anamon_receiver_uploads_total 8\n",
        "anamon_receiver_refusals_total{cause=\"malformed\"} 1\n",
        "anamon_receiver_refusals_total{cause=\"file_cap\"} 1\n",
        "anamon_receiver_systems{state=\"failed\"} 2\n",
        "anamon_receiver_systems{state=\"finished\"} 2\n",
        "# TYPE anamon_receiver_active_sessions gauge\n",
    ] {
        assert!(m.contains(line), "{line:?} not in\n{m}");
    }
    let bytes: usize = [23, dump.len(), first.len(), second.len(), 60, 23, 22, 23]
        .iter()
        .sum();
    assert!(
        m.contains(&format!("anamon_receiver_stored_bytes_total {bytes}\n")),
        "{m}"
    );
    // At a stage, with package N of M: installing at that stage; then
    // nothing for longer than the window: stalled there, and for how long.
    let packages = b"INF installation: Task started: Install the payload (10/40)\n\
        INF packaging: Installing bash (12/345)\n";
    assert!(r.upload("web08", "anaconda.log", 0, packages));
    let j = json(&wait_state(&r, "web08", "installing"));
    assert_eq!(
        (
            &j["stage"]["name"],
            &j["stage"]["package"],
            &j["stage"]["packages"]
        ),
        (
            &serde_json::json!("packages"),
            &serde_json::json!(12),
            &serde_json::json!(345)
        ),
        "{j}"
    );
    let list = r.get("/?state=installing").text();
    assert!(
        list.contains("<div class=\"stage\">packages 12/345 · "),
        "{list}"
    );
    let j = json(&wait_state(&r, "web08", "stalled"));
    assert_eq!(j["stage"]["name"], "packages", "{j}");
    assert!(j["stalled_s"].as_i64().unwrap() > 3, "{j}");
    let list = r.get("/?state=stalled").text();
    assert!(
        list.contains("<span class=\"stall\">no new line for "),
        "{list}"
    );
    // At its last step (the %post scripts) and then quiet: finished.
    assert!(r.upload(
        "web09",
        "anaconda.log",
        0,
        b"INFO anaconda: Running kickstart %%post script(s)\n"
    ));
    let j = json(&wait_state(&r, "web09", "finished"));
    assert_eq!(
        j["reasons"][0]["why"], "the installer ran its %post scripts, its last step, and stopped",
        "{j}"
    );
}

#[test]
fn hostile_contents_and_requests_are_shown_safely_and_nothing_is_written() {
    let r = Receiver::start("view-hostile", &["--view", "127.0.0.1:0"]);
    let hostile: &[u8] =
        b"<script>alert(1)</script><img src=x onerror=alert(2)>&amp; \x1b[31mred\x1b[0m \
        \x00\x07\xff\xfe \xe2\x80\xae desrever\r\n\"'\nKernel panic - not syncing (<b>bold</b>\n";
    assert!(r.upload("web01", "evil.log", 0, hostile));
    let logs = r.logs();
    let outside = r.dir.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"TOPSECRET Traceback (\n").unwrap();
    std::os::unix::fs::symlink(&outside, logs.join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), logs.join("web01/link.log")).unwrap();
    std::fs::hard_link(outside.join("secret"), logs.join("web01/hard.log")).unwrap();
    std::fs::create_dir(logs.join("web01/dir.log")).unwrap();
    anamon_testkit::sys::mkfifo(&logs.join("web01/fifo.log"));
    let snapshot = |p: &Path| -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
        let mut t: Vec<_> = tree(p)
            .into_iter()
            .map(|f| {
                let m = std::fs::symlink_metadata(&f).unwrap();
                (f, m.len(), m.modified().ok())
            })
            .collect();
        t.sort();
        t
    };
    let before = snapshot(r.dir.root());

    // What no response may hold; pages (not JSON) no markup of the log's.
    let safe = |what: &str, resp: &Response, html: bool| {
        let body = std::str::from_utf8(&resp.body).unwrap_or_else(|_| panic!("{what}: not UTF-8"));
        for bad in ["\0", "\u{1b}", "\u{7}", "\u{202e}", "\r", "TOPSECRET"] {
            assert!(!body.contains(bad), "{what}: {bad:?} in {body}");
        }
        for bad in ["<script>alert", "<img", "<b>"] {
            assert!(!html || !body.contains(bad), "{what}: {bad:?} in {body}");
        }
        body.to_string()
    };
    let clean = |what: &str, resp: &Response| safe(what, resp, true);
    let file = clean("file page", &r.get("/s/web01/evil.log"));
    assert!(file.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp; red \u{2400}\u{2407}\u{fffd}\u{fffd} \u{fffd} desrever\n&quot;&#39;\nKernel panic - not syncing (&lt;b&gt;bold&lt;/b&gt;"), "{file}");
    let list = wait_for("the traceback in the list", || {
        let body = clean("list", &r.get("/"));
        body.contains("failed").then_some(body)
    });
    assert!(
        list.contains("<code>Kernel panic - not syncing (&lt;b&gt;bold&lt;/b&gt;</code>"),
        "{list}"
    );
    assert!(
        !list.contains("linked") && !list.contains("hard.log"),
        "{list}"
    );
    let sys = clean("system page", &r.get("/s/web01"));
    assert!(
        sys.contains("evil.log") && !sys.contains("link.log") && !sys.contains("fifo.log"),
        "{sys}"
    );
    let json = safe("JSON", &r.get("/api/systems"), false);
    assert!(
        json.contains("\"text\": \"Kernel panic - not syncing (<b>bold</b>\""),
        "{json}"
    );
    let chunk = safe(
        "JSON chunk",
        &r.get("/api/systems/web01/evil.log?from=0"),
        false,
    );
    let chunk: serde_json::Value = serde_json::from_str(&chunk).unwrap();
    assert!(
        chunk["text"]
            .as_str()
            .unwrap()
            .contains("desrever\n\"'\nKernel panic - not syncing (<b>bold</b>\n"),
        "{chunk}"
    );
    // Pages load nothing but the view's own script and style, and are
    // never sniffed or framed.
    let page = r.get("/");
    assert!(page
        .header("Content-Security-Policy")
        .unwrap()
        .starts_with("default-src 'none'; script-src 'self'"));
    assert_eq!(
        page.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    // The download is the bytes as stored, as an attachment.
    let raw = r.get("/raw/web01/evil.log");
    assert_eq!(raw.body, hostile);
    assert_eq!(
        raw.header("Content-Disposition").as_deref(),
        Some("attachment; filename=\"evil.log\"")
    );

    for target in [
        "/s/linked",
        "/s/linked/secret",
        "/raw/linked/secret",
        "/api/systems/linked",
        "/raw/web01/hard.log",
        "/s/web01/hard.log",
        "/raw/web01/link.log",
        "/follow/web01/link.log",
        "/s/web01/fifo.log",
        "/raw/web01/fifo.log",
        "/raw/web01/dir.log",
        "/raw/web01/../../outside/secret",
        "/raw/..%2F..%2Foutside/secret",
        "/raw/web01/%2e%2e",
        "/raw/web01/evil.log/../hard.log",
        "http://x/raw/web01/evil.log",
        "/static/../../outside/secret",
        "/s/%77eb01",
    ] {
        let resp = r.get(target);
        clean(target, &resp);
        assert_eq!(resp.status, 404, "{target}: {}", resp.text());
    }
    for (req, want) in [
        (&b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..], 405),
        (b"PUT /s/web01 HTTP/1.1\r\n\r\n", 405),
        // hyper's parser refuses these before any routing (400; before
        // hyper, HTTP/2.0 was 505 and a NUL in the path 404).
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET /s/web01\0/evil.log HTTP/1.1\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nbroken header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\xff\xfe: x\r\n\r\n", 400),
    ] {
        assert_eq!(
            r.view_raw(req).status,
            want,
            "{}",
            String::from_utf8_lossy(req)
        );
    }
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(r.view_raw(big.as_bytes()).status, 431);
    assert_eq!(snapshot(r.dir.root()), before, "the view wrote something");
}

/// What a stream sent so far: its raw bytes, and the text they carry (the
/// head, then the body with its chunked framing taken off: hyper sends an
/// event stream in chunks).
#[derive(Default)]
struct Seen {
    raw: Vec<u8>,
    text: String,
}

impl Seen {
    fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            self.text = String::from_utf8_lossy(&self.raw).into_owned();
            return;
        };
        let (head, mut body) = self.raw.split_at(end + 4);
        let mut text = head.to_vec();
        if String::from_utf8_lossy(head).contains("Transfer-Encoding: chunked") {
            // Whole chunks only: `size\r\ndata\r\n`.
            while let Some(nl) = body.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(&String::from_utf8_lossy(&body[..nl]), 16).unwrap();
                if body.len() < nl + 2 + size + 2 {
                    break;
                }
                text.extend_from_slice(&body[nl + 2..nl + 2 + size]);
                body = &body[nl + 2 + size + 2..];
            }
        } else {
            text.extend_from_slice(body);
        }
        self.text = String::from_utf8_lossy(&text).into_owned();
    }
}

impl std::ops::Deref for Seen {
    type Target = String;
    fn deref(&self) -> &String {
        &self.text
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.text)
    }
}

/// Reads from `c` until `done` holds for what arrived; returns it all.
fn read_until(c: &mut TcpStream, seen: &mut Seen, done: impl Fn(&str) -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    let mut buf = [0; 4096];
    while !done(seen) {
        assert!(Instant::now() < end, "timed out; got {seen:?}");
        match c.read(&mut buf) {
            Ok(0) => panic!("stream ended; got {seen:?}"),
            Ok(n) => seen.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}; got {seen:?}"),
        }
    }
}

/// The text a page following `events` (Server-Sent Events) shows: the data
/// of each event, its lines joined by newlines, one event after another.
fn shown(events: &str) -> String {
    events
        .split("\n\n")
        .map(|e| {
            e.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

fn open_stream(r: &Receiver, target: &str, extra: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", r.view.unwrap())).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
        .unwrap();
    c
}

#[test]
fn follow_streams_new_bytes_and_resets_on_a_rewrite() {
    let r = Receiver::start("view-follow", &["--view", "127.0.0.1:0"]);
    assert!(r.upload("web01", "a.log", 0, b"one\n"));
    let mut c = open_stream(&r, "/follow/web01/a.log?from=4", "");
    let mut seen = Seen::default();
    read_until(&mut c, &mut seen, |s| s.contains("retry: 1000\n\n"));
    assert!(
        seen.starts_with("HTTP/1.1 200 OK\r\n") && seen.contains("Content-Type: text/event-stream"),
        "{seen}"
    );
    assert!(r.upload("web01", "a.log", 4, b"two \x1b[1m\xe2\x82"));
    read_until(&mut c, &mut seen, |s| s.contains("id: 12\n"));
    // The euro sign's last byte has not come: nothing of it is sent yet.
    assert!(
        seen.ends_with("event: message\nid: 12\ndata: two \n\n"),
        "{seen:?}"
    );
    assert!(r.upload("web01", "a.log", 14, b"\xac\n"));
    read_until(&mut c, &mut seen, |s| s.contains("id: 16\n"));
    assert!(
        seen.ends_with("event: message\nid: 16\ndata: \u{20ac}\ndata: \n\n"),
        "{seen:?}"
    );
    // A new install of that name sends from offset 0: the page starts over.
    assert!(r.upload("web01", "a.log", 0, b"REWRITTEN, and longer than before\n"));
    // (The store truncates, then writes: the stream may see the empty file
    // first, then the new bytes.)
    read_until(&mut c, &mut seen, |s| {
        s.contains("event: reset")
            && s.ends_with("id: 34\ndata: REWRITTEN, and longer than before\ndata: \n\n")
    });
    let after = &seen[seen.find("event: reset").unwrap()..];
    assert_eq!(
        shown(after),
        "REWRITTEN, and longer than before\n",
        "{seen:?}"
    );
    drop(c);
    // A reconnecting browser sends the last id it saw, and goes on there.
    assert!(r.upload("web01", "a.log", 34, b"three\n"));
    let mut c = open_stream(&r, "/follow/web01/a.log?from=0", "Last-Event-ID: 34\r\n");
    let mut seen = Seen::default();
    read_until(&mut c, &mut seen, |s| s.contains("id: 40\n"));
    assert!(
        seen.ends_with("event: message\nid: 40\ndata: three\ndata: \n\n"),
        "{seen:?}"
    );
}

#[test]
fn the_views_connections_are_bounded_and_uploads_go_on() {
    let r = Receiver::start(
        "view-bounded",
        &["--view", "127.0.0.1:0", "--view-max-connections", "2"],
    );
    assert!(r.upload("web01", "a.log", 0, b"one\n"));
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", r.peer.child_id()))
            .unwrap()
            .count()
    };
    let base = threads();
    // One stream may follow (half the slots); a second is told to retry.
    let mut first = open_stream(&r, "/follow/web01/a.log?from=4", "");
    let mut seen = Seen::default();
    read_until(&mut first, &mut seen, |s| s.contains("retry:"));
    let mut second = open_stream(&r, "/follow/web01/a.log?from=4", "");
    let mut refused = Seen::default();
    read_until(&mut second, &mut refused, |s| s.contains("</html>"));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    // Twenty silent clients: one gets the last slot, the rest wait in the
    // listen queue; no thread each.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", r.view.unwrap())).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        threads() <= base + 2,
        "{} threads, {base} before",
        threads()
    );
    // Meanwhile every upload is answered, and the stream follows them.
    let mut offset = 4;
    for i in 0..50 {
        let line = format!("line {i}\n");
        assert!(
            r.upload("web01", "a.log", offset, line.as_bytes()),
            "upload {i}"
        );
        offset += line.len() as i64;
    }
    read_until(&mut first, &mut seen, |s| s.contains("data: line 49\n"));
    drop(silent);
}

#[test]
fn a_huge_log_is_checked_in_bounded_steps() {
    let r = Receiver::start("view-huge", &["--view", "127.0.0.1:0"]);
    // Planted directly (as if uploaded long ago): 48 MiB, the failure last.
    std::fs::create_dir(r.logs().join("web01")).unwrap();
    let mut log = vec![b'.'; 48 << 20];
    for i in (0..log.len()).step_by(100) {
        log[i] = b'\n';
    }
    let tail = b"\nOut of memory: Killed process 1 (anaconda)\n";
    log.truncate(log.len() - tail.len());
    log.extend_from_slice(tail);
    let path = r.logs().join("web01/program.log");
    std::fs::write(&path, &log).unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    // The first look reads 32 MiB of it, not all.
    let first = r.get("/api/systems/web01").text();
    assert!(first.contains("\"state\": \"idle\""), "{first}");
    assert!(
        first.contains(&format!("\"unscanned_bytes\": {}", 16 << 20)),
        "{first}"
    );
    let j = wait_state(&r, "web01", "failed");
    let line = log.iter().filter(|&&b| b == b'\n').count();
    let why = &json(&j)["reasons"][0];
    assert_eq!(
        (&why["why"], &why["line"], &why["offset"]),
        (
            &serde_json::json!("the kernel ran out of memory"),
            &serde_json::json!(line),
            &serde_json::json!(log.len() - tail.len() + 1)
        ),
        "{j}"
    );
    assert!(j.contains("\"unscanned_bytes\": 0"), "{j}");
}
