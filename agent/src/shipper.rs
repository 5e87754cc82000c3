//! Delivery: for each watched file in turn, what is due, the next chunk,
//! and its delivery; and what to do when the server fails. The file on disk
//! is the buffer, so a failure only delays; nothing is ever dropped.

use crate::backoff::{Backoff, BACKOFF_CAP};
use crate::client::{Client, Refusal, Upload};
use crate::cursor::{Chunk, Problem};
use crate::error::Error;
use crate::pacing::{Batch, FilePace, Pacer};
use crate::transport::Transport;
use crate::watched::{Hold, Repair, WatchedFile};
use std::path::Path;
use std::time::{Duration, Instant};

/// Python anamon's chunk size, and Cobbler's expectation of it.
pub(crate) const CHUNK: usize = 256 * 1024;

/// How long after its last upload a quiet file keeps its descriptor open
/// (see `cursor::Handle`): longer than the pace, so a busy log is opened
/// once, not once per upload. It is let go at the first pass after that,
/// whatever starts it: no timer wakes the agent for it, so an idle agent
/// does not wake at all. An installer writes its own logs (in /tmp) as it
/// tears storage down, so that pass comes before `/mnt/sysimage` is
/// unmounted.
const KEEP_OPEN: Duration = Duration::from_secs(3);

/// What kind of pass: how long it may take, whether it is paced, what a
/// shutdown signal does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// The daemon: paced, no deadline; `stop` ends it.
    Daemon { stop: Stop },
    /// `--exit`: unpaced, until `deadline`; `stop` ends it.
    Once { deadline: Instant, stop: Stop },
    /// After a shutdown signal: unpaced, until `deadline`; a file the
    /// server faulted on gets one last try.
    Flush { deadline: Instant },
}

/// What the daemon hears of writes between its looks at the files.
pub(crate) trait Changes {
    /// Whether `path` is known unchanged since a pass last looked at it.
    fn unchanged(&self, path: &Path) -> bool;
    /// Takes in what was reported since the pass started, before another
    /// round of it looks at the files.
    fn catch_up(&mut self);
}

/// Hears of nothing: every file is looked at (a stat) in every round.
pub(crate) struct LookAtAll;

impl Changes for LookAtAll {
    fn unchanged(&self, _: &Path) -> bool {
        false
    }

    fn catch_up(&mut self) {}
}

/// Whether a round must end before its next request (a shutdown signal
/// came): asked before each one, since a signal may come in mid-pass. The
/// round carries it, so the shipper asks whoever started the round.
#[derive(Clone, Copy)]
pub(crate) struct Stop(fn() -> bool);

impl Stop {
    /// A shutdown signal to the process.
    pub(crate) const ON_SIGNAL: Stop = Stop(crate::sys::shutdown_requested);

    fn requested(self) -> bool {
        (self.0)()
    }
}

impl PartialEq for Stop {
    fn eq(&self, other: &Stop) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for Stop {}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stop")
    }
}

impl Round {
    /// The daemon's round, ended by a shutdown signal.
    pub(crate) const DAEMON: Round = Round::Daemon {
        stop: Stop::ON_SIGNAL,
    };

    fn deadline(self) -> Option<Instant> {
        match self {
            Round::Daemon { .. } => None,
            Round::Once { deadline, .. } | Round::Flush { deadline } => Some(deadline),
        }
    }

    /// Whether uploads wait for their pace (only the daemon's do).
    pub(crate) fn is_paced(self) -> bool {
        matches!(self, Round::Daemon { .. })
    }

    /// Whether the round must end now.
    fn must_stop(self) -> bool {
        match self {
            Round::Daemon { stop } | Round::Once { stop, .. } => stop.requested(),
            Round::Flush { .. } => false,
        }
    }

    /// How many of a repair's re-sends this round makes: the flush has no
    /// time for them, and `--exit` waits only for the first.
    fn repair_stages(self) -> usize {
        match self {
            Round::Daemon { .. } => Repair::ALL,
            Round::Once { .. } => 1,
            Round::Flush { .. } => 0,
        }
    }
}

/// How a pass ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The server has every byte of every readable file.
    Done,
    /// The server is answering and has every byte it can take now; files
    /// that wait (their pace, a hold after a fault, a repair) are due at
    /// this instant. Writes to the other files are shipped meanwhile.
    Waiting { until: Instant },
    /// The server failed; try again at this instant.
    Failed { retry_at: Instant },
    /// The final flush: what is left are files the server faulted on, and
    /// each has had its last try.
    HeldBack,
    /// The deadline passed or a shutdown signal came with bytes pending.
    Interrupted,
}

/// What one file's turn in a pass came to.
enum Step {
    /// Something happened that may let more happen: go round again.
    Progress,
    /// An upload gave the server all the file had when it was read.
    CaughtUp,
    Idle,
    /// The file has bytes to send at this instant (its pace, or a hold):
    /// further writes to it change nothing until then.
    Wait(Instant),
    /// Something is due for the file at this instant (a repair), though it
    /// has no new bytes: writes to it still matter.
    Timer(Instant),
    /// The final flush gave up on this file after its last try.
    HeldBack,
    /// The pass ends here.
    Stop(Pass),
}

/// Whether a chunk carries new bytes or ones the server already has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Payload {
    New,
    Again,
}

pub(crate) struct Shipper<T> {
    files: Vec<WatchedFile>,
    link: Link<T>,
    /// Files that ended the last pass waiting with bytes to send.
    waiting: Vec<usize>,
    /// The files a round visits, and those it caught up: kept across
    /// passes, so a pass allocates nothing.
    revisit: Vec<usize>,
    caught_up: Vec<usize>,
    /// The instant the last pass said it waits for: a pass that starts
    /// there was woken by its timer, so something goes in it.
    due_at: Option<Instant>,
}

/// The way to the server, shared by every file: the client, the pace, the
/// backoff after failures. Each file's turn borrows that one file.
struct Link<T> {
    client: Client<T>,
    system: String,
    timeout: Duration,
    pacer: Pacer,
    backoff: Backoff,
    /// The kind of failure last reported, so an outage is logged when it
    /// starts, when its nature changes, and when it ends: not per retry.
    outage: Option<&'static str>,
    /// The bytes of the chunk in hand, kept across uploads.
    buf: Vec<u8>,
}

impl<T: Transport> Shipper<T> {
    pub(crate) fn new(
        client: Client<T>,
        system: String,
        files: Vec<WatchedFile>,
        timeout: Duration,
        pacer: Pacer,
    ) -> Shipper<T> {
        Shipper {
            files,
            link: Link {
                client,
                system,
                timeout,
                pacer,
                backoff: Backoff::new(),
                outage: None,
                buf: Vec::with_capacity(CHUNK),
            },
            waiting: Vec::new(),
            revisit: Vec::new(),
            caught_up: Vec::new(),
            due_at: None,
        }
    }

    pub(crate) fn add(&mut self, file: WatchedFile) {
        self.files.push(file);
    }

    /// Files that exist but cannot be shipped.
    pub(crate) fn unshippable(&self) -> usize {
        self.files.iter().filter(|f| f.is_unshippable()).count()
    }

    /// The files (by index) that ended the last pass with bytes waiting
    /// for a known time: more writes to them change nothing until then.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().copied()
    }

    /// The path of the file with this index.
    pub(crate) fn path(&self, i: usize) -> &Path {
        &self.files[i].path
    }

    /// Sends everything due, one chunk per file in turn so a busy log
    /// cannot starve the others, until nothing is due, the server fails, or
    /// the round's time is up.
    pub(crate) fn pass(&mut self, round: Round) -> Pass {
        self.pass_except_unchanged(round, &mut LookAtAll)
    }

    /// [`pass`](Self::pass), told which files are known to be unchanged
    /// since the last pass looked at them (inotify listened, and no write
    /// came): those are not stat'ed. In a busy install a wake-up is one
    /// file's write, and the others need no look.
    pub(crate) fn pass_except_unchanged(
        &mut self,
        round: Round,
        changes: &mut impl Changes,
    ) -> Pass {
        let mut until: Option<Instant> = None;
        let mut held_back = false;
        // Whether this round visits only the files the last one caught up.
        let mut short_round = false;
        let mut first_round = true;
        let mut batch = match self.due_at.take() {
            Some(t) if t <= Instant::now() => Batch::Going,
            _ => Batch::Alone,
        };
        loop {
            let mut progress = false;
            if !short_round && !first_round {
                // The uploads since the wake-up took time (a backlog's
                // chunks, a slow server): what was written meanwhile must
                // not wait for the pass to end.
                changes.catch_up();
            }
            first_round = false;
            if short_round {
                std::mem::swap(&mut self.caught_up, &mut self.revisit);
            } else {
                // Every file each full round, even while one has a
                // backlog: a write to another file may have come since,
                // and must not wait for the backlog (a 5 GiB file) to go.
                self.revisit.clear();
                self.revisit.extend(0..self.files.len());
                self.waiting.clear();
                until = None;
                held_back = false;
            }
            self.caught_up.clear();
            let batch_was = batch;
            for k in 0..self.revisit.len() {
                let i = self.revisit[k];
                let f = &mut self.files[i];
                let look = !changes.unchanged(&f.path);
                match self.link.step(f, round, look, batch) {
                    Step::Progress => {
                        progress = true;
                        batch = Batch::Going;
                    }
                    Step::CaughtUp => {
                        self.caught_up.push(i);
                        batch = Batch::Going;
                    }
                    Step::Idle => {}
                    Step::Wait(t) => {
                        self.waiting.push(i);
                        until = Some(until.map_or(t, |u| u.min(t)));
                    }
                    Step::Timer(t) => until = Some(until.map_or(t, |u| u.min(t))),
                    Step::HeldBack => held_back = true,
                    Step::Stop(pass) => return pass,
                }
            }
            // After uploads that only caught files up, the daemon looks
            // again at those files alone (their pace, a repair's timer): a
            // write to any other since then raised an inotify event, which
            // starts another pass, or the stat poll looks within a second.
            // A full round would stat every file again per upload, only to
            // find nothing. `--exit` and the flush look until nothing is
            // left. But after the first upload of a pass that a write
            // woke, the files this round passed before it get one more
            // look: those nearly due now go along.
            if progress || !self.caught_up.is_empty() {
                short_round = !progress && round.is_paced() && batch == batch_was;
                continue;
            }
            return match until {
                // It came due while this round went on: go again.
                Some(t) if t <= Instant::now() => {
                    short_round = false;
                    continue;
                }
                Some(until) => {
                    self.due_at = Some(until);
                    Pass::Waiting { until }
                }
                None if held_back => Pass::HeldBack,
                None => Pass::Done,
            };
        }
    }
}

impl<T: Transport> Link<T> {
    /// One file's turn: what is due, then the next chunk, then delivery.
    /// Unless `look` says so, the file is known unchanged since the last
    /// pass: a caught-up file then has nothing new, and one that waits
    /// needs no stat. `batch` says whether uploads go in this pass, which
    /// a nearly due file then joins.
    fn step(&mut self, f: &mut WatchedFile, round: Round, look: bool, batch: Batch) -> Step {
        let now = Instant::now();
        if let Some(step) = f.held_back(round, now) {
            return step;
        }
        let due = match round {
            Round::Daemon { .. } => self.pacer.due_in(f.pace, now, batch),
            _ => now,
        };
        if due > now {
            // A gathering file's news was seen already: no stat for it on
            // every pass while it waits.
            if matches!(f.pace, FilePace::Gathering(_)) || look && f.cursor.may_have_news(&f.path) {
                self.pacer.saw_news(&mut f.pace, now);
                // Its own time: going along early is for a pass that
                // sends anyway.
                return Step::Wait(match batch {
                    Batch::Alone => due,
                    Batch::Going => self.pacer.due_in(f.pace, now, Batch::Alone),
                });
            }
            if look {
                // Looked at, with nothing new: a fresh file found empty
                // while the budget was spent is caught up all the same,
                // or its first write would go at once, news or not.
                self.pacer.nothing_to_send(&mut f.pace, now);
            }
        } else if !look && matches!(f.pace, FilePace::CaughtUp(_)) {
            // The server has all it held, and nothing was written since.
        } else if let Some(chunk) = self.next_chunk(f) {
            return self.deliver(f, chunk, Payload::New, round);
        } else {
            self.pacer.nothing_to_send(&mut f.pace, now);
        }
        match self.repair(f, round, now) {
            Step::Idle => f.quiet(round, now),
            step => step,
        }
    }

    /// Reads the next chunk into `buf`; a file that cannot be read is
    /// reported (once) and skipped.
    fn next_chunk(&mut self, f: &mut WatchedFile) -> Option<Chunk> {
        match f.cursor.next_chunk(&f.path, CHUNK, &mut self.buf) {
            Ok(chunk) => {
                if let Some(p) = f.problem.take() {
                    if p != Problem::Missing {
                        info!("{}: readable again", f.path.display());
                    }
                }
                chunk
            }
            Err(p) => {
                report_problem(f, p);
                None
            }
        }
    }

    /// After an abandoned offset-0 request: once the file has caught up and
    /// a re-send is due, sends the next chunk of the bytes after that
    /// request's chunk again, at their own offsets.
    fn repair(&mut self, f: &mut WatchedFile, round: Round, now: Instant) -> Step {
        let Some(r) = &f.repair else {
            return Step::Idle;
        };
        let Some(due) = r
            .due(round.repair_stages())
            .filter(|d| round.deadline().is_none_or(|dl| *d < dl))
        else {
            return Step::Idle;
        };
        if due > now {
            return Step::Timer(due);
        }
        let at = r.next;
        match f.cursor.shipped_bytes_at(&f.path, at, CHUNK, &mut self.buf) {
            Ok(Some(chunk)) => self.deliver(f, chunk, Payload::Again, round),
            // Nothing after the chunk, or no longer the same file (its next
            // upload starts over at offset 0): this re-send is complete.
            Ok(None) => {
                debug!("{}: re-sent its bytes after offset {}", f.alias, r.from);
                Repair::finished_one(&mut f.repair);
                Step::Progress
            }
            Err(p) => {
                report_problem(f, p);
                Step::Idle
            }
        }
    }

    /// Uploads the chunk in `buf` and records what came of it.
    fn deliver(
        &mut self,
        f: &mut WatchedFile,
        chunk: Chunk,
        payload: Payload,
        round: Round,
    ) -> Step {
        let now = Instant::now();
        let Some(timeout) = self.time_left(round, now) else {
            return Step::Stop(Pass::Interrupted);
        };
        if payload == Payload::New && chunk.restart && f.cursor.shipped() > 0 {
            info!(
                "{}: replaced, truncated or changed in place; sending it again from the start",
                f.path.display()
            );
        }
        if round.is_paced() {
            self.pacer.spend(f.pace, now);
        }
        let up = Upload {
            system: &self.system,
            file: &f.alias,
            offset: chunk.offset,
            data: &self.buf,
        };
        match self.client.upload(&up, timeout) {
            Ok(confirmed) => {
                if let Some(wire) = confirmed {
                    info!("server accepts uploads as {wire}");
                }
                self.pacer.answered(now.elapsed(), chunk.len);
                let step = f.stored(&chunk, payload, &self.buf);
                self.backoff.reset();
                if let Some(kind) = self.outage.take() {
                    info!("server is taking uploads again (after: {kind}); resuming from each file's cursor");
                }
                step
            }
            // A fault is about this file (a receiver's cap, a lock, a planted
            // link): its own hold backs it off; the server itself is fine,
            // so the others keep their pace.
            Err(e @ Error::Fault { .. }) => f.faulted(&e, round),
            Err(Error::OffsetTooLarge) => {
                report_problem(f, Problem::TooLarge);
                Step::Idle
            }
            Err(e) => {
                f.not_stored(&chunk, payload, &e, timeout);
                if matches!(e, Error::Interrupted) {
                    return Step::Stop(Pass::Interrupted);
                }
                self.pacer.trouble();
                self.failed(&e, &f.alias, round)
            }
        }
    }

    /// How long the next request may take; `None` when the round is over.
    fn time_left(&self, round: Round, now: Instant) -> Option<Duration> {
        if round.must_stop() {
            return None;
        }
        match round.deadline() {
            None => Some(self.timeout),
            Some(d) => d
                .checked_duration_since(now)
                .filter(|left| !left.is_zero())
                .map(|left| left.min(self.timeout)),
        }
    }

    /// Records a failure of the server; logs it if it starts an outage or
    /// changes its kind. A refusal is looked into: the server's release may
    /// explain it, or send the agent to a receiver beside it.
    fn failed(&mut self, e: &Error, alias: &str, round: Round) -> Step {
        let kind = e.kind();
        if self.outage == Some(kind) {
            let delay = self.backoff.next(matches!(e, Error::Refused));
            debug!(
                "upload of {alias} failed again: {e}; next try in {} ms",
                delay.as_millis()
            );
            return Step::Stop(Pass::Failed {
                retry_at: Instant::now() + delay,
            });
        }
        let mut why = String::new();
        if matches!(e, Error::Refused) && !matches!(round, Round::Flush { .. }) {
            let probe = self.timeout.min(Duration::from_secs(5));
            match self.client.refusal(&self.system, probe) {
                Refusal::Rerouted { path, why } => {
                    info!("uploads now go to {path} on the same server: {why}");
                    return Step::Progress;
                }
                Refusal::Explained(w) => why = format!(" — {w}"),
            }
        }
        let delay = self.backoff.next(matches!(e, Error::Refused));
        info!(
            "upload of {alias} failed: {e}{why}; keeping the data on disk and retrying with backoff (at most every {} s)",
            BACKOFF_CAP.as_secs()
        );
        self.outage = Some(kind);
        Step::Stop(Pass::Failed {
            retry_at: Instant::now() + delay,
        })
    }
}

/// What a file's turn and an upload's outcome do to the file.
impl WatchedFile {
    /// A file with nothing to do lets go of its descriptor once it has been
    /// quiet for [`KEEP_OPEN`].
    fn quiet(&mut self, round: Round, now: Instant) -> Step {
        let keep =
            matches!(self.pace, FilePace::CaughtUp(at) if round.is_paced() && now < at + KEEP_OPEN);
        if !keep {
            self.cursor.release();
        }
        Step::Idle
    }

    /// `Some` when a fault holds the file back now.
    fn held_back(&self, round: Round, now: Instant) -> Option<Step> {
        let hold = self.hold.as_ref()?;
        match round {
            Round::Flush { .. } if hold.last_try_spent => Some(Step::HeldBack),
            Round::Flush { .. } => None,
            _ if now < hold.until => Some(Step::Wait(hold.until)),
            _ => None,
        }
    }

    /// The server stored the chunk in `buf`.
    fn stored(&mut self, chunk: &Chunk, payload: Payload, buf: &[u8]) -> Step {
        debug!(
            "{} -> {}: {} bytes at {}{}",
            self.path.display(),
            self.alias,
            chunk.len,
            chunk.offset,
            match payload {
                Payload::New => "",
                Payload::Again => " (re-sent)",
            }
        );
        let step = match payload {
            Payload::New => {
                self.cursor.commit(chunk, buf);
                self.pace = FilePace::after_upload(chunk.len, CHUNK, Instant::now());
                match self.pace {
                    FilePace::Backlog => Step::Progress,
                    _ => Step::CaughtUp,
                }
            }
            Payload::Again => {
                if let Some(r) = &mut self.repair {
                    r.next = chunk.offset + chunk.len as u64;
                }
                Step::Progress
            }
        };
        if self.hold.take().is_some() {
            info!("{}: the server takes it again", self.alias);
        }
        step
    }

    /// The server faulted on this file alone: it waits out its own hold.
    fn faulted(&mut self, e: &Error, round: Round) -> Step {
        let reason = e.to_string();
        if Hold::after_fault(&mut self.hold, reason.clone(), Instant::now()) {
            info!(
                "upload of {} failed: {reason}; retrying this file with backoff (at most every {} s), the others go on",
                self.alias,
                BACKOFF_CAP.as_secs()
            );
        } else {
            debug!("upload of {} failed again: {reason}", self.alias);
        }
        let hold = self.hold.as_mut().expect("just set");
        match round {
            Round::Flush { .. } => {
                hold.last_try_spent = true;
                Step::HeldBack
            }
            _ => Step::Wait(hold.until),
        }
    }

    /// The upload failed with the server (or the way to it): the file
    /// stays where it was, but an abandoned offset-0 request may still land
    /// and truncate the server's copy, so its repair is scheduled.
    fn not_stored(&mut self, chunk: &Chunk, payload: Payload, e: &Error, timeout: Duration) {
        if payload == Payload::New && chunk.offset == 0 && e.may_land_late() {
            Repair::after_abandoned(&mut self.repair, chunk.len, timeout, Instant::now());
        }
    }
}

/// Logs a file's problem when it starts or changes.
fn report_problem(f: &mut WatchedFile, p: Problem) {
    if f.problem.as_ref() != Some(&p) {
        match p {
            Problem::Missing => debug!("{}: {p}", f.path.display()),
            _ => info!("{}: {p}", f.path.display()),
        }
        f.problem = Some(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::{Scripted, FAULT, TRUE};
    use crate::client::{Route, Wire, WireChoice};
    use crate::pacing::{Pacing, ALONG_SHARE};
    use anamon_xmlrpc::Value;
    use std::cell::RefCell;
    use std::path::PathBuf;
    use std::rc::Rc;

    /// A server that faults on uploads of one file, stores the others, and
    /// keeps a log of (file, offset) of every upload it was sent.
    #[derive(Clone, Default)]
    struct Recording {
        fault_on: Option<&'static str>,
        calls: Rc<RefCell<Vec<(String, u64)>>>,
    }

    impl Transport for Recording {
        fn post(&mut self, _: &str, body: &[u8], _: Duration) -> Result<Vec<u8>, Error> {
            let call = anamon_xmlrpc::server::parse_call(body).expect("a well-formed call");
            let (Value::Str(file), Value::Int(offset)) = (&call.params[1], &call.params[3]) else {
                panic!("not an upload: {:?}", call.params);
            };
            let faulted = Some(file.as_str()) == self.fault_on;
            self.calls.borrow_mut().push((file.clone(), *offset as u64));
            Ok(if faulted {
                FAULT.as_bytes().to_vec()
            } else {
                TRUE.as_bytes().to_vec()
            })
        }
    }

    fn shipper<T: Transport>(t: T, dir: &Path, names: &[&str], pacing: Pacing) -> Shipper<T> {
        let files = names
            .iter()
            .map(|n| WatchedFile::new(dir.join(n), n.to_string()))
            .collect();
        let client = Client::new(t, WireChoice::Fixed(Wire::Binary), Route::Default);
        Shipper::new(
            client,
            "sys".into(),
            files,
            Duration::from_secs(1),
            Pacer::new(pacing),
        )
    }

    fn append(p: &PathBuf, b: &[u8]) {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .unwrap()
            .write_all(b)
            .unwrap();
    }

    fn sleep_until(t: Instant) {
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
    }

    #[test]
    fn min_interval_gathers_lines_but_never_slows_a_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let (log, burst) = (dir.path().join("program.log"), dir.path().join("burst.log"));
        append(&log, b"line 1\n");
        let server = Recording::default();
        let calls = server.calls.clone();
        let interval = Duration::from_millis(300);
        let mut s = shipper(
            server,
            dir.path(),
            &["program.log", "burst.log"],
            Pacing::Fixed(interval),
        );

        // A quiet file ships at once.
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert_eq!(calls.borrow().len(), 1);
        // Lines right after it wait for the interval, then go together.
        append(&log, b"line 2\n");
        append(&log, b"line 3\n");
        let Pass::Waiting { until } = s.pass(Round::DAEMON) else {
            panic!("a file shipped just now must wait out the interval");
        };
        assert_eq!(calls.borrow().len(), 1);
        assert!(until > Instant::now() && until <= Instant::now() + interval);
        assert_eq!(
            s.waiting().map(|i| s.path(i)).collect::<Vec<_>>(),
            [log.as_path()]
        );
        // A backlog in another file is not held back meanwhile.
        append(&burst, &vec![b'x'; 3 * CHUNK + 5]);
        assert!(matches!(s.pass(Round::DAEMON), Pass::Waiting { .. }));
        assert_eq!(calls.borrow().len(), 1 + 4, "four chunks back to back");
        sleep_until(until);
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert_eq!(calls.borrow().len(), 6, "lines 2 and 3 in one request");
        assert_eq!(s.files[0].cursor.shipped(), 21);
        // With a deadline (--exit, the flush at shutdown) nothing waits.
        append(&log, b"line 4\n");
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            s.pass(Round::Once {
                deadline: soon,
                stop: Stop::ON_SIGNAL,
            }),
            Pass::Done
        );
        assert_eq!(calls.borrow().len(), 7);
    }

    #[test]
    fn a_busy_install_gathers_lines_and_a_quiet_one_ships_them_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (busy, other) = (dir.path().join("busy.log"), dir.path().join("other.log"));
        let server = Recording::default();
        let calls = server.calls.clone();
        let cadence = Duration::from_millis(200);
        let pacing = Pacing::Adaptive {
            cadence,
            per_second: 100,
        };
        let mut s = shipper(server, dir.path(), &["busy.log", "other.log"], pacing);
        let uploads_of = |name: &str| calls.borrow().iter().filter(|(f, _)| f == name).count();
        append(&other, b"first line\n");
        s.pass(Round::DAEMON);
        assert_eq!(uploads_of("other.log"), 1, "the first line goes at once");
        let start = Instant::now();
        let mut next_line = start;
        // 30 lines 20 ms apart into busy.log, passes as the daemon runs them.
        for n in 0..30 {
            sleep_until(next_line);
            append(&busy, format!("line {n}\n").as_bytes());
            if n == 15 {
                // other.log has been quiet for longer than the cadence, but
                // the install is busy: its line gathers.
                append(&other, b"a line while busy.log is busy\n");
                s.pass(Round::DAEMON);
                assert_eq!(
                    uploads_of("other.log"),
                    1,
                    "a line of a busy install gathers"
                );
            }
            s.pass(Round::DAEMON);
            next_line += Duration::from_millis(20);
        }
        let wrote_for = start.elapsed();
        let busy_calls = uploads_of("busy.log");
        let bound = (wrote_for.as_millis() / cadence.as_millis()) as usize + 1;
        assert!(
            busy_calls <= bound,
            "{busy_calls} uploads of a file written for {wrote_for:?} (at most {bound})"
        );
        // What gathered goes when due...
        while let Pass::Waiting { until } = s.pass(Round::DAEMON) {
            sleep_until(until);
        }
        assert_eq!(uploads_of("other.log"), 2);
        // ...and after a quiet spell of the whole install, a change goes at once.
        sleep_until(Instant::now() + cadence + Duration::from_millis(50));
        append(&other, b"first line after a quiet spell\n");
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert_eq!(uploads_of("other.log"), 3);
        assert_eq!(
            s.files[1].cursor.shipped(),
            std::fs::metadata(&other).unwrap().len()
        );
    }

    #[test]
    fn files_found_empty_at_start_gather_their_first_lines_like_the_rest() {
        // The installer makes its logs before it writes them; the agent
        // starts among them, with one line in anaconda.log. However many
        // there are, each was looked at: its first lines, in a busy
        // install, are news to gather, not a find to ship at once. (The
        // budget ran out while the start's pass went through them, and
        // those after the one with a line stayed unlooked-at: each then
        // shipped its first write alone, 10 requests in one instant of
        // the Rocky-dense replay.)
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..15).map(|n| format!("{n:02}.log")).collect();
        for n in &names {
            append(&dir.path().join(n), b"");
        }
        append(&dir.path().join(&names[5]), b"first line\n");
        let server = Recording::default();
        let calls = server.calls.clone();
        let cadence = Duration::from_millis(300);
        let pacing = Pacing::Adaptive {
            cadence,
            per_second: 4,
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut s = shipper(server, dir.path(), &names, pacing);
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert_eq!(
            calls.borrow().len(),
            1,
            "the line that was there goes at once"
        );
        // A quiet spell, then the install writes to every file at once:
        // the first write after the quiet goes at once, the rest gather.
        sleep_until(Instant::now() + 2 * cadence);
        for n in &names {
            append(&dir.path().join(n), b"a line\n");
        }
        assert!(matches!(s.pass(Round::DAEMON), Pass::Waiting { .. }));
        assert_eq!(
            calls.borrow().len(),
            2,
            "one goes at once, the others gather"
        );
        while let Pass::Waiting { until } = s.pass(Round::DAEMON) {
            sleep_until(until);
        }
        for (f, n) in s.files.iter().zip(&names) {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert_eq!(f.cursor.shipped(), len, "{n}");
        }
    }

    #[test]
    fn a_file_nearly_due_goes_along_with_an_upload_that_goes() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["b.log", "a.log", "c.log"];
        for n in names {
            append(&dir.path().join(n), b"a line\n");
        }
        let server = Recording::default();
        let calls = server.calls.clone();
        let cadence = Duration::from_millis(1200);
        // No budget: pacing's own tests show that going along never jumps it.
        let pacing = Pacing::Adaptive {
            cadence,
            per_second: 0,
        };
        let mut s = shipper(server, dir.path(), &names, pacing);
        let along = cadence / ALONG_SHARE;
        // A busy install (an upload just went), whose three files gather:
        // a.log is due now, b.log a little later, c.log well after.
        let now = Instant::now();
        s.link.pacer.spend(FilePace::Fresh, now);
        let since = now - cadence;
        s.files[1].pace = FilePace::Gathering(since);
        s.files[0].pace = FilePace::Gathering(since + along / 2);
        let c_due = since + Duration::from_millis(400) + cadence;
        s.files[2].pace = FilePace::Gathering(c_due - cadence);
        // A write woke this pass: b.log, visited before a.log went, gets
        // another look and goes along; c.log waits for its own time.
        let Pass::Waiting { until } = s.pass(Round::DAEMON) else {
            panic!("c.log must wait");
        };
        let files: Vec<String> = calls.borrow().iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(files, ["a.log", "b.log"]);
        // Its own time (less the server's answer time), not the earlier
        // one it would go along at.
        assert!(
            until <= c_due && until > c_due - along / 2,
            "{until:?} {c_due:?}"
        );
        // Woken by that time, c.log goes, and what is not yet nearly due
        // still waits.
        append(&dir.path().join("a.log"), b"another line\n");
        sleep_until(until);
        assert!(matches!(s.pass(Round::DAEMON), Pass::Waiting { .. }));
        assert_eq!(calls.borrow().len(), 3);
        assert_eq!(calls.borrow()[2].0, "c.log");
        // Alone, a file waits for its own time: a write to a file that
        // gathers since a moment ago sends nothing.
        s.files[0].pace = FilePace::Gathering(Instant::now() - cadence + along / 2);
        append(&dir.path().join("b.log"), b"another line\n");
        assert!(matches!(s.pass(Round::DAEMON), Pass::Waiting { .. }));
        assert_eq!(calls.borrow().len(), 3);
    }

    #[test]
    fn a_round_ends_when_its_stop_says_so() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("x.log"), b"pending\n");
        let server = Recording::default();
        let calls = server.calls.clone();
        let mut s = shipper(
            server,
            dir.path(),
            &["x.log"],
            Pacing::Fixed(Duration::ZERO),
        );
        let stopped = Stop(|| true);
        let deadline = Instant::now() + Duration::from_secs(5);
        for round in [
            Round::Daemon { stop: stopped },
            Round::Once {
                deadline,
                stop: stopped,
            },
        ] {
            assert_eq!(s.pass(round), Pass::Interrupted);
        }
        assert!(calls.borrow().is_empty(), "no request after the stop");
        // The flush is not ended by it: it is what a stop leads to.
        assert_eq!(s.pass(Round::Flush { deadline }), Pass::Done);
        assert_eq!(calls.borrow().len(), 1);
    }

    /// Says every file is unchanged.
    struct Deaf;

    impl Changes for Deaf {
        fn unchanged(&self, _: &Path) -> bool {
            true
        }

        fn catch_up(&mut self) {}
    }

    /// Hears of writes as inotify would: `reported` is the event queue,
    /// taken in by the wake-up (`heard`) or by a catch-up.
    struct Heard {
        heard: Vec<PathBuf>,
        reported: Rc<RefCell<Vec<PathBuf>>>,
    }

    impl Changes for Heard {
        fn unchanged(&self, path: &Path) -> bool {
            !self.heard.iter().any(|p| p == path)
        }

        fn catch_up(&mut self) {
            self.heard.append(&mut self.reported.borrow_mut());
        }
    }

    /// Stores everything; while it takes the `nth` upload, a line is
    /// written to `path` and reported.
    struct WritesMeanwhile {
        inner: Recording,
        nth: usize,
        path: PathBuf,
        reported: Rc<RefCell<Vec<PathBuf>>>,
    }

    impl Transport for WritesMeanwhile {
        fn post(&mut self, p: &str, body: &[u8], t: Duration) -> Result<Vec<u8>, Error> {
            if self.inner.calls.borrow().len() == self.nth {
                append(&self.path, b"written while a backlog ships\n");
                self.reported.borrow_mut().push(self.path.clone());
            }
            self.inner.post(p, body, t)
        }
    }

    #[test]
    fn a_write_during_a_backlog_goes_before_the_backlog_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (big, small) = (dir.path().join("big.log"), dir.path().join("small.log"));
        append(&small, b"one\n");
        let inner = Recording::default();
        let calls = inner.calls.clone();
        let reported = Rc::new(RefCell::new(Vec::new()));
        let t = WritesMeanwhile {
            inner,
            nth: 2,
            path: small.clone(),
            reported: reported.clone(),
        };
        let names = ["big.log", "small.log"];
        let mut s = shipper(t, dir.path(), &names, Pacing::Fixed(Duration::ZERO));
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        // The wake-up heard of big.log only; small.log is written while
        // big.log's second chunk goes.
        append(&big, &vec![b'x'; 6 * CHUNK]);
        let mut changes = Heard {
            heard: vec![big.clone()],
            reported,
        };
        assert_eq!(
            s.pass_except_unchanged(Round::DAEMON, &mut changes),
            Pass::Done
        );
        let order: Vec<String> = calls.borrow().iter().map(|(f, _)| f.clone()).collect();
        let second_line = order.iter().rposition(|f| f == "small.log").unwrap();
        assert!(
            second_line > 1 && second_line < 5,
            "small.log's second line went as upload {second_line} of {order:?}"
        );
        assert_eq!(
            s.files[1].cursor.shipped(),
            std::fs::metadata(&small).unwrap().len()
        );
    }

    #[test]
    fn a_file_known_unchanged_is_not_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, b"one\n");
        let t = Recording::default();
        let calls = t.calls.clone();
        let mut s = shipper(t, dir.path(), &["x.log"], Pacing::Fixed(Duration::ZERO));
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert_eq!(calls.borrow().len(), 1);
        // Written, but said unchanged: the pass takes the caller's word
        // (in the agent, inotify's) and neither reads nor stats the file.
        append(&log, b"two\n");
        assert_eq!(
            s.pass_except_unchanged(Round::DAEMON, &mut Deaf),
            Pass::Done
        );
        assert_eq!(calls.borrow().len(), 1);
        // Looked at, it goes.
        assert_eq!(
            s.pass_except_unchanged(Round::DAEMON, &mut LookAtAll),
            Pass::Done
        );
        assert_eq!(*calls.borrow(), [("x.log".into(), 0), ("x.log".into(), 4)]);
    }

    #[test]
    fn a_quiet_file_lets_go_of_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, b"one\n");
        let mut s = shipper(
            Recording::default(),
            dir.path(),
            &["x.log"],
            Pacing::Fixed(Duration::ZERO),
        );
        // Shipped, and kept open for the next append...
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert!(s.files[0].cursor.holds_open());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert!(s.files[0].cursor.holds_open());
        // ...until a pass finds it quiet for that long.
        std::thread::sleep(KEEP_OPEN);
        assert_eq!(s.pass(Round::DAEMON), Pass::Done);
        assert!(!s.files[0].cursor.holds_open());
    }

    #[test]
    fn a_fault_on_one_file_holds_only_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("big.log"), b"refused by the server\n").unwrap();
        std::fs::write(path("small.log"), b"first\n").unwrap();
        let server = Recording {
            fault_on: Some("big.log"),
            ..Recording::default()
        };
        let mut s = shipper(
            server,
            dir.path(),
            &["big.log", "small.log"],
            Pacing::Fixed(Duration::ZERO),
        );

        // Not Failed: that would hold back every file until the retry.
        let Pass::Waiting { until } = s.pass(Round::DAEMON) else {
            panic!("a fault on one file must leave the others flowing");
        };
        assert!(until > Instant::now());
        assert_eq!(s.files[1].cursor.shipped(), 6);

        // The held file is not retried before its time; the other ships.
        std::fs::write(path("small.log"), b"first\nsecond\n").unwrap();
        assert!(matches!(s.pass(Round::DAEMON), Pass::Waiting { .. }));
        assert_eq!(s.files[1].cursor.shipped(), 13);
        assert_eq!(s.files[0].cursor.shipped(), 0);

        // Once due, it is retried; faulting again, it waits again. (Done
        // would leave it unsent until some file changes.)
        sleep_until(until);
        let Pass::Waiting { until: again } = s.pass(Round::DAEMON) else {
            panic!("a file that faulted again must be waited for");
        };
        assert!(again > until);
    }

    #[test]
    fn the_final_flush_gives_a_held_file_one_last_try_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.log"), b"held\n").unwrap();
        let server = Recording {
            fault_on: Some("big.log"),
            ..Recording::default()
        };
        let calls = server.calls.clone();
        let mut s = shipper(
            server,
            dir.path(),
            &["big.log"],
            Pacing::Fixed(Duration::ZERO),
        );
        let Pass::Waiting { until } = s.pass(Round::DAEMON) else {
            panic!("held");
        };
        assert!(until > Instant::now());
        // The flush does not wait for the hold: one try now, then it is
        // over for that file (HeldBack, not Waiting, so the flush can end
        // instead of sleeping its grace period away).
        let deadline = Instant::now() + Duration::from_millis(1400);
        assert_eq!(s.pass(Round::Flush { deadline }), Pass::HeldBack);
        assert_eq!(calls.borrow().len(), 2);
        assert_eq!(s.pass(Round::Flush { deadline }), Pass::HeldBack);
        assert_eq!(calls.borrow().len(), 2, "one last try, not one per pass");
    }

    /// A server that times out on the first `n` uploads (the request was
    /// sent and may land later), then stores everything.
    struct TimesOutFirst(usize, Rc<RefCell<Vec<(String, u64)>>>);

    impl Transport for TimesOutFirst {
        fn post(&mut self, path: &str, body: &[u8], t: Duration) -> Result<Vec<u8>, Error> {
            let mut inner = Recording {
                fault_on: None,
                calls: self.1.clone(),
            };
            let r = inner.post(path, body, t);
            if self.0 > 0 {
                self.0 -= 1;
                return Err(Error::Timeout);
            }
            r
        }
    }

    #[test]
    fn an_abandoned_offset_0_request_is_repaired_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("anaconda.log");
        append(&log, &vec![b'a'; 1000]);
        let calls = Rc::new(RefCell::new(Vec::new()));
        let mut s = shipper(
            TimesOutFirst(1, calls.clone()),
            dir.path(),
            &["anaconda.log"],
            Pacing::Fixed(Duration::ZERO),
        );
        // The first request (offset 0, 1000 bytes) times out; it is retried.
        let Pass::Failed { retry_at } = s.pass(Round::DAEMON) else {
            panic!("a timeout is a failure");
        };
        sleep_until(retry_at);
        append(&log, &vec![b'b'; 500]);
        let Pass::Waiting { until } = s.pass(Round::DAEMON) else {
            panic!("a repair is due later");
        };
        assert_eq!(s.files[0].cursor.shipped(), 1500);
        assert!(
            calls.borrow().iter().all(|(_, off)| *off == 0),
            "{:?}",
            calls.borrow()
        );
        // After the timeout has passed again, the bytes after the first
        // chunk go again, at their offsets, never at 0.
        sleep_until(until);
        let before = calls.borrow().len();
        s.pass(Round::DAEMON);
        assert_eq!(
            calls.borrow()[before..],
            [("anaconda.log".to_string(), 1000)]
        );
    }

    #[test]
    fn scripted_transport_answers_the_shipper_too() {
        // The client's scripted server drives the shipper: a refusal from a
        // release that takes uploads is an outage, retried later.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.log"), b"x\n").unwrap();
        let version = crate::client::tests::version_answer("4.0.0b7");
        let t = Scripted::new(vec![Ok(crate::client::tests::FALSE), Ok(&version)]);
        let mut s = shipper(t, dir.path(), &["x.log"], Pacing::Fixed(Duration::ZERO));
        assert!(matches!(s.pass(Round::DAEMON), Pass::Failed { .. }));
        assert_eq!(s.link.outage, Some("refused"));
    }
}
