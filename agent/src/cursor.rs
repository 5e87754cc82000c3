//! A cursor over one watched file: which file it is (device, inode), how many
//! of its bytes the server has, and what to send next.
//!
//! The file on disk is the only buffer: the cursor holds no data, so a server
//! that is down for an hour costs no memory, and a restart of the agent
//! costs one resend.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Bytes of the shipped tail kept to notice a file that was rewritten in
/// place and has since grown past the cursor (same inode, larger size).
const TAIL: usize = 64;

/// Which file: a path that is replaced by a rename or delete-and-create
/// points at another inode, whose bytes the server does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(meta: &Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Seconds and nanoseconds.
type Mtime = (i64, i64);

fn mtime(meta: &Metadata) -> Mtime {
    (meta.mtime(), meta.mtime_nsec())
}

/// What the server holds of a file, and the file kept open while it is
/// being read often.
#[derive(Debug)]
pub(crate) struct Cursor {
    identity: Option<Identity>,
    shipped: u64,
    /// The last `tail_len` bytes shipped.
    tail: [u8; TAIL],
    tail_len: usize,
    /// The file's mtime when the last shipped bytes were read: a file of
    /// the same size with another mtime was rewritten in place.
    modified: Option<Mtime>,
    handle: Option<Handle>,
}

/// An open descriptor of the file, kept from one read to the next: each
/// open is a system call, and raises IN_OPEN for every inotify watcher of
/// the directory (the agent's own no longer asks for it). Kept
/// only while it is the very file at the path (same inode, same owner and
/// mode, so a `chmod 000` is seen as the open it would refuse), and let go
/// once the file is quiet ([`Cursor::release`]): an open descriptor would
/// keep an installer from unmounting `/mnt/sysimage`.
#[derive(Debug)]
struct Handle {
    identity: Identity,
    access: (u32, u32, u32),
    file: File,
}

fn access(meta: &Metadata) -> (u32, u32, u32) {
    (meta.mode(), meta.uid(), meta.gid())
}

/// Why a file cannot be read now. Each is reported once, when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    Missing,
    NotRegular(&'static str),
    Unreadable(String),
    /// Its next byte lies past the largest offset XML-RPC can carry.
    TooLarge,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => f.write_str("does not exist (yet)"),
            Problem::NotRegular(kind) => write!(f, "is a {kind}, not a regular file; not shipped"),
            Problem::Unreadable(e) => write!(f, "cannot be read: {e}"),
            Problem::TooLarge => f.write_str(
                "has grown past 2^63 bytes, the largest offset upload_log_data can carry; not shipped further",
            ),
        }
    }
}

/// Where the next bytes go; the bytes themselves are in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    identity: Identity,
    modified: Mtime,
    pub offset: u64,
    pub len: usize,
    /// The server's copy must be rewritten from the start: the file was
    /// replaced, truncated or rewritten. Offset 0 makes Cobbler truncate.
    pub restart: bool,
}

impl Default for Cursor {
    fn default() -> Cursor {
        Cursor {
            identity: None,
            shipped: 0,
            tail: [0; TAIL],
            tail_len: 0,
            modified: None,
            handle: None,
        }
    }
}

impl Cursor {
    pub(crate) fn shipped(&self) -> u64 {
        self.shipped
    }

    /// Reads the next chunk of at most `max` bytes the server does not have
    /// into `buf` (replacing its contents), or `None` when it has
    /// everything. Nothing changes until [`commit`].
    ///
    /// [`commit`]: Cursor::commit
    pub(crate) fn next_chunk(
        &mut self,
        path: &Path,
        max: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Chunk>, Problem> {
        // A stat first, because most files of a pass have not changed: it
        // raises no inotify event and keeps the agent from ever opening a
        // FIFO or a device.
        let meta = self.stat(path)?;
        if self.has_nothing_to_send(&meta) {
            return Ok(None);
        }
        let meta = self.open(path, meta)?;
        if self.has_nothing_to_send(&meta) {
            return Ok(None);
        }
        let file = &self.handle.as_ref().expect("just opened").file;
        let identity = Identity::of(&meta);
        let size = meta.len();
        if self.identity == Some(identity) && size > self.shipped {
            if self.shipped > MAX_OFFSET {
                return Err(Problem::TooLarge);
            }
            // The shipped tail and the new bytes in one read: only if the
            // tail is intact do the new bytes follow what the server has.
            let tail_at = self.shipped - self.tail_len as u64;
            let want = self.tail_len + max.min(to_usize(size - self.shipped));
            read_at(file, tail_at, want, buf)?;
            if buf.starts_with(&self.tail[..self.tail_len]) {
                buf.drain(..self.tail_len);
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Chunk {
                    identity,
                    modified: mtime(&meta),
                    offset: self.shipped,
                    len: buf.len(),
                    restart: false,
                }));
            }
        }
        // Replaced, shrunk, rewritten in place (the shipped tail changed),
        // or the same size with another mtime: the whole file again.
        read_at(file, 0, max.min(to_usize(size)), buf)?;
        if buf.is_empty() && self.shipped == 0 {
            // Never ship an empty file; but an emptied one is shipped as
            // empty, so the server's copy matches the disk.
            return Ok(None);
        }
        Ok(Some(Chunk {
            identity,
            modified: mtime(&meta),
            offset: 0,
            len: buf.len(),
            restart: true,
        }))
    }

    /// Reads into `buf` up to `max` bytes at `offset`, which the server
    /// already has (`offset < shipped`), to send them again: the repair of
    /// a late truncation. `None` when the file is no longer the one those
    /// bytes came from (the next [`next_chunk`] restarts it anyway).
    ///
    /// [`next_chunk`]: Cursor::next_chunk
    pub(crate) fn shipped_bytes_at(
        &mut self,
        path: &Path,
        offset: u64,
        max: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Chunk>, Problem> {
        let meta = self.stat(path)?;
        let meta = self.open(path, meta)?;
        let file = &self.handle.as_ref().expect("just opened").file;
        let identity = Identity::of(&meta);
        if self.identity != Some(identity)
            || meta.len() < self.shipped
            || offset >= self.shipped
            || !self.tail_is_intact(file)?
        {
            return Ok(None);
        }
        read_at(file, offset, max.min(to_usize(self.shipped - offset)), buf)?;
        Ok((!buf.is_empty()).then_some(Chunk {
            identity,
            modified: mtime(&meta),
            offset,
            len: buf.len(),
            restart: false,
        }))
    }

    /// The path's stat, if it is a regular file; a file that is gone or
    /// unusable lets go of its descriptor.
    fn stat(&mut self, path: &Path) -> Result<Metadata, Problem> {
        let meta = std::fs::metadata(path)
            .map_err(problem_of)
            .and_then(|m| check_regular(&m).map(|()| m));
        if meta.is_err() {
            self.handle = None;
        }
        meta
    }

    /// Makes `handle` the open file whose stat (by path) is `meta`: the one
    /// kept, if it is still that file, else a fresh open, checked again on
    /// the descriptor so that a swap after the stat (to a FIFO, or to
    /// another file) is seen. Returns the stat to go by.
    fn open(&mut self, path: &Path, meta: Metadata) -> Result<Metadata, Problem> {
        if self
            .handle
            .as_ref()
            .is_some_and(|h| h.identity == Identity::of(&meta) && h.access == access(&meta))
        {
            return Ok(meta);
        }
        self.handle = None;
        let file = open(path)?;
        let meta = file
            .metadata()
            .map_err(|e| Problem::Unreadable(e.to_string()))?;
        check_regular(&meta)?;
        self.handle = Some(Handle {
            identity: Identity::of(&meta),
            access: access(&meta),
            file,
        });
        Ok(meta)
    }

    /// Lets go of the open descriptor, if one is kept.
    pub(crate) fn release(&mut self) {
        self.handle = None;
    }

    /// Whether a descriptor is kept open.
    #[cfg(test)]
    pub(crate) fn holds_open(&self) -> bool {
        self.handle.is_some()
    }

    /// Whether the file may hold bytes the server lacks, by a stat alone
    /// (no open, so no inotify event). A file that cannot be stat'ed may:
    /// the next [`next_chunk`] says what is wrong with it.
    ///
    /// [`next_chunk`]: Cursor::next_chunk
    pub(crate) fn may_have_news(&self, path: &Path) -> bool {
        std::fs::metadata(path).map_or(true, |meta| !self.has_nothing_to_send(&meta))
    }

    /// Whether there is nothing to send: the server has this very file (same
    /// inode, size and mtime) up to its end, or the file is empty and the
    /// server has nothing (empty files are never sent).
    fn has_nothing_to_send(&self, meta: &Metadata) -> bool {
        (meta.len() == 0 && self.shipped == 0)
            || self.identity == Some(Identity::of(meta))
                && meta.len() == self.shipped
                && self.modified == Some(mtime(meta))
    }

    /// The last bytes shipped are still where they were: else the file was
    /// rewritten in place and has since grown past the cursor.
    fn tail_is_intact(&self, file: &File) -> Result<bool, Problem> {
        let mut now = Vec::with_capacity(TAIL);
        read_at(
            file,
            self.shipped - self.tail_len as u64,
            self.tail_len,
            &mut now,
        )?;
        Ok(now == self.tail[..self.tail_len])
    }

    /// Records that the server has stored `chunk` (one from [`next_chunk`]),
    /// whose bytes are `data`.
    ///
    /// [`next_chunk`]: Cursor::next_chunk
    pub(crate) fn commit(&mut self, chunk: &Chunk, data: &[u8]) {
        debug_assert_eq!(chunk.len, data.len());
        if chunk.restart {
            self.tail_len = 0;
        }
        self.shipped = chunk.offset + data.len() as u64;
        self.keep_tail(data);
        self.identity = Some(chunk.identity);
        self.modified = Some(chunk.modified);
    }

    fn keep_tail(&mut self, data: &[u8]) {
        let mut joined = [0u8; 2 * TAIL];
        let take = data.len().min(TAIL);
        let old = (TAIL - take).min(self.tail_len);
        joined[..old].copy_from_slice(&self.tail[self.tail_len - old..self.tail_len]);
        joined[old..old + take].copy_from_slice(&data[data.len() - take..]);
        self.tail_len = old + take;
        self.tail[..self.tail_len].copy_from_slice(&joined[..self.tail_len]);
    }
}

/// The largest offset `upload_log_data` can carry (`<i8>`, signed).
const MAX_OFFSET: u64 = i64::MAX as u64;

fn problem_of(e: io::Error) -> Problem {
    match e.kind() {
        io::ErrorKind::NotFound => Problem::Missing,
        _ => Problem::Unreadable(e.to_string()),
    }
}

/// O_NONBLOCK: opening a FIFO must not hang the agent; O_NOCTTY: a tty
/// named in a watch list must not become the daemon's terminal.
fn open(path: &Path) -> Result<File, Problem> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(problem_of)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn check_regular(meta: &Metadata) -> Result<(), Problem> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    Err(Problem::NotRegular(if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }))
}

/// Reads up to `len` bytes at `offset` into `buf` (replacing its contents);
/// fewer only at end of file. `pread`: one call where seek-and-read takes
/// two. The buffer is the caller's, kept across reads, so a 256 KiB chunk
/// costs no allocation (musl maps and unmaps allocations that large).
fn read_at(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<(), Problem> {
    buf.clear();
    buf.resize(len, 0);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Problem::Unreadable(e.to_string())),
        }
    }
    buf.truncate(filled);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        (dir, path)
    }

    /// Drains the file through the cursor the way the shipper does and
    /// applies each chunk to a model of the server's copy.
    fn sync(c: &mut Cursor, path: &Path, server: &mut Vec<u8>, max: usize) -> usize {
        let mut n = 0;
        let mut buf = Vec::new();
        while let Some(ch) = c.next_chunk(path, max, &mut buf).unwrap() {
            if ch.offset == 0 {
                server.clear();
            }
            server.truncate(ch.offset as usize);
            assert_eq!(server.len() as u64, ch.offset, "gap in upload");
            server.extend_from_slice(&buf);
            c.commit(&ch, &buf);
            n += 1;
        }
        n
    }

    fn next(c: &mut Cursor, path: &Path, max: usize) -> Result<Option<(Chunk, Vec<u8>)>, Problem> {
        let mut buf = Vec::new();
        Ok(c.next_chunk(path, max, &mut buf)?.map(|ch| (ch, buf)))
    }

    #[test]
    fn ships_only_new_bytes_in_bounded_chunks() {
        let (_dir, path) = scratch();
        let mut c = Cursor::default();
        let mut server = Vec::new();
        assert_eq!(next(&mut c, &path, 10), Err(Problem::Missing));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            next(&mut c, &path, 10),
            Ok(None),
            "empty files are not sent"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[7u8; 25]).unwrap();
        assert_eq!(sync(&mut c, &path, &mut server, 10), 3);
        f.write_all(b"\0\xff tail").unwrap();
        assert_eq!(sync(&mut c, &path, &mut server, 10), 1);
        assert_eq!(server, std::fs::read(&path).unwrap());
        assert_eq!(c.shipped(), 32);
    }

    #[test]
    fn truncation_replacement_and_rewrite_restart_from_zero() {
        let (dir, path) = scratch();
        let mut c = Cursor::default();
        let mut server = Vec::new();
        std::fs::write(&path, b"first version of the log\n").unwrap();
        sync(&mut c, &path, &mut server, 1024);

        // Truncated in place and regrown past the cursor: same inode, larger.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(b"SECOND version, longer than the first one\n")
            .unwrap();
        drop(f);
        sync(&mut c, &path, &mut server, 1024);
        assert_eq!(server, std::fs::read(&path).unwrap());

        // Shrunk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(6)
            .unwrap();
        sync(&mut c, &path, &mut server, 1024);
        assert_eq!(server, b"SECOND");

        // Replaced by rename with a new inode.
        let other = dir.path().join("new");
        std::fs::write(&other, b"third").unwrap();
        std::fs::rename(&other, &path).unwrap();
        sync(&mut c, &path, &mut server, 1024);
        assert_eq!(server, b"third");

        // Rewritten in place at the same size (ks.cfg edited by %pre).
        std::fs::write(&path, b"thing").unwrap();
        sync(&mut c, &path, &mut server, 1024);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"THI", 0).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
            .unwrap();
        drop(f);
        assert_eq!(sync(&mut c, &path, &mut server, 1024), 1);
        assert_eq!(server, b"THIng");

        // Emptied: the server copy is emptied too.
        std::fs::write(&path, b"").unwrap();
        assert_eq!(sync(&mut c, &path, &mut server, 1024), 1);
        assert!(server.is_empty());
    }

    #[test]
    fn the_tail_spans_chunks_shorter_than_it() {
        // Many short appends: the kept tail must be the last 64 bytes
        // across them, so a rewrite inside that window is still seen.
        let (_dir, path) = scratch();
        let mut c = Cursor::default();
        let mut server = Vec::new();
        for i in 0..40u8 {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .unwrap();
            f.write_all(&[b'a' + i % 26; 5]).unwrap();
            sync(&mut c, &path, &mut server, 1024);
        }
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"X", c.shipped() - 40).unwrap();
        drop(f);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"grown").unwrap();
        sync(&mut c, &path, &mut server, 1024);
        assert_eq!(server, std::fs::read(&path).unwrap());
    }

    #[test]
    fn offsets_beyond_4_gib() {
        // A sparse 5 GiB file whose first 5 GiB the server already has: the
        // next chunk starts past 2^32 and holds only the new bytes.
        let (_dir, path) = scratch();
        let f = std::fs::File::create(&path).unwrap();
        let five_gib = 5u64 << 30;
        f.set_len(five_gib).unwrap();
        let meta = f.metadata().unwrap();
        let mut c = Cursor {
            identity: Some(Identity::of(&meta)),
            shipped: five_gib,
            tail: [0; TAIL],
            tail_len: TAIL,
            modified: None,
            handle: None,
        };
        drop(f);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"past 4 GiB\n")
            .unwrap();
        let (ch, data) = next(&mut c, &path, 256 * 1024).unwrap().unwrap();
        assert_eq!(
            (ch.offset, data.as_slice(), ch.restart),
            (five_gib, &b"past 4 GiB\n"[..], false)
        );
        c.commit(&ch, &data);
        assert_eq!(c.shipped(), five_gib + 11);
        assert_eq!(next(&mut c, &path, 256 * 1024), Ok(None));
    }

    #[test]
    fn shipped_bytes_are_read_again_only_from_the_same_file() {
        let (dir, path) = scratch();
        let mut c = Cursor::default();
        let mut server = Vec::new();
        std::fs::write(&path, b"0123456789abcdef").unwrap();
        sync(&mut c, &path, &mut server, 1024);
        let mut buf = Vec::new();
        let ch = c.shipped_bytes_at(&path, 10, 4, &mut buf).unwrap().unwrap();
        assert_eq!(
            (ch.offset, buf.as_slice(), ch.restart),
            (10, &b"abcd"[..], false)
        );
        assert_eq!(c.shipped_bytes_at(&path, 16, 4, &mut buf), Ok(None));
        let other = dir.path().join("other");
        std::fs::write(&other, b"0123456789ABCDEF").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(c.shipped_bytes_at(&path, 10, 4, &mut buf), Ok(None));
    }

    #[test]
    fn a_file_with_nothing_new_is_not_opened() {
        // Each open raises IN_OPEN (seen here through notify): a pass over
        // unchanged files must not open them.
        use notify::event::{AccessKind, EventKind};
        use notify::Watcher;
        let (_dir, path) = scratch();
        std::fs::write(&path, b"shipped already\n").unwrap();
        let mut c = Cursor::default();
        let (ch, data) = next(&mut c, &path, 1024).unwrap().unwrap();
        c.commit(&ch, &data);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::INotifyWatcher::new(tx, notify::Config::default()).unwrap();
        watcher
            .watch(&path, notify::RecursiveMode::NonRecursive)
            .unwrap();
        assert_eq!(next(&mut c, &path, 1024), Ok(None));
        // A marker: its append opens the file once, then modifies it. An
        // open by the cursor would come before the marker's.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        let mut opens = 0;
        loop {
            let ev = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("the marker's events")
                .unwrap();
            match ev.kind {
                EventKind::Access(AccessKind::Open(_)) => opens += 1,
                EventKind::Modify(_) => break,
                _ => {}
            }
        }
        assert_eq!(
            opens, 1,
            "the cursor opened a file it had nothing to read from"
        );
        assert_eq!(next(&mut c, &path, 1024).unwrap().unwrap().1, b"new\n");
    }

    #[test]
    fn a_busy_file_is_opened_once_until_released() {
        use notify::event::{AccessKind, EventKind};
        use notify::Watcher;
        let (_dir, path) = scratch();
        std::fs::write(&path, b"first\n").unwrap();
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::INotifyWatcher::new(tx, notify::Config::default()).unwrap();
        watcher
            .watch(&path, notify::RecursiveMode::NonRecursive)
            .unwrap();
        let mut c = Cursor::default();
        let mut server = Vec::new();
        for i in 0..5 {
            (&f).write_all(format!("line {i}\n").as_bytes()).unwrap();
            assert_eq!(sync(&mut c, &path, &mut server, 1024), 1);
        }
        c.release();
        (&f).write_all(b"after the release\n").unwrap();
        assert_eq!(sync(&mut c, &path, &mut server, 1024), 1);
        // Events arrive in order: once the marker (a chmod, whose event is
        // never merged with the writes') is in, every open before it is.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let mut opens = 0;
        loop {
            let ev = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("the marker's event")
                .unwrap();
            match ev.kind {
                EventKind::Access(AccessKind::Open(_)) => opens += 1,
                EventKind::Modify(notify::event::ModifyKind::Metadata(_)) => break,
                _ => {}
            }
        }
        drop(watcher);
        assert_eq!(server, std::fs::read(&path).unwrap());
        // The writer opened it before the watch; the cursor once for five
        // reads, and once more after letting go.
        assert_eq!(opens, 2, "opens seen by inotify");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let mut buf = Vec::new();
        assert_eq!(
            Cursor::default().next_chunk(Path::new("/"), 10, &mut buf),
            Err(Problem::NotRegular("directory"))
        );
        assert_eq!(
            Cursor::default().next_chunk(Path::new("/dev/zero"), 10, &mut buf),
            Err(Problem::NotRegular("character device"))
        );
        let (_dir, fifo) = scratch();
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert_eq!(
            Cursor::default().next_chunk(&fifo, 10, &mut buf),
            Err(Problem::NotRegular("FIFO"))
        );
    }
}
