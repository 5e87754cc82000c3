//! When to look at the files again: inotify (through `notify`) where the
//! kernel offers it, a stat poll once a second where it does not.
//!
//! Either way the main loop sleeps in one place, [`WakePipe::wait`]; notify's
//! thread only writes a byte to the pipe. The loop then re-reads every
//! cursor, which costs one `open`+`fstat` per watched file and makes missed
//! or coalesced events harmless.
//!
//! notify's inotify backend needs `inotify_init1` and `epoll_create1`
//! (Linux 2.6.27); where they fail — RHEL4 and RHEL5, or an exhausted watch
//! limit — the agent polls from its single thread. It never falls back to
//! notify's `PollWatcher`, whose waiting thread busy-spins on kernels before
//! 2.6.22.

use crate::sys::WakePipe;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::Watcher;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the poll fallback looks.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub struct EventSource {
    pipe: WakePipe,
    inotify: Option<Inotify>,
}

struct Inotify {
    watcher: notify::INotifyWatcher,
    /// Directories to watch that do not exist yet; while any is missing the
    /// loop also looks once a second, to add the watch when it appears.
    missing_dirs: BTreeSet<PathBuf>,
}

impl EventSource {
    /// Starts watching the parent directories of `files` (directories, so
    /// that files created or renamed into place are seen). Returns the
    /// source and, when it polls, why.
    pub fn new(
        pipe: WakePipe,
        files: &[PathBuf],
        force_poll: bool,
    ) -> (EventSource, Option<String>) {
        if force_poll {
            return (
                EventSource {
                    pipe,
                    inotify: None,
                },
                Some("--poll given".into()),
            );
        }
        match start_inotify(&pipe, files) {
            Ok(inotify) => (
                EventSource {
                    pipe,
                    inotify: Some(inotify),
                },
                None,
            ),
            Err(why) => (
                EventSource {
                    pipe,
                    inotify: None,
                },
                Some(why),
            ),
        }
    }

    pub fn uses_inotify(&self) -> bool {
        self.inotify.is_some()
    }

    /// Sleeps until something may have changed, a signal arrives, or
    /// `timeout` passes (`None`: for as long as nothing happens).
    pub fn wait(&mut self, timeout: Option<Duration>) {
        if let Some(Err(why)) = self.inotify.as_mut().map(Inotify::retry_missing) {
            crate::info!(
                "{why}; polling every {} s from now on",
                POLL_INTERVAL.as_secs()
            );
            self.inotify = None;
        }
        let tick = match &self.inotify {
            None => Some(POLL_INTERVAL),
            Some(ino) => (!ino.missing_dirs.is_empty()).then_some(POLL_INTERVAL),
        };
        let timeout = match (timeout, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.pipe.wait(timeout);
    }
}

fn start_inotify(pipe: &WakePipe, files: &[PathBuf]) -> Result<Inotify, String> {
    let waker = pipe.waker();
    let interesting: HashSet<PathBuf> = files.iter().cloned().collect();
    let handler = move |res: notify::Result<notify::Event>| {
        // Events for unrelated files in a busy /tmp are dropped here, on
        // notify's thread, so they cost the main loop nothing. Errors (a
        // queue overflow) wake it: a rescan is always correct.
        let relevant = match &res {
            // Opening and reading (our own, too: inotify reports them)
            // change nothing; reacting to them would loop forever.
            Ok(ev)
                if matches!(
                    ev.kind,
                    EventKind::Access(
                        AccessKind::Open(_)
                            | AccessKind::Read
                            | AccessKind::Close(AccessMode::Read)
                    )
                ) =>
            {
                false
            }
            Ok(ev) => ev.need_rescan() || ev.paths.iter().any(|p| interesting.contains(p)),
            Err(_) => true,
        };
        if relevant {
            waker.wake();
        }
    };
    let watcher = notify::INotifyWatcher::new(handler, notify::Config::default())
        .map_err(|e| format!("inotify is unavailable ({e})"))?;
    let mut ino = Inotify {
        watcher,
        missing_dirs: files
            .iter()
            .filter_map(|f| f.parent())
            .map(Path::to_path_buf)
            .collect(),
    };
    ino.retry_missing()?;
    Ok(ino)
}

impl Inotify {
    /// Adds a watch for each missing directory that now exists. A directory
    /// that exists but cannot be watched (the watch limit) is an error: the
    /// caller then polls.
    fn retry_missing(&mut self) -> Result<(), String> {
        let dirs = std::mem::take(&mut self.missing_dirs);
        let mut result = Ok(());
        for dir in dirs {
            match self
                .watcher
                .watch(&dir, notify::RecursiveMode::NonRecursive)
            {
                Ok(()) => {}
                Err(e) if dir.is_dir() && result.is_ok() => {
                    result = Err(format!("cannot watch {} with inotify ({e})", dir.display()));
                    self.missing_dirs.insert(dir);
                }
                Err(_) => {
                    self.missing_dirs.insert(dir);
                }
            }
        }
        result
    }
}
