//! The command line of `redtether`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "redtether",
    version,
    about = "Supervises Node-RED on a device, guards its endpoints, and tunnels it to a platform"
)]
pub struct Cli {
    /// Configuration file [default: /etc/redtether/agent.toml if it exists, else built-in defaults]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: supervise Node-RED and serve the gate (the daemon's main job)
    Run,
    /// Validate the configuration and exit 0, or 78 naming the key at fault
    CheckConfig,
    /// Show the running agent's status
    Status {
        /// Print the status document as JSON
        #[arg(long)]
        json: bool,
    },
    /// Restart Node-RED in the running agent
    RestartNodeRed,
    /// Have the running agent read its configuration again and apply the security settings
    /// live (as SIGHUP does); exit 78 naming file and key when the file is invalid
    Reload,
    /// Read a password on stdin and print its argon2id hash for `password_hash` keys
    Passwd,
    /// Manage bearer tokens for node space (HTTP-In endpoints, dashboards)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enroll this device with a hub: make a key, send a CSR with the one-time token, pin the CA
    Enroll {
        /// The hub's QUIC address, HOST:PORT ([v6]:PORT). Several hubs: repeat --hub, or separate
        /// them with commas; they are tried in a random order, all of them are stored, and the
        /// agent connects to whichever answers
        #[arg(long, required = true, value_delimiter = ',', value_name = "HOST:PORT")]
        hub: Vec<String>,
        /// The one-time token from `redtether-hub enroll-token`
        #[arg(long)]
        token: String,
        /// SHA-256 of the hub's CA (`redtether-hub ca-fingerprint`)
        #[arg(long)]
        ca_fingerprint: String,
    },
    /// Apply a signed deployment envelope from a file (as the hub's
    /// `GET /api/devices/{id}/deployments/{did}/envelope` gives it) in the running agent: for
    /// devices the platform cannot reach. Prints the outcome; exit 0 only when applied
    Deploy {
        /// The file holding the envelope
        file: PathBuf,
    },
    /// Read and check the audit journal
    #[command(subcommand)]
    Audit(super::audit::AuditCommand),
    /// Print the device's SBOM (CycloneDX 1.5 JSON): Node-RED, every package it loads, the
    /// contrib nodes in its user directory, Node.js and redtether
    Sbom {
        /// Write it to this file (atomically) instead of standard output
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Annotate each npm package with the newest version the npm registry knows
        /// (npm_config_registry, default https://registry.npmjs.org), cached for 24 h in the state
        /// directory; without the registry, cached versions are used (also stale ones) or none
        #[arg(long)]
        latest: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; prints only the token, once
    Create {
        /// A unique name for the token
        #[arg(long)]
        name: String,
        /// How long it is valid, e.g. 1h, 30d
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
        /// Limit the token to paths under this prefix, e.g. /api
        #[arg(long, value_name = "PATH-PREFIX")]
        scope: Option<String>,
    },
    /// List tokens (never the tokens themselves)
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name
    Revoke { name: String },
}
