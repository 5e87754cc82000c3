//! When to look at the files again: inotify where the kernel offers it, a
//! stat poll once a second where it does not.
//!
//! Either way the main loop sleeps in one place, [`WakePipe::wait`], on the
//! signal pipe, the inotify descriptor and `/proc/mounts`; no other thread
//! runs. After a wake-up the loop re-reads the cursors of the files due,
//! which makes missed or coalesced events harmless.
//!
//! What inotify reports is chosen so that an event is one the loop has a
//! use for. Directories are watched for names (created, removed, renamed,
//! attributes): never for data, so the writes of every other program in
//! `/tmp` cost nothing. Each watched file has a watch of its own for data,
//! and a file whose new bytes already have a time to go (its pace, a hold)
//! has that watch report no data until then: a busy log written line by
//! line then costs nothing per line while it waits, and the pass at its due
//! time reads it by its size. Data is reported again right after that pass,
//! and one more pass looks at the file's size (`Agent::pass`), so a write
//! between the read and the watch is not missed. A pass whose uploads take
//! a while (a crash dump's chunks) reads the queue again before each round
//! (`Changes::catch_up`): a file written meanwhile goes in that pass.
//!
//! inotify needs `inotify_init1` (Linux 2.6.27); where it fails — RHEL4 and
//! RHEL5, or an exhausted watch limit — the agent polls.
//!
//! Directories that do not exist yet (`/mnt/sysimage/root` before the target
//! is mounted) are handled without timers: their nearest existing ancestor
//! is watched for the directory's creation, and `/proc/mounts` is watched
//! for mounts, after which every watch is placed again — a watch on
//! `/mnt/sysimage` made before the target was mounted there sees only the
//! directory underneath, not the mounted file system.

use crate::shipper::Changes;
use crate::sys::{self, WakePipe};
use crate::watchlist::Glob;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the poll fallback looks.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a directory's watch reports: changes of names and attributes (a
/// file created, replaced, removed, made readable), never data.
const DIR_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;
/// What a file's own watch reports: new data (a write, a truncation).
const FILE_MASK: u32 = libc::IN_MODIFY;
/// What a muted file's watch reports: only the file's own end, which its
/// directory's watch reports as well. Muting changes the watch's mask
/// rather than ending the watch: an ended watch queues `IN_IGNORED`, which
/// woke the agent once more for every file it muted, and the kernel frees
/// and later rebuilds its mark.
const MUTED_MASK: u32 = libc::IN_DELETE_SELF;

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
    sys: sys::Inotify,
    /// The watched files, each with its data watch while it has one.
    files: HashMap<PathBuf, Option<i32>>,
    /// Files whose new bytes already have a time to go: no data watch.
    muted: HashSet<PathBuf>,
    /// Every directory that should be watched.
    dirs: BTreeSet<PathBuf>,
    /// The directories watched now (each wanted directory, or for a missing
    /// one its nearest existing ancestor), by watch.
    watched: HashMap<i32, PathBuf>,
    /// Paths whose name events matter: the files, the directories on the
    /// way to them, symlinks' targets.
    paths: HashSet<PathBuf>,
    globs: Vec<Glob>,
    /// `/proc/mounts`, which polls readable-with-priority after any mount or
    /// unmount (Linux 2.6.15).
    mounts: Option<File>,
    /// Events are read into this, many at a time.
    buf: Vec<u8>,
    /// What a pass must look at since the last one: the files whose
    /// watches reported data (or that were listened to again), or after a
    /// change of names, everything.
    news: News,
    /// Names changed in a pass's catch-up: the watches and globs are yet
    /// to follow.
    layout_pending: bool,
}

/// What changed since the last pass, as inotify tells it.
#[derive(Debug)]
enum News {
    /// Anything may have: the first pass, names changed, events lost.
    Anything,
    /// Data in the files with these watches; a file listened to with none
    /// of them was not written.
    Written(Vec<i32>),
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
        match start_inotify(targets) {
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
            self.pipe.wait(Some(t), None, None);
            return true;
        };
        let mounts_fd = ino.mounts.as_ref().map(|f| f.as_raw_fd());
        let pending = std::mem::take(&mut ino.layout_pending);
        let timeout = if pending {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let woke = self
            .pipe
            .wait(timeout, mounts_fd, Some(ino.sys.as_raw_fd()));
        let layout_changed = woke.events && ino.read_events() || pending;
        if woke.extra || layout_changed {
            ino.news = News::Anything;
        }
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
        self.poll_if_failed(result);
        woke.extra || layout_changed
    }

    /// When inotify cannot do its job any more, the agent polls.
    fn poll_if_failed(&mut self, result: Result<(), String>) {
        if let Err(why) = result {
            info!(
                "{why}; polling every {} s from now on",
                POLL_INTERVAL.as_secs()
            );
            self.inotify = None;
        }
    }

    /// A file found since the start (a glob matched it): watched from now
    /// on.
    pub(crate) fn add_file(&mut self, path: &Path) {
        if let Some(ino) = &mut self.inotify {
            ino.files.entry(path.to_path_buf()).or_insert(None);
            ino.paths.insert(path.to_path_buf());
            let result = ino.watch_file(path);
            self.poll_if_failed(result);
        }
    }

    /// A pass has looked at the files: what inotify reports from now on is
    /// news for the next one.
    pub(crate) fn looked(&mut self) {
        if let Some(ino) = &mut self.inotify {
            match &mut ino.news {
                News::Written(written) => written.clear(),
                news @ News::Anything => *news = News::Written(Vec::new()),
            }
        }
    }

    /// Data written to `path` raises no event from now on, until
    /// [`listen`](Self::listen): its bytes already have a time to go.
    pub(crate) fn mute(&mut self, path: &Path) {
        if let Some(ino) = &mut self.inotify {
            ino.muted.insert(path.to_path_buf());
            let result = ino.watch_file(path);
            self.poll_if_failed(result);
        }
    }

    /// `path` raises data events again. Returns whether it does (not
    /// while polling): a write to it before this raised nothing, and only
    /// a look at its size finds it.
    pub(crate) fn listen(&mut self, path: &Path) -> bool {
        let Some(ino) = &mut self.inotify else {
            return false;
        };
        ino.muted.remove(path);
        let result = ino.watch_file(path);
        self.poll_if_failed(result);
        true
    }
}

impl Changes for EventSource {
    /// Whether `path` is known unchanged since the last pass: inotify
    /// listens to its data and has reported none. Never while polling.
    fn unchanged(&self, path: &Path) -> bool {
        let Some(ino) = &self.inotify else {
            return false;
        };
        let News::Written(written) = &ino.news else {
            return false;
        };
        match ino.files.get(path) {
            Some(Some(wd)) => !written.contains(wd) && !ino.muted.contains(path),
            _ => false,
        }
    }

    /// Reads what inotify queued while the pass went on, without waiting.
    /// A change of names makes every file news, and the next
    /// [`wait`](EventSource::wait) does not sleep before it places the
    /// watches again and says so.
    fn catch_up(&mut self) {
        if let Some(ino) = &mut self.inotify {
            if ino.read_events() {
                ino.news = News::Anything;
                ino.layout_pending = true;
            }
        }
    }
}

fn start_inotify(targets: &Targets<'_>) -> Result<Inotify, String> {
    let dirs: BTreeSet<PathBuf> = targets
        .files
        .iter()
        .filter_map(|f| f.parent())
        .chain(targets.globs.iter().map(|g| g.dir.as_path()))
        .map(Path::to_path_buf)
        .collect();
    // Name events that matter: on a watched file, on a directory on the way
    // to a watched one (its creation), or on a file a glob matches.
    // Everything else in a busy /tmp is dropped as it is read.
    let mut paths: HashSet<PathBuf> = targets.files.iter().cloned().collect();
    for d in &dirs {
        paths.extend(d.ancestors().map(Path::to_path_buf));
    }
    let sys = sys::Inotify::new().map_err(|e| format!("inotify is unavailable ({e})"))?;
    let mounts = File::open("/proc/mounts").ok();
    let mut ino = Inotify {
        sys,
        files: targets.files.iter().map(|f| (f.clone(), None)).collect(),
        muted: HashSet::new(),
        dirs,
        watched: HashMap::new(),
        paths,
        globs: targets.globs.to_vec(),
        mounts,
        buf: vec![0; 16 * 1024],
        news: News::Anything,
        layout_pending: false,
    };
    ino.place_watches()?;
    Ok(ino)
}

impl Inotify {
    /// Reads what inotify has queued; returns whether names may have
    /// changed. Data events need nothing more: the loop looks at the files
    /// after every wake-up.
    fn read_events(&mut self) -> bool {
        let mut layout = false;
        let mut gone: Vec<i32> = Vec::new();
        let Inotify {
            sys,
            watched,
            paths,
            globs,
            buf,
            news,
            ..
        } = self;
        sys.read_events(buf, |ev| {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                layout = true;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                // A watch ended: its file or directory was deleted, or we
                // ended it. Placed again where still wanted.
                gone.push(ev.wd);
                return;
            }
            let Some(dir) = watched.get(&ev.wd) else {
                // A file's data.
                if let News::Written(wds) = news {
                    wds.push(ev.wd);
                }
                return;
            };
            if ev.name.is_empty() {
                layout = true; // the directory itself moved or went
                return;
            }
            let p = dir.join(ev.name);
            if paths.contains(&p) || globs.iter().any(|g| g.matches(&p)) {
                layout = true;
            }
        });
        for wd in gone {
            if self.watched.remove(&wd).is_some() {
                layout = true;
            }
            for watch in self.files.values_mut() {
                if *watch == Some(wd) {
                    *watch = None;
                }
            }
        }
        layout
    }

    /// Gives `path` its data watch, or while it is muted a watch that
    /// reports no data; a file that does not exist gets one when its
    /// directory's watch reports it.
    /// Out of watches (or kernel memory) is an error: the caller then
    /// polls, as for a directory.
    fn watch_file(&mut self, path: &Path) -> Result<(), String> {
        let mut mask = if self.muted.contains(path) {
            MUTED_MASK
        } else {
            FILE_MASK
        };
        let Some(&old) = self.files.get(path) else {
            return Ok(());
        };
        let mut added = self.sys.add_watch(path, mask);
        // Two watched names for one file (a link) share its one watch:
        // while the other name listens, the watch keeps reporting data.
        if let (MUTED_MASK, Ok(wd)) = (mask, &added) {
            let shared = self
                .files
                .iter()
                .any(|(p, w)| *w == Some(*wd) && p != path && !self.muted.contains(p));
            if shared {
                mask = FILE_MASK;
                added = self.sys.add_watch(path, mask);
            }
        }
        let wd = match added {
            Ok(wd) => Some(wd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::ENOMEM)) => {
                return Err(format!(
                    "cannot watch {} with inotify ({e})",
                    path.display()
                ));
            }
            // Missing or unreadable now: its directory's watch reports
            // its creation or a change of mode.
            Err(_) => None,
        };
        // Another inode at that name now (replaced, or a symlink moved):
        // the old one's writes are no longer this file's.
        if let Some(old) = old {
            if wd != Some(old) {
                self.sys.rm_watch(old);
            }
        }
        if let Some(watch) = self.files.get_mut(path) {
            *watch = wd;
        }
        // Listened to (again): whatever was written before is for the next
        // pass to find.
        if let (Some(wd), FILE_MASK, News::Written(written)) = (wd, mask, &mut self.news) {
            written.push(wd);
        }
        Ok(())
    }

    /// Watches each wanted directory, or while it is missing, its nearest
    /// existing ancestor, and each file that exists for its data. A
    /// directory that exists but cannot be watched (the watch limit) is an
    /// error: the caller then polls.
    fn place_watches(&mut self) -> Result<(), String> {
        self.follow_symlinks();
        let want: BTreeSet<PathBuf> = self
            .dirs
            .iter()
            .filter_map(|d| d.ancestors().find(|a| a.is_dir()))
            .map(Path::to_path_buf)
            .collect();
        let have: HashSet<&PathBuf> = self.watched.values().collect();
        let missing: Vec<PathBuf> = want.iter().filter(|d| !have.contains(d)).cloned().collect();
        for dir in missing {
            let wd = self
                .sys
                .add_watch(&dir, DIR_MASK)
                .map_err(|e| format!("cannot watch {} with inotify ({e})", dir.display()))?;
            self.watched.insert(wd, dir);
        }
        // Ancestors stay watched once their directory exists: harmless, and
        // they are few.
        let files: Vec<PathBuf> = self.files.keys().cloned().collect();
        for f in files {
            self.watch_file(&f)?;
        }
        Ok(())
    }

    /// A watched path that is a symlink is replaced through its target, and
    /// inotify names the target, in the target's directory: watch that too.
    /// (Its data watch follows the link by itself.) One lstat per file per
    /// change of names; resolving only for symlinks.
    fn follow_symlinks(&mut self) {
        for f in self.files.keys() {
            if !std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_symlink()) {
                continue;
            }
            let Ok(target) = std::fs::canonicalize(f) else {
                continue;
            };
            if self.paths.insert(target.clone()) {
                if let Some(dir) = target.parent() {
                    self.dirs.insert(dir.to_path_buf());
                    self.paths.extend(dir.ancestors().map(Path::to_path_buf));
                }
            }
        }
    }

    /// After a mount or unmount, a watch may point at a directory that is
    /// now covered, or a file's at one now hidden: place every watch again.
    fn rewatch_all(&mut self) -> Result<(), String> {
        for (wd, _) in self.watched.drain() {
            self.sys.rm_watch(wd);
        }
        for watch in self.files.values_mut() {
            if let Some(wd) = watch.take() {
                self.sys.rm_watch(wd);
            }
        }
        self.place_watches()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anamon_testkit::append;

    /// The watches of the events queued now, in order: every event, the
    /// end of a watch (`IN_IGNORED`) too, since each one wakes the agent.
    fn queued(src: &mut EventSource) -> Vec<i32> {
        let ino = src.inotify.as_mut().unwrap();
        let mut wds = Vec::new();
        let Inotify { sys, buf, .. } = ino;
        sys.read_events(buf, |ev| wds.push(ev.wd));
        wds
    }

    fn wd(src: &EventSource, p: &Path) -> Option<i32> {
        src.inotify.as_ref().unwrap().files[p]
    }

    /// Two files with a line each, watched with inotify: (busy, other).
    fn two_watched_files(dir: &Path) -> (EventSource, PathBuf, PathBuf) {
        let (busy, other) = (dir.join("busy.log"), dir.join("other.log"));
        append(&busy, b"1\n");
        append(&other, b"1\n");
        let files = [busy.clone(), other.clone()];
        let targets = Targets {
            files: &files,
            globs: &[],
        };
        let (src, why) = EventSource::new(WakePipe::new().unwrap(), &targets, Watching::Inotify);
        assert_eq!(why, None);
        (src, busy, other)
    }

    #[test]
    fn a_muted_file_raises_nothing_until_it_is_listened_to_again() {
        let dir = tempfile::tempdir().unwrap();
        let unrelated = dir.path().join("unrelated");
        append(&unrelated, b"1\n");
        let (mut src, busy, other) = two_watched_files(dir.path());
        let (b, o) = (wd(&src, &busy).unwrap(), wd(&src, &other).unwrap());
        // Data of a file nobody ships raises nothing: directories are not
        // watched for data.
        append(&unrelated, b"x\n");
        assert_eq!(queued(&mut src), Vec::<i32>::new());
        append(&busy, b"2\n");
        assert_eq!(queued(&mut src), [b]);

        // Muted: muting wakes nothing, a hundred lines raise nothing; the
        // other file still does.
        src.mute(&busy);
        assert_eq!(queued(&mut src), Vec::<i32>::new());
        for n in 0..100 {
            append(&busy, format!("line {n}\n").as_bytes());
        }
        append(&other, b"2\n");
        let got = queued(&mut src);
        assert!(got.iter().all(|w| *w == o) && !got.is_empty(), "{got:?}");

        // Listened to again: the caller is told to look (a write just
        // before the watch came back raised nothing), and writes raise
        // events again.
        assert!(src.listen(&busy));
        append(&busy, b"3\n");
        let b = wd(&src, &busy).unwrap();
        assert_eq!(queued(&mut src), [b]);
    }

    #[test]
    fn a_file_watched_under_two_names_is_muted_only_when_both_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (mut src, busy, _) = two_watched_files(dir.path());
        let link = dir.path().join("link.log");
        std::fs::hard_link(&busy, &link).unwrap();
        src.add_file(&link);
        src.wait(Some(Duration::ZERO)); // the link's creation
        src.looked();
        assert_eq!(wd(&src, &busy), wd(&src, &link));
        assert!(src.unchanged(&link));
        // One name waits: the other still hears every write.
        src.mute(&busy);
        append(&busy, b"2\n");
        src.wait(Some(Duration::ZERO));
        assert!(!src.unchanged(&link));
        src.looked();
        // Both wait: nothing is reported.
        src.mute(&link);
        append(&busy, b"3\n");
        assert_eq!(queued(&mut src), Vec::<i32>::new());
    }

    #[test]
    fn a_file_is_unchanged_only_while_inotify_listens_and_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut src, busy, other) = two_watched_files(dir.path());
        let unchanged = |src: &EventSource| (src.unchanged(&busy), src.unchanged(&other));
        // Before the first pass anything may have changed.
        assert_eq!(unchanged(&src), (false, false));
        src.looked();
        assert_eq!(unchanged(&src), (true, true));

        append(&busy, b"2\n");
        src.wait(Some(Duration::ZERO));
        assert_eq!(unchanged(&src), (false, true));
        src.looked();
        assert_eq!(unchanged(&src), (true, true));

        // Muted, nothing says whether it was written; listened to again,
        // it must be looked at once.
        src.mute(&busy);
        assert_eq!(unchanged(&src), (false, true));
        append(&busy, b"3\n");
        src.listen(&busy);
        src.wait(Some(Duration::ZERO));
        assert_eq!(unchanged(&src), (false, true));
        src.looked();
        assert_eq!(unchanged(&src), (true, true));

        // Written while a pass went on: its catch-up hears of it.
        append(&other, b"2\n");
        assert_eq!(unchanged(&src), (true, true));
        src.catch_up();
        assert_eq!(unchanged(&src), (true, false));
        src.looked();

        // A name changed (another file renamed over it): look at all.
        let new = dir.path().join("new");
        append(&new, b"replaced\n");
        std::fs::rename(&new, &busy).unwrap();
        src.wait(Some(Duration::ZERO));
        assert_eq!(unchanged(&src), (false, false));
    }

    #[test]
    fn a_change_of_names_heard_in_a_catch_up_is_followed_by_the_next_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (mut src, busy, other) = two_watched_files(dir.path());
        src.looked();
        let new = dir.path().join("new");
        append(&new, b"replaced\n");
        std::fs::rename(&new, &busy).unwrap();
        src.catch_up();
        assert!(
            !src.unchanged(&other),
            "after a change of names, every file is news"
        );
        // The event is read already: the wait must not sleep on it, and
        // must say names changed (the agent then matches globs again).
        assert!(src.wait(Some(Duration::from_secs(5))));
    }
}
