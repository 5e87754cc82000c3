//! anamon: ships installer logs to a Cobbler server while the install runs.
//!
//! `main` hands the command line to [`main`] here. Each job lives in its own
//! module:
//!
//! | module | job |
//! |---|---|
//! | `cli` | flags, checked into a `Config` |
//! | `agent` | start-up order and the run modes (daemon, `--exit`, final flush) |
//! | `watchlist` | which files, and their names on the server |
//! | `watched` | one file's state: cursor, problem, hold, pace, repair |
//! | `cursor` | what the server has of a file, and what to send next |
//! | `shipper` | delivery: what is due, the next chunk, its delivery, failures |
//! | `pacing` | when a file's next upload may go |
//! | `backoff` | pauses while the server or a file fails |
//! | `client` | the Cobbler protocol: wire forms, refusals, the receiver fallback |
//! | `transport` | HTTP: the agent's own abortable connections, name resolution |
//! | `error` | the ways one call fails |
//! | `events` | inotify (read by the main loop) or one-second polling |
//! | `journal` | `journalctl --follow` into a file |
//! | `sys` | all the `unsafe`: signals, sockets, descriptors, daemonising |
//! | `log` | one line per change of state |

#[macro_use]
mod log;
mod agent;
mod backoff;
mod cli;
mod client;
mod cursor;
mod error;
mod events;
mod journal;
mod pacing;
mod shipper;
mod sys;
mod transport;
mod watched;
mod watchlist;

/// Runs the command line `args` (without the program name); returns the
/// exit status: 0, 1 for a failed run, 2 for a bad command line.
pub fn main(args: &[String]) -> u8 {
    // First, before anything of the agent's own is open: std keeps
    // descriptors of its own (on kernels before 3.17, /dev/urandom for the
    // first HashMap), and closing one of those later hands its number to
    // the next open, where std would then read "random" bytes from a pipe.
    sys::close_inherited_descriptors();
    match cli::parse(args) {
        Ok(cli::Command::Print(text)) => {
            print!("{text}");
            0
        }
        Ok(cli::Command::Run(cfg)) => agent::run(*cfg),
        Err(e) => {
            eprintln!("anamon: {e} (see anamon --help)");
            2
        }
    }
}
