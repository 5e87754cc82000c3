//! What the receiver's integration tests share beyond anamon_testkit:
//! XML-RPC calls written by hand, and the live view of a receiver started
//! with `--view`.
#![allow(dead_code)] // each test file uses its own part

use anamon_testkit::{Peer, Scratch};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The receiver cargo built for these tests, with `extra` flags; with
/// `--view` among them, its view's port too.
pub struct Receiver {
    pub peer: Peer,
    pub dir: Scratch,
    pub view: Option<u16>,
}

impl Receiver {
    pub fn start(tag: &str, extra: &[&str]) -> Receiver {
        let dir = Scratch::new(tag);
        let view_file = dir.path("view-port");
        let mut args: Vec<&str> = extra.to_vec();
        let with_view = extra.contains(&"--view");
        if with_view {
            args.extend(["--view-port-file", view_file.to_str().unwrap()]);
        }
        let peer = Peer::receiver_binary(
            Path::new(env!("CARGO_BIN_EXE_anamon-receiver")),
            &dir,
            0,
            &args,
        );
        // The view listens before the uploads do, so its port file is there.
        let view = with_view.then(|| {
            std::fs::read_to_string(&view_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        });
        Receiver { peer, dir, view }
    }

    /// The log directory.
    pub fn logs(&self) -> PathBuf {
        self.peer.logdir.clone()
    }

    /// The receiver's own log (stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path("receiver.log")).unwrap_or_default()
    }

    pub fn post(&self, body: &str) -> String {
        self.peer.post(body)
    }

    pub fn raw(&self, request: &[u8]) -> String {
        self.peer.raw(request)
    }

    /// Uploads `data` as `system`/`file` at `offset` (size = its length);
    /// true if answered True.
    pub fn upload(&self, system: &str, file: &str, offset: i64, data: &[u8]) -> bool {
        is_true(&self.post(&upload(system, file, data.len() as i64, offset, &b64(data))))
    }

    /// Sends raw bytes to the live view; returns the answer, split.
    pub fn view_raw(&self, request: &[u8]) -> Response {
        let port = self.view.expect("started with --view");
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = c.write_all(request);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        Response::parse(&out)
    }

    /// GET `target` from the live view.
    pub fn get(&self, target: &str) -> Response {
        self.view_raw(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }
}

/// An upload_log_data call.
pub fn upload(system: &str, file: &str, size: i64, offset: i64, b64: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>upload_log_data</methodName><params>\
         <param><value><string>{system}</string></value></param>\
         <param><value><string>{file}</string></value></param>\
         <param><value><int>{size}</int></value></param>\
         <param><value><int>{offset}</int></value></param>\
         <param><value><base64>{b64}</base64></value></param></params></methodCall>"
    )
}

pub fn is_true(resp: &str) -> bool {
    resp.starts_with("HTTP/1.1 200") && resp.contains("<boolean>1</boolean>")
}

pub fn is_false(resp: &str) -> bool {
    resp.starts_with("HTTP/1.1 200") && resp.contains("<boolean>0</boolean>")
}

pub fn is_fault(resp: &str) -> bool {
    resp.starts_with("HTTP/1.1 200") && resp.contains("<fault>")
}

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every path below `dir`.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&p));
            }
            out.push(p);
        }
    }
    out
}

/// An HTTP response, split.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Response {
            status,
            head,
            body: raw.get(end + 4..).unwrap_or_default().to_vec(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Polls `f` until it gives Some, for up to `seconds` (a wait, not a
/// timed assertion: slow machines only wait longer).
pub fn wait_for<T>(what: &str, seconds: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
