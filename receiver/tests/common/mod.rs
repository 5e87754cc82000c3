//! The receiver's integration tests' harness: the real binary on
//! loopback in a scratch directory, raw HTTP, XML-RPC calls by hand.
#![allow(dead_code)] // each test file uses its own part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Receiver {
    pub child: Child,
    pub port: u16,
    pub root: PathBuf,
    /// The live view's port, when started with `--view`.
    pub view: Option<u16>,
}

impl Receiver {
    pub fn start(tag: &str, extra: &[&str]) -> Receiver {
        let root = std::env::temp_dir().join(format!("receiver-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("logs")).unwrap();
        let port_file = root.join("port");
        let view_file = root.join("view-port");
        let with_view = extra.contains(&"--view");
        let child = Command::new(env!("CARGO_BIN_EXE_anamon-receiver"))
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(root.join("logs"))
            .arg("--port-file")
            .arg(&port_file)
            .args(if with_view {
                vec!["--view-port-file".as_ref(), view_file.as_os_str()]
            } else {
                vec![]
            })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("receiver.log")).unwrap())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while !port_file.exists() || (with_view && !view_file.exists()) {
            assert!(Instant::now() < end, "receiver did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let read_port = |p: &Path| std::fs::read_to_string(p).unwrap().trim().parse().unwrap();
        let port = read_port(&port_file);
        let view = with_view.then(|| read_port(&view_file));
        Receiver {
            child,
            port,
            root,
            view,
        }
    }

    /// Sends raw bytes to the live view; returns the status and the body
    /// (the head's lines in `head`).
    pub fn view_raw(&self, request: &[u8]) -> Response {
        let mut c =
            TcpStream::connect(("127.0.0.1", self.view.expect("started with --view"))).unwrap();
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

    /// Uploads `data` as `system`/`file` at `offset` (size = its length);
    /// true if answered True.
    pub fn upload(&self, system: &str, file: &str, offset: i64, data: &[u8]) -> bool {
        is_true(&self.post(&upload(system, file, data.len() as i64, offset, &b64(data))))
    }

    pub fn connect(&self) -> TcpStream {
        let c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    /// Sends raw bytes, returns the whole response.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut c = self.connect();
        let _ = c.write_all(request);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn post(&self, body: &str) -> String {
        self.raw(
            format!(
                "POST /cobbler_api HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .unwrap()
            .count()
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

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
