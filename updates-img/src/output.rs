//! Never leave a half-written image under the output name: write a temporary
//! file beside it (same directory, so same filesystem), sync, then rename.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn temp_name(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("--out {}: not a file name", out.display())))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(out.with_file_name(tmp))
}

/// Runs `fill` on a fresh temporary file, then renames it to `out`. On any
/// failure the temporary file is removed and `out` is left as it was.
pub fn write_atomically(out: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = temp_name(out)?;
    let io = |what: &str, path: &Path| {
        let (what, path) = (what.to_string(), path.to_path_buf());
        move |source| Error::Io { what, path, source }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    let result = fill(&mut file)
        .and_then(|()| file.sync_all().map_err(io("sync", &tmp)))
        .and_then(|()| fs::rename(&tmp, out).map_err(io("rename temporary file to", out)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn failure_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let out = dir.join("u.img");
        fs::write(&out, b"old").unwrap();
        let r = write_atomically(&out, |f| {
            f.write_all(b"partial").unwrap();
            Err(Error::Usage("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&out).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
        write_atomically(&out, |f| {
            f.write_all(b"new").map_err(|e| Error::Io {
                what: "w".into(),
                path: out.clone(),
                source: e,
            })
        })
        .unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
    }
}
