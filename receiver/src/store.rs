//! The log directory, in Cobbler's layout (`<dir>/<system>/<file>`), and the
//! one operation on it: write an uploaded chunk with Cobbler 4's semantics.
//!
//! Cobbler builds a path string and checks it with `normpath`; it follows a
//! symlink planted where a system directory should be, and writes through
//! hard links. Here every step is relative to a directory descriptor and
//! refuses to follow: the system directory is opened with `O_NOFOLLOW |
//! O_DIRECTORY` below the log directory's descriptor, the file with
//! `O_NOFOLLOW` below that, and a file that is not a regular file with one
//! link is refused. Names were already checked against Cobbler's patterns;
//! this layer checks again that each is one path component.
//!
//! A chunk is reported stored only after it is written whole and
//! `fdatasync`ed, so a crash never leaves a `True` without its bytes.

use crate::sys::{self, Fd};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a write did not happen. Either way the client gets a fault naming it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// The request is refused by policy (a cap) or by the directory's state
    /// (a symlink, a FIFO, a hard link where the log should be).
    Refused(Refusal, String),
    /// The disk failed us (ENOSPC, EIO): nothing is reported stored.
    Io(String),
}

/// What kind of refusal, for the counters (`/metrics`); the text says which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    FileCap,
    SystemCap,
    /// Not a plain name, or not a plain file or directory on disk (a
    /// symlink, hard link, FIFO or directory where the log should be).
    NotPlain,
    /// An offset or size that means nothing.
    BadRange,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Refused(_, s) | StoreError::Io(s) => f.write_str(s),
        }
    }
}

/// Caps that keep one system (or a hostile client) from filling the disk.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub file_bytes: u64,
    pub system_bytes: u64,
}

/// What one upload changed: the file's size afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub file_size: u64,
}

/// Systems whose sizes are kept between uploads.
const MAX_CACHED_SYSTEMS: usize = 4096;

/// How long a system's scanned sizes are trusted. Another receiver may
/// write the same directory (stateless receivers behind a load balancer):
/// what it wrote is counted within this long.
const SIZES_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

pub struct LogDir {
    path: PathBuf,
    fd: Fd,
    caps: Caps,
    /// One entry per system touched since start; each is locked while one of
    /// its files is written, so the size accounting and Cobbler's
    /// "offset 0 truncates" never race between two requests.
    systems: Mutex<HashMap<String, Arc<Mutex<SystemDir>>>>,
}

/// What is known of a system's directory: the sizes of the regular files
/// in it (for the per-system cap). Only a cache: it can be scanned again.
struct SystemDir {
    /// (device, inode) of the directory the sizes were scanned from.
    id: Option<(libc::dev_t, libc::ino_t)>,
    /// When they were scanned.
    scanned: Option<std::time::Instant>,
    sizes: HashMap<String, u64>,
    used: u64,
}

impl LogDir {
    /// Opens (creating if needed) the log directory.
    pub fn open(path: &Path, caps: Caps) -> io::Result<LogDir> {
        std::fs::create_dir_all(path)?;
        let fd = sys::open_dir(path)?;
        Ok(LogDir {
            path: path.to_path_buf(),
            fd,
            caps,
            systems: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log directory's descriptor, for the live view's read-only opens
    /// below it.
    pub fn fd(&self) -> &Fd {
        &self.fd
    }

    /// Writes `data` for `system`/`file` with Cobbler 4.0's semantics:
    /// offset 0 truncates first; offset >= 0 writes there (past the end
    /// leaves a hole); offset -1 appends and then sets the size to `size`
    /// (if `size == data.len()`, the data becomes the whole file).
    pub fn write(
        &self,
        system: &str,
        file: &str,
        size: i64,
        offset: i64,
        data: &[u8],
    ) -> Result<Stored, StoreError> {
        for name in [system, file] {
            if !single_component(name) {
                return Err(StoreError::Refused(
                    Refusal::NotPlain,
                    format!("{name:?} is not a plain file name; not storing under it"),
                ));
            }
        }
        let entry = {
            let mut systems = self.systems.lock().unwrap_or_else(|e| e.into_inner());
            if systems.len() >= MAX_CACHED_SYSTEMS && !systems.contains_key(system) {
                // Whatever names clients invent, the cache stays bounded:
                // drop the entries no request is using (they are rescanned
                // when next needed).
                systems.retain(|_, e| Arc::strong_count(e) > 1);
            }
            Arc::clone(systems.entry(system.to_string()).or_insert_with(|| {
                Arc::new(Mutex::new(SystemDir {
                    id: None,
                    scanned: None,
                    sizes: HashMap::new(),
                    used: 0,
                }))
            }))
        };
        let mut dir = entry.lock().unwrap_or_else(|e| e.into_inner());
        let shown = format!("{system}/{file}");
        // Opened afresh for every upload: an admin may move or remove a
        // system's directory while the receiver runs, and the next upload
        // must land in (a new) `<dir>/<system>`, not in the moved one. The
        // sizes are scanned again when it is another directory, or when
        // the scan is older than SIZES_FRESH (another receiver may write it).
        let sys_fd = &self.open_system(system)?;
        let id = sys::fstat(sys_fd)
            .map(|st| (st.st_dev, st.st_ino))
            .map_err(|e| io_err(&shown, "stat", &e))?;
        if dir.id != Some(id) || dir.scanned.is_none_or(|t| t.elapsed() > SIZES_FRESH) {
            dir.sizes =
                scan_sizes(sys_fd).map_err(|e| io_err(&shown, "reading the directory", &e))?;
            dir.used = dir.sizes.values().sum();
            dir.id = Some(id);
            dir.scanned = Some(std::time::Instant::now());
        }
        let dir = &mut *dir;

        let name = CString::new(file).map_err(|_| {
            StoreError::Refused(
                Refusal::NotPlain,
                format!("{shown}: a NUL byte in the name"),
            )
        })?;
        let (fd, created) =
            sys::open_file_below(sys_fd, &name).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => StoreError::Refused(
                    Refusal::NotPlain,
                    format!("{shown} is a symlink in the log directory; not writing through it"),
                ),
                Some(libc::EISDIR) => {
                    StoreError::Refused(Refusal::NotPlain, format!("{shown} is a directory"))
                }
                _ => io_err(&shown, "opening", &e),
            })?;
        let len = data.len() as u64;
        // Checks the open file and the caps, and works out the write.
        let plan = (|| -> Result<(bool, u64, u64, u64), StoreError> {
            let st = sys::fstat(&fd).map_err(|e| io_err(&shown, "stat", &e))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(StoreError::Refused(
                    Refusal::NotPlain,
                    format!("{shown} is not a regular file; not writing to it"),
                ));
            }
            if st.st_nlink > 1 {
                return Err(StoreError::Refused(
                    Refusal::NotPlain,
                    format!(
                        "{shown} has {} hard links; not writing through it",
                        st.st_nlink
                    ),
                ));
            }
            let current = st.st_size as u64;

            let (truncate_first, write_at, final_size) = match offset {
                0 => (true, 0, len),
                o if o > 0 => (false, o as u64, current.max(o as u64 + len)),
                -1 if size < 0 => {
                    return Err(StoreError::Refused(
                        Refusal::BadRange,
                        format!("{shown}: final size {size} is negative"),
                    ))
                }
                -1 if size as u64 == len => (true, 0, len),
                -1 => (false, current, size as u64),
                _ => {
                    return Err(StoreError::Refused(
                        Refusal::BadRange,
                        format!(
                            "{shown}: offset {offset} (only -1 and offsets >= 0 mean anything)"
                        ),
                    ))
                }
            };
            let peak = final_size.max(write_at + len);
            if peak > self.caps.file_bytes {
                return Err(StoreError::Refused(Refusal::FileCap, format!(
                    "{shown} would grow to {peak} bytes, over this receiver's cap of {} bytes per file",
                    self.caps.file_bytes
                )));
            }
            // What `used` counts for this file (nothing, if another writer
            // made it since the scan); its size now is `current`.
            let before = dir.sizes.get(file).copied().unwrap_or(0);
            let used_after = dir.used - before.min(dir.used) + final_size;
            if used_after > self.caps.system_bytes && final_size > current {
                return Err(StoreError::Refused(Refusal::SystemCap, format!(
                    "{system} would hold {used_after} bytes, over this receiver's cap of {} bytes per system",
                    self.caps.system_bytes
                )));
            }
            Ok((truncate_first, write_at, final_size, before))
        })();
        let (truncate_first, write_at, final_size, before) = match plan {
            Ok(p) => p,
            Err(e) => {
                if created {
                    // Refused before a byte was written: leave no empty file.
                    let _ = sys::unlink_below(sys_fd, &name);
                }
                return Err(e);
            }
        };
        let result = (|| -> io::Result<()> {
            if truncate_first {
                sys::ftruncate(&fd, 0)?;
            }
            sys::pwrite_all(&fd, data, write_at)?;
            if offset == -1 {
                sys::ftruncate(&fd, final_size)?;
            }
            sys::fdatasync(&fd)?;
            if created {
                // The new name must survive a crash too.
                sys::fsync(sys_fd)?;
            }
            Ok(())
        })();
        // Account for what is on disk now, whatever happened.
        let now = sys::fstat(&fd)
            .map(|s| s.st_size as u64)
            .unwrap_or(final_size);
        dir.used = dir.used - before.min(dir.used) + now;
        dir.sizes.insert(file.to_string(), now);
        match result {
            Ok(()) => Ok(Stored { file_size: now }),
            Err(e) => Err(io_err(&shown, "writing", &e)),
        }
    }

    /// Opens `<dir>/<system>`, creating it (0755) if missing, never
    /// following a symlink.
    fn open_system(&self, system: &str) -> Result<Fd, StoreError> {
        let name = CString::new(system).map_err(|_| {
            StoreError::Refused(
                Refusal::NotPlain,
                format!("{system:?}: a NUL byte in the name"),
            )
        })?;
        match sys::mkdir_below(&self.fd, &name) {
            Ok(true) => {
                sys::fsync(&self.fd).map_err(|e| io_err(system, "syncing the log directory", &e))?
            }
            Ok(false) => {}
            Err(e) => return Err(io_err(system, "creating the directory", &e)),
        }
        sys::open_dir_below(&self.fd, &name).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => StoreError::Refused(
                Refusal::NotPlain,
                format!(
                    "{}/{system} is not a directory (a symlink?); not writing through it",
                    self.path.display()
                ),
            ),
            _ => io_err(system, "opening the directory", &e),
        })
    }
}

/// A name that stays in its directory: not empty, not `.` or `..`, no `/`
/// and no NUL.
fn single_component(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains(['/', '\0'])
}

/// Sizes of the regular files directly in `dir` (others are never written).
fn scan_sizes(dir: &Fd) -> io::Result<HashMap<String, u64>> {
    let mut sizes = HashMap::new();
    for entry in std::fs::read_dir(sys::fd_path(dir))? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = entry.metadata()?; // lstat: symlinks are not followed
        if meta.file_type().is_file() {
            sizes.insert(name, meta.len());
        }
    }
    Ok(sizes)
}

fn io_err(what: &str, doing: &str, e: &io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {doing} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        (dir, path)
    }

    const BIG: Caps = Caps {
        file_bytes: 1 << 30,
        system_bytes: 1 << 30,
    };

    #[test]
    fn cobbler_offset_semantics() {
        let (_tmp, root) = scratch();
        let d = LogDir::open(&root, BIG).unwrap();
        let read = || std::fs::read(root.join("web01/a.log")).unwrap();
        d.write("web01", "a.log", 5, 0, b"hello").unwrap();
        d.write("web01", "a.log", 6, 5, b" world").unwrap();
        assert_eq!(read(), b"hello world");
        // Offset 0 truncates: a restart replaces the whole copy.
        d.write("web01", "a.log", 3, 0, b"new").unwrap();
        assert_eq!(read(), b"new");
        // Past the end: a hole of zeros, as pwrite leaves it.
        d.write("web01", "a.log", 1, 5, b"x").unwrap();
        assert_eq!(read(), b"new\0\0x");
        // -1 with size != len: append, then set the final size.
        d.write("web01", "a.log", 4, -1, b"").unwrap();
        assert_eq!(read(), b"new\0");
        d.write("web01", "a.log", 2, -1, b"abc").unwrap();
        assert_eq!(read(), b"ne");
        // -1 with size == len: the data is the whole file.
        let s = d.write("web01", "a.log", 3, -1, b"xyz").unwrap();
        assert_eq!(read(), b"xyz");
        assert_eq!(s.file_size, 3);
        assert!(matches!(
            d.write("web01", "a.log", 1, -2, b"x"),
            Err(StoreError::Refused(..))
        ));
        assert!(matches!(
            d.write("web01", "a.log", -1, -1, b"x"),
            Err(StoreError::Refused(..))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn never_follows_what_was_planted_in_the_log_directory() {
        let (_tmp, root) = scratch();
        let (_tmp, outside) = scratch();
        std::fs::write(outside.join("victim"), b"precious").unwrap();
        let d = LogDir::open(&root, BIG).unwrap();
        // A symlinked system directory.
        symlink(&outside, root.join("evil")).unwrap();
        let e = d.write("evil", "victim", 1, 0, b"x").unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(_, ref m) if m.contains("not a directory")),
            "{e:?}"
        );
        // A symlinked file and a hard link inside a real system directory.
        std::fs::create_dir(root.join("web01")).unwrap();
        symlink(outside.join("victim"), root.join("web01/link.log")).unwrap();
        let e = d.write("web01", "link.log", 1, 0, b"x").unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(_, ref m) if m.contains("symlink")),
            "{e:?}"
        );
        std::fs::hard_link(outside.join("victim"), root.join("web01/hard.log")).unwrap();
        let e = d.write("web01", "hard.log", 1, 0, b"x").unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(_, ref m) if m.contains("hard links")),
            "{e:?}"
        );
        // A FIFO (opened non-blocking, so this does not hang) and a directory.
        anamon_testkit::sys::mkfifo(&root.join("web01/fifo.log"));
        let e = d.write("web01", "fifo.log", 1, 0, b"x").unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(_, ref m) if m.contains("regular")),
            "{e:?}"
        );
        std::fs::create_dir(root.join("web01/dir.log")).unwrap();
        assert!(d.write("web01", "dir.log", 1, 0, b"x").is_err());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
        // Names with a slash or NUL never get this far, but cannot escape here either.
        for (system, file) in [
            ("..", "x"),
            ("web01", "../../x"),
            ("web01", "a\0b"),
            ("/tmp", "x"),
            ("web01", "."),
        ] {
            assert!(
                matches!(
                    d.write(system, file, 1, 0, b"x"),
                    Err(StoreError::Refused(..))
                ),
                "{system:?}/{file:?}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_moved_or_removed_system_directory_is_made_again() {
        let (_tmp, root) = scratch();
        let d = LogDir::open(&root, BIG).unwrap();
        d.write("web01", "a.log", 3, 0, b"one").unwrap();
        std::fs::rename(root.join("web01"), root.join("web01.old")).unwrap();
        d.write("web01", "b.log", 3, 0, b"two").unwrap();
        assert_eq!(std::fs::read(root.join("web01/b.log")).unwrap(), b"two");
        assert!(!root.join("web01.old/b.log").exists());
        std::fs::remove_dir_all(root.join("web01")).unwrap();
        d.write("web01", "c.log", 5, 0, b"three").unwrap();
        assert_eq!(std::fs::read(root.join("web01/c.log")).unwrap(), b"three");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn many_systems_hold_no_descriptors() {
        let (_tmp, root) = scratch();
        let d = LogDir::open(&root, BIG).unwrap();
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = open_fds();
        for i in 0..1500 {
            d.write(&format!("host{i}"), "a.log", 1, 0, b"x").unwrap();
        }
        // Other tests run in parallel threads: allow them a few.
        assert!(open_fds() < before + 50, "{} descriptors open", open_fds());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn caps_per_file_and_per_system() {
        let (_tmp, root) = scratch();
        std::fs::create_dir(root.join("web01")).unwrap();
        // What is already on disk counts toward the system's cap.
        std::fs::write(root.join("web01/old.log"), vec![b'o'; 40]).unwrap();
        let d = LogDir::open(
            &root,
            Caps {
                file_bytes: 50,
                system_bytes: 100,
            },
        )
        .unwrap();
        d.write("web01", "a.log", 50, 0, &[b'a'; 50]).unwrap();
        let e = d.write("web01", "a.log", 1, 50, b"x").unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(_, ref m) if m.contains("per file")),
            "{e:?}"
        );
        let e = d.write("web01", "b.log", 11, 0, &[b'b'; 11]).unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(_, ref m) if m.contains("per system")),
            "{e:?}"
        );
        // A restart at offset 0 frees what it replaces.
        d.write("web01", "a.log", 10, 0, &[b'a'; 10]).unwrap();
        d.write("web01", "b.log", 40, 0, &[b'b'; 40]).unwrap();
        // Another system has its own budget.
        d.write("web02", "a.log", 50, 0, &[b'c'; 50]).unwrap();
        assert_eq!(
            std::fs::read(root.join("web01/a.log")).unwrap(),
            vec![b'a'; 10]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn two_receivers_on_one_directory_keep_the_system_cap() {
        // Two receivers behind a load balancer share the log directory:
        // each must count what the other wrote, not only its own uploads.
        let (_tmp, root) = scratch();
        let caps = Caps {
            file_bytes: 100,
            system_bytes: 100,
        };
        let (a, b) = (
            LogDir::open(&root, caps).unwrap(),
            LogDir::open(&root, caps).unwrap(),
        );
        b.write("web01", "b.log", 10, 0, &[b'b'; 10]).unwrap();
        a.write("web01", "a.log", 60, 0, &[b'a'; 60]).unwrap();
        // A file B has never seen, created and grown by A, then written by B
        // (an agent's next request round-robined to the other receiver).
        a.write("web01", "c.log", 20, 0, &[b'c'; 20]).unwrap();
        std::thread::sleep(SIZES_FRESH + std::time::Duration::from_millis(100));
        let e = b.write("web01", "b.log", 15, 10, &[b'b'; 15]).unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(Refusal::SystemCap, ref m) if m.contains("per system")),
            "{e:?}"
        );
        // What is on disk is what counts: 10 + 60 + 20, room for 10 more.
        b.write("web01", "c.log", 10, 20, &[b'c'; 10]).unwrap();
        assert!(a.write("web01", "a.log", 1, 60, b"a").is_err());
    }
}
