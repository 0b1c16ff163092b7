//! Several hubs sharing one PostgreSQL store (`[cluster]`). What is shared lives in the
//! database; this module owns what a hub does about the others:
//!
//! ```text
//! config.rs    [cluster]: listen, advertise, key_file; refused on the embedded store
//! keys.rs      the keys every hub holds alike, stored encrypted under the key-encryption key
//! tls.rs       the hubs' certificates for each other, from the cluster's own CA
//! presence.rs  joining, heart-beating, reaping dead hubs, who holds which device
//! forward.rs   passing an operator's request for a device to the hub that holds it
//! doorbell.rs  waking the holding hub's session when a deployment or policy was made elsewhere
//! ```
//!
//! A device is held by the hub its tunnel reached; an operator request for a device
//! (`/devices/{id}/…`, `/api/devices/{id}…`) reaching another hub is forwarded there over
//! mutual TLS, once (a forwarded request is never forwarded again).

pub mod config;
pub mod doorbell;
pub mod forward;
pub mod keys;
pub mod presence;
pub mod tls;

use crate::store::HubStore;
use crate::store::domain::HubEntry;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The header a forwarded request carries: the id of the hub that forwarded it.
pub const FORWARDED_BY: &str = "x-redtether-forwarded-by";
/// The header a forwarded request carries: the operator's address, as the first hub saw it.
pub const CLIENT_IP: &str = "x-redtether-client-ip";

/// How long a hub a forward could not reach is not tried again.
const UNREACHABLE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// This hub's part in the cluster.
pub struct Cluster {
    pub id: String,
    /// Where the other hubs reach this one.
    pub address: String,
    store: Arc<HubStore>,
    /// The devices other hubs hold, as last read ([`presence::HEARTBEAT`] ago at most).
    remote: RwLock<HashMap<String, HubEntry>>,
    forwarder: forward::Forwarder,
    /// Hubs a forward just failed to reach, until when: their devices are answered here (503,
    /// `Retry-After`) rather than tried again at every request, until they are reaped or the
    /// devices reconnect elsewhere.
    unreachable: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// This hub's holdings without a session at the last beat (`presence`).
    orphans: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Cluster {
    pub fn new(id: String, address: String, store: Arc<HubStore>, client_tls: rustls::ClientConfig) -> Cluster {
        Cluster {
            id,
            address,
            store,
            remote: RwLock::default(),
            forwarder: forward::Forwarder::new(client_tls),
            unreachable: std::sync::Mutex::default(),
            orphans: std::sync::Mutex::default(),
        }
    }

    /// Notes that `hub` could not be reached just now.
    pub(crate) fn unreachable(&self, hub: &str) {
        let until = std::time::Instant::now() + UNREACHABLE_FOR;
        self.unreachable.lock().unwrap_or_else(|e| e.into_inner()).insert(hub.to_string(), until);
    }

    fn reachable(&self, hub: &HubEntry) -> bool {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        match unreachable.get(&hub.id) {
            Some(until) if *until > std::time::Instant::now() => false,
            Some(_) => {
                unreachable.remove(&hub.id);
                true
            }
            None => true,
        }
    }

    /// The hub that holds `device`, if another one does (as last read).
    pub fn holder(&self, device: &str) -> Option<HubEntry> {
        self.remote.read().unwrap_or_else(|e| e.into_inner()).get(device).cloned()
    }

    /// As [`Cluster::holder`], asking the shared store when the last reading knows none (the
    /// device may have connected since).
    pub fn find_holder(&self, device: &str) -> Option<HubEntry> {
        let holder = self.holder(device).or_else(|| match self.store.holder(device) {
            Ok(holder) => holder.filter(|h| h.id != self.id),
            Err(e) => {
                tracing::warn!(%device, error = %e, "cluster: cannot ask the shared store who holds the device");
                None
            }
        });
        holder.filter(|h| self.reachable(h))
    }

    /// Whether another hub holds `device`.
    pub fn held_elsewhere(&self, device: &str) -> bool {
        self.remote.read().unwrap_or_else(|e| e.into_inner()).contains_key(device)
    }

    /// The devices other hubs hold.
    pub fn remote_ids(&self) -> Vec<String> {
        self.remote.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    pub fn remote_count(&self) -> usize {
        self.remote.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}
