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
//! [`index`]). Its connections are bounded by a slot count of their own,
//! apart from the uploads', and every response is bounded (rows, bytes, the
//! time an event stream stays open).

mod hooks;
mod index;
mod pages;
mod rules;
mod state;
pub mod status;
mod text;

use crate::http::{self, Head, Reject};
use crate::limits::Slots;
use crate::metrics::{family, sample, COUNTERS};
use crate::rpc::Service;
use crate::sys::{self, Fd};
use index::Index;
use state::State;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long ends the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const SCRIPT: &str = include_str!("view.js");
const STYLE: &str = include_str!("view.css");

struct View {
    service: Arc<Service>,
    index: Mutex<Index>,
    window: i64,
    follows: AtomicUsize,
    max_follows: usize,
}

/// Binds the view's listener and serves it on a thread of its own until
/// SIGTERM/SIGINT (the receiver's stop flag).
pub fn start(
    settings: &Settings,
    service: Arc<Service>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let listener = TcpListener::bind(settings.listen)
        .map_err(|e| format!("--view {}: cannot listen: {e}", settings.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(p) = &settings.port_file {
        let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", local.port()))
            .and_then(|()| std::fs::rename(&tmp, p))
            .map_err(|e| format!("--view-port-file {}: {e}", p.display()))?;
    }
    info!(
        "live view on http://{local}/ (read-only; {} connections at most; installing = an upload within {} s)",
        settings.max_connections,
        settings.window.as_secs()
    );
    let view = Arc::new(View {
        service,
        index: Mutex::new(Index::default()),
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
        hooks::start(hook, Arc::clone(&view.service), view.window)
            .map_err(|e| format!("cannot start the hook's thread: {e}"))?;
    }
    let slots = Arc::new(Slots::new(settings.max_connections));
    std::thread::Builder::new()
        .name("view".into())
        .spawn(move || accept_loop(&listener, &view, &slots))
        .map_err(|e| format!("cannot start the view's thread: {e}"))
}

fn accept_loop(listener: &TcpListener, view: &Arc<View>, slots: &Arc<Slots>) {
    while !sys::STOP.load(Ordering::SeqCst) {
        if !slots.acquire(Duration::from_millis(500)) {
            continue;
        }
        if !sys::poll_readable(listener, 500) {
            slots.release();
            continue;
        }
        let Ok((conn, _)) = listener.accept() else {
            slots.release();
            continue;
        };
        let (view, slots2) = (Arc::clone(view), Arc::clone(slots));
        let spawned = std::thread::Builder::new()
            .name("view-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve(conn, &view);
                slots2.release();
            });
        if spawned.is_err() {
            slots.release();
        }
    }
    slots.drain(Duration::from_secs(2));
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

fn serve(mut conn: TcpStream, view: &View) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let head = match http::read_head(&mut conn, Instant::now() + HEAD_TIMEOUT) {
        Ok((head, _)) => head,
        Err(Reject::Status(code, why)) => {
            let _ = send(&mut conn, &Reply::error(code, &why));
            return;
        }
        Err(_) => return,
    };
    if head.method != "GET" {
        let _ = send(
            &mut conn,
            &Reply::error(405, "the view is read-only: GET only"),
        );
        return;
    }
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let reply = match route(path) {
        None => Reply::error(404, "no such page (names are checked as uploads are)"),
        Some(Route::Raw(s, f)) => return raw(&mut conn, view, s, f),
        Some(Route::Follow(s, f)) => return follow(&mut conn, view, &head, query, s, f),
        Some(r) => view.reply(r, query),
    };
    let _ = send(&mut conn, &reply);
}

impl View {
    fn dir(&self) -> &Fd {
        self.service.store.fd()
    }

    /// Runs `f` on the index, refreshed if due.
    fn with_index<T>(&self, f: impl FnOnce(&Index) -> T) -> T {
        let mut ix = self.index.lock().unwrap_or_else(|e| e.into_inner());
        ix.refresh_if_due(self.dir());
        f(&ix)
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
        Reply::json(format!(
            "{{\"system\": {}, \"file\": {}, \"size\": {size}, \"from\": {start}, \"next\": {}, \"reset\": {reset}, \"text\": {}}}\n",
            crate::rpc::json_str(system),
            crate::rpc::json_str(file),
            start + shown.len() as u64,
            crate::rpc::json_str(&text::plain(&shown))
        ))
    }

    fn metrics(&self, now: i64) -> String {
        let (all, cost) = self.with_index(|ix| (ix.systems(now, self.window), ix.cost()));
        let mut out = String::new();
        COUNTERS.render(&mut out);
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

/// Writes a whole response with the view's headers.
fn send(conn: &mut TcpStream, r: &Reply) -> io::Result<()> {
    let mut out = head(
        r.status,
        r.content_type,
        &format!("Content-Length: {}\r\n", r.body.len()),
    );
    out.extend_from_slice(&r.body);
    conn.write_all(&out)?;
    conn.shutdown(std::net::Shutdown::Write)
}

/// A response head: nothing in it may be framed, sniffed or cached, and
/// the pages load nothing but the view's own script and style.
fn head(status: u16, content_type: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nServer: anamon-receiver\r\nContent-Type: {content_type}\r\n{extra}\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; \
         style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'\r\nConnection: close\r\n\r\n",
        http::reason(status)
    )
    .into_bytes()
}

/// `/raw/S/F`: the file as it is, as a download (never rendered).
fn raw(conn: &mut TcpStream, view: &View, system: &str, file: &str) {
    let (fd, size) = match view.open(system, file) {
        Ok(x) => x,
        Err(r) => {
            let _ = send(conn, &r);
            return;
        }
    };
    let extra = format!(
        "Content-Length: {size}\r\nContent-Disposition: attachment; filename=\"{file}\"\r\n"
    );
    if conn
        .write_all(&head(200, "text/plain; charset=utf-8", &extra))
        .is_err()
    {
        return;
    }
    let mut sent = 0;
    let mut buf = vec![0; 256 << 10];
    while sent < size && !sys::STOP.load(Ordering::Relaxed) {
        let want = (size - sent).min(buf.len() as u64) as usize;
        match sys::pread_full(&fd, &mut buf[..want], sent) {
            // Shorter than when the head went out: the client sees the
            // connection end before Content-Length, as it should.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
                sent += n as u64;
            }
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// `/follow/S/F?from=N`: Server-Sent Events with the bytes from N on, as
/// they arrive; each event's id is the offset after it, which the browser
/// sends back (Last-Event-ID) when it reconnects. If the file is cut short
/// or rewritten, a `reset` event carries its end afresh.
fn follow(
    conn: &mut TcpStream,
    view: &View,
    head_in: &Head,
    query: &str,
    system: &str,
    file: &str,
) {
    if view.follows.fetch_add(1, Ordering::SeqCst) >= view.max_follows {
        view.follows.fetch_sub(1, Ordering::SeqCst);
        let _ = send(
            conn,
            &Reply::error(503, "too many pages follow files at once; try again"),
        );
        return;
    }
    let from = head_in
        .header("Last-Event-ID")
        .and_then(|v| v.parse().ok())
        .or_else(|| number(query, "from"));
    let _ = stream_events(conn, view, system, file, from);
    view.follows.fetch_sub(1, Ordering::SeqCst);
}

fn stream_events(
    conn: &mut TcpStream,
    view: &View,
    system: &str,
    file: &str,
    from: Option<u64>,
) -> io::Result<()> {
    let (fd, size) = match view.open(system, file) {
        Ok(x) => x,
        Err(r) => return send(conn, &r),
    };
    let mut out = head(200, "text/event-stream; charset=utf-8", "");
    out.extend_from_slice(b"retry: 1000\n\n");
    conn.write_all(&out)?;
    let first = |fd: &Fd| read_at(fd, 0, 64).1;
    let mut start_bytes = first(&fd);
    let mut offset = match from {
        Some(n) if n <= size => n,
        _ => u64::MAX, // a reset: the end, afresh
    };
    let (end, mut sent, mut quiet) = (Instant::now() + FOLLOW_FOR, 0u64, Instant::now());
    while Instant::now() < end && sent < FOLLOW_BYTES && !sys::STOP.load(Ordering::Relaxed) {
        let size = sys::fstat(&fd).map(|st| st.st_size as u64)?;
        let rewritten = offset != u64::MAX
            && (size < offset || {
                let now = first(&fd);
                now.len() >= start_bytes.len() && now[..start_bytes.len()] != start_bytes[..]
            });
        if offset == u64::MAX || rewritten {
            let (start, bytes) =
                stretch(&fd, size.saturating_sub(TAIL), size, size.saturating_sub(1));
            let keep = text::utf8_cut(&bytes);
            offset = start + keep as u64;
            start_bytes = first(&fd);
            conn.write_all(&event("reset", offset, &bytes[..keep]))?;
            sent += keep as u64;
        } else if size > offset {
            let (_, bytes) = read_at(&fd, offset, (size - offset).min(TAIL));
            let keep = match text::utf8_cut(&bytes) {
                0 if bytes.len() >= 4 => bytes.len(),
                k => k,
            };
            if keep > 0 {
                offset += keep as u64;
                conn.write_all(&event("message", offset, &bytes[..keep]))?;
                sent += keep as u64;
                quiet = Instant::now();
                continue;
            }
        }
        if quiet.elapsed() > Duration::from_secs(10) {
            conn.write_all(b": still following\n\n")?;
            quiet = Instant::now();
        }
        if start_bytes.len() < 64 {
            start_bytes = first(&fd);
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    conn.shutdown(std::net::Shutdown::Write)
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
