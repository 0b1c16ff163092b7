//! The `redtether-hub` command line. Subcommands that read or change the registry go through
//! the hub's control socket while it runs, and open the registry directly when it does not.

use crate::control::{HubRequest, RequestError, apply};
use crate::store::StoreError;
use clap::{Parser, Subcommand};
use redtether_host::config_file::ProcessContext;
use redtether_host::control::{ClientError, request};
use redtether_host::exit;
use redtether_host::state_dir::{StateDir, StateDirError};
use redtether_pki::PkiError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The running hub did not answer, or refused.
    #[error(transparent)]
    Hub(#[from] ClientError),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    ReadCa(std::io::Error),
    #[error(transparent)]
    Ca(#[from] PkiError),
    /// The store `[store]` names could not be opened.
    #[error(transparent)]
    OpenStore(Box<crate::HubError>),
}

#[derive(Debug, Parser)]
#[command(
    name = "redtether-hub",
    version,
    about = "The platform end of redtether's tunnel: CA, enrollment, QUIC listener, operator API"
)]
pub struct HubCli {
    /// Hub configuration file [default: /etc/redtether/hub.toml if it exists, else built-in defaults]
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: HubCommand,
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Run the hub (CA, enrollment, QUIC listener, operator API)
    Run,
    /// Print the SHA-256 fingerprint of the hub's CA certificate (what devices pin)
    CaFingerprint,
    /// Make a one-time enrollment token for a device; prints only the token (and, on standard
    /// error, the whole `redtether enroll` command for the device)
    EnrollToken {
        #[arg(long)]
        device: String,
        /// How long the token may be used, e.g. 1h [default: enroll_token_lifetime]
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// The device group it joins when it enrolls
        #[arg(long)]
        group: Option<String>,
    },
    /// Manage operators of the API
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// List enrolled devices
    Devices,
    /// Manage one device
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Read and check the hub's own audit trail (works while the hub runs)
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Move a stopped hub's embedded store into an empty PostgreSQL database; then run the hub
    /// with `[store] url` and the same state directory
    MigrateStore {
        /// The hub's state directory (the embedded store is its `db` folder)
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// postgres://user@host/database[?sslmode=require]
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file holding the database password (rather than one in the URL)
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
        /// The database server's CA certificates (PEM) [default: the system's]
        #[arg(long, value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// This hub's id among the hubs sharing the database [default: [store] hub_id, else the host name]
        #[arg(long)]
        hub_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Events, oldest first, one JSON object per line
    List {
        /// Only events after this sequence number
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this kind, or a dotted prefix of kinds (`operator` matches `operator.login`)
        #[arg(long)]
        kind: Option<String>,
    },
    /// Recompute the hash chain; exit 0, or 1 naming the first bad sequence number
    Verify,
    /// The journal as it is stored (JSON Lines, every field), for archiving elsewhere
    Export,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator; prints their one-time setup code (or, with --token, an API token)
    Add {
        #[arg(long)]
        name: String,
        /// owner, member, viewer or dashboard
        #[arg(long)]
        role: String,
        #[arg(long)]
        email: Option<String>,
        /// An account for automation: print an `admin` API token instead of a setup code
        #[arg(long, requires = "expires")]
        token: bool,
        /// How long the --token lasts, e.g. 30d (required with --token)
        #[arg(long, value_parser = humantime::parse_duration, requires = "token")]
        expires: Option<Duration>,
    },
    /// The operators, without secrets
    List,
    /// Remove an operator; their sessions and tokens end at once
    Remove { name: String },
    /// Change an operator's role; their sessions end at once
    Role { name: String, role: String },
    /// Clear an operator's TOTP and recovery codes; prints a new setup code
    #[command(name = "reset-2fa")]
    Reset2fa { name: String },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Revoke the device's certificate and close its tunnel
    Revoke { id: String },
}

pub fn execute(cli: HubCli) -> ExitCode {
    let settings = match crate::config::load(cli.config.as_deref(), &ProcessContext::from_process()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redtether-hub: error: {}", redtether_host::error_chain(&e));
            return exit::code(exit::CONFIG);
        }
    };
    let dir = StateDir::new(&settings.state_dir).owned_by("redtether hub");
    let request = match cli.command {
        HubCommand::Run => return run(settings),
        HubCommand::CaFingerprint => return ca_fingerprint(&dir),
        HubCommand::EnrollToken { device, expires, group } => HubRequest::EnrollToken {
            device,
            lifetime_secs: expires.unwrap_or(settings.enroll_token_lifetime).as_secs().max(1),
            group,
        },
        HubCommand::Operator(OperatorCommand::Add { name, role, email, token, expires }) => HubRequest::OperatorAdd {
            name,
            role,
            email,
            token_expires_secs: expires.filter(|_| token).map(|d| d.as_secs().max(1)),
            setup_secs: settings.auth.setup_code_lifetime.as_secs(),
        },
        HubCommand::Operator(OperatorCommand::List) => HubRequest::OperatorList,
        HubCommand::Operator(OperatorCommand::Remove { name }) => HubRequest::OperatorRemove { name },
        HubCommand::Operator(OperatorCommand::Role { name, role }) => HubRequest::OperatorRole { name, role },
        HubCommand::Operator(OperatorCommand::Reset2fa { name }) => {
            HubRequest::OperatorReset2fa { name, setup_secs: settings.auth.setup_code_lifetime.as_secs() }
        }
        HubCommand::Audit(command) => return crate::audit_cli::run(dir.root(), command),
        HubCommand::MigrateStore { from, to, password_file, ca_file, hub_id } => {
            return migrate_store(&settings, &from, to, password_file, ca_file, hub_id);
        }
        HubCommand::Devices => HubRequest::Devices,
        HubCommand::Device(DeviceCommand::Revoke { id }) => HubRequest::DeviceRevoke { device: id },
    };
    let result = match request_hub(&dir, &request) {
        Err(ClientError::NotRunning(_)) => offline(&dir, &settings.store, &request),
        answered => answered.map_err(CliError::from),
    };
    match result {
        Ok(value) => {
            match &request {
                HubRequest::EnrollToken { .. } => {
                    let token = value["token"].as_str().unwrap_or_default();
                    println!("{token}");
                    // For a person: the command to run on the device, on standard error so that
                    // `$(redtether-hub enroll-token …)` still takes just the token.
                    eprintln!("{}", enroll_command(&settings, &dir, token));
                }
                // Only the secret on stdout, so scripts can take it as it is.
                HubRequest::OperatorAdd { .. } | HubRequest::OperatorReset2fa { .. } => {
                    let secret = value["token"].as_str().or(value["setup_code"].as_str());
                    println!("{}", secret.unwrap_or_default())
                }
                _ => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
            }
            exit::code(exit::OK)
        }
        Err(e) => {
            eprintln!("redtether-hub: {}", redtether_host::error_chain(&e));
            exit::code(exit::FAILURE)
        }
    }
}

fn migrate_store(
    settings: &crate::config::HubSettings,
    from: &std::path::Path,
    url: String,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    hub_id: Option<String>,
) -> ExitCode {
    use crate::store_settings::{PostgresSettings, StoreSettings};
    let hub_id = hub_id.or_else(|| match &settings.store {
        StoreSettings::Postgres(p) => Some(p.hub_id.clone()),
        StoreSettings::Embedded => None,
    });
    let target = PostgresSettings {
        url: url.clone(),
        password_file,
        ca_file,
        pool_size: 4,
        hub_id: hub_id.unwrap_or_else(crate::store_settings::default_hub_id),
    };
    let options = match target.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("redtether-hub: {e}");
            return exit::code(exit::CONFIG);
        }
    };
    redtether_host::logging::init_logging(&settings.log_level);
    match crate::migrate_store::migrate(from, &options, &target.hub_id) {
        Ok(counts) => {
            for (kind, n) in counts {
                println!("{n:>9} {kind}");
            }
            println!(
                "redtether-hub: moved to {} as hub {:?}; run the hub with [store] url and state_dir = {:?}",
                crate::store_settings::redacted(&url),
                target.hub_id,
                from.display().to_string()
            );
            exit::code(exit::OK)
        }
        Err(e) => {
            eprintln!("redtether-hub: migrate-store: {}", redtether_host::error_chain(&e));
            exit::code(match e {
                crate::migrate_store::MigrateError::StateDir(StateDirError::Locked { .. }) => exit::TEMP_FAIL,
                _ => exit::FAILURE,
            })
        }
    }
}

/// What to run on the device to enroll it with `token`.
fn enroll_command(settings: &crate::config::HubSettings, dir: &StateDir, token: &str) -> String {
    let fingerprint = match read_ca(dir) {
        Ok(der) => redtether_pki::fingerprint(&der),
        Err(_) => {
            return "redtether-hub: start the hub once to make its CA; then enroll the device with \
                          `redtether enroll --hub HOST:PORT --token <the token> --ca-fingerprint \
                          \"$(redtether-hub ca-fingerprint)\"`"
                .to_string();
        }
    };
    // Where the running hub listens (its port may have been chosen at start), else the settings'.
    let listen = request_hub(dir, &HubRequest::Status)
        .ok()
        .and_then(|status| status["listen"].as_str()?.parse().ok())
        .unwrap_or(settings.listen);
    format!(
        "redtether-hub: enroll the device with:\n  redtether enroll --hub {} --token {token} --ca-fingerprint {fingerprint}",
        settings.device_address(listen)
    )
}

fn request_hub(dir: &StateDir, req: &HubRequest) -> Result<serde_json::Value, ClientError> {
    request(&dir.control_socket(), req, Duration::from_secs(30))
}

/// With the hub stopped: the store `[store]` names opened here, under the state directory's
/// lock.
fn offline(
    dir: &StateDir,
    store: &crate::store_settings::StoreSettings,
    req: &HubRequest,
) -> Result<serde_json::Value, CliError> {
    dir.create()?;
    let _lock = dir.lock()?;
    let store = crate::open_store(store, dir.root()).map_err(|e| CliError::OpenStore(Box::new(e)))?;
    Ok(apply(&*store, req)?)
}

fn ca_fingerprint(dir: &StateDir) -> ExitCode {
    match read_ca(dir) {
        Ok(der) => {
            println!("{}", redtether_pki::fingerprint(&der));
            exit::code(exit::OK)
        }
        Err(e) => {
            eprintln!(
                "redtether-hub: no CA yet in {} ({}); start the hub once to make it",
                dir.root().display(),
                redtether_host::error_chain(&e)
            );
            exit::code(exit::FAILURE)
        }
    }
}

/// The CA certificate, DER.
fn read_ca(dir: &StateDir) -> Result<Vec<u8>, CliError> {
    let pem = std::fs::read_to_string(dir.root().join("ca.pem")).map_err(CliError::ReadCa)?;
    Ok(redtether_pki::pem_to_der(&pem)?)
}

fn run(settings: crate::config::HubSettings) -> ExitCode {
    redtether_host::logging::init_logging(&settings.log_level);
    redtether_host::heap::keep_small();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("redtether-hub").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redtether-hub: error: cannot start the async runtime: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let result = runtime.block_on(crate::run(settings));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => exit::code(exit::OK),
        Err(e) => {
            eprintln!("redtether-hub: error: {}", redtether_host::error_chain(&e));
            exit::code(match e {
                crate::HubError::StateDir(redtether_host::state_dir::StateDirError::Locked { .. }) => exit::TEMP_FAIL,
                crate::HubError::Tls(_)
                | crate::HubError::StorePassword(_)
                | crate::HubError::PgStore(crate::store::postgres::PgSetupError::Tls(_))
                | crate::HubError::Oidc(_)
                | crate::HubError::Alerts(crate::alerts::AlertsError::Tls { .. }) => exit::CONFIG,
                crate::HubError::Endpoint(_)
                | crate::HubError::Api { .. }
                | crate::HubError::Tcp { .. }
                | crate::HubError::Metrics(_)
                | crate::HubError::PgStore(_) => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            })
        }
    }
}
