//! One line per event worth an admin's attention, to stderr. Under systemd
//! (JOURNAL_STREAM set) the journal adds time and PID itself.

use std::io::Write;
use std::sync::OnceLock;

fn under_journal() -> bool {
    static J: OnceLock<bool> = OnceLock::new();
    *J.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some())
}

#[doc(hidden)]
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let line = render(args, under_journal());
    // One write per line: lines from concurrent connections never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The log line for `args`. Text a client chose is escaped where it enters
/// a message ([`anamon_xmlrpc::Escaped`]); as a last guard, a message that
/// still holds anything but printable ASCII (a raw line break, an escape
/// sequence, a U+202E) is escaped whole here, so it stays one line that
/// shows what it is, whichever code built it.
fn render(args: std::fmt::Arguments<'_>, journal: bool) -> String {
    let mut message = args.to_string();
    if !message.chars().all(|c| (' '..='~').contains(&c)) {
        message = anamon_xmlrpc::Escaped(&message).to_string();
    }
    if journal {
        format!("{message}\n")
    } else {
        format!(
            "{} anamon-receiver[{}]: {message}\n",
            utc(unix_now()),
            std::process::id()
        )
    }
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write_line(format_args!($($arg)*)) };
}

/// Seconds since the epoch now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the epoch, UTC: the receiver's
/// one date formatter (log lines and the live view). The civil calendar
/// from days, as in Howard Hinnant's `civil_from_days`; no C library, no
/// time zone.
pub(crate) fn utc(t: i64) -> String {
    // Years 0 to 9999: a planted file may carry any time at all.
    let t = t.clamp(-62_167_219_200, 253_402_300_799);
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00");
        assert_eq!(utc(i64::MIN), "0000-01-01 00:00:00");
        assert_eq!(utc(i64::MAX), "9999-12-31 23:59:59");
    }

    #[test]
    fn a_forged_line_stays_one_escaped_line() {
        // A request line and path with a lone LF, ESC, BEL and U+202E,
        // as a client can send them.
        let path = "/RPC2\n2026-12-06 00:00:00 anamon-receiver[1]: web01/a.log from 10.0.0.1: 5 bytes\x1b[2J\x07\u{202e}";
        for journal in [true, false] {
            let line = render(
                format_args!("10.0.0.9: HTTP 404: {path} is not an XML-RPC endpoint"),
                journal,
            );
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(line.ends_with('\n'));
            assert!(
                line[..line.len() - 1]
                    .chars()
                    .all(|c| (' '..='~').contains(&c)),
                "{line:?}"
            );
            assert!(
                line.contains("/RPC2\\x0a2026-12-06") && line.contains("\\x1b[2J\\x07\\u{202e}"),
                "{line:?}"
            );
        }
        // Plain lines are left as they are.
        assert_eq!(
            render(format_args!("web01/a.log from 10.0.0.1"), true),
            "web01/a.log from 10.0.0.1\n"
        );
    }
}
