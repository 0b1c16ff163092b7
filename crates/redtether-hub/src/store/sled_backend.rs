//! The domain traits (`domain`) on the embedded sled store: one hub, one process. Presence is
//! kept like the rest (a hub of one still answers who holds a device), with the process's
//! clock; the hub refuses cluster mode on this backend.

use super::domain::{DeviceAudit, Devices, EnrollTokens, HubEntry, Presence, SharedSecrets};
use super::{DeviceRecord, HubStore, StoreError, decode, encode};
use redtether_proto::audit::{Ingested, StoredEvent};
use redtether_proto::wire::EnrollRefusal;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A registered hub: where it is and when it last said so.
#[derive(Serialize, Deserialize)]
struct HubRow {
    address: String,
    /// Unix milliseconds.
    seen_ms: u64,
}

/// Which hub holds a device, since which holding.
#[derive(Serialize, Deserialize)]
struct PresenceRow {
    hub: String,
    epoch: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl HubStore {
    fn hubs_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("cluster_hubs")?)
    }

    fn holdings_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("cluster_presence")?)
    }

    fn shared_secrets_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("shared_secrets")?)
    }
}

impl Devices for HubStore {
    fn enroll_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        HubStore::enroll_device(self, device_id, cert_serial, cert_not_after, device_key, now)
    }

    fn renew_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
    ) -> Result<(), StoreError> {
        HubStore::renew_device(self, device_id, cert_serial, cert_not_after, device_key)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        HubStore::device(self, id)
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        HubStore::devices(self)
    }

    fn modify_device(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r mut DeviceRecord) + Send + Sync),
    ) -> Result<Option<DeviceRecord>, StoreError> {
        HubStore::modify_device(self, id, change)
    }

    fn revoke_device(&self, id: &str) -> Result<String, StoreError> {
        HubStore::revoke_device(self, id)
    }

    fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        HubStore::revoked_serials(self)
    }
}

impl EnrollTokens for HubStore {
    fn create_enroll_token(
        &self,
        device_id: &str,
        lifetime_secs: u64,
        group: Option<&str>,
        now: u64,
    ) -> Result<String, StoreError> {
        HubStore::create_enroll_token(self, device_id, lifetime_secs, group, now)
    }

    fn check_enroll_token(&self, token: &str, now: u64) -> Result<Result<String, EnrollRefusal>, StoreError> {
        HubStore::check_enroll_token(self, token, now)
    }

    fn enroll_token_group(&self, token: &str) -> Result<Option<String>, StoreError> {
        HubStore::enroll_token_group(self, token)
    }

    fn consume_enroll_token(&self, token: &str) -> Result<bool, StoreError> {
        HubStore::consume_enroll_token(self, token)
    }

    fn release_enroll_token(&self, token: &str) -> Result<(), StoreError> {
        HubStore::release_enroll_token(self, token)
    }
}

impl DeviceAudit for HubStore {
    fn ingest_audit(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError> {
        HubStore::ingest_audit(self, device, events)
    }

    fn device_audit(&self, device: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        HubStore::device_audit(self, device, after)
    }
}

impl Presence for HubStore {
    fn join(&self, hub: &HubEntry) -> Result<(), StoreError> {
        let holdings = self.holdings_tree()?;
        for entry in holdings.iter() {
            let (device, value) = entry?;
            if decode::<PresenceRow>(&value)?.hub == hub.id {
                holdings.compare_and_swap(&device, Some(value), None::<&[u8]>)?.ok();
            }
        }
        let row = HubRow { address: hub.address.clone(), seen_ms: now_ms() };
        self.hubs_tree()?.insert(hub.id.as_bytes(), encode(&row))?;
        Ok(())
    }

    fn heartbeat(&self, hub: &str) -> Result<bool, StoreError> {
        let mut alive = false;
        self.hubs_tree()?.fetch_and_update(hub.as_bytes(), |old| {
            let mut row: HubRow = serde_json::from_slice(old?).ok()?;
            alive = true;
            row.seen_ms = now_ms();
            Some(encode(&row))
        })?;
        Ok(alive)
    }

    fn hold(&self, device: &str, hub: &str) -> Result<u64, StoreError> {
        // +1: an epoch is never 0, whatever sled's counter starts at.
        let epoch = self.db.generate_id()? + 1;
        let row = PresenceRow { hub: hub.to_string(), epoch };
        self.holdings_tree()?.insert(device.as_bytes(), encode(&row))?;
        Ok(epoch)
    }

    fn let_go(&self, device: &str, epoch: u64) -> Result<bool, StoreError> {
        let holdings = self.holdings_tree()?;
        let Some(old) = holdings.get(device.as_bytes())? else { return Ok(false) };
        if decode::<PresenceRow>(&old)?.epoch != epoch {
            return Ok(false);
        }
        Ok(holdings.compare_and_swap(device.as_bytes(), Some(old), None::<&[u8]>)?.is_ok())
    }

    fn holder(&self, device: &str) -> Result<Option<HubEntry>, StoreError> {
        let Some(value) = self.holdings_tree()?.get(device.as_bytes())? else { return Ok(None) };
        let row: PresenceRow = decode(&value)?;
        let Some(hub) = self.hubs_tree()?.get(row.hub.as_bytes())? else { return Ok(None) };
        Ok(Some(HubEntry { id: row.hub, address: decode::<HubRow>(&hub)?.address }))
    }

    fn reap(&self, dead_after: Duration) -> Result<Vec<String>, StoreError> {
        let cutoff = now_ms().saturating_sub(dead_after.as_millis() as u64);
        let hubs = self.hubs_tree()?;
        let mut dead = Vec::new();
        for entry in hubs.iter() {
            let (id, value) = entry?;
            if decode::<HubRow>(&value)?.seen_ms < cutoff
                && hubs.compare_and_swap(&id, Some(value), None::<&[u8]>)?.is_ok()
            {
                dead.push(String::from_utf8_lossy(&id).into_owned());
            }
        }
        if !dead.is_empty() {
            let holdings = self.holdings_tree()?;
            for entry in holdings.iter() {
                let (device, value) = entry?;
                if dead.contains(&decode::<PresenceRow>(&value)?.hub) {
                    holdings.compare_and_swap(&device, Some(value), None::<&[u8]>)?.ok();
                }
            }
        }
        Ok(dead)
    }

    fn hubs(&self) -> Result<Vec<HubEntry>, StoreError> {
        self.hubs_tree()?
            .iter()
            .map(|entry| {
                let (id, value) = entry?;
                Ok(HubEntry { id: String::from_utf8_lossy(&id).into_owned(), address: decode::<HubRow>(&value)?.address })
            })
            .collect()
    }
}

impl SharedSecrets for HubStore {
    fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let tree = self.shared_secrets_tree()?;
        let stored = match tree.compare_and_swap(name.as_bytes(), None::<&[u8]>, Some(candidate))? {
            Ok(()) => candidate.to_vec(),
            Err(existing) => existing.current.map(|v| v.to_vec()).unwrap_or_else(|| candidate.to_vec()),
        };
        self.flush()?;
        Ok(stored)
    }
}
