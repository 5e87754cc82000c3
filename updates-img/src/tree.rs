//! The image's content as a sorted tree, independent of the output format.
//!
//! Names sort by bytes (`BTreeMap<String, _>`), so both writers walk the same
//! order on every host: that is half of reproducibility.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Longest name of one path component (ext2's `name_len` is a `u8`).
pub const MAX_NAME: usize = 255;
/// Longest path inside the image (Linux `PATH_MAX` less the NUL).
pub const MAX_PATH: usize = 4095;
/// Every directory the tool creates: `rwxr-xr-x`, owned by root.
pub const DIR_MODE: u32 = 0o755;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    /// Permission bits only (`0o7777` at most); the type bits come from the writer.
    pub perm: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dir {
    pub entries: BTreeMap<String, Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir(Dir),
    File(File),
}

impl Dir {
    /// Number of immediate subdirectories (for link counts).
    pub fn subdirs(&self) -> usize {
        self.entries
            .values()
            .filter(|n| matches!(n, Node::Dir(_)))
            .count()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub root: Dir,
}

/// Splits an image path into components, rejecting anything that could escape
/// the image root or that a format cannot store. A leading `/` is allowed and
/// ignored: paths are always relative to the image root.
/// `prefix/name`, or `name` at the top of the tree (archive paths have no
/// leading slash).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

pub fn split_dest(dest: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::BadDest {
        dest: dest.to_string(),
        why: why.to_string(),
    };
    let rel = dest.trim_start_matches('/');
    if rel.is_empty() {
        return Err(bad("is empty or the image root; name a file"));
    }
    if rel.len() > MAX_PATH {
        return Err(bad(&format!("longer than {MAX_PATH} bytes")));
    }
    if rel.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for c in rel.split('/') {
        match c {
            "" => return Err(bad("has an empty component (\"//\" or a trailing \"/\")")),
            "." | ".." => return Err(bad("has a \".\" or \"..\" component")),
            _ if c.len() > MAX_NAME => {
                return Err(bad(&format!(
                    "component {:?}… is {} bytes; names are at most {MAX_NAME}",
                    c.chars().take(16).collect::<String>(),
                    c.len()
                )))
            }
            _ => parts.push(c.to_string()),
        }
    }
    Ok(parts)
}

impl Tree {
    /// Adds `file` at `dest`, creating parent directories (mode 0755).
    pub fn insert(&mut self, dest: &str, file: File) -> Result<()> {
        let parts = split_dest(dest)?;
        let clash = |why: &str| Error::BadDest {
            dest: dest.to_string(),
            why: why.to_string(),
        };
        let (leaf, parents) = parts
            .split_last()
            .expect("split_dest returns at least one part");
        let mut dir = &mut self.root;
        for p in parents {
            let node = dir
                .entries
                .entry(p.clone())
                .or_insert_with(|| Node::Dir(Dir::default()));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => {
                    return Err(clash(&format!(
                        "parent {p:?} is already a file in the image"
                    )))
                }
            };
        }
        match dir.entries.get(leaf) {
            Some(Node::File(_)) => Err(clash("given twice")),
            Some(Node::Dir(_)) => Err(clash("is already a directory in the image")),
            None => {
                dir.entries.insert(leaf.clone(), Node::File(file));
                Ok(())
            }
        }
    }

    /// Every file with its full path, in the order the writers emit them.
    pub fn files(&self) -> Vec<(String, &File)> {
        fn walk<'a>(d: &'a Dir, prefix: &str, out: &mut Vec<(String, &'a File)>) {
            for (name, node) in &d.entries {
                let path = join(prefix, name);
                match node {
                    Node::Dir(sub) => walk(sub, &path, out),
                    Node::File(f) => out.push((path, f)),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, "", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(b: &[u8]) -> File {
        File {
            data: b.to_vec(),
            perm: 0o644,
        }
    }

    #[test]
    fn dest_rules() {
        assert_eq!(split_dest("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(split_dest("a").unwrap(), vec!["a"]);
        for bad in ["", "/", "a//b", "a/", "../x", "a/./b", "a\0b"] {
            assert!(split_dest(bad).is_err(), "{bad:?} accepted");
        }
        assert!(split_dest(&"n".repeat(255)).is_ok());
        let e = split_dest(&format!("d/{}", "n".repeat(256)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 255"), "{e}");
    }

    #[test]
    fn insert_and_clashes() {
        let mut t = Tree::default();
        t.insert("a/b/c", f(b"1")).unwrap();
        t.insert("a/d", f(b"2")).unwrap();
        assert!(t
            .insert("a/b/c", f(b"x"))
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(t
            .insert("a/b", f(b"x"))
            .unwrap_err()
            .to_string()
            .contains("directory"));
        assert!(t
            .insert("a/d/e", f(b"x"))
            .unwrap_err()
            .to_string()
            .contains("already a file"));
        let paths: Vec<_> = t.files().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["a/b/c", "a/d"]);
    }
}
