//! Which devices are connected now, and a way to send each a command and wait for its answer.

use redtether_proto::wire::Command;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// A command for a connected device, with the way back for its result.
pub struct CommandRequest {
    pub command: Command,
    pub reply: oneshot::Sender<(bool, serde_json::Value)>,
}

#[derive(Clone)]
pub struct Online {
    pub connection: redtether_transport::Connection,
    pub commands: mpsc::Sender<CommandRequest>,
    pub since: SystemTime,
    /// Woken when a deployment for the device is waiting to be sent.
    pub deployments: Arc<tokio::sync::Notify>,
    /// Woken when a newer policy was made for the device.
    pub policies: Arc<tokio::sync::Notify>,
    /// Tells this session from a later one of the same device.
    pub generation: u64,
    /// In a cluster: the epoch of this hub's holding of the device (`crate::cluster`).
    pub epoch: Option<u64>,
}

/// What waits to be sent to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Deployment,
    Policy,
}

impl Waiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::Deployment => "deployment",
            Waiting::Policy => "policy",
        }
    }

    pub fn parse(text: &str) -> Option<Waiting> {
        match text {
            "deployment" => Some(Waiting::Deployment),
            "policy" => Some(Waiting::Policy),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the device is not connected")]
    Offline,
    #[error("the device did not answer in time")]
    Timeout,
    #[error("the connection to the device ended before it answered")]
    Lost,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<(u64, HashMap<String, Online>)>>,
    /// Bumped whenever a device connects or disconnects: the console's live list waits on it.
    presence: Arc<tokio::sync::watch::Sender<u64>>,
    /// Woken when a device reported a deployment's outcome: the rollout driver waits on it.
    outcomes: Arc<tokio::sync::Notify>,
    /// In a cluster: where this hub records what it holds and learns what the others do.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Arc::default(),
            presence: Arc::new(tokio::sync::watch::channel(0).0),
            outcomes: Arc::default(),
            cluster: None,
        }
    }
}

impl Registry {
    /// A registry of a hub in a cluster: a connected device is held in the shared store, and
    /// devices the other hubs hold count as online.
    pub fn in_cluster(cluster: Arc<crate::cluster::Cluster>) -> Registry {
        Registry { cluster: Some(cluster), ..Registry::default() }
    }

    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<String, Online>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; returns its generation and the session it replaced, if any.
    pub fn register(
        &self,
        device: &str,
        connection: redtether_transport::Connection,
        commands: mpsc::Sender<CommandRequest>,
        deployments: Arc<tokio::sync::Notify>,
        policies: Arc<tokio::sync::Notify>,
    ) -> (u64, Option<Online>) {
        let mut guard = self.lock();
        guard.0 += 1;
        let generation = guard.0;
        let online =
            Online { connection, commands, since: SystemTime::now(), generation, deployments, policies, epoch: None };
        let replaced = guard.1.insert(device.to_string(), online);
        drop(guard);
        self.hold(device, generation);
        self.presence.send_modify(|n| *n += 1);
        (generation, replaced)
    }

    /// Records in the shared store that this hub holds `device` (session `generation`).
    pub(crate) fn hold(&self, device: &str, generation: u64) {
        let Some(cluster) = &self.cluster else { return };
        let epoch = cluster.hold(device);
        if let Some(online) = self.lock().1.get_mut(device).filter(|o| o.generation == generation) {
            online.epoch = epoch;
        }
    }

    /// Removes a session, unless a newer one of the same device took its place.
    pub fn unregister(&self, device: &str, generation: u64) {
        let mut guard = self.lock();
        if guard.1.get(device).is_some_and(|o| o.generation == generation) {
            let removed = guard.1.remove(device);
            drop(guard);
            if let (Some(cluster), Some(epoch)) = (&self.cluster, removed.and_then(|o| o.epoch)) {
                cluster.let_go(device, epoch);
            }
            self.presence.send_modify(|n| *n += 1);
        }
    }

    /// The devices connected now (to this hub or, in a cluster, to another).
    pub fn online_ids(&self) -> std::collections::BTreeSet<String> {
        let mut ids: std::collections::BTreeSet<String> = self.lock().1.keys().cloned().collect();
        if let Some(cluster) = &self.cluster {
            ids.extend(cluster.remote_ids());
        }
        ids
    }

    /// Whether `device` is connected (here or, in a cluster, to another hub).
    pub fn is_online(&self, device: &str) -> bool {
        self.lock().1.contains_key(device) || self.cluster.as_ref().is_some_and(|c| c.held_elsewhere(device))
    }

    /// The devices connected to this hub, with their session generations and since when.
    pub(crate) fn local_sessions(&self) -> Vec<(String, u64, SystemTime)> {
        self.lock().1.iter().map(|(id, o)| (id.clone(), o.generation, o.since)).collect()
    }

    /// Closes this hub's session of `device` (generation `generation`): the device reconnected
    /// to another hub.
    pub(crate) fn close_taken_over(&self, device: &str, generation: u64) {
        let taken = self.lock().1.get(device).filter(|o| o.generation == generation).cloned();
        if let Some(online) = taken {
            online.connection.close(redtether_proto::wire::codes::REPLACED, b"connected to another hub");
        }
    }

    /// Wakes the session of `device` to send what waits for it: here if this hub holds it,
    /// else (in a cluster) through the doorbell, to whichever hub does.
    pub fn wake(&self, device: &str, what: Waiting) {
        if let Some(online) = self.get(device) {
            match what {
                Waiting::Deployment => online.deployments.notify_one(),
                Waiting::Policy => online.policies.notify_one(),
            }
        } else if let Some(cluster) = &self.cluster {
            cluster.ring(device, what);
        }
    }

    /// Tells watchers of [`Registry::presence`] that who is online changed elsewhere.
    pub(crate) fn presence_changed(&self) {
        self.presence.send_modify(|n| *n += 1);
    }

    /// Changes whenever a device connects or disconnects.
    pub fn presence(&self) -> tokio::sync::watch::Receiver<u64> {
        self.presence.subscribe()
    }

    /// Says a device reported how a deployment ended.
    pub fn deployment_ended(&self) {
        self.outcomes.notify_one();
    }

    /// Woken after [`Registry::deployment_ended`] (once for any number of them since the last).
    pub async fn deployment_outcome(&self) {
        self.outcomes.notified().await
    }

    pub fn get(&self, device: &str) -> Option<Online> {
        self.lock().1.get(device).cloned()
    }

    /// Devices connected, to this hub or (in a cluster) to another.
    pub fn count(&self) -> usize {
        self.lock().1.len() + self.cluster.as_ref().map_or(0, |c| c.remote_count())
    }

    /// Devices connected to this hub.
    pub fn local_count(&self) -> usize {
        self.lock().1.len()
    }

    /// Sends `command` to `device` and waits for its result.
    pub async fn send(
        &self,
        device: &str,
        command: Command,
        timeout: std::time::Duration,
    ) -> Result<(bool, serde_json::Value), CommandError> {
        let online = self.get(device).ok_or(CommandError::Offline)?;
        let (reply, result) = oneshot::channel();
        online.commands.send(CommandRequest { command, reply }).await.map_err(|_| CommandError::Lost)?;
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CommandError::Lost),
            Err(_) => Err(CommandError::Timeout),
        }
    }
}
