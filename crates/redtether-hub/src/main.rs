use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    redtether_hub::cli::execute(redtether_hub::cli::HubCli::parse())
}
