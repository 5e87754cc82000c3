use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match anamon_receiver::parse(&args) {
        Ok(anamon_receiver::Command::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(anamon_receiver::Command::Status(opts)) => {
            ExitCode::from(anamon_receiver::status(&opts) as u8)
        }
        Ok(anamon_receiver::Command::Run(cfg)) => ExitCode::from(anamon_receiver::run(*cfg) as u8),
        Err(e) => {
            eprintln!("anamon-receiver: {e} (see anamon-receiver --help)");
            ExitCode::from(2)
        }
    }
}
