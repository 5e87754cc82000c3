//! One watched file and everything the agent knows about it: where it is,
//! what the server calls it, how much of it the server has, what is wrong
//! with it, whether the server is holding it back, when its next upload may
//! go, and whether a late request may have truncated the server's copy.

use crate::backoff::Backoff;
use crate::cursor::{Cursor, Problem};
use crate::pacing::FilePace;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct WatchedFile {
    pub path: PathBuf,
    /// The file's name on the server.
    pub alias: String,
    pub cursor: Cursor,
    /// The problem last reported, so each is logged once.
    pub problem: Option<Problem>,
    /// Set while the server faults on this file alone.
    pub hold: Option<Hold>,
    pub pace: FilePace,
    /// Set after an offset-0 request was abandoned: it may still land and
    /// truncate the server's copy.
    pub repair: Option<Repair>,
}

impl WatchedFile {
    pub(crate) fn new(path: PathBuf, alias: String) -> WatchedFile {
        WatchedFile {
            path,
            alias,
            cursor: Cursor::default(),
            problem: None,
            hold: None,
            pace: FilePace::Fresh,
            repair: None,
        }
    }

    /// Whether the file exists but cannot be shipped (unreadable, or past
    /// the largest offset): `--exit` then ends with status 1.
    pub(crate) fn is_unshippable(&self) -> bool {
        matches!(
            self.problem,
            Some(Problem::Unreadable(_) | Problem::TooLarge)
        )
    }
}

/// A file the server faulted on (a receiver's size cap, Cobbler's lock
/// conflict, a planted symlink): it waits out its own backoff while the
/// other files keep flowing, since the server itself is answering.
#[derive(Debug)]
pub(crate) struct Hold {
    pub until: Instant,
    backoff: Backoff,
    /// The fault last logged, so a repeat is not news.
    pub reason: String,
    /// The final flush has given it its one last try.
    pub last_try_spent: bool,
}

impl Hold {
    /// Holds back (again) after a fault; returns whether `reason` is new.
    pub(crate) fn after_fault(hold: &mut Option<Hold>, reason: String, now: Instant) -> bool {
        let h = hold.get_or_insert_with(|| Hold {
            until: now,
            backoff: Backoff::new(),
            reason: String::new(),
            last_try_spent: false,
        });
        h.until = now + h.backoff.next(false);
        if h.reason == reason {
            false
        } else {
            h.reason = reason;
            true
        }
    }
}

/// How often, after an abandoned offset-0 request, the bytes after its
/// chunk are sent again: at the request's timeout, then 4 and 16 times it,
/// counted from when it was abandoned. A proxy may hold a request longer
/// than the agent waits for it (Apache's ProxyTimeout is 60 s by default),
/// so one re-send at the agent's own timeout is not enough.
const REPAIR_AT: [u32; 3] = [1, 4, 16];

/// The undoing of a late truncation. An abandoned request with offset 0 can
/// still reach the server and truncate its copy to that request's chunk;
/// sending everything after that chunk again, at its own offsets, puts back
/// whatever such a late truncation removed, and is harmless where none
/// happened (the same bytes land where they already are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// The shortest abandoned offset-0 chunk: a late truncation keeps at
    /// least this much.
    pub from: u64,
    /// Where the re-send in progress has got to.
    pub next: u64,
    abandoned_at: Instant,
    timeout: Duration,
    /// How many re-sends are done.
    done: usize,
}

impl Repair {
    /// An offset-0 request of `len` bytes was abandoned now after
    /// `timeout`: (re)starts the schedule.
    pub(crate) fn after_abandoned(
        repair: &mut Option<Repair>,
        len: usize,
        timeout: Duration,
        now: Instant,
    ) {
        let from = (len as u64).min(repair.as_ref().map_or(u64::MAX, |r| r.from));
        *repair = Some(Repair {
            from,
            next: from,
            abandoned_at: now,
            timeout,
            done: 0,
        });
    }

    /// When the next re-send is due; `stages` limits how many are made
    /// (the daemon makes all, `--exit` only the first).
    pub(crate) fn due(&self, stages: usize) -> Option<Instant> {
        let mult = *REPAIR_AT.get(self.done).filter(|_| self.done < stages)?;
        Some(self.abandoned_at + self.timeout * mult)
    }

    /// One re-send has reached `shipped`: schedule the next, or end.
    pub(crate) fn finished_one(repair: &mut Option<Repair>) {
        if let Some(r) = repair {
            r.done += 1;
            r.next = r.from;
            if r.done >= REPAIR_AT.len() {
                *repair = None;
            }
        }
    }

    /// How many re-sends the daemon makes.
    pub(crate) const ALL: usize = REPAIR_AT.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_follow_the_schedule_and_keep_the_shortest_chunk() {
        let t0 = Instant::now();
        let t = Duration::from_secs(2);
        let mut r = None;
        Repair::after_abandoned(&mut r, 5000, t, t0);
        Repair::after_abandoned(&mut r, 9000, t, t0);
        assert_eq!(r.as_ref().unwrap().from, 5000);
        assert_eq!(r.as_ref().unwrap().due(Repair::ALL), Some(t0 + t));
        assert_eq!(r.as_ref().unwrap().due(1), Some(t0 + t));
        Repair::finished_one(&mut r);
        assert_eq!(r.as_ref().unwrap().due(Repair::ALL), Some(t0 + t * 4));
        assert_eq!(
            r.as_ref().unwrap().due(1),
            None,
            "--exit makes only the first"
        );
        Repair::finished_one(&mut r);
        assert_eq!(r.as_ref().unwrap().due(Repair::ALL), Some(t0 + t * 16));
        Repair::finished_one(&mut r);
        assert!(r.is_none());
    }

    #[test]
    fn a_hold_logs_a_reason_once_and_backs_off() {
        let t0 = Instant::now();
        let mut h = None;
        assert!(Hold::after_fault(&mut h, "cap".into(), t0));
        let first = h.as_ref().unwrap().until;
        assert!(!Hold::after_fault(&mut h, "cap".into(), t0));
        assert!(h.as_ref().unwrap().until >= first);
        assert!(Hold::after_fault(&mut h, "lock".into(), t0));
    }
}
