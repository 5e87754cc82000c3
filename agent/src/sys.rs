//! Everything that needs `unsafe`: the wake-up pipe, signal handlers, and
//! detaching from the installer. Each block says why it is sound.
//!
//! Only system calls that exist on Linux 2.6.9 are used here (`pipe`, not
//! `pipe2`; `poll`, not `ppoll`; `fcntl` for flags), because this is the path
//! every kernel takes.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// Set by SIGTERM, SIGINT and SIGHUP.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// The write end of the wake-up pipe, for the signal handler.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

pub fn shutdown_requested() -> bool {
    SHUTDOWN.load(Ordering::SeqCst)
}

/// A self-pipe: anything that wants the main loop to look again (a signal, a
/// file event from notify's thread) writes a byte; the loop sleeps in
/// `poll(2)` on the read end. One mechanism that works on every kernel and
/// costs no wake-ups while nothing happens.
pub struct WakePipe {
    read: RawFd,
    write: RawFd,
}

/// What ended a [`WakePipe::wait`].
pub struct Woke {
    /// The extra descriptor reported a change.
    pub extra: bool,
}

/// A handle that can wake the main loop from another thread.
#[derive(Clone, Copy)]
pub struct Waker(RawFd);

impl Waker {
    pub fn wake(&self) {
        wake_fd(self.0);
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
    pub fn new() -> io::Result<WakePipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            set_flags(fd)?;
        }
        Ok(WakePipe {
            read: fds[0],
            write: fds[1],
        })
    }

    pub fn waker(&self) -> Waker {
        Waker(self.write)
    }

    /// Sleeps until woken, until `extra` (if any) reports an exceptional
    /// condition (POLLPRI/POLLERR: how /proc/mounts signals a mount), or
    /// until `timeout` passes (`None`: no limit); then empties the pipe.
    pub fn wait(&self, timeout: Option<Duration>, extra: Option<RawFd>) -> Woke {
        let ms = timeout.map_or(-1, |t| {
            i32::try_from(t.as_millis().max(1)).unwrap_or(i32::MAX)
        });
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
        ];
        // SAFETY: a valid array of pollfds and its length. A negative fd is
        // ignored by poll(2). EINTR (a signal) returns early, which is what a
        // shutdown signal wants.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            return Woke { extra: false };
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 256];
            // SAFETY: reading into a valid buffer of the given length from
            // our own non-blocking descriptor.
            while unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        Woke {
            extra: fds[1].revents & (libc::POLLPRI | libc::POLLERR) != 0,
        }
    }

    /// Routes SIGTERM, SIGINT and SIGHUP to this pipe: the handler only sets
    /// a flag and writes a byte, both async-signal-safe.
    pub fn catch_shutdown_signals(&self) -> io::Result<()> {
        WAKE_FD.store(self.write, Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is a valid starting point; the
            // handler is an `extern "C"` fn that touches only atomics and
            // write(2). No SA_RESTART: poll(2) must return on a signal.
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

extern "C" fn on_shutdown_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        wake_fd(fd);
    }
    if IN_FLIGHT.load(Ordering::SeqCst) {
        abort_connections();
    }
}

/// Set while an HTTP request runs.
static IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// Marks an HTTP request in flight for as long as it lives.
pub struct RequestInFlight(());

impl RequestInFlight {
    pub fn begin() -> RequestInFlight {
        IN_FLIGHT.store(true, Ordering::SeqCst);
        RequestInFlight(())
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        IN_FLIGHT.store(false, Ordering::SeqCst);
    }
}

/// The highest descriptor [`abort_connections`] looks at: the agent holds a
/// handful (stdio, the wake pipe, inotify, one HTTP connection).
const MAX_FD: libc::c_int = 256;

/// Ends the request in flight so a shutdown signal is answered within the
/// grace period even when the server hangs: a blocked read, write or connect
/// would otherwise retry through EINTR until its timeout. The agent's only
/// sockets are its HTTP connections, so shutting down every socket is exactly
/// that; on other descriptors shutdown(2) fails with ENOTSOCK and does
/// nothing. shutdown(2) is async-signal-safe, and the flush that follows
/// opens a fresh connection.
fn abort_connections() {
    for fd in 3..MAX_FD {
        // SAFETY: shutdown(2) takes plain integers; see above for why every
        // descriptor may be passed.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

/// Non-blocking and close-on-exec, set with fcntl(2) so it works before
/// Linux 2.6.27 (no `pipe2`).
fn set_flags(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0
            || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0
            || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Detaches from the caller: fork, `setsid`, fork again (so the daemon can
/// never acquire a controlling terminal), `chdir /`, and stdin to /dev/null,
/// stdout and stderr to `log` (or /dev/null). The caller's process exits 0
/// at once, so a kickstart `%pre` that starts the agent returns.
///
/// Must run before any thread exists: only the calling thread survives fork.
pub fn daemonize(log: Option<&Path>) -> io::Result<()> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = match log {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?,
        None => devnull.try_clone()?,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: single-threaded at this point (documented precondition), so
    // fork(2) duplicates a consistent process; the parent and the middle
    // child leave with _exit(2), running no destructors or atexit handlers
    // that the daemon also owns. dup2 targets are the standard descriptors.
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
        if libc::dup2(devnull.as_raw_fd(), 0) < 0
            || libc::dup2(out.as_raw_fd(), 1) < 0
            || libc::dup2(out.as_raw_fd(), 2) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The running kernel's release (`uname -r`), for the start-up log line.
pub fn kernel_release() -> String {
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

/// Points stderr at `path` (appending): `--log` in the foreground.
pub fn redirect_stderr(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // SAFETY: dup2 onto the standard error descriptor from one we own.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `argv[0]` (an absolute path) with stdout to `out` and stdin and
/// stderr to /dev/null; the child receives SIGTERM when the agent dies, even
/// by SIGKILL. Returns its pid. fork+exec by hand costs a few hundred bytes
/// where `std::process` costs tens of KiB of the size budget.
///
/// Call before any thread exists: the child of a multi-threaded fork may
/// only make async-signal-safe calls, and this one does, but it is simplest
/// to keep the rule of [`daemonize`].
pub fn spawn_to_file(argv: &[&str], out: &std::fs::File) -> io::Result<libc::pid_t> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
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
pub fn stop_child(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child; status is a valid int.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spawned_child_writes_to_the_file_and_is_reaped() {
        let path = std::env::temp_dir().join(format!("anamon-spawn-{}", std::process::id()));
        let out = std::fs::File::create(&path).unwrap();
        let pid =
            super::spawn_to_file(&["/bin/sh", "-c", "echo streamed; exec sleep 30"], &out).unwrap();
        let mut seen = String::new();
        for _ in 0..200 {
            seen = std::fs::read_to_string(&path).unwrap();
            if !seen.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen, "streamed\n");
        super::stop_child(pid);
        // Reaped: the pid no longer names our child.
        assert_eq!(
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) },
            -1
        );
        std::fs::remove_file(&path).unwrap();
    }
}
