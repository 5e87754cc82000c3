//! What this process stored and refused, counted for `/metrics` (served by
//! the live view, in Prometheus' text exposition format). Counters are per
//! process, as Prometheus expects of each instance; systems by state come
//! from the log directory and so are the same on every receiver sharing it.

use crate::store::Refusal;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request was not stored, one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Over the per-client request rate.
    RateCap,
    /// Not an XML-RPC call at all.
    NotXmlRpc,
    /// A method other than upload_log_data, version, extended_version.
    UnknownMethod,
    /// Cobbler's own checks: argument count and types, name patterns, size
    /// against the data (answered False, as Cobbler does).
    Malformed,
    /// A missing or wrong token.
    Token,
    /// A system name not on the allow-list.
    AllowList,
    /// A name cobblerd has no system or profile for (`--cobbler-api`).
    UnknownToCobbler,
    /// cobblerd could not be asked (`--cobbler-api`): nothing stored.
    CobblerUnreachable,
    /// Data that is not base64.
    BadData,
    FileCap,
    SystemCap,
    /// A new file in a system already at `--max-files-per-system`.
    FilesPerSystem,
    /// The whole log directory at `--max-total-size`.
    TotalCap,
    /// The file system down to `--min-free-space`.
    FreeSpace,
    /// A symlink, hard link, FIFO or directory where the log should be.
    NotPlain,
    /// An offset or final size that means nothing.
    BadRange,
    /// The disk failed (a full disk, EIO): nothing stored, the agent retries.
    DiskError,
    /// Refused at the HTTP level (bad framing, too large, too slow).
    Http,
}

impl Cause {
    const ALL: [Cause; 18] = [
        Cause::RateCap,
        Cause::NotXmlRpc,
        Cause::UnknownMethod,
        Cause::Malformed,
        Cause::Token,
        Cause::AllowList,
        Cause::UnknownToCobbler,
        Cause::CobblerUnreachable,
        Cause::BadData,
        Cause::FileCap,
        Cause::SystemCap,
        Cause::FilesPerSystem,
        Cause::TotalCap,
        Cause::FreeSpace,
        Cause::NotPlain,
        Cause::BadRange,
        Cause::DiskError,
        Cause::Http,
    ];

    fn label(self) -> &'static str {
        match self {
            Cause::RateCap => "rate_cap",
            Cause::NotXmlRpc => "not_xmlrpc",
            Cause::UnknownMethod => "unknown_method",
            Cause::Malformed => "malformed",
            Cause::Token => "token",
            Cause::AllowList => "allow_list",
            Cause::UnknownToCobbler => "unknown_to_cobbler",
            Cause::CobblerUnreachable => "cobbler_unreachable",
            Cause::BadData => "bad_data",
            Cause::FileCap => "file_cap",
            Cause::SystemCap => "system_cap",
            Cause::FilesPerSystem => "files_per_system",
            Cause::TotalCap => "total_cap",
            Cause::FreeSpace => "free_space",
            Cause::NotPlain => "not_plain",
            Cause::BadRange => "bad_range",
            Cause::DiskError => "disk_error",
            Cause::Http => "http",
        }
    }
}

impl From<Refusal> for Cause {
    fn from(r: Refusal) -> Cause {
        match r {
            Refusal::FileCap => Cause::FileCap,
            Refusal::SystemCap => Cause::SystemCap,
            Refusal::FilesPerSystem => Cause::FilesPerSystem,
            Refusal::TotalCap => Cause::TotalCap,
            Refusal::FreeSpace => Cause::FreeSpace,
            Refusal::NotPlain => Cause::NotPlain,
            Refusal::BadRange => Cause::BadRange,
        }
    }
}

#[derive(Default)]
pub struct Counters {
    uploads: AtomicU64,
    bytes: AtomicU64,
    refused: [AtomicU64; Cause::ALL.len()],
}

/// The process's counters: every connection thread adds to them.
pub static COUNTERS: Counters = Counters::new();

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            uploads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            refused: [const { AtomicU64::new(0) }; Cause::ALL.len()],
        }
    }

    /// An upload answered True after `bytes` were stored.
    pub fn stored(&self, bytes: u64) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn refused(&self, cause: Cause) {
        let i = Cause::ALL.iter().position(|c| *c == cause).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in the exposition format.
    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let uploads = "upload_log_data calls stored and answered True";
        sample(
            out,
            "anamon_receiver_uploads_total",
            "counter",
            uploads,
            load(&self.uploads),
        );
        let bytes = "bytes of log data stored";
        sample(
            out,
            "anamon_receiver_stored_bytes_total",
            "counter",
            bytes,
            load(&self.bytes),
        );
        let name = "anamon_receiver_refusals_total";
        family(out, name, "counter", "requests not stored, by cause");
        for (cause, n) in Cause::ALL.iter().zip(&self.refused) {
            let _ = writeln!(out, "{name}{{cause=\"{}\"}} {}", cause.label(), load(n));
        }
    }
}

/// A metric family of one sample without labels.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The `# HELP` and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

// ---- Connections (receiver/src/server.rs): refused or cut, by cause. ----

/// Connections the server refused or ended early, by cause.
pub struct ConnectionCounters {
    crowded: AtomicU64,
    head_timeout: AtomicU64,
    write_stall: AtomicU64,
    slow_reader: AtomicU64,
}

/// The process's connection counters.
pub static CONNECTIONS: ConnectionCounters = ConnectionCounters {
    crowded: AtomicU64::new(0),
    head_timeout: AtomicU64::new(0),
    write_stall: AtomicU64::new(0),
    slow_reader: AtomicU64::new(0),
};

impl ConnectionCounters {
    /// A connection refused: its address held its cap already.
    pub fn crowded(&self) {
        self.crowded.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed: no whole request head in time.
    pub fn head_timeout(&self) {
        self.head_timeout.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended: a write made no progress in time.
    pub fn write_stall(&self) {
        self.write_stall.fetch_add(1, Ordering::Relaxed);
    }

    /// A streamed response ended: its client read too slowly.
    pub fn slow_reader(&self) {
        self.slow_reader.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in the exposition format.
    pub fn render(&self, out: &mut String) {
        let name = "anamon_receiver_connections_cut_total";
        family(
            out,
            name,
            "counter",
            "connections refused or ended early, by cause",
        );
        for (cause, n) in [
            ("per_address_cap", &self.crowded),
            ("head_timeout", &self.head_timeout),
            ("write_stall", &self.write_stall),
            ("slow_reader", &self.slow_reader),
        ] {
            let _ = writeln!(
                out,
                "{name}{{cause=\"{cause}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}
// ---- end of the connection counters ----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_in_the_exposition_format() {
        let c = Counters::new();
        c.stored(10);
        c.stored(5);
        c.refused(Cause::SystemCap);
        c.refused(Refusal::NotPlain.into());
        c.refused(Cause::NotPlain);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("\nanamon_receiver_uploads_total 2\n"), "{out}");
        assert!(
            out.contains("\nanamon_receiver_stored_bytes_total 15\n"),
            "{out}"
        );
        assert!(out.contains("anamon_receiver_refusals_total{cause=\"system_cap\"} 1\n"));
        assert!(out.contains("anamon_receiver_refusals_total{cause=\"not_plain\"} 2\n"));
        assert!(out.contains("anamon_receiver_refusals_total{cause=\"http\"} 0\n"));
        c.refused(Refusal::TotalCap.into());
        c.refused(Refusal::FreeSpace.into());
        c.refused(Refusal::FilesPerSystem.into());
        let mut out = String::new();
        c.render(&mut out);
        for cause in ["total_cap", "free_space", "files_per_system"] {
            assert!(
                out.contains(&format!(
                    "anamon_receiver_refusals_total{{cause=\"{cause}\"}} 1\n"
                )),
                "{out}"
            );
        }
        // Every sample line is `name{labels} value`, every family typed once.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
            let base = name.split('{').next().unwrap();
            assert!(out.contains(&format!("# TYPE {base} counter\n")), "{line}");
        }
    }
}
