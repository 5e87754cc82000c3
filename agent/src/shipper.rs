//! Delivery: walks the cursors, sends what the server lacks, and decides
//! what to do when the server fails. The file on disk is the buffer, so a
//! failure only delays; nothing is ever dropped.

use crate::cobbler::{Client, Error, Transport};
use crate::cursor::{Problem, WatchedFile};
use std::time::{Duration, Instant};

/// Python anamon's chunk size, and Cobbler's expectation of it.
pub const CHUNK: usize = 256 * 1024;
/// The longest pause between attempts while the server fails.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How a pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// The server has every byte of every readable file.
    Done,
    /// The server failed; try again at this instant.
    Failed { retry_at: Instant },
    /// The server is answering, and has every byte it can take now; files
    /// it faulted on, or that wait out `--min-interval`, wait until this
    /// instant. Writes to the other files are shipped meanwhile.
    Waiting { until: Instant },
    /// The deadline passed or a shutdown signal came with bytes pending.
    Interrupted,
}

pub struct Shipper<T> {
    client: Client<T>,
    name: String,
    files: Vec<WatchedFile>,
    timeout: Duration,
    backoff: Backoff,
    /// The kind of failure last reported, so an outage is logged when it
    /// starts, when its nature changes, and when it ends: not per retry.
    outage: Option<&'static str>,
    /// Files that exist but cannot be read, after the last pass.
    unreadable: usize,
    /// Per file (same index as `files`): held back after the server
    /// answered a fault about that file alone.
    held: Vec<Option<Hold>>,
    /// The least time between two uploads of a file that has caught up
    /// (`--min-interval`), in the daemon only.
    min_interval: Duration,
}

/// A file the server faulted on (a receiver's size cap, Cobbler's lock
/// conflict, a planted symlink): it waits out its own backoff while the
/// other files keep flowing, since the server itself is answering.
struct Hold {
    until: Instant,
    backoff: Backoff,
    reason: String,
}

impl<T: Transport> Shipper<T> {
    pub fn new(
        client: Client<T>,
        name: String,
        files: Vec<WatchedFile>,
        timeout: Duration,
    ) -> Shipper<T> {
        Shipper {
            client,
            name,
            timeout,
            held: files.iter().map(|_| None).collect(),
            backoff: Backoff::new(),
            outage: None,
            unreadable: 0,
            files,
            min_interval: Duration::ZERO,
        }
    }

    /// Once an upload has given the server all of a file, the next upload
    /// of that file waits until `interval` has passed, and takes everything
    /// written meanwhile: a log written line by line costs the server one
    /// request per interval, not one per line. A file that was quiet for
    /// that long ships at once, and a backlog (a 50 MiB burst) goes chunk
    /// after chunk without waiting. Passes with a deadline (`--exit`, the
    /// flush at shutdown) ignore it.
    pub fn with_min_interval(mut self, interval: Duration) -> Shipper<T> {
        self.min_interval = interval;
        self
    }

    pub fn add(&mut self, file: WatchedFile) {
        self.files.push(file);
        self.held.push(None);
    }

    /// Files that exist but could not be read in the last pass.
    pub fn unreadable(&self) -> usize {
        self.unreadable
    }

    /// Sends everything pending, one chunk per file in turn so a busy log
    /// cannot starve the others, until nothing is left, the server fails,
    /// or `deadline` passes. `stop` is asked between requests.
    pub fn pass(&mut self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> Pass {
        let pacing = deadline.is_none() && !self.min_interval.is_zero();
        loop {
            let mut sent_any = false;
            // When the first file that waits may go: one held back after a
            // fault (in this round or before), or one with new bytes that
            // waits out --min-interval.
            let mut waiting: Option<Instant> = None;
            let mut skip_until = |due: Instant| waiting = Some(waiting.map_or(due, |w| w.min(due)));
            self.unreadable = 0;
            for i in 0..self.files.len() {
                if let Some(h) = self.held[i].as_ref().filter(|h| Instant::now() < h.until) {
                    skip_until(h.until);
                    continue;
                }
                if pacing {
                    let file = &self.files[i];
                    if let Some(due) = file.caught_up.map(|t| t + self.min_interval) {
                        if Instant::now() < due {
                            if file.cursor.may_have_news(&file.path) {
                                skip_until(due);
                            }
                            continue;
                        }
                    }
                }
                let timeout = match deadline {
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => left.min(self.timeout),
                        _ => return Pass::Interrupted,
                    },
                    None if stop() => return Pass::Interrupted,
                    None => self.timeout,
                };
                let file = &mut self.files[i];
                let chunk = match file.cursor.next_chunk(&file.path, CHUNK) {
                    Ok(c) => {
                        if let Some(p) = file.problem.take() {
                            if p != Problem::Missing {
                                info!("{}: readable again", file.path.display());
                            }
                        }
                        c
                    }
                    Err(p) => {
                        if matches!(p, Problem::Unreadable(_)) {
                            self.unreadable += 1;
                        }
                        if file.problem.as_ref() != Some(&p) {
                            match p {
                                Problem::Missing => debug!("{}: {p}", file.path.display()),
                                _ => info!("{}: {p}", file.path.display()),
                            }
                            file.problem = Some(p);
                        }
                        continue;
                    }
                };
                let Some(chunk) = chunk else { continue };
                if chunk.restart && file.cursor.shipped() > 0 {
                    info!(
                        "{}: replaced, truncated or changed in place; sending it again from the start",
                        file.path.display()
                    );
                }
                match self.client.upload(
                    &self.name,
                    &file.alias,
                    chunk.offset,
                    &chunk.data,
                    timeout,
                ) {
                    Ok(confirmed) => {
                        if let Some(wire) = confirmed {
                            info!("server accepts uploads as {wire}");
                        }
                        debug!(
                            "{} -> {}: {} bytes at {}",
                            file.path.display(),
                            file.alias,
                            chunk.data.len(),
                            chunk.offset
                        );
                        file.cursor.commit(&chunk);
                        // A full chunk may leave a backlog: no waiting then.
                        file.caught_up = (chunk.data.len() < CHUNK).then(Instant::now);
                        sent_any = true;
                        if self.held[i].take().is_some() {
                            info!("{}: the server takes it again", file.alias);
                        }
                        self.backoff.reset();
                        if let Some(kind) = self.outage.take() {
                            info!("server is taking uploads again (after: {kind}); resuming from each file's cursor");
                        }
                    }
                    Err(e @ Error::Fault { .. }) => {
                        let hold = self.held[i].get_or_insert_with(|| Hold {
                            until: Instant::now(),
                            backoff: Backoff::new(),
                            reason: String::new(),
                        });
                        hold.until = Instant::now() + hold.backoff.next(false);
                        skip_until(hold.until);
                        let reason = e.to_string();
                        if hold.reason != reason {
                            info!(
                                "upload of {} failed: {reason}; retrying this file with backoff (at most every {} s), the others go on",
                                file.alias,
                                BACKOFF_CAP.as_secs()
                            );
                            hold.reason = reason;
                        } else {
                            debug!("upload of {} failed again: {reason}", file.alias);
                        }
                    }
                    Err(e) => {
                        let alias = file.alias.clone();
                        let retry_at = self.failed(&e, &alias);
                        return Pass::Failed { retry_at };
                    }
                }
            }
            if !sent_any {
                return match waiting {
                    // It came due while this round went on: go again.
                    Some(until) if until <= Instant::now() => continue,
                    Some(until) => Pass::Waiting { until },
                    None => Pass::Done,
                };
            }
        }
    }

    /// Records a failure; logs it if it starts an outage or changes its kind.
    fn failed(&mut self, e: &Error, alias: &str) -> Instant {
        let kind = kind_of(e);
        let delay = self.backoff.next(matches!(e, Error::Refused));
        if self.outage != Some(kind) {
            let why = match e {
                Error::Refused => self.explain_refusal(),
                _ => String::new(),
            };
            info!(
                "upload of {alias} failed: {e}{why}; keeping the data on disk and retrying with backoff (at most every {} s)",
                BACKOFF_CAP.as_secs()
            );
            self.outage = Some(kind);
        } else {
            debug!(
                "upload of {alias} failed again: {e}; next try in {} ms",
                delay.as_millis()
            );
        }
        Instant::now() + delay
    }

    /// Cobbler says only `False`; its version tells the likeliest cause.
    fn explain_refusal(&mut self) -> String {
        let version = self
            .client
            .version(self.timeout.min(Duration::from_secs(5)));
        let name = &self.name;
        match version {
            Ok(v) if v.starts_with("3.3") => format!(
                " — Cobbler {v}: every 3.3.x release refuses all anamon uploads as shipped (a server bug; see the anamon README)"
            ),
            Ok(v) => format!(" — Cobbler {v}: anamon_enabled is off, or no system or profile is named {name:?}"),
            Err(_) => format!(" — anamon_enabled is off, or no system or profile is named {name:?}"),
        }
    }
}

fn kind_of(e: &Error) -> &'static str {
    match e {
        Error::Connect(_) => "server unreachable",
        Error::Timeout => "server not answering",
        Error::Io(_) => "connection broken",
        Error::Http { .. } => "HTTP error",
        Error::NotXmlRpc(_) | Error::TooLarge | Error::Unexpected(_) => "not an XML-RPC answer",
        Error::Fault { .. } => "server fault",
        Error::Refused => "refused",
    }
}

/// Exponential backoff with jitter: 0.5 s doubling to 30 s for failures,
/// starting at 5 s for refusals (a refusing server will not change its mind
/// in a second). Jitter spreads many agents restarting against one server.
struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            failures: 0,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn next(&mut self, refused: bool) -> Duration {
        let base = if refused {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        let full = base
            .saturating_mul(1 << self.failures.min(10))
            .min(BACKOFF_CAP);
        self.failures += 1;
        // xorshift64: no dependency for a few random bits.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng % 1000) as u32;
        full / 2 + full / 2 * frac / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cobbler::tests::{FAULT, TRUE};
    use crate::cobbler::WireChoice;
    use std::path::PathBuf;

    /// A server that faults on uploads of one file and stores the others.
    struct FaultsOn(&'static str);

    impl Transport for FaultsOn {
        fn post(&mut self, body: &[u8], _: Duration) -> Result<Vec<u8>, Error> {
            let faulted =
                String::from_utf8_lossy(body).contains(&format!("<string>{}</string>", self.0));
            Ok(if faulted {
                FAULT.as_bytes().to_vec()
            } else {
                TRUE.as_bytes().to_vec()
            })
        }
    }

    /// A server that stores everything and counts the calls.
    struct Counting(std::rc::Rc<std::cell::Cell<usize>>);

    impl Transport for Counting {
        fn post(&mut self, _: &[u8], _: Duration) -> Result<Vec<u8>, Error> {
            self.0.set(self.0.get() + 1);
            Ok(TRUE.as_bytes().to_vec())
        }
    }

    #[test]
    fn min_interval_gathers_lines_but_never_slows_a_backlog() {
        let dir = std::env::temp_dir().join(format!("anamon-pace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("program.log");
        let burst = dir.join("burst.log");
        std::fs::write(&log, b"line 1\n").unwrap();
        let calls = std::rc::Rc::new(std::cell::Cell::new(0));
        let client = Client::new(
            Counting(calls.clone()),
            WireChoice::Fixed(crate::cobbler::Wire::Binary),
        );
        let files = vec![
            WatchedFile::new(log.clone(), "program.log".into()),
            WatchedFile::new(burst.clone(), "burst.log".into()),
        ];
        let interval = Duration::from_millis(300);
        let mut shipper = Shipper::new(client, "sys".into(), files, Duration::from_secs(1))
            .with_min_interval(interval);
        let never = || false;
        let append = |p: &PathBuf, b: &[u8]| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .unwrap()
                .write_all(b)
                .unwrap();
        };

        // A quiet file ships at once.
        assert_eq!(shipper.pass(None, &never), Pass::Done);
        assert_eq!(calls.get(), 1);
        // Lines right after it wait for the interval, then go together.
        append(&log, b"line 2\n");
        append(&log, b"line 3\n");
        let Pass::Waiting { until } = shipper.pass(None, &never) else {
            panic!("a file shipped just now must wait out the interval");
        };
        assert_eq!(calls.get(), 1);
        assert!(until > Instant::now() && until <= Instant::now() + interval);
        // A backlog in another file is not held back meanwhile.
        append(&burst, &vec![b'x'; 3 * CHUNK + 5]);
        assert!(matches!(shipper.pass(None, &never), Pass::Waiting { .. }));
        assert_eq!(calls.get(), 1 + 4, "four chunks back to back");
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        assert_eq!(shipper.pass(None, &never), Pass::Done);
        assert_eq!(calls.get(), 6, "lines 2 and 3 in one request");
        assert_eq!(shipper.files[0].cursor.shipped(), 21);
        // With a deadline (--exit, the flush at shutdown) nothing waits.
        append(&log, b"line 4\n");
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(shipper.pass(Some(soon), &never), Pass::Done);
        assert_eq!(calls.get(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fault_on_one_file_holds_only_that_file() {
        let dir = std::env::temp_dir().join(format!("anamon-shipper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |n: &str| -> PathBuf { dir.join(n) };
        std::fs::write(path("big.log"), b"refused by the server\n").unwrap();
        std::fs::write(path("small.log"), b"first\n").unwrap();
        let files = ["big.log", "small.log"]
            .iter()
            .map(|n| WatchedFile::new(path(n), n.to_string()))
            .collect();
        let client = Client::new(
            FaultsOn("big.log"),
            WireChoice::Fixed(crate::cobbler::Wire::Binary),
        );
        let mut shipper = Shipper::new(client, "sys".into(), files, Duration::from_secs(1));
        let never = || false;

        // Not Failed: that would hold back every file until the retry.
        let Pass::Waiting { until } = shipper.pass(None, &never) else {
            panic!("a fault on one file must leave the others flowing");
        };
        assert!(until > Instant::now());
        assert_eq!(shipper.files[1].cursor.shipped(), 6);

        // The held file is not retried before its time; the other ships.
        std::fs::write(path("small.log"), b"first\nsecond\n").unwrap();
        assert!(matches!(shipper.pass(None, &never), Pass::Waiting { .. }));
        assert_eq!(shipper.files[1].cursor.shipped(), 13);
        assert_eq!(shipper.files[0].cursor.shipped(), 0);

        // Once due, it is retried; faulting again, it waits again. (Done
        // would leave it unsent until some file changes.)
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let Pass::Waiting { until: again } = shipper.pass(None, &never) else {
            panic!("a file that faulted again must be waited for");
        };
        assert!(again > until);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let first = b.next(false);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        let mut last = first;
        for _ in 0..20 {
            last = b.next(false);
        }
        assert!(last >= BACKOFF_CAP / 2 && last <= BACKOFF_CAP);
        b.reset();
        assert!(b.next(true) >= Duration::from_millis(2500));
    }
}
