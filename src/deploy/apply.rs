//! One deployment, from envelope to outcome: verify, accept (number and apply-in-progress made
//! durable first), stage, validate, switch, restart, health-check; on failure, back to the
//! last good generation.

use super::flows::{flows_hash, types_needed};
use super::layout::{carry_over, sync_tree};
use super::node_red_credentials::node_red_encrypt;
use super::nodered::{NodeRedError, ids, module_types, npm_install};
use super::state::{Applying, DeployRecord, Report};
use super::{Deployer, Origin};
use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::config::NodeRedLaunch;
use crate::identity::Identity;
use crate::state_dir::{DeployedSnapshot, StateDirError};
use crate::supervisor::{NodeRedState, SupervisorError};
use redtether_host::error_chain;
use redtether_proto::deployment::{Credentials, DeployRefusal, Deployment, verify};
use redtether_proto::seal::{SealError, unseal};
use redtether_proto::wire::DeployState;
use serde_json::json;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// What of the running generation belongs to the device, not to a snapshot: the editor's
/// per-user preferences, the flow library, and context stored on disk.
const CARRIED_OVER: &[&str] = &[".config.users.json", ".config.users.json.backup", "lib", "context"];
/// Beyond Node-RED's own startup timeout, how long a restarted Node-RED may take to load flows.
const LOAD_GRACE: Duration = Duration::from_secs(15);

/// A refused envelope's deployment id: from a signed payload, or only claimed by one whose
/// signature failed.
#[derive(Debug)]
enum Id {
    Trusted(String),
    Claimed(String),
}

/// Why an apply failed. The hub is told the stage it failed at ([`ApplyError::stage`]) and the
/// error's text as the reason.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The new generation's folder could not be made.
    #[error("{0}")]
    Generation(#[source] io::Error),
    #[error("{0}")]
    Write(#[source] StateDirError),
    #[error("{0}")]
    Unseal(#[source] SealError),
    #[error("the sealed credentials are not JSON")]
    CredentialsNotJson(#[source] serde_json::Error),
    #[error("credentials from a snapshot must be Node-RED's encrypted file")]
    NotNodeRedCredentials,
    /// Portable credentials are sealed to the hub's key: only the hub can turn them into
    /// credentials sealed for this device.
    #[error("portable credentials must be sealed for this device by the hub; the device cannot open them")]
    PortableCredentials,
    /// What belongs to the device could not be carried over into the new generation.
    #[error("{0}")]
    CarryOver(#[source] io::Error),
    /// The new generation could not be made durable.
    #[error("{0}")]
    Sync(#[source] io::Error),
    #[error("{0}")]
    Modules(#[source] NodeRedError),
    #[error("unknown node types: {0}")]
    UnknownTypes(String),
    #[error("{0}")]
    Switch(#[source] io::Error),
    #[error("{0}")]
    Restart(#[source] SupervisorError),
    #[error("Node-RED did not stay up: {0}")]
    DidNotStayUp(String),
    #[error("the supervisor stopped")]
    SupervisorStopped,
    #[error("Node-RED was not healthy within {0} s")]
    NotHealthy(u64),
    #[error("{0}")]
    Health(#[source] NodeRedError),
    #[error("Node-RED is missing node types: {0}")]
    MissingTypes(String),
    #[error("Node-RED did not load the deployed flows")]
    FlowsNotLoaded,
    /// Rolling back: `node-red` could not be pointed at the last good generation again.
    #[error("cannot switch back: {0}")]
    SwitchBack(#[source] io::Error),
}

impl ApplyError {
    /// The stage of the apply this error ends, as the hub is told it.
    fn stage(&self) -> &'static str {
        use ApplyError::*;
        match self {
            Generation(_)
            | Write(_)
            | Unseal(_)
            | CredentialsNotJson(_)
            | NotNodeRedCredentials
            | PortableCredentials
            | CarryOver(_)
            | Sync(_) => "stage",
            Modules(_) => "modules",
            UnknownTypes(_) => "validate",
            Switch(_) => "switch",
            Restart(_) | DidNotStayUp(_) | SupervisorStopped | NotHealthy(_) => "start",
            Health(_) | MissingTypes(_) | FlowsNotLoaded => "health",
            SwitchBack(_) => "restore",
        }
    }
}

impl Deployer {
    pub(super) async fn handle(&mut self, envelope: &str, origin: Origin) -> Report {
        let identity = match Identity::load(&self.dir) {
            Ok(Some(identity)) => identity,
            _ => {
                return self
                    .refused(
                        None,
                        "not_enrolled",
                        "the device is not enrolled: it has no hub key to check deployments against",
                        origin,
                    )
                    .await;
            }
        };
        let path = self.layout.state_file();
        let record = match DeployRecord::load(&path) {
            Ok(record) => record,
            Err(e) => return self.refused(None, "state_unreadable", &e.to_string(), origin).await,
        };
        let hub_key = hex::decode(&identity.info.hub_signing_key).unwrap_or_default();
        let now = redtether_proto::time::unix_now();
        match verify(envelope, &hub_key, &identity.info.device_id, record.number, now) {
            Ok(deployment) => self.apply(deployment, record, &identity, origin).await,
            Err(DeployRefusal::Replayed { number, last, id })
                if number == last && record.last.as_ref().is_some_and(|r| r.id == id) =>
            {
                // The hub sent again what was already handled (its copy of the outcome was lost
                // with a connection): answer with the outcome, change nothing.
                let last = record.last.clone().expect("checked above");
                self.publish(&last);
                last
            }
            Err(refusal) => {
                // The id of an envelope whose signature failed is only a claim: it labels the
                // audit event, but is not reported as that deployment's outcome (a forgery must
                // not mark the hub's real deployment failed).
                let signed = !matches!(refusal, DeployRefusal::Malformed | DeployRefusal::BadSignature);
                let id = redtether_proto::deployment::claimed_id(envelope)
                    .map(|id| if signed { Id::Trusted(id) } else { Id::Claimed(id) });
                self.refused(id, refusal.reason(), &refusal.to_string(), origin).await
            }
        }
    }

    async fn refused(&mut self, id: Option<Id>, reason: &str, message: &str, origin: Origin) -> Report {
        tracing::warn!(deployment = ?id, %reason, %message, "deployment refused");
        let mut event = AuditEvent::new(AuditKind::DeployRefused, Actor::System, "node-red")
            .with("reason", reason)
            .with("message", message)
            .with("origin", origin_name(origin));
        let mut detail = json!({ "reason": reason, "message": message });
        let trusted = match id {
            Some(Id::Trusted(id)) => Some(id),
            Some(Id::Claimed(claimed)) => {
                event = event.with("claimed_deployment", claimed.clone());
                detail["claimed_deployment"] = json!(claimed);
                None
            }
            None => None,
        };
        if let Some(id) = &trusted {
            event = event.with("deployment", id.clone());
        }
        self.audit.record_or_log(event).await;
        let report = Report { id: trusted.unwrap_or_default(), state: DeployState::Failed, detail };
        if !report.id.is_empty() {
            self.publish(&report);
        }
        report
    }

    /// A deployment not applied because its `deploy.received` cannot be made durable
    /// (`[audit] on_failure = "deny"`). Nothing was changed and its number is not taken, so the
    /// same envelope applies once the journal has recovered.
    fn audit_unavailable(&self, d: &Deployment, error: &crate::audit::AuditError) -> Report {
        tracing::warn!(deployment = %d.id, %error, "deployment refused: the audit journal cannot record it");
        let report = Report {
            id: d.id.clone(),
            state: DeployState::Failed,
            detail: json!({ "reason": "audit_unavailable", "message": error.to_string() }),
        };
        self.publish(&report);
        report
    }

    async fn apply(&mut self, d: Deployment, mut record: DeployRecord, identity: &Identity, origin: Origin) -> Report {
        if let Err(e) = self.audit.admit(AuditKind::DeployReceived) {
            return self.audit_unavailable(&d, &e);
        }
        let hash = flows_hash(&d.snapshot.flows);
        let received = AuditEvent::new(AuditKind::DeployReceived, Actor::System, "node-red")
            .with("deployment", d.id.clone())
            .with("number", d.number)
            .with("flows_hash", hash.clone())
            .with("origin", origin_name(origin));
        if let Err(e) = self.audit.record_or_refuse(received).await {
            return self.audit_unavailable(&d, &e);
        }
        tracing::info!(deployment = %d.id, number = d.number, flows_hash = %hash, "applying a deployment");

        let path = self.layout.state_file();
        let current = match self.layout.adopt() {
            Ok(current) => current,
            Err(e) => {
                return self
                    .refused(
                        Some(Id::Trusted(d.id.clone())),
                        "storage",
                        &format!("cannot prepare the snapshot store: {e}"),
                        origin,
                    )
                    .await;
            }
        };
        let generation = format!("g{}", d.number);
        // The number is taken before anything else happens, so the same envelope can never be
        // applied twice, and the apply in progress is on disk before the switch it may make.
        record.number = d.number;
        record.current = Some(current.clone());
        record.applying = Some(Applying {
            id: d.id.clone(),
            number: d.number,
            generation: generation.clone(),
            flows_hash: hash.clone(),
        });
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = record.save(&path) {
            record.applying = None;
            return self.refused(Some(Id::Trusted(d.id.clone())), "storage", &e.to_string(), origin).await;
        }
        self.publish(&Report { id: d.id.clone(), state: DeployState::Applying, detail: json!({ "flows_hash": hash }) });

        let started = Instant::now();
        let outcome = self.stage_and_switch(&d, identity, &current, &generation).await;
        let report = match outcome {
            Ok(()) => {
                record.previous = Some(current.clone());
                record.current = Some(generation.clone());
                let report = Report {
                    id: d.id.clone(),
                    state: DeployState::Applied,
                    detail: json!({ "flows_hash": hash, "generation": generation, "seconds": started.elapsed().as_secs_f64() }),
                };
                let applied = AuditEvent::new(AuditKind::DeployApplied, Actor::System, "node-red")
                    .with("deployment", d.id.clone())
                    .with("number", d.number)
                    .with("flows_hash", hash.clone());
                self.audit.record_or_log(applied).await;
                tracing::info!(deployment = %d.id, %generation, "deployment applied");
                report
            }
            Err(failure) => {
                let (stage, reason) = (failure.stage(), error_chain(&failure));
                let restored = self.restore(&current, &generation).await;
                let state = if restored.is_ok() { DeployState::RolledBack } else { DeployState::Failed };
                let mut detail = json!({ "flows_hash": hash, "stage": stage, "reason": reason });
                if let Err(why) = &restored {
                    detail["restore_error"] = json!(error_chain(why));
                }
                let event = AuditEvent::new(AuditKind::DeployRolledBack, Actor::System, "node-red")
                    .with("deployment", d.id.clone())
                    .with("number", d.number)
                    .with("flows_hash", hash.clone())
                    .with("stage", stage)
                    .with("reason", reason.clone())
                    .with("restored", restored.is_ok());
                self.audit.record_or_log(event).await;
                tracing::warn!(deployment = %d.id, stage, %reason, "deployment rolled back");
                Report { id: d.id.clone(), state, detail }
            }
        };
        record.applying = None;
        record.last = Some(report.clone());
        if let Err(e) = record.save(&path) {
            tracing::error!(error = %e, "cannot record the deployment's outcome");
        }
        let keep = [record.current.as_deref().unwrap_or("g0"), record.previous.as_deref().unwrap_or("")];
        self.layout.prune(&keep);
        self.publish(&report);
        self.publish_sbom().await;
        report
    }

    /// Everything up to a healthy Node-RED on the new generation.
    async fn stage_and_switch(
        &mut self,
        d: &Deployment,
        identity: &Identity,
        current: &str,
        generation: &str,
    ) -> Result<(), ApplyError> {
        let dir = self.layout.fresh_generation(generation).map_err(ApplyError::Generation)?;
        self.write_generation(d, identity, &dir)?;
        carry_over(&self.layout.generation(current), &dir, CARRIED_OVER).map_err(ApplyError::CarryOver)?;
        if !d.snapshot.modules.is_empty() {
            let cache = self.dir.root().join("npm-cache");
            npm_install(self.npm(), &dir, cache.is_dir().then_some(cache.as_path()))
                .await
                .map_err(ApplyError::Modules)?;
        }

        // Checked before the switch against the running Node-RED's own nodes, so a snapshot
        // that could never start does not take the device down even for a moment.
        let needed = types_needed(&d.snapshot.flows);
        match self.admin.registered_types().await {
            Ok(registered) => {
                let provided = module_types(&dir, &d.snapshot.modules);
                let missing: Vec<&String> = needed
                    .iter()
                    .filter(|t| !provided.contains(*t) && registered.get(*t).is_none_or(|m| m != "node-red"))
                    .collect();
                if !missing.is_empty() {
                    return Err(ApplyError::UnknownTypes(join(&missing)));
                }
            }
            Err(why) => tracing::warn!(
                why = %error_chain(&why),
                "cannot ask Node-RED for its node types; checking after the switch only"
            ),
        }

        sync_tree(&dir).map_err(ApplyError::Sync)?;
        self.layout.point_at(generation).map_err(ApplyError::Switch)?;
        self.restart_healthy().await?;

        let registered = self.admin.registered_types().await.map_err(ApplyError::Health)?;
        let missing: Vec<&String> = needed.iter().filter(|t| !registered.contains_key(*t)).collect();
        if !missing.is_empty() {
            return Err(ApplyError::MissingTypes(join(&missing)));
        }
        let loaded = self.admin.loaded_flow_ids().await.map_err(ApplyError::Health)?;
        if loaded != ids(&d.snapshot.flows) {
            return Err(ApplyError::FlowsNotLoaded);
        }
        Ok(())
    }

    fn write_generation(&self, d: &Deployment, identity: &Identity, dir: &Path) -> Result<(), ApplyError> {
        let write = |name: &str, value: &serde_json::Value| {
            let bytes = serde_json::to_vec_pretty(value).expect("JSON values always encode");
            crate::state_dir::write_private(&dir.join(name), &bytes).map_err(ApplyError::Write)
        };
        write("flows.json", &json!(d.snapshot.flows))?;
        match &d.snapshot.credentials {
            Some(Credentials::Sealed(sealed)) => {
                let plain = unseal(&identity.key_pem, &identity.info.device_id, sealed).map_err(ApplyError::Unseal)?;
                let credentials: serde_json::Value =
                    serde_json::from_slice(&plain).map_err(ApplyError::CredentialsNotJson)?;
                write("flows_cred.json", &node_red_encrypt(&self.credential_secret, &credentials))?;
            }
            Some(Credentials::NodeRed(file)) => {
                if file.get("$").and_then(|v| v.as_str()).is_none() {
                    return Err(ApplyError::NotNodeRedCredentials);
                }
                write("flows_cred.json", file)?;
            }
            Some(Credentials::Portable(_)) => return Err(ApplyError::PortableCredentials),
            None => {}
        }
        write(
            "package.json",
            &json!({ "name": "redtether-snapshot", "version": "0.0.0", "private": true, "description": d.id, "dependencies": d.snapshot.modules }),
        )?;
        let deployed = DeployedSnapshot {
            deployment: Some(d.id.clone()),
            number: Some(d.number),
            env: d.snapshot.env.clone(),
            settings: d.snapshot.settings.clone(),
        };
        crate::state_dir::write_private(&DeployedSnapshot::path(dir), &deployed.to_json()).map_err(ApplyError::Write)
    }

    fn npm(&self) -> &str {
        match &self.settings.node_red.launch {
            NodeRedLaunch::Managed { npm, .. } => npm,
            NodeRedLaunch::Command(_) => "npm",
        }
    }

    /// Restarts Node-RED and waits until that run answers its health check.
    async fn restart_healthy(&self) -> Result<(), ApplyError> {
        let pid = self.supervisor.restart().await.map_err(ApplyError::Restart)?;
        let mut status = self.supervisor.subscribe();
        let limit = self.settings.node_red.startup_timeout + LOAD_GRACE;
        let wait = async {
            loop {
                {
                    let s = status.borrow_and_update();
                    match s.state {
                        NodeRedState::Running if s.pid == Some(pid) => return Ok(()),
                        NodeRedState::Backoff | NodeRedState::CrashLoop | NodeRedState::Stopped => {
                            return Err(ApplyError::DidNotStayUp(
                                s.last_exit.clone().unwrap_or_else(|| s.state.as_str().into()),
                            ));
                        }
                        _ => {}
                    }
                }
                if status.changed().await.is_err() {
                    return Err(ApplyError::SupervisorStopped);
                }
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| ApplyError::NotHealthy(limit.as_secs()))?
    }

    /// Points `node-red` back at `current` (if it moved), brings Node-RED up on it, and removes
    /// the failed generation.
    async fn restore(&self, current: &str, failed: &str) -> Result<(), ApplyError> {
        let switched = self.layout.current().ok().flatten().as_deref() == Some(failed);
        let result = if switched {
            match self.layout.point_at(current) {
                Ok(()) => self.restart_healthy().await,
                Err(e) => Err(ApplyError::SwitchBack(e)),
            }
        } else {
            Ok(())
        };
        if self.layout.current().ok().flatten().as_deref() != Some(failed) {
            let _ = std::fs::remove_dir_all(self.layout.generation(failed));
        }
        result
    }

    async fn publish_sbom(&self) {
        let settings = std::sync::Arc::clone(&self.settings);
        match tokio::task::spawn_blocking(move || crate::sbom::generate(&settings)).await {
            Ok(Ok(sbom)) => {
                self.sbom.send_replace(Some(std::sync::Arc::new(sbom)));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "no SBOM after the deployment"),
            Err(e) => tracing::warn!(error = %e, "no SBOM after the deployment"),
        }
    }
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Hub => "hub",
        Origin::Local => "local",
    }
}
