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
pub mod journal;
#[macro_use]
pub mod log;
pub mod shipper;
pub mod sys;
pub mod watchlist;
/// The codec lives in its own crate, shared with anamon-receiver.
pub use anamon_xmlrpc as xmlrpc;

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
    let mut watch = cfg.watch;
    let mut journal = None;
    if cfg.journal && !cfg.exit_after_pass {
        match journal::Journal::start() {
            Ok(Some(j)) => {
                watch.push(j.path().to_path_buf(), Some(journal::ALIAS));
                journal = Some(j);
            }
            Ok(None) => debug!("no systemd journal here; not streaming it"),
            Err(e) => info!("cannot stream the journal: {e}"),
        }
    }
    let paths: Vec<_> = watch.files.iter().map(|e| e.path.clone()).collect();
    let targets = events::Targets {
        files: &paths,
        globs: &watch.globs,
    };
    let (events, poll_reason) = EventSource::new(pipe, &targets, cfg.force_poll);
    info!(
        "anamon {} (kernel {}) shipping {} files{} as {:?} to http://{}:{}{}{}; {}",
        env!("CARGO_PKG_VERSION"),
        sys::kernel_release(),
        watch.files.len(),
        if watch.globs.is_empty() {
            String::new()
        } else {
            format!(" and {} file patterns", watch.globs.len())
        },
        cfg.name,
        cfg.server,
        cfg.port,
        cfg.path,
        if cfg.token.is_some() {
            " with a token"
        } else {
            ""
        },
        match &poll_reason {
            None => "file events from inotify".to_string(),
            Some(why) => format!(
                "polling every {} s ({why})",
                events::POLL_INTERVAL.as_secs()
            ),
        }
    );
    for e in &watch.files {
        debug!("watching {} as {}", e.path.display(), e.alias);
    }
    for g in &watch.globs {
        debug!("watching {} for {}", g.dir.display(), g.pattern);
    }
    let files = watch
        .files
        .iter()
        .map(|e| WatchedFile::new(e.path.clone(), e.alias.clone()))
        .collect();
    let client = Client::new(
        HttpTransport::new(&cfg.server, cfg.port, &cfg.path),
        cfg.wire,
    )
    .with_token(cfg.token.clone());
    let shipper = Shipper::new(client, cfg.name.clone(), files, cfg.timeout)
        .with_min_interval(cfg.min_interval);
    let mut agent = Agent {
        shipper,
        events,
        watch,
        names_changed: true,
    };

    let status = if cfg.exit_after_pass {
        agent.ship_once(cfg.exit_timeout)
    } else {
        agent.ship_forever()
    };
    drop(journal);
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

/// The running agent: what it watches, how it hears of changes, and the
/// shipper that delivers.
struct Agent<T> {
    shipper: Shipper<T>,
    events: EventSource,
    watch: watchlist::WatchList,
    /// Names may have changed since globs were last matched.
    names_changed: bool,
}

impl<T: cobbler::Transport> Agent<T> {
    /// Adds files that globs now match, then ships what is pending.
    fn pass(&mut self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> Pass {
        let found = if std::mem::take(&mut self.names_changed) {
            self.watch.scan_globs()
        } else {
            Vec::new()
        };
        for e in found {
            info!(
                "{}: new file matching a watched pattern; shipping it as {}",
                e.path.display(),
                e.alias
            );
            self.shipper.add(WatchedFile::new(e.path, e.alias));
        }
        self.shipper.pass(deadline, stop)
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        self.names_changed |= self.events.wait(timeout);
    }

    /// The daemon: ship whenever something changes; on a shutdown signal
    /// ship what is pending within [`SHUTDOWN_GRACE`] and exit 0.
    fn ship_forever(&mut self) -> i32 {
        // While the server fails, file events do not start passes: only
        // the backoff does. Files the server faulted on alone only set a
        // time to look again; events keep shipping the others.
        let mut retry_at: Option<Instant> = None;
        let mut wake_at: Option<Instant> = None;
        loop {
            if sys::shutdown_requested() {
                return self.flush_and_exit();
            }
            if retry_at.is_none_or(|t| Instant::now() >= t) {
                (retry_at, wake_at) = match self.pass(None, &sys::shutdown_requested) {
                    Pass::Failed { retry_at } => (Some(retry_at), Some(retry_at)),
                    Pass::Waiting { until } => (None, Some(until)),
                    Pass::Done | Pass::Interrupted => (None, None),
                };
            }
            self.wait(wake_at.map(|t| t.saturating_duration_since(Instant::now())));
        }
    }

    fn flush_and_exit(&mut self) -> i32 {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        // The signal aborted any request in flight, so the first attempt may
        // fail on a dead connection: keep trying, briefly, until the deadline.
        loop {
            match self.pass(Some(deadline), &|| false) {
                Pass::Done => {
                    info!("shutting down: everything shipped");
                    return 0;
                }
                Pass::Failed { .. } | Pass::Waiting { .. }
                    if Instant::now() + FLUSH_RETRY_PAUSE < deadline =>
                {
                    std::thread::sleep(FLUSH_RETRY_PAUSE);
                }
                _ => {
                    info!("shutting down: some data could not be shipped in time; it stays in the files");
                    return 0;
                }
            }
        }
    }

    /// `--exit`: ship what the files hold, retrying until `limit`; 0 only
    /// when the server has all of it.
    fn ship_once(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        let deadline = start + limit;
        // When the backoff would wait past the deadline, one last attempt
        // just before it, rather than giving up early.
        let last_attempt = deadline.checked_sub(LAST_ATTEMPT_MARGIN).unwrap_or(start);
        loop {
            if sys::shutdown_requested() {
                return self.flush_and_exit();
            }
            match self.pass(Some(deadline), &sys::shutdown_requested) {
                Pass::Done if self.shipper.unreadable() == 0 => {
                    info!("all files shipped");
                    return 0;
                }
                Pass::Done => {
                    info!(
                        "{} file(s) could not be read; exiting with status 1",
                        self.shipper.unreadable()
                    );
                    return 1;
                }
                Pass::Failed { retry_at } | Pass::Waiting { until: retry_at }
                    if retry_at < deadline =>
                {
                    self.wait(Some(retry_at.saturating_duration_since(Instant::now())));
                }
                Pass::Failed { .. } | Pass::Waiting { .. } if Instant::now() < last_attempt => {
                    self.wait(Some(last_attempt.saturating_duration_since(Instant::now())));
                }
                _ => {
                    // Tenths by integer arithmetic: formatting an f64 would
                    // pull ~16 KiB of float printing into the binary.
                    let tenths = start.elapsed().as_millis() / 100;
                    info!(
                        "gave up after {}.{} s (--exit-timeout {}) with data still to ship; exiting with status 1",
                        tenths / 10,
                        tenths % 10,
                        limit.as_secs()
                    );
                    return 1;
                }
            }
        }
    }
}

/// How long before the --exit deadline the last attempt is made.
const LAST_ATTEMPT_MARGIN: Duration = Duration::from_millis(500);

/// Between attempts of the final flush.
const FLUSH_RETRY_PAUSE: Duration = Duration::from_millis(100);
