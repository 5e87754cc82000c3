//! The live view (`--view ADDRESS:PORT`, off by default): read-only pages of
//! the log directory on a listener of its own, so it can stay on localhost
//! or behind Apache's authentication while uploads come in elsewhere.
//!
//! Pages: all systems (`/`), one system (`/s/NAME`), one file (`/s/NAME/FILE`,
//! its end, followed as it grows through Server-Sent Events from
//! `/follow/NAME/FILE`; `?at=OFFSET` shows a found line in place), the raw
//! file (`/raw/NAME/FILE`); the same as JSON under `/api/systems`; and
//! Prometheus metrics at `/metrics`. Everything, script and style
//! included, is served by the binary.
//!
//! It never writes: files are opened read-only, relative to the log
//! directory's descriptor, never through a symlink or a hard link (see
//! [`index`]). It is served by the same server as the uploads (hyper, see
//! `crate::server`) on a listener of its own, with caps of its own: its
//! connections, [`PER_ADDRESS`] of them per client address, one request
//! each. Every response is bounded: pages and JSON in rows and bytes;
//! `/raw` is streamed in [`RAW_CHUNK`] pieces, each of which the client
//! must take within [`CHUNK_WAIT`]; an event stream ends after
//! [`FOLLOW_FOR`] or [`FOLLOW_BYTES`], and its events have the same
//! deadline.

mod hooks;
mod index;
mod pages;
mod rules;
mod state;
pub mod status;
mod text;

use crate::metrics::{family, sample, COUNTERS};
use crate::rpc::Service;
use crate::server::{
    self, accept_loop, send_within, with_server, Body, Bounds, Conn, Gate, KeepAlive, Site,
};
use crate::sys::{self, Fd};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use index::{Index, SharedIndex};
use state::State;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The view's settings, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub port_file: Option<PathBuf>,
    /// Connections served at once (event streams count).
    pub max_connections: usize,
    /// A system with an upload within this long is *installing*.
    pub window: Duration,
    /// `--on-state-change`: the command, and the base of its links
    /// (`--view-url`; the view's own address when absent).
    pub on_state_change: Option<String>,
    pub url: Option<String>,
}

/// Bytes of a file's end a file page shows, and an API call returns.
const TAIL: u64 = 64 << 10;
/// Bytes around a found line (`?at=`).
const AROUND: u64 = 16 << 10;
/// An event stream ends after this long or this many bytes; the browser
/// reconnects and goes on from its last event.
const FOLLOW_FOR: Duration = Duration::from_secs(25);
const FOLLOW_BYTES: u64 = 8 << 20;
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Connections one client address may hold (a browser opens up to six
/// to a host).
pub const PER_ADDRESS: usize = 8;
/// `/raw` goes out in pieces of this size, read as the client takes them.
const RAW_CHUNK: usize = 64 << 10;
/// The client must take each piece of a streamed response (a `/raw`
/// chunk, an event) within this long, or the response ends with a reset:
/// at least [`RAW_CHUNK`] per 10 s once the socket's buffers are full, so
/// a reader that trickles cannot hold a connection for hours.
const CHUNK_WAIT: Duration = Duration::from_secs(10);

const SCRIPT: &str = include_str!("view.js");
const STYLE: &str = include_str!("view.css");

pub struct View {
    service: Arc<Service>,
    /// The one index of the log directory: the pages and the
    /// `--on-state-change` thread read it, so new bytes are scanned once.
    index: SharedIndex,
    window: i64,
    follows: AtomicUsize,
    max_follows: usize,
}

/// The view's listener, bound, and what it serves.
pub struct Listening {
    listener: tokio::net::TcpListener,
    view: Arc<View>,
    bounds: Bounds,
}

/// Binds the view's listener (and writes its port file).
pub async fn bind(
    settings: &Settings,
    service: Arc<Service>,
    stop: crate::server::Stop,
) -> Result<Listening, crate::StartError> {
    let listener = crate::listen("--view", settings.listen, settings.port_file.as_deref()).await?;
    let local = listener
        .local_addr()
        .map_or_else(|_| settings.listen.to_string(), |a| a.to_string());
    info!(
        "live view on http://{local}/ (read-only; {} connections at most, {PER_ADDRESS} per address; installing = an upload within {} s)",
        settings.max_connections,
        settings.window.as_secs()
    );
    let view = Arc::new(View {
        service,
        index: SharedIndex::default(),
        window: settings.window.as_secs() as i64,
        follows: AtomicUsize::new(0),
        max_follows: (settings.max_connections / 2).max(1),
    });
    if let Some(command) = &settings.on_state_change {
        let hook = hooks::Hook {
            command: command.clone(),
            link_base: settings
                .url
                .clone()
                .unwrap_or_else(|| format!("http://{local}")),
        };
        hooks::start(
            hook,
            Arc::clone(&view.service),
            Arc::clone(&view.index),
            view.window,
            stop,
        )
        .map_err(crate::StartError::HookThread)?;
    }
    Ok(Listening {
        listener,
        view,
        bounds: Bounds {
            max_connections: settings.max_connections,
            per_address: PER_ADDRESS,
            head_timeout: server::HEAD_TIMEOUT,
            // One request per connection, as before: each page, poll and
            // stream is a connection of its own and leaves at its end.
            keep_alive: KeepAlive::Off,
        },
    })
}

impl Listening {
    /// Serves until `stop`, then gives open responses a moment.
    pub async fn serve(self, stop: server::Stop) {
        let gate = Gate::new(&self.bounds, Vec::new());
        accept_loop(
            self.listener,
            self.view,
            Arc::clone(&gate),
            self.bounds,
            stop,
        )
        .await;
        gate.drain(Duration::from_secs(2)).await;
    }
}

/// A response built whole.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn html(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
        }
    }

    fn json(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: body.into_bytes(),
        }
    }

    fn error(status: u16, why: &str) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: pages::error_page(status, why).into_bytes(),
        }
    }
}

/// What a request asked for, once its names are checked.
enum Route<'a> {
    Systems,
    System(&'a str),
    File(&'a str, &'a str),
    Raw(&'a str, &'a str),
    Follow(&'a str, &'a str),
    ApiSystems,
    ApiSystem(&'a str),
    ApiFile(&'a str, &'a str),
    Metrics,
    Static(&'static str, &'static str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let parts: Vec<&str> = path
        .strip_prefix('/')?
        .trim_end_matches('/')
        .split('/')
        .collect();
    let sys_ok = |s: &str| anamon_names::is_system_name(s);
    let file_ok = |f: &str| anamon_names::is_file_name(f);
    Some(match parts.as_slice() {
        [""] => Route::Systems,
        ["s", s] if sys_ok(s) => Route::System(s),
        ["s", s, f] if sys_ok(s) && file_ok(f) => Route::File(s, f),
        ["raw", s, f] if sys_ok(s) && file_ok(f) => Route::Raw(s, f),
        ["follow", s, f] if sys_ok(s) && file_ok(f) => Route::Follow(s, f),
        ["api", "systems"] => Route::ApiSystems,
        ["api", "systems", s] if sys_ok(s) => Route::ApiSystem(s),
        ["api", "systems", s, f] if sys_ok(s) && file_ok(f) => Route::ApiFile(s, f),
        ["metrics"] => Route::Metrics,
        ["static", "view.js"] => Route::Static("text/javascript; charset=utf-8", SCRIPT),
        ["static", "view.css"] => Route::Static("text/css; charset=utf-8", STYLE),
        _ => return None,
    })
}

/// The value of `key` in a query string (`a=1&b=2`).
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn number(query: &str, key: &str) -> Option<u64> {
    param(query, key).and_then(|v| v.parse().ok())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Site for View {
    async fn handle(self: Arc<Self>, conn: Conn, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            return respond(Reply::error(405, "the view is read-only: GET only"));
        }
        let target = req.uri().to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match route(path) {
            None => respond(Reply::error(
                404,
                "no such page (names are checked as uploads are)",
            )),
            Some(Route::Raw(s, f)) => self.raw(conn, s, f).await,
            Some(Route::Follow(s, f)) => {
                let from = req
                    .headers()
                    .get("Last-Event-ID")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .or_else(|| number(query, "from"));
                self.follow(conn, s, f, from).await
            }
            Some(_) => {
                // Pages read the index and files: on the blocking pool.
                let view = Arc::clone(&self);
                let reply = tokio::task::spawn_blocking(move || {
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    match route(path) {
                        Some(r) => view.reply(r, query),
                        None => Reply::error(404, "no such page"),
                    }
                })
                .await
                .unwrap_or_else(|_| Reply::error(500, "the page could not be made"));
                respond(reply)
            }
        }
    }

    /// The view logs nothing (as before hyper): it is read-only and
    /// writes nowhere, its log included; what it refuses or cuts is
    /// counted in `/metrics` (`anamon_receiver_connections_cut_total`).
    fn noise(&self, _peer: IpAddr, _what: &str) {}
}

impl View {
    fn dir(&self) -> &Fd {
        self.service.store.fd()
    }

    /// Runs `f` on the index, refreshed if due.
    fn with_index<T>(&self, f: impl FnOnce(&Index) -> T) -> T {
        index::with_refreshed(&self.index, self.dir(), f)
    }

    fn reply(&self, route: Route<'_>, query: &str) -> Reply {
        let now = now();
        let live = param(query, "part") == Some("live");
        let filter = param(query, "state").and_then(State::from_name);
        match route {
            Route::Systems => {
                let (all, omitted) =
                    self.with_index(|ix| (ix.systems(now, self.window), ix.omitted));
                let body = pages::systems_live(&all, filter, now, omitted);
                Reply::html(if live {
                    body
                } else {
                    let rest = query_without_part(query);
                    let poll = if rest.is_empty() {
                        "/".to_string()
                    } else {
                        format!("/?{rest}")
                    };
                    pages::page(
                        "installs",
                        "systems",
                        &[("poll", &poll)],
                        &pages::systems_head(filter),
                        &body,
                    )
                })
            }
            Route::ApiSystems => {
                let (all, omitted) =
                    self.with_index(|ix| (ix.systems(now, self.window), ix.omitted));
                Reply::json(pages::systems_json(&all, filter, now, omitted))
            }
            Route::System(s) | Route::ApiSystem(s) => {
                let Some(v) = self.with_index(|ix| ix.system(s, now, self.window)) else {
                    return Reply::error(404, &format!("no system {s} in the log directory"));
                };
                if let Route::ApiSystem(_) = route {
                    let mut j = String::new();
                    pages::system_json(&mut j, &v, now, true);
                    j.push('\n');
                    return Reply::json(j);
                }
                let body = pages::system_live(&v, now);
                Reply::html(if live {
                    body
                } else {
                    let poll = format!("/s/{s}");
                    pages::page(
                        s,
                        "system",
                        &[("poll", &poll)],
                        &pages::system_head(&v),
                        &body,
                    )
                })
            }
            Route::File(s, f) => self.file_page(s, f, query),
            Route::ApiFile(s, f) => self.file_json(s, f, query),
            Route::Metrics => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.metrics(now).into_bytes(),
            },
            Route::Static(content_type, body) => Reply {
                status: 200,
                content_type,
                body: body.as_bytes().to_vec(),
            },
            Route::Raw(..) | Route::Follow(..) => Reply::error(500, "streamed elsewhere"),
        }
    }

    /// Opens a log read-only: its descriptor and size.
    fn open(&self, system: &str, file: &str) -> Result<(Fd, u64), Reply> {
        let sys_fd = index::open_system(self.dir(), system).ok_or_else(|| {
            Reply::error(404, &format!("no system {system} in the log directory"))
        })?;
        index::open_log(&sys_fd, file)
            .map(|(fd, st)| (fd, st.st_size as u64))
            .ok_or_else(|| Reply::error(404, &format!("{system} has no plain file {file}")))
    }

    fn file_page(&self, system: &str, file: &str, query: &str) -> Reply {
        let (fd, size) = match self.open(system, file) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let at = number(query, "at").filter(|&a| a < size);
        let (start, shown) = match at {
            // From a line start before `at` (or from `at` itself).
            Some(at) => stretch(&fd, at.saturating_sub(AROUND), at + AROUND, at),
            None => stretch(&fd, size.saturating_sub(TAIL), size, size.saturating_sub(1)),
        };
        let mark = at.map(|a| {
            (
                a.saturating_sub(start) as usize,
                number(query, "line").unwrap_or(0),
            )
        });
        Reply::html(pages::file_page(system, file, size, start, &shown, mark))
    }

    /// `/api/systems/S/F?from=N`: the bytes from N (at most TAIL of them),
    /// or the end if N is absent or past the end (`"reset": true`).
    fn file_json(&self, system: &str, file: &str, query: &str) -> Reply {
        let (fd, size) = match self.open(system, file) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let (start, shown, reset) = match number(query, "from") {
            Some(from) if from <= size => {
                let (s, b) = read_at(&fd, from, TAIL);
                (s, b, false)
            }
            _ => {
                let (s, b) = stretch(&fd, size.saturating_sub(TAIL), size, size.saturating_sub(1));
                (s, b, true)
            }
        };
        let doc = serde_json::json!({
            "system": system,
            "file": file,
            "size": size,
            "from": start,
            "next": start + shown.len() as u64,
            "reset": reset,
            "text": text::plain(&shown),
        });
        Reply::json(format!("{doc}\n"))
    }

    fn metrics(&self, now: i64) -> String {
        let (all, cost) = self.with_index(|ix| (ix.systems(now, self.window), ix.cost()));
        let mut out = String::new();
        COUNTERS.render(&mut out);
        crate::metrics::CONNECTIONS.render(&mut out);
        let sessions = "upload sessions open in this process";
        let open = self.service.sessions.active();
        sample(
            &mut out,
            "anamon_receiver_active_sessions",
            "gauge",
            sessions,
            open,
        );
        let name = "anamon_receiver_systems";
        family(
            &mut out,
            name,
            "gauge",
            "systems in the log directory by state",
        );
        for st in State::ALL {
            let n = all.iter().filter(|v| v.state == st).count();
            out += &format!("{name}{{state=\"{}\"}} {n}\n", st.name());
        }
        let unchecked: u64 = all.iter().map(|v| v.unscanned).sum();
        let help = "log bytes the view has not checked for failures yet";
        sample(
            &mut out,
            "anamon_receiver_view_unchecked_bytes",
            "gauge",
            help,
            unchecked,
        );
        let help = "time the view's last look at the log directory took";
        let secs = format!("{:.6}", cost.as_secs_f64());
        sample(
            &mut out,
            "anamon_receiver_view_refresh_seconds",
            "gauge",
            help,
            secs,
        );
        out
    }
}

/// The query without `part=`, for the page's script to add its own.
fn query_without_part(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("part="))
        .collect::<Vec<_>>()
        .join("&")
}

/// Reads `from..to` (as much as there is), then starts at a line: unless it
/// is the file's start, the partial line before the first newline is
/// dropped, if that newline comes before `keep` (an offset to show).
fn stretch(fd: &Fd, from: u64, to: u64, keep: u64) -> (u64, Vec<u8>) {
    let (start, mut bytes) = read_at(fd, from, to.saturating_sub(from));
    if start == 0 {
        return (0, bytes);
    }
    let before = keep.saturating_sub(start).min(bytes.len() as u64) as usize;
    match bytes[..before].iter().position(|&b| b == b'\n') {
        Some(nl) => {
            bytes.drain(..=nl);
            (start + nl as u64 + 1, bytes)
        }
        None => (start, bytes),
    }
}

fn read_at(fd: &Fd, from: u64, len: u64) -> (u64, Vec<u8>) {
    let mut buf = vec![0; len as usize];
    let n = sys::pread_full(fd, &mut buf, from).unwrap_or(0);
    buf.truncate(n);
    (from, buf)
}

/// A whole reply as a response.
fn respond(r: Reply) -> Response<Body> {
    response(r.status, r.content_type, Body::whole(r.body))
}

/// A response with the view's headers: nothing in it may be framed,
/// sniffed or cached, and the pages load nothing but the view's own script
/// and style.
fn response(status: u16, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-type", content_type),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        ("connection", "close"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    with_server(resp)
}

impl View {
    /// Runs `f` on the blocking pool; a reply if it could not run.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&View) -> Result<T, Reply> + Send + 'static,
    ) -> Result<T, Reply> {
        let view = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&view))
            .await
            .unwrap_or_else(|_| Err(Reply::error(500, "the file could not be read")))
    }

    /// `/raw/S/F`: the file as it is, as a download (never rendered),
    /// streamed as the client takes it.
    async fn raw(self: Arc<Self>, conn: Conn, system: &str, file: &str) -> Response<Body> {
        let (s, f) = (system.to_string(), file.to_string());
        let (fd, size) = match self.blocking(move |v| v.open(&s, &f)).await {
            Ok(x) => x,
            Err(r) => return respond(r),
        };
        let (tx, body) = Body::streamed();
        tokio::spawn(stream_raw(Arc::new(fd), size, tx, conn));
        let mut resp = response(200, "text/plain; charset=utf-8", body);
        let h = resp.headers_mut();
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(size));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            h.insert(hyper::header::CONTENT_DISPOSITION, v);
        }
        resp
    }

    /// `/follow/S/F?from=N`: Server-Sent Events with the bytes from N on,
    /// as they arrive; each event's id is the offset after it, which the
    /// browser sends back (Last-Event-ID) when it reconnects. If the file
    /// is cut short or rewritten, a `reset` event carries its end afresh.
    async fn follow(
        self: Arc<Self>,
        conn: Conn,
        system: &str,
        file: &str,
        from: Option<u64>,
    ) -> Response<Body> {
        let Some(slot) = FollowSlot::take(&self) else {
            return respond(Reply::error(
                503,
                "too many pages follow files at once; try again",
            ));
        };
        let (s, f) = (system.to_string(), file.to_string());
        let follower = match self
            .blocking(move |v| {
                v.open(&s, &f)
                    .map(|(fd, size)| Follower::new(fd, size, from))
            })
            .await
        {
            Ok(x) => x,
            Err(r) => return respond(r),
        };
        let (tx, body) = Body::streamed();
        tokio::spawn(stream_events(follower, tx, conn, slot));
        response(200, "text/event-stream; charset=utf-8", body)
    }
}

/// One of the view's event streams; counted while it lives.
struct FollowSlot(Arc<View>);

impl FollowSlot {
    fn take(view: &Arc<View>) -> Option<FollowSlot> {
        if view.follows.fetch_add(1, Ordering::SeqCst) >= view.max_follows {
            view.follows.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(FollowSlot(Arc::clone(view)))
    }
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        self.0.follows.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Feeds `/raw`'s body: a chunk read (on the blocking pool) only once the
/// client has taken the one before.
async fn stream_raw(fd: Arc<Fd>, size: u64, tx: mpsc::Sender<Bytes>, conn: Conn) {
    let mut sent = 0;
    while sent < size {
        let want = (size - sent).min(RAW_CHUNK as u64) as usize;
        let file = Arc::clone(&fd);
        let chunk = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; want];
            let n = sys::pread_full(&file, &mut buf, sent).unwrap_or(0);
            buf.truncate(n);
            buf
        })
        .await
        .unwrap_or_default();
        if chunk.is_empty() {
            // Shorter than when the head went out: the client sees the
            // connection end before Content-Length, as it should.
            conn.cut();
            return;
        }
        sent += chunk.len() as u64;
        if !send_within(&tx, Bytes::from(chunk), CHUNK_WAIT, &conn).await {
            return;
        }
    }
}

/// Where an event stream is in its file.
struct Follower {
    fd: Fd,
    /// The offset sent up to; `None` until the first (reset) event.
    offset: Option<u64>,
    /// The file's first bytes when last looked at: if they change, the
    /// file was rewritten (a new install of that name).
    start_bytes: Vec<u8>,
}

/// What one look at a followed file found.
enum Step {
    /// New bytes: sent at once, and looked again without a pause.
    Message(Vec<u8>, u64),
    /// The file afresh (first look, cut short or rewritten).
    Reset(Vec<u8>, u64),
    Nothing,
}

impl Follower {
    fn new(fd: Fd, size: u64, from: Option<u64>) -> Follower {
        let start_bytes = read_at(&fd, 0, 64).1;
        Follower {
            fd,
            offset: from.filter(|&n| n <= size),
            start_bytes,
        }
    }

    fn first(&self) -> Vec<u8> {
        read_at(&self.fd, 0, 64).1
    }

    fn step(&mut self) -> std::io::Result<Step> {
        let size = sys::fstat(&self.fd).map(|st| st.st_size as u64)?;
        let rewritten = |offset: u64| {
            size < offset || {
                let now = self.first();
                now.len() >= self.start_bytes.len()
                    && now[..self.start_bytes.len()] != self.start_bytes[..]
            }
        };
        let step = match self.offset {
            Some(offset) if !rewritten(offset) => {
                if size > offset {
                    let (_, bytes) = read_at(&self.fd, offset, (size - offset).min(TAIL));
                    let keep = match text::utf8_cut(&bytes) {
                        0 if bytes.len() >= 4 => bytes.len(),
                        k => k,
                    };
                    if keep > 0 {
                        let offset = offset + keep as u64;
                        self.offset = Some(offset);
                        return Ok(Step::Message(
                            event("message", offset, &bytes[..keep]),
                            keep as u64,
                        ));
                    }
                }
                Step::Nothing
            }
            _ => {
                let (start, bytes) = stretch(
                    &self.fd,
                    size.saturating_sub(TAIL),
                    size,
                    size.saturating_sub(1),
                );
                let keep = text::utf8_cut(&bytes);
                let offset = start + keep as u64;
                self.offset = Some(offset);
                self.start_bytes = self.first();
                Step::Reset(event("reset", offset, &bytes[..keep]), keep as u64)
            }
        };
        if self.start_bytes.len() < 64 {
            self.start_bytes = self.first();
        }
        Ok(step)
    }
}

/// Feeds an event stream until it has lasted [`FOLLOW_FOR`] or sent
/// [`FOLLOW_BYTES`]; looks at the file every [`FOLLOW_POLL`].
async fn stream_events(
    mut follower: Follower,
    tx: mpsc::Sender<Bytes>,
    conn: Conn,
    _slot: FollowSlot,
) {
    if !send_within(
        &tx,
        Bytes::from_static(b"retry: 1000\n\n"),
        CHUNK_WAIT,
        &conn,
    )
    .await
    {
        return;
    }
    let (end, mut sent, mut quiet) = (Instant::now() + FOLLOW_FOR, 0u64, Instant::now());
    while Instant::now() < end && sent < FOLLOW_BYTES {
        let Ok((back, step)) = tokio::task::spawn_blocking(move || {
            let step = follower.step();
            (follower, step)
        })
        .await
        else {
            return;
        };
        follower = back;
        let (out, pause) = match step {
            Err(_) => return,
            Ok(Step::Message(e, n)) => {
                sent += n;
                quiet = Instant::now();
                (Some(e), false)
            }
            Ok(Step::Reset(e, n)) => {
                sent += n;
                (Some(e), true)
            }
            Ok(Step::Nothing) => (None, true),
        };
        if let Some(e) = out {
            if !send_within(&tx, Bytes::from(e), CHUNK_WAIT, &conn).await {
                return;
            }
        }
        if !pause {
            continue;
        }
        if quiet.elapsed() > Duration::from_secs(10) {
            if !send_within(
                &tx,
                Bytes::from_static(b": still following\n\n"),
                CHUNK_WAIT,
                &conn,
            )
            .await
            {
                return;
            }
            quiet = Instant::now();
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// One event: `id` is the file offset after `bytes`; the text, made safe,
/// goes as one `data:` line per line (a trailing newline gives a last,
/// empty one, so the browser's joined data ends with it too).
fn event(kind: &str, id: u64, bytes: &[u8]) -> Vec<u8> {
    let mut e = format!("event: {kind}\nid: {id}\n");
    for line in text::plain(bytes).split('\n') {
        e.push_str("data: ");
        e.push_str(line);
        e.push('\n');
    }
    e.push('\n');
    e.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_check_names_as_uploads_do() {
        assert!(matches!(route("/"), Some(Route::Systems)));
        assert!(matches!(route("/s/web01/"), Some(Route::System("web01"))));
        assert!(matches!(
            route("/s/web-01.lab:2/anaconda.log"),
            Some(Route::File("web-01.lab:2", "anaconda.log"))
        ));
        for bad in [
            "/s/../etc",
            "/s/web01/..",
            "/raw/web01/../../etc/passwd",
            "/raw/%2e%2e/x",
            "/s/web%2001",
            "/follow/web01/a:b",
            "/s/.",
            "//etc/passwd",
            "/s/web01/a/b",
            "/static/../view.js",
            "s/web01",
        ] {
            assert!(route(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn events_keep_lines_and_their_end() {
        let e = event("message", 12, b"a\nb\x1b[1m\n");
        assert_eq!(e, b"event: message\nid: 12\ndata: a\ndata: b\ndata: \n\n");
        // A CR would end an SSE line early: it never gets through.
        let e = event("message", 3, b"x\ry\0");
        assert_eq!(e, "event: message\nid: 3\ndata: xy\u{2400}\n\n".as_bytes());
    }
}
