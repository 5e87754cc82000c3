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
    /// it faulted on wait until this instant. Writes to the other files
    /// are shipped meanwhile.
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
        }
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
        loop {
            let mut sent_any = false;
            self.unreadable = 0;
            for i in 0..self.files.len() {
                if self.held[i]
                    .as_ref()
                    .is_some_and(|h| Instant::now() < h.until)
                {
                    continue;
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
                // Held files are pending: come back when the first is due.
                // (A hold already past was tried in this pass, or its file
                // has nothing to send: not pending.)
                let now = Instant::now();
                let due = self
                    .held
                    .iter()
                    .flatten()
                    .map(|h| h.until)
                    .filter(|t| *t > now)
                    .min();
                return match due {
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
    use crate::cobbler::WireChoice;
    use std::path::PathBuf;

    /// A server that faults on uploads of one file and stores the others.
    struct FaultsOn(&'static str);

    impl Transport for FaultsOn {
        fn post(&mut self, body: &[u8], _: Duration) -> Result<Vec<u8>, Error> {
            let faulted =
                String::from_utf8_lossy(body).contains(&format!("<string>{}</string>", self.0));
            Ok(if faulted {
                b"<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>over the cap</string></value></member></struct></value></fault></methodResponse>".to_vec()
            } else {
                b"<methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse>".to_vec()
            })
        }
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
