//! The command line. Every limit has a default that is safe on an open
//! network and roomy for real installs.

use argh::FromArgs;
use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Receives installer logs over XML-RPC `upload_log_data`, as Cobbler does,
/// and stores them as <dir>/<system>/<file>. `anamon-receiver status`
/// prints the systems of a log directory as a table (status --help).
#[derive(FromArgs, Debug)]
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// address and port to listen on (default 0.0.0.0:25152; behind
    /// Apache, 127.0.0.1:25152)
    #[argh(option, default = "String::from(\"0.0.0.0:25152\")")]
    listen: String,
    /// the log directory (default /var/log/cobbler/anamon, Cobbler's)
    #[argh(option, default = "PathBuf::from(\"/var/log/cobbler/anamon\")")]
    dir: PathBuf,
    /// accept uploads only for this system name (repeatable)
    #[argh(option)]
    allow: Vec<String>,
    /// accept uploads only for the system names in this file (one per
    /// line, # comments)
    #[argh(option)]
    allow_file: Option<PathBuf>,
    /// accept only system and profile names that the Cobbler at this
    /// XML-RPC URL knows, e.g. http://127.0.0.1:25151 (cobblerd; asked with
    /// get_system and get_profile, answers cached briefly)
    #[argh(option)]
    cobbler_api: Option<String>,
    /// require this shared token (first line of the file) as
    /// upload_log_data's 6th argument (anamon --token)
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// largest stored file (default 256M; K, M, G suffixes are powers of
    /// 1024)
    #[argh(option, default = "String::from(\"256M\")")]
    max_file_size: String,
    /// most bytes stored for one system (default 1G)
    #[argh(option, default = "String::from(\"1G\")")]
    max_system_size: String,
    /// most bytes stored in the whole log directory, all systems together
    /// (default 20G; each file counts at least 4 KiB)
    #[argh(option, default = "String::from(\"20G\")")]
    max_total_size: String,
    /// most files stored for one system (default 1000; an install sends
    /// a few dozen)
    #[argh(option, default = "1000")]
    max_files_per_system: u64,
    /// free space left on the log directory's file system: uploads that
    /// would go below it are refused (default 1G)
    #[argh(option, default = "String::from(\"1G\")")]
    min_free_space: String,
    /// requests per second one client address may make on average
    /// (default 100)
    #[argh(option, default = "100")]
    rate: u32,
    /// requests one client address may make at once before --rate applies
    /// (default 400)
    #[argh(option, default = "400")]
    burst: u32,
    /// connections served at once; more wait in the listen queue
    /// (default 4096, lowered to fit the open-file limit)
    #[argh(option, default = "4096")]
    max_connections: usize,
    /// connections one client address may hold at once; more are answered
    /// 503 and closed (default 32; a --trusted-proxy has no such cap)
    #[argh(option, default = "32")]
    max_connections_per_address: usize,
    /// bytes of request bodies held at once, from their reading to their
    /// answer; requests wait for room within --timeout (default 16M, at
    /// least --max-request-size)
    #[argh(option, default = "String::from(\"16M\")")]
    body_memory: String,
    /// largest request body (default 1M; an agent's 256 KiB chunk is about
    /// 350 KiB of XML)
    #[argh(option, default = "String::from(\"1M\")")]
    max_request_size: String,
    /// seconds a client has to send a request's body once its head is in
    /// (default 30; the head itself must come within 10 s, or this if
    /// shorter, which is also how long an idle connection is kept open)
    #[argh(option, default = "30")]
    timeout: u64,
    /// seconds without uploads after which a file's upload session ends and
    /// is logged (default 60)
    #[argh(option, default = "60")]
    session_idle: u64,
    /// append one JSON line per call to this file
    #[argh(option)]
    call_log: Option<PathBuf>,
    /// write the port listened on to this file once listening (for
    /// --listen with port 0)
    #[argh(option)]
    port_file: Option<PathBuf>,
    /// a load balancer or proxy in front (repeatable): for requests from
    /// it, the client is the last X-Forwarded-For address (rate caps and
    /// log lines then count each agent, not the proxy)
    #[argh(option)]
    trusted_proxy: Vec<String>,
    /// serve the read-only live view (pages, JSON, /metrics) on this
    /// address and port (default: no view)
    #[argh(option)]
    view: Option<String>,
    /// write the view's port to this file once listening
    #[argh(option)]
    view_port_file: Option<PathBuf>,
    /// connections the view serves at once, apart from uploads' (default
    /// 64; 8 per client address)
    #[argh(option, default = "64")]
    view_max_connections: usize,
    /// seconds after its last upload a system stops showing as installing
    /// (default 600)
    #[argh(option, default = "600")]
    view_window: u64,
    /// run this command (through /bin/sh -c) once each time a system turns
    /// failed, stalled or finished, with ANAMON_SYSTEM, ANAMON_STATE,
    /// ANAMON_REASON, ANAMON_STAGE and ANAMON_LINK in its environment;
    /// needs --view
    #[argh(option)]
    on_state_change: Option<String>,
    /// the view's address as users reach it, for the links the hook
    /// passes (default http://ADDRESS:PORT of --view)
    #[argh(option)]
    view_url: Option<String>,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    pub allow: Option<HashSet<String>>,
    pub token: Option<String>,
    pub cobbler_api: Option<crate::known::Endpoint>,
    pub max_file_size: u64,
    pub max_system_size: u64,
    pub max_total_size: u64,
    pub max_files_per_system: u64,
    pub min_free_space: u64,
    pub rate: u32,
    pub burst: u32,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_request_size: usize,
    pub body_memory: usize,
    pub timeout: Duration,
    pub session_idle: Duration,
    pub call_log: Option<PathBuf>,
    pub port_file: Option<PathBuf>,
    pub view: Option<crate::view::Settings>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

pub enum Command {
    Run(Box<Config>),
    Print(String),
    /// `anamon-receiver status`: print the systems' table and exit.
    Status(StatusOptions),
}

/// Prints every system of the log directory as a table: state, stage,
/// time since its install began, last upload, and why (as the live view
/// shows them, by the same rules).
#[derive(FromArgs, Debug)]
#[argh(help_triggers("-h", "--help"))]
struct StatusArgs {
    /// the log directory (default /var/log/cobbler/anamon)
    #[argh(option, default = "PathBuf::from(\"/var/log/cobbler/anamon\")")]
    dir: PathBuf,
    /// seconds after its last upload a system stops showing as installing
    /// (default 600, as --view-window)
    #[argh(option, default = "600")]
    window: u64,
    /// only systems in this state (installing, stalled, idle, finished,
    /// failed)
    #[argh(option)]
    state: Option<String>,
}

pub use crate::view::status::Options as StatusOptions;

/// Why the command line was refused: one line, naming the flag, with the
/// cause kept where there is one (a file that cannot be read).
#[derive(Debug)]
pub enum UsageError {
    /// argh's own first line: an unknown flag, a missing value.
    Args(String),
    /// An `ADDRESS:PORT` flag that resolves to nothing.
    Address {
        flag: &'static str,
        value: String,
    },
    /// A system name Cobbler would refuse; `source` names the flag or file.
    Name {
        source: String,
        name: String,
    },
    /// `--allow-file` or `--token-file` that cannot be read.
    Read {
        flag: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    ShortToken {
        path: PathBuf,
    },
    Size {
        flag: &'static str,
        text: String,
    },
    /// A size that does not fit this machine's memory bounds.
    TooLarge {
        flag: &'static str,
    },
    /// Flags that must be at least 1.
    Zero(&'static str),
    NeedsView,
    Dir(std::io::Error),
    CobblerApi(crate::known::BadEndpoint),
    TrustedProxy(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Args(line) => f.write_str(line),
            UsageError::Address { flag, value } => {
                write!(f, "{flag} {value:?}: expected ADDRESS:PORT")
            }
            UsageError::Name { source, name } => write!(
                f,
                "{source}: {name:?} is not a name Cobbler accepts ({})",
                anamon_names::SYSTEM_NAME_RULE
            ),
            UsageError::Read { flag, path, cause } => {
                write!(f, "{flag} {}: {cause}", path.display())
            }
            UsageError::ShortToken { path } => write!(
                f,
                "--token-file {}: the token must be at least 8 characters",
                path.display()
            ),
            UsageError::Size { flag, text } => write!(
                f,
                "{flag} {text:?}: expected a positive size such as 1048576, 64K, 256M or 1G"
            ),
            UsageError::TooLarge { flag } => write!(f, "{flag} is too large"),
            UsageError::Zero(flags) => write!(f, "{flags} must be at least 1"),
            UsageError::NeedsView => f.write_str("--on-state-change and --view-url need --view"),
            UsageError::Dir(cause) => write!(f, "--dir: {cause}"),
            UsageError::CobblerApi(e) => write!(f, "--cobbler-api {e}"),
            UsageError::TrustedProxy(p) => {
                write!(f, "--trusted-proxy {p:?}: expected an IP address")
            }
        }
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UsageError::Read { cause, .. } | UsageError::Dir(cause) => Some(cause),
            UsageError::CobblerApi(e) => Some(e),
            _ => None,
        }
    }
}

/// `ADDRESS:PORT` resolved to its first address.
fn address(flag: &'static str, value: &str) -> Result<SocketAddr, UsageError> {
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| UsageError::Address {
            flag,
            value: value.to_string(),
        })
}

/// What argh's early exit means: `--help` printed, or a one-line error.
fn early_exit(early: argh::EarlyExit) -> Result<Command, UsageError> {
    match early.status {
        Ok(()) => Ok(Command::Print(early.output)),
        Err(()) => Err(UsageError::Args(
            early
                .output
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_end_matches(':')
                .to_string(),
        )),
    }
}

fn parse_status(args: &[&str]) -> Result<Command, UsageError> {
    let a = match StatusArgs::from_args(&["anamon-receiver status"], args) {
        Ok(a) => a,
        Err(early) => return early_exit(early),
    };
    Ok(Command::Status(StatusOptions {
        dir: a.dir,
        window: a.window.max(1) as i64,
        state: a.state,
    }))
}

/// Parses `args` (without the program name). An error is one line.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    if strs.first() == Some(&"status") {
        return parse_status(&strs[1..]);
    }
    let a = match Args::from_args(&["anamon-receiver"], &strs) {
        Ok(a) => a,
        Err(early) => return early_exit(early),
    };
    if a.version {
        return Ok(Command::Print(
            concat!("anamon-receiver ", env!("CARGO_PKG_VERSION"), "\n").into(),
        ));
    }
    let listen = address("--listen", &a.listen)?;
    let mut allow: Option<HashSet<String>> = None;
    for name in &a.allow {
        allow
            .get_or_insert_with(HashSet::new)
            .insert(checked_name(name, "--allow")?);
    }
    if let Some(path) = &a.allow_file {
        let text = std::fs::read_to_string(path).map_err(|cause| UsageError::Read {
            flag: "--allow-file",
            path: path.clone(),
            cause,
        })?;
        let set = allow.get_or_insert_with(HashSet::new);
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                set.insert(checked_name(
                    line,
                    &format!("--allow-file {}", path.display()),
                )?);
            }
        }
    }
    let token = match &a.token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|cause| UsageError::Read {
                flag: "--token-file",
                path: path.clone(),
                cause,
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.len() < 8 {
                return Err(UsageError::ShortToken { path: path.clone() });
            }
            Some(token)
        }
    };
    let view = match &a.view {
        None => None,
        Some(addr) => Some(crate::view::Settings {
            listen: address("--view", addr)?,
            port_file: a.view_port_file.clone(),
            max_connections: a.view_max_connections.max(1),
            window: Duration::from_secs(a.view_window.max(1)),
            on_state_change: a.on_state_change.clone(),
            url: a
                .view_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
        }),
    };
    if a.max_files_per_system == 0 {
        return Err(UsageError::Zero("--max-files-per-system"));
    }
    if a.view.is_none() && (a.on_state_change.is_some() || a.view_url.is_some()) {
        return Err(UsageError::NeedsView);
    }
    if a.max_connections == 0
        || a.max_connections_per_address == 0
        || a.rate == 0
        || a.timeout == 0
        || a.session_idle == 0
    {
        return Err(UsageError::Zero(
            "--max-connections, --max-connections-per-address, --rate, --timeout and --session-idle",
        ));
    }
    Ok(Command::Run(Box::new(Config {
        listen,
        dir: std::path::absolute(&a.dir).map_err(UsageError::Dir)?,
        allow,
        token,
        cobbler_api: match &a.cobbler_api {
            None => None,
            Some(url) => Some(crate::known::Endpoint::parse(url).map_err(UsageError::CobblerApi)?),
        },
        max_file_size: size("--max-file-size", &a.max_file_size)?,
        max_system_size: size("--max-system-size", &a.max_system_size)?,
        max_total_size: size("--max-total-size", &a.max_total_size)?,
        max_files_per_system: a.max_files_per_system,
        min_free_space: size_or_zero("--min-free-space", &a.min_free_space)?,
        rate: a.rate,
        burst: a.burst.max(1),
        max_connections: a.max_connections,
        max_connections_per_address: a.max_connections_per_address,
        max_request_size: usize::try_from(size("--max-request-size", &a.max_request_size)?)
            .map_err(|_| UsageError::TooLarge {
                flag: "--max-request-size",
            })?,
        body_memory: usize::try_from(size("--body-memory", &a.body_memory)?).map_err(|_| {
            UsageError::TooLarge {
                flag: "--body-memory",
            }
        })?,
        timeout: Duration::from_secs(a.timeout),
        session_idle: Duration::from_secs(a.session_idle),
        call_log: a.call_log,
        port_file: a.port_file,
        view,
        trusted_proxies: a
            .trusted_proxy
            .iter()
            .map(|p| p.parse().map_err(|_| UsageError::TrustedProxy(p.clone())))
            .collect::<Result<_, _>>()?,
    })))
}

fn checked_name(name: &str, source: &str) -> Result<String, UsageError> {
    if anamon_names::is_system_name(name) {
        Ok(name.to_string())
    } else {
        Err(UsageError::Name {
            source: source.to_string(),
            name: name.to_string(),
        })
    }
}

/// A size that may be "0" (no floor).
fn size_or_zero(flag: &'static str, text: &str) -> Result<u64, UsageError> {
    if text.trim() == "0" {
        Ok(0)
    } else {
        size(flag, text)
    }
}

/// "1048576", "64K", "256M", "1G", "2T" (powers of 1024).
fn size(flag: &'static str, text: &str) -> Result<u64, UsageError> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| UsageError::Size {
            flag,
            text: text.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args).map_err(|e| e.to_string())? {
            Command::Run(c) => Ok(*c),
            Command::Print(p) => Err(format!("printed {p}")),
            Command::Status(o) => Err(format!(
                "status {} {} {:?}",
                o.dir.display(),
                o.window,
                o.state
            )),
        }
    }

    #[test]
    fn status_and_the_hook() {
        assert_eq!(
            run(&[
                "status",
                "--dir",
                "/srv/logs",
                "--window",
                "60",
                "--state",
                "stalled"
            ])
            .err(),
            Some("status /srv/logs 60 Some(\"stalled\")".to_string())
        );
        assert_eq!(
            run(&["status"]).err(),
            Some("status /var/log/cobbler/anamon 600 None".to_string())
        );
        assert!(run(&["status", "--bogus"]).is_err_and(|e| e.contains("--bogus")));
        let c = run(&[
            "--view",
            "127.0.0.1:0",
            "--on-state-change",
            "true",
            "--view-url",
            "https://x/a/",
        ])
        .unwrap();
        let v = c.view.unwrap();
        assert_eq!(
            (v.on_state_change.as_deref(), v.url.as_deref()),
            (Some("true"), Some("https://x/a"))
        );
        assert_eq!(
            run(&["--view-url", "https://x"]).err(),
            Some("--on-state-change and --view-url need --view".to_string())
        );
    }

    #[test]
    fn defaults_are_cobblers_layout_and_safe_limits() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:25152".parse().unwrap());
        assert_eq!(c.dir, PathBuf::from("/var/log/cobbler/anamon"));
        assert!(c.allow.is_none() && c.token.is_none());
        assert!(c.view.is_none(), "the view is off by default");
        assert_eq!((c.max_file_size, c.max_system_size), (256 << 20, 1 << 30));
        assert_eq!(c.max_request_size, 1 << 20);
        assert_eq!(
            (c.max_total_size, c.max_files_per_system, c.min_free_space),
            (20 << 30, 1000, 1 << 30)
        );
        let c = run(&["--min-free-space", "0", "--max-total-size", "64M"]).unwrap();
        assert_eq!((c.min_free_space, c.max_total_size), (0, 64 << 20));
    }

    #[test]
    fn a_file_that_cannot_be_read_keeps_its_cause() {
        let args = ["--token-file".to_string(), "/nonexistent/token".to_string()];
        let Err(e) = parse(&args) else {
            panic!("a missing token file was accepted")
        };
        let cause = std::error::Error::source(&e)
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(cause, Some(std::io::ErrorKind::NotFound));
        assert!(
            e.to_string()
                .starts_with("--token-file /nonexistent/token: "),
            "{e}"
        );
    }

    #[test]
    fn sizes_and_bad_input() {
        assert_eq!(size("x", "64K").ok(), Some(65536));
        assert_eq!(size("x", "3").ok(), Some(3));
        for bad in ["", "0", "-1", "1.5M", "M", "99999999999T"] {
            assert!(size("x", bad).is_err(), "{bad}");
        }
        for bad in [
            &["--allow", "../etc"][..],
            &["--listen", "nowhere"],
            &["--rate", "0"],
            &["--bogus"],
            &["--token-file", "/nonexistent/token"],
            &["--trusted-proxy", "proxy.lab"],
            &["--view", "nowhere"],
            &["--max-total-size", "0"],
            &["--max-files-per-system", "0"],
            &["--min-free-space", "lots"],
        ] {
            let e = run(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
        let c = run(&[
            "--allow",
            "web01",
            "--allow",
            "web02",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(c.allow.unwrap().len(), 2);
    }
}
