use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    projected_token::commands::run(projected_token::cli::Cli::parse())
}
