//! The Cobbler protocol client: one `upload_log_data` call in whichever wire
//! form the server understands, what a refusal means, and where to go when
//! the server is a Cobbler release that refuses every upload. Retrying is
//! the shipper's business, not this module's.

use crate::error::Error;
use crate::transport::Transport;
use anamon_xmlrpc::{self as xmlrpc, Param, Response, Value};
use std::fmt;
use std::time::Duration;

/// How `data` travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `<base64>`, which Python hands over as `Binary`: Cobbler ≥ 3.2.2.
    Binary,
    /// Base64 text in `<string>`: Cobbler 2.x to 3.2.1.
    Text,
}

impl Wire {
    fn other(self) -> Wire {
        match self {
            Wire::Binary => Wire::Text,
            Wire::Text => Wire::Binary,
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::Binary => "<base64> (Cobbler >= 3.2)",
            Wire::Text => "base64 text in <string> (Cobbler 2.x)",
        })
    }
}

/// The `--wire` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireChoice {
    /// Start with `<base64>`; on a fault before anything has worked, try the
    /// other form; keep whichever one the server first accepts.
    Auto,
    Fixed(Wire),
}

/// Where the form stands: still to be found, or settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireState {
    /// `Auto`, nothing accepted yet: a fault may mean the wrong form.
    Trying(Wire),
    /// Accepted once (or fixed by `--wire`): a fault is the server's
    /// trouble, and a retry costs one request.
    Settled(Wire),
}

/// The XML-RPC path: Cobbler's own unless `--path` named one.
pub(crate) const DEFAULT_PATH: &str = "/cobbler_api";
/// Where the packaged anamon-receiver answers beside a Cobbler 3.3 server
/// (its Apache snippet proxies this path).
pub(crate) const RECEIVER_PATH: &str = "/anamon_api";

/// Which path the agent posts to, and whether it may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `--path` was given: it always wins.
    Given(String),
    /// Cobbler's default; if that Cobbler refuses every upload, a receiver
    /// at [`RECEIVER_PATH`] on the same host and port takes over.
    Default,
    /// Switched to the receiver.
    Receiver,
}

impl Route {
    pub(crate) fn path(&self) -> &str {
        match self {
            Route::Given(p) => p,
            Route::Default => DEFAULT_PATH,
            Route::Receiver => RECEIVER_PATH,
        }
    }
}

/// What a `False` from the server comes to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Why the server refuses, as far as its version tells.
    Explained(String),
    /// The server is a Cobbler that refuses every upload, and a receiver on
    /// the same host answered: uploads now go there.
    Rerouted { path: &'static str, why: String },
}

/// A Cobbler server, as far as anamon uses it.
pub(crate) struct Client<T> {
    transport: T,
    route: Route,
    wire: WireState,
    /// Sent as the 6th argument when set (see `cli`'s --token).
    token: Option<String>,
    /// The request body, kept across calls: a 256 KiB chunk encodes to
    /// ~350 KiB, which musl would map and unmap for every upload.
    body: Vec<u8>,
}

/// One upload: where in which file the bytes go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upload<'a> {
    pub system: &'a str,
    pub file: &'a str,
    pub offset: u64,
    pub data: &'a [u8],
}

impl<T: Transport> Client<T> {
    pub(crate) fn new(transport: T, choice: WireChoice, route: Route) -> Client<T> {
        Client {
            transport,
            route,
            wire: match choice {
                WireChoice::Auto => WireState::Trying(Wire::Binary),
                WireChoice::Fixed(w) => WireState::Settled(w),
            },
            token: None,
            body: Vec::new(),
        }
    }

    /// Sends `token` with every upload (Cobbler's optional `token` argument).
    pub(crate) fn with_token(mut self, token: Option<String>) -> Client<T> {
        self.token = token;
        self
    }

    /// Uploads one chunk. Returns `Ok(Some(wire))` the first time the server
    /// accepts a form it had not accepted before, so the caller can say so
    /// once.
    pub(crate) fn upload(
        &mut self,
        up: &Upload<'_>,
        timeout: Duration,
    ) -> Result<Option<Wire>, Error> {
        let offset = i64::try_from(up.offset).map_err(|_| Error::OffsetTooLarge)?;
        match self.wire {
            WireState::Settled(w) => self.upload_as(w, up, offset, timeout).map(|()| None),
            WireState::Trying(w) => match self.upload_as(w, up, offset, timeout) {
                Ok(()) => {
                    self.wire = WireState::Settled(w);
                    Ok(Some(w))
                }
                // Each contract's server raises on the other's data type
                // (`'str' object has no attribute 'data'`, `decodestring`
                // on a Binary), so a fault is the cue to try the other form.
                // Only an acceptance proves the other form; anything else
                // leaves the first fault as the answer, so a fault about
                // one file stays a fault about one file.
                Err(first @ Error::Fault { .. }) => {
                    let other = w.other();
                    match self.upload_as(other, up, offset, timeout) {
                        Ok(()) => {
                            self.wire = WireState::Settled(other);
                            Ok(Some(other))
                        }
                        Err(_) => Err(first),
                    }
                }
                Err(e) => Err(e),
            },
        }
    }

    fn upload_as(
        &mut self,
        wire: Wire,
        up: &Upload<'_>,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), Error> {
        let data = match wire {
            Wire::Binary => Param::Base64(up.data),
            Wire::Text => Param::Base64Text(up.data),
        };
        let size = i64::try_from(up.data.len()).expect("chunks are small");
        let params = [
            Param::Str(up.system),
            Param::Str(up.file),
            Param::Int(size),
            Param::Int(offset),
            data,
            Param::Str(self.token.as_deref().unwrap_or_default()),
        ];
        let given = if self.token.is_some() { 6 } else { 5 };
        let mut body = std::mem::take(&mut self.body);
        xmlrpc::encode_call_into(&mut body, "upload_log_data", &params[..given]);
        let path = self.route.path().to_string();
        let answer = self.call_at(&path, &body, timeout);
        self.body = body;
        match answer? {
            Value::Bool(true) => Ok(()),
            Value::Bool(false) => Err(Error::Refused),
            other => Err(Error::Unexpected(format!(
                "upload_log_data answered {}, not a boolean",
                other.describe()
            ))),
        }
    }

    /// Looks into a `False`: the server's release tells the likeliest cause,
    /// and a release that refuses every upload sends the agent to a
    /// receiver beside it, if one answers there and no `--path` was given.
    pub(crate) fn refusal(&mut self, system: &str, timeout: Duration) -> Refusal {
        let version = self.version_at(self.route.path().to_string().as_str(), timeout);
        let Ok(v) = version else {
            return Refusal::Explained(format!(
                "anamon_enabled is off, or no system or profile is named {system:?}"
            ));
        };
        if v.starts_with("anamon-receiver") {
            return Refusal::Explained(format!(
                "{v} does not take the name {system:?} or the upload (see its log)"
            ));
        }
        if !refuses_every_upload(&v) {
            return Refusal::Explained(format!(
                "Cobbler {v}: anamon_enabled is off, or no system or profile is named {system:?}"
            ));
        }
        let why = format!(
            "Cobbler {v} refuses every anamon upload as shipped (a server bug, fixed in 4.0)"
        );
        if self.route == Route::Default {
            if let Ok(r) = self.version_at(RECEIVER_PATH, timeout) {
                if r.starts_with("anamon-receiver") {
                    self.route = Route::Receiver;
                    return Refusal::Rerouted {
                        path: RECEIVER_PATH,
                        why: format!("{why}; {r} answers at {RECEIVER_PATH}"),
                    };
                }
            }
        }
        Refusal::Explained(format!(
            "{why}; run anamon-receiver beside it (see the anamon README)"
        ))
    }

    /// The server's release, e.g. "3.3.10", from `extended_version()` (or
    /// the float `version()`, which cannot tell 3.3.1 from 3.3.10); neither
    /// needs a login.
    fn version_at(&mut self, path: &str, timeout: Duration) -> Result<String, Error> {
        let body = xmlrpc::encode_call("extended_version", &[]);
        if let Ok(Value::Struct(members)) = self.call_at(path, &body, timeout) {
            if let Some((_, Value::Str(v))) = members.iter().find(|(k, _)| k == "version") {
                return Ok(v.clone());
            }
        }
        let body = xmlrpc::encode_call("version", &[]);
        Ok(match self.call_at(path, &body, timeout)? {
            Value::Double(d) => d,
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            other => other.describe(),
        })
    }

    fn call_at(&mut self, path: &str, body: &[u8], timeout: Duration) -> Result<Value, Error> {
        let resp = self.transport.post(path, body, timeout)?;
        match xmlrpc::parse_response(&resp).map_err(|e| Error::NotXmlRpc(e.to_string()))? {
            Response::Value(v) => Ok(v),
            Response::Fault { code, message } => Err(Error::Fault { code, message }),
        }
    }
}

/// Cobbler 3.2.2 and 3.3.0 to 3.3.10 answer `False` to every upload: they
/// check `isinstance(data, bytes)` where XML-RPC hands over a `Binary`. A
/// bare "3.3" (the float `version()`) is one of them too.
pub(crate) fn refuses_every_upload(version: &str) -> bool {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(3)), Some(Some(3)), None, None) => true,
        (Some(Some(3)), Some(Some(3)), Some(Some(patch)), None) => patch <= 10,
        (Some(Some(3)), Some(Some(2)), Some(Some(2)), None) => true,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;

    // Answers as Cobbler gives them; TRUE and FAULT serve the shipper's tests too.
    pub(crate) const TRUE: &str = "<methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse>";
    pub(crate) const FALSE: &str = "<methodResponse><params><param><value><boolean>0</boolean></value></param></params></methodResponse>";
    pub(crate) const FAULT: &str = "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>boom</string></value></member></struct></value></fault></methodResponse>";

    pub(crate) fn version_answer(v: &str) -> String {
        format!("<methodResponse><params><param><value><struct><member><name>version</name><value><string>{v}</string></value></member></struct></value></param></params></methodResponse>")
    }

    /// A scripted server: answers each request with the next canned reply
    /// and records the path, method and wire form of each request.
    #[derive(Default)]
    pub(crate) struct Scripted {
        pub replies: VecDeque<Result<String, Error>>,
        pub seen: Vec<(String, String)>,
    }

    impl Scripted {
        pub(crate) fn new(replies: Vec<Result<&str, Error>>) -> Scripted {
            Scripted {
                replies: replies.into_iter().map(|r| r.map(str::to_string)).collect(),
                seen: Vec::new(),
            }
        }
    }

    impl Transport for Scripted {
        fn post(&mut self, path: &str, body: &[u8], _: Duration) -> Result<Vec<u8>, Error> {
            let s = String::from_utf8_lossy(body);
            let what = if s.contains("<base64>") {
                "base64".to_string()
            } else if s.contains("upload_log_data") {
                "string".to_string()
            } else {
                s.split("<methodName>")
                    .nth(1)
                    .and_then(|r| r.split('<').next())
                    .unwrap_or("?")
                    .to_string()
            };
            self.seen.push((path.to_string(), what));
            self.replies
                .pop_front()
                .expect("a reply for every request")
                .map(String::into_bytes)
        }
    }

    fn client(replies: Vec<Result<&str, Error>>, choice: WireChoice) -> Client<Scripted> {
        Client::new(Scripted::new(replies), choice, Route::Default)
    }

    const T: Duration = Duration::from_secs(1);

    fn up(offset: u64) -> Upload<'static> {
        Upload {
            system: "n",
            file: "f",
            offset,
            data: b"x",
        }
    }

    fn forms(c: &Client<Scripted>) -> Vec<&str> {
        c.transport.seen.iter().map(|(_, w)| w.as_str()).collect()
    }

    #[test]
    fn auto_switches_to_text_on_a_fault_and_keeps_it() {
        let mut c = client(vec![Ok(FAULT), Ok(TRUE), Ok(TRUE)], WireChoice::Auto);
        assert_eq!(c.upload(&up(0), T).unwrap(), Some(Wire::Text));
        assert_eq!(c.upload(&up(1), T).unwrap(), None);
        assert_eq!(forms(&c), ["base64", "string", "string"]);
    }

    #[test]
    fn a_settled_wire_never_switches_and_a_retry_costs_one_request() {
        let mut c = client(vec![Ok(TRUE), Ok(FAULT), Ok(FAULT)], WireChoice::Auto);
        assert_eq!(c.upload(&up(0), T).unwrap(), Some(Wire::Binary));
        for offset in [1, 1] {
            assert!(matches!(c.upload(&up(offset), T), Err(Error::Fault { .. })));
        }
        assert_eq!(forms(&c), ["base64", "base64", "base64"]);
    }

    #[test]
    fn both_forms_faulting_reports_the_first_fault() {
        let mut c = client(vec![Ok(FAULT), Ok(FAULT)], WireChoice::Auto);
        assert!(matches!(c.upload(&up(0), T), Err(Error::Fault { .. })));
        assert_eq!(c.wire, WireState::Trying(Wire::Binary));
    }

    #[test]
    fn a_fault_stays_a_fault_when_the_other_form_fails_otherwise() {
        // <base64> faults about this file; the <string> retry then times
        // out, is refused or gets an HTTP error. None of those prove the
        // other form, and none may replace the fault: a per-file hold must
        // not become a server-wide outage with the wrong explanation.
        for second in [
            Err(Error::Timeout),
            Ok(FALSE),
            Err(Error::Http {
                status: 502,
                detail: String::new(),
            }),
            Err(Error::Connect(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        ] {
            let mut c = client(vec![Ok(FAULT), second], WireChoice::Auto);
            let e = c.upload(&up(0), T).unwrap_err();
            assert!(matches!(e, Error::Fault { .. }), "{e}");
            assert_eq!(c.wire, WireState::Trying(Wire::Binary));
        }
    }

    #[test]
    fn fixed_wire_does_not_negotiate() {
        let mut c = client(vec![Ok(FAULT)], WireChoice::Fixed(Wire::Text));
        assert!(matches!(c.upload(&up(0), T), Err(Error::Fault { .. })));
        assert_eq!(forms(&c), ["string"]);
    }

    #[test]
    fn false_is_a_refusal_and_other_values_are_unexpected() {
        let mut c = client(vec![Ok(FALSE)], WireChoice::Auto);
        assert!(matches!(c.upload(&up(0), T), Err(Error::Refused)));
        let mut c = client(
            vec![Ok("<methodResponse><params><param><value><int>3</int></value></param></params></methodResponse>")],
            WireChoice::Auto,
        );
        assert!(matches!(c.upload(&up(0), T), Err(Error::Unexpected(_))));
    }

    #[test]
    fn an_offset_past_2_63_is_its_own_error_and_sends_nothing() {
        let mut c = client(vec![], WireChoice::Auto);
        let e = c.upload(&up(u64::MAX), T).unwrap_err();
        assert!(matches!(e, Error::OffsetTooLarge), "{e}");
        assert!(c.transport.seen.is_empty());
    }

    #[test]
    fn the_refusing_releases() {
        for v in ["3.3.0", "3.3.3", "3.3.10", "3.2.2", "3.3"] {
            assert!(refuses_every_upload(v), "{v}");
        }
        for v in [
            "3.3.11", "3.2.3", "3.2.1", "4.0.0", "4.0.0b7", "2.8.5", "3.1.2", "x", "",
        ] {
            assert!(!refuses_every_upload(v), "{v}");
        }
    }

    #[test]
    fn a_refusing_release_with_a_receiver_beside_it_reroutes_once() {
        let cobbler = version_answer("3.3.10");
        let receiver = version_answer("anamon-receiver 0.1.0");
        let mut c = client(
            vec![Ok(&cobbler), Ok(&receiver), Ok(TRUE)],
            WireChoice::Auto,
        );
        let r = c.refusal("web01", T);
        assert!(
            matches!(&r, Refusal::Rerouted { path: RECEIVER_PATH, why } if why.contains("3.3.10")),
            "{r:?}"
        );
        c.upload(&up(0), T).unwrap();
        let paths: Vec<&str> = c.transport.seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, [DEFAULT_PATH, RECEIVER_PATH, RECEIVER_PATH]);
    }

    #[test]
    fn no_reroute_with_a_given_path_a_working_release_or_no_receiver() {
        // --path given: the refusal is explained, nothing else is asked.
        let cobbler = version_answer("3.3.10");
        let mut c = Client::new(
            Scripted::new(vec![Ok(&cobbler)]),
            WireChoice::Auto,
            Route::Given("/x".into()),
        );
        assert!(matches!(c.refusal("web01", T), Refusal::Explained(w) if w.contains("3.3.10")));
        assert_eq!(c.transport.seen.len(), 1);
        // A release that takes uploads: the cause is the settings.
        let good = version_answer("4.0.0b7");
        let mut c = client(vec![Ok(&good)], WireChoice::Auto);
        assert!(
            matches!(c.refusal("web01", T), Refusal::Explained(w) if w.contains("anamon_enabled"))
        );
        // Nothing answers at the receiver's path (Apache's 404).
        let not_found = Err(Error::Http {
            status: 404,
            detail: String::new(),
        });
        let mut c = client(
            vec![Ok(&cobbler), not_found, Err(Error::Timeout)],
            WireChoice::Auto,
        );
        assert!(matches!(c.refusal("web01", T), Refusal::Explained(_)));
        assert_eq!(c.route, Route::Default);
    }
}
