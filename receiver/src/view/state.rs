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

/// Every line [`classify`] gives a signal for holds one of these (a test
/// checks it), so only lines holding one are classified. They are found
/// without looking at every byte: each is at least [`MIN_ANCHOR`] bytes
/// long, so one of the four-byte windows taken every [`STRIDE`] bytes lies
/// inside it, and [`FILTER`] holds every four-byte window of every anchor.
const ANCHORS: [(&[u8], Group); 20] = [
    (b"Traceback (", Group::Failure),
    (b"traceback script(s)", Group::Failure),
    (b"Out of memory:", Group::Failure),
    (b"Call Trace:", Group::Failure),
    (b"disk space", Group::Failure),
    (b"error populating transaction", Group::Failure),
    (b"crashed on signal", Group::Failure),
    (b"NoSuchPackage", Group::Failure),
    (b"Installation failed", Group::Failure),
    (b"This is a fatal error", Group::Failure),
    (b"POSTIN scriptlet", Group::Failure),
    (b"the kickstart script at line", Group::Failure),
    (b"Thread Failed: Ana", Group::Failure),
    (b" dumped core", Group::Failure),
    (b"base repo ", Group::Failure),
    (b" requires ", Group::Failure),
    (b"Thread Done: AnaInstallThread", Group::InstallDone),
    (b"Running Thread: AnaConfigur", Group::ConfigStarted),
    (b"to step complete", Group::StepComplete),
    (b"Done: AnaConfigurationThread", Group::ConfigDone),
];
const MIN_ANCHOR: usize = 10;
const STRIDE: usize = MIN_ANCHOR - 3;

/// Which finding an anchor's line can give: once it is found, lines that
/// can only give it again are not looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Failure,
    InstallDone,
    ConfigStarted,
    ConfigDone,
    StepComplete,
}

const WINDOW_COUNT: usize = {
    let (mut n, mut i) = (0, 0);
    while i < ANCHORS.len() {
        assert!(ANCHORS[i].0.len() >= MIN_ANCHOR && ANCHORS[i].0.len() < 256);
        n += ANCHORS[i].0.len() - 3;
        i += 1;
    }
    n
};

/// Every four-byte window of every anchor: (the window's bytes, the
/// anchor, where in it), sorted by window.
static WINDOWS: [(u32, u8, u8); WINDOW_COUNT] = {
    let mut w = [(0u32, 0u8, 0u8); WINDOW_COUNT];
    let (mut n, mut i) = (0, 0);
    while i < ANCHORS.len() {
        let a = ANCHORS[i].0;
        let mut k = 0;
        while k + 4 <= a.len() {
            w[n] = (
                u32::from_le_bytes([a[k], a[k + 1], a[k + 2], a[k + 3]]),
                i as u8,
                k as u8,
            );
            n += 1;
            k += 1;
        }
        i += 1;
    }
    // Insertion sort (const fn has no sort).
    let mut j = 1;
    while j < WINDOW_COUNT {
        let mut m = j;
        while m > 0 && w[m - 1].0 > w[m].0 {
            let t = w[m - 1];
            w[m - 1] = w[m];
            w[m] = t;
            m -= 1;
        }
        j += 1;
    }
    w
};

/// The windows, hashed into 16384 bits (about 300 set: a window of
/// ordinary text hits one time in 50), so most windows cost one lookup.
static FILTER: [u64; 256] = {
    let mut f = [0u64; 256];
    let mut i = 0;
    while i < WINDOW_COUNT {
        let h = slot(WINDOWS[i].0);
        f[h >> 6] |= 1 << (h & 63);
        i += 1;
    }
    f
};

const fn slot(four: u32) -> usize {
    (four.wrapping_mul(0x9e37_79b1) >> 18) as usize
}

/// Where an anchor of a group `wanted` starts, at or after `from`, if one
/// holds the four bytes at `i`.
fn anchor_around(
    bytes: &[u8],
    from: usize,
    i: usize,
    wanted: impl Fn(Group) -> bool,
) -> Option<usize> {
    let w = match bytes.get(i..i + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => return None,
    };
    let h = slot(w);
    if FILTER[h >> 6] & (1 << (h & 63)) == 0 {
        return None;
    }
    let first = WINDOWS.partition_point(|e| e.0 < w);
    WINDOWS[first..]
        .iter()
        .take_while(|e| e.0 == w)
        .find_map(|&(_, a, k)| {
            let (anchor, group) = ANCHORS[usize::from(a)];
            let p = i.checked_sub(usize::from(k)).filter(|&p| p >= from)?;
            (wanted(group) && bytes.get(p..)?.starts_with(anchor)).then_some(p)
        })
}

/// Checks a file's lines as its bytes arrive. Feed it each new stretch in
/// order; it keeps only the line in progress (at most [`MAX_LINE`] bytes of
/// it) and the first line of each kind it found.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Bytes fed so far.
    pub scanned: u64,
    /// Complete lines fed so far.
    lines: u64,
    /// The start of the line in progress (up to MAX_LINE bytes).
    carry: Vec<u8>,
    line_start: u64,
    pub failure: Option<Found>,
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
        if self.scanned > self.line_start {
            // A line in progress: complete it first.
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.keep(rest);
                self.scanned += rest.len() as u64;
                return;
            };
            self.keep(&rest[..nl]);
            let line = std::mem::take(&mut self.carry);
            self.line(&line, self.lines + 1, self.line_start, failures);
            self.carry = line;
            self.carry.clear();
            self.next_line(nl as u64 + 1, 1);
            rest = &rest[nl + 1..];
        }
        if let Some(last) = rest.iter().rposition(|&b| b == b'\n') {
            let body = &rest[..=last];
            self.lines_in(body, failures);
            self.next_line(body.len() as u64, newlines(body));
            rest = &rest[last + 1..];
        }
        self.keep(rest);
        self.scanned += rest.len() as u64;
    }

    fn next_line(&mut self, bytes: u64, lines: u64) {
        self.scanned += bytes;
        self.lines += lines;
        self.line_start = self.scanned;
    }

    fn keep(&mut self, piece: &[u8]) {
        let room = MAX_LINE - self.carry.len();
        self.carry
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// Checks the complete lines `body` (which ends with a newline and
    /// starts at `self.scanned`, line `self.lines + 1`): only lines holding
    /// an anchor are classified, each once.
    fn lines_in(&mut self, body: &[u8], failures: bool) {
        let (mut number, mut counted) = (self.lines + 1, 0);
        // Where the search for a line's start may stop: no newline lies
        // between it and `counted`'s line start.
        let mut known_start = 0;
        let mut i = 0;
        while i < body.len() {
            let Some(at) = anchor_around(body, known_start, i, |g| self.wants(g, failures)) else {
                i += STRIDE;
                continue;
            };
            let start = body[known_start..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(known_start, |n| known_start + n + 1);
            number += newlines(&body[counted..start]);
            counted = start;
            let end = body[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |n| at + n);
            let text = &body[start..end.min(start + MAX_LINE)];
            self.line(text, number, self.scanned + start as u64, failures);
            // The rest of this line says nothing more; go on after it.
            known_start = end + 1;
            i = end + 1;
        }
    }

    /// Whether lines of `group` can still tell anything new.
    fn wants(&self, group: Group, failures: bool) -> bool {
        match group {
            Group::Failure => failures && self.failure.is_none(),
            Group::InstallDone => self.install_done.is_none(),
            Group::ConfigStarted => !self.config_started,
            Group::ConfigDone => self.config_done.is_none(),
            Group::StepComplete => self.step_complete.is_none(),
        }
    }

    fn line(&mut self, line: &[u8], number: u64, offset: u64, failures: bool) {
        let text = String::from_utf8_lossy(line);
        let Some(signal) = classify(&text) else {
            return;
        };
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
                self.failure = self.failure.take().or_else(|| Some(found()))
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

/// Newlines in `bytes`, eight bytes at a time.
fn newlines(bytes: &[u8]) -> u64 {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let (words, rest) = bytes.as_chunks::<8>();
    let mut n = rest.iter().filter(|&&b| b == b'\n').count() as u64;
    for w in words {
        // A byte of v is zero where the byte was a newline; its high bit in
        // `nonzero` is set for every other byte.
        let v = u64::from_ne_bytes(*w) ^ 0x0a0a_0a0a_0a0a_0a0a;
        let nonzero = ((v & LOW).wrapping_add(LOW)) | v;
        n += u64::from((!nonzero & !LOW).count_ones());
    }
    n
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

    #[test]
    fn every_pattern_holds_an_anchor() {
        let anchored =
            |p: &str| (0..p.len()).any(|i| anchor_around(p.as_bytes(), 0, i, |_| true).is_some());
        for (pattern, _) in FAILURES {
            assert!(anchored(pattern), "{pattern}");
        }
        for line in [
            "Process 1 (anaconda) of user 0 dumped core",
            "packaging: base repo (x) not valid",
            "packaging: a requires b",
            "Thread Done: AnaInstallThread",
            "Running Thread: AnaConfigurationThread",
            "Thread Done: AnaConfigurationThread",
            "moving (1) to step complete",
        ] {
            assert!(classify(line).is_some() && anchored(line), "{line}");
        }
        assert!(!anchored("INFO anaconda: nothing to see\n"));
    }

    #[test]
    fn newlines_are_counted_and_every_anchor_place_is_found() {
        let text = b"a\nbb\n\n\xff\n\x0a\x8a\x0b\n".repeat(37);
        assert_eq!(
            newlines(&text),
            text.iter().filter(|&&b| b == b'\n').count() as u64
        );
        // Each anchor at every offset and line length: found once, in its line.
        for pad in 0..40 {
            for (a, _) in ANCHORS {
                let mut body = b"x\n".repeat(pad % 3);
                body.extend(std::iter::repeat_n(b'.', pad));
                body.extend_from_slice(a);
                body.extend_from_slice(b" tail\nnext\n");
                let mut s = Scanner::default();
                s.lines_in(&body, true);
                let found = [
                    &s.failure,
                    &s.install_done,
                    &s.config_done,
                    &s.step_complete,
                ]
                .into_iter()
                .flatten()
                .count()
                    + usize::from(s.config_started);
                let line = String::from_utf8_lossy(&body[2 * (pad % 3)..])
                    .lines()
                    .next()
                    .unwrap()
                    .to_string();
                assert_eq!(found, usize::from(classify(&line).is_some()), "{line:?}");
                if let Some(f) = s.failure.as_ref().or(s.install_done.as_ref()) {
                    assert_eq!(
                        (f.line, f.offset),
                        ((pad % 3) as u64 + 1, 2 * (pad % 3) as u64)
                    );
                }
            }
        }
    }

    /// What the scanner must find: every line classified, one by one.
    fn reference(log: &[u8]) -> [Option<(u64, u64)>; 4] {
        let (mut out, mut offset) = ([None; 4], 0);
        let mut lines = log.split(|&b| b == b'\n').peekable();
        let mut number = 1;
        while let Some(line) = lines.next() {
            if lines.peek().is_none() {
                break; // no newline after it: not a line yet
            }
            let cut = &line[..line.len().min(MAX_LINE)];
            let slot = match classify(&String::from_utf8_lossy(cut)) {
                Some(Signal::Failure(_)) => Some(0),
                Some(Signal::InstallDone) => Some(1),
                Some(Signal::ConfigDone) => Some(2),
                Some(Signal::StepComplete) => Some(3),
                _ => None,
            };
            if let Some(k) = slot {
                out[k] = out[k].or(Some((number, offset)));
            }
            offset += line.len() as u64 + 1;
            number += 1;
        }
        out
    }

    #[test]
    fn finds_what_a_line_by_line_check_finds_however_the_bytes_come() {
        let pieces: [&[u8]; 13] = [
            b"INFO anaconda: x ",
            b"Traceback (most recent call last):",
            b"Call Trace: IGNORED",
            b"Thread Done: AnaInstallThread (1)",
            b"Thread Done: AnaConfigurationThread (2)",
            b"moving (1) to step complete",
            b"packaging: a requires b",
            b"\n",
            b"\n\n",
            b"\xff\xe2\x82",
            b"Process 12 (anaconda) of user 0 dumped core",
            b"..........",
            b"base repo  requires  dumped core",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..600 {
            let mut log = Vec::new();
            for _ in 0..next(60) {
                log.extend_from_slice(pieces[next(pieces.len())]);
                if next(9) == 0 {
                    log.extend(std::iter::repeat_n(b'-', next(1500)));
                }
            }
            let mut s = Scanner::default();
            let mut at = 0;
            while at < log.len() {
                let n = (next(300) + 1).min(log.len() - at);
                s.feed(&log[at..at + n], true);
                at += n;
            }
            let place = |f: &Option<Found>| f.as_ref().map(|f| (f.line, f.offset));
            let got = [
                place(&s.failure),
                place(&s.install_done),
                place(&s.config_done),
                place(&s.step_complete),
            ];
            assert_eq!(got, reference(&log), "{:?}", String::from_utf8_lossy(&log));
            assert_eq!(s.scanned, log.len() as u64);
        }
    }

    #[test]
    fn invalid_bytes_keep_offsets_and_line_numbers() {
        let log = b"\xff\xfe one\n\x80 two\xc3\n\xe2\x82 three Out of memory: x\xff\nend\n";
        for split in 0..log.len() {
            let mut s = Scanner::default();
            s.feed(&log[..split], true);
            s.feed(&log[split..], true);
            let f = s.failure.expect("found");
            assert_eq!((f.line, f.offset), (3, 14), "split at {split}");
            assert_eq!(f.text, b"\xe2\x82 three Out of memory: x\xff");
            assert_eq!(s.scanned, log.len() as u64);
        }
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
