//! Upload sessions: the uploads of one file of one system with no pause
//! longer than `idle` between them. Each ends in exactly one log line (what
//! arrived, from where, what was refused), so a busy receiver's log has a
//! line per installer log, not per request. Refusals that belong to no
//! session (unreadable requests) are logged at most once a minute per client.

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
    noise: Mutex<HashMap<IpAddr, (Instant, u64)>>,
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
        }
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
                info!("{}", summary(&oldest, &s));
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
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<_> = open
            .iter()
            .filter(|(_, s)| all || now.saturating_duration_since(s.last) > self.idle)
            .map(|(k, _)| k.clone())
            .collect();
        let mut lines: Vec<_> = ended
            .into_iter()
            .map(|k| {
                let s = open.remove(&k).expect("present");
                (s.started, summary(&k, &s))
            })
            .collect();
        drop(open);
        lines.sort();
        for (_, line) in lines {
            info!("{line}");
        }
        self.noise
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < Duration::from_secs(60));
    }

    /// A request that never named a file: logged once a minute per client,
    /// with a count of what was not logged.
    pub fn noise(&self, client: IpAddr, what: &str) {
        let now = Instant::now();
        let mut noise = self.noise.lock().unwrap_or_else(|e| e.into_inner());
        match noise.get_mut(&client) {
            Some((at, n)) if now.saturating_duration_since(*at) < Duration::from_secs(60) => {
                *n += 1
            }
            _ => {
                let quiet = noise.insert(client, (now, 0)).map_or(0, |(_, n)| n);
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
