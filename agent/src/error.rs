//! Every way one call to the server can fail, as the kinds the shipper acts
//! on. I/O failures keep their `io::Error` as the source, so the log line
//! says what the system said.

use anamon_xmlrpc::Escaped;
use std::fmt;
use std::io;

/// The most of an answer the agent reads: no answer to `upload_log_data`
/// or `version` comes near this; a larger one is a misconfigured proxy or a
/// hostile peer, and is not read into memory.
pub(crate) const MAX_RESPONSE: u64 = 64 * 1024;

#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Error {
    /// No connection: refused, unreachable, name lookup failed. The server
    /// never saw the request.
    Connect(io::Error),
    /// Connected, but no complete answer within the time allowed. The
    /// server may still act on the request later.
    Timeout,
    /// The connection broke mid-request or mid-response. The server may
    /// have acted on the request.
    Io(io::Error),
    /// A shutdown signal ended the request (or kept it from starting).
    Interrupted,
    /// An HTTP status other than 200 (Apache's error pages).
    Http { status: u16, detail: String },
    /// A 200 that is not an XML-RPC response (an HTML page, garbage).
    NotXmlRpc(String),
    /// The answer was larger than [`MAX_RESPONSE`].
    TooLarge,
    /// An XML-RPC fault: the server raised an exception.
    Fault { code: i64, message: String },
    /// `upload_log_data` answered `False`.
    Refused,
    /// A well-formed answer that is not what the call returns.
    Unexpected(String),
    /// The offset does not fit XML-RPC's largest integer: nothing was
    /// sent, and no retry can change that.
    OffsetTooLarge,
}

impl Error {
    /// The server may have received the request and may still act on it
    /// later: a write it performs then is not ordered with the agent's
    /// later requests.
    pub(crate) fn may_land_late(&self) -> bool {
        matches!(self, Error::Timeout | Error::Io(_) | Error::Interrupted)
    }

    /// What kind of outage this is, for "one log line per outage": a retry
    /// that fails the same way is not news.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::Connect(_) => "server unreachable",
            Error::Timeout => "server not answering",
            Error::Io(_) => "connection broken",
            Error::Interrupted => "interrupted",
            Error::Http { .. } => "HTTP error",
            Error::NotXmlRpc(_) | Error::TooLarge | Error::Unexpected(_) => "not an XML-RPC answer",
            Error::Fault { .. } => "server fault",
            Error::Refused => "refused",
            Error::OffsetTooLarge => "offset too large",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Timeout => f.write_str("no answer in time"),
            Error::Io(e) => write!(f, "connection failed mid-request: {e}"),
            Error::Interrupted => f.write_str("interrupted by a shutdown signal"),
            Error::Http { status, detail } => write!(f, "HTTP {status}{detail}"),
            Error::NotXmlRpc(e) => write!(f, "answer is not XML-RPC ({e})"),
            Error::TooLarge => write!(f, "answer larger than {MAX_RESPONSE} bytes"),
            Error::Fault { code, message } => {
                write!(f, "server fault {code}: {}", one_line(message, 200))
            }
            Error::Refused => f.write_str("upload_log_data answered False"),
            Error::Unexpected(v) => write!(f, "unexpected answer: {v}"),
            Error::OffsetTooLarge => f.write_str("offset beyond 2^63, which XML-RPC cannot carry"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Whitespace folded, cut at `max` characters, then escaped: faults carry
/// Python tracebacks, a log line must stay one line, and a hostile server's
/// ESC, BEL or U+202E must not reach the admin's terminal raw.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", Escaped(&folded[..i])),
        None => Escaped(&folded).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_fault_string_reaches_the_log_escaped() {
        let e = Error::Fault {
            code: 1,
            message: "ok\x1b[2J\x07 \u{202e}gol.nimda\r\nanamon[1]: forged".into(),
        };
        let text = e.to_string();
        assert_eq!(
            text,
            "server fault 1: ok\\x1b[2J\\x07 \\u{202e}gol.nimda anamon[1]: forged"
        );
    }

    #[test]
    fn io_failures_keep_their_cause() {
        let e = Error::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.to_string().contains("refused"), "{source}");
        assert!(e.to_string().starts_with("cannot connect: "));
        assert!(std::error::Error::source(&Error::Refused).is_none());
    }

    #[test]
    fn faults_are_one_line_and_bounded() {
        let e = Error::Fault {
            code: 1,
            message: format!("Traceback\n  File x\n{}", "y".repeat(500)),
        };
        let text = e.to_string();
        assert!(!text.contains('\n') && text.chars().count() < 230, "{text}");
    }
}
