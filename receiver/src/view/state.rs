//! What state an install is in, derived only from what arrived: which files
//! a system has, when they last grew, and what their lines say. Nothing is
//! guessed from time alone except *idle* (no upload within a window).
//!
//! - **failed**: an Anaconda crash dump (`anaconda-tb-*`) arrived, or a line
//!   of an installer log matches a failure pattern: lorax's `LogMonitor`
//!   list (what livemedia-creator stops a build for), plus a kickstart
//!   `%pre`/`%post` script that exited non-zero and Anaconda's own
//!   "Thread Failed" for its install threads. As in lorax, a line that says
//!   `IGNORED` never counts.
//! - **finished**: the first boot's logs arrived (`boot.log`, `messages` or
//!   `dmesg.log`: only the first-boot service of `snippets/post_anamon`
//!   sends those names; no installer writes them), or the installer logged
//!   its own end: "Thread Done: AnaInstallThread" with no configuration
//!   thread still running (Anaconda 19 and later; on RHEL 7 the
//!   "AnaConfigurationThread" comes after it and must be done too), or
//!   "moving (1) to step complete" (the dispatcher of Anaconda 11 to 18,
//!   RHEL 5 and 6).
//! - **installing**: neither, and a file grew within the window.
//! - **idle**: neither, and nothing grew within the window.
//!
//! Failed wins over finished: a %post that failed still booted.
//! Lines are checked once each, as they complete, by a [`Scanner`] fed the
//! new bytes of a file, so no log is read twice.

/// Names only the first boot after an install sends (post_anamon's
/// first-boot service: `/var/log/boot.log`, `/var/log/messages` and the
/// kernel log it writes as `dmesg.log`).
pub const FIRST_BOOT_FILES: [&str; 3] = ["boot.log", "messages", "dmesg.log"];

/// Anaconda's crash dumps are `/tmp/anaconda-tb-<random>`.
pub const CRASH_DUMP_PREFIX: &str = "anaconda-tb-";

/// Longest part of a line kept for matching and for showing: the patterns
/// are far shorter, and a match in a longer line is shown cut here.
pub const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Failed,
    Installing,
    Idle,
    Finished,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Installing,
        State::Idle,
        State::Finished,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Installing => "installing",
            State::Idle => "idle",
            State::Finished => "finished",
            State::Failed => "failed",
        }
    }

    pub fn from_name(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.name() == s)
    }
}

/// What a file is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `anaconda-tb-*`: its arrival is the failure.
    CrashDump,
    /// A log of the installed system's first boot: its arrival is the end.
    /// Not checked for failure patterns (a kernel warning at first boot is
    /// not a failed install).
    FirstBoot,
    /// Everything else the installer ships.
    Install,
}

pub fn kind_of(file: &str) -> Kind {
    if file.starts_with(CRASH_DUMP_PREFIX) {
        Kind::CrashDump
    } else if FIRST_BOOT_FILES.contains(&file) {
        Kind::FirstBoot
    } else {
        Kind::Install
    }
}

/// What one line says about the install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A failure; the text says which kind.
    Failure(&'static str),
    /// "Thread Done: AnaInstallThread".
    InstallDone,
    /// "Running Thread: AnaConfigurationThread" (RHEL 7: after the install
    /// thread).
    ConfigStarted,
    /// "Thread Done: AnaConfigurationThread".
    ConfigDone,
    /// "moving (1) to step complete" (Anaconda 11 to 18).
    StepComplete,
}

/// Substrings that mean a failed install: lorax's `LogMonitor.simple_tests`
/// (src/pylorax/monitor.py), each with what it means, then ours.
const FAILURES: [(&str, &str); 15] = [
    ("Traceback (", "a Python traceback"),
    (
        "traceback script(s) have been run",
        "Anaconda ran its traceback scripts",
    ),
    ("Out of memory:", "the kernel ran out of memory"),
    ("Call Trace:", "a kernel call trace"),
    ("insufficient disk space:", "not enough disk space"),
    (
        "Not enough disk space to download the packages",
        "not enough disk space",
    ),
    (
        "error populating transaction after",
        "the package transaction failed",
    ),
    ("crashed on signal", "a process crashed"),
    ("packaging: Missed: NoSuchPackage", "a package is missing"),
    (
        "packaging: Installation failed",
        "the package installation failed",
    ),
    (
        "The following error occurred while installing.  This is a fatal error",
        "a fatal installation error",
    ),
    (
        "Error in POSTIN scriptlet in rpm package",
        "an RPM scriptlet failed",
    ),
    // Anaconda logs a %pre/%post that exits non-zero as "Error code N
    // running the kickstart script at line N" (RHEL 5 to now; "encountered
    // running" in RHEL 5).
    (
        "running the kickstart script at line",
        "a kickstart %pre/%post script failed",
    ),
    (
        "Thread Failed: AnaInstallThread",
        "the installation thread failed",
    ),
    (
        "Thread Failed: AnaConfigurationThread",
        "the configuration thread failed",
    ),
];

/// What `line` says, if anything. `line` is one line without its newline,
/// possibly cut at [`MAX_LINE`].
pub fn classify(line: &str) -> Option<Signal> {
    if line.contains("IGNORED") {
        return None;
    }
    for (pattern, why) in FAILURES {
        if line.contains(pattern) {
            // Our kickstart rule needs the "Error code" Anaconda puts first.
            if pattern.starts_with("running the kickstart") && !line.contains("Error code ") {
                continue;
            }
            return Some(Signal::Failure(why));
        }
    }
    if dumped_core(line) {
        return Some(Signal::Failure("Anaconda dumped core"));
    }
    if let Some(rest) = after(line, "packaging: base repo ") {
        // lorax: `packaging: base repo (?!\(CDROM/file).* not valid`
        if !rest.starts_with("(CDROM/file") && rest.contains(" not valid") {
            return Some(Signal::Failure("the base repository is not valid"));
        }
    }
    if let Some(rest) = after(line, "packaging: ") {
        // lorax: `packaging: .* requires .*`
        if rest.contains(" requires ") {
            return Some(Signal::Failure("a package dependency is missing"));
        }
    }
    if line.contains("Thread Done: AnaInstallThread") {
        return Some(Signal::InstallDone);
    }
    if line.contains("Running Thread: AnaConfigurationThread") {
        return Some(Signal::ConfigStarted);
    }
    if line.contains("Thread Done: AnaConfigurationThread") {
        return Some(Signal::ConfigDone);
    }
    if let Some(rest) = after(line, "moving (1) to step complete") {
        if rest.trim().is_empty() {
            return Some(Signal::StepComplete);
        }
    }
    None
}

/// What follows the first `pattern` in `line`.
fn after<'a>(line: &'a str, pattern: &str) -> Option<&'a str> {
    line.find(pattern).map(|i| &line[i + pattern.len()..])
}

/// lorax: `Process [0-9]+ \(anaconda\) of user [0-9]+ dumped core`.
fn dumped_core(line: &str) -> bool {
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    line.match_indices("Process ").any(|(i, _)| {
        let rest = &line[i + 8..];
        let n = digits(rest);
        let Some(rest) = rest[n..]
            .strip_prefix(" (anaconda) of user ")
            .filter(|_| n > 0)
        else {
            return false;
        };
        let m = digits(rest);
        m > 0 && rest[m..].starts_with(" dumped core")
    })
}

/// A line that counts, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub why: &'static str,
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// The line, cut at [`MAX_LINE`] bytes (raw: escape before showing).
    pub text: Vec<u8>,
}

/// Checks a file's lines as its bytes arrive. Feed it each new stretch in
/// order; it keeps only the line in progress (at most [`MAX_LINE`] bytes of
/// it) and what it found.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Bytes fed so far.
    pub scanned: u64,
    lines: u64,
    /// The start of the line in progress (up to MAX_LINE bytes).
    carry: Vec<u8>,
    line_start: u64,
    pub failure: Option<Found>,
    pub failures: u64,
    pub install_done: Option<Found>,
    pub config_started: bool,
    pub config_done: Option<Found>,
    pub step_complete: Option<Found>,
}

impl Scanner {
    /// Feeds the next `data` of the file. Failure patterns are looked for
    /// only if `failures` (not in first-boot logs).
    pub fn feed(&mut self, data: &[u8], failures: bool) {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let piece = &rest[..nl];
                    if self.carry.is_empty() {
                        self.line(&piece[..piece.len().min(MAX_LINE)], failures);
                    } else {
                        self.keep(piece);
                        let line = std::mem::take(&mut self.carry);
                        self.line(&line, failures);
                        self.carry = line;
                        self.carry.clear();
                    }
                    self.scanned += nl as u64 + 1;
                    self.lines += 1;
                    self.line_start = self.scanned;
                    rest = &rest[nl + 1..];
                }
                None => {
                    self.keep(rest);
                    self.scanned += rest.len() as u64;
                    rest = &[];
                }
            }
        }
    }

    fn keep(&mut self, piece: &[u8]) {
        let room = MAX_LINE - self.carry.len();
        self.carry
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    fn line(&mut self, line: &[u8], failures: bool) {
        let text = String::from_utf8_lossy(line);
        let Some(signal) = classify(&text) else {
            return;
        };
        let (number, offset) = (self.lines + 1, self.line_start);
        let found = || Found {
            why: match signal {
                Signal::Failure(why) => why,
                _ => "",
            },
            line: number,
            offset,
            text: line.to_vec(),
        };
        match signal {
            Signal::Failure(_) if failures => {
                self.failures += 1;
                if self.failure.is_none() {
                    self.failure = Some(found());
                }
            }
            Signal::Failure(_) => {}
            Signal::InstallDone => {
                self.install_done = self.install_done.take().or_else(|| Some(found()))
            }
            Signal::ConfigStarted => self.config_started = true,
            Signal::ConfigDone => {
                self.config_done = self.config_done.take().or_else(|| Some(found()))
            }
            Signal::StepComplete => {
                self.step_complete = self.step_complete.take().or_else(|| Some(found()))
            }
        }
    }
}

/// One file of a system, as the state rules see it.
pub struct FileFacts<'a> {
    pub name: &'a str,
    /// Last modification, seconds since the epoch.
    pub mtime: i64,
    pub scanner: &'a Scanner,
}

/// Why a system is in its state: a file, and the line if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub file: String,
    pub why: &'static str,
    pub found: Option<Found>,
}

/// The state of a system with `files`, at `now`, where an upload within
/// `window` seconds means it is installing.
pub fn derive(files: &[FileFacts<'_>], now: i64, window: i64) -> (State, Vec<Reason>) {
    let reason = |f: &FileFacts<'_>, why, found: &Option<Found>| Reason {
        file: f.name.to_string(),
        why,
        found: found.clone(),
    };
    let mut failed = Vec::new();
    for f in files.iter().filter(|f| kind_of(f.name) == Kind::CrashDump) {
        failed.push(reason(
            f,
            "an Anaconda crash dump arrived",
            &f.scanner.failure,
        ));
    }
    for f in files.iter().filter(|f| kind_of(f.name) == Kind::Install) {
        if let Some(found) = &f.scanner.failure {
            failed.push(reason(f, found.why, &f.scanner.failure));
        }
    }
    if !failed.is_empty() {
        return (State::Failed, failed);
    }
    let mut finished = Vec::new();
    for f in files.iter().filter(|f| kind_of(f.name) == Kind::FirstBoot) {
        finished.push(reason(f, "the first boot's logs arrived", &None));
    }
    let install = || files.iter().filter(|f| kind_of(f.name) == Kind::Install);
    let config_running = install().any(|f| f.scanner.config_started)
        && !install().any(|f| f.scanner.config_done.is_some());
    for f in install() {
        let s = f.scanner;
        if s.step_complete.is_some() {
            finished.push(reason(
                f,
                "the installer reached its last step",
                &s.step_complete,
            ));
        }
        if s.config_done.is_some() {
            finished.push(reason(
                f,
                "the installer's configuration thread is done",
                &s.config_done,
            ));
        }
        if s.install_done.is_some() && !config_running {
            finished.push(reason(
                f,
                "the installer's install thread is done",
                &s.install_done,
            ));
        }
    }
    if !finished.is_empty() {
        return (State::Finished, finished);
    }
    let last = files.iter().map(|f| f.mtime).max().unwrap_or(i64::MIN);
    if now.saturating_sub(last) <= window {
        (State::Installing, Vec::new())
    } else {
        (State::Idle, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lorax_patterns_and_ours() {
        for (line, want) in [
            ("Traceback (most recent call last):", "a Python traceback"),
            ("[  42.1] Out of memory: Killed process 812 (anaconda)", "the kernel ran out of memory"),
            ("kernel: Call Trace:", "a kernel call trace"),
            (
                "14:02:01,123 ERR packaging: Installation failed: DNF error",
                "the package installation failed",
            ),
            (
                "systemd-coredump[9]: Process 1234 (anaconda) of user 0 dumped core.",
                "Anaconda dumped core",
            ),
            (
                "DEBUG packaging: base repo (http://x/os) not valid -- removing it",
                "the base repository is not valid",
            ),
            (
                "INFO packaging: foo-1.0 requires libbar.so.1",
                "a package dependency is missing",
            ),
            (
                "14:05:00,1 ERR anaconda.kickstart: Error code 1 running the kickstart script at line 42",
                "a kickstart %pre/%post script failed",
            ),
            (
                "Error code 2 encountered running the kickstart script at line 7",
                "a kickstart %pre/%post script failed",
            ),
            ("INFO anaconda.threading: Thread Failed: AnaInstallThread (1404)", "the installation thread failed"),
        ] {
            assert_eq!(classify(line), Some(Signal::Failure(want)), "{line}");
        }
        for line in [
            "",
            "Traceback (most recent call last): IGNORED",
            "DEBUG packaging: base repo (CDROM/file:///run/install/repo) not valid",
            "Process x (anaconda) of user 0 dumped core",
            "Process 12 (anaconda) of user  dumped core",
            "INFO packaging: nothing is required",
        ] {
            assert_eq!(classify(line), None, "{line:?}");
        }
        assert_eq!(
            classify("running the kickstart script at line 3 went fine"),
            None
        );
        assert_eq!(
            classify("INFO anaconda.threading: Thread Done: AnaInstallThread (1404)"),
            Some(Signal::InstallDone)
        );
        assert_eq!(
            classify("INFO anaconda: Running Thread: AnaConfigurationThread (7)"),
            Some(Signal::ConfigStarted)
        );
        assert_eq!(
            classify("INFO anaconda: moving (1) to step complete"),
            Some(Signal::StepComplete)
        );
        assert_eq!(
            classify("dispatch: moving (1) to step complete "),
            Some(Signal::StepComplete)
        );
        assert_eq!(
            classify("INFO anaconda: moving (1) to step completesomething"),
            None
        );
        assert_eq!(classify("moving (-1) to step complete"), None);
    }

    fn scan(chunks: &[&[u8]]) -> Scanner {
        let mut s = Scanner::default();
        for c in chunks {
            s.feed(c, true);
        }
        s
    }

    #[test]
    fn lines_split_across_uploads_are_found_once_with_their_place() {
        let whole: &[u8] = b"one\ntwo\n12:00 Trace";
        let s = scan(&[whole, b"back (most recent call last):\nTraceback (again\n"]);
        let f = s.failure.clone().unwrap();
        assert_eq!((f.line, f.offset), (3, 8));
        assert_eq!(f.text, b"12:00 Traceback (most recent call last):");
        assert_eq!(s.failures, 2);
        // Byte by byte gives the same.
        let all = b"one\ntwo\n12:00 Traceback (most recent call last):\nTraceback (again\n";
        let mut one = Scanner::default();
        for b in all.iter() {
            one.feed(std::slice::from_ref(b), true);
        }
        assert_eq!(one.failure, s.failure);
        assert_eq!(one.scanned, all.len() as u64);
    }

    #[test]
    fn hostile_lines_do_not_confuse_the_scanner() {
        // A 1 MiB line without a newline, NULs, invalid UTF-8 and ANSI
        // escapes around a pattern: memory stays bounded, the match is found
        // and its text is cut at MAX_LINE.
        let mut s = Scanner::default();
        let junk = vec![b'x'; 1 << 20];
        s.feed(&junk, true);
        s.feed(b"\n", true);
        assert!(s.carry.capacity() <= 2 * MAX_LINE);
        s.feed(b"\x00\xff\xfe\x1b[31mOut of memory: \x1b[0m\xc3", true);
        s.feed(&vec![b'y'; 5000], true);
        s.feed(b"\n", true);
        let f = s.failure.unwrap();
        assert_eq!(f.line, 2);
        assert_eq!(f.offset, (1 << 20) + 1);
        assert_eq!(f.text.len(), MAX_LINE);
        assert!(f.text.starts_with(b"\x00\xff\xfe\x1b[31mOut of memory"));
        // A pattern past MAX_LINE in a long line is not seen: documented.
        let mut s = Scanner::default();
        s.feed(&vec![b'z'; MAX_LINE], true);
        s.feed(b"Call Trace:\n", true);
        assert!(s.failure.is_none());
    }

    fn facts<'a>(files: &'a [(&'a str, i64, Scanner)]) -> Vec<FileFacts<'a>> {
        files
            .iter()
            .map(|(name, mtime, scanner)| FileFacts {
                name,
                mtime: *mtime,
                scanner,
            })
            .collect()
    }

    #[test]
    fn state_rules() {
        let now = 10_000;
        let quiet = scan(&[b"INFO anaconda: started\n"]);
        let files = [("anaconda.log", now - 5, quiet.clone())];
        assert_eq!(derive(&facts(&files), now, 600).0, State::Installing);
        let files = [("anaconda.log", now - 601, quiet.clone())];
        assert_eq!(derive(&facts(&files), now, 600).0, State::Idle);
        assert_eq!(derive(&[], now, 600).0, State::Idle);

        // A crash dump arriving makes it failed, whatever else is there.
        let files = [
            ("anaconda.log", now, quiet.clone()),
            (
                "anaconda-tb-3xk1p",
                now,
                scan(&[b"anaconda 34.25 exception report\nTraceback (most\n"]),
            ),
            ("boot.log", now, Scanner::default()),
        ];
        let (state, why) = derive(&facts(&files), now, 600);
        assert_eq!(state, State::Failed);
        assert_eq!(why[0].file, "anaconda-tb-3xk1p");
        assert_eq!(why[0].found.as_ref().unwrap().line, 2);

        // First-boot logs: finished; a Call Trace in them is not a failure.
        let files = [
            ("anaconda.log", now - 9000, quiet.clone()),
            ("dmesg.log", now, {
                let mut s = Scanner::default();
                s.feed(b"[ 3.1] Call Trace:\n", false);
                s
            }),
        ];
        let (state, why) = derive(&facts(&files), now, 600);
        assert_eq!(
            (state, why[0].file.as_str()),
            (State::Finished, "dmesg.log")
        );

        // A failure in an installer log wins over the first boot.
        let files = [
            (
                "program.log",
                now,
                scan(&[b"Error code 1 running the kickstart script at line 9\n"]),
            ),
            ("messages", now, Scanner::default()),
        ];
        let (state, why) = derive(&facts(&files), now, 600);
        assert_eq!(state, State::Failed);
        assert_eq!(why[0].why, "a kickstart %pre/%post script failed");

        // The installer's own end: RHEL 8+ (install thread only), RHEL 7
        // (the configuration thread after it), RHEL 5/6 (the last step).
        let done =
            scan(&[b"Running Thread: AnaInstallThread (1)\nThread Done: AnaInstallThread (1)\n"]);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, done.clone())]), now, 600).0,
            State::Finished
        );
        let el7 = scan(&[
            b"Thread Done: AnaInstallThread (1)\nRunning Thread: AnaConfigurationThread (2)\n",
        ]);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, el7.clone())]), now, 600).0,
            State::Installing
        );
        let mut el7_done = el7;
        el7_done.feed(b"Thread Done: AnaConfigurationThread (2)\n", true);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, el7_done)]), now, 600).0,
            State::Finished
        );
        let el6 = scan(&[
            b"INFO    : moving (1) to step postscripts\nINFO    : moving (1) to step complete\n",
        ]);
        let (state, why) = derive(&facts(&[("anaconda.log", now - 9000, el6)]), now, 600);
        assert_eq!(
            (state, why[0].found.as_ref().unwrap().line),
            (State::Finished, 2)
        );
    }
}
