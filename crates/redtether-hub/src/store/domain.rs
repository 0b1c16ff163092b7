//! What the hub keeps, as domain traits with two backends: the embedded sled store of one hub
//! (`HubStore`, the default) and PostgreSQL shared by several hubs (`super::postgres::PgStore`).
//! Each trait states the guarantees callers rely on; the conformance suite
//! (`tests/store_conformance.rs`) checks both backends against them, concurrency included.
//!
//! The hub holds its store as `Arc<HubStore>` (`dyn Store`); callers bring the traits into
//! scope with `use crate::store::prelude::*`. Methods that take closures are object-safe here
//! (`&dyn Fn`, `&mut dyn FnMut`); [`StoreExt`] gives them back their generic, typed form.

use super::{ApiTokenRecord, OperatorRecord, SessionRecord};
use super::{
    AuditFilter, AuditPage, Census, Cursor, DeploymentRecord, DeviceRecord, FleetAuditError, GroupRecord, HubEvent,
    HubTokenRecord, MadePolicy, MembershipChange, PipelineRecord, PolicyChange, PolicyError, PolicyRecord,
    PolicyUpdate, PresenceSample, SnapshotRecord, StoreError, StoreLatency,
};
use crate::identity::TokenScope;
use crate::rollout::Rollout;
use redtether_proto::audit::{Actor, HubEventKind, Ingested, StoredEvent};
use redtether_proto::policy::Policy;
use redtether_proto::wire::{DeployState, EnrollRefusal, PolicyReport};
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
    /// Not made durable at once (what the hub refreshes on every connection goes through here):
    /// the next flush, or a moment, makes it so.
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

    /// Every device a registered hub holds, with that hub, in device order.
    fn holdings(&self) -> Result<Vec<(String, HubEntry)>, StoreError>;

    /// Removes `hub`'s holding of `device`, whatever its epoch: for a hub cleaning up a holding
    /// it no longer has a session for. Returns whether there was one.
    fn drop_holding(&self, device: &str, hub: &str) -> Result<bool, StoreError>;

    /// Removes a hub and its holdings at once (it is stopping: its devices are offline until
    /// they reach another hub, rather than until it is declared dead).
    fn leave(&self, hub: &str) -> Result<(), StoreError>;
}

/// Secrets every hub of a cluster must hold alike (the stateless-reset key, the CA key
/// encrypted under the key-encryption key): stored once, by whichever hub comes first.
pub trait SharedSecrets: Send + Sync {
    /// The secret stored under `name`; `candidate` is stored and returned when there is none
    /// yet. Of hubs racing to store one, all get the same winner.
    fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
}

/// Operator accounts, their API tokens and login sessions.
pub trait Operators: Send + Sync {
    /// Adds an account, durably; returns its setup code (valid for `setup_secs`). A name
    /// taken is a `Conflict`.
    fn add_operator(&self, record: OperatorRecord, setup_secs: u64) -> Result<String, StoreError>;
    fn operator(&self, name: &str) -> Result<Option<OperatorRecord>, StoreError>;
    /// Every account, in name order.
    fn operators(&self) -> Result<Vec<OperatorRecord>, StoreError>;
    /// Changes an account in one step, durably (a concurrent change is applied on top, `change`
    /// then runs again). Returns the new record, `None` for an unknown name.
    fn modify_operator(
        &self,
        name: &str,
        change: &mut (dyn for<'r> FnMut(&'r mut OperatorRecord) + Send),
    ) -> Result<Option<OperatorRecord>, StoreError>;
    /// Removes an account with its tokens and sessions; returns the record it had.
    fn remove_operator(&self, name: &str) -> Result<OperatorRecord, StoreError>;
    /// The account whose unexpired setup code this is.
    fn operator_by_setup_code(&self, code: &str, now: u64) -> Result<Option<OperatorRecord>, StoreError>;
    /// Makes an API token; returns it (shown once). A name the operator already uses is a
    /// `Conflict`.
    fn add_api_token(
        &self,
        operator: &str,
        name: &str,
        scope: TokenScope,
        now: u64,
        expires: u64,
    ) -> Result<String, StoreError>;
    /// The operator's tokens, in name order.
    fn api_tokens(&self, operator: &str) -> Result<Vec<ApiTokenRecord>, StoreError>;
    /// The record of a presented token, expired or not (the caller decides).
    fn api_token(&self, token: &str) -> Result<Option<ApiTokenRecord>, StoreError>;
    /// Whether a token of that name existed.
    fn revoke_api_token(&self, operator: &str, name: &str) -> Result<bool, StoreError>;
    /// Starts a session; returns its id (the cookie's value) and record.
    fn create_session(&self, operator: &str, method: &str, now: u64) -> Result<(String, SessionRecord), StoreError>;
    fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Notes a session's use (need not be durable).
    fn touch_session(&self, id: &str, now: u64) -> Result<(), StoreError>;
    fn end_session(&self, id: &str) -> Result<(), StoreError>;
    /// Ends every session of `operator`; returns how many there were.
    fn end_sessions(&self, operator: &str) -> Result<usize, StoreError>;
}

/// Deployments the hub signed, snapshots it keeps, and each device's latest SBOM.
pub trait Deployments: Send + Sync {
    /// Gives `device` its next number and stores the deployment `make` builds with it; every
    /// deployment of the device still pending is superseded (failed). Numbers given at once
    /// are distinct.
    fn create_deployment(
        &self,
        device: &str,
        make: Box<dyn FnOnce(u64) -> DeploymentRecord + Send + '_>,
    ) -> Result<DeploymentRecord, StoreError>;
    /// The device's deployments, oldest first.
    fn deployments(&self, device: &str) -> Result<Vec<DeploymentRecord>, StoreError>;
    fn deployment(&self, device: &str, id: &str) -> Result<Option<DeploymentRecord>, StoreError>;
    /// The newest deployment, if it is not finished: what a session should (re)send.
    fn deployment_to_send(&self, device: &str) -> Result<Option<DeploymentRecord>, StoreError>;
    /// Records a deployment's new state; one that is over stays as it ended. Returns whether
    /// anything changed.
    fn update_deployment(
        &self,
        device: &str,
        id: &str,
        state: DeployState,
        detail: serde_json::Value,
        now: u64,
    ) -> Result<bool, StoreError>;
    fn add_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError>;
    /// Any snapshot by its id, whichever device it came from.
    fn snapshot_by_id(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError>;
    /// A device's snapshots, oldest first.
    fn snapshots(&self, device: &str) -> Result<Vec<SnapshotRecord>, StoreError>;
    fn snapshot(&self, device: &str, id: &str) -> Result<Option<SnapshotRecord>, StoreError>;
    /// Keeps the device's SBOM (and its count of outdated packages on the device record).
    fn put_sbom(&self, device: &str, sbom: &serde_json::Value) -> Result<(), StoreError>;
    fn sbom(&self, device: &str) -> Result<Option<serde_json::Value>, StoreError>;
}

/// Each device's newest policy and the tokens the hub made for it.
pub trait Policies: Send + Sync {
    fn policy(&self, device: &str) -> Result<Option<PolicyRecord>, StoreError>;
    /// The tokens the hub made for `device`, by name.
    fn policy_tokens(&self, device: &str) -> Result<Vec<HubTokenRecord>, StoreError>;
    /// Makes `device`'s next policy from `change`, signed with `sign`, stored durably as
    /// pending: concurrent changes (through any hub) get distinct, increasing numbers and the
    /// newest stored is the highest.
    fn make_policy(
        &self,
        device: &str,
        change: PolicyChange,
        operator: &str,
        now: u64,
        sign: Box<dyn FnOnce(&Policy) -> String + Send + '_>,
    ) -> Result<MadePolicy, PolicyError>;
    /// Keeps what the device said about policy `report.number`, if that is the newest.
    fn update_policy(&self, device: &str, report: &PolicyReport, now: u64) -> Result<PolicyUpdate, StoreError>;
}

/// Device groups, rollouts and pipelines.
pub trait Groups: Send + Sync {
    /// A name taken is a `Conflict`.
    fn create_group(&self, record: &GroupRecord) -> Result<(), StoreError>;
    fn group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError>;
    /// Every group, in name order.
    fn groups(&self) -> Result<Vec<GroupRecord>, StoreError>;
    fn modify_group(
        &self,
        name: &str,
        change: &mut (dyn for<'r> FnMut(&'r mut GroupRecord) + Send),
    ) -> Result<Option<GroupRecord>, StoreError>;
    /// The ids of the group's devices.
    fn group_members(&self, name: &str) -> Result<Vec<String>, StoreError>;
    /// Whether it existed; a group with devices is a `Conflict`.
    fn delete_group(&self, name: &str) -> Result<bool, StoreError>;
    /// Moves devices into (`add`, from whatever group they were in) and out of the group, all
    /// or none: an unknown group or device is a `Conflict`.
    fn change_group_devices(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<MembershipChange, StoreError>;
    /// Stores a rollout whole, durably.
    fn put_rollout(&self, rollout: &Rollout) -> Result<(), StoreError>;
    fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError>;
    fn rollouts(&self) -> Result<Vec<Rollout>, StoreError>;
    /// A name taken is a `Conflict`.
    fn create_pipeline(&self, record: &PipelineRecord) -> Result<(), StoreError>;
    fn pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError>;
    fn pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError>;
    fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError>;
}

/// What the hub records: operators' actions and events about devices, in the hub's
/// hash-chained journal, and where its records are timed and made durable.
pub trait Journal: Send + Sync {
    /// Records an operator's action durably: the caller answers the action after this.
    fn record(
        &self,
        kind: HubEventKind,
        actor: Actor,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<StoredEvent, StoreError>;
    /// Records an event about a device (durable with the next flush).
    fn record_event(&self, device: &str, kind: HubEventKind, detail: serde_json::Value)
    -> Result<HubEvent, StoreError>;
    /// The events recorded about `device`, oldest first.
    fn events(&self, device: &str) -> Result<Vec<HubEvent>, StoreError>;
    /// Events recorded from now on (this hub's), for whoever watches (the alerts).
    fn subscribe_recorded(&self) -> tokio::sync::broadcast::Receiver<StoredEvent>;
    /// Events the journal could not write since the hub started.
    fn journal_failures(&self) -> u64;
    /// Makes every change so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// How long the main operations take.
    fn latency(&self) -> &StoreLatency;
}

/// The fleet audit: devices' and the hub's events, newest first, filtered.
pub trait FleetAudit: Send + Sync {
    fn audit_page(&self, filter: &AuditFilter, before: Option<&Cursor>, limit: usize) -> Result<AuditPage, StoreError>;
    /// Every matching row, newest first, to `write`; returns how many.
    fn audit_export(
        &self,
        filter: &AuditFilter,
        write: &mut (dyn FnMut(&super::AuditRow) -> std::io::Result<()> + Send),
    ) -> Result<u64, FleetAuditError>;
}

/// Fleet-wide figures: the census of states and the online history.
pub trait FleetFigures: Send + Sync {
    fn census(&self) -> Result<Census, StoreError>;
    /// Records a sample and drops those older than a week.
    fn record_presence(&self, sample: PresenceSample) -> Result<(), StoreError>;
    /// The samples taken at or after `since`, oldest first.
    fn presence_since(&self, since: u64) -> Result<Vec<PresenceSample>, StoreError>;
}

/// A doorbell between the hubs: "something changed for this device" (a deployment or policy
/// waiting), rung by the hub that made the change, heard by the hub holding the device, which
/// reads what changed from the store. A hint only: a ring missed (a hub reconnecting to the
/// database) is caught up at the device's next connection.
pub trait Doorbell: Send + Sync {
    fn ring(&self, payload: &str) -> Result<(), StoreError>;
    /// The rings from now on (each hub's, this one's included).
    fn listen(&self) -> tokio::sync::mpsc::UnboundedReceiver<String>;
}

/// Everything the hubs of a cluster share.
pub trait SharedStore: Devices + EnrollTokens + DeviceAudit + Presence + SharedSecrets + Doorbell {}

impl<T: Devices + EnrollTokens + DeviceAudit + Presence + SharedSecrets + Doorbell> SharedStore for T {}

/// Everything the hub keeps: what `HubStore` is.
pub trait Store:
    SharedStore + Operators + Deployments + Policies + Groups + Journal + FleetAudit + FleetFigures
{
}

impl<T: SharedStore + Operators + Deployments + Policies + Groups + Journal + FleetAudit + FleetFigures> Store for T {}

/// The closure-taking methods in their typed form, for any store.
pub trait StoreExt: Store {
    /// Changes an operator's record in one step; returns what `change` returned (its last run),
    /// `None` for an unknown name.
    fn update_operator<T: Send>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut OperatorRecord) -> T + Send,
    ) -> Result<Option<T>, StoreError> {
        let mut out = None;
        let changed = self.modify_operator(name, &mut |record| out = Some(change(record)))?;
        Ok(changed.and(out))
    }

    /// Updates what the hub knows about a connected device (need not be durable: it is
    /// refreshed on every connection).
    fn update_device(&self, id: &str, change: impl Fn(&mut DeviceRecord) + Send + Sync) -> Result<(), StoreError> {
        self.latency().time("update_device", || self.modify_device(id, &change).map(|_| ()))
    }

    fn update_group(
        &self,
        name: &str,
        mut change: impl FnMut(&mut GroupRecord) + Send,
    ) -> Result<Option<GroupRecord>, StoreError> {
        self.modify_group(name, &mut change)
    }

    fn audit_export_to(
        &self,
        filter: &AuditFilter,
        mut write: impl FnMut(&super::AuditRow) -> std::io::Result<()> + Send,
    ) -> Result<u64, FleetAuditError> {
        self.audit_export(filter, &mut write)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
