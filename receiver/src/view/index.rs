//! The view's picture of the log directory: its systems, their files, and
//! what each file's lines said so far. It is refreshed on demand (a page,
//! the API or a metrics scrape asks), at most once per interval, and a
//! refresh reads only the bytes that arrived since the last one, at most
//! [`READ_BUDGET`] of them: a 256 MiB log is checked once, over several
//! refreshes, never re-read per page view.
//!
//! Everything comes from the directory itself, so two receivers sharing it
//! show the same. Every open is relative to the log directory's descriptor
//! and refuses symlinks; names that uploads could not have made are
//! skipped, and so are files with more than one link (a planted hard link
//! must not serve another file's contents).

use super::state::{self, Progress, Reason, Scanner, State, Verdict};
use crate::sys::{self, Fd};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Systems indexed; past this, the ones written longest ago are left out
/// (and counted).
pub const MAX_SYSTEMS: usize = 10_000;
/// Files indexed per system.
pub const MAX_FILES: usize = 1000;
/// Bytes of new log data one refresh reads.
const READ_BUDGET: u64 = 32 << 20;
/// A refresh costs at most a tenth of the time between refreshes, and they
/// come at most once a second.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const COST_SHARE: u32 = 10;
/// Bytes of a file's start remembered, to notice a file rewritten from
/// offset 0 (Cobbler's upload semantics) with other contents.
const HEAD: usize = 64;
const CHUNK: usize = 256 << 10;

/// Name-sorted (name, value) pairs: the index's maps, rebuilt in name order
/// at every refresh.
type Named<T> = Vec<(String, T)>;

/// `new` (sorted, unique names) with each entry's value from `old` (sorted)
/// if it is there, made by `make` if not.
fn merge<T, U>(
    old: Named<T>,
    new: Vec<(String, U)>,
    mut make: impl FnMut(&str, Option<T>, U) -> Option<T>,
) -> Named<T> {
    let mut old = old.into_iter().peekable();
    let mut out = Vec::with_capacity(new.len());
    for (name, facts) in new {
        while old.next_if(|(o, _)| *o < name).is_some() {}
        let kept = old.next_if(|(o, _)| *o == name).map(|(_, v)| v);
        if let Some(v) = make(&name, kept, facts) {
            out.push((name, v));
        }
    }
    out
}

fn find<'a, T>(named: &'a Named<T>, name: &str) -> Option<&'a T> {
    named
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .ok()
        .map(|i| &named[i].1)
}

#[derive(Default)]
pub struct Index {
    systems: Named<System>,
    /// Systems left out (over MAX_SYSTEMS).
    pub omitted: usize,
    last: Option<Instant>,
    cost: Duration,
    /// The file the last refresh's reading stopped at.
    resume: Option<(String, String)>,
}

#[derive(Default)]
struct System {
    files: Named<Entry>,
    omitted_files: usize,
}

struct Entry {
    ino: u64,
    size: u64,
    mtime: i64,
    /// When the file was made: its birth time where the file system keeps
    /// one (statx), else its modification time when first indexed.
    born: i64,
    head: Vec<u8>,
    scanner: Scanner,
}

/// The index shared by the view's pages and its `--on-state-change`
/// thread.
pub type SharedIndex = std::sync::Arc<std::sync::Mutex<Index>>;

/// Runs `f` on the shared index, refreshed first if due. A panic while it
/// was held leaves an index that is at worst stale, so the lock is taken
/// back rather than poisoned for good.
pub fn with_refreshed<T>(index: &SharedIndex, dir: &Fd, f: impl FnOnce(&Index) -> T) -> T {
    let mut ix = index.lock().unwrap_or_else(|e| e.into_inner());
    ix.refresh_if_due(dir);
    f(&ix)
}

/// A system as the pages and the API show it.
pub struct SystemView {
    pub name: String,
    pub state: State,
    pub reasons: Vec<Reason>,
    /// Its stage, package N of M, and since when, if the logs say.
    pub progress: Option<Progress>,
    /// When its oldest file was made (birth time, else the modification
    /// time the receiver first saw): when its install began.
    pub started: i64,
    pub files: Vec<FileView>,
    pub bytes: u64,
    /// Newest file modification, seconds since the epoch (0: no files).
    pub last_upload: i64,
    /// Bytes not checked for patterns yet.
    pub unscanned: u64,
    pub omitted_files: usize,
}

pub struct FileView {
    pub name: String,
    pub size: u64,
    pub mtime: i64,
}

impl Index {
    /// Refreshes if the last refresh is old enough; true if it did.
    pub fn refresh_if_due(&mut self, dir: &Fd) -> bool {
        let due = MIN_INTERVAL.max(self.cost * COST_SHARE);
        if self.last.is_some_and(|t| t.elapsed() < due) {
            return false;
        }
        let start = Instant::now();
        self.refresh(dir, READ_BUDGET);
        self.cost = start.elapsed();
        self.last = Some(Instant::now());
        true
    }

    /// Looks at everything and reads every new byte, whatever it costs
    /// (`anamon-receiver status`, run once).
    pub fn refresh_fully(&mut self, dir: &Fd) {
        self.refresh(dir, u64::MAX);
    }

    /// The time the last refresh took.
    pub fn cost(&self) -> Duration {
        self.cost
    }

    /// Looks at every system and file, then reads up to `budget` new bytes.
    fn refresh(&mut self, dir: &Fd, budget: u64) {
        let mut seen = list_systems(dir);
        if seen.len() > MAX_SYSTEMS {
            seen.select_nth_unstable_by_key(MAX_SYSTEMS, |(_, mtime)| std::cmp::Reverse(*mtime));
            self.omitted = seen.len() - MAX_SYSTEMS;
            seen.truncate(MAX_SYSTEMS);
        } else {
            self.omitted = 0;
        }
        seen.sort_unstable();
        let old = std::mem::take(&mut self.systems);
        self.systems = merge(old, seen, |name, kept, _| {
            let mut sys = kept.unwrap_or_default();
            let fd = open_system(dir, name)?;
            let mut files = list_files(&fd);
            sys.omitted_files = files.len().saturating_sub(MAX_FILES);
            files.truncate(MAX_FILES);
            let old = std::mem::take(&mut sys.files);
            sys.files = merge(
                old,
                files,
                |_,
                 kept,
                 FileStat {
                     ino,
                     size,
                     mtime,
                     born,
                 }| {
                    let mut e = kept.unwrap_or(Entry {
                        ino,
                        size,
                        mtime,
                        born: born.unwrap_or(mtime),
                        head: Vec::new(),
                        scanner: Scanner::default(),
                    });
                    if e.ino != ino || size < e.scanner.scanned {
                        // Another file by that name, or cut short: start over.
                        e.head.clear();
                        e.scanner = Scanner::default();
                    }
                    (e.ino, e.size, e.mtime) = (ino, size, mtime);
                    Some(e)
                },
            );
            Some(sys)
        });
        self.read_new_bytes(dir, budget);
    }

    fn read_new_bytes(&mut self, dir: &Fd, mut budget: u64) {
        let pending: Vec<(usize, usize)> = self
            .systems
            .iter()
            .enumerate()
            .flat_map(|(s, (_, sys))| {
                sys.files
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, e))| e.size > e.scanner.scanned)
                    .map(move |(f, _)| (s, f))
            })
            .collect();
        // Go on after the file the last refresh stopped at, so a huge log
        // does not keep the others waiting.
        let name = |(s, f): (usize, usize)| {
            let (system, sys) = &self.systems[s];
            (system.clone(), sys.files[f].0.clone())
        };
        let start = match &self.resume {
            Some(r) => pending.iter().position(|&p| name(p) >= *r).unwrap_or(0),
            None => 0,
        };
        self.resume = None;
        let mut buf = Vec::new();
        for &(s, f) in pending[start..].iter().chain(&pending[..start]) {
            let (system, sys) = &mut self.systems[s];
            let (file, e) = &mut sys.files[f];
            if budget == 0 {
                self.resume = Some((system.clone(), file.clone()));
                break;
            }
            let Some(fd) = open_system(dir, system).and_then(|d| open_file(&d, file, e.ino)) else {
                continue;
            };
            if !e.head.is_empty() {
                let mut now = vec![0; e.head.len()];
                if sys::pread_full(&fd, &mut now, 0).ok() != Some(now.len()) || now != e.head {
                    e.head.clear();
                    e.scanner = Scanner::default();
                }
            }
            let source = state::source_of(file);
            while e.scanner.scanned < e.size && budget > 0 {
                let want = (e.size - e.scanner.scanned).min(budget).min(CHUNK as u64) as usize;
                buf.resize(want, 0);
                let n = match sys::pread_full(&fd, &mut buf, e.scanner.scanned) {
                    Ok(n) => n,
                    Err(_) => break,
                };
                if n == 0 {
                    break; // shorter than it was a moment ago: next refresh
                }
                if e.head.len() < HEAD && e.scanner.scanned == e.head.len() as u64 {
                    let take = (HEAD - e.head.len()).min(n);
                    e.head.extend_from_slice(&buf[..take]);
                }
                e.scanner.feed(&buf[..n], source);
                e.scanner.stamp(e.mtime);
                budget = budget.saturating_sub(n as u64);
            }
            if e.scanner.scanned < e.size && budget == 0 {
                self.resume = Some((system.clone(), file.clone()));
                break;
            }
        }
    }

    /// Every indexed system, derived at `now` (seconds since the epoch).
    pub fn systems(&self, now: i64, window: i64) -> Vec<SystemView> {
        self.systems
            .iter()
            .map(|(name, sys)| view_of(name, sys, now, window))
            .collect()
    }

    pub fn system(&self, name: &str, now: i64, window: i64) -> Option<SystemView> {
        find(&self.systems, name).map(|sys| view_of(name, sys, now, window))
    }
}

fn view_of(name: &str, sys: &System, now: i64, window: i64) -> SystemView {
    let facts: Vec<state::FileFacts<'_>> = sys
        .files
        .iter()
        .map(|(f, e)| state::FileFacts {
            name: f,
            mtime: e.mtime,
            scanner: &e.scanner,
        })
        .collect();
    let Verdict {
        state,
        reasons,
        progress,
    } = state::derive(&facts, now, window);
    SystemView {
        name: name.to_string(),
        state,
        reasons,
        progress,
        started: sys.files.iter().map(|(_, e)| e.born).min().unwrap_or(0),
        files: sys
            .files
            .iter()
            .map(|(f, e)| FileView {
                name: f.clone(),
                size: e.size,
                mtime: e.mtime,
            })
            .collect(),
        bytes: sys.files.iter().map(|(_, e)| e).map(|e| e.size).sum(),
        last_upload: sys
            .files
            .iter()
            .map(|(_, e)| e)
            .map(|e| e.mtime)
            .max()
            .unwrap_or(0),
        unscanned: sys
            .files
            .iter()
            .map(|(_, e)| e)
            .map(|e| e.size.saturating_sub(e.scanner.scanned))
            .sum(),
        omitted_files: sys.omitted_files,
    }
}

/// The log directory's entries that are system directories (not symlinks)
/// with names an upload could have made, and their modification times.
fn list_systems(dir: &Fd) -> Vec<(String, i64)> {
    let Ok(rd) = std::fs::read_dir(sys::fd_path(dir)) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?; // lstat: a symlink is not a directory
            (meta.is_dir() && anamon_names::is_system_name(&name)).then(|| (name, meta.mtime()))
        })
        .collect()
}

/// A system directory's plain files: (name, (inode, size, mtime)), by name.
/// What the directory says of a file.
struct FileStat {
    ino: u64,
    size: u64,
    mtime: i64,
    /// Birth time, where the file system keeps one.
    born: Option<i64>,
}

fn list_files(dir: &Fd) -> Vec<(String, FileStat)> {
    let Ok(rd) = std::fs::read_dir(sys::fd_path(dir)) else {
        return Vec::new();
    };
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            (meta.file_type().is_file() && meta.nlink() == 1 && anamon_names::is_file_name(&name))
                .then(|| {
                    let born = meta
                        .created()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64);
                    let stat = FileStat {
                        ino: meta.ino(),
                        size: meta.size(),
                        mtime: meta.mtime(),
                        born,
                    };
                    (name, stat)
                })
        })
        .collect();
    files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Opens `<dir>/<system>` read-only, never through a symlink; None if it is
/// not a plain directory now.
pub fn open_system(dir: &Fd, system: &str) -> Option<Fd> {
    if !anamon_names::is_system_name(system) {
        return None;
    }
    sys::open_dir_below(dir, &CString::new(system).ok()?).ok()
}

/// Opens a file of a system read-only: a regular file with one link, never
/// through a symlink, never a FIFO; and, if `ino` is given, that inode.
pub fn open_file(sys_dir: &Fd, file: &str, ino: u64) -> Option<Fd> {
    open_log(sys_dir, file)
        .filter(|(_, st)| ino == 0 || same_inode(st.st_ino, ino))
        .map(|(fd, _)| fd)
}

// ino_t is u64 here, not on every target.
#[allow(clippy::useless_conversion)]
fn same_inode(a: libc::ino_t, b: u64) -> bool {
    u64::try_from(a).ok() == Some(b)
}

/// [`open_file`] with the file's status.
pub fn open_log(sys_dir: &Fd, file: &str) -> Option<(Fd, libc::stat)> {
    if !anamon_names::is_file_name(file) {
        return None;
    }
    let fd = sys::open_read_below(sys_dir, &CString::new(file).ok()?).ok()?;
    let st = sys::fstat(&fd).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1).then_some((fd, st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Long after any file here was written: nothing is "installing".
    const LATER: i64 = 4_000_000_000;

    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        (dir, path)
    }

    #[test]
    fn reads_each_byte_once_within_the_budget() {
        let (_tmp, root) = scratch();
        std::fs::create_dir(root.join("web01")).unwrap();
        let log = root.join("web01/anaconda.log");
        let mut text = vec![b'.'; 3000];
        text.extend_from_slice(b"\nTraceback (most recent call last):\n");
        std::fs::write(&log, text).unwrap();
        let dir = sys::open_dir(&root).unwrap();
        let mut ix = Index::default();
        // 1000 bytes a refresh: four refreshes to reach the traceback.
        for _ in 0..3 {
            ix.refresh(&dir, 1000);
            assert_eq!(ix.systems(LATER, 600)[0].state, State::Idle);
        }
        ix.refresh(&dir, 1000);
        let v = ix.systems(LATER, 600);
        assert_eq!(v[0].state, State::Failed);
        assert_eq!(v[0].unscanned, 0);
        let found = v[0].reasons[0].found.clone().unwrap();
        assert_eq!((found.line, found.offset), (2, 3001));
        // Nothing new: nothing read (the scanner is where it was).
        ix.refresh(&dir, 1000);
        assert_eq!(
            find(&find(&ix.systems, "web01").unwrap().files, "anaconda.log")
                .unwrap()
                .scanner
                .scanned,
            3036
        );
    }

    #[test]
    fn a_rewrite_from_offset_0_is_checked_again() {
        let (_tmp, root) = scratch();
        std::fs::create_dir(root.join("web01")).unwrap();
        let log = root.join("web01/anaconda.log");
        std::fs::write(&log, b"Traceback (most recent call last):\n").unwrap();
        let dir = sys::open_dir(&root).unwrap();
        let mut ix = Index::default();
        ix.refresh(&dir, 1 << 20);
        assert_eq!(ix.systems(LATER, 600)[0].state, State::Failed);
        // A new install of the same name: truncated and longer, other text.
        std::fs::write(
            &log,
            b"INFO anaconda: a new install starts, and it is long enough\n",
        )
        .unwrap();
        ix.refresh(&dir, 1 << 20);
        assert_eq!(ix.systems(LATER, 600)[0].state, State::Idle);
    }

    #[test]
    fn skips_what_uploads_could_not_have_made() {
        let (_tmp, root) = scratch();
        let (_tmp2, outside) = scratch();
        std::fs::write(outside.join("secret"), b"Traceback (\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
        std::fs::create_dir(root.join("web01")).unwrap();
        std::fs::create_dir(root.join("bad name")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("web01/link.log")).unwrap();
        std::fs::hard_link(outside.join("secret"), root.join("web01/hard.log")).unwrap();
        std::fs::write(root.join("web01/ok.log"), b"fine\n").unwrap();
        std::fs::write(root.join("web01/bad:name"), b"Traceback (\n").unwrap();
        let dir = sys::open_dir(&root).unwrap();
        let mut ix = Index::default();
        ix.refresh(&dir, 1 << 20);
        let v = ix.systems(LATER, 600);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "web01");
        let names: Vec<_> = v[0].files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["ok.log"]);
        assert_eq!(v[0].state, State::Idle);
        let sys_fd = open_system(&dir, "web01").unwrap();
        assert!(open_log(&sys_fd, "hard.log").is_none());
        assert!(open_log(&sys_fd, "link.log").is_none());
        assert!(open_system(&dir, "linked").is_none());
        assert!(open_system(&dir, "..").is_none());
    }
}
