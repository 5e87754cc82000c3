//! The few system calls tests make that std does not offer, through nix's
//! safe wrappers: signals, sessions, FIFOs, locks, TCP resets.

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::net::TcpStream;
use std::path::Path;

pub use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

/// Sends `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), sig);
}

/// The session and process group of `pid` (0: this process).
pub fn session_and_group(pid: u32) -> (i32, i32) {
    let p = Some(Pid::from_raw(pid as i32)).filter(|_| pid != 0);
    (
        nix::unistd::getsid(p).unwrap().as_raw(),
        nix::unistd::getpgid(p).unwrap().as_raw(),
    )
}

pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Takes an exclusive flock and a POSIX write lock on the whole file, as an
/// installer holding its log open might.
pub fn lock_both_ways(file: std::fs::File) -> impl Drop {
    let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let lk = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as _,
        l_whence: nix::libc::SEEK_SET as _,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&*locked, nix::fcntl::FcntlArg::F_SETLK(&lk)).unwrap();
    locked
}

/// Closes with a TCP reset rather than a FIN (SO_LINGER 0).
pub fn reset(conn: TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        &conn,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(conn);
}
