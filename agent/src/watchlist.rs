//! Which files to watch and what the server calls each one.
//!
//! The default list is Python anamon's, alias for alias, so server-side log
//! names do not change when an admin switches agents. In debian-installer,
//! which Python anamon never ran in, it is d-i's own logs instead.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Python anamon's watch list (path, server-side name).
pub(crate) const PYTHON_WATCH: &[(&str, &str)] = &[
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

/// Python anamon's wait list: files in the target system. Python adds them
/// only after /mnt/sysimage has stayed mounted for 60 s; here they are
/// watched from the start and shipped when they appear (the event source
/// follows mounts). `tmp+install.log` is not a name servers >= 3.2.2 accept.
pub(crate) const PYTHON_WAIT: &[(&str, &str)] = &[
    ("/mnt/sysimage/root/install.log", "install.log"),
    ("/mnt/sysimage/tmp/install.log", "tmp_install.log"),
    ("/mnt/sysimage/root/upgrade.log", "upgrade.log"),
    ("/mnt/sysimage/tmp/upgrade.log", "tmp_upgrade.log"),
    ("/mnt/sysimage/boot/grub/grub.conf", "grub.conf"),
    ("/mnt/sysimage/boot/efi/efi/redhat/elilo.conf", "elilo.conf"),
    ("/mnt/sysimage/etc/zipl.conf", "zipl.conf"),
];

/// What Anaconda writes since RHEL6/7 and Python anamon does not know
/// (read in rhinstaller/anaconda: `pyanaconda/anaconda_logging.py`, the
/// exception handler's file list, `data/post-scripts/99-copy-logs.ks`, the
/// web UI's logger): dnf4's librepo and hawkey logs, DNF5's `dnf.log`
/// (Anaconda ≥ 43.30), the DBus modules' stderr, the web UI's log, and
/// blivet-gui's. Not `sensitive-info.log`: Anaconda keeps it out of the
/// installed system on purpose, and uploads travel unauthenticated and
/// unencrypted. Not `/tmp/journal.log` (the web UI's dump for bug reports):
/// the journal is streamed as `journal.log` already.
pub(crate) const NEWER_ANACONDA: &[(&str, &str)] = &[
    ("/tmp/ifcfg.log", "ifcfg.log"),
    ("/tmp/lvm.log", "lvm.log"),
    ("/tmp/packaging.log", "packaging.log"),
    ("/tmp/dnf.librepo.log", "dnf.librepo.log"),
    ("/tmp/hawkey.log", "hawkey.log"),
    ("/tmp/dnf.log", "dnf.log"),
    ("/tmp/dnf.rpm.log", "dnf.rpm.log"),
    ("/tmp/dbus.log", "dbus.log"),
    ("/tmp/anaconda-webui.log", "anaconda-webui.log"),
    ("/tmp/blivet-gui-utils.log", "blivet-gui-utils.log"),
    ("/run/install/ks.cfg", "run-install-ks.cfg"),
];

/// Families of files with generated names: one per `%pre`/`%post` script,
/// and Anaconda's crash dumps.
pub(crate) const NEWER_ANACONDA_GLOBS: &[&str] = &["/tmp/ks-script-*.log", "/tmp/anaconda-tb-*"];

/// What debian-installer writes (read in its sources: rootskel's
/// `S10syslog` starts busybox syslogd on `/var/log/syslog`; partman logs to
/// `/var/log/partman`; save-logs' `finish-install.d/94save-logs` copies
/// `/var/log/*` into `/target/var/log/installer/` and adds the rest below).
/// The copies of `syslog` and `partman` under `/target` are left out: the
/// originals are shipped. Not `cdebconf/templates.dat`: several MB of the
/// installer's own question texts in every language, the same for every
/// install. (`questions.dat` holds no passwords: cdebconf keeps those in
/// `passwords.dat`, which save-logs does not copy.)
pub(crate) const DEBIAN_INSTALLER: &[(&str, &str)] = &[
    ("/var/log/syslog", "syslog"),
    ("/var/log/partman", "partman"),
    (
        "/target/var/log/installer/hardware-summary",
        "hardware-summary",
    ),
    ("/target/var/log/installer/status", "status"),
    ("/target/var/log/installer/lsb-release", "lsb-release"),
    (
        "/target/var/log/installer/firmware-summary",
        "firmware-summary",
    ),
    (
        "/target/var/log/installer/cdebconf/questions.dat",
        "cdebconf_questions.dat",
    ),
];

/// The installer the agent runs in, which decides the default list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Installer {
    /// Anaconda (and RHEL 4-6's loader): Python anamon's lists.
    Anaconda,
    /// debian-installer (Debian, Ubuntu before Subiquity): d-i's logs.
    DebianInstaller,
}

impl Installer {
    /// The installer whose root is `/`.
    pub(crate) fn detect() -> Installer {
        Installer::detect_in(Path::new("/"))
    }

    /// d-i's initrd has `/lib/debian-installer` (rootskel: its `menu`,
    /// `exit`, `start-udev`), which neither Anaconda's image nor an
    /// installed Debian has.
    fn detect_in(root: &Path) -> Installer {
        if root.join("lib/debian-installer").is_dir() {
            Installer::DebianInstaller
        } else {
            Installer::Anaconda
        }
    }
}

/// One entry of the watch list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub path: PathBuf,
    pub alias: String,
}

/// Splits a `--watchfile` value the way Python's `shlex.split` does for the
/// cases that occur in paths: whitespace separates, single and double quotes
/// group, backslash escapes.
pub(crate) fn shell_split(s: &str) -> Result<Vec<String>, String> {
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

/// A family of files in one directory whose names match a pattern with
/// `*` (any run of characters) and `?` (one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pub dir: PathBuf,
    pub pattern: String,
}

impl Glob {
    /// `Some` when the last component of `path` has a wildcard.
    pub(crate) fn parse(path: &Path) -> Option<Glob> {
        let name = path.file_name()?.to_str()?;
        if !name.contains(['*', '?']) {
            return None;
        }
        Some(Glob {
            dir: path.parent()?.to_path_buf(),
            pattern: name.to_string(),
        })
    }

    pub(crate) fn matches(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| wildcard_match(&self.pattern, n))
    }
}

/// Shell-style matching of `*` and `?` (no brackets: not needed for logs).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The files to ship and the names they have on the server. Names are
/// unique for the life of the agent, including files found later by globs.
#[derive(Debug, Default)]
pub(crate) struct WatchList {
    pub files: Vec<Entry>,
    pub globs: Vec<Glob>,
    taken: HashSet<String>,
    paths: HashSet<PathBuf>,
}

impl WatchList {
    /// The default list of the installer the agent runs in.
    pub(crate) fn defaults() -> WatchList {
        WatchList::defaults_for(Installer::detect())
    }

    /// Anaconda: Python anamon's watch and wait lists with their aliases,
    /// then what newer Anaconda writes. debian-installer: d-i's logs.
    pub(crate) fn defaults_for(installer: Installer) -> WatchList {
        let mut list = WatchList::default();
        let (files, globs): (Vec<&(&str, &str)>, &[&str]) = match installer {
            Installer::Anaconda => (
                PYTHON_WATCH
                    .iter()
                    .chain(PYTHON_WAIT)
                    .chain(NEWER_ANACONDA)
                    .collect(),
                NEWER_ANACONDA_GLOBS,
            ),
            Installer::DebianInstaller => (DEBIAN_INSTALLER.iter().collect(), &[]),
        };
        for (path, alias) in files {
            list.push(PathBuf::from(path), Some(alias));
        }
        list.globs = globs
            .iter()
            .filter_map(|g| Glob::parse(Path::new(g)))
            .collect();
        list
    }

    /// From `--watchfile` paths: each is stored under its basename, as
    /// Python anamon does; where two share a basename, the later ones are
    /// prefixed with their parent directories (`tmp_install.log`) until
    /// unique, then numbered. A basename with `*` or `?` is a glob.
    pub(crate) fn from_paths(paths: &[PathBuf]) -> WatchList {
        let mut list = WatchList::default();
        for path in paths {
            match Glob::parse(path) {
                Some(g) if !list.globs.contains(&g) => list.globs.push(g),
                Some(_) => {}
                None => {
                    list.push(path.clone(), None);
                }
            }
        }
        list
    }

    /// Adds `path` under `alias` (or a name derived from it); returns the
    /// entry, or `None` if the path is already watched.
    pub(crate) fn push(&mut self, path: PathBuf, alias: Option<&str>) -> Option<&Entry> {
        if !self.paths.insert(path.clone()) {
            return None;
        }
        let alias = match alias {
            Some(a) if self.taken.insert(a.to_string()) => a.to_string(),
            _ => unique_alias(&path, &mut self.taken),
        };
        self.files.push(Entry { path, alias });
        self.files.last()
    }

    /// Files that match a glob and are not watched yet, added to the list.
    pub(crate) fn scan_globs(&mut self) -> Vec<Entry> {
        let mut found = Vec::new();
        for g in self.globs.clone() {
            let Ok(dir) = std::fs::read_dir(&g.dir) else {
                continue;
            };
            let mut names: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            names.sort();
            for path in names {
                if g.matches(&path) {
                    if let Some(e) = self.push(path, None) {
                        found.push(e.clone());
                    }
                }
            }
        }
        found
    }
}

/// A name for `path` no other file has: its basename made valid, then with
/// parent directories in front (`tmp_install.log`) until unique, then
/// numbered. Every candidate is fitted to the server's length limit, so a
/// long basename is shortened before it is compared.
fn unique_alias(path: &Path, taken: &mut HashSet<String>) -> String {
    let base = path
        .iter()
        .next_back()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = anamon_names::file_name_from(&base);
    let mut parents = path
        .parent()
        .into_iter()
        .flat_map(|p| p.iter().rev())
        .filter(|c| *c != "/");
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = match parents.next() {
            Some(dir) => anamon_names::shorten(format!(
                "{}_{candidate}",
                anamon_names::file_name_from(&dir.to_string_lossy())
            )),
            None => {
                let numbered = anamon_names::shorten(format!("{candidate}.{n}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases_of(paths: &[&str]) -> Vec<String> {
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        WatchList::from_paths(&paths)
            .files
            .into_iter()
            .map(|e| e.alias)
            .collect()
    }

    /// `list` ships `path` under `alias`.
    fn watches(list: &WatchList, path: &str, alias: &str) -> bool {
        list.files.contains(&Entry {
            path: path.into(),
            alias: alias.into(),
        })
    }

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
        let aliases = aliases_of(&[
            "/mnt/sysimage/root/install.log",
            "/mnt/sysimage/tmp/install.log",
            "/var/log/messages",
            "/other/tmp/install.log",
            "/tmp/weird name+x.log",
            "/tmp/..",
            "/var/log/messages",
        ]);
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
            assert!(anamon_names::is_file_name(a), "{a}");
        }
    }

    #[test]
    fn long_basenames_become_distinct_names_the_server_accepts() {
        let long = "x".repeat(300);
        let paths = [
            format!("/tmp/{long}.log"),
            format!("/var/{long}.log"),
            format!("/tmp/sub/{long}.log"),
            format!("/{long}.log"),
        ];
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let aliases = aliases_of(&refs);
        let unique: HashSet<_> = aliases.iter().collect();
        assert_eq!(unique.len(), aliases.len(), "{aliases:?}");
        for a in &aliases {
            assert!(anamon_names::is_file_name(a), "{a}");
        }
        assert!(aliases[0].ends_with(".log"), "{}", aliases[0]);
    }

    #[test]
    fn identical_names_without_distinct_parents_are_numbered() {
        assert_eq!(
            aliases_of(&["/x.log", "/a/x.log", "/a_x.log"]),
            ["x.log", "a_x.log", "a_x.log.2"]
        );
    }

    #[test]
    fn defaults_keep_python_anamons_names_and_add_newer_logs() {
        let d = WatchList::defaults_for(Installer::Anaconda);
        let has = |p: &str, a: &str| watches(&d, p, a);
        assert!(has("/tmp/syslog", "sys.log"));
        assert!(has("/tmp/lvmout", "lvmout.log"));
        assert!(has("/mnt/sysimage/root/install.log", "install.log"));
        assert!(has("/mnt/sysimage/tmp/install.log", "tmp_install.log"));
        assert!(has("/tmp/dnf.librepo.log", "dnf.librepo.log"));
        assert!(has("/tmp/dnf.log", "dnf.log"), "DNF5 (Anaconda >= 43.30)");
        assert!(has("/tmp/anaconda-webui.log", "anaconda-webui.log"));
        assert!(has("/tmp/blivet-gui-utils.log", "blivet-gui-utils.log"));
        assert_eq!(
            d.files.len(),
            PYTHON_WATCH.len() + PYTHON_WAIT.len() + NEWER_ANACONDA.len()
        );
        let aliases: HashSet<_> = d.files.iter().map(|e| &e.alias).collect();
        assert_eq!(aliases.len(), d.files.len(), "aliases must be unique");
        for a in aliases {
            assert!(anamon_names::is_file_name(a), "{a}");
        }
        assert_eq!(d.globs.len(), 2);
    }

    #[test]
    fn debian_installer_defaults_are_d_is_logs_under_accepted_names() {
        let d = WatchList::defaults_for(Installer::DebianInstaller);
        for (path, alias) in [
            ("/var/log/syslog", "syslog"),
            ("/var/log/partman", "partman"),
            (
                "/target/var/log/installer/hardware-summary",
                "hardware-summary",
            ),
            (
                "/target/var/log/installer/cdebconf/questions.dat",
                "cdebconf_questions.dat",
            ),
        ] {
            assert!(watches(&d, path, alias), "{path} as {alias}");
        }
        assert!(
            !d.files.iter().any(|e| e.path.starts_with("/tmp")),
            "no Anaconda logs"
        );
        assert_eq!(d.files.len(), DEBIAN_INSTALLER.len());
        for e in &d.files {
            assert!(anamon_names::is_file_name(&e.alias), "{}", e.alias);
        }
        assert!(d.globs.is_empty());
    }

    #[test]
    fn the_installer_is_detected_by_d_is_rootskel() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Installer::detect_in(tmp.path()), Installer::Anaconda);
        // A file of that name is not d-i's directory.
        std::fs::create_dir_all(tmp.path().join("lib")).unwrap();
        std::fs::write(tmp.path().join("lib/debian-installer"), "").unwrap();
        assert_eq!(Installer::detect_in(tmp.path()), Installer::Anaconda);
        std::fs::remove_file(tmp.path().join("lib/debian-installer")).unwrap();
        std::fs::create_dir(tmp.path().join("lib/debian-installer")).unwrap();
        assert_eq!(Installer::detect_in(tmp.path()), Installer::DebianInstaller);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("ks-script-*.log", "ks-script-abc_12.log"));
        assert!(wildcard_match("ks-script-*.log", "ks-script-.log"));
        assert!(!wildcard_match("ks-script-*.log", "ks-script-1.log.old"));
        assert!(wildcard_match("anaconda-tb-*", "anaconda-tb-x1y2"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("a?c", "ac"));
        let g = Glob::parse(Path::new("/tmp/ks-script-*.log")).unwrap();
        assert!(g.matches(Path::new("/tmp/ks-script-7.log")));
        assert!(!g.matches(Path::new("/tmp/sub/ks-script-7.log")));
    }

    #[test]
    fn globs_find_new_files_once_with_unique_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut list = WatchList::from_paths(&[dir.join("x.log"), dir.join("ks-script-*.log")]);
        assert!(list.scan_globs().is_empty());
        std::fs::write(dir.join("ks-script-b.log"), "b").unwrap();
        std::fs::write(dir.join("ks-script-a.log"), "a").unwrap();
        std::fs::write(dir.join("other.log"), "o").unwrap();
        let found: Vec<String> = list.scan_globs().into_iter().map(|e| e.alias).collect();
        assert_eq!(found, ["ks-script-a.log", "ks-script-b.log"]);
        assert!(list.scan_globs().is_empty(), "found twice");
        assert_eq!(list.files.len(), 3);
    }
}
