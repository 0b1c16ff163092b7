//! What the hub keeps, as domain traits with two backends: the embedded sled store of one hub
//! (`HubStore`, the default) and PostgreSQL shared by several hubs (`super::postgres::PgStore`).
//! Each trait states the guarantees callers rely on; the conformance suite
//! (`tests/store_conformance.rs`) checks both backends against them, concurrency included.
//!
//! So far: devices and their certificates, one-time enrollment tokens, delivered device audit,
//! which hub holds which device (presence), and secrets the hubs share. The rest of the hub's
//! records (operators, policies, deployments, groups, the fleet audit index) are still
//! `HubStore`'s alone.

use super::{DeviceRecord, StoreError};
use redtether_proto::audit::{Ingested, StoredEvent};
use redtether_proto::wire::EnrollRefusal;
use std::time::Duration;

/// Enrolled devices and their certificates.
pub trait Devices: Send + Sync {
    /// Records an enrollment, durably; a device enrolling again has its previous certificate
    /// revoked.
    fn enroll_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Records a renewal, durably: the new certificate is the device's, the old one stays
    /// accepted until the new one is used.
    fn renew_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
    ) -> Result<(), StoreError>;

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// Every device, in id order.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Changes a device's record atomically: two changes at once (a status push and a group
    /// change, from two hubs) both stay. Returns the new record, `None` for an unknown device.
    fn modify_device(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r mut DeviceRecord) + Send + Sync),
    ) -> Result<Option<DeviceRecord>, StoreError>;

    /// Revokes a device's certificate, durably; returns its serial.
    fn revoke_device(&self, id: &str) -> Result<String, StoreError>;

    /// Serial numbers of every revoked certificate.
    fn revoked_serials(&self) -> Result<Vec<String>, StoreError>;
}

/// One-time enrollment tokens, kept as digests.
pub trait EnrollTokens: Send + Sync {
    /// A new token for `device_id`, valid for `lifetime_secs` from `now`.
    fn create_enroll_token(
        &self,
        device_id: &str,
        lifetime_secs: u64,
        group: Option<&str>,
        now: u64,
    ) -> Result<String, StoreError>;

    /// The device a token is for, if it may be used at `now` (it is not consumed).
    fn check_enroll_token(&self, token: &str, now: u64) -> Result<Result<String, EnrollRefusal>, StoreError>;

    /// The group a token's device joins when it enrolls.
    fn enroll_token_group(&self, token: &str) -> Result<Option<String>, StoreError>;

    /// Marks a token used, atomically and durably: of any number of enrollments racing with
    /// one token, on any number of hubs, exactly one gets `true`.
    fn consume_enroll_token(&self, token: &str) -> Result<bool, StoreError>;

    /// Gives a consumed token back, when the enrollment it was consumed for failed.
    fn release_enroll_token(&self, token: &str) -> Result<(), StoreError>;
}

/// The audit events devices deliver.
pub trait DeviceAudit: Send + Sync {
    /// Stores a checked batch durably (committed before this returns, so the caller may
    /// acknowledge `ack`); an event already held (same device, seq and id), from an earlier
    /// delivery through this hub or another, is counted as a duplicate and kept once.
    fn ingest_audit(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError>;

    /// The device's delivered events with seq after `after`, in seq order.
    fn device_audit(&self, device: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError>;
}

/// A hub of the cluster, as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEntry {
    pub id: String,
    /// Where the other hubs forward requests for its devices.
    pub address: String,
}

/// Which hub holds each device's tunnel. Time here is the store's clock (the database's, for
/// PostgreSQL), so hubs with skewed clocks still agree on who is alive.
pub trait Presence: Send + Sync {
    /// Registers a hub (again, after a restart): its address, a fresh heartbeat, and none of
    /// the devices it held before.
    fn join(&self, hub: &HubEntry) -> Result<(), StoreError>;

    /// Renews a hub's heartbeat. `false` when the hub is not registered (it was declared dead
    /// and reaped): it has to join again, since its presence entries are gone.
    fn heartbeat(&self, hub: &str) -> Result<bool, StoreError>;

    /// Records that `hub` holds `device` now, replacing whoever held it; returns the epoch of
    /// this holding, which only [`Presence::let_go`] with the same epoch removes.
    fn hold(&self, device: &str, hub: &str) -> Result<u64, StoreError>;

    /// Removes the entry of one holding, if it is still that holding: a late disconnect never
    /// removes the device's newer connection (here or on another hub). Returns whether it did.
    fn let_go(&self, device: &str, epoch: u64) -> Result<bool, StoreError>;

    /// The hub holding `device`, if a live one does.
    fn holder(&self, device: &str) -> Result<Option<HubEntry>, StoreError>;

    /// Removes hubs whose last heartbeat is older than `dead_after`, and every device entry
    /// they held; returns their ids.
    fn reap(&self, dead_after: Duration) -> Result<Vec<String>, StoreError>;

    /// The registered hubs, in id order.
    fn hubs(&self) -> Result<Vec<HubEntry>, StoreError>;
}

/// Secrets every hub of a cluster must hold alike (the stateless-reset key, the CA key
/// encrypted under the key-encryption key): stored once, by whichever hub comes first.
pub trait SharedSecrets: Send + Sync {
    /// The secret stored under `name`; `candidate` is stored and returned when there is none
    /// yet. Of hubs racing to store one, all get the same winner.
    fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
}

/// Everything the hubs of a cluster share.
pub trait SharedStore: Devices + EnrollTokens + DeviceAudit + Presence + SharedSecrets {}

impl<T: Devices + EnrollTokens + DeviceAudit + Presence + SharedSecrets> SharedStore for T {}
