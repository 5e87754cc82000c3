//! anamon-receiver: serves XML-RPC `upload_log_data` as a working Cobbler
//! does, and stores the logs in Cobbler's layout, safely.
//!
//! `main` parses the command line and calls [`run`]. The jobs: [`cli`]
//! (flags), [`http`] (one bounded request per connection), [`rpc`] (the
//! call, Cobbler's rules and the receiver's own checks), [`store`] (the log
//! directory, never followed through a link), [`limits`] (rate and
//! connection caps), [`known`] (names Cobbler knows, `--cobbler-api`),
//! [`sessions`] (one log line per upload session), [`sys`] (the unsafe
//! system calls), [`metrics`] (counters for `/metrics`), and `view` (the
//! read-only live view, `--view`).

#[macro_use]
pub mod log;
pub mod cli;
pub mod http;
pub mod known;
pub mod limits;
pub mod metrics;
pub mod rpc;
pub mod sessions;
pub mod store;
pub mod sys;
mod view;

use cli::Config;
use limits::{RateLimiter, Slots};
use rpc::{Policy, Service};
use sessions::Sessions;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Caps, LogDir};

/// Starts serving; returns the process exit status once SIGTERM or SIGINT
/// has been handled (0), or at once if it cannot start (1).
/// `anamon-receiver status`: the systems' table; the exit status.
pub fn status(opts: &cli::StatusOptions) -> i32 {
    view::status::run(opts)
}

pub fn run(cfg: Config) -> i32 {
    match serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            info!("{e}");
            1
        }
    }
}

fn serve(cfg: Config) -> Result<(), String> {
    let store = LogDir::open(
        &cfg.dir,
        Caps {
            file_bytes: cfg.max_file_size,
            system_bytes: cfg.max_system_size,
            total_bytes: cfg.max_total_size,
            files_per_system: cfg.max_files_per_system,
            min_free_bytes: cfg.min_free_space,
        },
    )
    .map_err(|e| format!("cannot use log directory {}: {e}", cfg.dir.display()))?;
    let call_log = match &cfg.call_log {
        None => None,
        Some(p) => Some(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("--call-log {}: {e}", p.display()))?,
        )),
    };
    let listener = TcpListener::bind(cfg.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(p) = &cfg.port_file {
        write_atomically(p, &format!("{}\n", local.port()))
            .map_err(|e| format!("--port-file {}: {e}", p.display()))?;
    }
    sys::install_stop_handlers();
    let service = Arc::new(Service {
        store,
        policy: Policy {
            allow: cfg.allow.clone(),
            token: cfg.token.clone(),
            cobbler: cfg.cobbler_api.clone().map(known::CobblerNames::new),
        },
        rate: RateLimiter::new(cfg.rate, cfg.burst),
        sessions: Sessions::new(cfg.session_idle),
        call_log,
    });
    info!(
        "listening on {local} for upload_log_data at {}; storing in {}; {}{}; {}; caps {} bytes per file, {} per system, {} requests/s per client",
        http::RPC_PATHS.join(" "),
        service.store.path().display(),
        match &cfg.allow {
            Some(a) => format!("{} allowed system names", a.len()),
            None => "any system name".into(),
        },
        match &cfg.cobbler_api {
            Some(e) => format!(" that Cobbler at {} knows", e.url()),
            None => String::new(),
        },
        if cfg.token.is_some() { "token required" } else { "no token" },
        cfg.max_file_size,
        cfg.max_system_size,
        cfg.rate
    );
    let view = match &cfg.view {
        Some(v) => Some(view::start(v, Arc::clone(&service))?),
        None => None,
    };
    let slots = Arc::new(Slots::new(cfg.max_connections));
    let proxies = Arc::new(cfg.trusted_proxies.clone());
    let mut last_sweep = Instant::now();
    while !sys::STOP.load(Ordering::SeqCst) {
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            service.sessions.sweep(false);
            service.rate.forget_idle(Instant::now());
            last_sweep = Instant::now();
        }
        // Take a slot first: while all are busy, new clients wait in the
        // listen queue instead of costing a thread each.
        if !slots.acquire(Duration::from_millis(500)) {
            continue;
        }
        if !sys::poll_readable(&listener, 1000) {
            slots.release();
            continue;
        }
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                slots.release();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    info!("accept failed: {e}; going on");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let (service, slots_for_conn, timeout, max_body, proxies) = (
            Arc::clone(&service),
            Arc::clone(&slots),
            cfg.timeout,
            cfg.max_request_size,
            Arc::clone(&proxies),
        );
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let client = Client {
                    peer: peer.ip(),
                    trusted_proxy: proxies.contains(&peer.ip()),
                };
                serve_connection(conn, client, &service, timeout, max_body);
                slots_for_conn.release();
            });
        if let Err(e) = spawned {
            // The connection was moved into the closure and is dropped
            // (closed) with it; the client retries.
            slots.release();
            info!("cannot start a connection thread: {e}; dropped a connection from {peer}");
        }
    }
    let busy = slots.drain(cfg.timeout);
    if let Some(v) = view {
        let _ = v.join();
    }
    service.sessions.sweep(true);
    info!(
        "stopping on signal{}",
        if busy > 0 {
            format!("; {busy} connections still busy")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Who is at the other end of a connection.
struct Client {
    peer: std::net::IpAddr,
    /// The peer is a proxy given with --trusted-proxy: the client is the
    /// address it forwards for.
    trusted_proxy: bool,
}

fn serve_connection(
    mut conn: TcpStream,
    from: Client,
    service: &Service,
    timeout: Duration,
    max_body: usize,
) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_write_timeout(Some(timeout));
    let client = from.peer;
    match http::read_request(&mut conn, max_body, Instant::now() + timeout) {
        Ok(req) => {
            let client = match req.forwarded_for {
                Some(forwarded) if from.trusted_proxy => forwarded,
                _ => client,
            };
            let body = service.answer(client, &req.body);
            let _ = http::respond(&mut conn, 200, "text/xml", &body);
        }
        Err(http::Reject::Status(code, why)) => {
            metrics::COUNTERS.refused(metrics::Cause::Http);
            service
                .sessions
                .noise(client, &format!("HTTP {code}: {why}"));
            let _ = http::respond(&mut conn, code, "text/plain", format!("{why}\n").as_bytes());
        }
        Err(http::Reject::Gone(why)) => service
            .sessions
            .noise(client, &format!("connection lost: {why}")),
        Err(http::Reject::Probe) => {}
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
