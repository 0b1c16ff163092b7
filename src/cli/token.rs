//! `redtether token create|list|revoke` and `redtether passwd`.
//!
//! Token commands go through the control socket while the daemon runs; when it does not, they
//! take the state directory's lock and edit the token file directly.

use super::{ask, error_chain, exit};
use crate::audit::store::{SledStore, StoreError};
use crate::audit::{Actor, AuditEvent, AuditKind, Journal};
use crate::cli::args::TokenCommand;
use crate::config::Settings;
use crate::control::{ClientError, ControlRequest, TokenCreated, TokenRevoked};
use crate::gate::TokenInfo;
use crate::gate::auth::tokens::{TokenError, TokenStore};
use crate::state_dir::{StateDir, StateDirError};
use redtether_proto::time::format_seconds;
use serde::de::DeserializeOwned;
use std::io::Read;
use std::process::ExitCode;

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenCommandError {
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The journal cannot be opened (a full disk, for one): nothing was changed.
    #[error("refused: the audit journal cannot record it: {0}")]
    JournalUnavailable(#[source] StoreError),
    /// The journal failed between the change and its event. A creation is undone; a
    /// revocation stands.
    #[error("the audit journal could not record it ({undone}): {source}")]
    Journal {
        undone: &'static str,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

pub fn run(settings: &Settings, command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::Create { name, expires, scope } => {
            create(settings, &name, expires.as_secs(), scope.as_deref()).map(|created| println!("{}", created.token))
        }
        TokenCommand::List { json } => list(settings).and_then(|tokens| print_list(&tokens, json)),
        TokenCommand::Revoke { name } => revoke(settings, &name).map(|revoked| println!("revoked {}", revoked.revoked)),
    };
    match result {
        Ok(()) => exit::code(exit::OK),
        Err(e) => {
            eprintln!("redtether: {}", error_chain(&e));
            exit::code(exit::FAILURE)
        }
    }
}

fn create(
    settings: &Settings,
    name: &str,
    lifetime_secs: u64,
    scope: Option<&str>,
) -> Result<TokenCreated, TokenCommandError> {
    let request =
        ControlRequest::TokenCreate { name: name.to_string(), lifetime_secs, scope: scope.map(str::to_string) };
    through_daemon_or_offline(settings, &request, |dir, store| {
        let mut journal = open_journal(dir)?;
        let now = redtether_proto::time::unix_now();
        let (token, record) = store.create(name, lifetime_secs, scope, now)?;
        let event = AuditEvent::new(AuditKind::TokenCreated, Actor::System, record.name.as_str())
            .with("expires", record.expires)
            .with("scope", record.scope.clone())
            .with("via", "cli, agent stopped");
        if let Err(source) = journal.append(vec![event], std::time::SystemTime::now()) {
            // No token that the journal does not know of.
            let _ = store.revoke(&record.name);
            return Err(TokenCommandError::Journal { undone: "the token was not made", source });
        }
        Ok(TokenCreated { token, record: TokenInfo::of(&record, now) })
    })
}

fn list(settings: &Settings) -> Result<Vec<TokenInfo>, TokenCommandError> {
    through_daemon_or_offline(settings, &ControlRequest::TokenList, |_, store| {
        let now = redtether_proto::time::unix_now();
        Ok(store.list().iter().map(|t| TokenInfo::of(t, now)).collect())
    })
}

fn revoke(settings: &Settings, name: &str) -> Result<TokenRevoked, TokenCommandError> {
    let request = ControlRequest::TokenRevoke { name: name.to_string() };
    through_daemon_or_offline(settings, &request, |dir, store| {
        let mut journal = open_journal(dir)?;
        let record = store.revoke(name)?;
        let event = AuditEvent::new(AuditKind::TokenRevoked, Actor::System, record.name.as_str())
            .with("via", "cli, agent stopped");
        journal
            .append(vec![event], std::time::SystemTime::now())
            .map_err(|source| TokenCommandError::Journal { undone: "the token stays revoked", source })?;
        Ok(TokenRevoked { revoked: record.name })
    })
}

fn print_list(tokens: &[TokenInfo], json: bool) -> Result<(), TokenCommandError> {
    if json {
        println!("{}", serde_json::to_string(tokens)?);
        return Ok(());
    }
    if tokens.is_empty() {
        println!("no tokens");
    }
    for t in tokens {
        let expired = if t.expired { " (expired)" } else { "" };
        let scope = t.scope.as_deref().map(|s| format!(", scope {s}")).unwrap_or_default();
        println!("{}  expires {}{expired}{scope}", t.name, format_seconds(t.expires));
    }
    Ok(())
}

/// Asks the running daemon; when none runs, does `offline` on the token store under the state
/// directory's lock, so that no daemon starts and reads the file halfway.
fn through_daemon_or_offline<T: DeserializeOwned>(
    settings: &Settings,
    request: &ControlRequest,
    offline: impl FnOnce(&StateDir, &TokenStore) -> Result<T, TokenCommandError>,
) -> Result<T, TokenCommandError> {
    match ask::<T>(settings, request) {
        Err(ClientError::NotRunning(_)) => {}
        answered => return Ok(answered?),
    }
    let dir = StateDir::new(&settings.state_dir);
    dir.create()?;
    let _lock = dir.lock()?;
    offline(&dir, &TokenStore::open(&dir.tokens_file()))
}

/// The journal, opened directly (the caller holds the state lock, so no daemon has it open)
/// before anything is changed: a journal that cannot even be opened refuses the change.
fn open_journal(dir: &StateDir) -> Result<Journal<SledStore>, TokenCommandError> {
    SledStore::open(&dir.audit_dir())
        .and_then(|store| Journal::open(store, u64::MAX))
        .map_err(TokenCommandError::JournalUnavailable)
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
