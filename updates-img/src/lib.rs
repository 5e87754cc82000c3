//! Builds `updates.img` for Red Hat-family installers, carrying the anamon
//! agent (and any extra files), without root, loop devices or mke2fs.
//!
//! Two formats, because installers read two:
//! - `ext2` for the loaders of RHEL 4–6, which loop-mount the image and copy
//!   it to `/tmp/updates/`. The agent sits at `anamon/anamon.ARCH` in the
//!   image, so at run time at `/tmp/updates/anamon/anamon.ARCH`.
//! - `cpio` (gzip newc) for dracut installers (RHEL 7 and later), which unpack
//!   it into `/updates` and copy that over the installer root before
//!   switching to it. The agent sits at `usr/libexec/anamon/anamon.ARCH`,
//!   so at run time at `/usr/libexec/anamon/anamon.ARCH`. Not under `/tmp`:
//!   the installer image enables systemd's `tmp.mount` (lorax's
//!   runtime-postinstall template), whose tmpfs would hide anything dracut
//!   copied into the root's `/tmp`.
//!
//! See README.md for the reasoning and the snippet that finds the agent.

#![forbid(unsafe_code)]

pub mod cli;
pub mod cpio;
pub mod error;
pub mod ext2;
pub mod output;
pub mod tree;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};
use tree::{File, Tree};

/// Architectures the agent is built for, as installers name them (`uname -m`).
pub const ARCHES: &[&str] = &[
    "x86_64", "i386", "i586", "i686", "aarch64", "ppc64le", "ppc64", "s390x",
];

/// Where the agent goes inside each kind of image.
pub const EXT2_AGENT_DIR: &str = "anamon";
pub const CPIO_AGENT_DIR: &str = "usr/libexec/anamon";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ext2,
    Cpio,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ext2" => Ok(Format::Ext2),
            "cpio" => Ok(Format::Cpio),
            _ => Err(format!("unknown format {s:?}: use ext2 or cpio")),
        }
    }
}

impl Format {
    /// The agent's path inside the image.
    pub fn agent_path(self, arch: &str) -> String {
        match self {
            Format::Ext2 => format!("{EXT2_AGENT_DIR}/anamon.{arch}"),
            Format::Cpio => format!("{CPIO_AGENT_DIR}/anamon.{arch}"),
        }
    }
    /// Where a path inside the image ends up in the running installer.
    pub fn runtime_path(self, inside: &str) -> String {
        match self {
            Format::Ext2 => format!("/tmp/updates/{inside}"),
            Format::Cpio => format!("/{inside}"),
        }
    }
}

/// What to build, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub format: Format,
    pub out: PathBuf,
    pub agents: Vec<(String, PathBuf)>,
    pub adds: Vec<(PathBuf, String)>,
    pub size_kib: Option<u64>,
    pub timestamp: u32,
}

/// ELF class, data encoding and machine each architecture's agent must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn name(self) -> &'static str {
        match self {
            Endian::Little => "little",
            Endian::Big => "big",
        }
    }
}

fn elf_identity(arch: &str) -> (u8, Endian, u16) {
    match arch {
        "x86_64" => (2, Endian::Little, 62),
        "i386" | "i586" | "i686" => (1, Endian::Little, 3),
        "aarch64" => (2, Endian::Little, 183),
        "ppc64le" => (2, Endian::Little, 21),
        "ppc64" => (2, Endian::Big, 21),
        "s390x" => (2, Endian::Big, 22),
        _ => unreachable!("arch validated by parse_agent"),
    }
}

fn check_elf(arch: &str, path: &Path, data: &[u8]) -> Result<()> {
    let bad = |why: String| Error::Input {
        path: path.to_path_buf(),
        why,
    };
    if data.len() < 20 || &data[..4] != b"\x7fELF" {
        return Err(bad(format!(
            "not an ELF executable, so not an anamon build for {arch}"
        )));
    }
    let (class, endian, machine) = elf_identity(arch);
    let got_endian = if data[5] == 1 {
        Endian::Little
    } else {
        Endian::Big
    };
    let got = match got_endian {
        Endian::Little => u16::from_le_bytes([data[18], data[19]]),
        Endian::Big => u16::from_be_bytes([data[18], data[19]]),
    };
    if data[4] != class || got_endian != endian || got != machine {
        return Err(bad(format!(
            "ELF class {} / machine {got} / {} endian does not match {arch} (want class {class}, machine {machine}, {} endian)",
            data[4],
            got_endian.name(),
            endian.name()
        )));
    }
    Ok(())
}

/// Parses `ARCH=PATH`.
pub fn parse_agent(s: &str) -> Result<(String, PathBuf)> {
    let (arch, path) = s
        .split_once('=')
        .ok_or_else(|| Error::Usage(format!("--agent {s:?}: expected ARCH=PATH, e.g. x86_64=target/x86_64-unknown-linux-musl/release/anamon")))?;
    if !ARCHES.contains(&arch) {
        return Err(Error::Usage(format!(
            "--agent {s:?}: unknown ARCH {arch:?}; one of {}",
            ARCHES.join(", ")
        )));
    }
    if path.is_empty() {
        return Err(Error::Usage(format!("--agent {s:?}: PATH is empty")));
    }
    Ok((arch.to_string(), PathBuf::from(path)))
}

/// Parses `SRC=DEST` (split at the first `=`; DEST is a path inside the image).
pub fn parse_add(s: &str) -> Result<(PathBuf, String)> {
    let (src, dest) = s.split_once('=').ok_or_else(|| {
        Error::Usage(format!(
            "--add {s:?}: expected SRC=DEST, e.g. snippets/run.sh=anamon/run.sh"
        ))
    })?;
    if src.is_empty() || dest.is_empty() {
        return Err(Error::Usage(format!(
            "--add {s:?}: SRC and DEST must both be non-empty"
        )));
    }
    tree::split_dest(dest)?;
    Ok((PathBuf::from(src), dest.to_string()))
}

/// `SOURCE_DATE_EPOCH` if set (and non-empty), else 0 (1970-01-01).
pub fn timestamp_from(value: Option<&OsStr>) -> Result<u32> {
    let Some(v) = value else { return Ok(0) };
    let v = v.to_string_lossy();
    let v = v.trim();
    if v.is_empty() {
        return Ok(0);
    }
    v.parse::<u32>().map_err(|_| {
        Error::Usage(format!(
            "SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds between 0 and {}",
            u32::MAX
        ))
    })
}

fn read_input(path: &Path) -> Result<(Vec<u8>, u32)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Input {
        path: path.into(),
        why: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(Error::Input {
            path: path.into(),
            why: "is not a regular file".into(),
        });
    }
    let data = std::fs::read(path).map_err(|e| Error::Input {
        path: path.into(),
        why: e.to_string(),
    })?;
    use std::os::unix::fs::PermissionsExt;
    Ok((data, meta.permissions().mode() & 0o7777))
}

/// Reads every input into the image tree.
pub fn collect(req: &Request) -> Result<Tree> {
    if req.agents.is_empty() && req.adds.is_empty() {
        return Err(Error::Usage(
            "nothing to put in the image: give at least one --agent or --add".into(),
        ));
    }
    if req.size_kib.is_some() && req.format == Format::Cpio {
        return Err(Error::Usage(
            "--size-kib applies to --format ext2 only".into(),
        ));
    }
    let mut tree = Tree::default();
    for (i, (arch, path)) in req.agents.iter().enumerate() {
        if req.agents[..i].iter().any(|(a, _)| a == arch) {
            return Err(Error::Usage(format!("--agent {arch}=… given twice")));
        }
        let (data, _) = read_input(path)?;
        check_elf(arch, path, &data)?;
        tree.insert(&req.format.agent_path(arch), File { data, perm: 0o755 })?;
    }
    for (src, dest) in &req.adds {
        let (data, perm) = read_input(src)?;
        tree.insert(dest, File { data, perm })?;
    }
    Ok(tree)
}

/// What was written, for the one line `main` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub bytes: u64,
    pub agents: Vec<String>,
}

/// Builds the image described by `req` at `req.out`.
pub fn build(req: &Request) -> Result<Built> {
    let tree = collect(req)?;
    match req.format {
        Format::Ext2 => {
            let opts = ext2::Options {
                timestamp: req.timestamp,
                size_kib: req.size_kib,
            };
            output::write_atomically(&req.out, |f| ext2::write(&tree, &opts, f).map(|_| ()))?;
        }
        Format::Cpio => {
            output::write_atomically(&req.out, |f| {
                let mut w = std::io::BufWriter::new(f);
                cpio::write_gz(&tree, req.timestamp, &mut w)
                    .and_then(|_| std::io::Write::flush(&mut w))
                    .map_err(|e| Error::Io {
                        what: "write".into(),
                        path: req.out.clone(),
                        source: e,
                    })
            })?;
        }
    }
    let bytes = std::fs::metadata(&req.out).map(|m| m.len()).unwrap_or(0);
    let agents = req
        .agents
        .iter()
        .map(|(arch, _)| {
            format!(
                "{arch} at {}",
                req.format.runtime_path(&req.format.agent_path(arch))
            )
        })
        .collect();
    Ok(Built { bytes, agents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_and_add_syntax() {
        assert_eq!(
            parse_agent("x86_64=a/b").unwrap(),
            ("x86_64".into(), "a/b".into())
        );
        assert!(parse_agent("sparc=a")
            .unwrap_err()
            .to_string()
            .contains("unknown ARCH"));
        assert!(parse_agent("x86_64")
            .unwrap_err()
            .to_string()
            .contains("ARCH=PATH"));
        assert!(parse_agent("x86_64=").is_err());
        assert_eq!(parse_add("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_add("a").unwrap_err().to_string().contains("SRC=DEST"));
        assert!(parse_add("=b").is_err());
        assert!(parse_add("a=../b").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_from(None).unwrap(), 0);
        assert_eq!(timestamp_from(Some(OsStr::new(""))).unwrap(), 0);
        assert_eq!(
            timestamp_from(Some(OsStr::new("1700000000"))).unwrap(),
            1_700_000_000
        );
        assert!(timestamp_from(Some(OsStr::new("-1"))).is_err());
        assert!(timestamp_from(Some(OsStr::new("soon"))).is_err());
    }

    #[test]
    fn elf_machine_must_match_arch() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        assert!(check_elf("x86_64", Path::new("a"), &elf).is_ok());
        assert!(check_elf("aarch64", Path::new("a"), &elf).is_err());
        assert!(check_elf("i686", Path::new("a"), &elf).is_err());
        assert!(check_elf("x86_64", Path::new("a"), b"#!/bin/sh\n echo hello there").is_err());
    }

    #[test]
    fn big_endian_arches_need_big_endian_elf() {
        // EM_PPC64 (21) is the machine of both ppc64 and ppc64le: only the
        // data encoding tells them apart.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 2;
        elf[19] = 21;
        assert!(check_elf("ppc64", Path::new("a"), &elf).is_ok());
        assert!(check_elf("ppc64le", Path::new("a"), &elf).is_err());
        elf[19] = 22;
        assert!(check_elf("s390x", Path::new("a"), &elf).is_ok());
        elf[5] = 1;
        elf[18] = 22;
        elf[19] = 0;
        assert!(check_elf("s390x", Path::new("a"), &elf).is_err());
        elf[18] = 21;
        assert!(check_elf("ppc64le", Path::new("a"), &elf).is_ok());
        assert!(check_elf("ppc64", Path::new("a"), &elf).is_err());
    }

    #[test]
    fn runtime_paths() {
        assert_eq!(
            Format::Ext2.runtime_path(&Format::Ext2.agent_path("i686")),
            "/tmp/updates/anamon/anamon.i686"
        );
        assert_eq!(
            Format::Cpio.runtime_path(&Format::Cpio.agent_path("x86_64")),
            "/usr/libexec/anamon/anamon.x86_64"
        );
    }
}
