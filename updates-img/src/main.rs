//! Thin binary: parse, build, print one line (or one error line).

use std::process::ExitCode;

use argh::FromArgs;
use updates_img::{build, cli::Args, timestamp_from};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["updates-img"], &rest) {
        Ok(a) => a,
        Err(exit) if exit.status.is_ok() => {
            print!("{}", exit.output); // --help
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            // argh's message plus a help hint, folded into our one-line form.
            let first = exit.output.lines().next().unwrap_or("bad command line");
            eprintln!("updates-img: error: {first} (see updates-img --help)");
            return ExitCode::FAILURE;
        }
    };
    let out = args.out.clone();
    let result = timestamp_from(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())
        .and_then(|t| args.into_request(t))
        .and_then(|req| build(&req));
    match result {
        Ok(built) => {
            let agents = if built.agents.is_empty() {
                String::new()
            } else {
                format!("; agent {}", built.agents.join(", "))
            };
            println!(
                "updates-img: wrote {} ({} bytes){agents}",
                out.display(),
                built.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("updates-img: error: {e}");
            ExitCode::FAILURE
        }
    }
}
