//! HTTP under the client: one POST per call, on connections the agent owns
//! (so a shutdown signal can abort exactly them), with names resolved on the
//! calling thread and remembered for a while.

use crate::error::{Error, MAX_RESPONSE};
use crate::sys::Ready;
use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, Transport as UreqTransport,
};

/// Sends one XML-RPC request body to a path on the server and returns the
/// response body. A trait so the protocol client is tested without sockets.
pub(crate) trait Transport {
    fn post(&mut self, path: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error>;
}

/// ureq's input buffer: answers are tiny.
const INPUT_BUFFER: usize = 8 * 1024;
/// ureq's output buffer, which the request body goes through: kept from one
/// connection to the next (see `OwnConnector`), so its size costs no work
/// per upload, and a 64 KiB one sends a line's upload in one write(2) and a
/// 256 KiB chunk in six, where 8 KiB took 45.
const OUTPUT_BUFFER: usize = 64 * 1024;

/// Request bytes up to this much are held back and go out with the rest of
/// the request in one write(2): ureq hands over the head and then the body,
/// and two writes per upload cost a system call and a TCP segment more. A
/// larger body goes as it comes; its base64 costs far more than a write.
const HOLD: usize = 16 * 1024;

/// How long a resolved server address is reused. An install lasts minutes,
/// the server's address does not change during it, and every upload would
/// otherwise read /etc/hosts and ask DNS again.
const RESOLVED_FOR: Duration = Duration::from_secs(60);

/// How long a kept-alive connection may sit idle and still be used: under
/// Apache's default KeepAliveTimeout (5 s), so the agent does not race its
/// close; a server that closes sooner is caught by [`HttpTransport::post`]'s
/// resend. A busy file uploads at least once per pace (1.9 s), so an
/// install that keeps writing keeps one connection throughout.
const IDLE_AGE: Duration = Duration::from_secs(4);

/// HTTP/1.1 POST to `http://SERVER:PORT/PATH` with ureq, on one kept-alive
/// connection where the server keeps it (Apache in front of Cobbler,
/// anamon-receiver). Cobbler's own server closes every connection.
pub(crate) struct HttpTransport {
    /// `http://host:port`, without a path.
    base: String,
    agent: ureq::Agent,
    attempt: Arc<Attempt>,
}

/// What the connection under the request in flight saw: shared with the
/// connections, since ureq does not say whether it reused one.
#[derive(Debug, Default)]
struct Attempt {
    /// Counts requests; a connection that sees a new number starts one.
    number: AtomicU64,
    /// The request went out on a connection that had carried one before.
    reused: AtomicBool,
    /// A byte of the answer arrived.
    answered: AtomicBool,
}

impl Attempt {
    fn begin(&self) {
        self.number.fetch_add(1, Ordering::Relaxed);
        self.reused.store(false, Ordering::Relaxed);
        self.answered.store(false, Ordering::Relaxed);
    }

    /// A kept-alive connection the server had closed (or closed as the
    /// request went out): nothing of an answer came, so the request can go
    /// again on a new one. An upload at an offset lands the same bytes in
    /// the same place twice, so a resend is safe even if the server did
    /// act on it. A timeout is not a close, and a shutdown is not retried.
    fn server_closed_it(&self, e: &ureq::Error) -> bool {
        self.reused.load(Ordering::Relaxed)
            && !self.answered.load(Ordering::Relaxed)
            && match e {
                ureq::Error::Timeout(_) => false,
                ureq::Error::Io(io) => io.kind() != std::io::ErrorKind::Interrupted,
                _ => true,
            }
    }
}

impl HttpTransport {
    pub(crate) fn new(host: &str, port: u16) -> HttpTransport {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("anamon/", env!("CARGO_PKG_VERSION")))
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            // One server, one request at a time: one connection.
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .max_idle_age(IDLE_AGE)
            .build();
        let attempt = Arc::new(Attempt::default());
        let connector = OwnConnector {
            spare: Arc::default(),
            attempt: attempt.clone(),
        };
        let agent = ureq::Agent::with_parts(config, connector, CachingResolver::default());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        HttpTransport {
            base: format!("http://{host}:{port}"),
            agent,
            attempt,
        }
    }

    /// One try: the response's status, whether it is a web page, its body.
    fn send(
        &mut self,
        url: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<(u16, bool, Vec<u8>), ureq::Error> {
        self.attempt.begin();
        let resp = self
            .agent
            .post(url)
            .header("Content-Type", "text/xml")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body)?;
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
            .read_to_vec()?;
        Ok((status, html, body))
    }
}

impl Transport for HttpTransport {
    fn post(&mut self, path: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        let url = format!("{}{path}", self.base);
        let start = Instant::now();
        let (status, html, body) = match self.send(&url, body, timeout) {
            Err(e) if self.attempt.server_closed_it(&e) => {
                debug!("the server had closed the kept-alive connection ({e}); sending again on a new one");
                let left = timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(transport_error(e));
                }
                self.send(&url, body, left)
            }
            r => r,
        }
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
/// abort, with I/O buffers kept from one connection to the next: Cobbler
/// closes every connection, and fresh buffers for each would be allocated,
/// mapped, faulted in and unmapped again per upload.
#[derive(Debug)]
struct OwnConnector {
    spare: Arc<Mutex<Vec<IoBuffers>>>,
    attempt: Arc<Attempt>,
}

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
                    let buffers = lock(&self.spare).pop().unwrap_or_else(|| {
                        IoBuffers::new(
                            details.config.input_buffer_size(),
                            details.config.output_buffer_size(),
                        )
                    });
                    return Ok(Some(OwnConnection {
                        _own: own,
                        stream,
                        buffers: Some(buffers),
                        spare: self.spare.clone(),
                        answer_pending: false,
                        attempt: self.attempt.clone(),
                        requests: 0,
                        request: 0,
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

/// The lock is never contended (one thread uses the client), so it costs
/// no system call; a poisoned one still holds usable buffers.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection on a non-blocking socket of the agent's own, waited on
/// with poll(2): no socket timeouts to set per step, and a shutdown
/// signal's abort ends any wait. The registration is dropped
/// (deregistered) before the socket closes: fields drop in order.
#[derive(Debug)]
struct OwnConnection {
    _own: crate::sys::OwnSocket,
    stream: TcpStream,
    /// Always `Some` until dropped, when they go back for the next one.
    buffers: Option<IoBuffers>,
    spare: Arc<Mutex<Vec<IoBuffers>>>,
    /// Request bytes have just gone out: no answer can be there yet, so
    /// the next read waits first instead of failing with EAGAIN.
    answer_pending: bool,
    attempt: Arc<Attempt>,
    /// How many requests this connection has carried.
    requests: u32,
    /// The number of the attempt it carries now.
    request: u64,
}

impl Drop for OwnConnection {
    fn drop(&mut self) {
        if let Some(mut b) = self.buffers.take() {
            b.clear();
            lock(&self.spare).push(b);
        }
    }
}

impl OwnConnection {
    /// Called as a request's bytes go out: notes whether this connection
    /// carried one before.
    fn starts_request(&mut self) {
        let number = self.attempt.number.load(Ordering::Relaxed);
        if number != self.request {
            self.request = number;
            self.attempt
                .reused
                .store(self.requests > 0, Ordering::Relaxed);
            self.requests += 1;
        }
    }

    fn bufs(&mut self) -> &mut IoBuffers {
        self.buffers.as_mut().expect("buffers until dropped")
    }

    /// Waits for the socket within this step's time; ureq's timeout error
    /// when it passes.
    fn wait(
        &self,
        ready: Ready,
        timeout: NextTimeout,
        deadline: Instant,
    ) -> Result<(), ureq::Error> {
        use std::os::fd::AsRawFd;
        match crate::sys::wait_ready(self.stream.as_raw_fd(), ready, deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(e) => Err(ureq::Error::Io(e)),
        }
    }

    /// Writes the held bytes and then the output buffer's first `amount`,
    /// in one writev(2) where the socket takes them all.
    fn send_held_and(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
        deadline: Instant,
    ) -> Result<(), ureq::Error> {
        let b = self.buffers.as_ref().expect("buffers until dropped");
        let (mut first, mut second) = (&b.held[..], &b.output[..amount]);
        while !first.is_empty() || !second.is_empty() {
            match (&self.stream).write_vectored(&[IoSlice::new(first), IoSlice::new(second)]) {
                Ok(0) => return Err(ureq::Error::Io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) if n < first.len() => first = &first[n..],
                Ok(n) => {
                    second = &second[n - first.len()..];
                    first = &[];
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait(Ready::Write, timeout, deadline)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ureq::Error::Io(e)),
            }
        }
        self.bufs().held.clear();
        self.answer_pending = true;
        Ok(())
    }
}

/// When an I/O step must be done by; an expired one is ureq's timeout.
fn step_deadline(timeout: NextTimeout) -> Result<Instant, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    let step = timeout.not_zero().map_or(Duration::from_secs(3600), |d| *d);
    Ok(Instant::now() + step)
}

impl UreqTransport for OwnConnection {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.bufs()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.starts_request();
        let timeout = timeout.for_write();
        let deadline = step_deadline(timeout)?;
        let b = self.bufs();
        if b.held.len() + amount <= HOLD {
            let IoBuffers { held, output, .. } = b;
            held.extend_from_slice(&output[..amount]);
            return Ok(());
        }
        self.send_held_and(amount, timeout, deadline)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let deadline = step_deadline(timeout)?;
        if !self.bufs().held.is_empty() {
            self.send_held_and(0, timeout, deadline)?;
        }
        if std::mem::take(&mut self.answer_pending) {
            self.wait(Ready::Read, timeout, deadline)?;
        }
        loop {
            let stream = &self.stream;
            let b = self.buffers.as_mut().expect("buffers until dropped");
            match (&*stream).read(b.append_buf()) {
                Ok(n) => {
                    b.filled += n;
                    if n > 0 {
                        self.attempt.answered.store(true, Ordering::Relaxed);
                    }
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait(Ready::Read, timeout, deadline)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ureq::Error::Io(e)),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // A kept-alive connection is reusable while nothing is waiting on
        // it and the server has not closed it: a read would block.
        let mut probe = [0u8; 1];
        matches!((&self.stream).read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// ureq's input and output buffers, as its `LazyBuffers` keeps them, but
/// ours to reuse: input bytes `consumed..filled` are unread.
#[derive(Debug)]
struct IoBuffers {
    input: Vec<u8>,
    consumed: usize,
    filled: usize,
    output: Vec<u8>,
    /// Request bytes not yet written (see [`HOLD`]).
    held: Vec<u8>,
    /// The last consume took something (ureq's `can_use_input`).
    progress: bool,
}

/// What ureq's body decoder needs free in the input buffer.
const MIN_TMP: usize = 10 * 1024;

impl IoBuffers {
    fn new(input: usize, output: usize) -> IoBuffers {
        IoBuffers {
            input: vec![0; input.max(MIN_TMP)],
            consumed: 0,
            filled: 0,
            output: vec![0; output],
            held: Vec::with_capacity(HOLD),
            progress: false,
        }
    }

    fn clear(&mut self) {
        self.consumed = 0;
        self.filled = 0;
        self.held.clear();
        self.progress = false;
    }

    /// Free space after the unread input, at least `MIN_TMP`: unread bytes
    /// move to the front, and the buffer grows only if that is not enough.
    fn append_buf(&mut self) -> &mut [u8] {
        if self.consumed > 0 {
            self.input.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        if self.input.len() - self.filled < MIN_TMP {
            self.input.resize(self.filled + MIN_TMP, 0);
        }
        &mut self.input[self.filled..]
    }
}

impl Buffers for IoBuffers {
    fn output(&mut self) -> &mut [u8] {
        &mut self.output
    }

    fn input(&self) -> &[u8] {
        &self.input[self.consumed..self.filled]
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.append_buf()
    }

    fn input_appended(&mut self, amount: usize) {
        self.filled += amount;
    }

    fn input_consume(&mut self, amount: usize) {
        self.progress = amount > 0;
        self.consumed += amount;
        if self.consumed == self.filled {
            self.consumed = 0;
            self.filled = 0;
        }
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        self.append_buf();
        (&mut self.input[self.filled..], &mut self.output)
    }

    fn can_use_input(&self) -> bool {
        self.consumed < self.filled && self.progress
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
        let mut last = lock(&self.last);
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
    fn a_small_request_is_held_until_its_answer_is_awaited() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (stream, own) =
            crate::sys::connect(&listener.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut conn = OwnConnection {
            _own: own,
            stream,
            buffers: Some(IoBuffers::new(INPUT_BUFFER, OUTPUT_BUFFER)),
            spare: Arc::default(),
            answer_pending: false,
            attempt: Arc::default(),
            requests: 0,
            request: 0,
        };
        for piece in [&b"head;"[..], b"body"] {
            conn.bufs().output[..piece.len()].copy_from_slice(piece);
            conn.transmit_output(piece.len(), NextTimeout::default())
                .unwrap();
        }
        // Held: nothing has gone out yet.
        peer.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = [0u8; 64];
        let e = peer.read(&mut got).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        // Waiting for the answer sends the request, in one piece.
        peer.write_all(b"answer").unwrap();
        assert!(conn.await_input(NextTimeout::default()).unwrap());
        assert_eq!(conn.bufs().input(), b"answer");
        let n = peer.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"head;body");
    }

    #[test]
    fn a_large_request_arrives_whole() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let expect = body.clone();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while !got.ends_with(&expect) {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            got
        });
        let mut t = HttpTransport::new("127.0.0.1", port);
        assert_eq!(
            t.post("/RPC2", &body, Duration::from_secs(10)).unwrap(),
            b"ok"
        );
        let got = server.join().unwrap();
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&got[head_end..], &body[..]);
    }

    /// Reads one request (head and Content-Length body); `None` at EOF.
    fn read_request(c: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    return Some(got);
                }
            }
            let n = c.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    const KEPT_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// A server that keeps connections alive and answers every request;
    /// `close_after(n)` makes it read a connection's n-th request and then
    /// close it unanswered (the server's idle close racing the request).
    /// Counts the connections it accepted.
    fn keep_alive_server(close_after: Option<usize>) -> (u16, Arc<AtomicU64>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let mut c = c.unwrap();
                let first = count.fetch_add(1, Ordering::SeqCst) == 0;
                std::thread::spawn(move || {
                    let mut served = 0;
                    while read_request(&mut c).is_some() {
                        served += 1;
                        if first && close_after == Some(served) {
                            return;
                        }
                        c.write_all(KEPT_ALIVE).unwrap();
                    }
                });
            }
        });
        (port, accepted)
    }

    /// Posts `n` requests, each answered; how many connections it took.
    fn connections_for(n: usize, (port, accepted): (u16, Arc<AtomicU64>)) -> u64 {
        let mut t = HttpTransport::new("127.0.0.1", port);
        for _ in 0..n {
            let answer = t.post("/RPC2", b"x", Duration::from_secs(10)).unwrap();
            assert_eq!(answer, b"ok");
        }
        accepted.load(Ordering::SeqCst)
    }

    #[test]
    fn uploads_share_one_kept_alive_connection() {
        assert_eq!(connections_for(5, keep_alive_server(None)), 1);
    }

    #[test]
    fn a_kept_alive_connection_the_server_closed_is_replaced_at_once() {
        // The server takes the second request on the connection and closes
        // it without a word: the request goes again on a new connection,
        // and the caller sees only the answer.
        assert_eq!(connections_for(3, keep_alive_server(Some(2))), 2);
    }

    #[test]
    fn io_buffers_keep_unread_input_and_room_to_read() {
        let mut b = IoBuffers::new(16, 8);
        let room = b.input_append_buf();
        assert!(room.len() >= MIN_TMP);
        room[..5].copy_from_slice(b"hello");
        b.input_appended(5);
        assert_eq!(b.input(), b"hello");
        assert!(!b.can_use_input(), "nothing consumed yet");
        b.input_consume(2);
        assert!(b.can_use_input());
        assert_eq!(b.input(), b"llo");
        // More input goes after the unread bytes, which move to the front.
        let room = b.input_append_buf();
        room[..3].copy_from_slice(b" yo");
        b.input_appended(3);
        assert_eq!(b.input(), b"llo yo");
        let (tmp, out) = b.tmp_and_output();
        assert!(tmp.len() >= MIN_TMP && out.len() == 8);
        b.input_consume(6);
        assert_eq!(b.input(), b"");
        // Back in the spare pile, they start empty.
        b.input_appended(0);
        b.clear();
        assert_eq!(b.input(), b"");
        assert!(!b.can_use_input());
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
