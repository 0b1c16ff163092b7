//! `redtether token create|list|revoke` and `redtether passwd`.
//!
//! Token commands go through the control socket while the daemon runs; when it does not, they
//! take the state directory's lock and edit the token file directly.

use super::{ask, exit};
use crate::audit::store::SledStore;
use crate::audit::{Actor, AuditEvent, AuditKind, Journal};
use crate::cli::args::TokenCommand;
use crate::config::Settings;
use crate::control::{ClientError, ControlRequest};
use crate::gate::auth::tokens::TokenStore;
use crate::state_dir::StateDir;
use std::io::Read;
use std::process::ExitCode;

pub fn run(settings: &Settings, command: TokenCommand) -> ExitCode {
    let request = match &command {
        TokenCommand::Create { name, expires, scope } => {
            ControlRequest::TokenCreate { name: name.clone(), lifetime_secs: expires.as_secs(), scope: scope.clone() }
        }
        TokenCommand::List { .. } => ControlRequest::TokenList,
        TokenCommand::Revoke { name } => ControlRequest::TokenRevoke { name: name.clone() },
    };
    let result = match ask(settings, &request) {
        Err(ClientError::NotRunning(_)) => offline(settings, &request),
        other => other.map_err(|e| e.to_string()),
    };
    let result = match result {
        Ok(r) => r,
        Err(message) => {
            eprintln!("redtether: {message}");
            return exit::code(exit::FAILURE);
        }
    };
    match command {
        TokenCommand::Create { .. } => println!("{}", result["token"].as_str().unwrap_or_default()),
        TokenCommand::List { json: true } => println!("{result}"),
        TokenCommand::List { json: false } => {
            let tokens = result.as_array().cloned().unwrap_or_default();
            if tokens.is_empty() {
                println!("no tokens");
            }
            for t in tokens {
                let expired = if t["expired"].as_bool() == Some(true) { " (expired)" } else { "" };
                let scope = t["scope"].as_str().map(|s| format!(", scope {s}")).unwrap_or_default();
                println!(
                    "{}  expires {}{expired}{scope}",
                    t["name"].as_str().unwrap_or("?"),
                    t["expires"].as_str().unwrap_or("?")
                );
            }
        }
        TokenCommand::Revoke { .. } => {
            println!("revoked {}", result["revoked"].as_str().unwrap_or_default())
        }
    }
    exit::code(exit::OK)
}

/// The daemon is not running: edit the store under the state directory's lock.
fn offline(settings: &Settings, request: &ControlRequest) -> Result<serde_json::Value, String> {
    let dir = StateDir::new(&settings.state_dir);
    dir.create().map_err(|e| e.to_string())?;
    let _lock = dir.lock().map_err(|e| e.to_string())?;
    let store = TokenStore::open(&dir.tokens_file());
    let now = redtether_proto::time::unix_now();
    match request {
        ControlRequest::TokenCreate { name, lifetime_secs, scope } => {
            let (token, record) =
                store.create(name, *lifetime_secs, scope.as_deref(), now).map_err(|e| e.to_string())?;
            let event = AuditEvent::new(AuditKind::TokenCreated, Actor::System, record.name.as_str())
                .with("expires", record.expires)
                .with("scope", record.scope.clone())
                .with("via", "cli, agent stopped");
            record_offline(&dir, event)?;
            Ok(serde_json::json!({ "token": token }))
        }
        ControlRequest::TokenList => {
            Ok(serde_json::json!(store.list().iter().map(crate::gate::token_json).collect::<Vec<_>>()))
        }
        ControlRequest::TokenRevoke { name } => {
            let record = store.revoke(name).map_err(|e| e.to_string())?;
            let event = AuditEvent::new(AuditKind::TokenRevoked, Actor::System, record.name.as_str())
                .with("via", "cli, agent stopped");
            record_offline(&dir, event)?;
            Ok(serde_json::json!({ "revoked": record.name }))
        }
        _ => Err("not a token command".into()),
    }
}

/// Appends to the journal directly (the caller holds the state lock, so no daemon has it open).
fn record_offline(dir: &StateDir, event: AuditEvent) -> Result<(), String> {
    let store = SledStore::open(&dir.audit_dir()).map_err(|e| e.to_string())?;
    let mut journal = Journal::open(store, u64::MAX).map_err(|e| e.to_string())?;
    journal.append(vec![event], std::time::SystemTime::now()).map_err(|e| e.to_string())?;
    Ok(())
}

/// `redtether passwd`: the password is the first line of stdin.
pub fn passwd() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("redtether: cannot read the password from stdin: {e}");
        return exit::code(exit::FAILURE);
    }
    let password = input.lines().next().unwrap_or_default();
    if password.is_empty() {
        eprintln!("redtether: the password is empty (give it on stdin, e.g. `redtether passwd < file`)");
        return exit::code(exit::FAILURE);
    }
    match crate::gate::auth::passwords::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            exit::code(exit::OK)
        }
        Err(e) => {
            eprintln!("redtether: cannot hash the password: {e}");
            exit::code(exit::FAILURE)
        }
    }
}
