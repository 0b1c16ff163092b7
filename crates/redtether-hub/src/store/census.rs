//! Counts for the hub's metrics: how many devices' newest deployment and newest policy are in
//! each state. Read at each scrape; only the `state` of each record is decoded (the envelopes
//! are skipped over, not built).

use super::{SledStore, StoreError, device_key};
use redtether_proto::wire::{DeployState, PolicyState};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct DeployStateOnly {
    state: DeployState,
}

#[derive(Deserialize)]
struct PolicyStateOnly {
    state: PolicyState,
}

/// Devices by the state of their newest deployment and of their newest policy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    pub devices: u64,
    pub revoked: u64,
    pub deployments: BTreeMap<&'static str, u64>,
    pub policies: BTreeMap<&'static str, u64>,
}

pub fn deploy_state_name(state: DeployState) -> &'static str {
    match state {
        DeployState::Pending => "pending",
        DeployState::Sent => "sent",
        DeployState::Applying => "applying",
        DeployState::Applied => "applied",
        DeployState::RolledBack => "rolled_back",
        DeployState::Failed => "failed",
    }
}

impl SledStore {
    pub fn census(&self) -> Result<Census, StoreError> {
        let mut census = Census::default();
        for device in self.devices()? {
            census.devices += 1;
            census.revoked += u64::from(device.revoked);
            let newest = self.deployments.scan_prefix(device_key(&device.id, &[])).values().next_back().transpose()?;
            if let Some(bytes) = newest {
                let record: DeployStateOnly = serde_json::from_slice(&bytes).map_err(StoreError::Corrupt)?;
                *census.deployments.entry(deploy_state_name(record.state)).or_default() += 1;
            }
            if let Some(bytes) = self.policies.get(device.id.as_bytes())? {
                let record: PolicyStateOnly = serde_json::from_slice(&bytes).map_err(StoreError::Corrupt)?;
                *census.policies.entry(record.state.as_str()).or_default() += 1;
            }
        }
        Ok(census)
    }
}
