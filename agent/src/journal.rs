//! On systemd installers (RHEL7 and later) much of the story is only in the
//! journal. `journalctl --follow` writes it to a file in /tmp, and the file
//! is shipped like any other log, so the file stays the only buffer and
//! nothing about delivery is special.

use std::path::{Path, PathBuf};

/// The journal's name on the server.
pub const ALIAS: &str = "journal.log";
/// Where the stream is written: the installer's RAM-backed /tmp, as
/// Anaconda's own logs are.
const STREAM_FILE: &str = "/tmp/anamon-journal.log";
const JOURNALCTL: &[&str] = &["/usr/bin/journalctl", "/bin/journalctl"];

/// A running `journalctl --follow`; stopped when dropped.
pub struct Journal {
    pid: libc::pid_t,
    path: PathBuf,
}

impl Journal {
    /// Starts streaming this boot's journal, from its start, if this system
    /// runs systemd-journald; `Ok(None)` where it does not.
    pub fn start() -> std::io::Result<Option<Journal>> {
        if !Path::new("/run/systemd/journal").is_dir() {
            return Ok(None);
        }
        let Some(journalctl) = JOURNALCTL.iter().find(|p| Path::new(p).exists()) else {
            return Ok(None);
        };
        let out = std::fs::File::create(STREAM_FILE)?;
        let pid = crate::sys::spawn_to_file(
            &[
                journalctl,
                "--boot",
                "--follow",
                "--no-tail",
                "--no-pager",
                "--output=short-precise",
            ],
            &out,
        )?;
        Ok(Some(Journal {
            pid,
            path: PathBuf::from(STREAM_FILE),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        crate::sys::stop_child(self.pid);
    }
}
