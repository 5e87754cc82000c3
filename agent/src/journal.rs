//! On systemd installers (RHEL7 and later) much of the story is only in the
//! journal. `journalctl --follow` writes it to a file in /tmp, and the file
//! is shipped like any other log, so the file stays the only buffer and
//! nothing about delivery is special.

use std::path::{Path, PathBuf};

/// The journal's name on the server.
pub(crate) const ALIAS: &str = "journal.log";

/// Where journald and journalctl are, and where the stream goes.
struct Setup<'a> {
    /// Exists where systemd-journald runs.
    journal_dir: &'a str,
    journalctl: &'a [&'a str],
    /// The installer's RAM-backed /tmp, as Anaconda's own logs are.
    stream_dir: &'a str,
}

const SYSTEM: Setup<'static> = Setup {
    journal_dir: "/run/systemd/journal",
    journalctl: &["/usr/bin/journalctl", "/bin/journalctl"],
    stream_dir: "/tmp",
};

/// A running `journalctl --follow`; stopped, and its file removed, when
/// dropped.
pub(crate) struct Journal {
    pid: libc::pid_t,
    path: PathBuf,
}

impl Journal {
    /// Starts streaming this boot's journal, from its start, if this system
    /// runs systemd-journald; `Ok(None)` where it does not.
    pub(crate) fn start() -> std::io::Result<Option<Journal>> {
        Journal::start_with(&SYSTEM)
    }

    fn start_with(setup: &Setup<'_>) -> std::io::Result<Option<Journal>> {
        if !Path::new(setup.journal_dir).is_dir() {
            return Ok(None);
        }
        let Some(journalctl) = setup.journalctl.iter().find(|p| Path::new(p).exists()) else {
            return Ok(None);
        };
        // Named for this agent and created anew, so a second agent (the
        // first boot's, a test's) neither writes into nor removes this one.
        // A file of that name is a dead agent's: no live one has our pid.
        let path =
            Path::new(setup.stream_dir).join(format!("anamon-journal-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
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
        );
        match pid {
            Ok(pid) => Ok(Some(Journal { pid, path })),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        crate::sys::stop_child(self.pid);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_this_agents_own_file_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let fake = dir.path().join("journalctl");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"journal line $*\"\nexec sleep 30\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // Streams of other agents: an older agent's fixed name, another pid.
        let others = [
            dir.path().join("anamon-journal.log"),
            dir.path()
                .join(format!("anamon-journal-{}.log", std::process::id() + 1)),
        ];
        for o in &others {
            std::fs::write(o, "another agent's stream\n").unwrap();
        }
        let fake = fake.to_str().unwrap();
        let setup = Setup {
            journal_dir: root,
            journalctl: &[fake],
            stream_dir: root,
        };
        let journal = Journal::start_with(&setup)
            .unwrap()
            .expect("a journal here");
        let ours = journal.path().to_path_buf();
        assert_eq!(
            ours.file_name().unwrap().to_str().unwrap(),
            format!("anamon-journal-{}.log", std::process::id())
        );
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&ours).unwrap();
            if !text.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(text.starts_with("journal line --boot --follow"), "{text:?}");
        drop(journal);
        assert!(!ours.exists(), "the stream file outlived its agent");
        for o in &others {
            assert_eq!(
                std::fs::read_to_string(o).unwrap(),
                "another agent's stream\n"
            );
        }
        // Where there is no journald, nothing is started.
        let none = Setup {
            journal_dir: "/nonexistent",
            ..setup
        };
        assert!(Journal::start_with(&none).unwrap().is_none());
    }
}
