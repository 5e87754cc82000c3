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
    let line = if under_journal() {
        format!("{args}\n")
    } else {
        format!(
            "{} anamon-receiver[{}]: {args}\n",
            crate::sys::utc_now(),
            std::process::id()
        )
    };
    // One write per line: lines from concurrent connections never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write_line(format_args!($($arg)*)) };
}
