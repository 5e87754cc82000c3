//! The Cobbler client: one `upload_log_data` call, in whichever wire form the
//! server understands, with every failure turned into an [`Error`] that says
//! what happened. Retrying is the shipper's business, not this module's.
//!
//! The transport is a trait so the wire-form negotiation is tested without
//! sockets; the real peer tests cover HTTP end to end.

use crate::xmlrpc::{self, Param, Response, Value};
use std::fmt;
use std::net::ToSocketAddrs;
use std::time::Duration;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// How `data` travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `<base64>`, which Python hands over as `Binary`: Cobbler ≥ 3.2.2.
    Binary,
    /// Base64 text in `<string>`: Cobbler 2.x to 3.2.1.
    Text,
}

impl Wire {
    fn other(self) -> Wire {
        match self {
            Wire::Binary => Wire::Text,
            Wire::Text => Wire::Binary,
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::Binary => "<base64> (Cobbler >= 3.2)",
            Wire::Text => "base64 text in <string> (Cobbler 2.x)",
        })
    }
}

/// The `--wire` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireChoice {
    /// Start with `<base64>`; on a fault before anything has worked, try the
    /// other form; keep whichever one the server first accepts.
    Auto,
    Fixed(Wire),
}

/// Every way a call can fail.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No connection: refused, unreachable, name lookup failed.
    Connect(String),
    /// Connected, but no complete answer within the time allowed.
    Timeout,
    /// The connection broke mid-request or mid-response.
    Io(String),
    /// An HTTP status other than 200 (Apache's error pages).
    Http { status: u16, detail: String },
    /// A 200 that is not an XML-RPC response (an HTML page, garbage).
    NotXmlRpc(String),
    /// The response was larger than any honest answer to this call.
    TooLarge,
    /// An XML-RPC fault: the server raised an exception.
    Fault { code: i64, message: String },
    /// `upload_log_data` answered `False`.
    Refused,
    /// A well-formed answer that is not a boolean.
    Unexpected(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Timeout => f.write_str("no answer in time"),
            Error::Io(e) => write!(f, "connection failed mid-request: {e}"),
            Error::Http { status, detail } => write!(f, "HTTP {status}{detail}"),
            Error::NotXmlRpc(e) => write!(f, "answer is not XML-RPC ({e})"),
            Error::TooLarge => write!(f, "answer larger than {MAX_RESPONSE} bytes"),
            Error::Fault { code, message } => {
                write!(f, "server fault {code}: {}", one_line(message, 200))
            }
            Error::Refused => f.write_str("upload_log_data answered False"),
            Error::Unexpected(v) => write!(f, "upload_log_data answered {v}, not a boolean"),
        }
    }
}

/// No answer to `upload_log_data` or `version` comes near this; a larger one
/// is a misconfigured proxy or a hostile peer, and is not read into memory.
pub const MAX_RESPONSE: u64 = 64 * 1024;

/// ureq's per-connection input and output buffers.
const IO_BUFFER: usize = 8 * 1024;

/// Sends one XML-RPC request body and returns the response body.
pub trait Transport {
    fn post(&mut self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error>;
}

/// HTTP/1.1 POST to `http://SERVER:PORT/PATH` (Cobbler: `/cobbler_api`) with ureq.
pub struct HttpTransport {
    url: String,
    agent: ureq::Agent,
}

impl HttpTransport {
    pub fn new(host: &str, port: u16, path: &str) -> HttpTransport {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("anamon/", env!("CARGO_PKG_VERSION")))
            // ureq allocates and zero-fills both buffers for every
            // connection, and Cobbler closes each one after a call: the
            // 128 KiB defaults cost ~90% of the agent's CPU on small
            // appends. Answers are tiny; 8 KiB sends a chunk in ~45 writes.
            .input_buffer_size(IO_BUFFER)
            .output_buffer_size(IO_BUFFER)
            .build();
        let agent =
            ureq::Agent::with_parts(config, DefaultConnector::default(), SameThreadResolver);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        HttpTransport {
            url: format!("http://{host}:{port}{path}"),
            agent,
        }
    }
}

/// Resolves on the calling thread. ureq's default resolver does it on a
/// helper thread whenever a timeout is set, and waits for it on a futex:
/// before Linux 2.6.22 that wait has no working syscall and busy-spins, and
/// every thread is one more thing for an old kernel to get wrong.
#[derive(Debug)]
struct SameThreadResolver;

impl Resolver for SameThreadResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let mut addrs = self.empty();
        // ureq keeps at most 16 addresses.
        for addr in (host, port).to_socket_addrs()?.take(16) {
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(addrs)
    }
}

impl Transport for HttpTransport {
    fn post(&mut self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        let _in_flight = crate::sys::RequestInFlight::begin();
        let resp = self
            .agent
            .post(&self.url)
            .header("Content-Type", "text/xml")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body)
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let html = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        let body = resp
            .into_body()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(transport_error)?;
        if status != 200 {
            return Err(Error::Http {
                status,
                detail: page_summary(&body),
            });
        }
        if html {
            return Err(Error::NotXmlRpc(format!(
                "an HTML page{}",
                page_summary(&body)
            )));
        }
        Ok(body)
    }
}

fn transport_error(e: ureq::Error) -> Error {
    match e {
        ureq::Error::Timeout(_) => Error::Timeout,
        ureq::Error::BodyExceedsLimit(_) => Error::TooLarge,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => Error::Connect(e.to_string()),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable
            | std::io::ErrorKind::AddrNotAvailable => Error::Connect(io.to_string()),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Error::Timeout,
            _ => Error::Io(io.to_string()),
        },
        other => Error::Io(other.to_string()),
    }
}

/// `: <title>` of an error page, or its first words, for the log line.
fn page_summary(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let lower = text.to_ascii_lowercase();
    let summary = match (lower.find("<title>"), lower.find("</title>")) {
        (Some(a), Some(b)) if b > a => text[a + 7..b].to_string(),
        _ => text.to_string(),
    };
    let summary = one_line(&summary, 80);
    if summary.is_empty() {
        String::new()
    } else {
        format!(": {summary}")
    }
}

/// Whitespace folded, cut at `max` characters: faults carry Python
/// tracebacks, and a log line must stay one line.
fn one_line(s: &str, max: usize) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &folded[..i]),
        None => folded,
    }
}

/// A Cobbler server, as far as anamon uses it.
pub struct Client<T> {
    transport: T,
    choice: WireChoice,
    wire: Wire,
    /// Set once the server has accepted an upload in `wire`; from then on a
    /// fault is the server's trouble, not a sign of the wrong wire form.
    wire_confirmed: bool,
    /// Sent as the 6th argument when set (see `cli`'s --token).
    token: Option<String>,
}

impl<T: Transport> Client<T> {
    pub fn new(transport: T, choice: WireChoice) -> Client<T> {
        let wire = match choice {
            WireChoice::Auto => Wire::Binary,
            WireChoice::Fixed(w) => w,
        };
        Client {
            transport,
            choice,
            wire,
            wire_confirmed: false,
            token: None,
        }
    }

    /// Sends `token` with every upload (Cobbler's optional `token` argument).
    pub fn with_token(mut self, token: Option<String>) -> Client<T> {
        self.token = token;
        self
    }

    /// The wire form in use, and whether the server has confirmed it.
    pub fn wire(&self) -> (Wire, bool) {
        (self.wire, self.wire_confirmed)
    }

    /// Uploads `data` to be written at `offset` of `file` on the server.
    /// Returns `Ok(Some(wire))` the first time a wire form is confirmed, so
    /// the caller can say so once.
    pub fn upload(
        &mut self,
        name: &str,
        file: &str,
        offset: u64,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Option<Wire>, Error> {
        let offset =
            i64::try_from(offset).map_err(|_| Error::Unexpected("an offset beyond 2^63".into()))?;
        let result = self.upload_as(self.wire, name, file, offset, data, timeout);
        let result = match result {
            Err(Error::Fault { .. }) if self.choice == WireChoice::Auto && !self.wire_confirmed => {
                // Each contract's server raises on the other's data type
                // (`'str' object has no attribute 'data'`, `decodestring`
                // on a Binary), so a fault is the cue to try the other form.
                let other = self.wire.other();
                match self.upload_as(other, name, file, offset, data, timeout) {
                    Err(Error::Fault { .. }) => result,
                    r => {
                        if r.is_ok() {
                            self.wire = other;
                        }
                        r
                    }
                }
            }
            r => r,
        };
        result?;
        if self.wire_confirmed {
            Ok(None)
        } else {
            self.wire_confirmed = true;
            Ok(Some(self.wire))
        }
    }

    fn upload_as(
        &mut self,
        wire: Wire,
        name: &str,
        file: &str,
        offset: i64,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), Error> {
        let data_param = match wire {
            Wire::Binary => Param::Base64(data),
            Wire::Text => Param::Base64Text(data),
        };
        let size = i64::try_from(data.len()).expect("chunks are small");
        let params = [
            Param::Str(name),
            Param::Str(file),
            Param::Int(size),
            Param::Int(offset),
            data_param,
            Param::Str(self.token.as_deref().unwrap_or_default()),
        ];
        let given = if self.token.is_some() { 6 } else { 5 };
        let body = xmlrpc::encode_call("upload_log_data", &params[..given]);
        match self.call(&body, timeout)? {
            Value::Bool(true) => Ok(()),
            Value::Bool(false) => Err(Error::Refused),
            other => Err(Error::Unexpected(other.describe())),
        }
    }

    /// Cobbler's release, e.g. "3.3.10", from `extended_version()` (or the
    /// float `version()`, which cannot tell 3.3.1 from 3.3.10); neither needs
    /// a login. Used only to explain a refusal: every 3.3.x refuses uploads.
    pub fn version(&mut self, timeout: Duration) -> Result<String, Error> {
        let body = xmlrpc::encode_call("extended_version", &[]);
        if let Ok(Value::Struct(members)) = self.call(&body, timeout) {
            if let Some((_, Value::Str(v))) = members.iter().find(|(k, _)| k == "version") {
                return Ok(v.clone());
            }
        }
        let body = xmlrpc::encode_call("version", &[]);
        Ok(match self.call(&body, timeout)? {
            Value::Double(d) => d,
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            other => other.describe(),
        })
    }

    fn call(&mut self, body: &[u8], timeout: Duration) -> Result<Value, Error> {
        let resp = self.transport.post(body, timeout)?;
        match xmlrpc::parse_response(&resp).map_err(|e| Error::NotXmlRpc(e.0))? {
            Response::Value(v) => Ok(v),
            Response::Fault { code, message } => Err(Error::Fault { code, message }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scripted server: answers each request with the next canned reply
    /// and records which wire form each request used.
    struct Scripted {
        replies: Vec<Result<&'static str, Error>>,
        seen: Vec<Wire>,
    }

    // Answers as Cobbler gives them; TRUE and FAULT serve the shipper's tests too.
    pub(crate) const TRUE: &str = "<methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse>";
    const FALSE: &str = "<methodResponse><params><param><value><boolean>0</boolean></value></param></params></methodResponse>";
    pub(crate) const FAULT: &str = "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>boom</string></value></member></struct></value></fault></methodResponse>";

    impl Transport for Scripted {
        fn post(&mut self, body: &[u8], _: Duration) -> Result<Vec<u8>, Error> {
            let s = String::from_utf8_lossy(body);
            self.seen.push(if s.contains("<base64>") {
                Wire::Binary
            } else {
                Wire::Text
            });
            self.replies.remove(0).map(|r| r.as_bytes().to_vec())
        }
    }

    fn client(replies: Vec<Result<&'static str, Error>>, choice: WireChoice) -> Client<Scripted> {
        Client::new(
            Scripted {
                replies,
                seen: Vec::new(),
            },
            choice,
        )
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn auto_switches_to_text_on_a_fault_and_keeps_it() {
        let mut c = client(vec![Ok(FAULT), Ok(TRUE), Ok(TRUE)], WireChoice::Auto);
        assert_eq!(c.upload("n", "f", 0, b"x", T).unwrap(), Some(Wire::Text));
        assert_eq!(c.upload("n", "f", 1, b"y", T).unwrap(), None);
        assert_eq!(c.transport.seen, [Wire::Binary, Wire::Text, Wire::Text]);
    }

    #[test]
    fn confirmed_wire_never_switches() {
        let mut c = client(vec![Ok(TRUE), Ok(FAULT)], WireChoice::Auto);
        assert_eq!(c.upload("n", "f", 0, b"x", T).unwrap(), Some(Wire::Binary));
        assert!(matches!(
            c.upload("n", "f", 1, b"y", T),
            Err(Error::Fault { .. })
        ));
        assert_eq!(c.transport.seen, [Wire::Binary, Wire::Binary]);
    }

    #[test]
    fn both_forms_faulting_reports_the_first_fault() {
        let mut c = client(vec![Ok(FAULT), Ok(FAULT)], WireChoice::Auto);
        assert!(matches!(
            c.upload("n", "f", 0, b"x", T),
            Err(Error::Fault { .. })
        ));
        assert_eq!(c.wire(), (Wire::Binary, false));
    }

    #[test]
    fn fixed_wire_does_not_negotiate() {
        let mut c = client(vec![Ok(FAULT)], WireChoice::Fixed(Wire::Text));
        assert!(matches!(
            c.upload("n", "f", 0, b"x", T),
            Err(Error::Fault { .. })
        ));
        assert_eq!(c.transport.seen, [Wire::Text]);
    }

    #[test]
    fn false_is_a_refusal_and_other_values_are_unexpected() {
        let mut c = client(vec![Ok(FALSE)], WireChoice::Auto);
        assert!(matches!(
            c.upload("n", "f", 0, b"x", T),
            Err(Error::Refused)
        ));
        let mut c = client(
            vec![Ok("<methodResponse><params><param><value><int>3</int></value></param></params></methodResponse>")],
            WireChoice::Auto,
        );
        assert!(matches!(
            c.upload("n", "f", 0, b"x", T),
            Err(Error::Unexpected(_))
        ));
    }

    #[test]
    fn page_summary_prefers_the_title() {
        assert_eq!(
            page_summary(b"<html><head><title>502 Bad\n Gateway</title></head>"),
            ": 502 Bad Gateway"
        );
        assert_eq!(page_summary(b""), "");
    }
}
