//! `redtether-hub`: the platform's end of the tunnel. Only its command list exists so far; the
//! hub-and-tunnel work fills it in.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "redtether-hub", version, about = "The platform end of redtether's tunnel (not built yet)")]
struct Cli {
    /// Hub configuration file
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (CA, enrollment, QUIC listener, operator API)
    Run,
    /// Print the SHA-256 fingerprint of the hub's CA certificate
    CaFingerprint,
    /// Make a one-time enrollment token for a device
    EnrollToken,
    /// Manage operators of the API
    Operator,
    /// List enrolled devices
    Devices,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!("redtether-hub: `{:?}` is not built yet: the hub arrives with the hub-and-tunnel issue", cli.command);
    ExitCode::from(69)
}
