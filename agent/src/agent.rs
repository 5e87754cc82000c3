//! The running agent: starts everything in order (detach, descriptors, pid
//! file, signals, journal, events, client), then runs its mode: the daemon
//! until a shutdown signal and its final flush, or one bounded `--exit`.

use crate::cli::{Config, Detach, Mode};
use crate::client::Client;
use crate::events::{self, EventSource};
use crate::journal::{self, Journal};
use crate::pacing::{Pacer, Pacing};
use crate::shipper::{Pass, Round, Shipper, Stop};
use crate::sys;
use crate::transport::{HttpTransport, Transport};
use crate::watched::WatchedFile;
use crate::watchlist::WatchList;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long SIGTERM may take: RHEL 4/5's loader sends SIGKILL 2 s after it,
/// and a loaded machine needs some of the rest to schedule the exit (the
/// tests measured up to 0.45 s between the deadline and the exit).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);
/// How long before the `--exit` deadline the last attempt is made.
const LAST_ATTEMPT_MARGIN: Duration = Duration::from_millis(500);
/// Between attempts of the final flush.
const FLUSH_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs the agent; returns the process exit status.
pub(crate) fn run(cfg: Config) -> u8 {
    crate::log::set_debug(cfg.debug);
    if let Err(e) = detach(&cfg) {
        info!("cannot start: {e}");
        return 1;
    }
    // From here every way out of this function removes the pid file.
    let _pidfile = match cfg.pidfile.as_deref().map(PidFile::create).transpose() {
        Ok(p) => p,
        Err(e) => {
            info!("cannot write the pid file: {e}");
            return 1;
        }
    };
    let pipe = match sys::WakePipe::new().and_then(|p| p.catch_shutdown_signals().map(|()| p)) {
        Ok(p) => p,
        Err(e) => {
            info!("cannot set up signal handling: {e}");
            return 1;
        }
    };
    let mut watch = cfg.watch;
    // Started first: the journal child is forked from a process with one
    // thread (the agent never starts another).
    let journal = if cfg.stream_journal {
        start_journal(&mut watch)
    } else {
        None
    };
    let paths: Vec<PathBuf> = watch.files.iter().map(|e| e.path.clone()).collect();
    let targets = events::Targets {
        files: &paths,
        globs: &watch.globs,
    };
    let (events, poll_reason) = EventSource::new(pipe, &targets, cfg.watching);
    info!(
        "anamon {} (kernel {}) shipping {} files{} as {:?} to http://{}:{}{}{}; {}; {}",
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
        cfg.route.path(),
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
        },
        describe_mode(cfg.mode),
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
        HttpTransport::new(&cfg.server, cfg.port),
        cfg.wire,
        cfg.route,
    )
    .with_token(cfg.token);
    let pacing = match cfg.mode {
        Mode::Daemon(p) => p,
        Mode::Once { .. } => Pacing::Fixed(Duration::ZERO),
    };
    let shipper = Shipper::new(client, cfg.name, files, cfg.timeout, Pacer::new(pacing));
    let mut agent = Agent {
        shipper,
        watch,
        events,
        names_changed: true,
        retry_at: None,
        due_at: None,
        muted: Vec::new(),
        waiting_now: Vec::new(),
    };
    let status = match cfg.mode {
        Mode::Daemon(_) => agent.ship_forever(),
        Mode::Once { limit } => agent.ship_once(limit),
    };
    drop(journal);
    status
}

fn describe_mode(mode: Mode) -> String {
    match mode {
        Mode::Daemon(Pacing::Adaptive { cadence, .. }) => format!(
            "after a quiet spell a change ships at once, in a busy install lines reach the server within {} ms",
            cadence.as_millis()
        ),
        Mode::Daemon(Pacing::Fixed(d)) => {
            format!("at most one upload per file per {} ms", d.as_millis())
        }
        Mode::Once { limit } => format!("one pass (--exit), for at most {} s", limit.as_secs()),
    }
}

/// Detaches (unless `--fg`) and points the log where it goes.
fn detach(cfg: &Config) -> std::io::Result<()> {
    match (cfg.detach, &cfg.log_file) {
        (Detach::Background, log) => sys::daemonize(log.as_deref()),
        (Detach::Foreground, Some(log)) => sys::redirect_stderr(log),
        (Detach::Foreground, None) => Ok(()),
    }
}

fn start_journal(watch: &mut WatchList) -> Option<Journal> {
    match Journal::start() {
        Ok(Some(j)) => {
            watch.push(j.path().to_path_buf(), Some(journal::ALIAS));
            Some(j)
        }
        Ok(None) => {
            debug!("no systemd journal here; not streaming it");
            None
        }
        Err(e) => {
            info!("cannot stream the journal: {e}");
            None
        }
    }
}

/// The pid file, removed when dropped: on every way out of [`run`].
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The running agent: what it ships, how it hears of changes, and when it
/// must look again. One thread does all of it.
struct Agent<T> {
    shipper: Shipper<T>,
    watch: WatchList,
    events: EventSource,
    /// Names may have changed since globs were last matched.
    names_changed: bool,
    /// While the server fails, its next try: until then file events start
    /// no passes, only the backoff does.
    retry_at: Option<Instant>,
    /// When a pass is next due: a file's pace, a hold, a repair, a retry.
    due_at: Option<Instant>,
    /// The shipper's files (by index, sorted) whose data events are
    /// muted: those that ended the last pass waiting.
    muted: Vec<usize>,
    /// Scratch for the files waiting after a pass, kept across passes.
    waiting_now: Vec<usize>,
}

impl<T: Transport> Agent<T> {
    /// Adds files that globs now match, then ships what is due, and stops
    /// listening to the data of files that wait for a time of their own.
    fn pass(&mut self, round: Round) -> Pass {
        if std::mem::take(&mut self.names_changed) {
            for e in self.watch.scan_globs() {
                info!(
                    "{}: new file matching a watched pattern; shipping it as {}",
                    e.path.display(),
                    e.alias
                );
                self.events.add_file(&e.path);
                self.shipper.add(WatchedFile::new(e.path, e.alias));
            }
        }
        loop {
            let pass = if round.is_paced() {
                self.shipper.pass_except_unchanged(round, &mut self.events)
            } else {
                self.shipper.pass(round)
            };
            self.events.looked();
            // A file listened to again may have been written after this
            // pass read it, with no event to say so: look once more.
            let relistened = self.follow_waiting();
            if !round.is_paced() || !relistened || matches!(pass, Pass::Failed { .. }) {
                return pass;
            }
        }
    }

    /// Files that now wait for a time of their own stop raising data
    /// events, and those that no longer wait raise them again. Returns
    /// whether any does again. Compared by index, so the usual pass (the
    /// same files wait) costs no hashing of paths.
    fn follow_waiting(&mut self) -> bool {
        let mut waiting = std::mem::take(&mut self.waiting_now);
        waiting.clear();
        waiting.extend(self.shipper.waiting());
        waiting.sort_unstable();
        waiting.dedup();
        let mut relistened = false;
        if waiting != self.muted {
            for &i in &waiting {
                if self.muted.binary_search(&i).is_err() {
                    self.events.mute(self.shipper.path(i));
                }
            }
            for &i in &self.muted {
                if waiting.binary_search(&i).is_err() {
                    relistened |= self.events.listen(self.shipper.path(i));
                }
            }
            std::mem::swap(&mut self.muted, &mut waiting);
        }
        self.waiting_now = waiting;
        relistened
    }

    /// The daemon's pass, unless the server is failing and its next try is
    /// not yet due; then when the daemon must look again.
    fn daemon_pass(&mut self) -> Option<Instant> {
        if self.retry_at.is_none_or(|t| Instant::now() >= t) {
            (self.retry_at, self.due_at) = match self.pass(Round::DAEMON) {
                Pass::Failed { retry_at } => (Some(retry_at), Some(retry_at)),
                Pass::Waiting { until } => (None, Some(until)),
                Pass::Done | Pass::HeldBack | Pass::Interrupted => (None, None),
            };
        }
        self.due_at
    }

    fn wait(&mut self, until: Option<Instant>) {
        let timeout = until.map(|t| t.saturating_duration_since(Instant::now()));
        if self.events.wait(timeout) {
            self.names_changed = true;
        }
    }

    /// The daemon: ship whenever something is due; on a shutdown signal
    /// ship what is pending within [`SHUTDOWN_GRACE`] and exit 0.
    fn ship_forever(&mut self) -> u8 {
        loop {
            if sys::shutdown_requested() {
                return self.flush_and_exit(0);
            }
            let next = self.daemon_pass();
            self.wait(next);
        }
    }

    /// After a shutdown signal: the request in flight was aborted; ship
    /// what is pending on fresh connections until the grace period ends.
    /// The daemon exits 0 either way, as Python anamon's does; `--exit`
    /// exits 0 only when the server has everything (`unfinished` is its
    /// status otherwise).
    fn flush_and_exit(&mut self, unfinished: u8) -> u8 {
        sys::begin_final_flush();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            match self.pass(Round::Flush { deadline }) {
                Pass::Done => {
                    info!("shutting down: everything shipped");
                    return 0;
                }
                Pass::Failed { .. } if Instant::now() + FLUSH_RETRY_PAUSE < deadline => {
                    std::thread::sleep(FLUSH_RETRY_PAUSE);
                }
                Pass::HeldBack => {
                    info!("shutting down: the server keeps faulting on some files; their data stays in the files");
                    return unfinished;
                }
                _ => {
                    info!("shutting down: some data could not be shipped in time; it stays in the files");
                    return unfinished;
                }
            }
        }
    }

    /// `--exit`: ship what the files hold, retrying until `limit`; 0 only
    /// when the server has all of it.
    fn ship_once(&mut self, limit: Duration) -> u8 {
        let start = Instant::now();
        let deadline = start + limit;
        // When the backoff would wait past the deadline, one last attempt
        // just before it, rather than giving up early.
        let last_attempt = deadline.checked_sub(LAST_ATTEMPT_MARGIN).unwrap_or(start);
        loop {
            if sys::shutdown_requested() {
                return self.flush_and_exit(1);
            }
            let pass = self.pass(Round::Once {
                deadline,
                stop: Stop::ON_SIGNAL,
            });
            match pass {
                Pass::Done => {
                    let unshippable = self.shipper.unshippable();
                    if unshippable == 0 {
                        info!("all files shipped");
                        return 0;
                    }
                    info!("{unshippable} file(s) could not be shipped; exiting with status 1");
                    return 1;
                }
                Pass::Failed { retry_at } | Pass::Waiting { until: retry_at }
                    if retry_at < deadline =>
                {
                    self.wait(Some(retry_at));
                }
                Pass::Failed { .. } | Pass::Waiting { .. } if Instant::now() < last_attempt => {
                    self.wait(Some(last_attempt));
                }
                Pass::Interrupted if sys::shutdown_requested() => return self.flush_and_exit(1),
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
