use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    redtether::hub::cli::execute(redtether::hub::cli::HubCli::parse())
}
