//! The security settings in force on this device and where they came from: the `[gate]` table
//! of `agent.toml`, or the last policy the platform signed for this device. Owns the choice
//! between them (`[policy] managed`), the durable copy of the accepted policy (so it is enforced
//! offline and across restarts), applying a new policy or a reloaded file to the running gate
//! (through [`Pipeline::enforce`]), and their audit events.
//!
//! Pure parts: [`verdict`] (accept or refuse a policy), [`convert`] (file ↔ policy ↔ gate
//! settings), [`reload`] (what needs a restart).

pub mod convert;
pub mod reload;
mod reply;
mod store;
pub mod verdict;

use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::{self, ConfigError, ProcessContext, Settings, UserSettings};
use crate::gate::Pipeline;
use crate::gate::rules::Security;
use crate::identity::Identity;
use crate::state_dir::{StateDir, StateDirError};
use redtether_proto::policy::{self, Policy};
use redtether_proto::wire::{PolicyReport, PolicyState};
pub use reply::{PolicyInfo, PolicySource, RefusedPolicy, ReloadReply};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
pub use store::StoredPolicy;
use verdict::{InForce, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a stored policy: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] StateDirError),
}

/// How the daemon picks its users when the file configures none (the first-run `admin`).
pub type UsersOf = dyn Fn(&[UserSettings]) -> Result<Vec<UserSettings>, StateDirError> + Send + Sync;

/// What the daemon starts enforcing, and the stored policy that decided it.
pub struct Initial {
    pub security: Security,
    stored: Option<StoredPolicy>,
}

/// Decides the settings to start with: the stored policy if the platform manages this device
/// and the policy still verifies against the pinned hub key, else the file's.
pub fn initial(settings: &Settings, users: Vec<UserSettings>, dir: &StateDir) -> Initial {
    let file_security = convert::from_file(&settings.gate, users);
    let stored = match store::load(dir) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "the stored platform policy cannot be read; the file's security settings apply");
            None
        }
    };
    let checked = stored.and_then(|s| match still_valid(&s, dir) {
        Ok(policy) => Some((s, policy)),
        Err(why) => {
            tracing::error!(
                number = s.number,
                reason = why,
                "the stored platform policy no longer verifies; the file's security settings apply"
            );
            None
        }
    });
    match checked {
        Some((stored, policy)) if settings.policy.managed => {
            tracing::info!(number = stored.number, "enforcing the platform policy stored on this device");
            Initial { security: convert::from_policy(&policy.document), stored: Some(stored) }
        }
        Some((stored, _)) => Initial { security: file_security, stored: Some(stored) },
        None => Initial { security: file_security, stored: None },
    }
}

/// A stored policy checked again: the same hub key, this device, the document readable.
fn still_valid(stored: &StoredPolicy, dir: &StateDir) -> Result<Policy, &'static str> {
    let identity = Identity::load(dir).ok().flatten().ok_or("not_enrolled")?;
    let key = hex::decode(&identity.info.hub_signing_key).map_err(|_| "no_hub_key")?;
    let policy = policy::open(&stored.envelope, &key).map_err(|e| e.reason())?;
    if policy.device != identity.info.device_id || policy.number != stored.number {
        return Err("other_device");
    }
    Ok(policy)
}

struct State {
    /// The settings from the file as last (re)loaded.
    settings: Arc<Settings>,
    stored: Option<StoredPolicy>,
    source: PolicySource,
    last_refused: Option<RefusedPolicy>,
    /// The answer to the last policy the hub sent: repeated on every new control stream.
    last_report: Option<PolicyReport>,
}

/// The owner of the settings in force. Changes (a policy, a reload) are made one at a time.
pub struct SecurityControl {
    pipeline: Arc<Pipeline>,
    audit: Auditor,
    dir: StateDir,
    users_of: Box<UsersOf>,
    ctx: ProcessContext,
    state: tokio::sync::Mutex<State>,
    /// For status answers without waiting behind a change in progress.
    info: Mutex<PolicyInfo>,
}

impl SecurityControl {
    pub fn new(
        initial: Initial,
        settings: Arc<Settings>,
        pipeline: Arc<Pipeline>,
        audit: Auditor,
        dir: StateDir,
        users_of: Box<UsersOf>,
    ) -> SecurityControl {
        let source = if settings.policy.managed && initial.stored.is_some() {
            PolicySource::Platform
        } else {
            PolicySource::File
        };
        let state = State { settings, stored: initial.stored, source, last_refused: None, last_report: None };
        let info = Mutex::new(info_of(&state));
        SecurityControl {
            pipeline,
            audit,
            dir,
            users_of,
            ctx: ProcessContext::from_process(),
            state: tokio::sync::Mutex::new(state),
            info,
        }
    }

    /// Which settings are in force, for `status`.
    pub fn info(&self) -> PolicyInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The answer to the last policy the hub sent, for a new control stream to repeat.
    pub async fn last_report(&self) -> Option<PolicyReport> {
        self.state.lock().await.last_report.clone()
    }

    /// A policy envelope from the hub: judged, and if newer and valid, stored durably and then
    /// enforced from the next request on. The answer is what the hub is told.
    pub async fn apply_platform(&self, envelope: &str) -> PolicyReport {
        let mut state = self.state.lock().await;
        let report = self.judge_and_apply(&mut state, envelope).await;
        state.last_report = Some(report.clone());
        self.publish(&state);
        report
    }

    async fn judge_and_apply(&self, state: &mut State, envelope: &str) -> PolicyReport {
        let identity = match Identity::load(&self.dir) {
            Ok(Some(identity)) => identity,
            _ => return self.refused(state, 0, None, "not_enrolled", "this device has no hub identity".into()).await,
        };
        let key = hex::decode(&identity.info.hub_signing_key).unwrap_or_default();
        let current = state.stored.as_ref().map(|s| InForce { number: s.number, hash: &s.hash });
        let managed = state.settings.policy.managed;
        match verdict::judge(envelope, &key, &identity.info.device_id, managed, current) {
            Verdict::AlreadyEnforced { number, hash } => {
                PolicyReport { number, state: PolicyState::Applied, reason: None, hash: Some(hash) }
            }
            Verdict::Refuse { number, hash, reason, message } => {
                self.refused(state, number, hash, reason, message).await
            }
            Verdict::Enforce(policy) => {
                let hash = policy.document.hash();
                let stored = StoredPolicy {
                    number: policy.number,
                    hash: hash.clone(),
                    applied_at: redtether_proto::time::format_seconds(std::time::SystemTime::now()),
                    envelope: envelope.to_string(),
                };
                // Durable before it is enforced or answered: a device that said `applied` keeps
                // enforcing it after a power cut.
                if let Err(e) = store::save(&self.dir, &stored) {
                    tracing::error!(error = %e, number = policy.number, "the platform policy could not be stored");
                    return self.refused(state, policy.number, Some(hash), "not_stored", e.to_string()).await;
                }
                let new = convert::from_policy(&policy.document);
                let old = self.pipeline.rules().security.clone();
                let ended = self.pipeline.enforce(new.clone());
                state.stored = Some(stored);
                state.source = PolicySource::Platform;
                tracing::info!(number = policy.number, sessions_ended_for = ?ended.end_sessions_of, "platform policy enforced");
                self.record_token_changes(&old, &new).await;
                // The policy is enforced whatever the journal says: tightening security must not
                // wait for a disk. The event is awaited, and logged if it cannot be kept.
                let event = AuditEvent::new(AuditKind::PolicyApplied, Actor::System, "policy")
                    .with("number", policy.number)
                    .with("hash", hash.as_str())
                    .with("changes", convert::changes(&old, &new));
                self.audit.record_or_log(event).await;
                PolicyReport { number: policy.number, state: PolicyState::Applied, reason: None, hash: Some(hash) }
            }
        }
    }

    async fn refused(
        &self,
        state: &mut State,
        number: u64,
        hash: Option<String>,
        reason: &str,
        message: String,
    ) -> PolicyReport {
        tracing::warn!(number, reason, %message, "platform policy refused");
        let mut event = AuditEvent::new(AuditKind::PolicyRefused, Actor::System, "policy")
            .with("number", number)
            .with("reason", reason)
            .with("message", message.as_str());
        if let Some(hash) = &hash {
            event = event.with("hash", hash.as_str());
        }
        self.audit.record_or_log(event).await;
        let at = redtether_proto::time::format_seconds(std::time::SystemTime::now());
        state.last_refused = Some(RefusedPolicy { number, reason: reason.to_string(), at });
        PolicyReport { number, state: PolicyState::Refused, reason: Some(reason.to_string()), hash }
    }

    /// Platform tokens that a change adds or removes, as the device's own `token.created` /
    /// `token.revoked` events.
    async fn record_token_changes(&self, old: &Security, new: &Security) {
        let (added, removed) = convert::token_changes(old, new);
        for t in added {
            let event = AuditEvent::new(AuditKind::TokenCreated, Actor::System, t.name.as_str())
                .with("expires", t.expires)
                .with("scope", t.scope.clone())
                .with("via", "platform");
            self.audit.record_or_log(event).await;
        }
        for t in removed {
            let event =
                AuditEvent::new(AuditKind::TokenRevoked, Actor::System, t.name.as_str()).with("via", "platform");
            self.audit.record_or_log(event).await;
        }
    }

    /// Reads `agent.toml` again (SIGHUP, `redtether reload`). A valid file becomes the fallback
    /// settings — and the settings in force, unless a platform policy is — and `[policy]
    /// managed` takes effect; an invalid one changes nothing and is reported with its key.
    pub async fn reload(&self) -> ReloadReply {
        let mut state = self.state.lock().await;
        let reply = self.reload_locked(&mut state).await;
        self.publish(&state);
        reply
    }

    async fn reload_locked(&self, state: &mut State) -> ReloadReply {
        let explicit = match &state.settings.source {
            config::ConfigSource::File(path) => Some(path.clone()),
            config::ConfigSource::Defaults => None,
        };
        let loaded = config::load(explicit.as_deref(), &self.ctx).and_then(|settings| {
            match (self.users_of)(&settings.gate.users) {
                Ok(users) => Ok((settings, users)),
                Err(e) => Err(ConfigError::invalid(&settings.source.describe(), "gate.users", e.to_string())),
            }
        });
        let file = explicit.as_ref().map_or_else(|| state.settings.source.describe(), |p| p.display().to_string());
        let (settings, users) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                let key = e.key().map(str::to_string);
                let error = redtether_host::error_chain(&e);
                tracing::error!(file = %file, key = ?key, error = %error, "reload: the configuration is invalid; the running settings stay");
                let event = AuditEvent::new(AuditKind::ConfigReloadFailed, Actor::System, file.as_str())
                    .with("file", file.as_str())
                    .with("key", key.clone())
                    .with("error", error.as_str());
                self.audit.record_or_log(event).await;
                return ReloadReply {
                    file,
                    reloaded: false,
                    error: Some(error),
                    key,
                    source: state.source,
                    changes: serde_json::json!({}),
                    needs_restart: vec![],
                };
            }
        };
        let needs_restart = reload::needs_restart(&state.settings, &settings);
        let file_security = convert::from_file(&settings.gate, users);
        let platform = state
            .stored
            .as_ref()
            .filter(|_| settings.policy.managed)
            .and_then(|s| still_valid(s, &self.dir).ok())
            .map(|p| convert::from_policy(&p.document));
        let (source, next) = match platform {
            Some(platform) => (PolicySource::Platform, platform),
            None => (PolicySource::File, file_security),
        };
        let old = self.pipeline.rules().security.clone();
        let changes = convert::changes(&old, &next);
        if old != next {
            self.pipeline.enforce(next.clone());
            self.record_token_changes(&old, &next).await;
        }
        state.settings = Arc::new(settings);
        state.source = source;
        if !needs_restart.is_empty() {
            tracing::warn!(keys = ?needs_restart, "reload: these settings change only when the agent restarts");
        }
        tracing::info!(file = %file, source = source.as_str(), "configuration reloaded");
        let event = AuditEvent::new(AuditKind::ConfigReloaded, Actor::System, file.as_str())
            .with("file", file.as_str())
            .with("source", source.as_str())
            .with("changes", changes.clone())
            .with("needs_restart", needs_restart.clone());
        self.audit.record_or_log(event).await;
        ReloadReply { file, reloaded: true, error: None, key: None, source, changes, needs_restart }
    }

    fn publish(&self, state: &State) {
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = info_of(state);
    }
}

fn info_of(state: &State) -> PolicyInfo {
    let platform = state.stored.as_ref().filter(|_| state.source == PolicySource::Platform);
    PolicyInfo {
        managed: state.settings.policy.managed,
        source: state.source,
        number: platform.map(|s| s.number),
        hash: platform.map(|s| s.hash.clone()),
        applied_at: platform.map(|s| s.applied_at.clone()),
        last_refused: state.last_refused.clone(),
    }
}
