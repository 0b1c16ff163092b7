//! Device groups, rollouts and pipelines in the hub's store.
//!
//! A group is a name, a description and optionally the policy its members get; a device
//! belongs to at most one group, kept on its [`DeviceRecord`](super::DeviceRecord) (`group`), so
//! membership cannot disagree with itself. Membership changes hold one lock, so two operators
//! moving devices at once, or a device moved while its group is deleted, cannot leave a device
//! in a group that no longer exists.
//!
//! A rollout is stored whole (`crate::rollout::Rollout`: its plan, stage and every device's
//! state) under its id, written durably before the driver acts on it. A pipeline is its ordered
//! stages.

use super::{SledStore, StoreError, decode, encode};
use crate::rollout::{Plan, Rollout};
use redtether_proto::policy::PolicyDocument;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub description: String,
    /// Unix seconds.
    pub created: u64,
    pub created_by: String,
    /// The policy of every member without one of its own.
    #[serde(default)]
    pub policy: Option<PolicyDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineStage {
    pub group: String,
    /// How a promotion rolls out to this stage.
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub name: String,
    pub stages: Vec<PipelineStage>,
    pub created: u64,
    pub created_by: String,
}

/// What a membership change did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MembershipChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Devices taken from another group: device → that group.
    pub moved_from: std::collections::BTreeMap<String, String>,
}

/// What moving the `add` devices into group `name` and the other `devices` (id, current group)
/// out of it changes: the change to report, and each device whose group changes with its new
/// group. Devices already where they are asked to be are left alone.
pub(super) fn membership_change(
    name: &str,
    devices: &[(String, Option<String>)],
    add: &[String],
) -> (MembershipChange, Vec<(String, Option<String>)>) {
    let mut change = MembershipChange::default();
    let mut moves = Vec::new();
    for (id, before) in devices {
        let adding = add.contains(id);
        if adding && before.as_deref() != Some(name) {
            if let Some(other) = before {
                change.moved_from.insert(id.clone(), other.clone());
            }
            change.added.push(id.clone());
        } else if !adding && before.as_deref() == Some(name) {
            change.removed.push(id.clone());
        } else {
            continue;
        }
        moves.push((id.clone(), adding.then(|| name.to_string())));
    }
    (change, moves)
}

impl SledStore {
    fn group_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.group_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a group; `Conflict` if the name is taken.
    pub fn create_group(&self, record: &GroupRecord) -> Result<(), StoreError> {
        let _guard = self.group_lock();
        let made = self.groups.compare_and_swap(record.name.as_bytes(), None::<&[u8]>, Some(encode(record)))?;
        if made.is_err() {
            return Err(StoreError::Conflict(format!("a group named {:?} exists", record.name)));
        }
        self.flush()
    }

    pub fn group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.groups.get(name.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// Every group, by name.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.groups.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Changes a group's record (not its members).
    pub fn update_group(
        &self,
        name: &str,
        change: impl FnOnce(&mut GroupRecord),
    ) -> Result<Option<GroupRecord>, StoreError> {
        let _guard = self.group_lock();
        let Some(mut record) = self.group(name)? else { return Ok(None) };
        change(&mut record);
        self.groups.insert(name.as_bytes(), encode(&record))?;
        self.flush()?;
        Ok(Some(record))
    }

    /// The ids of a group's devices, in id order.
    pub fn group_members(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.devices()?.into_iter().filter(|d| d.group.as_deref() == Some(name)).map(|d| d.id).collect())
    }

    /// Deletes an empty group; `Conflict` when it has members, `Ok(false)` when there is none.
    pub fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        let _guard = self.group_lock();
        if self.group(name)?.is_none() {
            return Ok(false);
        }
        if !self.group_members(name)?.is_empty() {
            return Err(StoreError::Conflict(format!("group {name:?} has devices; move them out first")));
        }
        self.groups.remove(name.as_bytes())?;
        self.flush()?;
        Ok(true)
    }

    /// Puts `add` in group `name` (taking them out of any other) and takes `remove` out of it.
    /// Unknown devices are refused before anything changes; removing a device that is not a
    /// member changes nothing.
    pub fn change_group_devices(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<MembershipChange, StoreError> {
        let _guard = self.group_lock();
        if self.group(name)?.is_none() {
            return Err(StoreError::Conflict(format!("no group named {name:?}")));
        }
        let mut records = Vec::new();
        for id in add.iter().chain(remove) {
            match self.device(id)? {
                Some(d) => records.push((d.id, d.group)),
                None => return Err(StoreError::Conflict(format!("no device {id:?}"))),
            }
        }
        let (change, moves) = membership_change(name, &records, add);
        for (id, group) in moves {
            self.modify_device(&id, |d| d.group.clone_from(&group))?;
        }
        self.flush()?;
        Ok(change)
    }

    /// Stores a rollout durably (the driver's record of what it decided).
    pub fn put_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        self.rollouts.insert(rollout.id.as_bytes(), encode(rollout))?;
        self.flush()
    }

    pub fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        self.rollouts.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// Every rollout, oldest first (their ids are time-ordered UUIDs).
    pub fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        self.rollouts.iter().values().map(|v| decode(&v?)).collect()
    }

    pub fn create_pipeline(&self, record: &PipelineRecord) -> Result<(), StoreError> {
        let made = self.pipelines.compare_and_swap(record.name.as_bytes(), None::<&[u8]>, Some(encode(record)))?;
        if made.is_err() {
            return Err(StoreError::Conflict(format!("a pipeline named {:?} exists", record.name)));
        }
        self.flush()
    }

    pub fn pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        self.pipelines.get(name.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    pub fn pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError> {
        self.pipelines.iter().values().map(|v| decode(&v?)).collect()
    }

    pub fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.pipelines.remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }
}
