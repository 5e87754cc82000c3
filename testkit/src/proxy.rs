//! One scriptable fault proxy between the agent and the server: for each
//! connection (one request: the Cobbler peer speaks HTTP/1.0 and closes
//! after each answer) a schedule the test sets picks what happens.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Forward to the server and back.
    Pass,
    /// Read the request, answer with this status and page, close. See the
    /// canned answers below.
    Answer(Answer),
    /// Read the request, answer these raw bytes (garbage, a lying head),
    /// close.
    Raw(&'static [u8]),
    /// Accept, read the request, never answer (until the test ends).
    Hang,
    /// Accept and shut the connection down at once.
    CloseAtOnce,
    /// Read the headers and half the body, then reset (RST).
    ResetMidRequest,
    /// Forward the whole request (the server stores the chunk), then send
    /// the first `n` bytes of its answer and reset. `n = 0` is the fault
    /// exactly between "stored" and "the agent sees True".
    ResetMidResponse(usize),
    /// Wait, then forward. The agent may have given up meanwhile; the late
    /// request still reaches the server.
    Delay(Duration),
    /// Forward at once (the server stores the chunk), wait, then answer.
    DelayAnswer(Duration),
    /// Answer 200 and stream bytes for up to a minute.
    Endless,
}

/// An HTTP answer: status line, content type, body (the length is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Apache's 502 page when the backend is down.
pub const HTML_502: Answer = Answer {
    status: "502 Bad Gateway",
    content_type: "text/html; charset=iso-8859-1",
    body: "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>502 Proxy Error</title>\n</head><body>\n<h1>Proxy Error</h1></body></html>\n",
};
/// A web page with status 200 (a captive portal, a misrouted proxy).
pub const HTML_200: Answer = Answer {
    status: "200 OK",
    content_type: "text/html",
    body: "<html><head><title>Welcome</title></head></html>",
};
/// Apache's 500 page.
pub const HTML_500: Answer = Answer {
    status: "500 Internal Server Error",
    content_type: "text/html; charset=iso-8859-1",
    body: "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>500 Internal Server Error</title>\n</head><body>\n<h1>Internal Server Error</h1>\n<p>The server encountered an internal error or\nmisconfiguration and was unable to complete\nyour request.</p>\n</body></html>\n",
};
/// Cobbler's lock conflict, as an XML-RPC fault.
pub const XMLRPC_FAULT: Answer = Answer {
    status: "200 OK",
    content_type: "text/xml",
    body: "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>1</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>&lt;class 'BlockingIOError'&gt;:[Errno 11] Resource temporarily unavailable</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n",
};
/// XML that stops halfway.
pub const TRUNCATED_XML: Answer = Answer {
    status: "200 OK",
    content_type: "text/xml",
    body: "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><bool",
};
/// Bytes that are not HTTP at all.
pub const GARBAGE: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\xff\xfeSSH-2.0-OpenSSH_9.2\r\n\x00\x00\x00\x00garbage\n\n\n";
/// A Content-Length no honest answer has, then close.
pub const HUGE_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 99999999999\r\n\r\n<?xml version='1.0'?>\n<methodResponse>\n<params>";
/// A complete `True`, but 500 bytes promised.
pub const SHORT_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\r\n<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><boolean>1</boolean></value>\n</param>\n</params>\n</methodResponse>\n";

/// Connection number (from 0) → what to do with it.
pub type Schedule = Box<dyn FnMut(u64) -> Act + Send>;

/// `act` for every connection.
pub fn always(act: Act) -> Schedule {
    Box::new(move |_| act)
}

/// `act` for the first `n` connections, then pass through.
pub fn first(n: u64, act: Act) -> Schedule {
    Box::new(move |i| if i < n { act } else { Act::Pass })
}

/// A TCP listener on 127.0.0.1 that hands each connection, numbered from 0,
/// to `serve` on a thread of its own, until dropped. `serve` also gets the
/// stop flag, so that connections it keeps open can end with the test.
pub struct Listener {
    pub port: u16,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    pub fn start(
        serve: impl Fn(TcpStream, u64, Arc<AtomicBool>) + Send + Sync + 'static,
    ) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let serve = Arc::new(serve);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (serve, stop) = (serve.clone(), s.clone());
                std::thread::spawn(move || serve(conn, n, stop));
            }
        });
        Listener {
            port,
            connections,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The proxy, listening on 127.0.0.1:`port`, forwarding to `upstream`.
pub struct FaultProxy {
    pub port: u16,
    schedule: Arc<Mutex<Schedule>>,
    listener: Listener,
}

impl FaultProxy {
    pub fn start(upstream: u16, schedule: Schedule) -> FaultProxy {
        let schedule = Arc::new(Mutex::new(schedule));
        let sch = schedule.clone();
        let listener = Listener::start(move |conn, n, stop| {
            let act = (sch.lock().unwrap())(n);
            serve(conn, act, upstream, &stop)
        });
        FaultProxy {
            port: listener.port,
            schedule,
            listener,
        }
    }

    pub fn set(&self, schedule: Schedule) {
        *self.schedule.lock().unwrap() = schedule;
    }

    /// Every connection from now on passes through.
    pub fn heal(&self) {
        self.set(always(Act::Pass));
    }

    pub fn connections(&self) -> u64 {
        self.listener.connections()
    }
}

/// Reads an HTTP request head; returns what was read (the head and any
/// body bytes that came with it), where the body starts, and the
/// Content-Length.
pub fn read_head(conn: &mut TcpStream) -> Option<(Vec<u8>, usize, usize)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let n = conn.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            return Some((buf, end + 4, len));
        }
    }
}

/// Reads one whole HTTP request (head and Content-Length body).
pub fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let (mut buf, body_at, len) = read_head(conn)?;
    let mut tmp = [0u8; 65536];
    while buf.len() < body_at + len {
        let n = conn.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(buf)
}

/// Sends `request` to 127.0.0.1:`upstream` and returns the whole answer.
pub fn forward(request: &[u8], upstream: u16) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    up.write_all(request).ok()?;
    Some(read_response(&mut up))
}

/// Reads one HTTP response: its head and, if it has a Content-Length, that
/// many body bytes (a server that keeps the connection open for another
/// request does not close it after the answer); otherwise all there is
/// until the server closes. Whatever arrived, if the connection fails.
pub fn read_response(conn: &mut TcpStream) -> Vec<u8> {
    let Some((mut buf, body_at, len)) = read_head(conn) else {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        return rest;
    };
    let head = String::from_utf8_lossy(&buf[..body_at]).to_ascii_lowercase();
    if !head.contains("\ncontent-length:") {
        let _ = conn.read_to_end(&mut buf);
        return buf;
    }
    let mut tmp = [0u8; 65536];
    while buf.len() < body_at + len {
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    buf
}

fn serve(mut conn: TcpStream, act: Act, upstream: u16, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    match act {
        Act::CloseAtOnce => {
            let _ = conn.shutdown(Shutdown::Both);
        }
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
            crate::sys::reset(conn);
        }
        Act::Raw(bytes) => {
            if read_request(&mut conn).is_some() {
                let _ = conn.write_all(bytes);
            }
        }
        Act::Answer(a) => {
            if read_request(&mut conn).is_some() {
                let head = format!(
                    "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    a.status,
                    a.content_type,
                    a.body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(a.body.as_bytes());
            }
        }
        Act::Hang => {
            let _ = read_request(&mut conn);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Act::Endless => {
            if read_request(&mut conn).is_none() {
                return;
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<methodResponse>");
            let junk = [b'x'; 8192];
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst)
                && Instant::now() < end
                && conn.write_all(&junk).is_ok()
            {}
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
                    crate::sys::reset(conn);
                }
                _ => {
                    let _ = conn.write_all(&resp);
                }
            }
        }
    }
}

/// Apache in front of Cobbler 3.3 with anamon-receiver's snippet, in small:
/// requests for `/anamon_api` go to the receiver (as its `/cobbler_api`),
/// everything else to Cobbler.
pub struct Router {
    pub port: u16,
    _listener: Listener,
}

impl Router {
    pub fn start(cobbler: u16, receiver: u16) -> Router {
        let listener = Listener::start(move |mut conn, _, _| {
            let Some(request) = read_request(&mut conn) else {
                return;
            };
            let (upstream, request) = match request.strip_prefix(b"POST /anamon_api ") {
                Some(rest) => (receiver, [&b"POST /cobbler_api "[..], rest].concat()),
                None => (cobbler, request),
            };
            if let Some(resp) = forward(&request, upstream) {
                let _ = conn.write_all(&resp);
            }
        });
        Router {
            port: listener.port,
            _listener: listener,
        }
    }
}
