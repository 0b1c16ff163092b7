//! A rollout as a state machine: what it knows (per device: its stage, where it stands, the
//! snapshot it ran before), and what it decides from what the hub observes. No I/O and no
//! clock: the driver passes the time, what it sees of each device, and ids for new
//! deployments, and carries out the [`Action`]s that come back.
//!
//! The whole [`Rollout`] is the durable record: the driver stores it before it carries out a
//! `Deploy`, so a deployment the machine decided on is made at most once, even across a crash
//! (after one, the driver finds the entry `deploying` with its deployment's id and only makes
//! it if the store does not have it).

use super::plan::{OnHalt, Plan};
use redtether_proto::audit::HubEventKind;
use redtether_proto::wire::DeployState;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Paused,
    /// Stopped by itself: too many devices failed.
    Halted,
    Completed,
    /// Stopped by an operator, where it stood.
    Aborted,
}

impl State {
    /// No more devices will be moved forward.
    pub fn is_over(self) -> bool {
        matches!(self, State::Halted | State::Completed | State::Aborted)
    }
}

/// Where one device of the rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeviceState {
    /// Its stage has not come (or it is offline and the plan waits for it).
    Waiting,
    /// The hub is asking it what it runs now, to have something to roll it back to.
    Capturing {
        since_ms: u64,
    },
    /// Its deployment is made and on its way or being applied.
    Deploying {
        deployment: String,
        since_ms: u64,
    },
    /// It applied the new flows.
    Applied {
        deployment: String,
        at_ms: u64,
    },
    /// It did not apply them (refused, rolled back by the device, timed out), or turned
    /// unhealthy after it did (`runs_new`: a halt rolls it back too).
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        runs_new: bool,
    },
    /// Left out: offline when its stage came, and the plan skips offline devices.
    Skipped {
        reason: String,
    },
    /// Getting the snapshot it ran before, after a halt.
    Reverting {
        deployment: String,
        since_ms: u64,
    },
    Reverted {
        deployment: String,
    },
    RevertFailed {
        reason: String,
    },
}

impl DeviceState {
    pub fn name(&self) -> &'static str {
        match self {
            DeviceState::Waiting => "waiting",
            DeviceState::Capturing { .. } => "capturing",
            DeviceState::Deploying { .. } => "deploying",
            DeviceState::Applied { .. } => "applied",
            DeviceState::Failed { .. } => "failed",
            DeviceState::Skipped { .. } => "skipped",
            DeviceState::Reverting { .. } => "reverting",
            DeviceState::Reverted { .. } => "reverted",
            DeviceState::RevertFailed { .. } => "revert_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub device: String,
    /// Its stage: 0 is the first (the canary when the plan has one).
    pub stage: usize,
    #[serde(flatten)]
    pub state: DeviceState,
    /// The snapshot it ran before the rollout moved it (kept at the hub).
    pub previous: Option<String>,
    /// The rollout's deployment to it, once made.
    pub forward: Option<String>,
}

/// A rollout: the durable record and the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub group: String,
    /// The snapshot every device gets (kept at the hub, whichever device it came from).
    pub snapshot: String,
    pub flows_hash: String,
    pub plan: Plan,
    pub state: State,
    /// The stage being rolled out (or the last one, once over).
    pub stage: usize,
    pub stages: usize,
    /// When the current stage began, Unix milliseconds.
    pub stage_started_ms: u64,
    /// Why it halted.
    pub reasons: Vec<String>,
    pub devices: Vec<Entry>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Bumped by every change, so whoever keeps the record knows to store it again.
    #[serde(default)]
    pub revision: u64,
    pub operator: String,
    /// The pipeline whose promotion started it.
    pub pipeline: Option<String>,
}

/// What the hub sees of one device, for the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub online: bool,
    /// Its Node-RED runs and answers (or the device has not said otherwise).
    pub healthy: bool,
    /// The state of the deployment the entry is waiting on, when the store has it.
    pub deployment: Option<(DeployState, String)>,
}

/// What the driver is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the device what it runs now, keep it as a snapshot, and call
    /// [`Rollout::on_captured`].
    Capture { device: String },
    /// Make deployment `deployment` of snapshot `snapshot` for `device`, unless it exists.
    Deploy { device: String, deployment: String, snapshot: String },
    /// Record this hub event about the rollout's group.
    Record { kind: HubEventKind, detail: serde_json::Value },
}

impl Rollout {
    /// A new rollout of `snapshot` to `devices` (in the order given: the first are the
    /// canaries).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        group: String,
        snapshot: String,
        flows_hash: String,
        plan: Plan,
        devices: Vec<String>,
        operator: String,
        pipeline: Option<String>,
        now_ms: u64,
    ) -> Rollout {
        let stages = plan.stages(devices.len());
        let mut entries = Vec::with_capacity(devices.len());
        for (stage, range) in stages.iter().enumerate() {
            for device in &devices[range.clone()] {
                entries.push(Entry {
                    device: device.clone(),
                    stage,
                    state: DeviceState::Waiting,
                    previous: None,
                    forward: None,
                });
            }
        }
        Rollout {
            id,
            group,
            snapshot,
            flows_hash,
            plan,
            state: State::Running,
            stage: 0,
            stages: stages.len(),
            stage_started_ms: now_ms,
            reasons: Vec::new(),
            devices: entries,
            created_ms: now_ms,
            updated_ms: now_ms,
            revision: 0,
            operator,
            pipeline,
        }
    }

    /// The event that says it started.
    pub fn started_event(&self) -> Action {
        Action::Record {
            kind: HubEventKind::RolloutStarted,
            detail: json!({
                "rollout": self.id,
                "snapshot": self.snapshot,
                "flows_hash": self.flows_hash,
                "plan": self.plan.to_json(),
                "devices": self.devices.len(),
                "stages": self.stages,
                "pipeline": self.pipeline,
                "operator": self.operator,
            }),
        }
    }

    /// Whether the driver still has something to watch.
    pub fn is_active(&self) -> bool {
        !self.state.is_over()
            || self.devices.iter().any(|e| {
                matches!(
                    e.state,
                    DeviceState::Reverting { .. } | DeviceState::Deploying { .. } | DeviceState::Capturing { .. }
                )
            })
    }

    /// After a hub restart: a capture that was under way lost its answer; ask again.
    pub fn on_restart(&mut self) {
        for e in &mut self.devices {
            if matches!(e.state, DeviceState::Capturing { .. }) {
                e.state = DeviceState::Waiting;
            }
        }
    }

    pub fn pause(&mut self, now_ms: u64) -> Option<Action> {
        (self.state == State::Running).then(|| {
            self.state = State::Paused;
            self.touch(now_ms);
            self.event(HubEventKind::RolloutPaused, json!({}))
        })
    }

    pub fn resume(&mut self, now_ms: u64) -> Option<Action> {
        (self.state == State::Paused).then(|| {
            self.state = State::Running;
            self.touch(now_ms);
            self.event(HubEventKind::RolloutResumed, json!({}))
        })
    }

    /// Stops where it stands: no device is moved further, none is rolled back (deployments
    /// already made still reach their devices).
    pub fn abort(&mut self, now_ms: u64) -> Option<Action> {
        (!self.state.is_over()).then(|| {
            self.state = State::Aborted;
            self.touch(now_ms);
            for e in &mut self.devices {
                if matches!(e.state, DeviceState::Capturing { .. }) {
                    e.state = DeviceState::Waiting;
                }
            }
            self.event(HubEventKind::RolloutAborted, json!({ "counts": self.counts() }))
        })
    }

    /// The answer to [`Action::Capture`]: the snapshot the device ran (now kept at the hub), or
    /// none (it went offline, or could not answer: it waits, and is asked again). Returns the
    /// deployment to make, if the rollout still wants it.
    pub fn on_captured(
        &mut self,
        device: &str,
        previous: Option<String>,
        now_ms: u64,
        next_id: &mut dyn FnMut() -> String,
    ) -> Vec<Action> {
        let running = self.state == State::Running;
        let snapshot = self.snapshot.clone();
        let Some(at) = self.devices.iter().position(|e| e.device == device) else { return Vec::new() };
        if !matches!(self.devices[at].state, DeviceState::Capturing { .. }) {
            return Vec::new();
        }
        self.touch(now_ms);
        let e = &mut self.devices[at];
        e.state = DeviceState::Waiting;
        let Some(previous) = previous else { return Vec::new() };
        e.previous = Some(previous);
        // Paused or aborted meanwhile: it waits (and is asked again when resumed).
        if !running {
            return Vec::new();
        }
        let deployment = next_id();
        e.forward = Some(deployment.clone());
        e.state = DeviceState::Deploying { deployment: deployment.clone(), since_ms: now_ms };
        vec![Action::Deploy { device: device.to_string(), deployment, snapshot }]
    }

    fn touch(&mut self, now_ms: u64) {
        self.updated_ms = now_ms;
        self.revision += 1;
    }

    fn event(&self, kind: HubEventKind, mut detail: serde_json::Value) -> Action {
        detail["rollout"] = json!(self.id);
        Action::Record { kind, detail }
    }

    /// How many devices stand in each state.
    pub fn counts(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut counts = serde_json::Map::new();
        for e in &self.devices {
            let n = counts.entry(e.state.name()).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
        counts
    }

    fn failed(&self) -> usize {
        self.devices.iter().filter(|e| matches!(e.state, DeviceState::Failed { .. })).count()
    }

    /// Takes in what the hub observes now and decides what to do next.
    pub fn step(
        &mut self,
        now_ms: u64,
        observe: &dyn Fn(&Entry) -> Observed,
        next_id: &mut dyn FnMut() -> String,
    ) -> Vec<Action> {
        let before = (self.state, self.stage, self.devices.clone());
        let mut actions = Vec::new();
        self.follow_devices(now_ms, observe, &mut actions);
        if matches!(self.state, State::Running | State::Paused) && self.failed() > self.plan.max_failed {
            self.halt(now_ms, next_id, &mut actions);
        }
        if self.state == State::Running {
            self.advance(now_ms, observe, &mut actions);
        }
        if (self.state, self.stage, &self.devices) != (before.0, before.1, &before.2) {
            self.touch(now_ms);
        }
        actions
    }

    /// Moves each device's entry along with its deployment's state, its health and the clock.
    fn follow_devices(&mut self, now_ms: u64, observe: &dyn Fn(&Entry) -> Observed, actions: &mut Vec<Action>) {
        let timeout_ms = self.plan.timeout_secs.saturating_mul(1000);
        let (current, snapshot) = (self.stage, self.snapshot.clone());
        for e in &mut self.devices {
            let seen = match e.state {
                // An earlier stage's applied devices are done with: nothing to look at.
                DeviceState::Applied { .. } if e.stage != current => continue,
                DeviceState::Deploying { .. } | DeviceState::Applied { .. } | DeviceState::Reverting { .. } => {
                    observe(e)
                }
                DeviceState::Capturing { since_ms } => {
                    // A capture that never answered (the request is bounded; this is the
                    // backstop) is asked again.
                    if now_ms.saturating_sub(since_ms) > timeout_ms {
                        e.state = DeviceState::Waiting;
                    }
                    continue;
                }
                _ => continue,
            };
            match (&e.state, &seen.deployment) {
                (DeviceState::Deploying { deployment, since_ms }, state) => {
                    let (deployment, since_ms) = (deployment.clone(), *since_ms);
                    match state {
                        Some((DeployState::Applied, _)) => e.state = DeviceState::Applied { deployment, at_ms: now_ms },
                        Some((DeployState::RolledBack, detail)) => {
                            e.state = DeviceState::Failed {
                                reason: format!("rolled back by the device: {detail}"),
                                runs_new: false,
                            }
                        }
                        Some((DeployState::Failed, detail)) => {
                            e.state = DeviceState::Failed { reason: format!("failed: {detail}"), runs_new: false }
                        }
                        // Made durable in the rollout but not in the store (a crash between
                        // the two): make it now.
                        None => actions.push(Action::Deploy {
                            device: e.device.clone(),
                            deployment,
                            snapshot: snapshot.clone(),
                        }),
                        Some(_) if now_ms.saturating_sub(since_ms) > timeout_ms => {
                            e.state = DeviceState::Failed {
                                reason: format!("not applied within {}s", timeout_ms / 1000),
                                runs_new: false,
                            }
                        }
                        Some(_) => {}
                    }
                }
                (DeviceState::Applied { .. }, _) if e.stage == current && seen.online && !seen.healthy => {
                    e.state = DeviceState::Failed {
                        reason: "Node-RED unhealthy after the deployment".into(),
                        runs_new: true,
                    };
                }
                (DeviceState::Reverting { deployment, since_ms }, state) => {
                    let (deployment, since_ms) = (deployment.clone(), *since_ms);
                    match state {
                        Some((DeployState::Applied, _)) => e.state = DeviceState::Reverted { deployment },
                        Some((DeployState::RolledBack | DeployState::Failed, detail)) => {
                            e.state = DeviceState::RevertFailed { reason: detail.clone() }
                        }
                        None => {
                            if let Some(previous) = e.previous.clone() {
                                actions.push(Action::Deploy {
                                    device: e.device.clone(),
                                    deployment,
                                    snapshot: previous,
                                })
                            }
                        }
                        Some(_) if now_ms.saturating_sub(since_ms) > timeout_ms => {
                            e.state = DeviceState::RevertFailed { reason: "not applied in time".into() }
                        }
                        Some(_) => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Stops the rollout for its failures and, by the plan, rolls back what it moved.
    fn halt(&mut self, now_ms: u64, next_id: &mut dyn FnMut() -> String, actions: &mut Vec<Action>) {
        self.state = State::Halted;
        self.reasons = self
            .devices
            .iter()
            .filter_map(|e| match &e.state {
                DeviceState::Failed { reason, .. } => Some(format!("{}: {reason}", e.device)),
                _ => None,
            })
            .collect();
        let mut reverting = Vec::new();
        for e in &mut self.devices {
            match &e.state {
                DeviceState::Capturing { .. } => e.state = DeviceState::Waiting,
                DeviceState::Applied { .. }
                | DeviceState::Deploying { .. }
                | DeviceState::Failed { runs_new: true, .. }
                    if self.plan.on_halt == OnHalt::Rollback =>
                {
                    let Some(previous) = e.previous.clone() else { continue };
                    let deployment = next_id();
                    e.state = DeviceState::Reverting { deployment: deployment.clone(), since_ms: now_ms };
                    reverting.push(e.device.clone());
                    actions.push(Action::Deploy { device: e.device.clone(), deployment, snapshot: previous });
                }
                _ => {}
            }
        }
        let detail = json!({
            "reasons": self.reasons,
            "on_halt": self.plan.on_halt,
            "reverting": reverting,
            "max_failed": self.plan.max_failed,
        });
        // Before the deployments it decided on, so the trail says why they were made.
        actions.insert(0, self.event(HubEventKind::RolloutHalted, detail));
    }

    /// Starts the current stage's devices, and when the stage is done (every device applied and
    /// healthy for `wait`, failed or skipped), goes on to the next.
    fn advance(&mut self, now_ms: u64, observe: &dyn Fn(&Entry) -> Observed, actions: &mut Vec<Action>) {
        let wait_ms = self.plan.wait_secs.saturating_mul(1000);
        loop {
            let stage = self.stage;
            let mut done = true;
            for e in self.devices.iter_mut().filter(|e| e.stage == stage) {
                match &e.state {
                    DeviceState::Waiting => {
                        let seen = observe(e);
                        if seen.online {
                            e.state = DeviceState::Capturing { since_ms: now_ms };
                            actions.push(Action::Capture { device: e.device.clone() });
                        } else if self.plan.offline == super::plan::Offline::Skip {
                            e.state = DeviceState::Skipped { reason: "offline".into() };
                            continue;
                        }
                        done = false;
                    }
                    DeviceState::Applied { at_ms, .. } if now_ms.saturating_sub(*at_ms) >= wait_ms => {}
                    DeviceState::Failed { .. } | DeviceState::Skipped { .. } => {}
                    _ => done = false,
                }
            }
            if !done {
                return;
            }
            let in_stage =
                |name: &str| self.devices.iter().filter(|e| e.stage == stage && e.state.name() == name).count();
            let tally = json!({
                "wave": stage,
                "devices": self.devices.iter().filter(|e| e.stage == stage).count(),
                "applied": in_stage("applied"),
                "failed": in_stage("failed"),
                "skipped": in_stage("skipped"),
            });
            if stage + 1 >= self.stages {
                self.state = State::Completed;
                let counts = self.counts();
                actions.push(self.event(
                    HubEventKind::RolloutCompleted,
                    json!({ "applied": counts.get("applied"), "failed": counts.get("failed"), "skipped": counts.get("skipped"), "last_wave": tally }),
                ));
                return;
            }
            self.stage += 1;
            self.stage_started_ms = now_ms;
            let mut detail = tally;
            detail["next"] = json!(self.stage);
            actions.push(self.event(HubEventKind::RolloutWave, detail));
        }
    }
}

#[cfg(test)]
mod tests;
