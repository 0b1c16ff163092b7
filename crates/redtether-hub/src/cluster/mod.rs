//! Several hubs sharing one PostgreSQL store (`[cluster]`). What is shared lives in the
//! database; this module owns what a hub does about the others:
//!
//! ```text
//! config.rs    [cluster]: listen, advertise, key_file; refused on the embedded store
//! keys.rs      the keys every hub holds alike, stored encrypted under the key-encryption key
//! tls.rs       the hubs' certificates for each other, from the cluster's own CA
//! presence.rs  joining, heart-beating, reaping dead hubs, who holds which device
//! forward.rs   passing an operator's request for a device to the hub that holds it
//! ```
//!
//! A device is held by the hub its tunnel reached; an operator request for a device
//! (`/devices/{id}/…`, `/api/devices/{id}…`) reaching another hub is forwarded there over
//! mutual TLS, once (a forwarded request is never forwarded again).

pub mod config;
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

/// This hub's part in the cluster.
pub struct Cluster {
    pub id: String,
    /// Where the other hubs reach this one.
    pub address: String,
    store: Arc<HubStore>,
    /// The devices other hubs hold, as last read ([`presence::HEARTBEAT`] ago at most).
    remote: RwLock<HashMap<String, HubEntry>>,
    forwarder: forward::Forwarder,
}

impl Cluster {
    pub fn new(id: String, address: String, store: Arc<HubStore>, client_tls: rustls::ClientConfig) -> Cluster {
        Cluster { id, address, store, remote: RwLock::default(), forwarder: forward::Forwarder::new(client_tls) }
    }

    /// The hub that holds `device`, if another one does (as last read).
    pub fn holder(&self, device: &str) -> Option<HubEntry> {
        self.remote.read().unwrap_or_else(|e| e.into_inner()).get(device).cloned()
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
