//! The command line: Python anamon's flags, same meanings, plus a few whose
//! defaults keep its behaviour or improve on it.

use crate::cobbler::{Wire, WireChoice};
use crate::watchlist::{self, WatchList};
use argh::FromArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Ships installer logs to a Cobbler server while the install runs.
#[derive(FromArgs, Debug)]
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// the Cobbler system (or profile) name the logs belong to
    #[argh(option)]
    name: Option<String>,
    /// the Cobbler server's host name or address
    #[argh(option)]
    server: Option<String>,
    /// the server's HTTP port (default 80)
    #[argh(option, default = "80")]
    port: u16,
    /// the XML-RPC path on the server (default /cobbler_api; an
    /// anamon-receiver behind Apache may use another)
    #[argh(option, default = "String::from(\"/cobbler_api\")")]
    path: String,
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
    /// milliseconds between two uploads of a file that is being written
    /// line by line: what is written meanwhile goes in one request (default
    /// 20; a file quiet for that long ships at once)
    #[argh(option, default = "20")]
    min_interval: u64,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

/// The most --timeout and --exit-timeout take: a week.
const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// The most --min-interval takes: an hour.
const MAX_MIN_INTERVAL_MS: u64 = 3600 * 1000;

/// Everything the agent needs to run, checked.
#[derive(Debug)]
pub struct Config {
    pub name: String,
    pub server: String,
    pub port: u16,
    /// The URL path, e.g. `/cobbler_api`.
    pub path: String,
    pub token: Option<String>,
    pub watch: WatchList,
    pub exit_after_pass: bool,
    pub foreground: bool,
    pub debug: bool,
    pub log_file: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub wire: WireChoice,
    pub force_poll: bool,
    /// Stream `journalctl -f` as journal.log where there is a journal.
    pub journal: bool,
    pub timeout: Duration,
    pub exit_timeout: Duration,
    /// The least time between two uploads of a file that has caught up.
    pub min_interval: Duration,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    /// Print this on stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

/// Parses `args` (without the program name). An error is one line.
pub fn parse(args: &[String]) -> Result<Command, String> {
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
        if !self.path.starts_with('/')
            || self
                .path
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "--path {:?}: expected an absolute URL path such as /cobbler_api",
                self.path
            ));
        }
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
            ("--timeout", self.timeout, MAX_SECONDS),
            ("--exit-timeout", self.exit_timeout, MAX_SECONDS),
            ("--min-interval", self.min_interval, MAX_MIN_INTERVAL_MS),
        ] {
            if value > max {
                return Err(format!("{flag} {value}: at most {max}"));
            }
        }
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
            path: self.path,
            token: self.token,
            watch,
            exit_after_pass: self.exit,
            foreground: self.fg,
            debug: self.debug,
            log_file: absolute(self.log),
            pidfile: absolute(self.pidfile),
            wire,
            force_poll: self.poll,
            journal: !self.no_journal && self.watchfile.is_empty(),
            timeout: Duration::from_secs(self.timeout),
            exit_timeout: Duration::from_secs(self.exit_timeout),
            min_interval: Duration::from_millis(self.min_interval),
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
        assert!(!c.exit_after_pass && !c.foreground);
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
        assert!(c.exit_after_pass);
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
        ] {
            let e = run(args).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{args:?}: {e:?}");
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
