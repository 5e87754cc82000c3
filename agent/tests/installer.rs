//! What installers do that plain log shipping does not meet: files that
//! appear under directories that do not exist yet, a target file system
//! mounted over a watched directory, generated names (`ks-script-*.log`).

use anamon_testkit::*;
use std::time::Duration;

const CURRENT: &str = "4.0.0b7";
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn glob_picks_up_files_as_they_appear() {
    let dir = Scratch::new("glob");
    let peer = Peer::start(CURRENT, &dir);
    let pattern = dir.path("ks-script-*.log");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", pattern.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    let a = dir.path("ks-script-abc123.log");
    let b = dir.path("ks-script-zz.log");
    append(&a, b"%pre script output\n");
    peer.assert_mirrors("ks-script-abc123.log", &a, LIMIT);
    append(&b, &binary_bytes(4000, 2));
    append(&a, b"more\n");
    peer.assert_mirrors("ks-script-zz.log", &b, LIMIT);
    peer.assert_mirrors("ks-script-abc123.log", &a, LIMIT);
    append(&dir.path("ks-script-x.log.old"), b"not matched\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer.stored("ks-script-x.log.old"), None);
    agent.assert_running();
}

#[test]
fn file_under_a_directory_created_later() {
    let dir = Scratch::new("later-dir");
    let peer = Peer::start(CURRENT, &dir);
    let log = dir.path("sysimage/root/install.log");
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", log.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(dir.path("sysimage")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    std::fs::create_dir(dir.path("sysimage/root")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    append(&log, b"Installing bash-5.1-6.el9.x86_64\n");
    peer.assert_mirrors("install.log", &log, LIMIT);
    append(&log, b"Installing kernel\n");
    peer.assert_mirrors("install.log", &log, LIMIT);
    agent.assert_running();
}

/// The target is mounted over /mnt/sysimage after the agent started: a
/// watch placed on the directory underneath would never hear of the files
/// written into the new file system.
#[test]
fn target_mounted_over_a_watched_directory() {
    let dir = Scratch::new("mount");
    let peer = Peer::start(CURRENT, &dir);
    let sysimage = dir.path("sysimage");
    std::fs::create_dir(&sysimage).unwrap();
    let log = sysimage.join("root/install.log");
    let boot_log = sysimage.join("boot/grub/grub.conf");
    let spec = format!("{} {}", log.display(), boot_log.display());
    let mut agent = Agent::start(peer.port, &dir, &["--watchfile", &spec]);
    std::thread::sleep(Duration::from_millis(300));
    let _root = Mount::tmpfs(&sysimage);
    std::fs::create_dir_all(sysimage.join("root")).unwrap();
    std::fs::create_dir_all(sysimage.join("boot")).unwrap();
    append(&log, b"package 1\n");
    peer.assert_mirrors("install.log", &log, LIMIT);
    // A second file system mounted inside the first (/boot), in pieces.
    let _boot = Mount::tmpfs(&sysimage.join("boot"));
    std::fs::create_dir_all(sysimage.join("boot/grub")).unwrap();
    append(&boot_log, b"default=0\n");
    peer.assert_mirrors("grub.conf", &boot_log, LIMIT);
    append(&log, b"package 2\n");
    peer.assert_mirrors("install.log", &log, LIMIT);
    assert!(agent.log_text().contains("file events from inotify"));
    agent.assert_running();
}

/// A tmpfs mounted for the length of a test (we run as root).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path) -> Mount {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {} failed", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
