//! The XML-RPC service: `upload_log_data` with Cobbler 4.0's rules, plus
//! the receiver's own checks (token, allow-list, caps, rate), which answer
//! faults that say what to change. Where Cobbler answers a bare `False`
//! (bad name pattern, size mismatch, wrong types), so does the receiver:
//! the agent and Python anamon already handle that answer.

use crate::known::{CobblerNames, Verdict};
use crate::limits::RateLimiter;
use crate::metrics::{Cause, COUNTERS};
use crate::sessions::{Outcome, Sessions};
use crate::store::{LogDir, StoreError};
use anamon_xmlrpc::server::{base64_decode, encode_fault, encode_response, parse_call};
use anamon_xmlrpc::{Escaped, Value};
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Who may upload: an optional allow-list of system names and an optional
/// shared token (Cobbler's `upload_log_data` takes a `token` argument too,
/// so an agent sending one works against either server).
#[derive(Default)]
pub struct Policy {
    pub allow: Option<HashSet<String>>,
    pub token: Option<String>,
    /// Only names this Cobbler knows as a system or profile (`--cobbler-api`).
    pub cobbler: Option<CobblerNames>,
}

pub struct Service {
    pub store: LogDir,
    pub policy: Policy,
    pub rate: RateLimiter,
    pub sessions: Sessions,
    pub call_log: Option<Mutex<std::fs::File>>,
}

/// What one call came to, before it is encoded.
enum Answer {
    Value(Value),
    Fault(String),
}

/// The facts of one `upload_log_data` call, for the call log.
#[derive(Default)]
struct CallRecord {
    method: Option<String>,
    upload: Option<UploadFacts>,
}

/// What an `upload_log_data` call asked for, once its arguments were read.
struct UploadFacts {
    system: String,
    file: String,
    size: i64,
    offset: i64,
    data_len: usize,
}

impl Service {
    /// The HTTP body answering the request body `body` from `client`.
    pub fn answer(&self, client: IpAddr, body: &[u8]) -> Vec<u8> {
        let mut record = CallRecord::default();
        let answer = self.dispatch(client, body, &mut record);
        self.log_call(&record, &answer);
        match answer {
            Answer::Value(v) => encode_response(&v),
            Answer::Fault(msg) => encode_fault(1, &msg),
        }
    }

    fn dispatch(&self, client: IpAddr, body: &[u8], record: &mut CallRecord) -> Answer {
        if !self.rate.allow(client, Instant::now()) {
            COUNTERS.refused(Cause::RateCap);
            let msg = "anamon-receiver: too many requests from this client; slow down".to_string();
            self.sessions
                .noise(client, "over the request rate cap; answered faults");
            return Answer::Fault(msg);
        }
        let call = match parse_call(body) {
            Ok(c) => c,
            Err(e) => {
                COUNTERS.refused(Cause::NotXmlRpc);
                self.sessions
                    .noise(client, &format!("not an XML-RPC call: {e}"));
                return Answer::Fault(format!("anamon-receiver: not an XML-RPC call: {e}"));
            }
        };
        record.method = Some(call.method.clone());
        match call.method.as_str() {
            "upload_log_data" => self.upload(client, &call.params, record),
            "extended_version" => Answer::Value(Value::Struct(vec![
                (
                    "version".into(),
                    Value::Str(concat!("anamon-receiver ", env!("CARGO_PKG_VERSION")).into()),
                ),
                ("version_tuple".into(), Value::Array(version_tuple())),
            ])),
            "version" => Answer::Value(Value::Double(format!(
                "{}.{}",
                env!("CARGO_PKG_VERSION_MAJOR"),
                env!("CARGO_PKG_VERSION_MINOR")
            ))),
            other => {
                COUNTERS.refused(Cause::UnknownMethod);
                Answer::Fault(format!(
                    "anamon-receiver: method \"{}\" is not served here (only upload_log_data)",
                    Escaped(other)
                ))
            }
        }
    }

    fn upload(&self, client: IpAddr, params: &[Value], record: &mut CallRecord) -> Answer {
        let answer = self.checked_upload(client, params, record);
        // Every refusal ends here as a fault or a bare False; the ones with a
        // cause of their own were counted where they were found.
        match (&answer, &record.upload) {
            (Answer::Value(Value::Bool(true)), Some(up)) => COUNTERS.stored(up.data_len as u64),
            (Answer::Value(Value::Bool(false)), _) => COUNTERS.refused(Cause::Malformed),
            _ => {}
        }
        answer
    }

    fn checked_upload(&self, client: IpAddr, params: &[Value], record: &mut CallRecord) -> Answer {
        if !(5..=6).contains(&params.len()) {
            COUNTERS.refused(Cause::Malformed);
            return Answer::Fault(format!(
                "anamon-receiver: upload_log_data takes 5 or 6 arguments, not {}",
                params.len()
            ));
        }
        let token = match params.get(5) {
            // <nil/> is Python's None: "no token", as Cobbler reads it.
            None | Some(Value::Nil) => None,
            Some(Value::Str(t)) => Some(t.as_str()),
            // Cobbler: "token was given but had an invalid type".
            Some(_) => return Answer::Value(Value::Bool(false)),
        };
        if let Some(want) = &self.policy.token {
            match token {
                None => {
                    COUNTERS.refused(Cause::Token);
                    self.sessions
                        .noise(client, "upload without a token; refused");
                    return Answer::Fault(
                        "anamon-receiver: this receiver needs a token (anamon --token)".into(),
                    );
                }
                Some(t) if !same_secret(t.as_bytes(), want.as_bytes()) => {
                    COUNTERS.refused(Cause::Token);
                    self.sessions
                        .noise(client, "upload with a wrong token; refused");
                    return Answer::Fault("anamon-receiver: wrong token".into());
                }
                Some(_) => {}
            }
        }
        // Cobbler's type checks and name patterns: a bare False.
        let (Value::Str(system), Value::Str(file), Value::Int(size), Value::Int(offset)) =
            (&params[0], &params[1], &params[2], &params[3])
        else {
            return Answer::Value(Value::Bool(false));
        };
        let data_text = match &params[4] {
            Value::Base64(t) => t,
            // Cobbler 2.x's contract: base64 text in a <string>.
            Value::Str(t) => t,
            // Cobbler faults here too (it reads `.data` of whatever came).
            other => {
                COUNTERS.refused(Cause::BadData);
                return Answer::Fault(format!(
                    "anamon-receiver: data is {}, not base64",
                    other.describe()
                ));
            }
        };
        if !anamon_names::is_system_name(system) || !anamon_names::is_file_name(file) {
            return Answer::Value(Value::Bool(false));
        }
        let refuse = |cause: Cause, why: String| {
            COUNTERS.refused(cause);
            self.sessions
                .record(system, file, client, Outcome::Refused(&why));
            Answer::Fault(format!("anamon-receiver: {why}"))
        };
        if let Some(allow) = &self.policy.allow {
            if !allow.contains(system.as_str()) {
                return refuse(
                    Cause::AllowList,
                    format!("system {system:?} is not on this receiver's allow-list"),
                );
            }
        }
        if let Some(cobbler) = &self.policy.cobbler {
            match cobbler.verdict(system) {
                Ok(Verdict::Known) => {}
                Ok(Verdict::Unknown) => {
                    return refuse(
                        Cause::UnknownToCobbler,
                        format!("Cobbler has no system or profile called {system:?}"),
                    )
                }
                Err(e) => {
                    return refuse(
                        Cause::CobblerUnreachable,
                        format!("cannot ask Cobbler whether {system:?} exists ({e}); not stored"),
                    )
                }
            }
        }
        let data = match base64_decode(data_text) {
            Ok(d) => d,
            Err(e) => return refuse(Cause::BadData, format!("data is not base64: {e}")),
        };
        record.upload = Some(UploadFacts {
            system: system.clone(),
            file: file.clone(),
            size: *size,
            offset: *offset,
            data_len: data.len(),
        });
        if *offset != -1 && *size != data.len() as i64 {
            self.sessions.record(
                system,
                file,
                client,
                Outcome::Refused("size does not match the data"),
            );
            return Answer::Value(Value::Bool(false));
        }
        match self.store.write(system, file, *size, *offset, &data) {
            Ok(stored) => {
                self.sessions.record(
                    system,
                    file,
                    client,
                    Outcome::Stored {
                        bytes: data.len() as u64,
                        offset: *offset,
                        file_size: stored.file_size,
                    },
                );
                Answer::Value(Value::Bool(true))
            }
            Err(StoreError::Refused(kind, why)) => refuse(kind.into(), why),
            Err(e @ StoreError::Io { .. }) => refuse(Cause::DiskError, format!("{e}; not stored")),
        }
    }

    fn log_call(&self, record: &CallRecord, answer: &Answer) {
        let Some(log) = &self.call_log else { return };
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut entry = json!({ "t": t, "method": record.method });
        if let Some(up) = &record.upload {
            entry["sys_name"] = json!(up.system);
            entry["file"] = json!(up.file);
            entry["size"] = json!(up.size);
            entry["offset"] = json!(up.offset);
            entry["data_len"] = json!(up.data_len);
        }
        match answer {
            Answer::Value(Value::Bool(b)) => entry["result"] = json!(b),
            Answer::Value(_) => entry["result"] = json!("value"),
            Answer::Fault(m) => entry["fault"] = json!(m),
        }
        let mut line = call_log_line(&entry);
        line.push(b'\n');
        let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(&line);
    }
}

/// One call log entry as a JSON line: serde_json, with `", "` and `": "`
/// between members (the form ci/peer/peer.py writes for Cobbler's calls,
/// so scripts read both logs alike), and every character outside
/// printable ASCII as `\uXXXX`, so a line shows in a terminal what it
/// holds (a client's U+202E would turn it around, an ESC would act).
fn call_log_line(entry: &serde_json::Value) -> Vec<u8> {
    let mut line = Vec::new();
    let mut out = serde_json::Serializer::with_formatter(&mut line, CallLogFormat);
    // Writing to a Vec cannot fail, and a Value always serializes.
    let _ = entry.serialize(&mut out);
    line
}

struct CallLogFormat;

impl serde_json::ser::Formatter for CallLogFormat {
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    /// serde_json escapes quotes, backslashes and C0 controls itself; the
    /// rest of a string comes here.
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() && !c.is_ascii_control() {
                w.write_all(&[c as u8])?;
            } else {
                // UTF-16 units, as JSON spells a character outside the BMP.
                for unit in c.encode_utf16(&mut [0; 2]) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

fn version_tuple() -> Vec<Value> {
    [
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    ]
    .iter()
    .map(|n| Value::Int(n.parse().unwrap_or(0)))
    .collect()
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_method_name_is_escaped_in_the_fault_and_the_call_log() {
        let dir = tempfile::tempdir().unwrap();
        let call_log = dir.path().join("calls.jsonl");
        let service = Service {
            store: LogDir::open(
                &dir.path().join("logs"),
                crate::store::Caps {
                    file_bytes: 1 << 20,
                    system_bytes: 1 << 20,
                    total_bytes: 1 << 30,
                    files_per_system: 10,
                    min_free_bytes: 0,
                },
            )
            .unwrap(),
            policy: Policy::default(),
            rate: RateLimiter::new(100, 100),
            sessions: Sessions::new(std::time::Duration::from_secs(60)),
            call_log: Some(Mutex::new(std::fs::File::create(&call_log).unwrap())),
        };
        let body = "<?xml version='1.0'?><methodCall><methodName>upload\nanamon-receiver: forged\x1b[2J\x07\u{202e}</methodName><params/></methodCall>";
        let answer = service.answer("127.0.0.1".parse().unwrap(), body.as_bytes());
        let answer = String::from_utf8(answer).unwrap();
        let fault = &answer[answer.find("is not served").unwrap() - 80..];
        assert!(
            answer.contains("upload\\x0aanamon-receiver: forged\\x1b[2J\\x07\\u{202e}"),
            "{answer}"
        );
        assert!(!fault.contains(['\x1b', '\x07', '\u{202e}']), "{fault:?}");
        let logged = std::fs::read_to_string(&call_log).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged:?}");
        assert!(
            logged.is_ascii() && !logged.contains('\x1b') && logged.ends_with("}\n"),
            "{logged:?}"
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn call_log_lines_are_json_in_printable_ascii() {
        let entry = json!({"method": "a\"b\\c\n\0\x1b\x7f\u{202e}é😀", "result": true});
        let line = String::from_utf8(call_log_line(&entry)).unwrap();
        assert_eq!(
            line,
            r#"{"method": "a\"b\\c\n\u0000\u001b\u007f\u202e\u00e9\ud83d\ude00", "result": true}"#
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            entry
        );
    }
}
