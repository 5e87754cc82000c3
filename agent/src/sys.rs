//! Everything that needs `unsafe`: the wake-up pipe, signal handlers, the
//! agent's own abortable sockets, descriptor hygiene and daemonising. Each
//! block says why it is sound.
//!
//! Only system calls that exist on Linux 2.6.9 are used here (`pipe`, not
//! `pipe2`; `poll`, not `ppoll`; `socket` without `SOCK_CLOEXEC`; `fcntl` for
//! flags), because this is the path every kernel takes.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Where the agent is in its life, as the signal handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Running = 0,
    /// A shutdown signal came: the agent's own connections are aborted and
    /// no new one may be opened, so whatever request was about to start or
    /// was in flight ends at once, wherever the signal fell.
    Stopping = 1,
    /// The final flush runs: connections are allowed again, bounded by the
    /// flush's own deadline; further signals change nothing.
    Flushing = 2,
}

static PHASE: AtomicU8 = AtomicU8::new(Phase::Running as u8);
/// The write end of the wake-up pipe, for the signal handler.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

fn phase() -> Phase {
    match PHASE.load(Ordering::SeqCst) {
        0 => Phase::Running,
        1 => Phase::Stopping,
        _ => Phase::Flushing,
    }
}

/// A shutdown signal (SIGTERM, SIGINT, SIGHUP) has arrived.
pub(crate) fn shutdown_requested() -> bool {
    phase() != Phase::Running
}

/// Starts the final flush: from now on the agent may connect again.
pub(crate) fn begin_final_flush() {
    PHASE.store(Phase::Flushing as u8, Ordering::SeqCst);
}

/// A self-pipe: anything that wants the main loop to look again (a signal)
/// writes a byte; the loop sleeps in
/// `poll(2)` on the read end. One mechanism that works on every kernel and
/// costs no wake-ups while nothing happens.
pub(crate) struct WakePipe {
    read: RawFd,
    write: RawFd,
}

/// What ended a [`WakePipe::wait`].
pub(crate) struct Woke {
    /// The extra descriptor reported a change.
    pub extra: bool,
    /// The event descriptor (inotify) has something to read.
    pub events: bool,
}

/// An inotify instance, read by the main loop itself: no thread of its
/// own, so an event costs one wake-up, and an event the loop has no use for
/// is one it asked not to get (see `events`). `inotify_init1` needs Linux
/// 2.6.27; before it the caller polls, as it did with notify.
pub(crate) struct Inotify {
    fd: std::os::fd::OwnedFd,
}

/// One inotify event: the watch it came from, what happened, and for a
/// directory's watch the name of the entry inside it.
pub(crate) struct InotifyEvent<'a> {
    pub wd: i32,
    pub mask: u32,
    pub name: &'a std::ffi::OsStr,
}

impl Inotify {
    pub(crate) fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created and own from here.
        Ok(Inotify {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Watches `path` (through a symlink) for the events in `mask`; a file
    /// watched already keeps its watch (and descriptor), which reports
    /// `mask` from now on instead of what it did.
    pub(crate) fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated path that lives across the call.
        let wd = unsafe { libc::inotify_add_watch(self.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Ends a watch. A watch already gone (its file deleted) is no error
    /// worth reporting.
    pub(crate) fn rm_watch(&self, wd: i32) {
        // SAFETY: plain integers.
        unsafe {
            libc::inotify_rm_watch(self.as_raw_fd(), wd);
        }
    }

    /// Reads every queued event, in as few reads as the buffer allows, and
    /// hands each to `each`. A read that left room for the longest event
    /// took all there was: no second read just to hear `EAGAIN` (one
    /// syscall per wake-up saved; what comes later makes the descriptor
    /// readable again).
    pub(crate) fn read_events(&self, buf: &mut [u8], mut each: impl FnMut(InotifyEvent<'_>)) {
        use std::os::unix::ffi::OsStrExt;
        const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
        // The longest event: a header and a name of NAME_MAX (255) bytes
        // with its NUL.
        const LONGEST: usize = HEAD + 256;
        loop {
            // SAFETY: reading into a valid buffer of the given length from
            // our own non-blocking descriptor.
            let n = unsafe { libc::read(self.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else {
                return; // EAGAIN: all read (or EINTR: the loop looks again)
            };
            if n == 0 {
                return;
            }
            let mut at = 0;
            while at + HEAD <= n {
                // SAFETY: the kernel wrote a whole inotify_event header at
                // `at`; read_unaligned copes with the byte buffer's
                // alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let len = ev.len as usize;
                let name = buf.get(at + HEAD..at + HEAD + len).unwrap_or_default();
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                each(InotifyEvent {
                    wd: ev.wd,
                    mask: ev.mask,
                    name: std::ffi::OsStr::from_bytes(name),
                });
                at += HEAD + len;
            }
            if n + LONGEST <= buf.len() {
                return;
            }
        }
    }
}

fn wake_fd(fd: RawFd) {
    // SAFETY: writing one byte from a valid buffer; write(2) is
    // async-signal-safe. A full pipe (EAGAIN) already guarantees a wake-up.
    unsafe {
        libc::write(fd, b"!".as_ptr().cast(), 1);
    }
}

impl WakePipe {
    pub(crate) fn new() -> io::Result<WakePipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            set_cloexec(fd)?;
            set_nonblocking(fd)?;
        }
        Ok(WakePipe {
            read: fds[0],
            write: fds[1],
        })
    }

    /// Sleeps until woken, until `extra` (if any) reports an exceptional
    /// condition (POLLPRI/POLLERR: how /proc/mounts signals a mount), or
    /// until `timeout` passes (`None`: no limit); then empties the pipe.
    pub(crate) fn wait(
        &self,
        timeout: Option<Duration>,
        extra: Option<RawFd>,
        events: Option<RawFd>,
    ) -> Woke {
        let mut fds = [
            libc::pollfd {
                fd: self.read,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: extra.unwrap_or(-1),
                events: libc::POLLPRI,
                revents: 0,
            },
            libc::pollfd {
                fd: events.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a valid array of pollfds and its length. A negative fd is
        // ignored by poll(2). EINTR (a signal) returns early, which is what a
        // shutdown signal wants.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                poll_ms(timeout),
            )
        };
        if n <= 0 {
            return Woke {
                extra: false,
                events: false,
            };
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 256];
            // SAFETY: reading into a valid buffer of the given length from
            // our own non-blocking descriptor.
            while unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        Woke {
            extra: fds[1].revents & (libc::POLLPRI | libc::POLLERR) != 0,
            events: fds[2].revents != 0,
        }
    }

    /// Routes SIGTERM, SIGINT and SIGHUP to this pipe and to the abort of
    /// the agent's connections: the handler touches only atomics and calls
    /// only write(2) and shutdown(2), both async-signal-safe.
    pub(crate) fn catch_shutdown_signals(&self) -> io::Result<()> {
        WAKE_FD.store(self.write, Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is a valid starting point; the
            // handler is an `extern "C"` fn that touches only atomics,
            // write(2) and shutdown(2). No SA_RESTART: poll(2) must return
            // on a signal.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_shutdown_signal as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Milliseconds for poll(2), rounded up, -1 for no timeout. Rounded down,
/// a wait for a file's due time would end up to a millisecond before it:
/// the pass then finds nothing due and the loop wakes a second time.
/// (In u64 parts: a u128 division would pull 128-bit division code into
/// the 32-bit agents.)
fn poll_ms(timeout: Option<Duration>) -> libc::c_int {
    timeout.map_or(-1, |t| {
        let ms = t
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(t.subsec_nanos().div_ceil(1_000_000)));
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    })
}

extern "C" fn on_shutdown_signal(_: libc::c_int) {
    // Only the first signal aborts: during the flush the agent's requests
    // are bounded by the flush's deadline, and must not be cut short.
    let first = PHASE
        .compare_exchange(
            Phase::Running as u8,
            Phase::Stopping as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok();
    if first {
        for slot in &OWN_SOCKETS {
            let fd = slot.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: shutdown(2) takes plain integers and is
                // async-signal-safe. The descriptor is one of the agent's
                // own sockets (see `OwnSocket`); if it was closed a moment
                // ago and its number reused, the new holder is again the
                // agent itself, whose connections are being aborted anyway,
                // or a file, where shutdown fails with ENOTSOCK.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
        }
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        wake_fd(fd);
    }
}

/// The agent's open HTTP connections: one at a time in practice, a few
/// slots so that a kept-alive connection in ureq's pool and a fresh one can
/// coexist. Inherited sockets are never here, so an abort never touches a
/// connection the installer shares with the agent.
static OWN_SOCKETS: [AtomicI32; 4] = [const { AtomicI32::new(-1) }; 4];

/// A socket of the agent's own, registered for the shutdown abort for as
/// long as it lives. Drop it before the socket is closed.
#[derive(Debug)]
pub(crate) struct OwnSocket {
    slot: usize,
}

impl Drop for OwnSocket {
    fn drop(&mut self) {
        OWN_SOCKETS[self.slot].store(-1, Ordering::SeqCst);
    }
}

impl OwnSocket {
    /// Registers `fd`. Fails when a shutdown signal has come and the flush
    /// has not begun: the request must not start. The order (publish the
    /// descriptor, then read the phase; the handler sets the phase, then
    /// reads the descriptors) leaves no moment where a signal finds no
    /// descriptor and the request still goes ahead.
    fn register(fd: RawFd) -> io::Result<OwnSocket> {
        let slot = OWN_SOCKETS
            .iter()
            .position(|s| {
                s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("more than 4 connections at once"))?;
        let own = OwnSocket { slot };
        if phase() == Phase::Stopping {
            return Err(interrupted());
        }
        Ok(own)
    }
}

fn interrupted() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "interrupted by a shutdown signal",
    )
}

/// Connects to `addr` within `timeout` on a socket registered for the
/// shutdown abort before `connect(2)` starts, so a signal ends even a
/// connect to a host that drops packets. std's `connect_timeout` would hand
/// over the socket only once connected. The socket stays non-blocking: the
/// caller waits with [`wait_ready`], which the abort also ends.
pub(crate) fn connect(addr: &SocketAddr, timeout: Duration) -> io::Result<(TcpStream, OwnSocket)> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) with constant arguments. Before Linux 2.6.27 the
    // flags draw EINVAL; musl then retries without them and sets both with
    // fcntl, so this is one call on new kernels and right on old ones.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own; from here the
    // TcpStream closes it on every path.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let own = OwnSocket::register(fd)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for `addr`'s family.
    let r = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        match poll_one(fd, libc::POLLOUT, Instant::now() + timeout)? {
            None => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            // Writable and nothing wrong: connected. Only a failure needs
            // the getsockopt that says which (one system call less per
            // upload; Cobbler closes every connection).
            Some(revents) if revents & (libc::POLLERR | libc::POLLHUP) == 0 => {}
            Some(_) => connect_result(fd)?,
        }
        if phase() == Phase::Stopping {
            return Err(interrupted());
        }
    }
    Ok((stream, own))
}

/// What [`wait_ready`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    Read,
    Write,
}

/// Waits until `fd` is ready (or hung up, or in error: the next call on it
/// says which) or `deadline` passes (`false`). A shutdown signal before the
/// final flush ends the wait with `Interrupted`; its abort of the agent's
/// sockets makes them ready, so the wait ends at once.
pub(crate) fn wait_ready(fd: RawFd, ready: Ready, deadline: Instant) -> io::Result<bool> {
    let events = match ready {
        Ready::Read => libc::POLLIN,
        Ready::Write => libc::POLLOUT,
    };
    Ok(poll_one(fd, events, deadline)?.is_some())
}

/// [`wait_ready`]'s wait: the events `fd` reported, or `None` when
/// `deadline` passed first.
fn poll_one(
    fd: RawFd,
    events: libc::c_short,
    deadline: Instant,
) -> io::Result<Option<libc::c_short>> {
    loop {
        if phase() == Phase::Stopping {
            return Err(interrupted());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, poll_ms(Some(left))) };
        match n {
            0 => {}
            n if n > 0 => return Ok(Some(pfd.revents)),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Why a non-blocking connect that poll(2) reported in error failed.
fn connect_result(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR fills one int; `len` says how big it is.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    match err {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all zeroes is valid,
    // and it is larger than and aligned for both sockaddr_in and
    // sockaddr_in6, so writing either through a cast pointer is sound.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets O_NONBLOCK with fcntl(2), which works before Linux 2.6.27.
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Closes every descriptor above 2, as daemon(7) asks: whatever the caller
/// left open (Python 2's subprocess, which runs RHEL 4–7's `%pre`, passes
/// every descriptor on) is not the agent's, and holding it open would keep
/// the installer's sockets and pipes alive for as long as the agent runs.
/// Call first thing in `main`, before the agent or std opens anything.
pub(crate) fn close_inherited_descriptors() {
    // /proc/self/fd names exactly the open ones; without /proc, every number
    // up to the descriptor limit is tried.
    let listed: Option<Vec<RawFd>> = std::fs::read_dir("/proc/self/fd").ok().map(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    });
    let fds = listed.unwrap_or_else(|| (3..descriptor_limit()).collect());
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: close(2) on numbers no Rust object of the agent owns yet
        // (nothing is open but stdio at this point); the read_dir handle in
        // the list is already closed, so its number just fails with EBADF.
        unsafe {
            libc::close(fd);
        }
    }
}

fn descriptor_limit() -> RawFd {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid struct.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    RawFd::try_from(cur.min(65536)).unwrap_or(1024)
}

/// Detaches from the caller: fork, `setsid`, fork again (so the daemon can
/// never acquire a controlling terminal), `chdir /`, and stdin to /dev/null,
/// stdout and stderr to `log` (or /dev/null). The caller's process exits 0
/// at once, so a kickstart `%pre` that starts the agent returns.
///
/// Must run before any thread exists: only the calling thread survives fork.
pub(crate) fn daemonize(log: Option<&Path>) -> io::Result<()> {
    let devnull = open_devnull()?;
    let out = match log {
        Some(p) => open_append(p)?,
        None => devnull.try_clone()?,
    };
    // SAFETY: single-threaded at this point (documented precondition), so
    // fork(2) duplicates a consistent process; the parent and the middle
    // child leave with _exit(2), running no destructors or atexit handlers
    // that the daemon also owns.
    unsafe {
        match libc::fork() {
            -1 => return Err(io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => return Err(io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (null_fd, out_fd) = (devnull.into_raw_fd(), out.into_raw_fd());
    let moved = dup_onto(null_fd, 0)
        .and_then(|()| dup_onto(out_fd, 1))
        .and_then(|()| dup_onto(out_fd, 2));
    // SAFETY: both are ours (taken from their Files above), closed once.
    unsafe {
        libc::close(null_fd);
        libc::close(out_fd);
    }
    moved
}

/// Points stderr at `path` (appending): `--log` in the foreground.
pub(crate) fn redirect_stderr(path: &Path) -> io::Result<()> {
    let fd = open_append(path)?.into_raw_fd();
    let moved = dup_onto(fd, 2);
    // SAFETY: ours (taken from the File above), closed once.
    unsafe {
        libc::close(fd);
    }
    moved
}

fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 onto a standard descriptor from one we own.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_devnull() -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The running kernel's release (`uname -r`), for the start-up log line.
pub(crate) fn kernel_release() -> String {
    // SAFETY: uname(2) fills a zeroed struct; the fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Starts `argv[0]` (an absolute path) with stdout to `out` and stdin and
/// stderr to /dev/null; the child receives SIGTERM when the agent dies, even
/// by SIGKILL. Returns its pid. fork+exec by hand costs a few hundred bytes
/// where `std::process` costs tens of KiB of the size budget.
///
/// Call before any thread exists: the child of a multi-threaded fork may
/// only make async-signal-safe calls, and this one does, but it is simplest
/// to keep the rule of [`daemonize`]. Every other descriptor of the agent is
/// close-on-exec (std opens files so, and the agent's own are set so), and
/// inherited ones were closed at start, so the child gets only these three.
pub(crate) fn spawn_to_file(argv: &[&str], out: &std::fs::File) -> io::Result<libc::pid_t> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let devnull = open_devnull()?;
    let (null_fd, out_fd) = (devnull.as_raw_fd(), out.as_raw_fd());
    // SAFETY: everything the child needs is prepared above; between fork
    // and exec it calls only dup2, prctl, execv and _exit, all
    // async-signal-safe, and never returns into Rust code.
    unsafe {
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                if libc::dup2(null_fd, 0) >= 0
                    && libc::dup2(out_fd, 1) >= 0
                    && libc::dup2(null_fd, 2) >= 0
                    && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0
                {
                    libc::execv(ptrs[0], ptrs.as_ptr());
                }
                libc::_exit(127)
            }
            pid => Ok(pid),
        }
    }
}

/// Stops a child from [`spawn_to_file`] and reaps it.
pub(crate) fn stop_child(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child; status is a valid int.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Whether `pid` names a child of ours that has not been reaped.
#[cfg(test)]
fn is_unreaped_child(pid: libc::pid_t) -> bool {
    // SAFETY: waitpid with WNOHANG and a null status pointer only queries.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) != -1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_never_ends_before_its_timeout() {
        let ms = |t: Duration| poll_ms(Some(t));
        assert_eq!(poll_ms(None), -1);
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(ms(Duration::from_nanos(1)), 1);
        assert_eq!(ms(Duration::from_millis(5)), 5);
        // A file due in 1899.6 ms: a 1899 ms poll would wake before it.
        assert_eq!(ms(Duration::from_micros(1_899_600)), 1900);
        assert_eq!(ms(Duration::from_secs(u64::MAX)), libc::c_int::MAX);
    }

    #[test]
    fn spawned_child_writes_to_the_file_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let out = std::fs::File::create(&path).unwrap();
        let pid = spawn_to_file(&["/bin/sh", "-c", "echo streamed; exec sleep 30"], &out).unwrap();
        let mut seen = String::new();
        for _ in 0..200 {
            seen = std::fs::read_to_string(&path).unwrap();
            if !seen.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(seen, "streamed\n");
        stop_child(pid);
        assert!(!is_unreaped_child(pid));
    }

    #[test]
    fn own_connections_connect_and_carry_data() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
            c.write_all(&b).unwrap();
        });
        let (mut s, own) = connect(&addr, Duration::from_secs(5)).unwrap();
        // Non-blocking, so the caller can wait for it with wait_ready.
        let mut b = [0u8; 4];
        assert_eq!(
            s.read(&mut b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        s.set_nonblocking(false).unwrap();
        assert_eq!(OWN_SOCKETS[own.slot].load(Ordering::SeqCst), {
            use std::os::fd::AsRawFd;
            s.as_raw_fd()
        });
        s.write_all(b"ping").unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        let slot = own.slot;
        drop(own);
        assert_eq!(OWN_SOCKETS[slot].load(Ordering::SeqCst), -1);
        server.join().unwrap();
        // Nothing listens on a port just freed: refused, not a hang.
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = connect(&gone, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
