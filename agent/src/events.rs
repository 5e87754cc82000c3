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
//!
//! Directories that do not exist yet (`/mnt/sysimage/root` before the target
//! is mounted) are handled without timers: their nearest existing ancestor
//! is watched for the directory's creation, and `/proc/mounts` is watched
//! for mounts, after which every watch is placed again — a watch on
//! `/mnt/sysimage` made before the target was mounted there sees only the
//! directory underneath, not the mounted file system.

use crate::sys::WakePipe;
use crate::watchlist::Glob;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::Watcher;
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How often the poll fallback looks.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What to watch: files, and directories where globs look for new files.
pub(crate) struct Targets<'a> {
    pub files: &'a [PathBuf],
    pub globs: &'a [Glob],
}

pub(crate) struct EventSource {
    pipe: WakePipe,
    inotify: Option<Inotify>,
}

struct Inotify {
    watcher: notify::INotifyWatcher,
    files: Vec<PathBuf>,
    /// Every directory that should be watched.
    dirs: BTreeSet<PathBuf>,
    /// What is watched now: each wanted directory, or for a missing one its
    /// nearest existing ancestor.
    watched: BTreeSet<PathBuf>,
    /// Which events matter, shared with notify's thread.
    interest: Arc<Mutex<Interest>>,
    /// What ships data events on notify's thread, once set.
    inline: Arc<OnceLock<DataEvents>>,
    /// Set by notify's thread on any event other than written data (a
    /// creation, removal, rename, overflow): watches may need placing.
    layout_changed: Arc<AtomicBool>,
    /// `/proc/mounts`, which polls readable-with-priority after any mount or
    /// unmount (Linux 2.6.15).
    mounts: Option<File>,
}

/// What notify's thread wakes the main loop for.
#[derive(Default)]
struct Interest {
    /// Paths whose events matter: the files, the directories on the way to
    /// them, symlinks' targets.
    paths: HashSet<PathBuf>,
    /// Files whose new bytes already have a time to go (their pace, a
    /// hold): more data written to them needs no wake-up before then. Each
    /// write of a busy log would otherwise wake the main loop only for it to
    /// find nothing due.
    muted: HashSet<PathBuf>,
}

/// How the agent hears of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watching {
    Inotify,
    /// `--poll`: a stat of every file once a second.
    Poll,
}

impl EventSource {
    /// Starts watching. Returns the source and, when it polls, why.
    pub(crate) fn new(
        pipe: WakePipe,
        targets: &Targets<'_>,
        watching: Watching,
    ) -> (EventSource, Option<String>) {
        if watching == Watching::Poll {
            return (
                EventSource {
                    pipe,
                    inotify: None,
                },
                Some("--poll given".into()),
            );
        }
        match start_inotify(&pipe, targets) {
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

    /// Sleeps until something may have changed, a signal arrives, or
    /// `timeout` passes (`None`: for as long as nothing happens).
    /// Returns whether names may have changed (a file created, renamed or
    /// removed, a mount; always when polling): only then are globs worth
    /// a directory scan.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> bool {
        let Some(ino) = &mut self.inotify else {
            let t = timeout.map_or(POLL_INTERVAL, |t| t.min(POLL_INTERVAL));
            self.pipe.wait(Some(t), None);
            return true;
        };
        let mounts_fd = ino.mounts.as_ref().map(|f| f.as_raw_fd());
        let woke = self.pipe.wait(timeout, mounts_fd);
        let layout_changed = ino.layout_changed.swap(false, Ordering::SeqCst);
        let result = if woke.extra {
            ino.rewatch_all()
        } else if layout_changed {
            ino.place_watches()
        } else {
            // Only data was written: no directory or symlink can have
            // appeared, so the stats of place_watches would be wasted on
            // every write of a busy log.
            Ok(())
        };
        if let Err(why) = result {
            info!(
                "{why}; polling every {} s from now on",
                POLL_INTERVAL.as_secs()
            );
            self.inotify = None;
        }
        woke.extra || layout_changed
    }
}

impl EventSource {
    /// From now on, a write of data to a watched file runs `ship` on
    /// notify's thread, where the event arrived, instead of waking the main
    /// loop: one wake-up per event instead of two. `ship` returns whether
    /// it dealt with the event; when it did not (the main loop is in a pass,
    /// or must look again), the main loop is woken as before.
    pub(crate) fn ship_data_events_with(&self, ship: DataEvents) {
        if let Some(ino) = &self.inotify {
            let _ = ino.inline.set(ship);
        }
    }

    /// The mute set, for whoever runs passes.
    pub(crate) fn muter(&self) -> Muter {
        Muter {
            interest: self.inotify.as_ref().map(|ino| ino.interest.clone()),
            last: HashSet::new(),
        }
    }
}

/// What handles a data event on notify's thread (see
/// [`EventSource::ship_data_events_with`]).
pub(crate) type DataEvents = Arc<dyn Fn() -> bool + Send + Sync>;

/// Sets which files' data writes wake nothing.
pub(crate) struct Muter {
    interest: Option<Arc<Mutex<Interest>>>,
    /// What `interest.muted` holds, as last set.
    last: HashSet<PathBuf>,
}

impl Muter {
    /// Writes of data to `paths` wake nothing from now on (until the next
    /// call): their bytes already have a time to go. Creations, removals
    /// and renames still wake.
    pub(crate) fn set<'a>(&mut self, paths: impl Iterator<Item = &'a Path>) {
        let Some(interest) = &self.interest else {
            return;
        };
        let paths: Vec<&Path> = paths.collect();
        // Our own copy, so an unchanged set (the usual case, after every
        // pass) costs neither the lock nor a copy of the paths.
        if paths.len() == self.last.len() && paths.iter().all(|p| self.last.contains(*p)) {
            return;
        }
        let muted: HashSet<PathBuf> = paths.into_iter().map(Path::to_path_buf).collect();
        let mut shared = interest.lock().unwrap_or_else(|e| e.into_inner());
        shared.muted.clone_from(&muted);
        self.last = muted;
    }
}

fn start_inotify(pipe: &WakePipe, targets: &Targets<'_>) -> Result<Inotify, String> {
    let dirs: BTreeSet<PathBuf> = targets
        .files
        .iter()
        .filter_map(|f| f.parent())
        .chain(targets.globs.iter().map(|g| g.dir.as_path()))
        .map(Path::to_path_buf)
        .collect();
    // Events that matter: on a watched file, on a directory on the way to a
    // watched one (its creation), or on a file a glob matches. Everything
    // else in a busy /tmp is dropped on notify's thread and costs the main
    // loop nothing.
    let mut paths: HashSet<PathBuf> = targets.files.iter().cloned().collect();
    for d in &dirs {
        paths.extend(d.ancestors().map(Path::to_path_buf));
    }
    // Symlinks' targets are added as they are found (place_watches) and
    // mutes change after passes, hence the lock; it is never contended for
    // long: notify's thread takes it per event, the main loop per pass.
    let interest = Arc::new(Mutex::new(Interest {
        paths,
        muted: HashSet::new(),
    }));
    let shared = interest.clone();
    let layout_changed = Arc::new(AtomicBool::new(false));
    let layout = layout_changed.clone();
    let globs = targets.globs.to_vec();
    let waker = pipe.waker();
    let inline: Arc<OnceLock<DataEvents>> = Arc::new(OnceLock::new());
    let ship = inline.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let ev = match &res {
            Ok(ev) => ev,
            // A queue overflow: a rescan is always correct.
            Err(_) => {
                layout.store(true, Ordering::SeqCst);
                waker.wake();
                return;
            }
        };
        // Opening and reading (our own, too: inotify reports them) change
        // nothing; reacting to them would loop forever.
        if matches!(
            ev.kind,
            EventKind::Access(
                AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
            )
        ) {
            return;
        }
        let data_only = !ev.need_rescan()
            && matches!(
                ev.kind,
                EventKind::Modify(ModifyKind::Data(_))
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
            );
        let interest = shared.lock().unwrap_or_else(|e| e.into_inner());
        let matters =
            |p: &PathBuf| interest.paths.contains(p) || globs.iter().any(|g| g.matches(p));
        let relevant = if data_only {
            ev.paths
                .iter()
                .any(|p| matters(p) && !interest.muted.contains(p))
        } else {
            ev.need_rescan() || ev.paths.iter().any(matters)
        };
        drop(interest);
        if !relevant {
            return;
        }
        if data_only {
            if ship.get().is_some_and(|ship| ship()) {
                return;
            }
        } else {
            layout.store(true, Ordering::SeqCst);
        }
        waker.wake();
    };
    let watcher = notify::INotifyWatcher::new(handler, notify::Config::default())
        .map_err(|e| format!("inotify is unavailable ({e})"))?;
    let mounts = File::open("/proc/mounts").ok();
    let mut ino = Inotify {
        watcher,
        files: targets.files.to_vec(),
        dirs,
        watched: BTreeSet::new(),
        interest,
        inline,
        layout_changed,
        mounts,
    };
    ino.place_watches()?;
    Ok(ino)
}

impl Inotify {
    /// Watches each wanted directory, or while it is missing, its nearest
    /// existing ancestor. A directory that exists but cannot be watched (the
    /// watch limit) is an error: the caller then polls.
    fn place_watches(&mut self) -> Result<(), String> {
        self.follow_symlinks();
        let want: BTreeSet<PathBuf> = self
            .dirs
            .iter()
            .filter_map(|d| d.ancestors().find(|a| a.is_dir()))
            .map(Path::to_path_buf)
            .collect();
        for dir in want.difference(&self.watched.clone()) {
            self.watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {} with inotify ({e})", dir.display()))?;
            self.watched.insert(dir.clone());
        }
        // Ancestors stay watched once their directory exists: harmless, and
        // they are few.
        Ok(())
    }

    /// A watched path that is a symlink is written through its target, and
    /// inotify names the target, in the target's directory: watch that too.
    /// One lstat per file per wake-up; resolving only for symlinks.
    fn follow_symlinks(&mut self) {
        for f in &self.files {
            if !std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_symlink()) {
                continue;
            }
            let Ok(target) = std::fs::canonicalize(f) else {
                continue;
            };
            let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
            if interest.paths.insert(target.clone()) {
                if let Some(dir) = target.parent() {
                    self.dirs.insert(dir.to_path_buf());
                    interest
                        .paths
                        .extend(dir.ancestors().map(Path::to_path_buf));
                }
            }
        }
    }

    /// After a mount or unmount, a watch may point at a directory that is
    /// now covered: place every watch again.
    fn rewatch_all(&mut self) -> Result<(), String> {
        for dir in std::mem::take(&mut self.watched) {
            let _ = self.watcher.unwatch(&dir);
        }
        self.place_watches()
    }
}
