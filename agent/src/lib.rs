//! anamon: ships installer logs to a Cobbler server while the install runs.
//!
//! `main` parses the command line and calls [`run`]; each job lives in its
//! own module: [`cli`] (flags), [`watchlist`] (which files, which names),
//! [`cursor`] (what the server has of each file), [`events`] (inotify or
//! polling), [`xmlrpc`] (the codec), [`cobbler`] (one call, wire forms),
//! [`shipper`] (delivery and retry), [`sys`] (signals and daemonising).

pub mod cli;
pub mod cobbler;
pub mod cursor;
pub mod events;
#[macro_use]
pub mod log;
pub mod shipper;
pub mod sys;
pub mod watchlist;
pub mod xmlrpc;

use cli::Config;
use cobbler::{Client, HttpTransport};
use cursor::WatchedFile;
use events::EventSource;
use shipper::{Pass, Shipper};
use std::time::{Duration, Instant};

/// How long SIGTERM may take: RHEL4's installer sends SIGKILL 2 s after it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1400);

/// Runs the agent; returns the process exit status.
pub fn run(cfg: Config) -> i32 {
    log::set_debug(cfg.debug);
    if let Err(e) = start(&cfg) {
        info!("cannot start: {e}");
        return 1;
    }
    let pipe = match sys::WakePipe::new().and_then(|p| p.catch_shutdown_signals().map(|()| p)) {
        Ok(p) => p,
        Err(e) => {
            info!("cannot set up signal handling: {e}");
            return 1;
        }
    };
    let paths: Vec<_> = cfg.files.iter().map(|e| e.path.clone()).collect();
    let (mut events, poll_reason) = EventSource::new(pipe, &paths, cfg.force_poll);
    info!(
        "anamon {} (kernel {}) shipping {} files as {:?} to http://{}:{}/cobbler_api; {}",
        env!("CARGO_PKG_VERSION"),
        sys::kernel_release(),
        cfg.files.len(),
        cfg.name,
        cfg.server,
        cfg.port,
        match &poll_reason {
            None => "file events from inotify".to_string(),
            Some(why) => format!(
                "polling every {} s ({why})",
                events::POLL_INTERVAL.as_secs()
            ),
        }
    );
    for e in &cfg.files {
        debug!("watching {} as {}", e.path.display(), e.alias);
    }
    let files = cfg
        .files
        .iter()
        .map(|e| WatchedFile::new(e.path.clone(), e.alias.clone()))
        .collect();
    let client = Client::new(HttpTransport::new(&cfg.server, cfg.port), cfg.wire);
    let mut shipper = Shipper::new(client, cfg.name.clone(), files, cfg.timeout);

    let status = if cfg.exit_after_pass {
        ship_once(&mut shipper, &mut events, cfg.exit_timeout)
    } else {
        ship_forever(&mut shipper, &mut events)
    };
    if let Some(p) = &cfg.pidfile {
        let _ = std::fs::remove_file(p);
    }
    status
}

/// Detaches (unless `--fg`), redirects the log, writes the pid file.
fn start(cfg: &Config) -> std::io::Result<()> {
    if !cfg.foreground {
        sys::daemonize(cfg.log_file.as_deref())?;
    } else if let Some(log) = &cfg.log_file {
        sys::redirect_stderr(log)?;
    }
    if let Some(p) = &cfg.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))?;
    }
    Ok(())
}

/// The daemon: ship whenever something changes; on a shutdown signal ship
/// what is pending within [`SHUTDOWN_GRACE`] and exit 0.
fn ship_forever<T: cobbler::Transport>(shipper: &mut Shipper<T>, events: &mut EventSource) -> i32 {
    let mut retry_at: Option<Instant> = None;
    loop {
        if sys::shutdown_requested() {
            return flush_and_exit(shipper);
        }
        if retry_at.is_none_or(|t| Instant::now() >= t) {
            retry_at = match shipper.pass(None, &sys::shutdown_requested) {
                Pass::Failed { retry_at } => Some(retry_at),
                Pass::Done | Pass::Interrupted => None,
            };
        }
        events.wait(retry_at.map(|t| t.saturating_duration_since(Instant::now())));
    }
}

fn flush_and_exit<T: cobbler::Transport>(shipper: &mut Shipper<T>) -> i32 {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    // The signal aborted any request in flight, so the first attempt may fail
    // on a dead connection: keep trying, briefly, until the deadline.
    loop {
        match shipper.pass(Some(deadline), &|| false) {
            Pass::Done => {
                info!("shutting down: everything shipped");
                return 0;
            }
            Pass::Failed { .. } if Instant::now() + FLUSH_RETRY_PAUSE < deadline => {
                std::thread::sleep(FLUSH_RETRY_PAUSE);
            }
            _ => {
                info!(
                    "shutting down: some data could not be shipped in time; it stays in the files"
                );
                return 0;
            }
        }
    }
}

/// Between attempts of the final flush.
const FLUSH_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// `--exit`: ship what the files hold, retrying until `limit`; 0 only when
/// the server has all of it.
fn ship_once<T: cobbler::Transport>(
    shipper: &mut Shipper<T>,
    events: &mut EventSource,
    limit: Duration,
) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if sys::shutdown_requested() {
            return flush_and_exit(shipper);
        }
        match shipper.pass(Some(deadline), &sys::shutdown_requested) {
            Pass::Done if shipper.unreadable() == 0 => {
                info!("all files shipped");
                return 0;
            }
            Pass::Done => {
                info!(
                    "{} file(s) could not be read; exiting with status 1",
                    shipper.unreadable()
                );
                return 1;
            }
            Pass::Failed { retry_at } if retry_at < deadline => {
                events.wait(Some(retry_at.saturating_duration_since(Instant::now())));
            }
            _ => {
                info!(
                    "gave up after {} s with data still to ship; exiting with status 1",
                    limit.as_secs()
                );
                return 1;
            }
        }
    }
}
