//! `anamon-receiver status`: the systems page as a terminal table, for
//! those without a browser (as `cobbler status` prints Cobbler's), read
//! from the same log directory by the same rules. Log text in it goes
//! through [`text::plain`] first: no escape sequence from a log reaches
//! the terminal.

use super::index::{Index, SystemView};
use super::pages::ago;
use super::state::State;
use super::text;
use crate::sys;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// What `status` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// Seconds after its last upload a system stops showing as installing.
    pub window: i64,
    /// Only systems in this state.
    pub state: Option<String>,
}

/// Prints the table; the exit status (1 if the directory cannot be read).
pub fn run(opts: &Options) -> i32 {
    let filter = match opts.state.as_deref().map(|s| (s, State::from_name(s))) {
        None => None,
        Some((_, Some(st))) => Some(st),
        Some((s, None)) => {
            eprintln!(
                "anamon-receiver status: --state {s:?}: expected one of {}",
                State::ALL.map(State::name).join(", ")
            );
            return 2;
        }
    };
    let dir = match sys::open_dir(&opts.dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "anamon-receiver status: {}: cannot open the log directory: {e}",
                opts.dir.display()
            );
            return 1;
        }
    };
    let mut index = Index::default();
    index.refresh_fully(&dir);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut all = index.systems(now, opts.window);
    all.retain(|v| filter.is_none_or(|f| v.state == f));
    all.sort_by(|a, b| (a.state, &a.name).cmp(&(b.state, &b.name)));
    let out = table(&all, now);
    let _ = io::stdout().lock().write_all(out.as_bytes());
    0
}

/// The table: one row per system, columns padded to their widest cell.
pub fn table(systems: &[SystemView], now: i64) -> String {
    let mut rows = vec![[
        "SYSTEM".to_string(),
        "STATE".into(),
        "STAGE".into(),
        "SINCE START".into(),
        "LAST UPLOAD".into(),
        "WHY".into(),
    ]];
    for v in systems {
        let stage = v.progress.map_or(String::new(), |p| {
            let mut s = p.stage.name().to_string();
            if let Some((n, m)) = p.packages {
                let _ = write!(s, " {n}/{m}");
            }
            if let Some(since) = p.since {
                let _ = write!(s, " ({})", ago(now.saturating_sub(since)));
            }
            s
        });
        let why = match (v.state, v.reasons.first()) {
            (_, Some(r)) => match &r.found {
                Some(f) => format!("{}:{} {}: {}", r.file, f.line, r.why, text::plain(&f.text)),
                None => format!("{} {}", r.file, r.why),
            },
            (State::Stalled, None) => {
                format!("no new line for {}", ago(now.saturating_sub(v.last_upload)))
            }
            _ => String::new(),
        };
        rows.push([
            text::plain(v.name.as_bytes()),
            v.state.name().to_string(),
            stage,
            ago(now.saturating_sub(v.started)),
            format!("{} ago", ago(now.saturating_sub(v.last_upload))),
            why,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
