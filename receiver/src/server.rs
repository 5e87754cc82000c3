//! The receiver's connections: hyper's HTTP/1 server on one tokio thread,
//! for the upload listener and the live view's alike.
//!
//! One accept loop per listener, the same code for both ([`accept_loop`]).
//! A connection holds a [`Slot`]: a permit of the listener's global cap and,
//! unless its peer is a `--trusted-proxy`, one of its address's; both come
//! back when the slot is dropped, however the connection ended. When the
//! global cap is reached the loop stops accepting, so further clients wait
//! in the kernel's listen queue; a client over its address's cap is answered
//! 503 and closed at once, so one address cannot crowd the others out.
//!
//! Time is bounded at every step: a request head must arrive within
//! `head_timeout` of the connection's start or of the previous response
//! (hyper's `header_read_timeout`, which is also how long an idle
//! keep-alive connection stays open); what comes after the head is the
//! site's to bound (the upload body's `--timeout`, a view response's
//! deadlines); and a write that makes no progress for [`WRITE_STALL`] ends
//! the connection ([`Socket`]). Idle connections cost a tokio task and
//! hyper's buffers, no thread.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::body::{Frame, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// A request head must arrive within this long (or `--timeout`, if
/// shorter); an idle keep-alive connection is closed after it.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A write that makes no progress for this long ends the connection: a
/// client that stops reading holds nothing for longer.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// The largest request head hyper reads (it answers 431 past it); also
/// the most response bytes it buffers before waiting for the socket.
const MAX_HEAD: usize = 8192;

/// How one listener's connections are bounded.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub per_address: usize,
    /// Time to send a request head (and the keep-alive idle time).
    pub head_timeout: Duration,
    /// Whether a response may leave the connection open for the next
    /// request.
    pub keep_alive: KeepAlive,
}

/// Persistent connections, or one request per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    On,
    Off,
}

/// What a listener serves: the uploads, or the view.
pub trait Site: Send + Sync + 'static {
    /// Answers one request on the connection `conn`.
    fn handle(
        self: Arc<Self>,
        conn: Conn,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// Logs something refused from `peer` (rate-limited per client by the
    /// sessions' noise rule); `what` holds no byte the client chose.
    fn noise(&self, peer: IpAddr, what: &str);

    /// Notes a request hyper refused before it reached [`Site::handle`].
    fn refused(&self, peer: IpAddr, what: &str) {
        self.noise(peer, what);
    }
}

/// Who is at the other end of a connection, and a way to end it hard.
#[derive(Clone)]
pub struct Conn {
    pub peer: IpAddr,
    /// The peer is a `--trusted-proxy`: the client is the address it
    /// forwards for.
    pub trusted_proxy: bool,
    reset: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Conn {
    /// Ends the connection now, with a reset (SO_LINGER 0): the kernel
    /// drops what is still queued for a client that does not read it,
    /// instead of trickling it out for minutes, and hyper stops whatever
    /// it was flushing.
    pub fn cut(&self) {
        self.reset.store(true, Ordering::Relaxed);
        self.cut.notify_one();
    }
}

/// The caps of one listener, and the count of connections per address.
pub struct Gate {
    global: Arc<Semaphore>,
    max: usize,
    per_address: usize,
    trusted: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place; freed when dropped.
pub struct Slot {
    _global: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
}

struct AddressSlot {
    gate: Arc<Gate>,
    peer: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl Gate {
    pub fn new(bounds: &Bounds, trusted: Vec<IpAddr>) -> Arc<Gate> {
        let max = bounds.max_connections.max(1);
        Arc::new(Gate {
            global: Arc::new(Semaphore::new(max)),
            max,
            per_address: bounds.per_address.max(1),
            trusted,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Connections being served now.
    pub fn busy(&self) -> usize {
        self.max - self.global.available_permits()
    }

    /// Waits for a free place under the global cap.
    async fn place(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.global)
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed")
    }

    /// The slot for a connection from `peer`, or None if that address
    /// already holds its cap.
    fn admit(self: &Arc<Self>, place: OwnedSemaphorePermit, peer: IpAddr) -> Option<Slot> {
        if self.trusted.contains(&peer) {
            return Some(Slot {
                _global: place,
                _address: None,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(Slot {
            _global: place,
            _address: Some(AddressSlot {
                gate: Arc::clone(self),
                peer,
            }),
        })
    }

    /// Waits up to `limit` for every connection to end; returns how many
    /// were still open.
    pub async fn drain(&self, limit: Duration) -> usize {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, self.global.acquire_many(all)).await;
        self.busy()
    }
}

/// Whether the receiver is stopping (SIGTERM/SIGINT): accept loops end,
/// and each connection finishes the request it is serving, then closes.
pub type Stop = tokio::sync::watch::Receiver<bool>;

async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepts connections on `listener` until `stop`, each served on a task
/// of its own while it holds a slot of `gate`.
pub async fn accept_loop<S: Site>(
    listener: TcpListener,
    site: Arc<S>,
    gate: Arc<Gate>,
    bounds: Bounds,
    mut stop: Stop,
) {
    loop {
        let place = tokio::select! {
            place = gate.place() => place,
            () = stopped(&mut stop) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset
                    // before it was accepted: wait a moment, go on.
                    info!("accept failed: {e}; going on");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let peer = peer.ip();
        match gate.admit(place, peer) {
            Some(slot) => {
                let conn = Conn {
                    peer,
                    trusted_proxy: gate.trusted.contains(&peer),
                    reset: Arc::new(AtomicBool::new(false)),
                    cut: Arc::new(Notify::new()),
                };
                tokio::spawn(serve_connection(
                    stream,
                    conn,
                    Arc::clone(&site),
                    bounds.clone(),
                    slot,
                    stop.clone(),
                ));
            }
            None => {
                crate::metrics::CONNECTIONS.crowded();
                site.noise(
                    peer,
                    &format!(
                        "over the cap of {} connections per address; refused (503)",
                        gate.per_address
                    ),
                );
                turn_away(&stream, gate.per_address);
            }
        }
    }
}

/// Answers 503 without reading the request (as far as the socket takes it
/// at once) and closes.
fn turn_away(stream: &TcpStream, cap: usize) {
    let why = format!("more than {cap} connections from this address; try again later\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: anamon-receiver\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{why}",
        why.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

async fn serve_connection<S: Site>(
    stream: TcpStream,
    conn: Conn,
    site: Arc<S>,
    bounds: Bounds,
    slot: Slot,
    mut stop: Stop,
) {
    let _ = stream.set_nodelay(true);
    let socket = Socket {
        stream,
        stall: None,
        reset: Arc::clone(&conn.reset),
    };
    let cut = Arc::clone(&conn.cut);
    let (site_for_noise, peer) = (Arc::clone(&site), conn.peer);
    let service = hyper::service::service_fn(move |req| {
        let (site, conn) = (Arc::clone(&site), conn.clone());
        async move { Ok::<_, std::convert::Infallible>(site.handle(conn, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.head_timeout)
        .keep_alive(bounds.keep_alive == KeepAlive::On)
        .max_buf_size(MAX_HEAD)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(socket), service);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = served.as_mut() => {
                if let Err(e) = served {
                    note_failure(site_for_noise.as_ref(), peer, &e, bounds.head_timeout);
                }
                break;
            }
            // Dropping the connection drops the socket: closed with a reset.
            () = cut.notified() => break,
            // An idle connection closes now, a busy one after its answer.
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    drop(slot);
}

/// Counts and logs a connection that hyper ended with an error: a request
/// it refused itself (400 for a malformed head, 431 for one over
/// [`MAX_HEAD`]; hyper's messages are its own words, never the client's
/// bytes), a head that did not come in time, a client gone mid-request.
fn note_failure<S: Site>(site: &S, peer: IpAddr, e: &hyper::Error, head_timeout: Duration) {
    if e.is_timeout() {
        crate::metrics::CONNECTIONS.head_timeout();
        site.noise(
            peer,
            &format!(
                "no whole request head within {} s; closed",
                head_timeout.as_secs()
            ),
        );
    } else if e.is_parse() || e.is_parse_too_large() {
        site.refused(
            peer,
            &format!(
                "HTTP {}: {e}",
                if e.is_parse_too_large() { 431 } else { 400 }
            ),
        );
    } else if e.is_incomplete_message() {
        site.noise(peer, &format!("connection lost: {e}"));
    }
}

/// A client connection whose writes must make progress: a write pending
/// for [`WRITE_STALL`] fails with `TimedOut`, which ends the connection.
struct Socket {
    stream: TcpStream,
    stall: Option<Pin<Box<Sleep>>>,
    reset: Arc<AtomicBool>,
}

impl Socket {
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                if stall.as_mut().poll(cx).is_ready() {
                    self.reset.store(true, Ordering::Relaxed);
                    crate::metrics::CONNECTIONS.write_stall();
                    Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body: whole, or streamed from a task through a channel of
/// one chunk, so the producer runs at the pace the client reads and
/// holds at most a chunk or two in memory.
pub enum Body {
    Whole(Option<Bytes>),
    Streamed(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn whole(bytes: impl Into<Bytes>) -> Body {
        Body::Whole(Some(bytes.into()))
    }

    /// A streamed body and the sender that feeds it; the body ends when
    /// the sender is dropped.
    pub fn streamed() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(1);
        (tx, Body::Streamed(rx))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Streamed(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Streamed(_) => SizeHint::default(),
        }
    }
}

/// Sends one chunk of a streamed body, waiting at most `limit` for the
/// client to take the one before; false if the response should end (the
/// client is gone or reads too slowly — then the connection ends with a
/// reset).
pub async fn send_within(
    tx: &mpsc::Sender<Bytes>,
    chunk: Bytes,
    limit: Duration,
    conn: &Conn,
) -> bool {
    match tokio::time::timeout(limit, tx.send(chunk)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            crate::metrics::CONNECTIONS.slow_reader();
            conn.cut();
            false
        }
    }
}

/// Adds the Server header every answer carries.
pub fn with_server(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static("anamon-receiver"),
    );
    resp
}

/// Raises this process's open-file limit to its hard limit (systemd's
/// default soft limit is 1024, the hard one 524288): every connection is a
/// descriptor. Returns the limit now in force.
pub fn raise_open_files() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            info!("cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_connections: usize, per_address: usize) -> Bounds {
        Bounds {
            max_connections,
            per_address,
            head_timeout: HEAD_TIMEOUT,
            keep_alive: KeepAlive::On,
        }
    }

    #[test]
    fn slots_free_themselves_and_each_address_has_its_cap() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let gate = Gate::new(&bounds(5, 2), vec![proxy]);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let place = || Arc::clone(&gate.global).try_acquire_owned().unwrap();
        let a1 = gate.admit(place(), a).unwrap();
        let a2 = gate.admit(place(), a).unwrap();
        // A third from `a` is refused, and its place under the global cap
        // comes back with the refusal.
        assert!(gate.admit(place(), a).is_none());
        assert_eq!(gate.busy(), 2);
        let _b1 = gate.admit(place(), b).unwrap();
        // A trusted proxy has no per-address cap, only the global one.
        let p1 = gate.admit(place(), proxy).unwrap();
        let _p2 = gate.admit(place(), proxy).unwrap();
        assert_eq!(gate.busy(), 5);
        assert!(Arc::clone(&gate.global).try_acquire_owned().is_err());
        drop((a1, p1));
        assert_eq!(gate.busy(), 3);
        let a3 = gate.admit(place(), a).unwrap();
        assert!(gate.admit(place(), a).is_none());
        drop(a2);
        // An address with no connection left is forgotten.
        drop(a3);
        assert!(!gate.open.lock().unwrap().contains_key(&a));
    }
}
