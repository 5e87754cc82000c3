//! Upload sessions: the uploads of one file of one system with no pause
//! longer than `idle` between them. Each ends in exactly one log line (what
//! arrived, from where, what was refused), so a busy receiver's log has a
//! line per installer log, not per request. Refusals that belong to no
//! session (unreadable requests) are logged at most once a minute per client.
//!
//! A client that invents names opens a session per name: past
//! LINES_PER_CLIENT session lines in a minute, its sessions are only
//! counted, and one line sums up what was not logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What happened to one `upload_log_data` call.
pub enum Outcome<'a> {
    Stored {
        bytes: u64,
        offset: i64,
        file_size: u64,
    },
    Refused(&'a str),
}

struct Session {
    client: IpAddr,
    started: Instant,
    last: Instant,
    uploads: u64,
    bytes: u64,
    restarts: u64,
    file_size: Option<u64>,
    refused: u64,
    last_refusal: String,
}

pub struct Sessions {
    idle: Duration,
    open: Mutex<HashMap<(String, String), Session>>,
    noise: Mutex<HashMap<IpAddr, NoiseWindow>>,
    budgets: Mutex<HashMap<IpAddr, LineBudget>>,
}

/// A client's minute of unreadable requests: when its one line was
/// logged, and how many were not since.
struct NoiseWindow {
    logged: Instant,
    quiet: u64,
}

/// Session lines a client may cause in a minute (LINE_WINDOW) before its
/// sessions are only summed up. An install sends a few dozen files over
/// many minutes; a flood of invented names is cut to this.
const LINES_PER_CLIENT: u32 = 20;
const LINE_WINDOW: Duration = Duration::from_secs(60);

/// One client's session lines in the current minute, and what was held
/// back once it had used them.
struct LineBudget {
    since: Instant,
    written: u32,
    held: Held,
}

/// Sessions not logged one by one, summed.
#[derive(Default)]
struct Held {
    sessions: u64,
    uploads: u64,
    bytes: u64,
    refused: u64,
}

impl Held {
    fn line(&self, client: IpAddr) -> String {
        format!(
            "{client}: {} more upload sessions not logged one by one in a minute (over {LINES_PER_CLIENT} lines): {} bytes in {} uploads, {} refused",
            self.sessions, self.bytes, self.uploads, self.refused
        )
    }
}

/// At most this many open sessions are tracked; past it the oldest are
/// ended early (their line is still written), so memory stays bounded
/// whatever names clients invent.
const MAX_OPEN: usize = 4096;

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            open: Mutex::new(HashMap::new()),
            noise: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// The lines to log for a session that ended: its own line while its
    /// client has budget left this minute, else none (it is counted).
    fn lines_for_ended(&self, key: &(String, String), s: &Session, now: Instant) -> Vec<String> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Vec::new();
        let b = budgets.entry(s.client).or_insert(LineBudget {
            since: now,
            written: 0,
            held: Held::default(),
        });
        if now.saturating_duration_since(b.since) >= LINE_WINDOW {
            if b.held.sessions > 0 {
                lines.push(b.held.line(s.client));
            }
            *b = LineBudget {
                since: now,
                written: 0,
                held: Held::default(),
            };
        }
        if b.written < LINES_PER_CLIENT {
            b.written += 1;
            lines.push(summary(key, s));
        } else {
            b.held.sessions += 1;
            b.held.uploads += s.uploads;
            b.held.bytes += s.bytes;
            b.held.refused += s.refused;
        }
        lines
    }

    /// The summaries of held-back sessions whose minute is over (or all of
    /// them, at shutdown); forgets budgets with nothing left to say.
    fn held_lines(&self, all: bool, now: Instant) -> Vec<String> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Vec::new();
        budgets.retain(|client, b| {
            if !all && now.saturating_duration_since(b.since) < LINE_WINDOW {
                return true;
            }
            if b.held.sessions > 0 {
                lines.push(b.held.line(*client));
            }
            false
        });
        lines
    }

    pub fn record(&self, system: &str, file: &str, client: IpAddr, outcome: Outcome<'_>) {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let key = (system.to_string(), file.to_string());
        if !open.contains_key(&key) && open.len() >= MAX_OPEN {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                let s = open.remove(&oldest).expect("present");
                for line in self.lines_for_ended(&oldest, &s, now) {
                    info!("{line}");
                }
            }
        }
        let s = open.entry(key).or_insert(Session {
            client,
            started: now,
            last: now,
            uploads: 0,
            bytes: 0,
            restarts: 0,
            file_size: None,
            refused: 0,
            last_refusal: String::new(),
        });
        s.last = now;
        s.client = client;
        match outcome {
            Outcome::Stored {
                bytes,
                offset,
                file_size,
            } => {
                if offset == 0 && s.uploads > 0 {
                    s.restarts += 1;
                }
                s.uploads += 1;
                s.bytes += bytes;
                s.file_size = Some(file_size);
            }
            Outcome::Refused(why) => {
                s.refused += 1;
                s.last_refusal = why.to_string();
            }
        }
    }

    /// Upload sessions open now.
    pub fn active(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Ends (and logs) the sessions idle for longer than `idle`, or all of
    /// them at shutdown.
    pub fn sweep(&self, all: bool) {
        for line in self.sweep_lines(all, Instant::now()) {
            info!("{line}");
        }
    }

    fn sweep_lines(&self, all: bool, now: Instant) -> Vec<String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<_> = open
            .iter()
            .filter(|(_, s)| all || now.saturating_duration_since(s.last) > self.idle)
            .map(|(k, _)| k.clone())
            .collect();
        let mut ended: Vec<_> = ended
            .into_iter()
            .map(|k| {
                let s = open.remove(&k).expect("present");
                (k, s)
            })
            .collect();
        drop(open);
        ended.sort_by_key(|(_, s)| s.started);
        let mut lines: Vec<String> = ended
            .iter()
            .flat_map(|(k, s)| self.lines_for_ended(k, s, now))
            .collect();
        lines.extend(self.held_lines(all, now));
        self.noise
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, w| now.saturating_duration_since(w.logged) < LINE_WINDOW);
        lines
    }

    /// A request that never named a file: logged once a minute per client,
    /// with a count of what was not logged.
    pub fn noise(&self, client: IpAddr, what: &str) {
        let now = Instant::now();
        let mut noise = self.noise.lock().unwrap_or_else(|e| e.into_inner());
        match noise.get_mut(&client) {
            Some(w) if now.saturating_duration_since(w.logged) < LINE_WINDOW => w.quiet += 1,
            _ => {
                let fresh = NoiseWindow {
                    logged: now,
                    quiet: 0,
                };
                let quiet = noise.insert(client, fresh).map_or(0, |w| w.quiet);
                let more = if quiet > 0 {
                    format!(" ({quiet} more from it in the minute before)")
                } else {
                    String::new()
                };
                info!("{client}: {what}{more}");
            }
        }
    }
}

fn summary((system, file): &(String, String), s: &Session) -> String {
    let secs = s.last.saturating_duration_since(s.started).as_secs_f64();
    let mut line = format!(
        "{system}/{file} from {}: {} bytes in {} uploads over {secs:.1} s",
        s.client, s.bytes, s.uploads
    );
    if let Some(size) = s.file_size {
        line += &format!(", stored file now {size} bytes");
    }
    if s.restarts > 0 {
        line += &format!(", restarted from offset 0 {} times", s.restarts);
    }
    if s.refused > 0 {
        line += &format!("; {} refused, last: {}", s.refused, s.last_refusal);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lines_per_client_are_bounded() {
        // Each invented file name from one address used to write a line
        // (20,034 lines for 20,000 files); a second client keeps its own
        // budget.
        let sessions = Sessions::new(Duration::from_secs(60));
        let (flood, install): (IpAddr, IpAddr) =
            ("10.0.0.66".parse().unwrap(), "10.0.0.7".parse().unwrap());
        for i in 0..4000 {
            sessions.record("web01", &format!("f{i}"), flood, Outcome::Refused("cap"));
        }
        for i in 0..3 {
            let stored = Outcome::Stored {
                bytes: 10,
                offset: 0,
                file_size: 10,
            };
            sessions.record("web02", &format!("f{i}"), install, stored);
        }
        let lines = sessions.sweep_lines(true, Instant::now());
        let from = |c: &str| lines.iter().filter(|l| l.contains(c)).count();
        assert_eq!(from("from 10.0.0.7:"), 3, "{lines:?}");
        assert_eq!(from("10.0.0.66"), LINES_PER_CLIENT as usize + 1);
        let held = lines
            .iter()
            .find(|l| l.contains("not logged one by one"))
            .unwrap();
        let rest = 4000 - LINES_PER_CLIENT as usize;
        assert!(
            held.starts_with(&format!("10.0.0.66: {rest} more upload sessions")),
            "{held}"
        );
        assert!(held.contains(&format!("{rest} refused")), "{held}");
    }
}
