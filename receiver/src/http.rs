//! Just enough HTTP/1.x for XML-RPC: one POST with a Content-Length body per
//! connection, answered and closed (as Cobbler's own server does). Every
//! limit is explicit: head size, body size, and one deadline for the whole
//! request, so a slow or silent client holds a connection slot for at most
//! `timeout`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8192;

/// Paths the receiver answers: Cobbler's Apache path, and what Python's
/// SimpleXMLRPCServer (cobblerd) answers behind it.
pub const RPC_PATHS: [&str; 3] = ["/cobbler_api", "/RPC2", "/"];

#[derive(Debug)]
pub struct Request {
    pub body: Vec<u8>,
    /// The address a proxy in front says the request came from: the last
    /// entry of the last `X-Forwarded-For` header (the one the nearest
    /// proxy added; the ones before it are the client's to invent).
    pub forwarded_for: Option<std::net::IpAddr>,
}

/// A request that gets an HTTP error (or nothing, if the client is gone).
#[derive(Debug)]
pub enum Reject {
    Status(u16, String),
    /// The client went away or never finished: nobody to answer.
    Gone(String),
    /// The client connected and closed without a byte (a port probe).
    Probe,
}

/// A request head: the request line's method and target, and the header
/// lines, checked to be `Name: value` and text.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The value of the header `name` (case-insensitive), if sent once or
    /// more (the first).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The last value of the header `name`.
    pub fn last_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request head within `deadline`; returns it and what was read
/// past it (the start of a body).
pub fn read_head(conn: &mut TcpStream, deadline: Instant) -> Result<(Head, Vec<u8>), Reject> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Reject::Status(
                431,
                format!("request head over {MAX_HEAD} bytes"),
            ));
        }
        let room = MAX_HEAD + 4 - buf.len();
        if read_some(conn, &mut buf, room, deadline)? == 0 {
            return Err(if buf.is_empty() {
                Reject::Probe
            } else {
                Reject::Gone("closed before the request head ended".into())
            });
        }
    };
    let rest = buf.split_off(head_end + 4);
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| Reject::Status(400, "request head is not text".into()))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version), None) = (method, target, version, parts.next())
    else {
        return Err(Reject::Status(400, "malformed request line".into()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Reject::Status(505, format!("{version} is not HTTP/1.x")));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Reject::Status(400, "malformed header line".into()));
        };
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok((
        Head {
            method: method.to_string(),
            target: target.to_string(),
            headers,
        },
        rest,
    ))
}

/// Reads one request. `max_body` bounds Content-Length; `deadline` bounds
/// the time to receive all of it.
pub fn read_request(
    conn: &mut TcpStream,
    max_body: usize,
    deadline: Instant,
) -> Result<Request, Reject> {
    let (head, mut body) = read_head(conn, deadline)?;
    let (method, path) = (head.method.as_str(), head.target.as_str());
    if method != "POST" {
        return Err(Reject::Status(
            405,
            format!("{method} {path}: XML-RPC needs POST"),
        ));
    }
    if !RPC_PATHS.contains(&path) {
        return Err(Reject::Status(
            404,
            format!("{path} is not an XML-RPC endpoint"),
        ));
    }
    let mut length: Option<usize> = None;
    let mut expect_continue = false;
    for (name, value) in &head.headers {
        let value = value.as_str();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| Reject::Status(400, format!("Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject::Status(
                    400,
                    "conflicting Content-Length headers".into(),
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Request smuggling starts with bodies framed two ways; XML-RPC
            // clients send Content-Length.
            return Err(Reject::Status(
                501,
                "Transfer-Encoding is not supported".into(),
            ));
        } else if name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
        {
            expect_continue = true;
        }
    }
    let Some(length) = length else {
        return Err(Reject::Status(411, "a Content-Length is required".into()));
    };
    if length > max_body {
        return Err(Reject::Status(
            413,
            format!("body of {length} bytes is over this receiver's limit of {max_body}"),
        ));
    }
    if body.len() > length {
        return Err(Reject::Status(400, "more data than Content-Length".into()));
    }
    if expect_continue && body.len() < length {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    body.reserve_exact(length - body.len());
    while body.len() < length {
        let missing = length - body.len();
        if read_some(conn, &mut body, missing, deadline)? == 0 {
            return Err(Reject::Gone(format!(
                "closed after {} of {length} body bytes",
                body.len()
            )));
        }
    }
    let forwarded_for = head
        .last_header("x-forwarded-for")
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok());
    Ok(Request {
        body,
        forwarded_for,
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Appends at most `max` bytes read from `conn` to `buf`; 0 at EOF.
fn read_some(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<usize, Reject> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Reject::Status(408, "request not received in time".into()));
    }
    conn.set_read_timeout(Some(left))
        .map_err(|e| Reject::Gone(e.to_string()))?;
    let start = buf.len();
    buf.resize(start + max.min(65536), 0);
    let r = conn.read(&mut buf[start..]);
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    match r {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(Reject::Status(408, "request not received in time".into()))
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            Ok(read_some(conn, buf, max, deadline)?)
        }
        Err(e) => Err(Reject::Gone(e.to_string())),
    }
}

/// Writes a complete response and closes the write side.
pub fn respond(
    conn: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nServer: anamon-receiver\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    conn.write_all(&out)?;
    conn.shutdown(std::net::Shutdown::Write)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}
