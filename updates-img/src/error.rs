//! One error type; every variant prints as a single line a user can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A malformed argument: bad `ARCH=PATH`, `SRC=DEST`, unknown format, …
    Usage(String),
    /// An input file that cannot be used (missing, not a regular file, wrong ELF).
    Input { path: PathBuf, why: String },
    /// A path inside the image that the format cannot hold.
    BadDest { dest: String, why: String },
    /// `--size-kib` is smaller than the content needs.
    TooSmall { need_kib: u64, given_kib: u64 },
    /// The content does not fit an ext2 this writer makes at all.
    TooLarge(String),
    /// Reading or writing failed.
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Input { path, why } => write!(f, "input {}: {why}", path.display()),
            Error::BadDest { dest, why } => write!(f, "image path {dest:?}: {why}"),
            Error::TooSmall { need_kib, given_kib } => write!(
                f,
                "image too small: --size-kib {given_kib} but the content needs at least {need_kib} KiB \
                 (omit --size-kib to size the image automatically)"
            ),
            Error::TooLarge(m) => write!(f, "{m}"),
            Error::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
