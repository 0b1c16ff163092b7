//! The rollout driver: one task for every active rollout. Each turn (a quarter second, at once
//! when an operator changed something, or just after a device reported a deployment's outcome)
//! it observes each in-flight device (its deployment's state in the store, whether it is online
//! and its Node-RED healthy), steps the rollout's machine, and when the rollout changed: records its events, stores it durably, and only then makes the
//! deployments it decided on, so a crash never makes one twice. Snapshots of devices about to
//! move are taken on their own tasks (bounded), and their answers fed back to the machine.

use super::machine::{Action, Entry, Observed, Rollout, State};
use crate::deploy_api::{DeployError, NewDeployment, credentials_for_target, make_deployment};
use crate::registry::Registry;
use crate::store::{HubStore, SnapshotRecord, StoreError};
use redtether_proto::audit::{Actor, HubEventKind};
use redtether_proto::deployment::Snapshot;
use redtether_proto::time::unix_now;
use redtether_proto::wire::{Command as DeviceCommand, NodeRedState};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TURN: Duration = Duration::from_millis(250);
/// How long a turn waits after a device reported an outcome, for the others of its stage.
const GATHER: Duration = Duration::from_millis(20);
/// Devices asked for their snapshot at once.
const CAPTURES_AT_ONCE: usize = 64;
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a rollout's deployments stay valid (the plan's timeout decides failure earlier).
const DEPLOYMENT_EXPIRY_SECS: u64 = 7 * 86400;

/// An operator's command to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Abort,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no rollout with this id")]
    Unknown,
    /// It is not in a state the command applies to (resuming a running rollout).
    #[error("the rollout is {0:?}")]
    NotApplicable(State),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a device's snapshot could not be taken before moving it.
#[derive(Debug, thiserror::Error)]
enum CaptureError {
    #[error("the device's snapshot is malformed: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("the device could not take a snapshot: {0}")]
    Refused(serde_json::Value),
    #[error(transparent)]
    Command(#[from] crate::registry::CommandError),
    #[error("the snapshot could not be kept: {0}")]
    Store(#[from] StoreError),
}

struct Captured {
    rollout: String,
    device: String,
    /// The snapshot kept at the hub.
    result: Result<String, CaptureError>,
}

/// The hub's rollouts: the active ones in memory (stored on every change), and the driver.
pub struct Rollouts {
    store: Arc<HubStore>,
    registry: Registry,
    signer: Arc<ring::signature::Ed25519KeyPair>,
    /// Opens portable snapshot credentials, to seal them anew for each device.
    credentials_key: Arc<crate::keys::CredentialsKey>,
    active: Mutex<BTreeMap<String, Rollout>>,
    wake: Notify,
    captured_tx: mpsc::UnboundedSender<Captured>,
    captured_rx: Mutex<Option<mpsc::UnboundedReceiver<Captured>>>,
    captures: Arc<Semaphore>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Rollouts {
    /// Loads the rollouts a previous run left active.
    pub fn load(
        store: Arc<HubStore>,
        registry: Registry,
        signer: Arc<ring::signature::Ed25519KeyPair>,
        credentials_key: Arc<crate::keys::CredentialsKey>,
    ) -> Result<Rollouts, StoreError> {
        let mut active = BTreeMap::new();
        for mut rollout in store.rollouts()? {
            if rollout.is_active() {
                rollout.on_restart();
                tracing::info!(rollout = %rollout.id, group = %rollout.group, state = ?rollout.state, "resuming a rollout");
                active.insert(rollout.id.clone(), rollout);
            }
        }
        let (captured_tx, captured_rx) = mpsc::unbounded_channel();
        Ok(Rollouts {
            store,
            registry,
            signer,
            credentials_key,
            active: Mutex::new(active),
            wake: Notify::new(),
            captured_tx,
            captured_rx: Mutex::new(Some(captured_rx)),
            captures: Arc::new(Semaphore::new(CAPTURES_AT_ONCE)),
        })
    }

    fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Rollout>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rollout, as it stands now.
    pub fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        if let Some(r) = self.active().get(id) {
            return Ok(Some(r.clone()));
        }
        self.store.rollout(id)
    }

    /// The group's rollout that is running or paused, if any.
    pub fn active_for_group(&self, group: &str) -> Option<String> {
        self.active().values().find(|r| r.group == group && !r.state.is_over()).map(|r| r.id.clone())
    }

    /// Stores a new rollout, records that it started, and lets the driver take it.
    pub fn start(&self, rollout: Rollout) -> Result<(), StoreError> {
        let Action::Record { kind, detail } = rollout.started_event() else { unreachable!("an event") };
        self.store.record(kind, Actor::user(&rollout.operator), &format!("group:{}", rollout.group), detail)?;
        self.store.put_rollout(&rollout)?;
        self.active().insert(rollout.id.clone(), rollout);
        self.wake.notify_one();
        Ok(())
    }

    /// Pauses, resumes or aborts a rollout, for `operator`.
    pub fn command(&self, id: &str, command: Command, operator: &str) -> Result<Rollout, CommandError> {
        let mut active = self.active();
        let Some(rollout) = active.get_mut(id) else {
            return match self.store.rollout(id)? {
                Some(r) => Err(CommandError::NotApplicable(r.state)),
                None => Err(CommandError::Unknown),
            };
        };
        let now = now_ms();
        let event = match command {
            Command::Pause => rollout.pause(now),
            Command::Resume => rollout.resume(now),
            Command::Abort => rollout.abort(now),
        };
        let Some(Action::Record { kind, mut detail }) = event else {
            return Err(CommandError::NotApplicable(rollout.state));
        };
        detail["operator"] = json!(operator);
        self.store.record(kind, Actor::user(operator), &format!("group:{}", rollout.group), detail)?;
        self.store.put_rollout(rollout)?;
        let result = rollout.clone();
        drop(active);
        self.wake.notify_one();
        Ok(result)
    }

    /// Drives every active rollout until `cancel`.
    pub async fn run(self: Arc<Self>, tasks: TaskTracker, cancel: CancellationToken) {
        let Some(mut captured) = self.captured_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            tracing::error!("the rollout driver runs once");
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TURN) => {}
                // Outcomes come in bursts too: a moment to gather more before the turn.
                _ = self.registry.deployment_outcome() => tokio::time::sleep(GATHER).await,
                Some(answer) = captured.recv() => {
                    // Answers come in bursts (a wave's devices answer together): one store
                    // write per rollout for all of them, not one each.
                    let mut answers = vec![answer];
                    while let Ok(more) = captured.try_recv() {
                        answers.push(more);
                    }
                    self.on_captured(answers, &tasks, &cancel).await;
                }
            }
            let this = Arc::clone(&self);
            let decided = tokio::task::spawn_blocking(move || this.turn()).await.unwrap_or_default();
            self.carry_out(decided, &tasks, &cancel).await;
        }
    }

    /// Steps every active rollout once; returns the deployments and captures to make, by
    /// rollout. Rollouts that changed are stored (their events recorded first).
    fn turn(&self) -> Vec<(Rollout, Vec<Action>)> {
        let now = now_ms();
        let online = self.registry.online_ids();
        let mut decided = Vec::new();
        let mut active = self.active();
        let mut finished = Vec::new();
        for rollout in active.values_mut() {
            let before = rollout.revision;
            let observe = |e: &Entry| self.observe(e, &online);
            let actions = rollout.step(now, &observe, &mut new_id);
            if rollout.revision != before {
                let actions = self.keep(rollout, actions);
                decided.push((rollout.clone(), actions));
            }
            if !rollout.is_active() {
                finished.push(rollout.id.clone());
            }
        }
        for id in finished {
            active.remove(&id);
        }
        decided
    }

    /// Records the rollout's events and stores it; returns the other actions (none when it
    /// could not be stored: nothing is made that the store does not know was decided).
    fn keep(&self, rollout: &Rollout, actions: Vec<Action>) -> Vec<Action> {
        let target = format!("group:{}", rollout.group);
        let mut rest = Vec::new();
        for action in actions {
            match action {
                Action::Record { kind, detail } => {
                    if let Err(e) = self.store.record(kind, Actor::System, &target, detail) {
                        tracing::error!(rollout = %rollout.id, %kind, error = %e, "rollout event not recorded");
                    }
                    log_event(rollout, kind);
                }
                other => rest.push(other),
            }
        }
        match self.store.put_rollout(rollout) {
            Ok(()) => rest,
            Err(e) => {
                tracing::error!(rollout = %rollout.id, error = %e, "cannot store the rollout; its deployments wait");
                Vec::new()
            }
        }
    }

    fn observe(&self, e: &Entry, online: &std::collections::BTreeSet<String>) -> Observed {
        use super::machine::DeviceState as D;
        let deployment = match &e.state {
            D::Deploying { deployment, .. } | D::Applied { deployment, .. } | D::Reverting { deployment, .. } => {
                match self.store.deployment(&e.device, deployment) {
                    Ok(d) => d.map(|d| (d.state, d.detail.to_string())),
                    // Unknown is not "missing": a failing store must not make it again.
                    Err(err) => {
                        tracing::warn!(device = %e.device, error = %err, "rollout: cannot read a deployment");
                        Some((redtether_proto::wire::DeployState::Pending, String::new()))
                    }
                }
            }
            _ => None,
        };
        let healthy = match self.store.device(&e.device) {
            Ok(Some(d)) => {
                d.status.is_none_or(|s| matches!(s.node_red.state, NodeRedState::Running | NodeRedState::Starting))
            }
            _ => true,
        };
        Observed { online: online.contains(&e.device), healthy, deployment }
    }

    async fn carry_out(
        self: &Arc<Self>,
        decided: Vec<(Rollout, Vec<Action>)>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        for (rollout, actions) in decided {
            for action in actions {
                match action {
                    Action::Capture { device } => self.capture(&rollout, device, tasks, cancel),
                    Action::Deploy { device, deployment, snapshot } => {
                        let this = Arc::clone(self);
                        let (id, operator) = (rollout.id.clone(), rollout.operator.clone());
                        let _ = tokio::task::spawn_blocking(move || {
                            this.deploy(&id, &operator, &device, deployment, &snapshot)
                        })
                        .await;
                    }
                    Action::Record { .. } => {}
                }
            }
        }
    }

    /// Makes deployment `id` of snapshot `snapshot` for `device`, unless the store has it.
    fn deploy(&self, rollout: &str, operator: &str, device: &str, id: String, snapshot: &str) {
        if matches!(self.store.deployment(device, &id), Ok(Some(_))) {
            return;
        }
        let fail = |reason: String| {
            tracing::warn!(%rollout, %device, %reason, "rollout deployment not made");
            let now = unix_now();
            // A record the machine sees as failed, so the rollout counts it.
            let failed = self.store.create_deployment(
                device,
                Box::new(|number| crate::store::DeploymentRecord {
                    id: id.clone(),
                    device: device.to_string(),
                    number,
                    state: redtether_proto::wire::DeployState::Failed,
                    detail: json!({ "reason": reason }),
                    flows_hash: String::new(),
                    operator: operator.to_string(),
                    created: now,
                    updated: now,
                    expires: now,
                    snapshot: Some(snapshot.to_string()),
                    envelope: String::new(),
                }),
            );
            if let Err(e) = failed {
                tracing::error!(%rollout, %device, error = %e, "cannot record the failed deployment");
            }
        };
        let record = match self.store.snapshot_by_id(snapshot) {
            Ok(Some(r)) => r,
            Ok(None) => return fail(format!("snapshot {snapshot} is gone")),
            Err(e) => {
                return tracing::error!(%rollout, %device, error = %e, "cannot read the snapshot; retried next turn");
            }
        };
        let device_key = match self.store.device(device) {
            Ok(d) => d.and_then(|d| d.device_key),
            Err(e) => {
                return tracing::error!(%rollout, %device, error = %e, "cannot read the device; retried next turn");
            }
        };
        let credentials = match credentials_for_target(&self.credentials_key, &record, device, device_key.as_deref()) {
            Ok(credentials) => credentials,
            Err((code, detail)) => return fail(format!("{code}: {detail}")),
        };
        let made = make_deployment(
            &*self.store,
            &self.signer,
            &self.registry,
            NewDeployment {
                device,
                id: id.clone(),
                snapshot: Snapshot { credentials, ..record.snapshot },
                from_snapshot: Some(snapshot.to_string()),
                operator,
                expires_in: DEPLOYMENT_EXPIRY_SECS,
                rollout: Some(rollout),
            },
        );
        match made {
            Ok(_) => {}
            Err(DeployError::Store(e)) => {
                tracing::error!(%rollout, %device, error = %e, "rollout deployment not stored; retried next turn")
            }
            Err(e) => fail(e.to_string()),
        }
    }

    /// Asks `device` what it runs now and keeps it as a snapshot, on its own task.
    fn capture(self: &Arc<Self>, rollout: &Rollout, device: String, tasks: &TaskTracker, cancel: &CancellationToken) {
        let (this, id, operator, cancel) =
            (Arc::clone(self), rollout.id.clone(), rollout.operator.clone(), cancel.clone());
        tasks.spawn(async move {
            let Ok(_permit) = Arc::clone(&this.captures).acquire_owned().await else { return };
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = this.registry.send(&device, DeviceCommand::Snapshot, CAPTURE_TIMEOUT) => r,
            };
            let result = match result {
                Ok((true, detail)) => match serde_json::from_value::<Snapshot>(detail) {
                    Ok(snapshot) => this.keep_snapshot(&id, &operator, &device, snapshot),
                    Err(e) => Err(CaptureError::Malformed(e)),
                },
                Ok((false, detail)) => Err(CaptureError::Refused(detail)),
                Err(e) => Err(e.into()),
            };
            let _ = this.captured_tx.send(Captured { rollout: id, device, result });
        });
    }

    fn keep_snapshot(
        &self,
        rollout: &str,
        operator: &str,
        device: &str,
        snapshot: Snapshot,
    ) -> Result<String, CaptureError> {
        let record = SnapshotRecord {
            id: new_id(),
            device: device.to_string(),
            created: unix_now(),
            operator: operator.to_string(),
            snapshot,
        };
        self.store.add_snapshot(&record)?;
        let detail = json!({ "snapshot": record.id, "operator": operator, "rollout": rollout, "before_rollout": true });
        let _ = self.store.record_event(device, HubEventKind::SnapshotTaken, detail);
        Ok(record.id)
    }

    async fn on_captured(self: &Arc<Self>, answers: Vec<Captured>, tasks: &TaskTracker, cancel: &CancellationToken) {
        let mut by_rollout: BTreeMap<String, Vec<Captured>> = BTreeMap::new();
        for answer in answers {
            by_rollout.entry(answer.rollout.clone()).or_default().push(answer);
        }
        let mut decided = Vec::new();
        {
            let mut active = self.active();
            for (id, answers) in by_rollout {
                let Some(rollout) = active.get_mut(&id) else { continue };
                let mut actions = Vec::new();
                for answer in answers {
                    let kept = match answer.result {
                        Ok(snapshot) => Some(snapshot),
                        Err(e) => {
                            tracing::info!(rollout = %id, device = %answer.device, error = %e, "no snapshot before moving the device; it waits");
                            None
                        }
                    };
                    actions.extend(rollout.on_captured(&answer.device, kept, now_ms(), &mut new_id));
                }
                let actions = self.keep(rollout, actions);
                decided.push((rollout.clone(), actions));
            }
        }
        self.carry_out(decided, tasks, cancel).await;
    }
}

fn log_event(rollout: &Rollout, kind: HubEventKind) {
    tracing::info!(rollout = %rollout.id, group = %rollout.group, event = %kind, stage = rollout.stage, "rollout");
}
