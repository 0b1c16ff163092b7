//! One simulated device as tests see it: [`SimDevice`], a cheap handle onto the state its task
//! shares (what it runs, what it was sent, whether it is connected), and its [`Behaviour`].

use redtether_proto::deployment::Snapshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What a device does with the next deployment it accepts, or whether it is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Report `applied` and run the deployment's snapshot from then on.
    #[default]
    Apply,
    /// Report `failed`; keep running what it ran.
    Fail,
    /// Report `rolled_back`, as the agent does when the new flows fail their health check.
    RollBack,
    /// Report `applying` and never finish.
    Hang,
    /// Drop the connection and stay away until set back online (any other behaviour, or
    /// [`SimDevice::go_online`]); the deployment behaviour from before is kept.
    Offline,
}

/// One deployment as it arrived (accepted: signed for this device, newer than the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub number: u64,
    pub flows_hash: String,
}

/// What the device task and its handles share. Locked briefly, never across an await.
#[derive(Debug)]
pub(super) struct DeviceState {
    /// For deployments; `Offline` is kept apart in [`Shared::online`].
    pub behaviour: Behaviour,
    pub current: Snapshot,
    pub received: Vec<Received>,
    pub policies: Vec<u64>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub id: String,
    pub state: Mutex<DeviceState>,
    /// Whether the device should be online; the task watches it.
    pub online: watch::Sender<bool>,
    /// Whether a control stream is welcomed by the hub now.
    pub connected: AtomicBool,
}

impl Shared {
    pub fn new(id: String, current: Snapshot) -> Shared {
        let state = DeviceState { behaviour: Behaviour::Apply, current, received: Vec::new(), policies: Vec::new() };
        Shared { id, state: Mutex::new(state), online: watch::channel(true).0, connected: AtomicBool::new(false) }
    }

    /// The state, even after a panic elsewhere poisoned the lock (the data stays consistent:
    /// every change is one assignment or push).
    pub fn lock(&self) -> MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A handle on one simulated device (clone freely).
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub(super) shared: Arc<Shared>,
}

impl SimDevice {
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// What the device does from now on; `Offline` disconnects it, anything else brings it back
    /// online with that deployment behaviour.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        if behaviour == Behaviour::Offline {
            return self.go_offline();
        }
        self.shared.lock().behaviour = behaviour;
        self.go_online();
    }

    /// `Offline` while offline, else the deployment behaviour.
    pub fn behaviour(&self) -> Behaviour {
        if *self.shared.online.borrow() { self.shared.lock().behaviour } else { Behaviour::Offline }
    }

    /// Closes the connection and keeps the device away until [`SimDevice::go_online`].
    pub fn go_offline(&self) {
        self.shared.online.send_replace(false);
    }

    /// Reconnects with the same identity; the new session reports the last deployment outcome
    /// again, as the agent does.
    pub fn go_online(&self) {
        self.shared.online.send_replace(true);
    }

    /// Whether the hub has welcomed the device's control stream (and not lost it since).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Every deployment the device accepted, in arrival order: `(id, number, flows_hash)`. One
    /// sent again by the hub (after a lost connection) is answered, not accepted again.
    pub fn deployments_received(&self) -> Vec<(String, u64, String)> {
        self.shared.lock().received.iter().map(|r| (r.id.clone(), r.number, r.flows_hash.clone())).collect()
    }

    /// What the device runs now, as it answers the hub's `snapshot` command.
    pub fn current_snapshot(&self) -> serde_json::Value {
        serde_json::to_value(&self.shared.lock().current).unwrap_or_default()
    }

    /// The numbers of the policies the device enforced, in order (one sent again is not counted
    /// again).
    pub fn policies_applied(&self) -> Vec<u64> {
        self.shared.lock().policies.clone()
    }
}
