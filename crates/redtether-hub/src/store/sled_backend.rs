//! The domain traits (`domain`) on the embedded sled store: one hub, one process. The store's
//! own methods (in `store.rs` and its modules) do the work; these impls hand the traits to them.
//! Presence is kept like the rest (a hub of one still answers who holds a device), with the
//! process's clock; the hub refuses cluster mode on this backend.

use super::domain::{
    Deployments, DeviceAudit, Devices, EnrollTokens, FleetAudit, FleetFigures, Groups, HubEntry, Journal, Operators,
    Policies, Presence, SharedSecrets,
};
use super::{
    ApiTokenRecord, AuditFilter, AuditPage, AuditRow, Census, Cursor, DeploymentRecord, DeviceRecord, FleetAuditError,
    GroupRecord, HubEvent, HubTokenRecord, MadePolicy, MembershipChange, OperatorRecord, PipelineRecord, PolicyChange,
    PolicyError, PolicyRecord, PolicyUpdate, PresenceSample, SessionRecord, SledStore, SnapshotRecord, StoreError,
    StoreLatency, decode, encode,
};
use crate::identity::TokenScope;
use crate::rollout::Rollout;
use redtether_proto::audit::{Actor, HubEventKind, Ingested, StoredEvent};
use redtether_proto::policy::Policy;
use redtether_proto::wire::EnrollRefusal;
use redtether_proto::wire::{DeployState, PolicyReport};
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

impl SledStore {
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

impl Devices for SledStore {
    fn enroll_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        SledStore::enroll_device(self, device_id, cert_serial, cert_not_after, device_key, now)
    }

    fn renew_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
    ) -> Result<(), StoreError> {
        SledStore::renew_device(self, device_id, cert_serial, cert_not_after, device_key)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        SledStore::device(self, id)
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        SledStore::devices(self)
    }

    fn modify_device(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r mut DeviceRecord) + Send + Sync),
    ) -> Result<Option<DeviceRecord>, StoreError> {
        SledStore::modify_device(self, id, change)
    }

    fn revoke_device(&self, id: &str) -> Result<String, StoreError> {
        SledStore::revoke_device(self, id)
    }

    fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        SledStore::revoked_serials(self)
    }
}

impl EnrollTokens for SledStore {
    fn create_enroll_token(
        &self,
        device_id: &str,
        lifetime_secs: u64,
        group: Option<&str>,
        now: u64,
    ) -> Result<String, StoreError> {
        SledStore::create_enroll_token(self, device_id, lifetime_secs, group, now)
    }

    fn check_enroll_token(&self, token: &str, now: u64) -> Result<Result<String, EnrollRefusal>, StoreError> {
        SledStore::check_enroll_token(self, token, now)
    }

    fn enroll_token_group(&self, token: &str) -> Result<Option<String>, StoreError> {
        SledStore::enroll_token_group(self, token)
    }

    fn consume_enroll_token(&self, token: &str) -> Result<bool, StoreError> {
        SledStore::consume_enroll_token(self, token)
    }

    fn release_enroll_token(&self, token: &str) -> Result<(), StoreError> {
        SledStore::release_enroll_token(self, token)
    }
}

impl DeviceAudit for SledStore {
    fn ingest_audit(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError> {
        SledStore::ingest_audit(self, device, events)
    }

    fn device_audit(&self, device: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        SledStore::device_audit(self, device, after)
    }
}

impl Presence for SledStore {
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

    fn holdings(&self) -> Result<Vec<(String, HubEntry)>, StoreError> {
        let hubs: std::collections::HashMap<String, HubEntry> =
            self.hubs()?.into_iter().map(|h| (h.id.clone(), h)).collect();
        let mut held = Vec::new();
        for entry in self.holdings_tree()?.iter() {
            let (device, value) = entry?;
            if let Some(hub) = hubs.get(&decode::<PresenceRow>(&value)?.hub) {
                held.push((String::from_utf8_lossy(&device).into_owned(), hub.clone()));
            }
        }
        Ok(held)
    }

    fn drop_holding(&self, device: &str, hub: &str) -> Result<bool, StoreError> {
        let holdings = self.holdings_tree()?;
        let Some(old) = holdings.get(device.as_bytes())? else { return Ok(false) };
        if decode::<PresenceRow>(&old)?.hub != hub {
            return Ok(false);
        }
        Ok(holdings.compare_and_swap(device.as_bytes(), Some(old), None::<&[u8]>)?.is_ok())
    }

    fn leave(&self, hub: &str) -> Result<(), StoreError> {
        let holdings = self.holdings_tree()?;
        for entry in holdings.iter() {
            let (device, value) = entry?;
            if decode::<PresenceRow>(&value)?.hub == hub {
                holdings.compare_and_swap(&device, Some(value), None::<&[u8]>)?.ok();
            }
        }
        self.hubs_tree()?.remove(hub.as_bytes())?;
        Ok(())
    }

    fn hubs(&self) -> Result<Vec<HubEntry>, StoreError> {
        self.hubs_tree()?
            .iter()
            .map(|entry| {
                let (id, value) = entry?;
                Ok(HubEntry {
                    id: String::from_utf8_lossy(&id).into_owned(),
                    address: decode::<HubRow>(&value)?.address,
                })
            })
            .collect()
    }
}

impl super::domain::Doorbell for SledStore {
    fn ring(&self, payload: &str) -> Result<(), StoreError> {
        self.doorbell.lock().unwrap_or_else(|e| e.into_inner()).retain(|l| l.send(payload.to_string()).is_ok());
        Ok(())
    }

    fn listen(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.doorbell.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }
}

impl SharedSecrets for SledStore {
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

impl Operators for SledStore {
    fn add_operator(&self, record: OperatorRecord, setup_secs: u64) -> Result<String, StoreError> {
        SledStore::add_operator(self, record, setup_secs)
    }

    fn operator(&self, name: &str) -> Result<Option<OperatorRecord>, StoreError> {
        SledStore::operator(self, name)
    }

    fn operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        SledStore::operators(self)
    }

    fn modify_operator(
        &self,
        name: &str,
        change: &mut (dyn for<'r> FnMut(&'r mut OperatorRecord) + Send),
    ) -> Result<Option<OperatorRecord>, StoreError> {
        SledStore::update_operator(self, name, |record| {
            change(record);
            record.clone()
        })
    }

    fn remove_operator(&self, name: &str) -> Result<OperatorRecord, StoreError> {
        SledStore::remove_operator(self, name)
    }

    fn operator_by_setup_code(&self, code: &str, now: u64) -> Result<Option<OperatorRecord>, StoreError> {
        SledStore::operator_by_setup_code(self, code, now)
    }

    fn add_api_token(
        &self,
        operator: &str,
        name: &str,
        scope: TokenScope,
        now: u64,
        expires: u64,
    ) -> Result<String, StoreError> {
        SledStore::add_api_token(self, operator, name, scope, now, expires)
    }

    fn api_tokens(&self, operator: &str) -> Result<Vec<ApiTokenRecord>, StoreError> {
        SledStore::api_tokens(self, operator)
    }

    fn api_token(&self, token: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        SledStore::api_token(self, token)
    }

    fn revoke_api_token(&self, operator: &str, name: &str) -> Result<bool, StoreError> {
        SledStore::revoke_api_token(self, operator, name)
    }

    fn create_session(&self, operator: &str, method: &str, now: u64) -> Result<(String, SessionRecord), StoreError> {
        SledStore::create_session(self, operator, method, now)
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        SledStore::session(self, id)
    }

    fn touch_session(&self, id: &str, now: u64) -> Result<(), StoreError> {
        SledStore::touch_session(self, id, now)
    }

    fn end_session(&self, id: &str) -> Result<(), StoreError> {
        SledStore::end_session(self, id)
    }

    fn end_sessions(&self, operator: &str) -> Result<usize, StoreError> {
        SledStore::end_sessions(self, operator)
    }
}

impl Deployments for SledStore {
    fn create_deployment(
        &self,
        device: &str,
        make: Box<dyn FnOnce(u64) -> DeploymentRecord + Send + '_>,
    ) -> Result<DeploymentRecord, StoreError> {
        SledStore::create_deployment(self, device, make)
    }

    fn deployments(&self, device: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
        SledStore::deployments(self, device)
    }

    fn deployment(&self, device: &str, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        SledStore::deployment(self, device, id)
    }

    fn deployment_to_send(&self, device: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        SledStore::deployment_to_send(self, device)
    }

    fn update_deployment(
        &self,
        device: &str,
        id: &str,
        state: DeployState,
        detail: serde_json::Value,
        now: u64,
    ) -> Result<bool, StoreError> {
        SledStore::update_deployment(self, device, id, state, detail, now)
    }

    fn add_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        SledStore::add_snapshot(self, record)
    }

    fn snapshot_by_id(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        SledStore::snapshot_by_id(self, id)
    }

    fn snapshots(&self, device: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        SledStore::snapshots(self, device)
    }

    fn snapshot(&self, device: &str, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        SledStore::snapshot(self, device, id)
    }

    fn put_sbom(&self, device: &str, sbom: &serde_json::Value) -> Result<(), StoreError> {
        SledStore::put_sbom(self, device, sbom)
    }

    fn sbom(&self, device: &str) -> Result<Option<serde_json::Value>, StoreError> {
        SledStore::sbom(self, device)
    }
}

impl Policies for SledStore {
    fn policy(&self, device: &str) -> Result<Option<PolicyRecord>, StoreError> {
        SledStore::policy(self, device)
    }

    fn policy_tokens(&self, device: &str) -> Result<Vec<HubTokenRecord>, StoreError> {
        SledStore::policy_tokens(self, device)
    }

    fn make_policy(
        &self,
        device: &str,
        change: PolicyChange,
        operator: &str,
        now: u64,
        sign: Box<dyn FnOnce(&Policy) -> String + Send + '_>,
    ) -> Result<MadePolicy, PolicyError> {
        SledStore::make_policy(self, device, change, operator, now, sign)
    }

    fn update_policy(&self, device: &str, report: &PolicyReport, now: u64) -> Result<PolicyUpdate, StoreError> {
        SledStore::update_policy(self, device, report, now)
    }
}

impl Groups for SledStore {
    fn create_group(&self, record: &GroupRecord) -> Result<(), StoreError> {
        SledStore::create_group(self, record)
    }

    fn group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        SledStore::group(self, name)
    }

    fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        SledStore::groups(self)
    }

    fn modify_group(
        &self,
        name: &str,
        change: &mut (dyn for<'r> FnMut(&'r mut GroupRecord) + Send),
    ) -> Result<Option<GroupRecord>, StoreError> {
        SledStore::update_group(self, name, change)
    }

    fn group_members(&self, name: &str) -> Result<Vec<String>, StoreError> {
        SledStore::group_members(self, name)
    }

    fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        SledStore::delete_group(self, name)
    }

    fn change_group_devices(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<MembershipChange, StoreError> {
        SledStore::change_group_devices(self, name, add, remove)
    }

    fn put_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        SledStore::put_rollout(self, rollout)
    }

    fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        SledStore::rollout(self, id)
    }

    fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        SledStore::rollouts(self)
    }

    fn create_pipeline(&self, record: &PipelineRecord) -> Result<(), StoreError> {
        SledStore::create_pipeline(self, record)
    }

    fn pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        SledStore::pipeline(self, name)
    }

    fn pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError> {
        SledStore::pipelines(self)
    }

    fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
        SledStore::delete_pipeline(self, name)
    }
}

impl Journal for SledStore {
    fn record(
        &self,
        kind: HubEventKind,
        actor: Actor,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<StoredEvent, StoreError> {
        SledStore::record(self, kind, actor, target, detail)
    }

    fn record_event(
        &self,
        device: &str,
        kind: HubEventKind,
        detail: serde_json::Value,
    ) -> Result<HubEvent, StoreError> {
        SledStore::record_event(self, device, kind, detail)
    }

    fn events(&self, device: &str) -> Result<Vec<HubEvent>, StoreError> {
        SledStore::events(self, device)
    }

    fn subscribe_recorded(&self) -> tokio::sync::broadcast::Receiver<StoredEvent> {
        SledStore::subscribe_recorded(self)
    }

    fn journal_failures(&self) -> u64 {
        SledStore::journal_failures(self)
    }

    fn flush(&self) -> Result<(), StoreError> {
        SledStore::flush(self)
    }

    fn latency(&self) -> &StoreLatency {
        &self.latency
    }
}

impl FleetAudit for SledStore {
    fn audit_page(&self, filter: &AuditFilter, before: Option<&Cursor>, limit: usize) -> Result<AuditPage, StoreError> {
        SledStore::audit_page(self, filter, before, limit)
    }

    fn audit_export(
        &self,
        filter: &AuditFilter,
        write: &mut (dyn FnMut(&AuditRow) -> std::io::Result<()> + Send),
    ) -> Result<u64, FleetAuditError> {
        SledStore::audit_export(self, filter, write)
    }
}

impl FleetFigures for SledStore {
    fn census(&self) -> Result<Census, StoreError> {
        SledStore::census(self)
    }

    fn record_presence(&self, sample: PresenceSample) -> Result<(), StoreError> {
        SledStore::record_presence(self, sample)
    }

    fn presence_since(&self, since: u64) -> Result<Vec<PresenceSample>, StoreError> {
        SledStore::presence_since(self, since)
    }
}
