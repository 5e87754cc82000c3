//! When the daemon may send the next upload of a file: live where it
//! matters, cheap for the server everywhere else.
//!
//! Real installer logs are written in many short bursts separated by long
//! quiet spells (`shared/REAL-INSTALLS.md`). Every request costs Cobbler
//! about a millisecond of CPU and a line in its log, whatever it carries, so
//! shipping every burst as it happens costs the server more than Python
//! anamon's whole-file resends every 5 s. So:
//!
//! - after a quiet spell of the whole install (no file had bytes to ship
//!   for a cadence), the first change ships at once: a hang or an error
//!   shows up within milliseconds;
//! - while the install is busy, a file's new bytes gather from the moment
//!   they are first seen until a cadence later, less the server's recent
//!   answer time, and then go in one upload: the line that started the
//!   gathering is on the server a cadence after it was written, and every
//!   later one sooner. Counting from the first unsent line, not from the
//!   last upload, lets each upload carry a whole cadence of writes: on the
//!   genuine-shaped replays this takes a fifth fewer requests for the same
//!   longest wait (`ci/bench/README.md`);
//! - a file whose gathering would end within an eighth of the cadence goes
//!   along with an upload that goes now (see [`Batch`]): a request right
//!   after another costs Cobbler about half the CPU of one after a pause,
//!   and the agent one wake-up instead of two;
//! - a backlog (a crash dump written at once) goes chunk after chunk;
//! - all paced uploads together stay within a request-rate budget that
//!   follows what the server keeps up with: as many as would keep it busy
//!   3/4 of the time at its recent answer times, and never fewer than the
//!   configured floor. An idle server's quick answers let fifteen busy
//!   files each ship once per cadence;
//! - on evidence that the server struggles — an answer much slower than it
//!   recently gave for a chunk of that size, a failure, a reset — the
//!   cadence widens and the budget shrinks, up to 16-fold, and they narrow
//!   again as answers come back quick. A large chunk's answer is compared
//!   with earlier large chunks', never with a line's, so one slow answer to
//!   a large chunk is no evidence. (A fault about one file backs off that
//!   file alone: see `watched::Hold`.)
//!
//! `--min-interval MS` replaces all of it with the older fixed rule (after
//! an upload that caught the file up, the next waits MS). `--exit` and the
//! final flush are never paced.

use std::time::{Duration, Instant};

/// How the daemon paces uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// The default: after a quiet spell the first change ships at once;
    /// in a busy install new bytes gather for `cadence` (less the server's
    /// answer time); all files together within `per_second` paced
    /// requests.
    Adaptive { cadence: Duration, per_second: u32 },
    /// `--min-interval`: after an upload that caught a file up, its next
    /// upload waits this long. No budget, no widening.
    Fixed(Duration),
}

/// The default cadence: how long after it was written a line of a busy
/// install is on the server, answer included, while the server keeps up.
/// It leaves 100 ms of the 2 s a line may take for a late timer and an
/// answer slower than the recent ones. Chosen from replays of genuine
/// installs' logs by their own times (`ci/bench/run --genuine-logs`, RHEL
/// 8.3 and Rocky 9.1 at 5x) and of the synthetic genuine-shaped and
/// Rocky-dense replays; the figures are in ci/bench/README.md. Fifteen
/// files busy at once need 15 requests per cadence whatever the rule, so
/// the cadence alone decides whether the densest install costs fewer
/// requests than Python anamon's 5 s polls: at 1.8 s it cost as many.
pub(crate) const DEFAULT_CADENCE: Duration = Duration::from_millis(1900);
/// The default floor of the budget: paced requests per second, all files
/// together, that the budget allows however slow the server's answers.
pub(crate) const DEFAULT_PER_SECOND: u32 = 4;
/// How many paced requests may go back to back before the budget bites.
const BURST: u32 = 4;
/// The share of its time the budget lets paced requests keep the server
/// busy, at its recent answer times: 3/4 (as a fraction, LOAD_SHARE.0 /
/// LOAD_SHARE.1). One agent sends one request at a time, so it alone can
/// never keep the server busier than that; the rest is headroom for the
/// answers of a server that slows (which then widens the pace).
const LOAD_SHARE: (u32, u32) = (3, 4);
/// An answer is evidence of trouble when slower than `SLOWER_BY` times the
/// server's recent answers to chunks of that size, plus this.
const SLOW_MARGIN: Duration = Duration::from_millis(300);
const SLOWER_BY: u32 = 3;
/// Slow answers in a row that widen the pace one step (each further one in
/// the row widens it again): one descheduled answer on a busy machine is no
/// evidence.
const SLOW_TO_WIDEN: u32 = 2;
/// The widest pace: cadence × 2^4, budget ÷ 2^4.
const MAX_WIDEN: u32 = 4;
/// Quick answers in a row that narrow the pace one step.
const QUICK_TO_NARROW: u32 = 4;
/// Chunk sizes are compared within classes 8-fold wide (up to 8 B, 64 B,
/// ... 2 MiB): a line's upload with a line's.
const SIZE_CLASSES: usize = 8;

/// A gathering file whose time is at most `interval / ALONG_SHARE` away
/// goes along with uploads that go now: 237 ms at the default cadence. It
/// loses that much of its gathering at most. On the Rocky-dense replay an
/// eighth made 120-121 requests, as a twelfth did, in 38-40 bursts instead
/// of 49-52; a sixth made 125 (`ci/bench/README.md`).
pub(crate) const ALONG_SHARE: u32 = 8;

/// Whether uploads are going in the pass that asks when a file is due.
///
/// Cobbler's server starts a thread and takes a connection for every
/// request: one right after another costs it little more than half the
/// CPU of one after a pause of 50 ms or more (`ci/bench/run --peer-spacing`:
/// 0.63–0.70 against 1.12–1.28 ms on Cobbler 4.0.0b7), and the agent wakes
/// once for both. So a file that is nearly due goes along instead of alone
/// a moment later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Nothing goes in this pass so far: each file goes at its own time.
    Alone,
    /// An upload went in this pass, or one came due: files nearly due go
    /// along.
    Going,
}

/// What the pacing knows of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum FilePace {
    /// Not looked at yet: what a file holds when the agent first finds it
    /// goes at once (it was written before anyone could ship it). Found
    /// empty, it is caught up.
    #[default]
    Fresh,
    /// The last upload was a full chunk: more is waiting behind it.
    Backlog,
    /// The last upload gave the server all the file had, at this instant,
    /// and no newer bytes have been seen since.
    CaughtUp(Instant),
    /// Bytes newer than the last upload were first seen at this instant,
    /// while the install was busy: they gather until their cadence is up.
    Gathering(Instant),
}

impl FilePace {
    /// After an upload of `len` bytes out of chunks of at most `chunk`.
    pub(crate) fn after_upload(len: usize, chunk: usize, now: Instant) -> FilePace {
        if len >= chunk {
            FilePace::Backlog
        } else {
            FilePace::CaughtUp(now)
        }
    }
}

/// The daemon's pace: the per-file rule, the shared budget, and how wide
/// the server's health makes both.
#[derive(Debug)]
pub(crate) struct Pacer {
    pacing: Pacing,
    /// The pace is 2^widen times slower than configured.
    widen: u32,
    quick_in_a_row: u32,
    slow_in_a_row: u32,
    /// The budget as a "theoretical arrival time" (GCRA): a paced request
    /// may go when this is at most `BURST` intervals ahead of now.
    budget_at: Option<Instant>,
    /// The server's recent answer time per size class: the quick end of
    /// what it gave (a quicker answer replaces it at once, a slower one
    /// moves it a sixteenth of the way: a server that stays slower for
    /// long is, after a while, the usual one).
    usual: [Option<Duration>; SIZE_CLASSES],
    /// The server's recent answer time, any size (a moving average).
    recent: Option<Duration>,
    /// When a file last had bytes to ship (a paced upload went, or a pass
    /// found new bytes): the install is quiet once this is a cadence old.
    last_busy: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(pacing: Pacing) -> Pacer {
        Pacer {
            pacing,
            widen: 0,
            quick_in_a_row: 0,
            slow_in_a_row: 0,
            budget_at: None,
            usual: [None; SIZE_CLASSES],
            recent: None,
            last_busy: None,
        }
    }

    /// When a file with new bytes may next be uploaded on its own (now or
    /// earlier: at once).
    #[cfg(test)]
    pub(crate) fn due(&self, pace: FilePace, now: Instant) -> Instant {
        self.due_in(pace, now, Batch::Alone)
    }

    /// When a file with new bytes may next be uploaded, in a pass where
    /// `batch` says whether others go (now or earlier: at once). Going
    /// along never jumps the budget.
    pub(crate) fn due_in(&self, pace: FilePace, now: Instant, batch: Batch) -> Instant {
        let after = match (self.pacing, pace) {
            (_, FilePace::Backlog) => return now,
            (_, FilePace::Fresh) => now,
            (Pacing::Fixed(d), FilePace::CaughtUp(at) | FilePace::Gathering(at)) => return at + d,
            (Pacing::Adaptive { .. }, FilePace::CaughtUp(_)) if self.is_quiet(now) => now,
            // Bytes seen now would gather from now: see `saw_news`.
            (Pacing::Adaptive { cadence, .. }, FilePace::CaughtUp(_)) => {
                now + self.gathering_time(cadence)
            }
            (Pacing::Adaptive { cadence, .. }, FilePace::Gathering(since)) => {
                // Gathering takes at least 3/4 of the interval, so going
                // along never goes before the bytes were seen.
                let own = since + self.gathering_time(cadence);
                match batch {
                    Batch::Alone => own,
                    Batch::Going => own - self.interval() / ALONG_SHARE,
                }
            }
        };
        match self.pacing {
            Pacing::Adaptive { .. } => after.max(self.budget_free_at(now)),
            Pacing::Fixed(_) => after,
        }
    }

    /// A pass found bytes the server lacks in a file that is not due yet:
    /// a caught-up file starts gathering them now.
    pub(crate) fn saw_news(&mut self, pace: &mut FilePace, now: Instant) {
        self.last_busy = Some(now);
        if let (Pacing::Adaptive { .. }, FilePace::CaughtUp(_)) = (self.pacing, *pace) {
            *pace = FilePace::Gathering(now);
        }
    }

    /// A look at a file found nothing to send: the server has all it
    /// holds (an empty file the installer made ahead, or what gathered is
    /// gone), so its next bytes are paced like any caught-up file's.
    /// (`--min-interval` counts only from uploads.)
    pub(crate) fn nothing_to_send(&self, pace: &mut FilePace, now: Instant) {
        if let (Pacing::Adaptive { .. }, FilePace::Fresh | FilePace::Gathering(_)) =
            (self.pacing, *pace)
        {
            *pace = FilePace::CaughtUp(now);
        }
    }

    /// Whether no file has had bytes to ship for a cadence (widened).
    fn is_quiet(&self, now: Instant) -> bool {
        self.last_busy
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval())
    }

    /// How long new bytes of a busy install gather before their upload:
    /// the cadence, less the server's recent answer time (at most a quarter
    /// of the cadence), so that the line that started the gathering is on
    /// the server a cadence after it was written.
    fn gathering_time(&self, cadence: Duration) -> Duration {
        self.interval() - self.recent.unwrap_or_default().min(cadence / 4)
    }

    /// Records that a paced upload (one that was not a backlog's next
    /// chunk) is being sent now.
    pub(crate) fn spend(&mut self, pace: FilePace, now: Instant) {
        self.last_busy = Some(now);
        if pace == FilePace::Backlog {
            return;
        }
        if let Some(step) = self.budget_step() {
            let from = self.budget_at.map_or(now, |t| t.max(now));
            self.budget_at = Some(from + step);
        }
    }

    /// The server answered an upload of `len` bytes after `took`.
    pub(crate) fn answered(&mut self, took: Duration, len: usize) {
        self.recent = Some(self.recent.map_or(took, |r| (r * 7 + took) / 8));
        let class = size_class(len);
        let usual = self.usual[class];
        self.usual[class] = Some(match usual {
            Some(u) if took > u => u + (took - u) / 16,
            _ => took,
        });
        // Nothing to compare with (the first chunk of its size) is no
        // evidence either way.
        let Some(usual) = usual else {
            return;
        };
        if took > usual * SLOWER_BY + SLOW_MARGIN {
            self.quick_in_a_row = 0;
            self.slow_in_a_row += 1;
            if self.slow_in_a_row >= SLOW_TO_WIDEN {
                self.widen = (self.widen + 1).min(MAX_WIDEN);
            }
        } else {
            self.slow_in_a_row = 0;
            self.quick_in_a_row += 1;
            if self.quick_in_a_row >= QUICK_TO_NARROW {
                self.quick_in_a_row = 0;
                self.widen = self.widen.saturating_sub(1);
            }
        }
    }

    /// The server failed or reset the connection.
    pub(crate) fn trouble(&mut self) {
        self.quick_in_a_row = 0;
        self.widen = (self.widen + 1).min(MAX_WIDEN);
    }

    /// How much wider than configured the pace is now (1, 2, 4, 8 or 16).
    pub(crate) fn widening(&self) -> u32 {
        match self.pacing {
            Pacing::Adaptive { .. } => 1 << self.widen,
            Pacing::Fixed(_) => 1,
        }
    }

    fn interval(&self) -> Duration {
        match self.pacing {
            Pacing::Adaptive { cadence, .. } => cadence * self.widening(),
            Pacing::Fixed(d) => d,
        }
    }

    /// The budget's spacing between paced requests, widened: what keeps
    /// the server busy [`LOAD_SHARE`] of the time at its recent answer
    /// times, or the configured floor's spacing if that is shorter.
    fn budget_step(&self) -> Option<Duration> {
        match self.pacing {
            Pacing::Adaptive { per_second, .. } if per_second > 0 => {
                let floor = Duration::from_secs(1) / per_second;
                let keeps_up = self
                    .recent
                    .map_or(floor, |r| r * LOAD_SHARE.1 / LOAD_SHARE.0);
                Some(floor.min(keeps_up) * self.widening())
            }
            _ => None,
        }
    }

    fn budget_free_at(&self, now: Instant) -> Instant {
        match (self.budget_at, self.budget_step()) {
            (Some(at), Some(step)) => at.checked_sub(step * BURST).unwrap_or(now).max(now),
            _ => now,
        }
    }
}

/// Which class of chunk sizes `len` falls in (see [`SIZE_CLASSES`]).
fn size_class(len: usize) -> usize {
    let bits = (usize::BITS - len.leading_zeros()) as usize;
    (bits / 3).min(SIZE_CLASSES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CADENCE: Duration = Duration::from_millis(1000);

    fn adaptive() -> Pacer {
        Pacer::new(Pacing::Adaptive {
            cadence: CADENCE,
            per_second: 4,
        })
    }

    #[test]
    fn after_a_quiet_spell_changes_go_at_once_in_a_busy_install_they_gather() {
        let mut p = adaptive();
        let t0 = Instant::now();
        assert_eq!(p.due(FilePace::Fresh, t0), t0);
        p.spend(FilePace::Fresh, t0);
        // Shipped at t0: bytes seen 100 ms later gather for a cadence from
        // when they were seen...
        let mut pace = FilePace::CaughtUp(t0);
        let seen = t0 + Duration::from_millis(100);
        assert_eq!(p.due(pace, seen), seen + CADENCE);
        p.saw_news(&mut pace, seen);
        assert_eq!(pace, FilePace::Gathering(seen));
        // ...and later passes do not move that.
        assert_eq!(p.due(pace, seen + CADENCE / 2), seen + CADENCE);
        // After a quiet spell of the whole install longer than the
        // cadence, they go at once.
        let later = seen + Duration::from_secs(5);
        assert_eq!(p.due(FilePace::CaughtUp(seen), later), later);
        // The server's answer time comes off the gathering, so the first
        // line is on the server a cadence after it was seen.
        for _ in 0..20 {
            p.answered(Duration::from_millis(40), 300);
        }
        let mut pace = FilePace::CaughtUp(later);
        p.saw_news(&mut pace, later);
        assert_eq!(
            p.due(pace, later),
            later + CADENCE - Duration::from_millis(40)
        );
        // A backlog never waits.
        assert_eq!(p.due(FilePace::Backlog, t0), t0);
    }

    #[test]
    fn a_file_found_empty_is_paced_like_a_caught_up_one() {
        let t0 = Instant::now();
        let soon = t0 + Duration::from_millis(100);
        let mut p = adaptive();
        p.spend(FilePace::Fresh, t0); // another file's upload: the install is busy
        let mut pace = FilePace::Fresh;
        p.nothing_to_send(&mut pace, t0);
        assert_eq!(pace, FilePace::CaughtUp(t0));
        assert_eq!(p.due(pace, soon), soon + CADENCE, "its first line gathers");
        // --min-interval counts only from uploads: a file found empty
        // ships its first bytes at once.
        let fixed = Pacer::new(Pacing::Fixed(CADENCE));
        let mut pace = FilePace::Fresh;
        fixed.nothing_to_send(&mut pace, t0);
        assert_eq!(fixed.due(pace, soon), soon);
    }

    /// One file with unsent bytes takes its turn in a simulated pass, as
    /// `shipper::Link::step` does: not due, its bytes gather; due, it is
    /// uploaded now and the server answers `len` bytes after `answer`.
    /// Returns when the upload was answered, if it went.
    fn turn(
        p: &mut Pacer,
        pace: &mut FilePace,
        now: Instant,
        answer: Duration,
        len: usize,
    ) -> Option<Instant> {
        if p.due(*pace, now) > now {
            p.saw_news(pace, now);
            return None;
        }
        p.spend(*pace, now);
        p.answered(answer, len);
        let done = now + answer;
        *pace = FilePace::CaughtUp(done);
        Some(done)
    }

    /// Uploads of one file written at `writes` (offsets from the start),
    /// with a pass at each write and at each due time: the daemon's loop,
    /// with `Instant`s the test makes and a server that answers at once.
    fn uploads_of(p: &mut Pacer, writes: &[Duration]) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut pace = FilePace::Fresh;
        let mut unsent = 0;
        let mut uploads = Vec::new();
        let mut next_write = writes.iter().map(|w| t0 + *w).peekable();
        let mut due: Option<Instant> = None;
        loop {
            let now = match (next_write.peek(), due) {
                (Some(&w), Some(d)) => w.min(d),
                (Some(&w), None) => w,
                (None, Some(d)) => d,
                (None, None) => return uploads,
            };
            while next_write.next_if(|w| *w <= now).is_some() {
                unsent += 1;
            }
            if unsent == 0 {
                due = None;
                continue;
            }
            if turn(p, &mut pace, now, Duration::ZERO, 100).is_some() {
                uploads.push(now - t0);
                unsent = 0;
                due = None;
            } else {
                due = Some(p.due(pace, now));
            }
        }
    }

    #[test]
    fn a_busy_file_gathers_from_its_first_unsent_line_not_from_its_last_upload() {
        let ms = Duration::from_millis;
        // A line at 0 (after quiet: at once), then lines at 0.9, 1.5 and
        // 2.6 cadences. Counting from the last upload would ship at 0, 1,
        // 2 and 3 cadences; gathering from the first unsent line ships
        // lines 2 and 3 together at 1.9 cadences, line 4 at 3.6.
        let uploads = uploads_of(&mut adaptive(), &[ms(0), ms(900), ms(1500), ms(2600)]);
        assert_eq!(uploads, [ms(0), ms(1900), ms(3600)]);
    }

    #[test]
    fn the_budget_bounds_paced_requests_of_all_files_together() {
        let mut p = adaptive();
        let t0 = Instant::now();
        // Many fresh files: BURST + 1 go at once, then one per 250 ms.
        let mut sent = Vec::new();
        let mut now = t0;
        while sent.len() < 20 {
            let due = p.due(FilePace::Fresh, now);
            now = now.max(due);
            p.spend(FilePace::Fresh, now);
            sent.push(now);
        }
        let in_first_second = sent
            .iter()
            .filter(|t| **t < t0 + Duration::from_secs(1))
            .count();
        assert!(
            in_first_second <= (BURST + 4) as usize,
            "{in_first_second} in the first second"
        );
        let span = *sent.last().unwrap() - sent[0];
        assert!(
            span >= Duration::from_millis(250) * (20 - BURST - 1),
            "{span:?}"
        );
        // Backlog chunks are not paced and spend nothing.
        let before = p.due(FilePace::Fresh, now);
        for _ in 0..100 {
            assert_eq!(p.due(FilePace::Backlog, now), now);
            p.spend(FilePace::Backlog, now);
        }
        assert_eq!(p.due(FilePace::Fresh, now), before);
    }

    #[test]
    fn a_nearly_due_file_goes_along_but_never_ahead_of_the_budget() {
        let mut p = adaptive();
        let t0 = Instant::now();
        let along = CADENCE / ALONG_SHARE;
        let gathering = FilePace::Gathering(t0);
        assert_eq!(p.due_in(gathering, t0, Batch::Alone), t0 + CADENCE);
        assert_eq!(p.due_in(gathering, t0, Batch::Going), t0 + CADENCE - along);
        // Only a gathering file goes sooner.
        p.spend(FilePace::Fresh, t0);
        let caught_up = FilePace::CaughtUp(t0);
        assert_eq!(
            p.due_in(caught_up, t0, Batch::Going),
            p.due_in(caught_up, t0, Batch::Alone)
        );
        // The budget still spaces what goes along.
        for _ in 0..BURST + 8 {
            p.spend(FilePace::Gathering(t0), t0);
        }
        let free = p.budget_free_at(t0);
        assert!(free > t0 + CADENCE - along, "{:?}", free - t0);
        assert_eq!(p.due_in(gathering, t0, Batch::Going), free);
        // --min-interval keeps its fixed rule.
        let fixed = Pacer::new(Pacing::Fixed(CADENCE));
        assert_eq!(fixed.due_in(gathering, t0, Batch::Going), t0 + CADENCE);
    }

    #[test]
    fn trouble_widens_and_quick_answers_narrow_again() {
        let mut p = adaptive();
        let t0 = Instant::now();
        for _ in 0..10 {
            p.trouble();
        }
        assert_eq!(p.widening(), 16);
        assert_eq!(p.due(FilePace::Gathering(t0), t0), t0 + CADENCE * 16);
        p.answered(Duration::from_secs(2), 100);
        assert_eq!(p.widening(), 16, "a slow answer does not narrow");
        for _ in 0..QUICK_TO_NARROW * MAX_WIDEN {
            p.answered(Duration::from_millis(3), 100);
        }
        assert_eq!(p.widening(), 1);
        p.answered(Duration::from_millis(700), 256 * 1024);
        assert_eq!(p.widening(), 1, "a big chunk may take longer");
        p.answered(Duration::from_secs(1), 100);
        assert_eq!(p.widening(), 1, "one slow answer is no evidence");
        p.answered(Duration::from_secs(1), 100);
        assert_eq!(p.widening(), 2, "slow answers in a row widen");
    }

    /// `files` files each get a 300-byte line every 100 ms for `secs` s of
    /// simulated time (`Instant`s the test makes, no sleeping); a pass every
    /// 5 ms sends each file whose pace is due, and the server answers after
    /// `answer`. Returns how long each line waited until its upload was
    /// answered, and the pacer.
    fn busy_files(files: usize, secs: u64, answer: Duration) -> (Vec<Duration>, Pacer) {
        let mut p = Pacer::new(Pacing::Adaptive {
            cadence: DEFAULT_CADENCE,
            per_second: DEFAULT_PER_SECOND,
        });
        let t0 = Instant::now();
        let tick = Duration::from_millis(5);
        let every = Duration::from_millis(100);
        let mut pace = vec![FilePace::Fresh; files];
        let mut next_write: Vec<Instant> = (0..files)
            .map(|i| t0 + Duration::from_millis(7 * i as u64))
            .collect();
        let mut unsent: Vec<Vec<Instant>> = vec![Vec::new(); files];
        let mut waited = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(secs) {
            for i in 0..files {
                while next_write[i] <= now {
                    unsent[i].push(next_write[i]);
                    next_write[i] += every;
                }
                if unsent[i].is_empty() {
                    continue;
                }
                if let Some(done) = turn(&mut p, &mut pace[i], now, answer, 300 * unsent[i].len()) {
                    waited.extend(unsent[i].drain(..).map(|w| done - w));
                }
            }
            now += tick;
        }
        (waited, p)
    }

    #[test]
    fn fifteen_busy_files_on_an_idle_server_ship_every_line_within_two_seconds() {
        // The densest genuine install: 15 files busy at once, a server that
        // answers in 5 ms. The budget must not hold lines back.
        let (mut waited, p) = busy_files(15, 60, Duration::from_millis(5));
        waited.sort();
        let p99 = waited[waited.len() * 99 / 100];
        let worst = *waited.last().unwrap();
        assert!(
            worst <= Duration::from_secs(2),
            "{} lines: p99 {p99:?}, worst {worst:?}",
            waited.len()
        );
        assert_eq!(p.widening(), 1);
    }

    #[test]
    fn a_server_slower_than_it_was_is_backed_off() {
        let mut p = adaptive();
        let t0 = Instant::now();
        for _ in 0..20 {
            p.answered(Duration::from_millis(5), 300);
        }
        // A large chunk's first answer is compared with nothing: no evidence.
        p.answered(Duration::from_secs(2), 256 * 1024);
        assert_eq!(p.widening(), 1);
        // Lines answered 1 s late, where they took 5 ms: the server
        // struggles, and the pace and the budget widen.
        let step_before = p.budget_step().unwrap();
        // One slow answer between quick ones (a descheduled server on a
        // busy machine) is no evidence either.
        p.answered(Duration::from_secs(1), 300);
        p.answered(Duration::from_millis(5), 300);
        assert_eq!(p.widening(), 1);
        for _ in 0..3 {
            p.answered(Duration::from_secs(1), 300);
        }
        assert!(p.widening() >= 4, "{}", p.widening());
        assert!(p.due(FilePace::Gathering(t0), t0) >= t0 + CADENCE * 3);
        assert!(p.budget_step().unwrap() > step_before);
        // Once answers are as quick as before, the pace narrows again.
        for _ in 0..QUICK_TO_NARROW * MAX_WIDEN {
            p.answered(Duration::from_millis(5), 300);
        }
        assert_eq!(p.widening(), 1);
    }

    #[test]
    fn a_slow_server_keeps_the_budget_floor() {
        // Answers of 400 ms: 3/4 of the server's time is 1.9 requests/s, but
        // the configured floor (4/s) still holds.
        let mut p = adaptive();
        for _ in 0..10 {
            p.answered(Duration::from_millis(400), 300);
        }
        assert_eq!(p.budget_step(), Some(Duration::from_millis(250)));
        // Quick answers let more through.
        for _ in 0..40 {
            p.answered(Duration::from_millis(4), 300);
        }
        assert!(p.budget_step().unwrap() < Duration::from_millis(50));
    }

    #[test]
    fn min_interval_keeps_its_fixed_meaning() {
        let mut p = Pacer::new(Pacing::Fixed(Duration::from_millis(20)));
        let t0 = Instant::now();
        for _ in 0..5 {
            p.trouble();
            p.spend(FilePace::Fresh, t0);
        }
        assert_eq!(p.widening(), 1);
        assert_eq!(p.due(FilePace::Fresh, t0), t0);
        assert_eq!(
            p.due(FilePace::CaughtUp(t0), t0),
            t0 + Duration::from_millis(20)
        );
    }
}
