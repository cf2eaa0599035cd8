use std::process::ExitCode;

fn main() -> ExitCode {
    projected_token::commands::run(projected_token::cli::parse())
}
