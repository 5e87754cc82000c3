//! The HTML pages and the JSON documents of the view, from the index's
//! [`SystemView`]s. Every piece of text from the log directory (names, log
//! lines) goes through [`text`] first; names were checked by the upload
//! rules already, and are escaped anyway.

use super::index::SystemView;
use super::state::{Reason, Stage, State};
use super::text;
use crate::log::utc;
use serde_json::{json, Value};
use std::fmt::Write;

/// Rows shown on the systems page (and systems in the JSON list); the rest
/// are counted.
pub const MAX_ROWS: usize = 1000;

/// A whole page: `live` is the part the page's script fetches again (with
/// `?part=live`) every two seconds.
pub fn page(title: &str, kind: &str, attrs: &[(&str, &str)], head: &str, live: &str) -> String {
    let mut data = String::new();
    for (k, v) in attrs {
        let _ = write!(data, " data-{k}=\"{}\"", text::html(v.as_bytes()));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · anamon</title><link rel=\"stylesheet\" href=\"/static/view.css\">\
         <script src=\"/static/view.js\" defer></script></head>\n\
         <body data-page=\"{kind}\"{data}>\n{head}\n<div id=\"live\">{live}</div>\n</body></html>\n",
        text::html(title.as_bytes())
    )
}

/// The systems page's heading, with the state filter links.
pub fn systems_head(filter: Option<State>) -> String {
    let mut s = String::from("<header><h1><a href=\"/\">anamon</a> · installs</h1><nav>");
    let link = |s: &mut String, href: &str, label: &str, on: bool| {
        let _ = write!(
            s,
            "<a href=\"{href}\"{}>{label}</a> ",
            if on { " class=\"on\"" } else { "" }
        );
    };
    link(&mut s, "/", "all", filter.is_none());
    for st in State::ALL {
        link(
            &mut s,
            &format!("/?state={}", st.name()),
            st.name(),
            filter == Some(st),
        );
    }
    s.push_str("</nav></header>");
    s
}

/// The systems page's live part: counts by state and one row per system.
pub fn systems_live(all: &[SystemView], filter: Option<State>, now: i64, omitted: usize) -> String {
    let mut s = String::from("<p id=\"summary\">");
    let _ = write!(s, "{} systems:", all.len() + omitted);
    for st in State::ALL {
        let n = all.iter().filter(|v| v.state == st).count();
        let _ = write!(s, " <span class=\"state {0}\">{n} {0}</span>", st.name());
    }
    let unscanned: u64 = all.iter().map(|v| v.unscanned).sum();
    if unscanned > 0 {
        let _ = write!(s, " · {} not checked yet", bytes(unscanned));
    }
    if omitted > 0 {
        let _ = write!(s, " · {omitted} older systems not shown");
    }
    s.push_str(
        "</p>\n<table id=\"systems\"><thead><tr><th>system</th><th>state</th>\
                <th class=\"n\">files</th><th class=\"n\">bytes</th><th>last upload (UTC)</th>\
                <th class=\"n\">age</th></tr></thead><tbody>\n",
    );
    let shown = sorted(all, filter);
    for v in shown.iter().take(MAX_ROWS) {
        let name = text::html(v.name.as_bytes());
        let _ = writeln!(
            s,
            "<tr class=\"{st}\" data-system=\"{name}\"><td><a href=\"/s/{name}\">{name}</a></td>\
             <td><span class=\"state {st}\">{st}</span>{why}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            v.files.len(),
            bytes(v.bytes),
            utc(v.last_upload),
            ago(now.saturating_sub(v.last_upload)),
            st = v.state.name(),
            why = v
                .reasons
                .first()
                .map(|r| reason_html(&v.name, v.state, r))
                .unwrap_or_else(|| progress_html(v, now)),
        );
    }
    s.push_str("</tbody></table>\n");
    if shown.len() > MAX_ROWS {
        let _ = write!(
            s,
            "<p>{} more not shown: pick a state above.</p>",
            shown.len() - MAX_ROWS
        );
    }
    s
}

/// The systems `filter` keeps, failed first, then installing, idle,
/// finished; newest upload first within each.
fn sorted(all: &[SystemView], filter: Option<State>) -> Vec<&SystemView> {
    let mut v: Vec<&SystemView> = all
        .iter()
        .filter(|v| filter.is_none_or(|f| v.state == f))
        .collect();
    v.sort_unstable_by(|a, b| {
        (a.state, b.last_upload, &a.name).cmp(&(b.state, a.last_upload, &b.name))
    });
    v
}

/// Why, with a link to the line: `<div class="why">file:line why: text</div>`.
fn reason_html(system: &str, state: State, r: &Reason) -> String {
    let st = state.name();
    let (sys, file) = (text::html(system.as_bytes()), text::html(r.file.as_bytes()));
    match &r.found {
        Some(f) => format!(
                        "<div class=\"why {st}\"><a href=\"/s/{sys}/{file}?at={}&amp;line={}#match\">{file}:{}</a> {}: \
             <code>{}</code></div>",
            f.offset,
            f.line,
            f.line,
            r.why,
            text::html(&f.text)
        ),
        None => format!(
            "<div class=\"why {st}\"><a href=\"/s/{sys}/{file}\">{file}</a> {}</div>",
            r.why
        ),
    }
}

pub fn system_head(v: &SystemView) -> String {
    let name = text::html(v.name.as_bytes());
    format!("<header><h1><a href=\"/\">anamon</a> · {name}</h1></header>")
}

/// One system's live part: its state and why, and its files.
pub fn system_live(v: &SystemView, now: i64) -> String {
    let name = text::html(v.name.as_bytes());
    let mut s = format!(
        "<p id=\"summary\"><span class=\"state {0}\">{0}</span> · {1} files, {2} · last upload {3} UTC ({4} ago)",
        v.state.name(),
        v.files.len(),
        bytes(v.bytes),
        utc(v.last_upload),
        ago(now.saturating_sub(v.last_upload))
    );
    if v.unscanned > 0 {
        let _ = write!(s, " · {} not checked yet", bytes(v.unscanned));
    }
    s.push_str("</p>\n");
    s.push_str(&progress_html(v, now));
    for r in &v.reasons {
        s.push_str(&reason_html(&v.name, v.state, r));
    }
    s.push_str(
        "<table id=\"files\"><thead><tr><th>file</th><th class=\"n\">bytes</th>\
         <th>last change (UTC)</th><th class=\"n\">age</th><th></th></tr></thead><tbody>\n",
    );
    for f in &v.files {
        let file = text::html(f.name.as_bytes());
        let _ = writeln!(
            s,
            "<tr><td><a href=\"/s/{name}/{file}\">{file}</a></td><td class=\"n\">{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td><a href=\"/raw/{name}/{file}\">download</a></td></tr>",
            bytes(f.size),
            utc(f.mtime),
            ago(now.saturating_sub(f.mtime))
        );
    }
    s.push_str("</tbody></table>\n");
    if v.omitted_files > 0 {
        let _ = write!(s, "<p>{} more files not shown.</p>", v.omitted_files);
    }
    s
}

/// A file page: a stretch of the file, `start..start+shown.len()` of
/// `size` bytes. With `mark` (an offset in the stretch), that line is
/// highlighted; without, the page follows the file as it grows.
pub fn file_page(
    system: &str,
    file: &str,
    size: u64,
    start: u64,
    shown: &[u8],
    mark: Option<(usize, u64)>,
) -> String {
    let (sys, f) = (text::html(system.as_bytes()), text::html(file.as_bytes()));
    let end = start + shown.len() as u64;
    let head = format!(
        "<header><h1><a href=\"/\">anamon</a> · <a href=\"/s/{sys}\">{sys}</a> · {f}</h1>\
         <p>{} · showing bytes {start}–{end} · <a href=\"/raw/{sys}/{f}\">download</a>{} \
         <span id=\"follow\"></span></p></header>",
        bytes(size),
        if mark.is_some() {
            format!(" · <a href=\"/s/{sys}/{f}\">follow the end</a>")
        } else {
            String::new()
        },
    );
    let mut pre = String::from("<pre id=\"text\">");
    match mark {
        Some((at, line)) => {
            let at = at.min(shown.len());
            let line_end = shown[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(shown.len(), |n| at + n);
            text::push(&mut pre, &shown[..at], true);
            let _ = write!(pre, "<mark id=\"match\" title=\"line {line}\">");
            text::push(&mut pre, &shown[at..line_end], true);
            pre.push_str("</mark>");
            text::push(&mut pre, &shown[line_end..], true);
        }
        None => text::push(&mut pre, shown, true),
    }
    pre.push_str("</pre>");
    let follow = format!("/follow/{system}/{file}");
    let offset = end.to_string();
    let attrs: &[(&str, &str)] = if mark.is_some() {
        &[]
    } else {
        &[("follow", &follow), ("offset", &offset)]
    };
    page(&format!("{system} {file}"), "file", attrs, &head, &pre)
}

pub fn error_page(status: u16, why: &str) -> String {
    page(
        &format!("{status}"),
        "error",
        &[],
        &format!(
            "<header><h1><a href=\"/\">anamon</a> · {status}</h1></header><p>{}</p>",
            text::html(why.as_bytes())
        ),
        "",
    )
}

/// `/api/systems`: the systems page as JSON.
pub fn systems_json(all: &[SystemView], filter: Option<State>, now: i64, omitted: usize) -> String {
    let shown = sorted(all, filter);
    let doc = json!({
        "now": now,
        "omitted": omitted + shown.len().saturating_sub(MAX_ROWS),
        "systems": shown.iter().take(MAX_ROWS).map(|v| system_value(v, now, false)).collect::<Vec<_>>(),
    });
    format!("{doc:#}\n")
}

/// One system as a JSON object; with `files`, each file too.
pub fn system_json(s: &mut String, v: &SystemView, now: i64, files: bool) {
    let _ = write!(s, "{:#}", system_value(v, now, files));
}

fn system_value(v: &SystemView, now: i64, files: bool) -> Value {
    let reasons: Vec<Value> = v
        .reasons
        .iter()
        .map(|r| {
            let mut o = json!({"file": r.file, "why": r.why});
            if let Some(f) = &r.found {
                o["line"] = json!(f.line);
                o["offset"] = json!(f.offset);
                o["text"] = json!(text::plain(&f.text));
            }
            o
        })
        .collect();
    let mut o = json!({
        "name": v.name,
        "state": v.state.name(),
        "files": v.files.len(),
        "bytes": v.bytes,
        "last_upload": v.last_upload,
        "last_upload_utc": utc(v.last_upload),
        "age_s": now.saturating_sub(v.last_upload),
        "unscanned_bytes": v.unscanned,
        "started": v.started,
        "elapsed_s": now.saturating_sub(v.started),
        "reasons": reasons,
    });
    if let Some(p) = &v.progress {
        let mut stage = json!({"name": p.stage.name()});
        if let Some(since) = p.since {
            stage["since"] = json!(since);
            stage["for_s"] = json!(now.saturating_sub(since));
        }
        if let Some((n, m)) = p.packages {
            stage["package"] = json!(n);
            stage["packages"] = json!(m);
        }
        o["stage"] = stage;
    }
    if v.state == State::Stalled {
        o["stalled_s"] = json!(now.saturating_sub(v.last_upload));
    }
    if files {
        o["file_list"] = v
            .files
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "bytes": f.size,
                    "modified": f.mtime,
                    "modified_utc": utc(f.mtime),
                })
            })
            .collect();
    }
    o
}

/// Where the install is, as a line: `packages 812/1999 · 4 min`, and for a
/// stalled one how long it has been quiet.
fn progress_html(v: &SystemView, now: i64) -> String {
    let mut s = String::new();
    if let Some(p) = &v.progress {
        if matches!(v.state, State::Installing | State::Stalled) {
            let _ = write!(s, "<div class=\"stage\">{}", p.stage.name());
            if let Some((n, m)) = p.packages.filter(|_| p.stage == Stage::Packages) {
                let _ = write!(s, " {n}/{m}");
            }
            if let Some(since) = p.since {
                let _ = write!(s, " · {}", ago(now.saturating_sub(since)));
            }
            if v.state == State::Stalled {
                let _ = write!(
                    s,
                    " · <span class=\"stall\">no new line for {}</span>",
                    ago(now.saturating_sub(v.last_upload))
                );
            }
            let _ = write!(
                s,
                " · {} since it began",
                ago(now.saturating_sub(v.started))
            );
            s.push_str("</div>");
        }
    }
    s
}

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        v /= 1024.0;
        if v < 1024.0 || unit == "TiB" {
            return format!("{v:.1} {unit}");
        }
    }
    unreachable!()
}

/// `5 s`, `3 min`, `2 h`, `4 d`.
pub fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ages() {
        assert_eq!(ago(i64::MIN), "0 s");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256.0 MiB");
        assert_eq!(
            (ago(-3), ago(119), ago(120), ago(7200), ago(200_000)),
            (
                "0 s".into(),
                "119 s".into(),
                "2 min".into(),
                "2 h".into(),
                "2 d".into()
            )
        );
    }
}
