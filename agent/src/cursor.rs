//! A cursor over one watched file: which file it is (device, inode), how many
//! of its bytes the server has, and what to send next.
//!
//! The file on disk is the only buffer: the cursor holds no data, so a server
//! that is down for an hour costs no memory, and a restart of the agent
//! costs one resend.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes of the shipped tail kept to notice a file that was rewritten in
/// place and has since grown past the cursor (same inode, larger size).
const TAIL: usize = 64;

/// Which file: a path that is replaced by a rename or delete-and-create
/// points at another inode, whose bytes the server does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

/// What the server holds of a file.
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    identity: Option<Identity>,
    shipped: u64,
    tail: Vec<u8>,
    /// The file's mtime when the last shipped bytes were read: a file of
    /// the same size with another mtime was rewritten in place.
    modified: Option<Mtime>,
}

/// Seconds and nanoseconds.
type Mtime = (i64, i64);

/// Why a file cannot be read now. Each is reported once, when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    NotRegular(&'static str),
    Unreadable(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => f.write_str("does not exist (yet)"),
            Problem::NotRegular(kind) => write!(f, "is a {kind}, not a regular file; not shipped"),
            Problem::Unreadable(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

/// The next bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub identity: Identity,
    pub modified: Mtime,
    pub offset: u64,
    pub data: Vec<u8>,
    /// The server's copy must be rewritten from the start: the file was
    /// replaced, truncated or rewritten. Offset 0 makes Cobbler truncate.
    pub restart: bool,
}

impl Cursor {
    pub fn shipped(&self) -> u64 {
        self.shipped
    }

    /// Reads the next chunk of at most `max` bytes the server does not have,
    /// or `None` when it has everything. Nothing changes until [`commit`].
    ///
    /// [`commit`]: Cursor::commit
    pub fn next_chunk(&self, path: &Path, max: usize) -> Result<Option<Chunk>, Problem> {
        // A stat first, because most files of a pass have not changed: it
        // raises no inotify event, where every open raises IN_OPEN (notify
        // watches for it) and wakes notify's thread for nothing. It also
        // keeps the agent from ever opening a FIFO or a device.
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Problem::Missing,
            _ => Problem::Unreadable(e.to_string()),
        })?;
        check_regular(&meta)?;
        if self.has_nothing_to_send(&meta) {
            return Ok(None);
        }
        // O_NONBLOCK: opening a FIFO must not hang the agent; the type is
        // checked on the open descriptor, so a swap after the check is seen.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Problem::Missing,
                _ => Problem::Unreadable(e.to_string()),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Problem::Unreadable(e.to_string()))?;
        check_regular(&meta)?;
        let identity = Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let size = meta.len();
        let modified = (meta.mtime(), meta.mtime_nsec());

        if self.has_nothing_to_send(&meta) {
            return Ok(None);
        }
        let same_file = self.identity == Some(identity) && size >= self.shipped;
        // Same size, another mtime: rewritten in place (or touched), so the
        // whole file is sent again below.
        if same_file && size > self.shipped {
            // The last bytes shipped must still be there, else the file was
            // rewritten in place: read them apart from the new bytes, so the
            // new bytes need no copying.
            let keep = self.tail.len();
            let tail = read_at(&file, self.shipped - keep as u64, keep)?;
            if tail == self.tail {
                let data = read_at(&file, self.shipped, max.min(to_usize(size - self.shipped)))?;
                if data.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Chunk {
                    identity,
                    modified,
                    offset: self.shipped,
                    data,
                    restart: false,
                }));
            }
            // The bytes the server has are no longer the file's: rewritten.
        }
        let data = read_at(&file, 0, max.min(to_usize(size)))?;
        if data.is_empty() && self.shipped == 0 {
            // Never ship an empty file; but an emptied one is shipped as
            // empty, so the server's copy matches the disk.
            return Ok(None);
        }
        Ok(Some(Chunk {
            identity,
            modified,
            offset: 0,
            data,
            restart: true,
        }))
    }

    /// Whether the file may hold bytes the server lacks, by a stat alone
    /// (no open, so no inotify event). A file that cannot be stat'ed may:
    /// the next [`next_chunk`] says what is wrong with it.
    ///
    /// [`next_chunk`]: Cursor::next_chunk
    pub fn may_have_news(&self, path: &Path) -> bool {
        std::fs::metadata(path).map_or(true, |meta| !self.has_nothing_to_send(&meta))
    }

    /// Whether there is nothing to send: the server has this very file (same
    /// inode, size and mtime) up to its end, or the file is empty and the
    /// server has nothing (empty files are never sent).
    fn has_nothing_to_send(&self, meta: &Metadata) -> bool {
        (meta.len() == 0 && self.shipped == 0)
            || self.identity
                == Some(Identity {
                    dev: meta.dev(),
                    ino: meta.ino(),
                })
                && meta.len() == self.shipped
                && self.modified == Some((meta.mtime(), meta.mtime_nsec()))
    }

    /// Records that the server has stored `chunk`.
    pub fn commit(&mut self, chunk: &Chunk) {
        if chunk.restart {
            self.tail.clear();
        }
        self.identity = Some(chunk.identity);
        self.modified = Some(chunk.modified);
        self.shipped = chunk.offset + chunk.data.len() as u64;
        if chunk.data.len() >= TAIL {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk.data[chunk.data.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(&chunk.data);
            let excess = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..excess);
        }
    }
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

/// Reads up to `len` bytes at `offset`; fewer only at end of file.
/// `pread`: one call where seek-and-read takes two.
fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, Problem> {
    let mut buf = vec![0; len];
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
    Ok(buf)
}

/// A watched file: where it is, what the server calls it, and its cursor.
#[derive(Debug)]
pub struct WatchedFile {
    pub path: PathBuf,
    pub alias: String,
    pub cursor: Cursor,
    /// The problem last reported, so each is logged once.
    pub problem: Option<Problem>,
    /// When an upload last gave the server all the file had (see
    /// `--min-interval`); `None` while a backlog remains.
    pub caught_up: Option<std::time::Instant>,
}

impl WatchedFile {
    pub fn new(path: PathBuf, alias: String) -> WatchedFile {
        WatchedFile {
            path,
            alias,
            cursor: Cursor::default(),
            problem: None,
            caught_up: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p =
                std::env::temp_dir().join(format!("anamon-cursor-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_file(&p);
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Drains the file through the cursor the way the shipper does and
    /// applies each chunk to a model of the server's copy.
    fn sync(c: &mut Cursor, path: &Path, server: &mut Vec<u8>, max: usize) -> usize {
        let mut n = 0;
        while let Some(ch) = c.next_chunk(path, max).unwrap() {
            if ch.offset == 0 {
                server.clear();
            }
            server.truncate(ch.offset as usize);
            assert_eq!(server.len() as u64, ch.offset, "gap in upload");
            server.extend_from_slice(&ch.data);
            c.commit(&ch);
            n += 1;
        }
        n
    }

    #[test]
    fn ships_only_new_bytes_in_bounded_chunks() {
        let t = Tmp::new("grow");
        let mut c = Cursor::default();
        let mut server = Vec::new();
        assert_eq!(c.next_chunk(&t.0, 10), Err(Problem::Missing));
        std::fs::write(&t.0, b"").unwrap();
        assert_eq!(c.next_chunk(&t.0, 10), Ok(None), "empty files are not sent");
        let mut f = std::fs::OpenOptions::new().append(true).open(&t.0).unwrap();
        f.write_all(&[7u8; 25]).unwrap();
        assert_eq!(sync(&mut c, &t.0, &mut server, 10), 3);
        f.write_all(b"\0\xff tail").unwrap();
        assert_eq!(sync(&mut c, &t.0, &mut server, 10), 1);
        assert_eq!(server, std::fs::read(&t.0).unwrap());
        assert_eq!(c.shipped(), 32);
    }

    #[test]
    fn truncation_replacement_and_rewrite_restart_from_zero() {
        let t = Tmp::new("rewrite");
        let mut c = Cursor::default();
        let mut server = Vec::new();
        std::fs::write(&t.0, b"first version of the log\n").unwrap();
        sync(&mut c, &t.0, &mut server, 1024);

        // Truncated in place and regrown past the cursor: same inode, larger.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&t.0)
            .unwrap();
        f.write_all(b"SECOND version, longer than the first one\n")
            .unwrap();
        drop(f);
        sync(&mut c, &t.0, &mut server, 1024);
        assert_eq!(server, std::fs::read(&t.0).unwrap());

        // Shrunk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&t.0)
            .unwrap()
            .set_len(6)
            .unwrap();
        sync(&mut c, &t.0, &mut server, 1024);
        assert_eq!(server, b"SECOND");

        // Replaced by rename with a new inode.
        let other = Tmp::new("rewrite-new");
        std::fs::write(&other.0, b"third").unwrap();
        std::fs::rename(&other.0, &t.0).unwrap();
        sync(&mut c, &t.0, &mut server, 1024);
        assert_eq!(server, b"third");

        // Rewritten in place at the same size (ks.cfg edited by %pre).
        std::fs::write(&t.0, b"thing").unwrap();
        sync(&mut c, &t.0, &mut server, 1024);
        let f = std::fs::OpenOptions::new().write(true).open(&t.0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"THI", 0).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
            .unwrap();
        drop(f);
        assert_eq!(sync(&mut c, &t.0, &mut server, 1024), 1);
        assert_eq!(server, b"THIng");

        // Emptied: the server copy is emptied too.
        std::fs::write(&t.0, b"").unwrap();
        assert_eq!(sync(&mut c, &t.0, &mut server, 1024), 1);
        assert!(server.is_empty());
    }

    #[test]
    fn offsets_beyond_4_gib() {
        // A sparse 5 GiB file whose first 5 GiB the server already has: the
        // next chunk starts past 2^32 and holds only the new bytes.
        let t = Tmp::new("big");
        let f = std::fs::File::create(&t.0).unwrap();
        let five_gib = 5u64 << 30;
        f.set_len(five_gib).unwrap();
        let meta = f.metadata().unwrap();
        let mut c = Cursor {
            identity: Some(Identity {
                dev: meta.dev(),
                ino: meta.ino(),
            }),
            shipped: five_gib,
            tail: vec![0; TAIL],
            modified: None,
        };
        drop(f);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&t.0)
            .unwrap()
            .write_all(b"past 4 GiB\n")
            .unwrap();
        let ch = c.next_chunk(&t.0, CHUNK_FOR_TESTS).unwrap().unwrap();
        assert_eq!(
            (ch.offset, ch.data.as_slice(), ch.restart),
            (five_gib, &b"past 4 GiB\n"[..], false)
        );
        c.commit(&ch);
        assert_eq!(c.shipped(), five_gib + 11);
        assert_eq!(c.next_chunk(&t.0, CHUNK_FOR_TESTS), Ok(None));
    }

    const CHUNK_FOR_TESTS: usize = 256 * 1024;

    #[test]
    fn a_file_with_nothing_new_is_not_opened() {
        // Each open raises IN_OPEN, which notify watches for: a pass over
        // unchanged files must not wake notify's thread once per file.
        let t = Tmp::new("no-open");
        std::fs::write(&t.0, b"shipped already\n").unwrap();
        let mut c = Cursor::default();
        let ch = c.next_chunk(&t.0, 1024).unwrap().unwrap();
        c.commit(&ch);
        let path = std::ffi::CString::new(t.0.to_str().unwrap()).unwrap();
        // SAFETY: plain syscalls on a descriptor this test owns.
        let events = unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            assert!(libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_OPEN) >= 0);
            assert_eq!(c.next_chunk(&t.0, 1024), Ok(None));
            let mut buf = [0u8; 256];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n
        };
        assert_eq!(
            events, -1,
            "the cursor opened a file it had nothing to read from"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&t.0)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(c.next_chunk(&t.0, 1024).unwrap().unwrap().data, b"new\n");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        assert_eq!(
            Cursor::default().next_chunk(Path::new("/"), 10),
            Err(Problem::NotRegular("directory"))
        );
        assert_eq!(
            Cursor::default().next_chunk(Path::new("/dev/zero"), 10),
            Err(Problem::NotRegular("character device"))
        );
        let t = Tmp::new("fifo");
        let c = std::ffi::CString::new(t.0.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            Cursor::default().next_chunk(&t.0, 10),
            Err(Problem::NotRegular("FIFO"))
        );
    }
}
