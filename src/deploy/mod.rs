//! Deployments on the device: signed snapshots from the hub (or carried in by hand with
//! `redtether deploy FILE`) are verified, staged in a new generation, switched to atomically,
//! started and health-checked — and rolled back to the last good snapshot on any failure.
//!
//! One actor, [`Deployer`], applies one deployment at a time, independently of the tunnel (a
//! session that drops mid-apply changes nothing); it publishes where the latest deployment
//! stands and the SBOM after each one, which the tunnel session forwards to the hub. The
//! gate's protection mode is untouched throughout: deployments never go through the admin API.
//!
//! ```text
//! <state_dir>/node-red -> node-red.d/g<number>   the running snapshot (see `layout`)
//! <state_dir>/node-red.d/                        it and the last good one
//! <state_dir>/deploy/state.json                  number, generations, apply in progress, outcome
//! ```

mod apply;
mod capture;
pub mod flows;
pub mod layout;
pub mod node_red_credentials;
mod nodered;
mod state;

pub use capture::CaptureError;
pub use layout::Layout;
pub use state::{DeployRecord, Report};

use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::Settings;
use crate::state_dir::StateDir;
use crate::supervisor::{SupervisorHandle, UpstreamTokens};
use redtether_proto::wire::DeployState;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the deployer is not running")]
    Gone,
    #[error("a deployment is already queued; try again when it is done")]
    Busy,
    /// The running snapshot could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    /// The blocking task that did the work panicked or was cancelled.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where a deployment came from, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Hub,
    /// `redtether deploy FILE` through the control socket.
    Local,
}

struct Submission {
    envelope: String,
    origin: Origin,
    reply: Option<oneshot::Sender<Report>>,
}

/// The rest of the agent's view of the deployer.
#[derive(Clone)]
pub struct DeployHandle {
    queue: mpsc::Sender<Submission>,
    reports: watch::Receiver<Option<Report>>,
    sbom: watch::Receiver<Option<Arc<serde_json::Value>>>,
    settings: Arc<Settings>,
    layout: Layout,
    /// Opens Node-RED's credentials file for a portable snapshot.
    credential_secret: Arc<str>,
}

impl DeployHandle {
    /// What the device runs now, as a deployable snapshot (JSON).
    pub async fn capture(&self) -> Result<serde_json::Value, DeployError> {
        let user_dir = self.layout.user_dir();
        let snapshot = tokio::task::spawn_blocking(move || capture::capture(&user_dir)).await??;
        Ok(serde_json::to_value(snapshot).unwrap_or_default())
    }

    /// What the device runs now, as a portable snapshot (JSON): its credentials opened and
    /// sealed to `seal_to`, the hub's credentials key (hex SPKI DER).
    pub async fn capture_portable(&self, seal_to: String) -> Result<serde_json::Value, DeployError> {
        let user_dir = self.layout.user_dir();
        let secret = Arc::clone(&self.credential_secret);
        let snapshot =
            tokio::task::spawn_blocking(move || capture::capture_portable(&user_dir, &secret, &seal_to)).await??;
        Ok(serde_json::to_value(snapshot).unwrap_or_default())
    }

    /// The device's SBOM now.
    pub async fn make_sbom(&self) -> Result<serde_json::Value, DeployError> {
        let settings = Arc::clone(&self.settings);
        Ok(tokio::task::spawn_blocking(move || {
            let mut sbom = crate::sbom::generate(&settings)?;
            // The hub marks outdated packages from these annotations. Never an error: offline,
            // the cached answers (or none) are used, within the lookups' deadline.
            let registry = crate::sbom::registry_from_environment();
            crate::sbom::add_latest(&mut sbom, &crate::state_dir::StateDir::new(&settings.state_dir), &registry);
            Ok::<_, crate::sbom::SbomError>(sbom)
        })
        .await??)
    }

    /// Queues a deployment from the hub; its progress shows in [`DeployHandle::reports`].
    pub fn submit(&self, envelope: String) -> Result<(), DeployError> {
        self.queue.try_send(Submission { envelope, origin: Origin::Hub, reply: None }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeployError::Busy,
            mpsc::error::TrySendError::Closed(_) => DeployError::Gone,
        })
    }

    /// Applies a deployment carried in by hand and waits for its outcome.
    pub async fn apply_local(&self, envelope: String) -> Result<Report, DeployError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Submission { envelope, origin: Origin::Local, reply: Some(reply) })
            .await
            .map_err(|_| DeployError::Gone)?;
        outcome.await.map_err(|_| DeployError::Gone)
    }

    /// The latest deployment's state (the last outcome at start-up).
    pub fn reports(&self) -> watch::Receiver<Option<Report>> {
        self.reports.clone()
    }

    /// The SBOM made after the latest deployment.
    pub fn sbom(&self) -> watch::Receiver<Option<Arc<serde_json::Value>>> {
        self.sbom.clone()
    }
}

pub struct Deployer {
    settings: Arc<Settings>,
    dir: StateDir,
    layout: Layout,
    supervisor: SupervisorHandle,
    audit: Auditor,
    credential_secret: String,
    admin: nodered::AdminApi,
    queue: mpsc::Receiver<Submission>,
    reports: watch::Sender<Option<Report>>,
    sbom: watch::Sender<Option<Arc<serde_json::Value>>>,
}

impl Deployer {
    pub fn new(
        settings: Arc<Settings>,
        dir: StateDir,
        supervisor: SupervisorHandle,
        audit: Auditor,
        credential_secret: String,
        upstream_tokens: &UpstreamTokens,
    ) -> (Deployer, DeployHandle) {
        let layout = Layout::new(dir.root());
        let last = DeployRecord::load(&layout.state_file()).ok().and_then(|r| r.last);
        let (queue_tx, queue) = mpsc::channel(4);
        let (reports, reports_rx) = watch::channel(last);
        let (sbom, sbom_rx) = watch::channel(None);
        let admin = nodered::AdminApi::new(upstream_tokens, supervisor.upstream());
        let handle = DeployHandle {
            queue: queue_tx,
            reports: reports_rx,
            sbom: sbom_rx,
            settings: Arc::clone(&settings),
            layout: layout.clone(),
            credential_secret: Arc::from(credential_secret.as_str()),
        };
        let deployer =
            Deployer { settings, dir, layout, supervisor, audit, credential_secret, admin, queue, reports, sbom };
        (deployer, handle)
    }

    /// Applies deployments one at a time until `cancel`. An apply cut short by `cancel` is
    /// finished at the next start by [`recover`].
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let submission = tokio::select! {
                _ = cancel.cancelled() => return,
                s = self.queue.recv() => match s { Some(s) => s, None => return },
            };
            let report = tokio::select! {
                _ = cancel.cancelled() => return,
                report = self.handle(&submission.envelope, submission.origin) => report,
            };
            if let Some(reply) = submission.reply {
                let _ = reply.send(report);
            }
        }
    }

    fn publish(&self, report: &Report) {
        self.reports.send_replace(Some(report.clone()));
    }
}

/// Finishes what an agent stopped mid-apply left: `node-red` goes back to the last good
/// generation (the interrupted one may be half-written or never proved healthy) and the
/// outcome is recorded as rolled back. Runs at start-up, before Node-RED is started. Returns the
/// audit event to record, if anything was done.
pub fn recover(dir: &StateDir) -> Option<AuditEvent> {
    let layout = Layout::new(dir.root());
    let path = layout.state_file();
    let mut record = match DeployRecord::load(&path) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the deployment record is unreadable; keeping the running snapshot");
            return None;
        }
    };
    let back_to = record.current.clone().unwrap_or_else(|| "g0".into());
    let Some(applying) = record.applying.take() else {
        // Stopped between moving a plain user dir into `g0` and linking it: finish the link.
        if std::fs::symlink_metadata(layout.user_dir()).is_err()
            && layout.generation(&back_to).is_dir()
            && let Err(e) = layout.point_at(&back_to)
        {
            tracing::error!(generation = %back_to, error = %e, "cannot restore the Node-RED user dir link");
        }
        return None;
    };
    if let Err(e) = layout.point_at(&back_to) {
        tracing::error!(generation = %back_to, error = %e, "cannot restore the last good snapshot");
        return None;
    }
    layout.prune(&[back_to.as_str(), record.previous.as_deref().unwrap_or("")]);
    let reason = "the agent stopped during the apply; the previous snapshot was restored";
    record.last = Some(Report {
        id: applying.id.clone(),
        state: DeployState::RolledBack,
        detail: serde_json::json!({ "reason": reason, "stage": "interrupted", "flows_hash": applying.flows_hash }),
    });
    if let Err(e) = record.save(&path) {
        tracing::error!(error = %e, "cannot record the rollback");
    }
    tracing::warn!(deployment = %applying.id, generation = %back_to, "{reason}");
    Some(
        AuditEvent::new(AuditKind::DeployRolledBack, Actor::System, "node-red")
            .with("deployment", applying.id)
            .with("number", applying.number)
            .with("flows_hash", applying.flows_hash)
            .with("stage", "interrupted")
            .with("reason", reason),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::Applying;

    fn setup() -> (tempfile::TempDir, StateDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let layout = Layout::new(tmp.path());
        std::fs::create_dir_all(layout.user_dir()).unwrap();
        std::fs::write(layout.user_dir().join("flows.json"), b"old").unwrap();
        layout.adopt().unwrap();
        (tmp, dir, layout)
    }

    #[test]
    fn an_apply_cut_short_after_the_switch_goes_back_to_the_last_good_generation() {
        let (_tmp, dir, layout) = setup();
        let g1 = layout.fresh_generation("g1").unwrap();
        std::fs::write(g1.join("flows.json"), b"new").unwrap();
        let record = DeployRecord {
            number: 1,
            current: Some("g0".into()),
            previous: None,
            applying: Some(Applying { id: "d1".into(), number: 1, generation: "g1".into(), flows_hash: "h".into() }),
            last: None,
        };
        std::fs::create_dir_all(layout.state_file().parent().unwrap()).unwrap();
        record.save(&layout.state_file()).unwrap();
        layout.point_at("g1").unwrap();

        let event = recover(&dir).expect("the rollback is audited");
        assert_eq!(event.kind, AuditKind::DeployRolledBack);
        assert_eq!(event.detail["deployment"], "d1");
        assert_eq!(std::fs::read(layout.user_dir().join("flows.json")).unwrap(), b"old");
        assert!(!g1.exists(), "the interrupted generation is removed");
        let after = DeployRecord::load(&layout.state_file()).unwrap();
        assert_eq!(after.applying, None);
        assert_eq!(after.number, 1, "the number stays taken: the envelope cannot be replayed");
        assert_eq!(after.last.unwrap().state, DeployState::RolledBack);
        assert!(recover(&dir).is_none(), "nothing more to do the second time");
    }

    #[test]
    fn a_user_dir_link_lost_while_adopting_is_restored_not_replaced() {
        let (_tmp, dir, layout) = setup();
        std::fs::remove_file(layout.user_dir()).unwrap();
        // What `StateDir::create` does at start-up must not put an empty folder there.
        dir.create().unwrap();
        assert!(std::fs::symlink_metadata(layout.user_dir()).is_err());
        assert!(recover(&dir).is_none());
        assert_eq!(std::fs::read(layout.user_dir().join("flows.json")).unwrap(), b"old");
    }
}
