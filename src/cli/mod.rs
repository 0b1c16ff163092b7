//! The `redtether` command line: subcommands, their output, and their exit codes. `main.rs`
//! parses arguments and calls [`execute`].

mod args;
mod audit;
mod sbom;
mod status;
mod token;

pub use args::{Cli, Command};

use crate::config::{self, ConfigError, ProcessContext, Settings};
use crate::control::{self, ClientError, ControlRequest, NodeRedRestarted, TunnelReloaded};
use crate::daemon::{self, DaemonError};
pub use redtether_host::{error_chain, exit};
use std::process::ExitCode;
use std::time::Duration;

/// How long a CLI command waits for the daemon to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `redtether deploy` waits for the outcome.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub fn execute(cli: Cli) -> ExitCode {
    if let Command::Reload = cli.command {
        return reload(cli.config.as_deref());
    }
    let settings = match config::load(cli.config.as_deref(), &ProcessContext::from_process()) {
        Ok(settings) => settings,
        Err(e) => return config_error(&e),
    };
    match cli.command {
        Command::Run => run(settings),
        Command::CheckConfig => {
            println!("configuration OK ({})", settings.source.describe());
            println!("  state_dir    {}", settings.state_dir.display());
            println!("  gate.listen  {}", settings.gate.listen);
            exit::code(exit::OK)
        }
        Command::Status { json } => status::show(&settings, json),
        Command::Passwd => token::passwd(),
        Command::Token(command) => token::run(&settings, command),
        Command::Audit(command) => audit::run(&settings, command),
        Command::Sbom { output, latest } => sbom::run(&settings, output.as_deref(), latest),
        Command::Enroll { hub, token, ca_fingerprint } => enroll(&settings, &hub, &token, &ca_fingerprint),
        Command::Deploy { file } => deploy(&settings, &file),
        Command::Reload => unreachable!("handled before the configuration is loaded"),
        Command::RestartNodeRed => match ask::<NodeRedRestarted>(&settings, &ControlRequest::RestartNodeRed) {
            Ok(restarted) => {
                println!("Node-RED restarted (pid {})", restarted.pid);
                exit::code(exit::OK)
            }
            Err(e) => client_error(&e),
        },
    }
}

/// `redtether reload`: the running daemon reads its configuration again and applies what can
/// change live. Exit 0 when it did, 78 (naming file and key) when the file is invalid — the
/// daemon then keeps its running settings — or the daemon's own exit codes when it is not there.
fn reload(explicit: Option<&std::path::Path>) -> ExitCode {
    let ctx = ProcessContext::from_process();
    // A broken file is still reported to the daemon (which records `config.reload_failed`), so
    // its state directory is found without the file validating.
    let (state_dir, local_error) = match config::load(explicit, &ctx) {
        Ok(settings) => (settings.state_dir, None),
        Err(e) => (config::state_dir_hint(explicit, &ctx), Some(e)),
    };
    let socket = crate::state_dir::StateDir::new(&state_dir).control_socket();
    let reply = control::request::<control::ReloadReply>(&socket, &ControlRequest::Reload, CONTROL_TIMEOUT);
    match (reply, local_error) {
        (Ok(reply), _) if reply.reloaded => {
            println!("reloaded {} (security settings from {})", reply.file, reply.source.as_str());
            if reply.changes.as_object().is_some_and(|c| !c.is_empty()) {
                println!("  changed: {}", reply.changes);
            }
            for key in &reply.needs_restart {
                println!("  {key} changed: takes effect when the agent restarts");
            }
            exit::code(exit::OK)
        }
        (Ok(reply), _) => {
            let key = reply.key.map(|k| format!(" (key {k})")).unwrap_or_default();
            eprintln!("redtether: error: {}{key}; the running settings stay", reply.error.unwrap_or_default());
            exit::code(exit::CONFIG)
        }
        (Err(e), Some(local)) => {
            eprintln!("redtether: ({e})");
            config_error(&local)
        }
        (Err(e), None) => client_error(&e),
    }
}

/// `redtether deploy FILE`: the daemon reads the file (an envelope may be larger than a control
/// request), applies it like one from the hub, and answers with the outcome.
fn deploy(settings: &Settings, file: &std::path::Path) -> ExitCode {
    let path = match std::path::absolute(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("redtether: {}: {e}", file.display());
            return exit::code(exit::FAILURE);
        }
    };
    let socket = crate::state_dir::StateDir::new(&settings.state_dir).control_socket();
    // An apply may install modules with npm: far longer than other requests.
    let request = ControlRequest::Deploy { path: path.display().to_string() };
    match control::request::<crate::deploy::Report>(&socket, &request, DEPLOY_TIMEOUT) {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            let applied = report.state == redtether_proto::wire::DeployState::Applied;
            exit::code(if applied { exit::OK } else { exit::FAILURE })
        }
        Err(e) => client_error(&e),
    }
}

/// `redtether enroll`: works with the daemon running (it is told to pick the identity up) or
/// stopped.
fn enroll(settings: &Settings, hubs: &[String], token: &str, fingerprint: &str) -> ExitCode {
    let dir = crate::state_dir::StateDir::new(&settings.state_dir);
    if let Err(e) = dir.create() {
        eprintln!("redtether: {e}");
        return exit::code(exit::CANT_CREATE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redtether: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    match runtime.block_on(crate::tunnel::enroll::enroll(
        hubs,
        token,
        fingerprint,
        &dir,
        settings.tunnel.transport,
        settings.tunnel.tcp_port,
        &settings.tunnel.proxy,
    )) {
        Ok(identity) => {
            println!("enrolled as {} with the hub at {}", identity.info.device_id, identity.info.hub);
            match ask::<TunnelReloaded>(settings, &ControlRequest::TunnelReload) {
                Ok(_) => println!("the running agent is connecting"),
                Err(ClientError::NotRunning(_)) => println!("the agent will connect when it starts"),
                Err(e) => eprintln!("redtether: enrolled, but the running agent did not answer: {e}"),
            }
            exit::code(exit::OK)
        }
        Err(e) => {
            eprintln!("redtether: enrollment failed: {}", error_chain(&e));
            exit::code(exit::FAILURE)
        }
    }
}

fn run(settings: Settings) -> ExitCode {
    redtether_host::logging::init_logging(&settings.log_level);
    redtether_host::heap::keep_small();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("redtether").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redtether: error: cannot start the async runtime: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let result = runtime.block_on(daemon::run(settings));
    // Do not wait for stray blocking work (a DNS lookup, a stuck read) past the stop timeout.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => exit::code(exit::OK),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "redtether cannot run");
            eprintln!("redtether: error: {}", error_chain(&e));
            exit::code(match e {
                DaemonError::StateDir(crate::state_dir::StateDirError::Locked { .. }) => exit::TEMP_FAIL,
                DaemonError::StateDir(_) | DaemonError::Control(_) => exit::CANT_CREATE,
                DaemonError::Gate(crate::gate::GateError::Tls(_)) => exit::CONFIG,
                DaemonError::Gate(_) | DaemonError::Metrics(_) => exit::UNAVAILABLE,
                DaemonError::Signals(_) => exit::FAILURE,
            })
        }
    }
}

/// Sends `request` to the running daemon and reads the answer as the `T` it promises.
pub(crate) fn ask<T: serde::de::DeserializeOwned>(
    settings: &Settings,
    request: &ControlRequest,
) -> Result<T, ClientError> {
    let socket = crate::state_dir::StateDir::new(&settings.state_dir).control_socket();
    control::request(&socket, request, CONTROL_TIMEOUT)
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("redtether: error: {}", error_chain(e));
    exit::code(exit::CONFIG)
}

pub(crate) fn client_error(e: &ClientError) -> ExitCode {
    eprintln!("redtether: {e}");
    exit::code(match e {
        ClientError::NotRunning(_) => exit::NOT_RUNNING,
        _ => exit::FAILURE,
    })
}
