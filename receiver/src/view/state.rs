//! What state an install is in, derived only from what arrived: which files
//! a system has, when they last grew, and what their lines say. Nothing is
//! guessed from time alone except *idle* (no upload within a window).
//!
//! - **failed**: an Anaconda crash dump (`anaconda-tb-*`) arrived, a line
//!   says the install failed (a failure rule of [`super::rules`], which
//!   knows which file and which program a line comes from), or Anaconda
//!   reported an abort (IPMI 9) and nothing says it reached its end.
//! - **finished**: the first boot's logs arrived (`boot.log`, `messages` or
//!   `dmesg.log`: only the first-boot service of `snippets/post_anamon`
//!   sends those names; no installer writes them), or the installer logged
//!   its end in its era's words (IPMI 8, the task queue's last task, the
//!   %post scripts, the dispatcher's `copylogs`/`complete`, the install
//!   and configuration threads done: see [`super::rules`]).
//! - **installing**: neither, and a file grew within the window.
//! - **idle**: neither, and nothing grew within the window.
//!
//! Failed wins over finished: a %post that failed still booted.
//! Lines are checked once each, as they complete, by a [`Scanner`] fed the
//! new bytes of a file, so no log is read twice.

use super::rules::{classify, first_anchor};
pub use super::rules::{source_of, Signal, Source, Stage};

/// Longest part of a line kept for matching and for showing: the anchors
/// are far shorter, and a match in a longer line is shown cut here.
pub const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Failed,
    /// Nothing grew within the window while the logs say it is at a stage
    /// that should be working (not its last step).
    Stalled,
    Installing,
    Idle,
    Finished,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Installing,
        State::Stalled,
        State::Idle,
        State::Finished,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Installing => "installing",
            State::Stalled => "stalled",
            State::Idle => "idle",
            State::Finished => "finished",
            State::Failed => "failed",
        }
    }

    pub fn from_name(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.name() == s)
    }
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
    /// The first line saying the install reached its end.
    pub end: Option<Found>,
    /// An IPMI 9 with no IPMI 8 before it in this file.
    pub aborted: Option<Found>,
    /// Whether an IPMI 8 came (a 9 after it is the text UI quitting).
    ipmi_finished: bool,
    pub install_done: Option<Found>,
    pub config_started: bool,
    pub config_done: Option<Found>,
    /// The first line of the installer's last step.
    pub last_step: Option<Found>,
    /// The furthest stage the lines said, and since when (the file's
    /// modification time at the refresh that found it: see [`Self::stamp`]).
    pub stage: Option<Stage>,
    pub stage_since: Option<i64>,
    stage_moved: bool,
    /// The last "package N of M".
    pub packages: Option<(u32, u32)>,
}

impl Scanner {
    /// Dates a stage found since the last call at `at`, the time the file
    /// was last written (its new bytes hold the line).
    pub fn stamp(&mut self, at: i64) {
        if std::mem::take(&mut self.stage_moved) {
            self.stage_since = Some(at);
        }
    }

    fn reach(&mut self, stage: Stage) {
        if self.stage < Some(stage) {
            self.stage = Some(stage);
            self.stage_moved = true;
        }
    }

    /// Feeds the next `data` of a file of `source`.
    pub fn feed(&mut self, data: &[u8], source: Source) {
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
            self.line(&line, self.lines + 1, self.line_start, source);
            self.carry = line;
            self.carry.clear();
            self.next_line(nl as u64 + 1, 1);
            rest = &rest[nl + 1..];
        }
        if let Some(last) = rest.iter().rposition(|&b| b == b'\n') {
            let body = &rest[..=last];
            self.lines_in(body, source);
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
    fn lines_in(&mut self, body: &[u8], source: Source) {
        if source == Source::FirstBoot {
            return;
        }
        let (mut number, mut counted) = (self.lines + 1, 0);
        // `from` is always the start of a line.
        let mut from = 0;
        while let Some(at) = first_anchor(&body[from..]).map(|i| from + i) {
            let start = body[from..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(from, |n| from + n + 1);
            number += newlines(&body[counted..start]);
            counted = start;
            let end = body[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |n| at + n);
            let text = &body[start..end.min(start + MAX_LINE)];
            self.line(text, number, self.scanned + start as u64, source);
            // The rest of this line says nothing more; go on after it.
            from = end + 1;
            if from >= body.len() {
                break;
            }
        }
    }

    fn line(&mut self, line: &[u8], number: u64, offset: u64, source: Source) {
        let text = String::from_utf8_lossy(line);
        let Some(signal) = classify(&text, source) else {
            return;
        };
        let found = |why| {
            Some(Found {
                why,
                line: number,
                offset,
                text: line.to_vec(),
            })
        };
        let first = |slot: &mut Option<Found>, why| {
            if slot.is_none() {
                *slot = found(why);
            }
        };
        match signal {
            Signal::Failure(why) => first(&mut self.failure, why),
            Signal::End(why) => {
                self.ipmi_finished |= why.contains("IPMI");
                first(&mut self.end, why)
            }
            Signal::Aborted if !self.ipmi_finished => first(
                &mut self.aborted,
                "Anaconda reported the install aborted (IPMI 0x9)",
            ),
            Signal::Aborted => {}
            Signal::InstallDone => first(
                &mut self.install_done,
                "the installer's install thread is done",
            ),
            Signal::ConfigStarted => self.config_started = true,
            Signal::LastStep(why) => {
                self.reach(Stage::Post);
                first(&mut self.last_step, why)
            }
            Signal::Stage(stage) => self.reach(stage),
            Signal::Package(n, m) => {
                self.reach(Stage::Packages);
                self.packages = Some((n, m));
            }
            Signal::ConfigDone => first(
                &mut self.config_done,
                "the installer's configuration thread is done",
            ),
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

/// Where an install is: its furthest stage, since when, and the last
/// package N of M the logs gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    pub since: Option<i64>,
    pub packages: Option<(u32, u32)>,
}

/// A system's state, why, and where its install is.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub state: State,
    pub reasons: Vec<Reason>,
    pub progress: Option<Progress>,
}

/// The state of a system with `files`, at `now`, where an upload within
/// `window` seconds means it is installing.
///
/// A crash dump wins over everything (an Anaconda that reported IPMI 8 may
/// still raise, see `rules::judge_ipmi`); a said end wins over the failure
/// lines an install survives (see below).
pub fn derive(files: &[FileFacts<'_>], now: i64, window: i64) -> Verdict {
    let reason = |f: &FileFacts<'_>, found: &Option<Found>| Reason {
        file: f.name.to_string(),
        why: found.as_ref().map_or("", |x| x.why),
        found: found.clone(),
    };
    let source = |f: &FileFacts<'_>| source_of(f.name);
    let install = || files.iter().filter(|f| source(f) != Source::FirstBoot);
    let progress = install()
        .filter_map(|f| f.scanner.stage.map(|st| (st, f.scanner)))
        .max_by_key(|(st, _)| *st)
        .map(|(stage, s)| Progress {
            stage,
            since: install()
                .filter(|f| f.scanner.stage == Some(stage))
                .filter_map(|f| f.scanner.stage_since)
                .min()
                .or(s.stage_since),
            packages: install().filter_map(|f| f.scanner.packages).max(),
        });
    let verdict = |state, reasons| Verdict {
        state,
        reasons,
        progress,
    };
    let mut crashed = Vec::new();
    for f in files.iter().filter(|f| source(f) == Source::CrashDump) {
        crashed.push(Reason {
            why: "an Anaconda crash dump arrived",
            ..reason(f, &f.scanner.failure)
        });
    }
    let mut failed = Vec::new();
    for f in files.iter().filter(|f| source(f) != Source::CrashDump) {
        if f.scanner.failure.is_some() {
            failed.push(reason(f, &f.scanner.failure));
        }
    }
    let mut finished = Vec::new();
    for f in files.iter().filter(|f| source(f) == Source::FirstBoot) {
        finished.push(Reason {
            file: f.name.to_string(),
            why: "the first boot's logs arrived",
            found: None,
        });
    }
    // RHEL 7 runs its configuration thread after the install thread.
    let config_running = install().any(|f| f.scanner.config_started)
        && !install().any(|f| f.scanner.config_done.is_some());
    for f in install() {
        let s = f.scanner;
        for found in [&s.end, &s.config_done] {
            if found.is_some() {
                finished.push(reason(f, found));
            }
        }
        if s.install_done.is_some() && !config_running {
            finished.push(reason(f, &s.install_done));
        }
    }
    // An abort (IPMI 9 alone) is a failure unless the installer also said
    // it reached its end.
    if finished.is_empty() {
        for f in install() {
            if f.scanner.aborted.is_some() {
                failed.push(reason(f, &f.scanner.aborted));
            }
        }
    }
    // A crash dump is Anaconda raising: failed, whatever else was said.
    if !crashed.is_empty() {
        crashed.append(&mut failed);
        return verdict(State::Failed, crashed);
    }
    // The installer said it reached its end (IPMI 8, its dispatcher's last
    // step, every %post script run, its threads done) or the installed
    // system booted: a failure line before that was one the install
    // survived (a %post that exited non-zero without --erroronfail, an RPM
    // scriptlet, another process's crash or OOM kill), so it is finished,
    // and those lines are among its reasons. What the install does not
    // survive ends it before any of these: a crash dump (above), IPMI 0xA,
    // an abort, an --erroronfail script.
    if !finished.is_empty() {
        finished.append(&mut failed);
        return verdict(State::Finished, finished);
    }
    if !failed.is_empty() {
        return verdict(State::Failed, failed);
    }
    let last = files.iter().map(|f| f.mtime).max().unwrap_or(i64::MIN);
    if now.saturating_sub(last) <= window {
        return verdict(State::Installing, Vec::new());
    }
    // Quiet for the window: at its last step that is its end (the copy of
    // the logs in /var/log/anaconda stops there); at any other stage it
    // is stalled (waiting at a prompt, a hung download...).
    let last_step: Vec<Reason> = install()
        .filter(|f| f.scanner.last_step.is_some())
        .map(|f| reason(f, &f.scanner.last_step))
        .collect();
    if !last_step.is_empty() {
        verdict(State::Finished, last_step)
    } else if progress.is_some() {
        verdict(State::Stalled, Vec::new())
    } else {
        verdict(State::Idle, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANA: Source = Source::AnacondaLog;

    #[test]
    fn newlines_are_counted() {
        let text = b"a\nbb\n\n\xff\n\x0a\x8a\x0b\n".repeat(37);
        assert_eq!(
            newlines(&text),
            text.iter().filter(|&&b| b == b'\n').count() as u64
        );
    }

    /// What the scanner must find: every line classified, one by one.
    fn reference(log: &[u8]) -> [Option<(u64, u64)>; 3] {
        let (mut out, mut offset) = ([None; 3], 0);
        let mut lines = log.split(|&b| b == b'\n').peekable();
        let mut number = 1;
        while let Some(line) = lines.next() {
            if lines.peek().is_none() {
                break; // no newline after it: not a line yet
            }
            let cut = &line[..line.len().min(MAX_LINE)];
            let slot = match classify(&String::from_utf8_lossy(cut), ANA) {
                Some(Signal::Failure(_)) => Some(0),
                Some(Signal::End(_)) => Some(1),
                Some(Signal::InstallDone) => Some(2),
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
            b"Reporting the IPMI event: 8",
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
                s.feed(&log[at..at + n], ANA);
                at += n;
            }
            let place = |f: &Option<Found>| f.as_ref().map(|f| (f.line, f.offset));
            let got = [place(&s.failure), place(&s.end), place(&s.install_done)];
            assert_eq!(got, reference(&log), "{:?}", String::from_utf8_lossy(&log));
            assert_eq!(s.scanned, log.len() as u64);
        }
    }

    #[test]
    fn invalid_bytes_keep_offsets_and_line_numbers() {
        let log = b"\xff\xfe one\n\x80 two\xc3\n\xe2\x82 three Out of memory: Killed x\xff\nend\n";
        for split in 0..log.len() {
            let mut s = Scanner::default();
            s.feed(&log[..split], ANA);
            s.feed(&log[split..], ANA);
            let f = s.failure.expect("found");
            assert_eq!((f.line, f.offset), (3, 14), "split at {split}");
            assert_eq!(f.text, b"\xe2\x82 three Out of memory: Killed x\xff");
            assert_eq!(s.scanned, log.len() as u64);
        }
    }

    fn scan_as(source: Source, chunks: &[&[u8]]) -> Scanner {
        let mut s = Scanner::default();
        for c in chunks {
            s.feed(c, source);
        }
        s
    }

    fn scan(chunks: &[&[u8]]) -> Scanner {
        scan_as(ANA, chunks)
    }

    #[test]
    fn lines_split_across_uploads_are_found_once_with_their_place() {
        let whole: &[u8] = b"one\ntwo\n12:00 Trace";
        let s = scan(&[whole, b"back (most recent call last):\nTraceback (again\n"]);
        let f = s.failure.clone().unwrap();
        assert_eq!((f.line, f.offset), (3, 8));
        assert_eq!(f.text, b"12:00 Traceback (most recent call last):");
        let all = b"one\ntwo\n12:00 Traceback (most recent call last):\nTraceback (again\n";
        let mut one = Scanner::default();
        for b in all.iter() {
            one.feed(std::slice::from_ref(b), ANA);
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
        s.feed(&junk, ANA);
        s.feed(b"\n", ANA);
        assert!(s.carry.capacity() <= 2 * MAX_LINE);
        s.feed(
            b"\x00\xff\xfe\x1b[31mOut of memory: Killed \x1b[0m\xc3",
            ANA,
        );
        s.feed(&vec![b'y'; 5000], ANA);
        s.feed(b"\n", ANA);
        let f = s.failure.unwrap();
        assert_eq!(f.line, 2);
        assert_eq!(f.offset, (1 << 20) + 1);
        assert_eq!(f.text.len(), MAX_LINE);
        assert!(f.text.starts_with(b"\x00\xff\xfe\x1b[31mOut of memory"));
        // A pattern past MAX_LINE in a long line is not seen: documented.
        let mut s = Scanner::default();
        s.feed(&vec![b'z'; MAX_LINE], ANA);
        s.feed(b"Kernel panic - not syncing\n", ANA);
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
        assert_eq!(derive(&facts(&files), now, 600).state, State::Installing);
        let files = [("anaconda.log", now - 601, quiet.clone())];
        assert_eq!(derive(&facts(&files), now, 600).state, State::Idle);
        assert_eq!(derive(&[], now, 600).state, State::Idle);

        // A crash dump arriving makes it failed, whatever else is there.
        let files = [
            ("anaconda.log", now, quiet.clone()),
            (
                "anaconda-tb-3xk1p",
                now,
                scan_as(
                    Source::CrashDump,
                    &[b"anaconda 34.25 exception report\nTraceback (most\n"],
                ),
            ),
            ("boot.log", now, Scanner::default()),
        ];
        let Verdict {
            state,
            reasons: why,
            ..
        } = derive(&facts(&files), now, 600);
        assert_eq!(state, State::Failed);
        assert_eq!(why[0].file, "anaconda-tb-3xk1p");
        assert_eq!(why[0].found.as_ref().unwrap().line, 2);

        // First-boot logs: finished; a panic in them is not an install's.
        let files = [
            ("anaconda.log", now - 9000, quiet.clone()),
            (
                "dmesg.log",
                now,
                scan_as(Source::FirstBoot, &[b"[ 3.1] Kernel panic - not syncing\n"]),
            ),
        ];
        let Verdict {
            state,
            reasons: why,
            ..
        } = derive(&facts(&files), now, 600);
        assert_eq!(
            (state, why[0].file.as_str()),
            (State::Finished, "dmesg.log")
        );

        // The first boot wins over a failure the install survived (a %post
        // without --erroronfail that exited 1): finished, and the failure
        // is among the reasons.
        let files = [
            (
                "program.log",
                now,
                scan_as(
                    Source::Other,
                    &[b"Error code 1 running the kickstart script at line 9\n"],
                ),
            ),
            ("messages", now, Scanner::default()),
        ];
        let Verdict {
            state,
            reasons: why,
            ..
        } = derive(&facts(&files), now, 600);
        assert_eq!(state, State::Finished);
        assert_eq!(why[0].why, "the first boot's logs arrived");
        assert_eq!(why[1].why, "a kickstart %pre/%post script failed");

        // So does IPMI 8 after an RPM scriptlet's error; a crash dump still
        // wins over IPMI 8.
        let survived = scan(&[
            b"Error in POSTIN scriptlet in rpm package foo\n",
            b"Reporting the IPMI event: 8\n",
        ]);
        let files = [("anaconda.log", now, survived.clone())];
        assert_eq!(derive(&facts(&files), now, 600).state, State::Finished);
        let files = [
            ("anaconda.log", now, survived),
            (
                "anaconda-tb-3xk1p",
                now,
                scan_as(Source::CrashDump, &[b"x\n"]),
            ),
        ];
        assert_eq!(derive(&facts(&files), now, 600).state, State::Failed);

        // RHEL 7: the install thread, then the configuration thread.
        let done =
            scan(&[b"Running Thread: AnaInstallThread (1)\nThread Done: AnaInstallThread (1)\n"]);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, done)]), now, 600).state,
            State::Finished
        );
        let el7 = scan(&[
            b"Thread Done: AnaInstallThread (1)\nRunning Thread: AnaConfigurationThread (2)\n",
        ]);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, el7.clone())]), now, 600).state,
            State::Installing
        );
        let mut el7_done = el7;
        el7_done.feed(b"Thread Done: AnaConfigurationThread (2)\n", ANA);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, el7_done)]), now, 600).state,
            State::Finished
        );

        // IPMI: 9 alone is an abort; 8 then 9 is the TUI quitting after a
        // finished install; 8 then a crash dump is a failure.
        let abort = scan(&[b"INF core.util: Reporting the IPMI event: 9\n"]);
        let Verdict {
            state,
            reasons: why,
            ..
        } = derive(&facts(&[("anaconda.log", now, abort)]), now, 600);
        assert_eq!(
            (state, why[0].why),
            (
                State::Failed,
                "Anaconda reported the install aborted (IPMI 0x9)"
            )
        );
        let tui = scan(&[
            b"INF core.util: Reporting the IPMI event: 8\n",
            b"INF core.util: Reporting the IPMI event: 9\n",
        ]);
        assert_eq!(
            derive(&facts(&[("anaconda.log", now, tui.clone())]), now, 600).state,
            State::Finished
        );
        let tb = scan_as(Source::CrashDump, &[b"anaconda 43.44 exception report\n"]);
        let files = [
            ("anaconda.log", now, tui),
            ("anaconda-tb-yj11b8m4", now, tb),
        ];
        assert_eq!(derive(&facts(&files), now, 600).state, State::Failed);
    }
}
