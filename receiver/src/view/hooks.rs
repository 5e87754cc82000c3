//! `--on-state-change COMMAND`: told, not watched. A thread of its own
//! reads the view's index of the log directory (the one the pages read),
//! and when a system
//! turns **failed**, **stalled** or **finished** runs COMMAND through
//! `/bin/sh -c` with what happened in its environment:
//!
//! - `ANAMON_SYSTEM`: the system's name (an upload's checked name);
//! - `ANAMON_STATE`: `failed`, `stalled` or `finished`;
//! - `ANAMON_REASON`: why (`FILE:LINE what: the line`, control characters
//!   shown as symbols: it is text from a log);
//! - `ANAMON_STAGE`: the stage, if the logs say one;
//! - `ANAMON_LINK`: the system's page, `--view-url` (or the view's
//!   address) + `/s/NAME`.
//!
//! Nothing is put into the command line itself, so no log text can reach a
//! shell. Once per change: each change is a marker file created with
//! `O_EXCL` in the log directory's `.anamon%state/` (a name no upload can
//! make), named by the system, its install (the earliest creation time of
//! its files: a reinstall writes new files), the state and, for a stall,
//! the stage. The receiver that creates the marker runs the command; any
//! other receiver sharing the directory, or this one after a restart, finds
//! it there and does not.

use super::index::{self, SharedIndex, SystemView};
use super::text;
use crate::rpc::Service;
use crate::server::Stop;
use crate::sys::{self, Fd};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::state::State;

/// The hidden directory of markers: `%` is outside the names uploads may
/// use, so no system directory can take its place.
pub const MARKERS: &str = ".anamon%state";
/// How often the directory is looked at (the index itself refreshes no
/// more often than its cost allows).
const EVERY: Duration = Duration::from_secs(1);
/// A command running longer is killed (and logged).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an empty crash dump may wait for its first bytes.
const DUMP_SETTLE_S: i64 = 5;

/// What `--on-state-change` runs, and where its links point.
#[derive(Debug, Clone)]
pub struct Hook {
    pub command: String,
    /// `http://host:port`, no trailing slash.
    pub link_base: String,
}

/// Starts the hook's thread; it stops with the receiver.
pub fn start(
    hook: Hook,
    service: Arc<Service>,
    index: SharedIndex,
    window: i64,
    stop: Stop,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || run(&hook, &service, &index, window, &stop))
}

/// Looks for changes until the receiver stops (SIGTERM/SIGINT).
fn run(hook: &Hook, service: &Service, index: &SharedIndex, window: i64, stop: &Stop) {
    let dir = service.store.fd();
    // Changes already handled by this receiver (a marker exists).
    let mut seen: HashSet<String> = HashSet::new();
    while !*stop.borrow() {
        let now = now();
        // Derived under the lock, acted on after it: a command may take a
        // minute, and the pages must not wait for it.
        let systems = index::with_refreshed(index, dir, |ix| ix.systems(now, window));
        for v in systems {
            if !matches!(v.state, State::Failed | State::Stalled | State::Finished)
                || unsettled(&v, now)
            {
                continue;
            }
            let Some(key) = change_key(dir, &v) else {
                continue;
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            match claim(dir, &key) {
                Ok(true) => fire(hook, &v),
                Ok(false) => {} // another receiver, or an earlier run, did
                Err(e) => info!(
                    "hook: cannot create the marker {MARKERS}/{key} in the log directory: {e}; \
                     the command is not run for {} {}",
                    v.name,
                    v.state.name()
                ),
            }
        }
        std::thread::sleep(EVERY);
    }
}

/// The marker's name for `v`'s change: `NAME@INSTALL.STATE[.STAGE]`.
fn change_key(dir: &Fd, v: &SystemView) -> Option<String> {
    let install = install_id(&sys::fd_path(dir).join(&v.name))?;
    let mut key = format!("{}@{install}.{}", v.name, v.state.name());
    if v.state == State::Stalled {
        if let Some(p) = &v.progress {
            key.push('.');
            key.extend(
                p.stage
                    .name()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
            );
        }
    }
    Some(key)
}

/// Which install of a system this is, the same for every receiver reading
/// the directory: the earliest creation time of its files (`statx` birth
/// time), or where the file system keeps none, the smallest inode number.
fn install_id(system: &Path) -> Option<String> {
    let (mut born, mut ino) = (None::<u128>, None::<u64>);
    for entry in std::fs::read_dir(system).ok()?.filter_map(Result::ok) {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if let Some(t) = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            born = born.min(Some(t.as_nanos())).or(Some(t.as_nanos()));
        }
        use std::os::unix::fs::MetadataExt;
        ino = ino.min(Some(meta.ino())).or(Some(meta.ino()));
    }
    match (born, ino) {
        (Some(b), _) => Some(format!("b{b}")),
        (None, Some(i)) => Some(format!("i{i}")),
        (None, None) => None,
    }
}

/// Creates the marker `key`; false if it exists already.
fn claim(dir: &Fd, key: &str) -> io::Result<bool> {
    let markers: PathBuf = sys::fd_path(dir).join(MARKERS);
    match std::fs::create_dir(&markers) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(markers.join(key))
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn fire(hook: &Hook, v: &SystemView) {
    let reason = v
        .reasons
        .first()
        .map(|r| match &r.found {
            Some(f) => format!("{}:{} {}: {}", r.file, f.line, r.why, text::plain(&f.text)),
            None => format!("{} {}", r.file, r.why),
        })
        .unwrap_or_else(|| match v.state {
            State::Stalled => "no new line within the window".to_string(),
            _ => String::new(),
        });
    let stage = v.progress.map(|p| p.stage.name()).unwrap_or("");
    let link = format!("{}/s/{}", hook.link_base, v.name);
    let started = Instant::now();
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&hook.command)
        .env("ANAMON_SYSTEM", &v.name)
        .env("ANAMON_STATE", v.state.name())
        .env("ANAMON_REASON", &reason)
        .env("ANAMON_STAGE", stage)
        .env("ANAMON_LINK", &link)
        .stdin(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            info!(
                "hook: {} {}: cannot run /bin/sh -c for --on-state-change: {e}",
                v.name,
                v.state.name()
            );
            return;
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.to_string(),
            Ok(None) if started.elapsed() < COMMAND_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("killed after {} s", COMMAND_TIMEOUT.as_secs());
            }
            Err(e) => break format!("lost ({e})"),
        }
    };
    info!(
        "hook: {} turned {}: --on-state-change ran, {status}",
        v.name,
        v.state.name()
    );
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A verdict the next pass may still change, so not yet worth a call:
/// bytes not read yet, or a crash dump that its upload has made but not
/// yet written (the system is failed from the file's name alone; the
/// command should get the dump's first line as the reason). A dump that
/// stays empty is reported after [`DUMP_SETTLE_S`].
fn unsettled(v: &SystemView, now: i64) -> bool {
    v.unscanned > 0
        || v.files.iter().any(|f| {
            f.name.starts_with(super::rules::CRASH_DUMP_PREFIX)
                && f.size == 0
                && now.saturating_sub(f.mtime) < DUMP_SETTLE_S
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::index::FileView;

    fn system(files: &[(&str, u64, i64)], unscanned: u64) -> SystemView {
        SystemView {
            name: "s1".into(),
            state: State::Failed,
            reasons: Vec::new(),
            progress: None,
            started: 0,
            files: files
                .iter()
                .map(|&(name, size, mtime)| FileView {
                    name: name.into(),
                    size,
                    mtime,
                })
                .collect(),
            bytes: files.iter().map(|f| f.1).sum(),
            last_upload: files.iter().map(|f| f.2).max().unwrap_or(0),
            unscanned,
            omitted_files: 0,
        }
    }

    /// The upload that makes a crash dump writes it just after; a pass in
    /// between saw "failed" with no line (ci/test, receiver/tests/hooks.rs
    /// once): the command waits for the dump's bytes.
    #[test]
    fn a_verdict_waits_for_a_new_dump_and_for_unread_bytes() {
        let now = 1_000;
        assert!(unsettled(&system(&[("anaconda-tb-x1", 0, now)], 0), now));
        assert!(!unsettled(&system(&[("anaconda-tb-x1", 90, now)], 0), now));
        assert!(!unsettled(
            &system(&[("anaconda-tb-x1", 0, now - DUMP_SETTLE_S)], 0),
            now
        ));
        assert!(unsettled(&system(&[("anaconda.log", 90, now)], 40), now));
        assert!(!unsettled(&system(&[("anaconda.log", 0, now)], 0), now));
    }
}
