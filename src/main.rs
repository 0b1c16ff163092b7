use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    redtether::cli::execute(redtether::cli::Cli::parse())
}
