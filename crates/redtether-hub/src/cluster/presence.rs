//! Which hub holds which device. A hub joins when it starts (its old holdings cleared), holds a
//! device in the shared store while the device's tunnel is connected to it (the holding's epoch
//! is what removes it, so a late disconnect never removes a newer connection), heart-beats every
//! [`HEARTBEAT`], and reaps any hub silent for [`DEAD_AFTER`] with its holdings; it reads what
//! the others hold each beat, and closes its own session of a device another hub has since
//! taken over (the device reconnected there while this hub still saw the old connection).

use super::Cluster;
use crate::registry::Registry;
use crate::store::StoreError;
use crate::store::domain::HubEntry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A hub this long without a heartbeat is dead: its devices count as offline, and requests for
/// them are no longer forwarded to it.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// A session this old has written its holding (or failed to).
const SETTLED: Duration = Duration::from_secs(3);

impl Cluster {
    fn entry(&self) -> HubEntry {
        HubEntry { id: self.id.clone(), address: self.address.clone() }
    }

    /// Registers this hub (holding nothing yet).
    pub fn join(&self) -> Result<(), StoreError> {
        self.store.join(&self.entry())
    }

    /// Holds `device` for this hub; its epoch, `None` when the store could not be written
    /// (logged: the device is still served here, the others see it offline until a beat).
    pub fn hold(&self, device: &str) -> Option<u64> {
        match self.store.hold(device, &self.id) {
            Ok(epoch) => Some(epoch),
            Err(e) => {
                tracing::warn!(%device, error = %e, "cluster: cannot record holding the device");
                None
            }
        }
    }

    pub fn let_go(&self, device: &str, epoch: u64) {
        if let Err(e) = self.store.let_go(device, epoch) {
            tracing::warn!(%device, error = %e, "cluster: cannot record letting the device go");
        }
    }

    /// One beat: heartbeat (joining again, with what this hub holds, if it was reaped), reap the
    /// dead, read the others' holdings, close sessions taken over elsewhere.
    fn beat(&self, registry: &Registry) -> Result<(), StoreError> {
        if !self.store.heartbeat(&self.id)? {
            tracing::warn!(hub = %self.id, "cluster: this hub was declared dead; joining again");
            self.join()?;
            for (device, generation, _) in registry.local_sessions() {
                registry.hold(&device, generation);
            }
        }
        for dead in self.store.reap(DEAD_AFTER)? {
            tracing::warn!(hub = %dead, "cluster: hub stopped heart-beating; its devices are offline until they reconnect");
        }
        let mut remote = HashMap::new();
        let mut mine = std::collections::HashSet::new();
        for (device, hub) in self.store.holdings()? {
            if hub.id == self.id {
                mine.insert(device);
            } else {
                remote.insert(device, hub);
            }
        }
        let sessions = registry.local_sessions();
        let settled = std::time::SystemTime::now() - SETTLED;
        for (device, generation, since) in &sessions {
            if let Some(other) = remote.get(device) {
                tracing::info!(%device, hub = %other.id, "cluster: the device reconnected to another hub; closing this session");
                registry.close_taken_over(device, *generation);
            } else if !mine.contains(device) && *since < settled {
                // Its holding is gone (a later connection elsewhere came and went): held again,
                // so the others find it here. (A session younger than this may still be
                // writing its first holding.)
                registry.hold(device, *generation);
            }
        }
        // Holdings of this hub without a session (a let-go that failed): dropped when seen twice
        // in a row, so a device connecting here meanwhile is not caught.
        let local: std::collections::HashSet<&String> = sessions.iter().map(|(d, ..)| d).collect();
        let orphans: std::collections::HashSet<String> = mine.into_iter().filter(|d| !local.contains(d)).collect();
        let seen_before =
            std::mem::replace(&mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()), orphans.clone());
        for device in orphans.intersection(&seen_before) {
            self.store.drop_holding(device, &self.id)?;
        }
        let changed = {
            let mut current = self.remote.write().unwrap_or_else(|e| e.into_inner());
            let changed = *current != remote;
            *current = remote;
            changed
        };
        if changed {
            registry.presence_changed();
        }
        Ok(())
    }

    /// Removes this hub and its holdings (a clean stop).
    pub fn leave(&self) {
        if let Err(e) = self.store.leave(&self.id) {
            tracing::warn!(error = %e, "cluster: cannot leave; the others reap this hub soon");
        }
    }
}

/// Beats until cancelled, then leaves.
pub async fn run(cluster: Arc<Cluster>, registry: Registry, cancel: CancellationToken) {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = beat.tick() => {}
        }
        match cluster.beat(&registry) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("cluster: the shared store answers again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cluster: cannot reach the shared store; serving what this hub holds");
            }
            Err(_) => {}
        }
    }
    cluster.leave();
}
