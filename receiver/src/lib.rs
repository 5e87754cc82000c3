//! anamon-receiver: serves XML-RPC `upload_log_data` as a working Cobbler
//! does, and stores the logs in Cobbler's layout, safely.
//!
//! `main` parses the command line and calls [`run`]. The jobs: `cli`
//! (flags), `server` (connections: hyper's HTTP/1 on tokio, caps and
//! deadlines), `uploads` (an XML-RPC request's framing), `rpc` (the
//! call, Cobbler's rules and the receiver's own checks), `store` (the log
//! directory, never followed through a link), `limits` (the request rate
//! per client), `known` (names Cobbler knows, `--cobbler-api`),
//! `sessions` (one log line per upload session), `sys` (the unsafe system
//! calls), `metrics` (counters for `/metrics`), and `view` (the read-only
//! live view, `--view`).

#[macro_use]
mod log;
mod cli;
mod known;
mod limits;
mod metrics;
mod rpc;
mod server;
mod sessions;
mod store;
mod sys;
mod uploads;
mod view;

pub use cli::{parse, Command, Config, UsageError};

use limits::RateLimiter;
use rpc::{Policy, Service};
use server::{Bounds, Gate, KeepAlive};
use sessions::Sessions;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Caps, LogDir};
use uploads::Uploads;

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

/// Why the receiver could not start.
#[derive(Debug)]
pub enum StartError {
    LogDir(PathBuf, std::io::Error),
    CallLog(PathBuf, std::io::Error),
    Listen(&'static str, SocketAddr, std::io::Error),
    PortFile(&'static str, PathBuf, std::io::Error),
    Runtime(std::io::Error),
    HookThread(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::LogDir(p, e) => write!(f, "cannot use log directory {}: {e}", p.display()),
            StartError::CallLog(p, e) => write!(f, "--call-log {}: {e}", p.display()),
            StartError::Listen(flag, a, e) => write!(f, "{flag} {a}: cannot listen: {e}"),
            StartError::PortFile(flag, p, e) => write!(f, "{flag} {}: {e}", p.display()),
            StartError::Runtime(e) => write!(f, "cannot start the server's runtime: {e}"),
            StartError::HookThread(e) => {
                write!(f, "--on-state-change: cannot start the hook's thread: {e}")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::LogDir(_, e)
            | StartError::CallLog(_, e)
            | StartError::Listen(_, _, e)
            | StartError::PortFile(_, _, e)
            | StartError::Runtime(e)
            | StartError::HookThread(e) => Some(e),
        }
    }
}

/// Threads of tokio's blocking pool: calls being answered (parsed and
/// fsynced) at once, and the view's directory scans and reads.
const BLOCKING_THREADS: usize = 32;

fn serve(cfg: Config) -> Result<(), StartError> {
    let open_files = server::raise_open_files();
    let service = Arc::new(open_service(&cfg)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(StartError::Runtime)?;
    let served = runtime.block_on(async {
        let (stopping, stop) = tokio::sync::watch::channel(false);
        // The view listens first: its port file is there once the
        // uploads' is.
        let view = match &cfg.view {
            Some(v) => Some(view::bind(v, Arc::clone(&service), stop.clone()).await?),
            None => None,
        };
        let listener = listen("--listen", cfg.listen, cfg.port_file.as_deref()).await?;
        let bounds = upload_bounds(&cfg, open_files);
        announce(&cfg, &listener, &service, &bounds);
        tokio::spawn(sweep(Arc::clone(&service)));
        tokio::spawn(async move {
            stop_signal().await;
            let _ = stopping.send(true);
        });
        let gate = Gate::new(&bounds, cfg.trusted_proxies.clone());
        let uploads = Arc::new(Uploads::new(
            Arc::clone(&service),
            cfg.timeout,
            cfg.max_request_size,
            cfg.body_memory,
        ));
        let view_done = view.map(|v| tokio::spawn(v.serve(stop.clone())));
        server::accept_loop(listener, uploads, Arc::clone(&gate), bounds, stop).await;
        let busy = gate.drain(cfg.timeout).await;
        if let Some(v) = view_done {
            let _ = v.await;
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
    });
    // What is still running (an event stream, a call stuck on the disk)
    // is abandoned, not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

/// The log directory, the call log and the checks: what answers a call.
fn open_service(cfg: &Config) -> Result<Service, StartError> {
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
    .map_err(|e| StartError::LogDir(cfg.dir.clone(), e))?;
    let call_log = match &cfg.call_log {
        None => None,
        Some(p) => Some(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| StartError::CallLog(p.clone(), e))?,
        )),
    };
    Ok(Service {
        store,
        policy: Policy {
            allow: cfg.allow.clone(),
            token: cfg.token.clone(),
            cobbler: cfg.cobbler_api.clone().map(known::CobblerNames::new),
        },
        rate: RateLimiter::new(cfg.rate, cfg.burst),
        sessions: Sessions::new(cfg.session_idle),
        call_log,
    })
}

/// Binds `addr` and, once listening, writes its port to `port_file`.
async fn listen(
    flag: &'static str,
    addr: SocketAddr,
    port_file: Option<&Path>,
) -> Result<tokio::net::TcpListener, StartError> {
    let listener = bind(addr).map_err(|e| StartError::Listen(flag, addr, e))?;
    if let Some(p) = port_file {
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Listen(flag, addr, e))?
            .port();
        let port_flag = if flag == "--listen" {
            "--port-file"
        } else {
            "--view-port-file"
        };
        write_atomically(p, &format!("{port}\n"))
            .map_err(|e| StartError::PortFile(port_flag, p.to_path_buf(), e))?;
    }
    Ok(listener)
}

/// Connections the kernel queues for `accept` (the system's somaxconn
/// caps it): room for a burst of agents, and for floods that reconnect as
/// fast as they are closed, without dropping a legitimate client's SYN.
const BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Descriptors kept for other uses than connections: the log directory,
/// files being written, the view's listener and its connections.
const OTHER_FILES: u64 = 256;

/// The upload listener's bounds; its cap lowered to fit the open-file
/// limit, if that is lower.
fn upload_bounds(cfg: &Config, open_files: u64) -> Bounds {
    let view = cfg.view.as_ref().map_or(0, |v| v.max_connections as u64);
    let room = open_files.saturating_sub(OTHER_FILES + view).max(1);
    let mut max_connections = cfg.max_connections;
    if max_connections as u64 > room {
        info!(
            "--max-connections {max_connections} lowered to {room}: the open-file limit is {open_files} (LimitNOFILE=)"
        );
        max_connections = room as usize;
    }
    Bounds {
        max_connections,
        per_address: cfg.max_connections_per_address,
        head_timeout: cfg.timeout.min(server::HEAD_TIMEOUT),
        keep_alive: KeepAlive::On,
    }
}

fn announce(cfg: &Config, listener: &tokio::net::TcpListener, service: &Service, bounds: &Bounds) {
    let local = listener
        .local_addr()
        .map_or_else(|_| cfg.listen.to_string(), |a| a.to_string());
    info!(
        "listening on {local} for upload_log_data at {}; storing in {}; {}{}; {}; caps {} bytes per file, {} per system, {} requests/s per client, {} connections ({} per address)",
        uploads::RPC_PATHS.join(" "),
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
        cfg.rate,
        bounds.max_connections,
        bounds.per_address,
    );
}

/// Ends idle upload sessions (their log line) and forgets idle clients'
/// rate buckets, once a second.
async fn sweep(service: Arc<Service>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        service.sessions.sweep(false);
        service.rate.forget_idle(Instant::now());
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        info!("cannot handle SIGTERM/SIGINT; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
