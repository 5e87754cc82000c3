//! The command line: Python anamon's flags, same meanings, plus a few whose
//! defaults keep its behaviour or improve on it.

use crate::client::{Route, Wire, WireChoice, DEFAULT_PATH};
use crate::events::Watching;
use crate::pacing::{Pacing, DEFAULT_CADENCE, DEFAULT_PER_SECOND};
use crate::watchlist::{self, WatchList};
use argh::FromArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Ships installer logs to a Cobbler server while the install runs.
#[derive(FromArgs, Debug)]
#[argh(help_triggers("-h", "--help"))]
pub(crate) struct Args {
    /// the Cobbler system (or profile) name the logs belong to
    #[argh(option)]
    name: Option<String>,
    /// the Cobbler server's host name or address
    #[argh(option)]
    server: Option<String>,
    /// the server's HTTP port (default 80)
    #[argh(option, default = "80")]
    port: u16,
    /// the XML-RPC path on the server (default /cobbler_api, and
    /// anamon-receiver's /anamon_api on the same server when that Cobbler
    /// release refuses every upload); a path given here is always used
    #[argh(option)]
    path: Option<String>,
    /// send this token as upload_log_data's 6th argument (anamon-receiver
    /// --token-file checks it; Cobbler accepts and ignores it)
    #[argh(option)]
    token: Option<String>,
    /// files to ship, space-separated as in a shell, repeatable; each is
    /// stored under its basename. Replaces the default list
    #[argh(option)]
    watchfile: Vec<String>,
    /// ship what the files hold now, then exit: 0 once all of it arrived
    #[argh(switch)]
    exit: bool,
    /// stay in the foreground instead of detaching
    #[argh(switch)]
    fg: bool,
    /// log every upload, not only changes of state
    #[argh(switch)]
    debug: bool,
    /// append the agent's own log to this file (default: stderr, or
    /// nowhere once detached)
    #[argh(option)]
    log: Option<PathBuf>,
    /// write the agent's process id to this file (for `kill -TERM`, which
    /// ships what is pending, then exits)
    #[argh(option)]
    pidfile: Option<PathBuf>,
    /// how data travels: auto (default; tries <base64>, then base64 text,
    /// and keeps what the server accepts), base64 (Cobbler >= 3.2.2) or
    /// string (Cobbler 2.x to 3.2.1)
    #[argh(option, default = "String::from(\"auto\")")]
    wire: String,
    /// do not stream the systemd journal as journal.log (it is streamed by
    /// default on systemd installers when no --watchfile is given)
    #[argh(switch)]
    no_journal: bool,
    /// stat the files once a second instead of using inotify
    #[argh(switch)]
    poll: bool,
    /// seconds one request may take before it is abandoned and retried
    /// (default 20)
    #[argh(option, default = "20")]
    timeout: u64,
    /// with --exit: seconds to keep retrying before giving up with status 1
    /// (default 120)
    #[argh(option, default = "120")]
    exit_timeout: u64,
    /// milliseconds a line written while the install is busy may take to
    /// reach the server (default 1900): after a quiet spell the first change
    /// ships at once, in a busy install a file's new lines gather this long
    /// less the server's answer time, and the pace widens while the server
    /// struggles
    #[argh(option)]
    pace: Option<u64>,
    /// milliseconds between two uploads of a file, fixed, instead of --pace:
    /// after an upload that caught the file up, the next waits this long
    #[argh(option)]
    min_interval: Option<u64>,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

/// The most --timeout and --exit-timeout take: a week.
const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// The most --pace and --min-interval take: an hour.
const MAX_INTERVAL_MS: u64 = 3600 * 1000;

/// Everything the agent needs to run, checked.
#[derive(Debug)]
pub(crate) struct Config {
    pub name: String,
    pub server: String,
    pub port: u16,
    pub route: Route,
    pub token: Option<String>,
    pub watch: WatchList,
    pub mode: Mode,
    pub detach: Detach,
    pub debug: bool,
    pub log_file: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub wire: WireChoice,
    pub watching: Watching,
    /// Stream `journalctl -f` as journal.log where there is a journal: the
    /// daemon with the default watch list and no `--no-journal`.
    pub stream_journal: bool,
    pub timeout: Duration,
}

/// How long the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Ship as files change, paced so, until a shutdown signal.
    Daemon(Pacing),
    /// `--exit`: ship what the files hold now, retrying for up to `limit`.
    Once { limit: Duration },
}

/// Whether the agent leaves its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detach {
    /// The default: double fork, own session, stdio away from the caller.
    Background,
    /// `--fg`.
    Foreground,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    Run(Box<Config>),
    /// Print this on stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

/// Parses `args` (without the program name). An error is one line.
pub(crate) fn parse(args: &[String]) -> Result<Command, String> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = match Args::from_args(&["anamon"], &strs) {
        Ok(a) => a,
        Err(early) => {
            return match early.status {
                Ok(()) => Ok(Command::Print(early.output)),
                // argh may explain on several lines; the first says it all.
                Err(()) => Err(early
                    .output
                    .lines()
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_end_matches(':')
                    .to_string()),
            };
        }
    };
    if parsed.version {
        return Ok(Command::Print(format!(
            "anamon {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    parsed.into_config().map(|c| Command::Run(Box::new(c)))
}

impl Args {
    fn into_config(self) -> Result<Config, String> {
        let name = self
            .name
            .ok_or("--name is required (the Cobbler system name)")?;
        let server = self
            .server
            .ok_or("--server is required (the Cobbler server)")?;
        // Cobbler >= 3.2.2 refuses other names; older servers would let `..`
        // write outside the anamon log directory, so never send one.
        if !anamon_names::is_system_name(&name) {
            return Err(format!(
                "--name {name:?}: Cobbler accepts {}",
                anamon_names::SYSTEM_NAME_RULE
            ));
        }
        if server.is_empty() || server.contains(['/', ' ']) {
            return Err(format!("--server {server:?} is not a host name or address"));
        }
        let wire = match self.wire.as_str() {
            "auto" => WireChoice::Auto,
            "base64" => WireChoice::Fixed(Wire::Binary),
            "string" => WireChoice::Fixed(Wire::Text),
            other => return Err(format!("--wire {other:?}: expected auto, base64 or string")),
        };
        let route = match self.path {
            None => Route::Default,
            Some(p)
                if p.starts_with('/')
                    && !p.contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                Route::Given(p)
            }
            Some(p) => {
                return Err(format!(
                    "--path {p:?}: expected an absolute URL path such as {DEFAULT_PATH}"
                ))
            }
        };
        if let Some(t) = &self.token {
            if t.is_empty() || t.contains(|c: char| c.is_control()) {
                return Err("--token: empty, or has control characters".into());
            }
        }
        if self.port == 0 {
            return Err("--port 0 is not a port the server can listen on".into());
        }
        if self.timeout == 0 {
            return Err("--timeout must be at least 1 second".into());
        }
        // Bounded so that no deadline computed from them can overflow.
        for (flag, value, max) in [
            ("--timeout", Some(self.timeout), MAX_SECONDS),
            ("--exit-timeout", Some(self.exit_timeout), MAX_SECONDS),
            ("--pace", self.pace, MAX_INTERVAL_MS),
            ("--min-interval", self.min_interval, MAX_INTERVAL_MS),
        ] {
            if let Some(value) = value.filter(|v| *v > max) {
                return Err(format!("{flag} {value}: at most {max}"));
            }
        }
        let pacing = match (self.pace, self.min_interval) {
            (Some(_), Some(_)) => {
                return Err("--pace and --min-interval: give one or the other".into())
            }
            (None, Some(ms)) => Pacing::Fixed(Duration::from_millis(ms)),
            (pace, None) => Pacing::Adaptive {
                cadence: pace.map_or(DEFAULT_CADENCE, Duration::from_millis),
                per_second: DEFAULT_PER_SECOND,
            },
        };
        let mode = if self.exit {
            Mode::Once {
                limit: Duration::from_secs(self.exit_timeout),
            }
        } else {
            Mode::Daemon(pacing)
        };
        let watch = if self.watchfile.is_empty() {
            WatchList::defaults()
        } else {
            let mut paths = Vec::new();
            for value in &self.watchfile {
                for word in
                    watchlist::shell_split(value).map_err(|e| format!("--watchfile: {e}"))?
                {
                    if word.is_empty() {
                        return Err("--watchfile: an empty path".into());
                    }
                    // Absolute, because the daemon changes to `/`.
                    let path = std::path::absolute(&word)
                        .map_err(|e| format!("--watchfile {word:?}: {e}"))?;
                    paths.push(path);
                }
            }
            if paths.is_empty() {
                return Err("--watchfile names no files".into());
            }
            WatchList::from_paths(&paths)
        };
        let absolute = |p: Option<PathBuf>| p.map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(Config {
            name,
            server,
            port: self.port,
            route,
            token: self.token,
            stream_journal: !self.no_journal && self.watchfile.is_empty() && !self.exit,
            watch,
            mode,
            detach: if self.fg {
                Detach::Foreground
            } else {
                Detach::Background
            },
            debug: self.debug,
            log_file: absolute(self.log),
            pidfile: absolute(self.pidfile),
            wire,
            watching: if self.poll {
                Watching::Poll
            } else {
                Watching::Inotify
            },
            timeout: Duration::from_secs(self.timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())? {
            Command::Run(c) => Ok(*c),
            Command::Print(p) => Err(format!("printed {p}")),
        }
    }

    #[test]
    fn python_anamon_command_lines_parse() {
        // What Cobbler's pre_anamon snippet and anamon.init pass.
        let c = run(&[
            "--name",
            "sys1",
            "--server",
            "cobbler.example.com",
            "--port",
            "80",
        ])
        .unwrap();
        assert_eq!(c.watch.files, WatchList::defaults().files);
        assert!(matches!(c.mode, Mode::Daemon(Pacing::Adaptive { .. })));
        assert_eq!(c.detach, Detach::Background);
        assert_eq!(c.route, Route::Default);
        assert!(c.stream_journal);
        let c = run(&[
            "--watchfile",
            "/var/log/boot.log /var/log/messages",
            "--exit",
            "--name",
            "n",
            "--server",
            "s",
        ])
        .unwrap();
        assert_eq!(
            c.watch
                .files
                .iter()
                .map(|e| e.alias.as_str())
                .collect::<Vec<_>>(),
            ["boot.log", "messages"]
        );
        assert!(matches!(c.mode, Mode::Once { .. }));
        assert!(!c.stream_journal);
        assert_eq!(c.port, 80);
    }

    #[test]
    fn watchfile_is_repeatable_and_shell_split() {
        let c = run(&[
            "--name",
            "n",
            "--server",
            "s",
            "--watchfile",
            "/a/x.log '/b/y z.log'",
            "--watchfile",
            "/c/x.log",
        ])
        .unwrap();
        let got: Vec<_> = c
            .watch
            .files
            .iter()
            .map(|e| (e.path.to_str().unwrap(), e.alias.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/a/x.log", "x.log"),
                ("/b/y z.log", "y_z.log"),
                ("/c/x.log", "c_x.log")
            ]
        );
    }

    #[test]
    fn errors_are_one_line() {
        for args in [
            &["--name", "n"][..],
            &["--server", "s"],
            &["--name", "n", "--server", "s", "--bogus"],
            &["--name", "n", "--server", "s", "--port", "x"],
            &["--name", "../etc", "--server", "s"],
            &["--name", "..", "--server", "s"],
            &["--name", ".", "--server", "s"],
            &["--name", &"x".repeat(256), "--server", "s"],
            &["--name", "n", "--server", "s", "--wire", "xml"],
            &["--name", "n", "--server", "s", "--port", "0"],
            &["--name", "n", "--server", "s", "--watchfile", "'unclosed"],
            &["--name", "n", "--server", "s", "--watchfile", " "],
            &[
                "--name",
                "n",
                "--server",
                "s",
                "--exit-timeout",
                "18446744073709551615",
            ],
            &["--name", "n", "--server", "s", "--timeout", "604801"],
            &["--name", "n", "--server", "s", "--min-interval", "3600001"],
            &["--name", "n", "--server", "s", "--pace", "3600001"],
            &[
                "--name",
                "n",
                "--server",
                "s",
                "--pace",
                "1",
                "--min-interval",
                "1",
            ],
            &["--name", "n", "--server", "s", "--path", "cobbler_api"],
        ] {
            let e = run(args).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{args:?}: {e:?}");
        }
    }

    #[test]
    fn pacing_and_path_choices() {
        let c = run(&[
            "--name",
            "n",
            "--server",
            "s",
            "--min-interval",
            "20",
            "--path",
            "/x",
        ])
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::Daemon(Pacing::Fixed(Duration::from_millis(20)))
        );
        assert_eq!(c.route, Route::Given("/x".into()));
        let c = run(&["--name", "n", "--server", "s", "--pace", "250"]).unwrap();
        assert!(matches!(
            c.mode,
            Mode::Daemon(Pacing::Adaptive { cadence, .. }) if cadence == Duration::from_millis(250)
        ));
    }

    #[test]
    fn the_flag_definitions_are_consistent() {
        // argh checks its derive at compile time; the help must still name
        // every flag the README documents.
        let Ok(Command::Print(help)) = parse(&["--help".into()]) else {
            panic!("--help prints");
        };
        for flag in [
            "--name",
            "--server",
            "--port",
            "--path",
            "--token",
            "--watchfile",
            "--exit",
            "--fg",
            "--debug",
            "--log",
            "--pidfile",
            "--wire",
            "--no-journal",
            "--poll",
            "--timeout",
            "--exit-timeout",
            "--pace",
            "--min-interval",
            "--version",
        ] {
            assert!(help.contains(flag), "--help does not list {flag}");
        }
    }

    #[test]
    fn help_and_version_print() {
        assert!(
            matches!(parse(&["--help".into()]), Ok(Command::Print(s)) if s.contains("--watchfile"))
        );
        assert!(
            matches!(parse(&["--version".into()]), Ok(Command::Print(s)) if s.starts_with("anamon "))
        );
    }
}
