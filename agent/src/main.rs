use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match anamon::cli::parse(&args) {
        Ok(anamon::cli::Command::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(anamon::cli::Command::Run(cfg)) => ExitCode::from(anamon::run(*cfg) as u8),
        Err(e) => {
            eprintln!("anamon: {e} (see anamon --help)");
            ExitCode::from(2)
        }
    }
}
