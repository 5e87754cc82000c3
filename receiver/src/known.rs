//! Names Cobbler knows (`--cobbler-api URL`): on a Cobbler server the
//! receiver stores logs only for a system or profile that cobblerd has, as
//! Cobbler's own `upload_log_data` does. It asks cobblerd's XML-RPC with the
//! read-only calls that need no login (`get_system`, then `get_profile`:
//! both answer a struct for a known name and `"~"` for an unknown one) and
//! caches each answer briefly, so an install's stream of uploads costs
//! cobblerd one lookup a minute.
//!
//! A lookup never holds up anything but the call that needs it, and that
//! one for LOOKUP_BUDGET at most: no lock is held across the call to
//! cobblerd; a name already answered is served from the cache, and once its
//! answer is stale (but not STALE_AT_MOST) it is still served while one
//! background lookup refreshes it; concurrent calls for one unanswered name
//! share one lookup (single flight); and cobblerd sees at most
//! MAX_LOOKUPS of these calls at once, however many names clients invent.
//! A hung cobblerd (it accepts and never answers) so costs a new name a
//! fault within LOOKUP_BUDGET, and costs known names nothing.

use anamon_xmlrpc::{encode_call, parse_response, Escaped, Param, ParseError, Response, Value};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a "known" answer is trusted: a system removed from Cobbler
/// stops being accepted within this time.
const KNOWN_FOR: Duration = Duration::from_secs(60);
/// How long an "unknown" answer is trusted: short, so a system added to
/// Cobbler just before its install starts is not refused for long.
const UNKNOWN_FOR: Duration = Duration::from_secs(5);
/// How long a stale answer is still served while it is being looked up
/// again (cobblerd slow, hung or restarting).
const STALE_AT_MOST: Duration = Duration::from_secs(600);
/// Cached names at most; past it the stale ones are dropped.
const MAX_CACHED: usize = 4096;
/// Time for a whole lookup (both calls), from the moment an upload needs
/// it: well inside the agent's 20 s timeout.
const LOOKUP_BUDGET: Duration = Duration::from_secs(3);
/// Lookups in flight to cobblerd at once.
const MAX_LOOKUPS: usize = 4;
/// Largest answer read: a system's struct is a few KiB.
const MAX_ANSWER: u64 = 4 << 20;

/// Where cobblerd's XML-RPC listens: `http://ADDRESS:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: String,
}

/// A `--cobbler-api` value that is not `http://ADDRESS:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BadEndpoint(String);

impl fmt::Display for BadEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\": expected http://ADDRESS:PORT[/PATH], e.g. http://127.0.0.1:25151",
            Escaped(&self.0)
        )
    }
}

impl std::error::Error for BadEndpoint {}

impl Endpoint {
    /// Parses `http://127.0.0.1:25151` or `http://127.0.0.1:25151/RPC2`. Only
    /// an IP address: the receiver resolves no names (cobblerd is local).
    pub fn parse(url: &str) -> Result<Endpoint, BadEndpoint> {
        let bad = || BadEndpoint(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host.parse().map_err(|_| bad())?;
        if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(bad());
        }
        Ok(Endpoint {
            addr,
            path: path.to_string(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// Cobbler's answer about one name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// A system or a profile of that name exists.
    Known,
    Unknown,
}

/// Why cobblerd could not be asked about a name.
#[derive(Debug)]
pub struct LookupError {
    method: &'static str,
    name: String,
    url: String,
    failure: Failure,
}

/// What went wrong with one lookup.
#[derive(Debug)]
pub enum Failure {
    /// No whole answer within LOOKUP_BUDGET (cobblerd hung or slow).
    Timeout,
    /// MAX_LOOKUPS were in flight for all of LOOKUP_BUDGET.
    Busy,
    /// Connecting, sending or reading failed.
    Transport(ureq::Error),
    /// An HTTP status other than 200.
    Status(u16),
    /// The body is not an XML-RPC answer.
    Unreadable(ParseError),
    Fault {
        code: i64,
        message: String,
    },
    /// A well-formed answer that `get_system` never gives.
    Unexpected(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?}) at {}: ", self.method, self.name, self.url)?;
        match &self.failure {
            Failure::Timeout => write!(f, "no whole answer within {LOOKUP_BUDGET:?}"),
            Failure::Busy => write!(f, "{MAX_LOOKUPS} lookups already waiting on cobblerd"),
            Failure::Transport(ureq::Error::ConnectionFailed) => f.write_str("cannot connect"),
            Failure::Transport(ureq::Error::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                write!(f, "cannot connect: {e}")
            }
            Failure::Transport(e) => write!(f, "{}", Escaped(&e.to_string())),
            Failure::Status(code) => write!(f, "HTTP answer {code}"),
            Failure::Unreadable(e) => write!(f, "unreadable answer: {e}"),
            Failure::Fault { code, message } => {
                write!(f, "fault {code}: {}", Escaped(message))
            }
            Failure::Unexpected(what) => write!(f, "unexpected answer: {}", Escaped(what)),
        }
    }
}

impl std::error::Error for LookupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            Failure::Transport(e) => Some(e),
            Failure::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}

/// The outcome of one lookup, shared by every call that waited on it.
type Outcome = Result<Verdict, Arc<LookupError>>;

pub struct CobblerNames {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    agent: ureq::Agent,
    /// Never held across a call to cobblerd.
    cache: Mutex<HashMap<String, Entry>>,
    in_flight: Mutex<usize>,
    slot_freed: Condvar,
}

#[derive(Default)]
struct Entry {
    answer: Option<(Instant, Verdict)>,
    /// The lookup under way for this name, if any.
    flight: Option<Arc<Flight>>,
}

/// One lookup under way; calls for the same name wait on it.
#[derive(Default)]
struct Flight {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

impl Flight {
    /// The lookup's outcome, or a timeout error at `deadline`.
    fn wait(&self, deadline: Instant, name: &str, url: &str) -> Outcome {
        let mut outcome = lock(&self.outcome);
        loop {
            if let Some(o) = &*outcome {
                return o.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Arc::new(LookupError {
                    method: "get_system",
                    name: name.to_string(),
                    url: url.to_string(),
                    failure: Failure::Timeout,
                }));
            }
            outcome = self
                .done
                .wait_timeout(outcome, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What the cache says about a name.
enum Cached {
    Fresh(Verdict),
    /// Stale but still served; `refresh` is the lookup to run, if this call
    /// is the one that starts it.
    Stale(Verdict, Option<Arc<Flight>>),
    /// No answer to serve: wait for `flight`, running it if `lead`.
    Missing {
        flight: Arc<Flight>,
        lead: bool,
    },
}

impl CobblerNames {
    pub fn new(endpoint: Endpoint) -> CobblerNames {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("anamon-receiver/", env!("CARGO_PKG_VERSION")))
            .build();
        CobblerNames {
            inner: Arc::new(Inner {
                endpoint,
                agent: config.into(),
                cache: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(0),
                slot_freed: Condvar::new(),
            }),
        }
    }

    /// Whether Cobbler knows `name`, from the cache or by asking, within
    /// LOOKUP_BUDGET. An error (cobblerd down, hung, a fault) is never
    /// cached: the caller answers a fault and the agent retries.
    pub fn verdict(&self, name: &str) -> Result<Verdict, Arc<LookupError>> {
        // Only a name Cobbler could have reaches cobblerd.
        if !anamon_names::is_system_name(name) {
            return Ok(Verdict::Unknown);
        }
        let deadline = Instant::now() + LOOKUP_BUDGET;
        match self.inner.cached(name) {
            Cached::Fresh(v) => Ok(v),
            Cached::Stale(v, refresh) => {
                if let Some(flight) = refresh {
                    let inner = Arc::clone(&self.inner);
                    let owned = name.to_string();
                    let started = std::thread::Builder::new()
                        .name("cobbler-lookup".into())
                        .spawn(move || {
                            let deadline = Instant::now() + LOOKUP_BUDGET;
                            // Its outcome lands in the cache; nobody waits on it here.
                            let _ = inner.run(&owned, &flight, deadline);
                        });
                    if started.is_err() {
                        // No thread: the next call past the stale one tries again.
                        let mut cache = lock(&self.inner.cache);
                        if let Some(e) = cache.get_mut(name) {
                            e.flight = None;
                        }
                    }
                }
                Ok(v)
            }
            Cached::Missing { flight, lead: true } => self.inner.run(name, &flight, deadline),
            Cached::Missing {
                flight,
                lead: false,
            } => flight.wait(deadline, name, &self.inner.endpoint.url()),
        }
    }

    #[cfg(test)]
    fn cached(&self, name: &str) -> Option<Verdict> {
        let cache = lock(&self.inner.cache);
        let (at, v) = cache.get(name)?.answer?;
        (at.elapsed() < ttl(v)).then_some(v)
    }
}

impl Inner {
    fn cached(&self, name: &str) -> Cached {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(name) {
            // Whatever names clients invent, the cache stays bounded.
            cache.retain(|_, e| {
                e.flight.is_some() || e.answer.is_some_and(|(at, _)| at.elapsed() < STALE_AT_MOST)
            });
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, e| e.flight.is_some());
            }
        }
        let entry = cache.entry(name.to_string()).or_default();
        if let Some((at, v)) = entry.answer {
            let age = at.elapsed();
            if age < ttl(v) {
                return Cached::Fresh(v);
            }
            if age < STALE_AT_MOST {
                let refresh = match entry.flight {
                    Some(_) => None,
                    None => {
                        let flight = Arc::new(Flight::default());
                        entry.flight = Some(Arc::clone(&flight));
                        Some(flight)
                    }
                };
                return Cached::Stale(v, refresh);
            }
        }
        match &entry.flight {
            Some(flight) => Cached::Missing {
                flight: Arc::clone(flight),
                lead: false,
            },
            None => {
                let flight = Arc::new(Flight::default());
                entry.flight = Some(Arc::clone(&flight));
                Cached::Missing { flight, lead: true }
            }
        }
    }

    /// Runs the lookup of `flight`, records its outcome and wakes the calls
    /// waiting on it.
    fn run(&self, name: &str, flight: &Flight, deadline: Instant) -> Outcome {
        let outcome = self.lookup(name, deadline).map_err(Arc::new);
        {
            let mut cache = lock(&self.cache);
            if let Some(entry) = cache.get_mut(name) {
                entry.flight = None;
                if let Ok(v) = outcome {
                    entry.answer = Some((Instant::now(), v));
                }
            }
        }
        *lock(&flight.outcome) = Some(outcome.clone());
        flight.done.notify_all();
        outcome
    }

    /// Asks `get_system`, then `get_profile`, within `deadline`.
    fn lookup(&self, name: &str, deadline: Instant) -> Result<Verdict, LookupError> {
        let error = |method, failure| LookupError {
            method,
            name: name.to_string(),
            url: self.endpoint.url(),
            failure,
        };
        let _slot = self
            .take_slot(deadline)
            .ok_or_else(|| error("get_system", Failure::Busy))?;
        for method in ["get_system", "get_profile"] {
            if self
                .ask(method, name, deadline)
                .map_err(|f| error(method, f))?
                == Verdict::Known
            {
                return Ok(Verdict::Known);
            }
        }
        Ok(Verdict::Unknown)
    }

    /// One call, bounded by `deadline` as a whole (connect, send, answer).
    fn ask(&self, method: &str, name: &str, deadline: Instant) -> Result<Verdict, Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        let transport = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => Failure::Timeout,
            e => Failure::Transport(e),
        };
        let response = self
            .agent
            .post(self.endpoint.url())
            .header("Content-Type", "text/xml")
            .config()
            .timeout_global(Some(left))
            .build()
            .send(&encode_call(method, &[Param::Str(name)])[..])
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(transport)?;
        if status != 200 {
            return Err(Failure::Status(status));
        }
        interpret(&body)
    }

    /// A place among the MAX_LOOKUPS in flight, waited for until `deadline`.
    fn take_slot(&self, deadline: Instant) -> Option<Slot<'_>> {
        let mut n = lock(&self.in_flight);
        while *n >= MAX_LOOKUPS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            n = self
                .slot_freed
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *n += 1;
        Some(Slot(self))
    }
}

/// A lookup in flight; its place is given back on drop.
struct Slot<'a>(&'a Inner);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.in_flight) -= 1;
        self.0.slot_freed.notify_one();
    }
}

fn ttl(v: Verdict) -> Duration {
    match v {
        Verdict::Known => KNOWN_FOR,
        Verdict::Unknown => UNKNOWN_FOR,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `get_system`/`get_profile` answered: a struct for an item, `"~"`
/// (Cobbler's stand-in for None) for no item.
fn interpret(body: &[u8]) -> Result<Verdict, Failure> {
    match parse_response(body).map_err(Failure::Unreadable)? {
        Response::Value(Value::Struct(_)) => Ok(Verdict::Known),
        Response::Value(Value::Str(s)) if s == "~" => Ok(Verdict::Unknown),
        Response::Value(v) => Err(Failure::Unexpected(v.describe())),
        Response::Fault { code, message } => Err(Failure::Fault { code, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:25151").unwrap();
        assert_eq!((e.addr.port(), e.path.as_str()), (25151, "/"));
        assert_eq!(e.url(), "http://127.0.0.1:25151/");
        let e = Endpoint::parse("http://[::1]:25151/RPC2").unwrap();
        assert_eq!(e.path, "/RPC2");
        for bad in [
            "",
            "127.0.0.1:25151",
            "https://127.0.0.1:25151",
            "http://localhost:25151",
            "http://127.0.0.1",
            "http://127.0.0.1:25151/a b",
            "http://127.0.0.1:25151/\n\x1b",
        ] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(err.chars().all(|c| (' '..='~').contains(&c)), "{err}");
        }
    }

    const KNOWN: &[u8] = b"<?xml version='1.0'?>\n<methodResponse><params><param><value><struct><member><name>name</name><value><string>web01</string></value></member></struct></value></param></params></methodResponse>";
    const NONE: &[u8] = b"<?xml version='1.0'?>\n<methodResponse><params><param><value><string>~</string></value></param></params></methodResponse>";

    #[test]
    fn answers_are_read_as_cobbler_means_them() {
        assert!(matches!(interpret(KNOWN), Ok(Verdict::Known)));
        assert!(matches!(interpret(NONE), Ok(Verdict::Unknown)));
        let fault = b"<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value><string>boom</string></value></member></struct></value></fault></methodResponse>";
        assert!(
            matches!(interpret(fault), Err(Failure::Fault { message, .. }) if message == "boom")
        );
        assert!(interpret(b"<html>").is_err());
    }

    /// What the stand-in cobblerd does with a call about a name.
    #[derive(Clone, Copy)]
    enum Reply {
        Known,
        Unknown,
        /// Reads the call and never answers.
        Hang,
    }

    /// A cobblerd stand-in on 127.0.0.1, a thread per connection: `reply`
    /// says what each name gets from get_system (get_profile always finds
    /// nothing). Counts the calls, and sends each name asked about.
    fn scripted(reply: fn(&str) -> Reply) -> (Endpoint, Arc<AtomicUsize>, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let (asked, names) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let (counted, asked) = (Arc::clone(&counted), asked.clone());
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !String::from_utf8_lossy(&req).contains("</methodCall>") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = &req[req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
                    let call = anamon_xmlrpc::server::parse_call(body).unwrap();
                    let name = match call.params.first() {
                        Some(Value::Str(name)) => name.clone(),
                        _ => String::new(),
                    };
                    let _ = asked.send(name.clone());
                    let body = match (call.method == "get_system", reply(&name)) {
                        (true, Reply::Known) => KNOWN,
                        (_, Reply::Hang) => {
                            // Holds the connection open, answering nothing.
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                        _ => NONE,
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(body);
                });
            }
        });
        let endpoint = Endpoint {
            addr,
            path: "/".into(),
        };
        (endpoint, calls, names)
    }

    fn web01_known(name: &str) -> Reply {
        match name {
            "web01" => Reply::Known,
            "hung" => Reply::Hang,
            _ => Reply::Unknown,
        }
    }

    #[test]
    fn asks_system_then_profile_and_caches() {
        let (endpoint, calls, _) = scripted(web01_known);
        let names = CobblerNames::new(endpoint);
        assert_eq!(names.verdict("web01").unwrap(), Verdict::Known);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a system needs one call");
        assert_eq!(names.verdict("web01").unwrap(), Verdict::Known);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the second answer is cached"
        );
        assert_eq!(names.verdict("nosuch").unwrap(), Verdict::Unknown);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "unknown: system, then profile"
        );
        // Names Cobbler cannot have never reach it.
        assert_eq!(names.verdict("../etc").unwrap(), Verdict::Unknown);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_missing_cobblerd_is_an_error_not_a_verdict() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let names =
            CobblerNames::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap());
        let err = names.verdict("web01").unwrap_err().to_string();
        assert!(
            err.contains("get_system(\"web01\")") && err.contains("cannot connect"),
            "{err}"
        );
        assert!(names.cached("web01").is_none(), "errors are not cached");
    }

    #[test]
    fn a_hung_cobblerd_costs_a_fault_within_the_budget() {
        // It accepts, reads the call and never answers: the lookup ends
        // with a timeout error (it used to hold a server thread, and every
        // other lookup behind it, for 5 s a call).
        let (endpoint, _, _) = scripted(|_| Reply::Hang);
        let names = CobblerNames::new(endpoint);
        let began = Instant::now();
        let err = names.verdict("web01").unwrap_err();
        assert!(matches!(err.failure, Failure::Timeout), "{err}");
        eprintln!("hung cobblerd: fault after {:?}", began.elapsed());
    }

    #[test]
    fn a_known_name_never_waits_on_another_names_lookup() {
        let (endpoint, calls, asked) = scripted(web01_known);
        let names = Arc::new(CobblerNames::new(endpoint));
        assert_eq!(names.verdict("web01").unwrap(), Verdict::Known);
        assert_eq!(asked.recv().unwrap(), "web01");
        // Past its freshness: served stale while it is looked up again.
        lock(&names.inner.cache).get_mut("web01").unwrap().answer = Some((
            Instant::now() - KNOWN_FOR - Duration::from_secs(1),
            Verdict::Known,
        ));
        let hung = {
            let names = Arc::clone(&names);
            std::thread::spawn(move || names.verdict("hung"))
        };
        assert_eq!(
            asked.recv().unwrap(),
            "hung",
            "the hung lookup is under way"
        );
        assert_eq!(names.verdict("web01").unwrap(), Verdict::Known);
        assert!(
            !hung.is_finished(),
            "web01 was answered while hung's lookup hangs"
        );
        assert!(hung.join().unwrap().is_err());
        // The refresh ran in the background: cobblerd was asked about web01 again.
        assert_eq!(asked.recv().unwrap(), "web01");
        assert!(calls.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn concurrent_lookups_of_one_name_are_one_call() {
        let (endpoint, calls, _) = scripted(web01_known);
        let names = Arc::new(CobblerNames::new(endpoint));
        let start = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (names, start) = (Arc::clone(&names), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    names.verdict("web01").unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Verdict::Known);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
