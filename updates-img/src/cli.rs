//! The command line. Parsing only: `main` turns `Args` into a `Request`.

use std::path::PathBuf;

use argh::FromArgs;

use crate::{Format, Request, Result};

/// Build an updates.img carrying the anamon agent, reproducibly and without root.
///
/// ext2 (RHEL 4-6 loaders, which copy the image to /tmp/updates): the agent
/// is anamon/anamon.ARCH in the image, /tmp/updates/anamon/anamon.ARCH at run
/// time. cpio (gzip newc, dracut installers RHEL 7+, overlaid on /): the agent
/// is usr/libexec/anamon/anamon.ARCH, the same path at run time.
/// Times come from SOURCE_DATE_EPOCH, else 0.
#[derive(FromArgs, Debug, PartialEq)]
pub struct Args {
    /// image format: ext2 or cpio
    #[argh(option)]
    pub format: Format,

    /// path of the image to write (built beside it, then renamed into place)
    #[argh(option)]
    pub out: PathBuf,

    /// ARCH=PATH: add the agent built for ARCH (x86_64, i386, i586, i686,
    /// aarch64, ppc64le, ppc64, s390x) at its documented path, mode 0755;
    /// repeatable
    #[argh(option)]
    pub agent: Vec<String>,

    /// SRC=DEST: add file SRC at DEST inside the image, keeping its mode;
    /// parent directories are created with mode 0755; repeatable
    #[argh(option)]
    pub add: Vec<String>,

    /// ext2 only: exact image size in KiB (default: content plus ~5%)
    #[argh(option)]
    pub size_kib: Option<u64>,
}

impl Args {
    pub fn into_request(self, timestamp: u32) -> Result<Request> {
        Ok(Request {
            format: self.format,
            out: self.out,
            agents: self
                .agent
                .iter()
                .map(|s| crate::parse_agent(s))
                .collect::<Result<_>>()?,
            adds: self
                .add
                .iter()
                .map(|s| crate::parse_add(s))
                .collect::<Result<_>>()?,
            size_kib: self.size_kib,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Args, argh::EarlyExit> {
        Args::from_args(&["updates-img"], args)
    }

    #[test]
    fn full_command_line() {
        let a = parse(&[
            "--format",
            "ext2",
            "--out",
            "u.img",
            "--agent",
            "x86_64=a",
            "--agent",
            "i686=b",
            "--add",
            "s=d/e",
            "--size-kib",
            "2048",
        ])
        .unwrap();
        assert_eq!(a.format, Format::Ext2);
        assert_eq!(a.agent, vec!["x86_64=a", "i686=b"]);
        let r = a.into_request(7).unwrap();
        assert_eq!(r.size_kib, Some(2048));
        assert_eq!(r.adds, vec![("s".into(), "d/e".to_string())]);
        assert_eq!(r.timestamp, 7);
    }

    #[test]
    fn required_and_bad_values() {
        assert!(parse(&["--out", "x"]).is_err());
        let e = parse(&["--format", "squashfs", "--out", "x"]).unwrap_err();
        assert!(e.output.contains("ext2 or cpio"), "{}", e.output);
        assert!(parse(&["--format", "cpio", "--out", "x", "--size-kib", "big"]).is_err());
        assert!(parse(&["--help"]).unwrap_err().status.is_ok());
    }
}
