//! A gzip-compressed newc (`070701`) cpio, the updates format of dracut-based
//! installers (RHEL 7 and later), which unpack it into `/updates` and copy
//! that over the installer's root.
//!
//! Entries are relative paths (no leading `/`), each directory before its
//! contents, names in byte order, owner root, and every time set to the one
//! timestamp given. The gzip header carries no name and mtime 0.

use std::io::Write;

use flate2::{Compression, GzBuilder};

use crate::tree::{join, Dir, Node, Tree, DIR_MODE};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
pub const TRAILER: &str = "TRAILER!!!";

struct Entry<'a> {
    name: &'a str,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    data: &'a [u8],
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn push_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    let fields = [
        e.ino,
        e.mode,
        0, // uid
        0, // gid
        e.nlink,
        e.mtime,
        e.data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        e.name.len() as u32 + 1,
        0, // check (only the 070702 format uses it)
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(e.data);
    pad4(out);
}

/// The uncompressed archive.
pub fn archive(tree: &Tree, mtime: u32) -> Vec<u8> {
    fn walk(d: &Dir, prefix: &str, mtime: u32, ino: &mut u32, out: &mut Vec<u8>) {
        for (name, node) in &d.entries {
            let path = join(prefix, name);
            *ino += 1;
            match node {
                Node::Dir(sub) => {
                    let e = Entry {
                        name: &path,
                        ino: *ino,
                        mode: S_IFDIR | DIR_MODE,
                        nlink: 2 + sub.subdirs() as u32,
                        mtime,
                        data: &[],
                    };
                    push_entry(out, &e);
                    walk(sub, &path, mtime, ino, out);
                }
                Node::File(f) => {
                    let e = Entry {
                        name: &path,
                        ino: *ino,
                        mode: S_IFREG | f.perm,
                        nlink: 1,
                        mtime,
                        data: &f.data,
                    };
                    push_entry(out, &e);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut ino = 0;
    walk(&tree.root, "", mtime, &mut ino, &mut out);
    push_entry(
        &mut out,
        &Entry {
            name: TRAILER,
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            data: &[],
        },
    );
    out
}

/// The archive, gzip-compressed with a fixed header (mtime 0, no file name).
pub fn write_gz(tree: &Tree, mtime: u32, sink: &mut dyn Write) -> std::io::Result<u64> {
    let raw = archive(tree, mtime);
    let mut gz = GzBuilder::new().mtime(0).write(sink, Compression::best());
    gz.write_all(&raw)?;
    gz.finish()?;
    Ok(raw.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::File;

    #[test]
    fn layout_of_one_file() {
        let mut t = Tree::default();
        t.insert(
            "a/b",
            File {
                data: b"hi\n".to_vec(),
                perm: 0o755,
            },
        )
        .unwrap();
        let a = archive(&t, 0x10);
        let text = String::from_utf8_lossy(&a);
        // Directory first, then the file, then the trailer.
        let ia = text.find("a\0").unwrap();
        let ib = text.find("a/b\0").unwrap();
        let it = text.find(TRAILER).unwrap();
        assert!(ia < ib && ib < it);
        assert!(a.starts_with(b"070701"));
        // Header of "a": ino 1, mode 040755, uid 0, gid 0, nlink 2, mtime 0x10.
        assert_eq!(
            &a[6..6 + 48],
            b"00000001000041ED00000000000000000000000200000010"
        );
        assert_eq!(a.len() % 4, 0);
        // "a/b" header: mode 0100755, size 3.
        let hb = &a[ib - 110..ib];
        assert_eq!(&hb[14..22], b"000081ED");
        assert_eq!(&hb[54..62], b"00000003");
    }

    #[test]
    fn gzip_header_is_fixed() {
        let mut t = Tree::default();
        t.insert(
            "x",
            File {
                data: vec![1; 100],
                perm: 0o644,
            },
        )
        .unwrap();
        let mut a = Vec::new();
        write_gz(&t, 5, &mut a).unwrap();
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]); // no FNAME flag
        assert_eq!(&a[4..8], &[0, 0, 0, 0]); // mtime 0
        let mut b = Vec::new();
        write_gz(&t, 5, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
