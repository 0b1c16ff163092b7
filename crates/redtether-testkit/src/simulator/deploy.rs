//! The simulated deployer: checks each envelope as the agent's deployer does
//! (`redtether_proto::deployment::verify` against the hub key and the last accepted number),
//! reports `applying`, and after the apply delay the outcome the device's behaviour says, with
//! the detail the agent gives (`src/deploy/apply.rs`). It lives as long as the device, across
//! connections: an apply finishes offline too, and its outcome is reported at the next welcome.

use super::device::{Behaviour, Received, Shared};
use redtether_proto::deployment::{Credentials, DeployRefusal, Deployment, Snapshot, flows_hash, verify};
use redtether_proto::wire::{DeployReport, DeployState};
use serde_json::json;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// An apply under way: its outcome is due at `due`.
#[derive(Debug)]
struct Applying {
    due: Instant,
    started: Instant,
    deployment: Deployment,
    hash: String,
    behaviour: Behaviour,
}

#[derive(Debug)]
pub(super) struct Deployer {
    hub_key: Vec<u8>,
    /// The number of the last deployment accepted (taken before it is applied, as the agent
    /// does, so the same envelope is never applied twice).
    last_number: u64,
    /// The last report made: sent again at every welcome.
    last: Option<DeployReport>,
    applying: Option<Applying>,
    /// Envelopes that arrived during an apply: the agent's deployer takes one at a time.
    queue: VecDeque<String>,
}

impl Deployer {
    pub fn new(hub_key: Vec<u8>) -> Deployer {
        Deployer { hub_key, last_number: 0, last: None, applying: None, queue: VecDeque::new() }
    }

    pub fn last_report(&self) -> Option<DeployReport> {
        self.last.clone()
    }

    /// When the apply under way is to finish.
    pub fn due(&self) -> Option<Instant> {
        self.applying.as_ref().map(|a| a.due)
    }

    /// Takes an envelope the hub sent; returns the reports to send now, in order.
    pub fn submit(&mut self, envelope: String, shared: &Shared, delay: impl Fn(u64) -> Duration) -> Vec<DeployReport> {
        if self.applying.is_some() {
            self.queue.push_back(envelope);
            return Vec::new();
        }
        self.handle(&envelope, shared, delay).into_iter().collect()
    }

    /// Finishes the apply under way if it is due; returns its outcome, then whatever the next
    /// queued envelope came to.
    pub fn finish_due(&mut self, now: Instant, shared: &Shared, delay: impl Fn(u64) -> Duration) -> Vec<DeployReport> {
        if self.applying.as_ref().is_none_or(|a| a.due > now) {
            return Vec::new();
        }
        let Some(a) = self.applying.take() else { return Vec::new() };
        let report = outcome(&a, shared);
        self.last = Some(report.clone());
        let mut reports = vec![report];
        while self.applying.is_none()
            && let Some(next) = self.queue.pop_front()
        {
            reports.extend(self.handle(&next, shared, &delay));
        }
        reports
    }

    fn handle(&mut self, envelope: &str, shared: &Shared, delay: impl Fn(u64) -> Duration) -> Option<DeployReport> {
        let now = redtether_proto::time::unix_now();
        match verify(envelope, &self.hub_key, &shared.id, self.last_number, now) {
            Ok(deployment) => Some(self.accept(deployment, shared, delay)),
            // The hub sent again what was already handled (its copy of the outcome was lost
            // with a connection): answer with the outcome, change nothing.
            Err(DeployRefusal::Replayed { number, last, id })
                if number == last && self.last.as_ref().is_some_and(|r| r.id == id) =>
            {
                self.last.clone()
            }
            Err(refusal) => self.refused(envelope, &refusal),
        }
    }

    fn accept(&mut self, deployment: Deployment, shared: &Shared, delay: impl Fn(u64) -> Duration) -> DeployReport {
        let hash = flows_hash(&deployment.snapshot.flows);
        self.last_number = deployment.number;
        let behaviour = {
            let mut state = shared.lock();
            let received = Received { id: deployment.id.clone(), number: deployment.number, flows_hash: hash.clone() };
            state.received.push(received);
            state.behaviour
        };
        let report = DeployReport {
            id: deployment.id.clone(),
            state: DeployState::Applying,
            detail: json!({ "flows_hash": hash }),
        };
        self.last = Some(report.clone());
        // A hung apply is never finished: nothing is kept for it, so later deployments still go.
        if behaviour != Behaviour::Hang {
            let started = Instant::now();
            let due = started + delay(deployment.number);
            self.applying = Some(Applying { due, started, deployment, hash, behaviour });
        }
        report
    }

    /// A refused envelope, reported as the agent does: `failed` with the reason and message,
    /// under the deployment's id only if the signature held (a forgery must not mark the hub's
    /// real deployment failed; then nothing is reported).
    fn refused(&mut self, envelope: &str, refusal: &DeployRefusal) -> Option<DeployReport> {
        let signed = !matches!(refusal, DeployRefusal::Malformed | DeployRefusal::BadSignature);
        let id = match refusal {
            DeployRefusal::Replayed { id, .. } => Some(id.clone()),
            _ => redtether_proto::deployment::claimed_id(envelope),
        };
        let detail = json!({ "reason": refusal.reason(), "message": refusal.to_string() });
        let report = DeployReport { id: id.filter(|_| signed)?, state: DeployState::Failed, detail };
        self.last = Some(report.clone());
        Some(report)
    }
}

/// The outcome of a finished apply, and what the device runs after it.
fn outcome(a: &Applying, shared: &Shared) -> DeployReport {
    let (id, hash) = (a.deployment.id.clone(), a.hash.clone());
    match a.behaviour {
        Behaviour::Fail => DeployReport {
            id,
            state: DeployState::Failed,
            // The agent reports `failed` when the previous generation could not be restored.
            detail: json!({
                "flows_hash": hash, "stage": "start", "reason": "Node-RED did not stay up (simulated)",
                "restore_error": "the previous generation did not start either (simulated)",
            }),
        },
        Behaviour::RollBack => DeployReport {
            id,
            state: DeployState::RolledBack,
            detail: json!({
                "flows_hash": hash, "stage": "health",
                "reason": "Node-RED did not answer its health check (simulated)",
            }),
        },
        // (Hang is never finished; Offline is not a deployment behaviour.)
        Behaviour::Apply | Behaviour::Hang | Behaviour::Offline => {
            shared.lock().current = running(&a.deployment.snapshot);
            let generation = format!("g{}", a.deployment.number);
            let seconds = a.started.elapsed().as_secs_f64();
            DeployReport {
                id,
                state: DeployState::Applied,
                detail: json!({ "flows_hash": hash, "generation": generation, "seconds": seconds }),
            }
        }
    }
}

/// What a device runs after applying `snapshot`, as it would capture it: sealed credentials
/// are opened on the device and written as Node-RED's own encrypted file, which a simulated
/// device has not got, so it shows none.
fn running(snapshot: &Snapshot) -> Snapshot {
    let credentials = match &snapshot.credentials {
        Some(Credentials::NodeRed(file)) => Some(Credentials::NodeRed(file.clone())),
        Some(Credentials::Sealed(_) | Credentials::Portable(_)) | None => None,
    };
    Snapshot { credentials, ..snapshot.clone() }
}
