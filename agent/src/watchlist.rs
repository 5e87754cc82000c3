//! Which files to watch and what the server calls each one.
//!
//! The default list is Python anamon's, alias for alias, so server-side log
//! names do not change when an admin switches agents.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Python anamon's watch list (path, server-side name).
pub const DEFAULT_WATCH: &[(&str, &str)] = &[
    ("/tmp/anaconda.log", "anaconda.log"),
    ("/tmp/syslog", "sys.log"),
    ("/tmp/anacdump.txt", "anacdump.txt"),
    ("/tmp/ks-script.log", "ks-script.log"),
    ("/tmp/modprobe.conf", "modprobe.conf"),
    ("/tmp/lvmout", "lvmout.log"),
    ("/tmp/ks.cfg", "ks.cfg"),
    ("/tmp/storage.log", "storage.log"),
    ("/tmp/program.log", "program.log"),
    ("/tmp/vncserver.log", "vncserver.log"),
    ("/tmp/X.log", "X.log"),
    ("/tmp/ks-pre.log", "ks-pre.log"),
];

/// One entry of the watch list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub alias: String,
}

/// Splits a `--watchfile` value the way Python's `shlex.split` does for the
/// cases that occur in paths: whitespace separates, single and double quotes
/// group, backslash escapes.
pub fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {s:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing backslash in {s:?}")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A name the server accepts (`[a-zA-Z0-9_\-.]+`): other characters become
/// `_`, and names made only of dots (which would climb directories on
/// servers before 3.3.0) get a prefix.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Builds the watch list from `--watchfile` paths: each is stored under its
/// basename, as Python anamon does; where two share a basename, the later
/// ones are prefixed with their parent directories (`tmp_install.log`) until
/// unique, then numbered.
pub fn from_paths(paths: &[PathBuf]) -> Vec<Entry> {
    let mut taken = HashSet::new();
    let mut out = Vec::new();
    let mut seen_paths = HashSet::new();
    for path in paths {
        if !seen_paths.insert(path.clone()) {
            continue;
        }
        let alias = unique_alias(path, &mut taken);
        out.push(Entry {
            path: path.clone(),
            alias,
        });
    }
    out
}

fn unique_alias(path: &Path, taken: &mut HashSet<String>) -> String {
    let base = path
        .iter()
        .last()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = sanitize(if base.is_empty() { "log" } else { &base });
    let mut parents = path
        .parent()
        .into_iter()
        .flat_map(|p| p.iter().rev())
        .filter(|c| *c != "/");
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = match parents.next() {
            Some(dir) => format!("{}_{candidate}", sanitize(&dir.to_string_lossy())),
            None => {
                let numbered = format!("{candidate}.{n}");
                n += 1;
                if taken.contains(&numbered) {
                    continue;
                }
                numbered
            }
        };
    }
    taken.insert(candidate.clone());
    candidate
}

/// Python anamon's default list.
pub fn defaults() -> Vec<Entry> {
    DEFAULT_WATCH
        .iter()
        .map(|(p, a)| Entry {
            path: PathBuf::from(p),
            alias: (*a).to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_split_matches_shlex_for_paths() {
        assert_eq!(
            shell_split("/tmp/a.log  /tmp/b.log").unwrap(),
            ["/tmp/a.log", "/tmp/b.log"]
        );
        assert_eq!(
            shell_split("'/tmp/with space.log' \"/tmp/q\\\"x\" a\\ b").unwrap(),
            ["/tmp/with space.log", "/tmp/q\"x", "a b"]
        );
        assert_eq!(shell_split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(shell_split("''").unwrap(), [""]);
        assert!(shell_split("'open").is_err());
    }

    #[test]
    fn aliases_are_basenames_made_unique_and_valid() {
        let paths: Vec<PathBuf> = [
            "/mnt/sysimage/root/install.log",
            "/mnt/sysimage/tmp/install.log",
            "/var/log/messages",
            "/other/tmp/install.log",
            "/tmp/weird name+x.log",
            "/tmp/..",
            "/var/log/messages",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let aliases: Vec<String> = from_paths(&paths).into_iter().map(|e| e.alias).collect();
        assert_eq!(
            aliases,
            [
                "install.log",
                "tmp_install.log",
                "messages",
                "other_tmp_install.log",
                "weird_name_x.log",
                "_.."
            ]
        );
        for a in &aliases {
            assert!(a
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
        }
    }

    #[test]
    fn identical_names_without_distinct_parents_are_numbered() {
        let paths: Vec<PathBuf> = ["/x.log", "/a/x.log", "/a_x.log"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let aliases: Vec<String> = from_paths(&paths).into_iter().map(|e| e.alias).collect();
        assert_eq!(aliases, ["x.log", "a_x.log", "a_x.log.2"]);
    }

    #[test]
    fn defaults_are_python_anamons() {
        let d = defaults();
        assert_eq!(d.len(), 12);
        assert!(d.contains(&Entry {
            path: "/tmp/syslog".into(),
            alias: "sys.log".into()
        }));
        assert!(d.contains(&Entry {
            path: "/tmp/lvmout".into(),
            alias: "lvmout.log".into()
        }));
    }
}
