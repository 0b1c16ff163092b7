//! Reads every record of the embedded store, for `transfer` (`redtether-hub migrate-store`).

use super::fleet_audit::journal_event_is_about_a_device;
use super::transfer::Record;
use super::{EnrollTokenRecord, SledStore, StoreError, decode};

/// The part of a `device · 0 · …` key before the 0.
fn device_of(key: &[u8]) -> String {
    let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl SledStore {
    /// Every record, to `sink`, a kind at a time; hub events from the journal in `state_dir`.
    pub fn export(
        &self,
        state_dir: &std::path::Path,
        sink: &mut dyn FnMut(Record) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for entry in self.devices.iter() {
            sink(Record::Device(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.revoked.iter() {
            let (serial, device) = entry?;
            sink(Record::Revoked { serial: text(&serial), device: text(&device) })?;
        }
        for entry in self.tokens.iter() {
            let (digest, value) = entry?;
            let t: EnrollTokenRecord = decode(&value)?;
            sink(Record::EnrollToken {
                digest: digest.to_vec(),
                device: t.device_id,
                created: t.created,
                expires: t.expires,
                used: t.used,
                group: t.group,
            })?;
        }
        for entry in self.operators.iter() {
            sink(Record::Operator(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.api_tokens.iter() {
            let (digest, value) = entry?;
            sink(Record::ApiToken { digest: text(&digest), record: decode(&value)? })?;
        }
        for entry in self.sessions.iter() {
            let (digest, value) = entry?;
            sink(Record::Session { digest: text(&digest), record: decode(&value)? })?;
        }
        for entry in self.deploy_numbers.iter() {
            let (device, value) = entry?;
            let last = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
            sink(Record::DeployNumber { device: text(&device), last })?;
        }
        for entry in self.deployments.iter() {
            sink(Record::Deployment(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.snapshots.iter() {
            sink(Record::Snapshot(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.sboms.iter() {
            let (device, value) = entry?;
            sink(Record::Sbom { device: text(&device), sbom: decode(&value)? })?;
        }
        for entry in self.policies.iter() {
            sink(Record::Policy(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.policy_tokens.iter() {
            let (key, value) = entry?;
            sink(Record::PolicyToken { device: device_of(&key), record: decode(&value)? })?;
        }
        for entry in self.groups.iter() {
            sink(Record::Group(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.rollouts.iter() {
            sink(Record::Rollout(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.pipelines.iter() {
            sink(Record::Pipeline(Box::new(decode(&entry?.1)?)))?;
        }
        for entry in self.audit.iter() {
            let (key, value) = entry?;
            sink(Record::DeviceAudit { device: device_of(&key), event: Box::new(decode(&value)?) })?;
        }
        let journal = crate::journal::read(state_dir)?;
        for event in crate::journal::events(&journal) {
            let device = journal_event_is_about_a_device(&event.kind, &event.target).then(|| event.target.clone());
            sink(Record::HubEvent { device, event: Box::new(event) })?;
        }
        for sample in self.presence_since(0)? {
            sink(Record::Presence(sample))?;
        }
        for entry in self.db.open_tree("shared_secrets")?.iter() {
            let (name, value) = entry?;
            sink(Record::SharedSecret { name: text(&name), value: value.to_vec() })?;
        }
        Ok(())
    }
}
