//! Names Cobbler knows (`--cobbler-api URL`): on a Cobbler server the
//! receiver stores logs only for a system or profile that cobblerd has, as
//! Cobbler's own `upload_log_data` does. It asks cobblerd's XML-RPC with the
//! read-only calls that need no login (`get_system`, then `get_profile`:
//! both answer a struct for a known name and `"~"` for an unknown one) and
//! caches each answer briefly, so an install's stream of uploads costs
//! cobblerd one lookup a minute.
//!
//! Lookups go one at a time: however many clients send unknown names,
//! cobblerd sees at most one of these calls at once.

use anamon_xmlrpc::{encode_call, parse_response, Param, Response, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a "known" answer is trusted: a system removed from Cobbler
/// stops being accepted within this time.
const KNOWN_FOR: Duration = Duration::from_secs(60);
/// How long an "unknown" answer is trusted: short, so a system added to
/// Cobbler just before its install starts is not refused for long.
const UNKNOWN_FOR: Duration = Duration::from_secs(5);
/// Cached names at most; past it the oldest half of the cache is dropped.
const MAX_CACHED: usize = 4096;
/// Time for one whole lookup (connect, call, answer).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read: a system's struct is a few KiB.
const MAX_ANSWER: u64 = 4 << 20;

/// Where cobblerd's XML-RPC listens: `http://ADDRESS:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: String,
}

impl Endpoint {
    /// Parses `http://127.0.0.1:25151` or `http://127.0.0.1:25151/RPC2`. Only
    /// an IP address: the receiver resolves no names (cobblerd is local).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad =
            || format!("{url:?}: expected http://ADDRESS:PORT[/PATH], e.g. http://127.0.0.1:25151");
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host.parse().map_err(|_| bad())?;
        if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(bad());
        }
        Ok(Endpoint {
            addr,
            path: path.to_string(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// Cobbler's answer about one name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// A system or a profile of that name exists.
    Known,
    Unknown,
}

pub struct CobblerNames {
    endpoint: Endpoint,
    cache: Mutex<HashMap<String, (Instant, Verdict)>>,
    /// Held for the duration of a lookup: one call to cobblerd at a time.
    lookup: Mutex<()>,
}

impl CobblerNames {
    pub fn new(endpoint: Endpoint) -> CobblerNames {
        CobblerNames {
            endpoint,
            cache: Mutex::new(HashMap::new()),
            lookup: Mutex::new(()),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether Cobbler knows `name`, from the cache or by asking. An error
    /// (cobblerd down, a fault) is never cached: the caller answers a fault
    /// and the agent retries.
    pub fn verdict(&self, name: &str) -> Result<Verdict, String> {
        // Only a name Cobbler could have reaches cobblerd.
        if !anamon_names::is_system_name(name) {
            return Ok(Verdict::Unknown);
        }
        if let Some(v) = self.cached(name) {
            return Ok(v);
        }
        let _one_at_a_time = self.lookup.lock().unwrap_or_else(|e| e.into_inner());
        // Another connection may have asked while this one waited.
        if let Some(v) = self.cached(name) {
            return Ok(v);
        }
        let mut verdict = Verdict::Unknown;
        for method in ["get_system", "get_profile"] {
            if self.ask(method, name)? == Verdict::Known {
                verdict = Verdict::Known;
                break;
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (at, v)| now.duration_since(*at) < ttl(*v));
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(name.to_string(), (Instant::now(), verdict));
        Ok(verdict)
    }

    fn cached(&self, name: &str) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, v) = cache.get(name)?;
        (at.elapsed() < ttl(*v)).then_some(*v)
    }

    fn ask(&self, method: &str, name: &str) -> Result<Verdict, String> {
        let why = |e: String| format!("{method}({name:?}) at {}: {e}", self.endpoint.url());
        let body = call(&self.endpoint, &encode_call(method, &[Param::Str(name)])).map_err(why)?;
        interpret(&body).map_err(why)
    }
}

fn ttl(v: Verdict) -> Duration {
    match v {
        Verdict::Known => KNOWN_FOR,
        Verdict::Unknown => UNKNOWN_FOR,
    }
}

/// What `get_system`/`get_profile` answered: a struct for an item, `"~"`
/// (Cobbler's stand-in for None) for no item.
fn interpret(body: &[u8]) -> Result<Verdict, String> {
    match parse_response(body).map_err(|e| format!("unreadable answer: {e}"))? {
        Response::Value(Value::Struct(_)) => Ok(Verdict::Known),
        Response::Value(Value::Str(s)) if s == "~" => Ok(Verdict::Unknown),
        Response::Value(v) => Err(format!("unexpected answer: {}", v.describe())),
        Response::Fault { code, message } => Err(format!("fault {code}: {message}")),
    }
}

/// One HTTP/1.0 POST (cobblerd's server speaks HTTP/1.0 and closes after
/// each answer); returns the body of a 200 answer.
fn call(endpoint: &Endpoint, body: &[u8]) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + LOOKUP_TIMEOUT;
    let mut conn = TcpStream::connect_timeout(&endpoint.addr, LOOKUP_TIMEOUT)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut request = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: anamon-receiver\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        endpoint.path,
        endpoint.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    conn.set_write_timeout(Some(LOOKUP_TIMEOUT))
        .and_then(|()| conn.write_all(&request))
        .map_err(|e| format!("cannot send the call: {e}"))?;
    let mut answer = Vec::new();
    let mut limited = (&mut conn).take(MAX_ANSWER + 1);
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no whole answer within {LOOKUP_TIMEOUT:?}"));
        }
        limited
            .get_mut()
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    if answer.len() as u64 > MAX_ANSWER {
        return Err(format!("answer over {MAX_ANSWER} bytes"));
    }
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete HTTP head")?;
    let status_line = answer[..head_end]
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some("200")) if v.starts_with("HTTP/1.") => Ok(answer[head_end + 4..].to_vec()),
        _ => Err(format!("HTTP answer {status_line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:25151").unwrap();
        assert_eq!((e.addr.port(), e.path.as_str()), (25151, "/"));
        assert_eq!(e.url(), "http://127.0.0.1:25151/");
        let e = Endpoint::parse("http://[::1]:25151/RPC2").unwrap();
        assert_eq!(e.path, "/RPC2");
        for bad in [
            "",
            "127.0.0.1:25151",
            "https://127.0.0.1:25151",
            "http://localhost:25151",
            "http://127.0.0.1",
            "http://127.0.0.1:25151/a b",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    const KNOWN: &[u8] = b"<?xml version='1.0'?>\n<methodResponse><params><param><value><struct><member><name>name</name><value><string>web01</string></value></member></struct></value></param></params></methodResponse>";
    const NONE: &[u8] = b"<?xml version='1.0'?>\n<methodResponse><params><param><value><string>~</string></value></param></params></methodResponse>";

    #[test]
    fn answers_are_read_as_cobbler_means_them() {
        assert_eq!(interpret(KNOWN), Ok(Verdict::Known));
        assert_eq!(interpret(NONE), Ok(Verdict::Unknown));
        let fault = b"<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>boom</string></value></member></struct></value></fault></methodResponse>";
        assert!(interpret(fault).unwrap_err().contains("boom"));
        assert!(interpret(b"<html>").is_err());
    }

    /// A cobblerd stand-in on 127.0.0.1 that knows `known` as a system and
    /// counts the calls it answers.
    fn scripted(known: &'static str) -> (Endpoint, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&req).contains("</methodCall>") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&req);
                let hit = text.contains("get_system")
                    && text.contains(&format!("<string>{known}</string>"));
                let body = if hit { KNOWN } else { NONE };
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(body);
            }
        });
        (
            Endpoint {
                addr,
                path: "/".into(),
            },
            calls,
        )
    }

    #[test]
    fn asks_system_then_profile_and_caches() {
        let (endpoint, calls) = scripted("web01");
        let names = CobblerNames::new(endpoint);
        assert_eq!(names.verdict("web01"), Ok(Verdict::Known));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a system needs one call");
        assert_eq!(names.verdict("web01"), Ok(Verdict::Known));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the second answer is cached"
        );
        assert_eq!(names.verdict("nosuch"), Ok(Verdict::Unknown));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "unknown: system, then profile"
        );
        // Names Cobbler cannot have never reach it.
        assert_eq!(names.verdict("../etc"), Ok(Verdict::Unknown));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_missing_cobblerd_is_an_error_not_a_verdict() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let names =
            CobblerNames::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap());
        let err = names.verdict("web01").unwrap_err();
        assert!(
            err.contains("get_system(\"web01\")") && err.contains("cannot connect"),
            "{err}"
        );
        assert!(names.cached("web01").is_none(), "errors are not cached");
    }
}
