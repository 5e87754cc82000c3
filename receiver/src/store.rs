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
//! Every verdict is made before anything is created: a refused call leaves
//! no directory and no file behind, so it never has to remove one. (It used
//! to create the file, then refuse and unlink it by name; a second receiver
//! on the same directory could have stored an acknowledged chunk in it in
//! between, and lost it.) Nothing here ever unlinks.
//!
//! What the caps count: each regular file is charged its size, and at least
//! [`MIN_CHARGE`] (an empty file still costs an inode and a directory
//! entry), per system and for the whole directory; a system holds at most
//! `files_per_system` files; and no write that grows a file leaves less
//! than `min_free_bytes` free on the file system.
//!
//! A chunk is reported stored only after it is written whole and
//! `fdatasync`ed, so a crash never leaves a `True` without its bytes.

use crate::sys::{self, Fd};
use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Why a write did not happen. Either way the client gets a fault naming it.
#[derive(Debug)]
pub enum StoreError {
    /// The request is refused by policy (a cap) or by the directory's state
    /// (a symlink, a FIFO, a hard link where the log should be).
    Refused(Refusal, String),
    /// The disk failed us (ENOSPC, EIO): nothing is reported stored.
    Io {
        /// `system/file` or `system`.
        what: String,
        doing: &'static str,
        source: io::Error,
    },
}

/// What kind of refusal, for the counters (`/metrics`); the text says which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    FileCap,
    SystemCap,
    /// The system already holds `files_per_system` files.
    FilesPerSystem,
    /// The whole log directory is at `total_bytes`.
    TotalCap,
    /// The file system is down to `min_free_bytes`.
    FreeSpace,
    /// Not a plain name, or not a plain file or directory on disk (a
    /// symlink, hard link, FIFO or directory where the log should be).
    NotPlain,
    /// An offset or size that means nothing.
    BadRange,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Refused(_, s) => f.write_str(s),
            StoreError::Io {
                what,
                doing,
                source,
            } => write!(f, "{what}: {doing} failed: {source}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Refused(..) => None,
        }
    }
}

/// Caps that keep one system (or a hostile client) from filling the disk.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub file_bytes: u64,
    pub system_bytes: u64,
    /// The whole log directory, all systems together.
    pub total_bytes: u64,
    pub files_per_system: u64,
    /// Writes that grow a file stop while the file system has less free.
    pub min_free_bytes: u64,
}

/// What one upload changed: the file's size afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub file_size: u64,
}

/// The least a file is charged against the caps: one block of the usual
/// file systems. 20,000 empty files cost 80 MB of budget, not nothing.
pub const MIN_CHARGE: u64 = 4096;

/// What a file of `size` bytes costs against the caps.
fn charge(size: u64) -> u64 {
    size.max(MIN_CHARGE)
}

/// Systems whose sizes are kept between uploads.
const MAX_CACHED_SYSTEMS: usize = 4096;

/// How long a system's scanned sizes are trusted. Another receiver may
/// write the same directory (stateless receivers behind a load balancer):
/// what it wrote is counted within this long.
const SIZES_FRESH: Duration = Duration::from_secs(1);

/// A scan of a big directory is repeated at most once per this many times
/// its own duration, so scanning never takes more than 1/20 of a system's
/// time, however many files were planted in it before the file cap.
const SCAN_SPACING: u32 = 20;

/// A scan that took longer than this is not repeated on an upload's path:
/// the upload goes on with the sizes known, and the scan is done again in
/// the background. Directories the receiver fills stay far below it
/// (--max-files-per-system: 1,000 files scan in about 2 ms); one flooded
/// before the caps, or by hand (20,000 files: 60 ms), no longer costs every
/// upload to it a scan.
const INLINE_SCAN_AT_MOST: Duration = Duration::from_millis(5);

/// How long the whole directory's total is trusted before it is summed
/// again from the disk (in the background): what other receivers wrote to
/// systems this one never touches, and what an admin removed.
const TOTAL_FRESH: Duration = Duration::from_secs(60);

pub struct LogDir {
    path: PathBuf,
    fd: Fd,
    caps: Caps,
    /// One entry per system touched since start; each is locked while one of
    /// its files is written, so the size accounting and Cobbler's
    /// "offset 0 truncates" never race between two requests.
    systems: Mutex<HashMap<String, Arc<Mutex<SystemDir>>>>,
    total: Arc<Ledger>,
}

/// What is known of a system's directory: the sizes of the regular files
/// in it (for the per-system caps). Only a cache: it can be scanned again.
#[derive(Default)]
struct SystemDir {
    /// (device, inode) of the directory the sizes were scanned from.
    id: Option<(u64, u64)>,
    /// When they were scanned, and when they may be scanned again.
    scanned: Option<Instant>,
    rescan_after: Duration,
    /// How long the last scan took.
    scan_took: Duration,
    /// A scan runs in the background (big directories).
    scanning_behind: bool,
    sizes: HashMap<String, u64>,
    /// The sum of `charge` over `sizes`.
    charged: u64,
}

impl SystemDir {
    fn scanned_as(&mut self, id: Option<(u64, u64)>, sizes: HashMap<String, u64>, took: Duration) {
        self.id = id;
        self.scanned = Some(Instant::now());
        self.rescan_after = SIZES_FRESH.max(took * SCAN_SPACING);
        self.scan_took = took;
        self.charged = sizes.values().map(|s| charge(*s)).sum();
        self.sizes = sizes;
    }

    fn set_size(&mut self, file: &str, size: u64) {
        if let Some(old) = self.sizes.insert(file.to_string(), size) {
            self.charged -= charge(old).min(self.charged);
        }
        self.charged += charge(size);
    }
}

/// What every system directory is charged, for `total_bytes`. Kept apart
/// from the systems' caches (which drop entries) and summed from the disk
/// again every TOTAL_FRESH.
struct Ledger {
    books: Mutex<Books>,
    summing: AtomicBool,
}

#[derive(Default)]
struct Books {
    per_system: HashMap<String, u64>,
    total: u64,
    summed: Option<Instant>,
}

impl Books {
    fn set(&mut self, system: &str, charged: u64) {
        let old = self.per_system.insert(system.to_string(), charged);
        self.total = self.total - old.unwrap_or(0).min(self.total) + charged;
    }
}

/// The names of one upload, checked to be single path components.
struct Target<'a> {
    system: &'a str,
    file: &'a str,
    system_c: CString,
    file_c: CString,
}

impl Target<'_> {
    fn new<'a>(system: &'a str, file: &'a str) -> Result<Target<'a>, StoreError> {
        let c = |name: &str| {
            CString::new(name)
                .ok()
                .filter(|_| single_component(name))
                .ok_or_else(|| {
                    StoreError::Refused(
                        Refusal::NotPlain,
                        format!("{name:?} is not a plain file name; not storing under it"),
                    )
                })
        };
        Ok(Target {
            system,
            file,
            system_c: c(system)?,
            file_c: c(file)?,
        })
    }

    fn shown(&self) -> String {
        format!("{}/{}", self.system, self.file)
    }
}

/// What a write does to its file, worked out from the request and the
/// file's current size before anything is touched.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    truncate_first: bool,
    write_at: u64,
    /// The size after the write.
    final_size: u64,
    /// The largest size the file reaches on the way.
    peak: u64,
    /// Offset -1: the file is cut to `final_size` after the append.
    set_size_after: bool,
}

impl Plan {
    /// Cobbler 4.0's semantics: offset 0 truncates first; offset >= 0
    /// writes there (past the end leaves a hole); offset -1 appends and then
    /// sets the size to `size` (if `size == len`, the data becomes the whole
    /// file).
    fn new(
        t: &Target<'_>,
        size: i64,
        offset: i64,
        len: u64,
        current: u64,
    ) -> Result<Plan, StoreError> {
        let (truncate_first, write_at, final_size) = match offset {
            0 => (true, 0, len),
            o if o > 0 => (false, o as u64, current.max(o as u64 + len)),
            -1 if size < 0 => {
                return Err(StoreError::Refused(
                    Refusal::BadRange,
                    format!("{}: final size {size} is negative", t.shown()),
                ))
            }
            -1 if size as u64 == len => (true, 0, len),
            -1 => (false, current, size as u64),
            _ => {
                return Err(StoreError::Refused(
                    Refusal::BadRange,
                    format!(
                        "{}: offset {offset} (only -1 and offsets >= 0 mean anything)",
                        t.shown()
                    ),
                ))
            }
        };
        Ok(Plan {
            truncate_first,
            write_at,
            final_size,
            peak: final_size.max(write_at + len),
            set_size_after: offset == -1,
        })
    }
}

/// The file an upload goes to, as found before the verdict.
enum Found {
    /// It exists: opened, and checked to be a plain file.
    Existing(File),
    /// No such name (yet); `dir` is `None` when the system has no
    /// directory either.
    Missing { dir: Option<Fd> },
}

impl LogDir {
    /// Opens (creating if needed) the log directory, and sums what it holds.
    pub fn open(path: &Path, caps: Caps) -> io::Result<LogDir> {
        std::fs::create_dir_all(path)?;
        let fd = sys::open_dir(path)?;
        let books = sum_directory(&fd)?;
        Ok(LogDir {
            path: path.to_path_buf(),
            fd,
            caps,
            systems: Mutex::new(HashMap::new()),
            total: Arc::new(Ledger {
                books: Mutex::new(books),
                summing: AtomicBool::new(false),
            }),
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

    /// Bytes charged for the whole directory, as last counted.
    pub fn total_charged(&self) -> u64 {
        lock(&self.total.books).total
    }

    /// Writes `data` for `system`/`file` with Cobbler 4.0's semantics (see
    /// [`Plan::new`]), if the caps allow it.
    pub fn write(
        &self,
        system: &str,
        file: &str,
        size: i64,
        offset: i64,
        data: &[u8],
    ) -> Result<Stored, StoreError> {
        let t = Target::new(system, file)?;
        let len = data.len() as u64;
        let entry = self.system_entry(system);
        let mut dir = lock(&entry);
        self.resum_total_if_stale();
        let found = self.find(&t, &entry, &mut dir)?;
        let current = match &found {
            Found::Existing(f) => plain_file_size(&t, f)?,
            Found::Missing { .. } => 0,
        };
        let plan = Plan::new(&t, size, offset, len, current)?;
        self.admit(
            &t,
            &dir,
            &plan,
            current,
            matches!(found, Found::Missing { .. }),
        )?;
        let (file, plan) = match found {
            Found::Existing(f) => (f, plan),
            Found::Missing { dir: sys_fd } => self.create(&t, &dir, sys_fd, size, offset, len)?,
        };
        let written = apply(&file, &plan, data);
        // Account for what is on disk now, whatever happened.
        let now = file.metadata().map_or(plan.final_size, |m| m.len());
        dir.set_size(t.file, now);
        lock(&self.total.books).set(system, dir.charged);
        written.map_err(|e| io_err(t.shown(), "writing", e))?;
        Ok(Stored { file_size: now })
    }

    /// The cache entry of `system`, made if missing.
    fn system_entry(&self, system: &str) -> Arc<Mutex<SystemDir>> {
        let mut systems = lock(&self.systems);
        if systems.len() >= MAX_CACHED_SYSTEMS && !systems.contains_key(system) {
            // Whatever names clients invent, the cache stays bounded: drop
            // the entries no request is using (they are rescanned when next
            // needed).
            systems.retain(|_, e| Arc::strong_count(e) > 1);
        }
        Arc::clone(systems.entry(system.to_string()).or_default())
    }

    /// Finds the system's directory and the file, creating nothing, and
    /// brings the system's sizes up to date.
    ///
    /// The directory is opened afresh for every upload: an admin may move
    /// or remove it while the receiver runs, and the next upload must land
    /// in (a new) `<dir>/<system>`, not in the moved one.
    fn find(
        &self,
        t: &Target<'_>,
        entry: &Arc<Mutex<SystemDir>>,
        dir: &mut SystemDir,
    ) -> Result<Found, StoreError> {
        let sys_fd = match sys::open_dir_below(&self.fd, &t.system_c) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                *dir = SystemDir::default();
                lock(&self.total.books).set(t.system, 0);
                return Ok(Found::Missing { dir: None });
            }
            Err(e) => return Err(self.system_open_error(t.system, e)),
        };
        self.refresh(t, entry, dir, &sys_fd)?;
        match sys::open_file_below(&sys_fd, &t.file_c) {
            Ok(Some(fd)) => Ok(Found::Existing(File::from(fd))),
            Ok(None) => Ok(Found::Missing { dir: Some(sys_fd) }),
            Err(e) => Err(file_open_error(t, e)),
        }
    }

    /// Scans the system's sizes again when the directory is another one
    /// (moved, removed), or when the last scan is stale (another receiver
    /// may write it), but never more often than SCAN_SPACING allows.
    fn refresh(
        &self,
        t: &Target<'_>,
        entry: &Arc<Mutex<SystemDir>>,
        dir: &mut SystemDir,
        sys_fd: &Fd,
    ) -> Result<(), StoreError> {
        let st = sys::fstat(sys_fd).map_err(|e| io_err(t.system.into(), "stat", e))?;
        let id = Some((st.st_dev, st.st_ino));
        let stale = dir.scanned.is_none_or(|at| at.elapsed() > dir.rescan_after);
        if dir.id == id && !stale {
            return Ok(());
        }
        if dir.id == id && dir.scan_took > INLINE_SCAN_AT_MOST {
            // A big directory: this upload goes on with the sizes known,
            // and the scan is done again off its path.
            if !dir.scanning_behind {
                dir.scanning_behind = true;
                self.rescan_behind(t.system, entry, sys_fd);
            }
            return Ok(());
        }
        let began = Instant::now();
        let sizes =
            scan_sizes(sys_fd).map_err(|e| io_err(t.system.into(), "reading the directory", e))?;
        dir.scanned_as(id, sizes, began.elapsed());
        lock(&self.total.books).set(t.system, dir.charged);
        Ok(())
    }

    /// Scans `system`'s directory again in a thread of its own, and keeps
    /// the sizes if the directory is still the one they were known for.
    fn rescan_behind(&self, system: &str, entry: &Arc<Mutex<SystemDir>>, sys_fd: &Fd) {
        let (entry, ledger, system) = (
            Arc::clone(entry),
            Arc::clone(&self.total),
            system.to_string(),
        );
        let spawned = sys_fd.try_clone().and_then(|fd| {
            let entry = Arc::clone(&entry);
            std::thread::Builder::new()
                .name("size-scan".into())
                .spawn(move || {
                    let began = Instant::now();
                    let sizes = scan_sizes(&fd);
                    let id = sys::fstat(&fd).ok().map(|st| (st.st_dev, st.st_ino));
                    let mut dir = lock(&entry);
                    dir.scanning_behind = false;
                    if let (Ok(sizes), true) = (sizes, id.is_some() && dir.id == id) {
                        dir.scanned_as(id, sizes, began.elapsed());
                        lock(&ledger.books).set(&system, dir.charged);
                    }
                })
        });
        if spawned.is_err() {
            lock(&entry).scanning_behind = false;
        }
    }

    /// The caps' verdict on `plan`, before anything is created or written.
    /// A write that does not grow what the file is charged always passes,
    /// so a full system can still restart or cut its logs.
    fn admit(
        &self,
        t: &Target<'_>,
        dir: &SystemDir,
        plan: &Plan,
        current: u64,
        new_file: bool,
    ) -> Result<(), StoreError> {
        let caps = &self.caps;
        let refuse = |kind, why: String| Err(StoreError::Refused(kind, why));
        if plan.peak > caps.file_bytes {
            return refuse(
                Refusal::FileCap,
                format!(
                    "{} would grow to {} bytes, over this receiver's cap of {} bytes per file",
                    t.shown(),
                    plan.peak,
                    caps.file_bytes
                ),
            );
        }
        let files = dir.sizes.len() as u64;
        if new_file && !dir.sizes.contains_key(t.file) && files >= caps.files_per_system {
            return refuse(
                Refusal::FilesPerSystem,
                format!(
                    "{} holds {files} files, this receiver's cap per system; not adding {}",
                    t.system, t.file
                ),
            );
        }
        // Only what grows the file on disk is checked further.
        if !new_file && charge(plan.peak) <= charge(current) {
            return Ok(());
        }
        // What the file is charged now (nothing, if another writer made it
        // since the scan: counted in full until the next scan).
        let before = dir.sizes.get(t.file).map_or(0, |s| charge(*s));
        let after = charge(plan.peak);
        let growth = after.saturating_sub(before);
        let system_after = dir.charged - before.min(dir.charged) + after;
        if system_after > caps.system_bytes {
            return refuse(
                Refusal::SystemCap,
                format!(
                    "{} would hold {system_after} bytes, over this receiver's cap of {} bytes per system",
                    t.system, caps.system_bytes
                ),
            );
        }
        let total_after = self.total_charged() + growth;
        if total_after > caps.total_bytes {
            return refuse(
                Refusal::TotalCap,
                format!(
                    "the log directory would hold {total_after} bytes, over this receiver's cap of {} bytes in all (--max-total-size); not stored",
                    caps.total_bytes
                ),
            );
        }
        // `--min-free-space 0` keeps no floor: the write itself finds out
        // (ENOSPC is a fault, and nothing is reported stored).
        if caps.min_free_bytes == 0 {
            return Ok(());
        }
        let free = sys::available_bytes(&self.fd)
            .map_err(|e| io_err(self.path.display().to_string(), "statvfs", e))?;
        if free < caps.min_free_bytes.saturating_add(growth) {
            return refuse(
                Refusal::FreeSpace,
                format!(
                    "the file system of the log directory has {free} bytes free; this receiver keeps {} free (--min-free-space); not stored",
                    caps.min_free_bytes
                ),
            );
        }
        Ok(())
    }

    /// Makes the directory and the file of an admitted upload. If another
    /// writer made the file first, that file is used, and the plan and the
    /// verdict are made again with its size; either way nothing is removed.
    fn create(
        &self,
        t: &Target<'_>,
        dir: &SystemDir,
        sys_fd: Option<Fd>,
        size: i64,
        offset: i64,
        len: u64,
    ) -> Result<(File, Plan), StoreError> {
        let sys_fd = match sys_fd {
            Some(fd) => fd,
            None => self
                .open_system(t)
                .map_err(|e| self.system_open_error(t.system, e))?,
        };
        if let Some(fd) =
            sys::create_file_below(&sys_fd, &t.file_c).map_err(|e| file_open_error(t, e))?
        {
            // The new name must survive a crash too.
            sys::fsync(&sys_fd).map_err(|e| io_err(t.system.into(), "syncing the directory", e))?;
            return Ok((File::from(fd), Plan::new(t, size, offset, len, 0)?));
        }
        let file =
            match sys::open_file_below(&sys_fd, &t.file_c).map_err(|e| file_open_error(t, e))? {
                Some(fd) => File::from(fd),
                None => {
                    return Err(io_err(
                        t.shown(),
                        "opening",
                        io::Error::other("made and removed by another writer at once"),
                    ))
                }
            };
        let current = plain_file_size(t, &file)?;
        let plan = Plan::new(t, size, offset, len, current)?;
        self.admit(t, dir, &plan, current, false)?;
        Ok((file, plan))
    }

    /// Opens `<dir>/<system>`, creating it (0755) if missing, never
    /// following a symlink.
    fn open_system(&self, t: &Target<'_>) -> io::Result<Fd> {
        if sys::mkdir_below(&self.fd, &t.system_c)? {
            sys::fsync(&self.fd)?;
        }
        sys::open_dir_below(&self.fd, &t.system_c)
    }

    fn system_open_error(&self, system: &str, e: io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => StoreError::Refused(
                Refusal::NotPlain,
                format!(
                    "{}/{system} is not a directory (a symlink?); not writing through it",
                    self.path.display()
                ),
            ),
            _ => io_err(system.into(), "opening the directory", e),
        }
    }

    /// Sums the whole directory again in the background when the total is
    /// older than TOTAL_FRESH; the thread holds only a weak reference, so a
    /// dropped LogDir is not kept alive by it.
    fn resum_total_if_stale(&self) {
        let stale = lock(&self.total.books)
            .summed
            .is_none_or(|at| at.elapsed() > TOTAL_FRESH);
        if !stale || self.total.summing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(fd) = self.fd.try_clone() else {
            self.total.summing.store(false, Ordering::Release);
            return;
        };
        let ledger: Weak<Ledger> = Arc::downgrade(&self.total);
        std::thread::spawn(move || {
            let books = sum_directory(&fd);
            if let Some(ledger) = ledger.upgrade() {
                if let Ok(books) = books {
                    *lock(&ledger.books) = books;
                }
                ledger.summing.store(false, Ordering::Release);
            }
        });
    }
}

/// The size of an opened log file, after checking it is a regular file
/// with one link.
fn plain_file_size(t: &Target<'_>, file: &File) -> Result<u64, StoreError> {
    let meta = file.metadata().map_err(|e| io_err(t.shown(), "stat", e))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::Refused(
            Refusal::NotPlain,
            format!("{} is not a regular file; not writing to it", t.shown()),
        ));
    }
    if meta.nlink() > 1 {
        return Err(StoreError::Refused(
            Refusal::NotPlain,
            format!(
                "{} has {} hard links; not writing through it",
                t.shown(),
                meta.nlink()
            ),
        ));
    }
    Ok(meta.len())
}

fn file_open_error(t: &Target<'_>, e: io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => StoreError::Refused(
            Refusal::NotPlain,
            format!(
                "{} is a symlink in the log directory; not writing through it",
                t.shown()
            ),
        ),
        Some(libc::EISDIR) => {
            StoreError::Refused(Refusal::NotPlain, format!("{} is a directory", t.shown()))
        }
        _ => io_err(t.shown(), "opening", e),
    }
}

/// Carries out `plan`, then makes the data durable.
fn apply(file: &File, plan: &Plan, data: &[u8]) -> io::Result<()> {
    if plan.truncate_first {
        file.set_len(0)?;
    }
    file.write_all_at(data, plan.write_at)?;
    if plan.set_size_after {
        file.set_len(plan.final_size)?;
    }
    file.sync_data()
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
        let meta = match entry.metadata() {
            Ok(m) => m, // lstat: symlinks are not followed
            // Removed since it was listed (an admin's clean-up).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_file() {
            sizes.insert(name, meta.len());
        }
    }
    Ok(sizes)
}

/// What every system directory below `root` is charged.
fn sum_directory(root: &Fd) -> io::Result<Books> {
    let mut books = Books::default();
    for entry in std::fs::read_dir(sys::fd_path(root))? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(c) = CString::new(name.as_str()) else {
            continue;
        };
        let Ok(dir) = sys::open_dir_below(root, &c) else {
            continue; // removed meanwhile, or swapped for a symlink
        };
        let charged = scan_sizes(&dir)?.values().map(|s| charge(*s)).sum();
        books.set(&name, charged);
    }
    books.summed = Some(Instant::now());
    Ok(books)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(what: String, doing: &'static str, source: io::Error) -> StoreError {
    StoreError::Io {
        what,
        doing,
        source,
    }
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
        total_bytes: 1 << 40,
        files_per_system: 100_000,
        min_free_bytes: 0,
    };

    /// A unit above MIN_CHARGE, so sizes in these tests are charged as
    /// they are.
    const U: usize = MIN_CHARGE as usize * 2;

    /// The message of a refusal of `kind`; panics on anything else.
    fn refusal(r: Result<Stored, StoreError>, kind: Refusal) -> String {
        match r {
            Err(StoreError::Refused(k, m)) if k == kind => m,
            other => panic!("expected a {kind:?} refusal, got {other:?}"),
        }
    }

    /// A log directory already holding `files` (`system/file`, size), opened
    /// with `caps`.
    fn holding(files: &[(&str, usize)], caps: Caps) -> (tempfile::TempDir, PathBuf, LogDir) {
        let (tmp, root) = scratch();
        for (path, size) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![b'o'; *size]).unwrap();
        }
        let d = LogDir::open(&root, caps).unwrap();
        (tmp, root, d)
    }

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
        // What is already on disk counts toward the system's cap.
        let (_tmp, root, d) = holding(
            &[("web01/old.log", 40 * U)],
            Caps {
                file_bytes: 50 * U as u64,
                system_bytes: 100 * U as u64,
                ..BIG
            },
        );
        d.write("web01", "a.log", 50 * U as i64, 0, &vec![b'a'; 50 * U])
            .unwrap();
        assert!(refusal(
            d.write("web01", "a.log", 1, 50 * U as i64, b"x"),
            Refusal::FileCap
        )
        .contains("per file"));
        let big = vec![b'b'; 11 * U];
        let refused = d.write("web01", "b.log", big.len() as i64, 0, &big);
        assert!(refusal(refused, Refusal::SystemCap).contains("per system"));
        assert!(
            !root.join("web01/b.log").exists(),
            "a refused call creates nothing"
        );
        // A restart at offset 0 frees what it replaces.
        d.write("web01", "a.log", 10 * U as i64, 0, &vec![b'a'; 10 * U])
            .unwrap();
        d.write("web01", "b.log", 40 * U as i64, 0, &vec![b'b'; 40 * U])
            .unwrap();
        // Another system has its own budget.
        d.write("web02", "a.log", 50 * U as i64, 0, &vec![b'c'; 50 * U])
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("web01/a.log")).unwrap(),
            vec![b'a'; 10 * U]
        );
    }

    #[test]
    fn the_whole_directory_has_a_budget() {
        // Invented system names each under their own cap, but together
        // over the directory's: the upload that would pass it is refused,
        // and leaves no directory behind.
        let (_tmp, root, d) = holding(
            &[("old/a.log", 5 * U)],
            Caps {
                total_bytes: 20 * U as u64,
                ..BIG
            },
        );
        assert_eq!(d.total_charged(), 5 * U as u64, "what was there counts");
        let chunk = vec![b'x'; 7 * U];
        d.write("fake1", "a.log", chunk.len() as i64, 0, &chunk)
            .unwrap();
        d.write("fake2", "a.log", chunk.len() as i64, 0, &chunk)
            .unwrap();
        assert!(refusal(
            d.write("fake3", "a.log", chunk.len() as i64, 0, &chunk),
            Refusal::TotalCap
        )
        .contains("--max-total-size"));
        assert!(
            !root.join("fake3").exists(),
            "no directory for a refused name"
        );
        // Shrinking is always allowed, and frees budget for others.
        d.write("fake1", "a.log", 1, 0, b"x").unwrap();
        d.write("fake3", "a.log", chunk.len() as i64, 0, &chunk)
            .unwrap();
    }

    #[test]
    fn empty_files_count() {
        let (_tmp, root) = scratch();
        let d = LogDir::open(
            &root,
            Caps {
                files_per_system: 3,
                total_bytes: 5 * MIN_CHARGE,
                ..BIG
            },
        )
        .unwrap();
        for f in ["a", "b", "c"] {
            d.write("web01", f, 0, 0, b"").unwrap();
        }
        assert!(
            refusal(d.write("web01", "d", 0, 0, b""), Refusal::FilesPerSystem).contains("3 files")
        );
        assert!(!root.join("web01/d").exists());
        // Existing files can still be written.
        d.write("web01", "a", 1, 0, b"x").unwrap();
        // Empty files cost MIN_CHARGE each against the total: 3 here, 2 there.
        assert_eq!(d.total_charged(), 3 * MIN_CHARGE);
        d.write("web02", "a", 0, 0, b"").unwrap();
        d.write("web02", "b", 0, 0, b"").unwrap();
        refusal(d.write("web02", "c", 0, 0, b""), Refusal::TotalCap);
    }

    #[test]
    fn a_floor_of_free_space() {
        let (_tmp, root) = scratch();
        let d = LogDir::open(
            &root,
            Caps {
                min_free_bytes: u64::MAX / 2,
                ..BIG
            },
        )
        .unwrap();
        assert!(
            refusal(d.write("web01", "a.log", 1, 0, b"x"), Refusal::FreeSpace)
                .contains("--min-free-space")
        );
        assert!(!root.join("web01").exists());
        // What does not grow a file passes: a full disk can still be cut down.
        std::fs::create_dir(root.join("web01")).unwrap();
        std::fs::write(root.join("web01/a.log"), vec![b'a'; 3 * U]).unwrap();
        d.write("web01", "a.log", 1, 0, b"x").unwrap();
        assert_eq!(std::fs::read(root.join("web01/a.log")).unwrap(), b"x");
    }

    #[test]
    fn a_flooded_directory_is_scanned_again_off_the_uploads_path() {
        // 20,000 files planted in a system's directory (a flood from before
        // the file cap): every upload to it used to scan them all again
        // once the sizes were a second old (63 ms against 7.8 ms).
        let (_tmp, root) = scratch();
        let big = root.join("flooded");
        std::fs::create_dir(&big).unwrap();
        for i in 0..20_000 {
            std::fs::File::create(big.join(format!("p{i}"))).unwrap();
        }
        let d = LogDir::open(
            &root,
            Caps {
                system_bytes: 20_000 * MIN_CHARGE + 20 * U as u64,
                ..BIG
            },
        )
        .unwrap();
        d.write("flooded", "a.log", U as i64, 0, &vec![b'a'; U])
            .unwrap();
        let entry = d.system_entry("flooded");
        let took = lock(&entry).scan_took;
        assert!(took > INLINE_SCAN_AT_MOST, "the scan took only {took:?}");
        // Another writer fills the system; the known sizes are made stale.
        std::fs::write(big.join("other.log"), vec![b'o'; 15 * U]).unwrap();
        lock(&entry).scanned = Some(Instant::now() - Duration::from_secs(3600));
        // This upload goes on with the sizes it knows (a scan on its path
        // would have counted other.log, and refused it) ...
        let chunk = vec![b'a'; 5 * U + 1];
        d.write("flooded", "a.log", chunk.len() as i64, 0, &chunk)
            .unwrap();
        // ... and the scan done behind it counts the other writer's bytes.
        while lock(&entry).scanning_behind {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(lock(&entry).sizes.contains_key("other.log"));
        let e = d
            .write("flooded", "a.log", 6 * U as i64, 0, &vec![b'a'; 6 * U])
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(Refusal::SystemCap, _)),
            "{e:?}"
        );
    }

    #[test]
    fn a_refused_call_never_removes_what_another_receiver_stored() {
        // Two receivers on one directory. For each new file, one stores the
        // first chunk while the other refuses a call for the same new name
        // (over the file cap). Before, the refused call created the file,
        // then unlinked it by name: when the other had opened it and
        // stored its chunk in between, that acknowledged chunk was gone.
        let (_tmp, root) = scratch();
        let caps = Caps {
            file_bytes: 64,
            ..BIG
        };
        let (a, b) = (
            Arc::new(LogDir::open(&root, caps).unwrap()),
            Arc::new(LogDir::open(&root, caps).unwrap()),
        );
        let rounds = 1000;
        let start = Arc::new(std::sync::Barrier::new(2));
        let refuser = {
            let (b, start) = (Arc::clone(&b), Arc::clone(&start));
            std::thread::spawn(move || {
                for i in 0..rounds {
                    start.wait();
                    let r = b.write("web01", &format!("f{i}"), 100, 0, &[b'z'; 100]);
                    assert!(matches!(r, Err(StoreError::Refused(Refusal::FileCap, _))));
                }
            })
        };
        let mut lost = 0;
        for i in 0..rounds {
            start.wait();
            let name = format!("f{i}");
            a.write("web01", &name, 5, 0, b"chunk").unwrap();
            if std::fs::read(root.join("web01").join(&name))
                .ok()
                .as_deref()
                != Some(b"chunk")
            {
                lost += 1;
            }
        }
        refuser.join().unwrap();
        assert_eq!(
            lost, 0,
            "acknowledged chunks lost in {lost} of {rounds} rounds"
        );
    }

    #[test]
    fn two_receivers_on_one_directory_keep_the_system_cap() {
        // Two receivers behind a load balancer share the log directory:
        // each must count what the other wrote, not only its own uploads.
        let (_tmp, root) = scratch();
        let caps = Caps {
            file_bytes: 100 * U as u64,
            system_bytes: 100 * U as u64,
            ..BIG
        };
        let (a, b) = (
            LogDir::open(&root, caps).unwrap(),
            LogDir::open(&root, caps).unwrap(),
        );
        b.write("web01", "b.log", 10 * U as i64, 0, &vec![b'b'; 10 * U])
            .unwrap();
        a.write("web01", "a.log", 60 * U as i64, 0, &vec![b'a'; 60 * U])
            .unwrap();
        // A file B has never seen, created and grown by A, then written by B
        // (an agent's next request round-robined to the other receiver).
        a.write("web01", "c.log", 20 * U as i64, 0, &vec![b'c'; 20 * U])
            .unwrap();
        std::thread::sleep(SIZES_FRESH + std::time::Duration::from_millis(100));
        let e = b
            .write(
                "web01",
                "b.log",
                15 * U as i64,
                10 * U as i64,
                &vec![b'b'; 15 * U],
            )
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Refused(Refusal::SystemCap, ref m) if m.contains("per system")),
            "{e:?}"
        );
        // What is on disk is what counts: 10 + 60 + 20, room for 10 more.
        b.write(
            "web01",
            "c.log",
            10 * U as i64,
            20 * U as i64,
            &vec![b'c'; 10 * U],
        )
        .unwrap();
        assert!(a.write("web01", "a.log", 1, 60 * U as i64, b"a").is_err());
    }
}
