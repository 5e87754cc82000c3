//! Helpers for driving the built `updates-img` and the system tools that
//! judge its output (e2fsck, debugfs, GNU cpio: see ../APT-PACKAGES).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_updates-img");

/// A fresh directory under cargo's per-target temp dir, named after the test.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("updates-img-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A file that passes the tool's ELF check for `machine` (62 = x86_64,
/// 3 = i386, 183 = aarch64, 21 = ppc64), followed by `len` bytes of noise.
pub fn fake_elf(class: u8, machine: u16, len: usize, seed: u64) -> Vec<u8> {
    let mut v = noise(len, seed);
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = class;
    v[5] = 1;
    v[18..20].copy_from_slice(&machine.to_le_bytes());
    v
}

pub fn write_file(path: &Path, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `updates-img` in `dir` with `args`; SOURCE_DATE_EPOCH as given.
pub fn run_in(dir: &Path, args: &[&str], epoch: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir).args(args);
    match epoch {
        Some(e) => c.env("SOURCE_DATE_EPOCH", e),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    c.output().expect("run updates-img")
}

pub fn ok(out: &Output) -> String {
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "updates-img failed: {}\nstdout: {so}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// Asserts failure with exactly one stderr line containing `needle`.
pub fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure containing {needle:?}, got success"
    );
    assert_eq!(err.lines().count(), 1, "error is not one line: {err:?}");
    assert!(
        err.starts_with("updates-img: error: ") || err.contains(needle),
        "{err:?}"
    );
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

/// Finds a system tool on PATH or in the sbin directories (e2fsprogs lives
/// there and they are not on every user's PATH). Missing tools fail loudly:
/// CI installs them from updates-img/APT-PACKAGES.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: install the packages in updates-img/APT-PACKAGES (apt-get install -y $(cat updates-img/APT-PACKAGES))");
}

pub fn sh(prog: &Path, args: &[&OsStr], dir: &Path) -> Output {
    Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", prog.display()))
}

/// `debugfs -R REQUEST IMG`, returning stdout.
pub fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new(tool("debugfs"))
        .arg("-R")
        .arg(request)
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs -R {request:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `e2fsck -fn IMG` must exit 0 (nothing to fix).
pub fn e2fsck_clean(img: &Path) {
    let out = Command::new(tool("e2fsck"))
        .arg("-fn")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(0),
        "e2fsck -fn {} exited {:?}:\n{}{}",
        img.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
