//! HTTP under the client: one POST per call, on connections the agent owns
//! (so a shutdown signal can abort exactly them), with names resolved on the
//! calling thread and remembered for a while.

use crate::error::{Error, MAX_RESPONSE};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport as UreqTransport,
};

/// Sends one XML-RPC request body to a path on the server and returns the
/// response body. A trait so the protocol client is tested without sockets.
pub(crate) trait Transport {
    fn post(&mut self, path: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error>;
}

/// ureq's per-connection input and output buffers. ureq allocates and fills
/// both for every connection, and Cobbler closes each one after a call: the
/// 128 KiB defaults cost most of the agent's CPU on small appends. Answers
/// are tiny; 8 KiB sends a chunk in ~45 writes.
const IO_BUFFER: usize = 8 * 1024;

/// How long a resolved server address is reused. An install lasts minutes,
/// the server's address does not change during it, and every upload would
/// otherwise read /etc/hosts and ask DNS again.
const RESOLVED_FOR: Duration = Duration::from_secs(60);

/// HTTP/1.1 POST to `http://SERVER:PORT/PATH` with ureq.
pub(crate) struct HttpTransport {
    /// `http://host:port`, without a path.
    base: String,
    agent: ureq::Agent,
}

impl HttpTransport {
    pub(crate) fn new(host: &str, port: u16) -> HttpTransport {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("anamon/", env!("CARGO_PKG_VERSION")))
            .input_buffer_size(IO_BUFFER)
            .output_buffer_size(IO_BUFFER)
            // Cobbler's own server closes every connection; Apache in front
            // of it keeps one alive for 5 s (KeepAliveTimeout), so one idle
            // connection, reused only while surely still open, saves a
            // connect per upload there without racing Apache's close.
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .max_idle_age(Duration::from_secs(2))
            .build();
        let agent = ureq::Agent::with_parts(config, OwnConnector, CachingResolver::default());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        HttpTransport {
            base: format!("http://{host}:{port}"),
            agent,
        }
    }
}

impl Transport for HttpTransport {
    fn post(&mut self, path: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .agent
            .post(&url)
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
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Timeout(_) => Error::Timeout,
        ureq::Error::BodyExceedsLimit(_) => Error::TooLarge,
        ureq::Error::HostNotFound => Error::Connect(std::io::Error::new(
            K::NotFound,
            "the server's name does not resolve",
        )),
        ureq::Error::ConnectionFailed => Error::Connect(std::io::Error::other(e)),
        ureq::Error::Io(io) => match io.kind() {
            K::Interrupted => Error::Interrupted,
            K::ConnectionRefused
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable
            | K::NotFound => Error::Connect(io),
            K::TimedOut | K::WouldBlock => Error::Timeout,
            _ => Error::Io(io),
        },
        other => Error::Io(std::io::Error::other(other)),
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
    let summary = crate::error::one_line(&summary, 80);
    if summary.is_empty() {
        String::new()
    } else {
        format!(": {summary}")
    }
}

/// Opens connections on sockets registered with `sys` for the shutdown
/// abort.
#[derive(Debug)]
struct OwnConnector;

impl Connector<()> for OwnConnector {
    type Out = OwnConnection;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<OwnConnection>, ureq::Error> {
        let budget = details.timeout.not_zero().map(|d| *d);
        let start = Instant::now();
        let mut last = None;
        for addr in details.addrs.iter() {
            let left = budget.map_or(Duration::from_secs(3600), |b| {
                b.saturating_sub(start.elapsed())
            });
            if left.is_zero() {
                break;
            }
            match crate::sys::connect(addr, left) {
                Ok((stream, own)) => {
                    let buffers = LazyBuffers::new(
                        details.config.input_buffer_size(),
                        details.config.output_buffer_size(),
                    );
                    return Ok(Some(OwnConnection {
                        _own: own,
                        stream,
                        buffers,
                        read_timeout: None,
                        write_timeout: None,
                    }));
                }
                // A shutdown signal: no other address is worth a try.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    return Err(ureq::Error::Io(e))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                ureq::Error::Timeout(ureq::Timeout::Connect)
            }
            Some(e) => ureq::Error::Io(e),
            None => ureq::Error::Timeout(ureq::Timeout::Connect),
        })
    }
}

/// A connection on a socket of the agent's own. The registration is dropped
/// (deregistered) before the socket closes: fields drop in order.
#[derive(Debug)]
struct OwnConnection {
    _own: crate::sys::OwnSocket,
    stream: TcpStream,
    buffers: LazyBuffers,
    /// The socket timeouts last set, so an unchanged one costs no syscall.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// The time an I/O step may take; an expired one is ureq's timeout error.
fn step_time(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

fn set_timeout(
    stream: &TcpStream,
    cached: &mut Option<Duration>,
    want: Option<Duration>,
    set: fn(&TcpStream, Option<Duration>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if *cached != want {
        set(stream, want)?;
        *cached = want;
    }
    Ok(())
}

fn io_error(e: std::io::Error, reason: ureq::Timeout) -> ureq::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ureq::Error::Timeout(reason)
        }
        _ => ureq::Error::Io(e),
    }
}

impl UreqTransport for OwnConnection {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let want = step_time(timeout)?;
        set_timeout(
            &self.stream,
            &mut self.write_timeout,
            want,
            TcpStream::set_write_timeout,
        )?;
        let output = &self.buffers.output()[..amount];
        (&self.stream)
            .write_all(output)
            .map_err(|e| io_error(e, timeout.reason))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let want = step_time(timeout)?;
        set_timeout(
            &self.stream,
            &mut self.read_timeout,
            want,
            TcpStream::set_read_timeout,
        )?;
        let input = self.buffers.input_append_buf();
        // A signal interrupts the read (EINTR); the shutdown abort has then
        // shut the socket down, so the retry ends at once.
        let n = loop {
            match (&self.stream).read(input) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, timeout.reason)),
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        // A kept-alive connection is reusable when nothing is waiting on it
        // and the server has not closed it: a non-blocking read would block.
        let mut probe = [0u8; 1];
        let open = self.stream.set_nonblocking(true).is_ok()
            && matches!((&self.stream).read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        open && self.stream.set_nonblocking(false).is_ok()
    }
}

/// Resolves on the calling thread. ureq's default resolver does it on a
/// helper thread whenever a timeout is set, and waits for it on a futex:
/// before Linux 2.6.22 that wait has no working syscall and busy-spins, and
/// every thread is one more thing for an old kernel to get wrong. The lock
/// is never contended (one thread), so it costs no system call.
#[derive(Debug, Default)]
struct CachingResolver {
    last: Mutex<Option<Resolved>>,
}

#[derive(Debug)]
struct Resolved {
    host: String,
    port: u16,
    at: Instant,
    addrs: Vec<SocketAddr>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = last
            .as_ref()
            .is_some_and(|r| r.host == host && r.port == port && r.at.elapsed() < RESOLVED_FOR);
        if !fresh {
            // ureq keeps at most 16 addresses.
            let found: Vec<SocketAddr> = (host, port).to_socket_addrs()?.take(16).collect();
            if found.is_empty() {
                return Err(ureq::Error::HostNotFound);
            }
            *last = Some(Resolved {
                host: host.to_string(),
                port,
                at: Instant::now(),
                addrs: found,
            });
        }
        let mut addrs = self.empty();
        for a in last.iter().flat_map(|r| &r.addrs) {
            addrs.push(*a);
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_summary_prefers_the_title() {
        assert_eq!(
            page_summary(b"<html><head><title>502 Bad\n Gateway</title></head>"),
            ": 502 Bad Gateway"
        );
        assert_eq!(page_summary(b""), "");
    }
}
