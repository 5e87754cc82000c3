//! The system calls std does not offer: directory-relative opens that never
//! follow symlinks, `fdatasync`, signal flags, `poll`. Every `unsafe` block
//! of the receiver is here.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub type Fd = OwnedFd;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(ret: libc::c_int) -> io::Result<Fd> {
    // SAFETY: `ret` is a descriptor the kernel just returned to us, owned by
    // nothing else.
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by path (the log directory, once at start).
pub fn open_dir(path: &Path) -> io::Result<Fd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a NUL-terminated path and constant flags.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens the directory `name` below `dir`; ELOOP/ENOTDIR if it is a
/// symlink or not a directory.
pub fn open_dir_below(dir: &Fd, name: &CStr) -> io::Result<Fd> {
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Creates the directory `name` below `dir`; Ok(false) if it existed.
pub fn mkdir_below(dir: &Fd, name: &CStr) -> io::Result<bool> {
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    match check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens the existing file `name` below `dir` for writing, never following
/// a symlink and never blocking on a FIFO; `None` if there is no such name.
pub fn open_file_below(dir: &Fd, name: &CStr) -> io::Result<Option<Fd>> {
    let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a valid directory descriptor, a NUL-terminated name, constant
    // flags.
    match owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the file `name` (0644) below `dir` and opens it for writing;
/// `None` if the name exists already (another writer made it first).
pub fn create_file_below(dir: &Fd, name: &CStr) -> io::Result<Option<Fd>> {
    let flags = libc::O_RDWR
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | libc::O_CLOEXEC
        | libc::O_CREAT
        | libc::O_EXCL;
    // SAFETY: a valid directory descriptor, a NUL-terminated name, constant
    // flags and mode.
    match owned(unsafe {
        libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o644 as libc::c_uint)
    }) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `fd` (statvfs's `f_bavail` blocks of `f_frsize` bytes).
pub fn available_bytes(fd: &Fd) -> io::Result<u64> {
    // SAFETY: `st` is plain data that fstatvfs fills in completely on
    // success.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        check(libc::fstatvfs(fd.as_raw_fd(), &mut st))?;
        st
    };
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

pub fn fstat(fd: &Fd) -> io::Result<libc::stat> {
    // SAFETY: `st` is plain data that fstat fills in completely on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd.as_raw_fd(), &mut st))?;
        Ok(st)
    }
}

fn file_offset(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

/// Runs a read or write call until it is not interrupted by a signal.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn fsync(fd: &Fd) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// A path naming an open directory, for std's `read_dir`.
pub fn fd_path(fd: &Fd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens the file `name` below `dir` for reading only (the live view),
/// never following a symlink and never blocking on a FIFO.
pub fn open_read_below(dir: &Fd, name: &CStr) -> io::Result<Fd> {
    // SAFETY: a valid directory descriptor, a NUL-terminated name, constant
    // flags.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })
}

/// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the
/// file.
pub fn pread_full(fd: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let off = file_offset(offset + done as u64)?;
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable slice of `rest.len()` bytes.
        let n = retry_eintr(|| unsafe {
            libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), off)
        })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
