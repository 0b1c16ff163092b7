//! The hub's registry on disk (sled): enrolled devices, one-time enrollment tokens, operators,
//! revoked certificates, the events the hub records about devices, the audit events devices
//! deliver (deduplicated by event id), deployments, policies with their tokens (`policy`), and
//! the index the console's fleet audit pages read (`fleet_audit`).
//! Secrets (tokens) are kept as SHA-256 digests only.
//!
//! Several hubs share their records in PostgreSQL instead (`postgres`), behind the domain traits
//! (`domain`) this store implements too (`sled_backend`).
//!
//! `flush` is durable: sled's own flush does not survive a power cut, so it is followed by
//! `fdatasync` of sled's log file (`redtether_host::sled_open::LogFile`), as the agent's
//! journal does. A delivered audit batch is acknowledged only after that.

use crate::journal::{Durability, HubJournal};
use base64::Engine;
use redtether_host::sled_open;
use redtether_proto::audit::{Actor, BatchError, HubEventKind, Ingested, StoredEvent, check_batch, new_events};
use redtether_proto::deployment::Snapshot;
use redtether_proto::wire::{DeployState, DeviceStatus, EnrollRefusal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use std::path::Path;

mod census;
pub mod domain;
mod export;
mod fleet_audit;
mod groups;
mod latency;
mod operators;
mod policy;
pub mod postgres;
mod presence;
mod sled_backend;
pub mod transfer;
pub use crate::identity::OperatorRole;
pub use census::{Census, deploy_state_name};
pub use fleet_audit::{
    AuditFilter, AuditPage, AuditRow, CSV_HEADER, Cursor, DEFAULT_LIMIT, ExportFormat, FleetAuditError, FleetQuery,
    GroupScope, MAX_EXAMINED, MAX_LIMIT, QueryFor, RowHead, Source, csv_line,
};
pub use groups::{GroupRecord, MembershipChange, PipelineRecord, PipelineStage};
pub use latency::StoreLatency;
pub use operators::{AccountSource, ApiTokenRecord, OperatorRecord, SessionRecord, SetupCode};
pub use policy::{HubTokenRecord, MadePolicy, PolicyChange, PolicyError, PolicyRecord, PolicyUpdate};
pub use presence::PresenceSample;

/// The hub's store, whichever backend keeps it: the embedded sled store ([`SledStore`]) or
/// PostgreSQL ([`postgres::PgStore`]).
pub type HubStore = dyn domain::Store;

/// The store's traits, for calling its methods.
pub mod prelude {
    pub use super::domain::{
        Deployments, DeviceAudit, Devices, Doorbell, EnrollTokens, FleetAudit, FleetFigures, Groups, Journal,
        Operators, Policies, Presence, SharedSecrets, Store, StoreExt,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("hub store: {0}")]
    Db(#[from] sled::Error),
    /// The state dir's database is held open elsewhere.
    #[error("hub store: {0}")]
    Open(#[from] sled_open::OpenError),
    /// A record could not be read back.
    #[error("hub store: unreadable record: {0}")]
    Corrupt(#[source] serde_json::Error),
    /// A name is taken or missing.
    #[error("{0}")]
    Conflict(String),
    /// The data could not be made durable (a full disk, for one).
    #[error("hub store: {0}")]
    Sync(#[from] sled_open::SyncError),
    /// What a device sent is not a valid audit batch.
    #[error("invalid audit batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The hub's audit journal could not record an event.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The shared store (PostgreSQL) refused or failed a statement.
    #[error("hub store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to the shared store could be had in time.
    #[error("hub store: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: String,
    /// Unix seconds.
    pub enrolled: u64,
    pub cert_serial: String,
    pub cert_not_after: u64,
    pub revoked: bool,
    pub last_seen: Option<u64>,
    pub agent_version: Option<String>,
    /// The last status the agent pushed.
    pub status: Option<DeviceStatus>,
    /// The certificate renewal replaced, still accepted until the device first connects with
    /// the new one (so a device that could not store its renewed certificate is not locked out).
    #[serde(default)]
    pub previous_serial: Option<String>,
    /// Highest device audit seq the hub stored and acknowledged.
    #[serde(default)]
    pub audit_acked: u64,
    /// Delivered events the hub already had (resent after a lost acknowledgement).
    #[serde(default)]
    pub audit_duplicates: u64,
    /// The public key (SubjectPublicKeyInfo DER, hex) of the device's current certificate:
    /// what deployment credentials are sealed to.
    #[serde(default)]
    pub device_key: Option<String>,
    /// Packages of the device's latest SBOM with a newer version in the registry.
    #[serde(default)]
    pub sbom_outdated: Option<u32>,
    /// The group it belongs to, if any.
    #[serde(default)]
    pub group: Option<String>,
}

impl DeviceRecord {
    /// The record of a device enrolled at `now` with this certificate and key.
    pub fn enrolled(device_id: &str, cert_serial: &str, cert_not_after: u64, device_key: &str, now: u64) -> Self {
        DeviceRecord {
            id: device_id.to_string(),
            enrolled: now,
            cert_serial: cert_serial.to_string(),
            cert_not_after,
            revoked: false,
            last_seen: None,
            agent_version: None,
            status: None,
            audit_acked: 0,
            audit_duplicates: 0,
            previous_serial: None,
            device_key: Some(device_key.to_string()),
            sbom_outdated: None,
            group: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EnrollTokenRecord {
    device_id: String,
    created: u64,
    expires: u64,
    used: bool,
    /// The group the device joins when it enrolls.
    #[serde(default)]
    group: Option<String>,
}

/// A deployment the hub signed for a device, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub device: String,
    pub number: u64,
    pub state: DeployState,
    pub detail: serde_json::Value,
    pub flows_hash: String,
    pub operator: String,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    pub expires: u64,
    /// The snapshot it was made from, when deployed by snapshot id.
    pub snapshot: Option<String>,
    /// The signed envelope, as sent to the device.
    pub envelope: String,
}

impl DeploymentRecord {
    /// Marks a deployment still pending as replaced by `by` (made at `now`).
    fn supersede(&mut self, by: &str, now: u64) {
        self.state = DeployState::Failed;
        self.detail = serde_json::json!({ "reason": "superseded", "by": by });
        self.updated = now;
    }

    /// Takes what the device (or the session) says; a deployment that is over stays as it
    /// ended. Returns whether anything changed.
    fn report(&mut self, state: DeployState, detail: serde_json::Value, now: u64) -> bool {
        if self.state.is_final() || (self.state == state && self.detail == detail) {
            return false;
        }
        self.state = state;
        self.detail = detail;
        self.updated = now;
        true
    }
}

/// A snapshot kept at the hub (taken from a device), deployable by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub device: String,
    pub created: u64,
    pub operator: String,
    pub snapshot: Snapshot,
}

fn device_key(device: &str, rest: &[u8]) -> Vec<u8> {
    let mut key = device.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(rest);
    key
}

/// An event the hub records about a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubEvent {
    pub seq: u64,
    pub ts: String,
    pub device: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// The embedded store of one hub (sled, in the state directory).
pub struct SledStore {
    db: sled::Db,
    devices: sled::Tree,
    tokens: sled::Tree,
    operators: sled::Tree,
    /// Operators' API tokens: digest → [`ApiTokenRecord`].
    api_tokens: sled::Tree,
    /// Login sessions: id digest → [`SessionRecord`].
    sessions: sled::Tree,
    revoked: sled::Tree,
    events: sled::Tree,
    /// Delivered device audit events: device, 0, seq (big-endian), id → the event as sent.
    audit: sled::Tree,
    /// Deployments: device, 0, number (big-endian) → [`DeploymentRecord`].
    deployments: sled::Tree,
    /// Snapshots: device, 0, id → [`SnapshotRecord`].
    snapshots: sled::Tree,
    /// The latest SBOM of each device.
    sboms: sled::Tree,
    /// The last deployment number given to each device.
    deploy_numbers: sled::Tree,
    /// The newest policy of each device: device → [`PolicyRecord`].
    policies: sled::Tree,
    /// Tokens the hub made for devices: device, 0, name → [`HubTokenRecord`].
    policy_tokens: sled::Tree,
    /// The fleet audit's index (`fleet_audit`): every event by time, whole rows.
    audit_by_time: sled::Tree,
    /// The fleet audit's index by device: device first, each entry's kind and actor.
    audit_by_device: sled::Tree,
    /// Which layout the index was built with and how far into the hub journal it is.
    audit_index_meta: sled::Tree,
    /// Snapshot id → the device it was taken from (`""` for flows given through the API).
    snapshot_ids: sled::Tree,
    /// Device groups: name → [`GroupRecord`].
    groups: sled::Tree,
    /// Held across a membership change or a group's deletion (`groups`).
    group_lock: std::sync::Mutex<()>,
    /// Rollouts: id → `crate::rollout::Rollout`.
    rollouts: sled::Tree,
    /// Pipelines: name → [`PipelineRecord`].
    pipelines: sled::Tree,
    /// Held from journaling a hub event to indexing it, so the index takes hub events in
    /// journal order and knows the last one it has (`fleet_audit`).
    hub_event_order: std::sync::Mutex<()>,
    /// Held from reading a device's last policy number to storing the next (`make_policy`).
    policy_lock: std::sync::Mutex<()>,
    /// One is held (chosen by the device's id) from reading a device's records to writing what
    /// follows from them: two deliveries of one batch at once (a device's old and new session)
    /// must not both find an event new and index it twice, and of two deployments made at once
    /// the later must see the earlier to supersede it.
    device_locks: [std::sync::Mutex<()>; DEVICE_LOCKS],
    log: sled_open::LogFile,
    /// The hash-chained trail of every event recorded here (`crate::journal`).
    journal: HubJournal,
    /// How long the main operations take (the hub's metrics).
    pub latency: StoreLatency,
    /// Every event recorded, as recorded, for whoever watches (the alerts).
    recorded: tokio::sync::broadcast::Sender<StoredEvent>,
    /// The doorbell's listeners (one hub: the rings stay in the process).
    doorbell: std::sync::Mutex<Vec<tokio::sync::mpsc::UnboundedSender<String>>>,
}

/// How many devices' records may be changed at once (more share a lock).
const DEVICE_LOCKS: usize = 16;

/// Recorded events a slow watcher may fall behind by before it misses some.
const RECORDED_BACKLOG: usize = 4096;

fn audit_key(device: &str, seq: u64, id: &str) -> Vec<u8> {
    let mut key = device.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Who did what the hub records about a device: the operator named in the detail, otherwise
/// the hub itself.
fn hub_event_actor(detail: &serde_json::Value) -> Actor {
    detail.get("operator").and_then(|o| o.as_str()).map_or(Actor::System, Actor::user)
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Corrupt)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always encode")
}

impl SledStore {
    fn device_lock(&self, device: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(device);
        let lock = &self.device_locks[(hash % DEVICE_LOCKS as u64) as usize];
        lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens the registry (`<root>/db`) and the audit journal (`<root>/audit.jsonl`).
    pub fn open(root: &Path) -> Result<SledStore, StoreError> {
        let journal = HubJournal::open(root)?;
        let dir = &root.join("db");
        let config = sled::Config::new().path(dir).cache_capacity(8 * 1024 * 1024);
        let db = sled_open::open(&config, dir, sled_open::LOCK_WAIT)?;
        let log = sled_open::LogFile::open(dir)?;
        let store = SledStore {
            audit: db.open_tree("device_audit")?,
            log,
            devices: db.open_tree("devices")?,
            tokens: db.open_tree("enroll_tokens")?,
            operators: db.open_tree("operators")?,
            api_tokens: db.open_tree("api_tokens")?,
            sessions: db.open_tree("sessions")?,
            revoked: db.open_tree("revoked")?,
            events: db.open_tree("events")?,
            deployments: db.open_tree("deployments")?,
            snapshots: db.open_tree("snapshots")?,
            sboms: db.open_tree("sboms")?,
            deploy_numbers: db.open_tree("deploy_numbers")?,
            policies: db.open_tree("policies")?,
            policy_tokens: db.open_tree("policy_tokens")?,
            policy_lock: std::sync::Mutex::new(()),
            device_locks: std::array::from_fn(|_| std::sync::Mutex::new(())),
            audit_by_time: db.open_tree("audit_by_time")?,
            audit_by_device: db.open_tree("audit_by_device")?,
            audit_index_meta: db.open_tree("audit_index_meta")?,
            hub_event_order: std::sync::Mutex::new(()),
            snapshot_ids: db.open_tree("snapshot_ids")?,
            groups: db.open_tree("groups")?,
            group_lock: std::sync::Mutex::new(()),
            rollouts: db.open_tree("rollouts")?,
            pipelines: db.open_tree("pipelines")?,
            journal,
            recorded: tokio::sync::broadcast::channel(RECORDED_BACKLOG).0,
            doorbell: std::sync::Mutex::default(),
            db,
            latency: StoreLatency::default(),
        };
        store.open_fleet_audit_index(root)?;
        store.index_snapshot_ids()?;
        Ok(store)
    }

    /// Makes every change so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.latency.time("flush", || {
            self.journal.sync()?;
            Ok(self.log.sync(&self.db)?)
        })
    }

    /// Records an event of an operator's action in the hub's journal, durably: the caller
    /// answers the action only after this returned.
    pub fn record(
        &self,
        kind: HubEventKind,
        actor: Actor,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<StoredEvent, StoreError> {
        self.latency.time("record", || {
            let _order = self.hub_event_order.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let stored = self.journal.record(kind, actor, target, detail, Durability::Sync)?;
            self.index_hub_event(&stored, None)?;
            self.announce(&stored);
            Ok(stored)
        })
    }

    /// Events recorded from now on (the journal's trail as it grows).
    pub fn subscribe_recorded(&self) -> tokio::sync::broadcast::Receiver<StoredEvent> {
        self.recorded.subscribe()
    }

    /// How many events the hub's journal could not write since the hub started.
    pub fn journal_failures(&self) -> u64 {
        self.journal.failures()
    }

    fn announce(&self, stored: &StoredEvent) {
        // Cloned only when someone listens.
        if self.recorded.receiver_count() > 0 {
            let _ = self.recorded.send(stored.clone());
        }
    }

    /// A one-time enrollment token for `device_id`, valid for `lifetime_secs`.
    pub fn create_enroll_token(
        &self,
        device_id: &str,
        lifetime_secs: u64,
        group: Option<&str>,
        now: u64,
    ) -> Result<String, StoreError> {
        let token = secret("rte_");
        let record = EnrollTokenRecord {
            device_id: device_id.to_string(),
            created: now,
            expires: now + lifetime_secs,
            used: false,
            group: group.map(str::to_string),
        };
        self.tokens.insert(digest(&token), encode(&record))?;
        self.flush()?;
        Ok(token)
    }

    /// The device a token is for, if it may be used now (it is not consumed).
    pub fn check_enroll_token(&self, token: &str, now: u64) -> Result<Result<String, EnrollRefusal>, StoreError> {
        let Some(bytes) = self.tokens.get(digest(token))? else { return Ok(Err(EnrollRefusal::UnknownToken)) };
        let record: EnrollTokenRecord = decode(&bytes)?;
        Ok(if record.used {
            Err(EnrollRefusal::UsedToken)
        } else if now >= record.expires {
            Err(EnrollRefusal::ExpiredToken)
        } else {
            Ok(record.device_id)
        })
    }

    /// The group a token's device joins when it enrolls.
    pub fn enroll_token_group(&self, token: &str) -> Result<Option<String>, StoreError> {
        let Some(bytes) = self.tokens.get(digest(token))? else { return Ok(None) };
        Ok(decode::<EnrollTokenRecord>(&bytes)?.group)
    }

    /// Marks a token used, atomically: of two enrollments racing with one token, one wins.
    pub fn consume_enroll_token(&self, token: &str) -> Result<bool, StoreError> {
        let key = digest(token);
        let Some(old) = self.tokens.get(&key)? else { return Ok(false) };
        let mut record: EnrollTokenRecord = decode(&old)?;
        if record.used {
            return Ok(false);
        }
        record.used = true;
        let swapped = self.tokens.compare_and_swap(&key, Some(old), Some(encode(&record)))?.is_ok();
        self.flush()?;
        Ok(swapped)
    }

    /// Gives a consumed token back, when the enrollment it was consumed for could not be
    /// recorded: a token is used up only by a successful enrollment.
    pub fn release_enroll_token(&self, token: &str) -> Result<(), StoreError> {
        let key = digest(token);
        if let Some(old) = self.tokens.get(&key)? {
            let mut record: EnrollTokenRecord = decode(&old)?;
            record.used = false;
            self.tokens.insert(&key, encode(&record))?;
            self.flush()?;
        }
        Ok(())
    }

    /// Records an enrollment; a device enrolling again has its previous certificate revoked.
    pub fn enroll_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        if let Some(previous) = self.device(device_id)? {
            self.revoked.insert(previous.cert_serial.as_bytes(), device_id.as_bytes())?;
        }
        let record = DeviceRecord::enrolled(device_id, cert_serial, cert_not_after, device_key, now);
        self.devices.insert(device_id.as_bytes(), encode(&record))?;
        self.flush()
    }

    /// Records a renewal: the new certificate is the device's, the old one stays accepted until
    /// the new one is used.
    pub fn renew_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
    ) -> Result<(), StoreError> {
        self.update_device(device_id, |d| {
            d.device_key = Some(device_key.to_string());
            d.previous_serial = Some(std::mem::replace(&mut d.cert_serial, cert_serial.to_string()));
            d.cert_not_after = cert_not_after;
        })?;
        self.flush()
    }

    pub fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.devices.get(id.as_bytes())?.map(|b| decode(&b)).transpose()
    }

    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Updates what the hub knows about a connected device (not flushed: it is refreshed on
    /// every connection).
    pub fn update_device(&self, id: &str, change: impl Fn(&mut DeviceRecord)) -> Result<(), StoreError> {
        self.latency.time("update_device", || self.modify_device(id, change).map(|_| ()))
    }

    /// Changes a device's record atomically (compare and swap, again if another change came
    /// between): a status push and a group change at once both stay. Returns the new record.
    pub(crate) fn modify_device(
        &self,
        id: &str,
        change: impl Fn(&mut DeviceRecord),
    ) -> Result<Option<DeviceRecord>, StoreError> {
        loop {
            let Some(old) = self.devices.get(id.as_bytes())? else { return Ok(None) };
            let mut record: DeviceRecord = decode(&old)?;
            change(&mut record);
            if self.devices.compare_and_swap(id.as_bytes(), Some(old), Some(encode(&record)))?.is_ok() {
                return Ok(Some(record));
            }
        }
    }

    /// Revokes a device's certificate; returns its serial.
    pub fn revoke_device(&self, id: &str) -> Result<String, StoreError> {
        let Some(mut record) = self.device(id)? else { return Err(StoreError::Conflict(format!("no device {id:?}"))) };
        record.revoked = true;
        self.revoked.insert(record.cert_serial.as_bytes(), id.as_bytes())?;
        self.devices.insert(id.as_bytes(), encode(&record))?;
        self.flush()?;
        Ok(record.cert_serial)
    }

    /// Serial numbers of every revoked certificate.
    pub fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        self.revoked.iter().keys().map(|k| Ok(String::from_utf8_lossy(&k?).into_owned())).collect()
    }

    /// Adds an operator; returns their API token (shown once).
    /// Records an event about a device.
    pub fn record_event(
        &self,
        device: &str,
        kind: HubEventKind,
        detail: serde_json::Value,
    ) -> Result<HubEvent, StoreError> {
        self.latency.time("record_event", || self.record_event_untimed(device, kind, detail))
    }

    fn record_event_untimed(
        &self,
        device: &str,
        kind: HubEventKind,
        detail: serde_json::Value,
    ) -> Result<HubEvent, StoreError> {
        let _order = self.hub_event_order.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored = self.journal.record(kind, hub_event_actor(&detail), device, detail.clone(), Durability::Lazy)?;
        // The per-device rows the device's audit view reads (with the fleet audit's index
        // entry); the journal is the record.
        let event = HubEvent {
            seq: stored.seq,
            ts: stored.ts.clone(),
            device: device.to_string(),
            kind: stored.kind.clone(),
            detail,
        };
        self.index_hub_event(&stored, Some(&event))?;
        self.announce(&stored);
        Ok(event)
    }

    /// Stores a batch of the device's audit events durably; an event the hub already has (same
    /// seq and id) is counted as a duplicate and kept once. The caller acknowledges `ack` only
    /// after this returned.
    pub fn ingest_audit(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError> {
        self.latency.time("ingest_audit", || self.ingest_audit_untimed(device, events))
    }

    fn ingest_audit_untimed(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError> {
        check_batch(events)?;
        let done = {
            let _one_delivery = self.device_lock(device);
            let (fresh, done) = new_events(events, |seq, id| self.audit.contains_key(audit_key(device, seq, id)))?;
            if done.ack == 0 {
                return Ok(done);
            }
            self.store_device_events(device, &fresh)?;
            self.update_device(device, |d| {
                d.audit_acked = d.audit_acked.max(done.ack);
                d.audit_duplicates += done.duplicates as u64;
            })?;
            done
        };
        // Outside the lock: a delivery that found these events already stored by another still
        // syncs them before it is acknowledged.
        self.flush()?;
        Ok(done)
    }

    /// The device's delivered audit events with seq after `after`, in seq order.
    pub fn device_audit(&self, device: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let mut prefix = device.as_bytes().to_vec();
        prefix.push(0);
        let mut start = prefix.clone();
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        let mut end = prefix;
        end.extend_from_slice(&[0xff; 9]);
        self.audit.range(start..end).values().map(|v| decode(&v?)).collect()
    }

    /// Gives `device` its next deployment number and stores the deployment `make` builds with
    /// it; every deployment of the device still waiting to be sent is superseded.
    pub fn create_deployment(
        &self,
        device: &str,
        make: impl FnOnce(u64) -> DeploymentRecord,
    ) -> Result<DeploymentRecord, StoreError> {
        let _one_at_a_time = self.device_lock(device);
        let next = self.deploy_numbers.update_and_fetch(device.as_bytes(), |old| {
            let n = old.and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        let number = next.and_then(|b| b.as_ref().try_into().ok()).map_or(1, u64::from_be_bytes);
        let record = make(number);
        let now = record.created;
        for mut older in self.deployments(device)? {
            if older.state == DeployState::Pending {
                older.supersede(&record.id, now);
                self.deployments.insert(device_key(device, &older.number.to_be_bytes()), encode(&older))?;
            }
        }
        self.deployments.insert(device_key(device, &number.to_be_bytes()), encode(&record))?;
        self.flush()?;
        Ok(record)
    }

    /// The device's deployments, oldest first.
    pub fn deployments(&self, device: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.deployments.scan_prefix(device_key(device, &[])).values().map(|v| decode(&v?)).collect()
    }

    pub fn deployment(&self, device: &str, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        Ok(self.deployments(device)?.into_iter().find(|d| d.id == id))
    }

    /// The newest deployment the device has not finished, if it is the newest of all: what a
    /// session should (re)send.
    pub fn deployment_to_send(&self, device: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let newest = self.deployments.scan_prefix(device_key(device, &[])).values().next_back().transpose()?;
        Ok(newest.map(|v| decode::<DeploymentRecord>(&v)).transpose()?.filter(|d| !d.state.is_final()))
    }

    /// Records what the device (or the session) says about deployment `id`. A deployment that
    /// is over stays as it ended. Returns whether anything changed.
    pub fn update_deployment(
        &self,
        device: &str,
        id: &str,
        state: DeployState,
        detail: serde_json::Value,
        now: u64,
    ) -> Result<bool, StoreError> {
        let Some(mut record) = self.deployment(device, id)? else { return Ok(false) };
        if !record.report(state, detail, now) {
            return Ok(false);
        }
        self.deployments.insert(device_key(device, &record.number.to_be_bytes()), encode(&record))?;
        self.flush()?;
        Ok(true)
    }

    pub fn add_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        (&self.snapshots, &self.snapshot_ids)
            .transaction(|(snapshots, ids)| {
                snapshots.insert(device_key(&record.device, record.id.as_bytes()), encode(record))?;
                ids.insert(record.id.as_bytes(), record.device.as_bytes())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
                sled::transaction::TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })?;
        self.flush()
    }

    /// Any snapshot by its id, whichever device it came from: snapshots deploy anywhere.
    pub fn snapshot_by_id(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let Some(device) = self.snapshot_ids.get(id.as_bytes())? else { return Ok(None) };
        self.snapshot(&String::from_utf8_lossy(&device), id)
    }

    /// Fills the snapshot id index for snapshots kept before it existed (once: afterwards the
    /// two are written together).
    fn index_snapshot_ids(&self) -> Result<(), StoreError> {
        if !self.snapshot_ids.is_empty() || self.snapshots.is_empty() {
            return Ok(());
        }
        for value in self.snapshots.iter().values() {
            let record: SnapshotRecord = decode(&value?)?;
            self.snapshot_ids.insert(record.id.as_bytes(), record.device.as_bytes())?;
        }
        self.flush()
    }

    pub fn snapshots(&self, device: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let mut all: Vec<SnapshotRecord> = self
            .snapshots
            .scan_prefix(device_key(device, &[]))
            .values()
            .map(|v| decode(&v?))
            .collect::<Result<_, _>>()?;
        all.sort_by_key(|s| s.created);
        Ok(all)
    }

    pub fn snapshot(&self, device: &str, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        self.snapshots.get(device_key(device, id.as_bytes()))?.map(|v| decode(&v)).transpose()
    }

    pub fn put_sbom(&self, device: &str, sbom: &serde_json::Value) -> Result<(), StoreError> {
        self.sboms.insert(device.as_bytes(), encode(sbom))?;
        // Kept with the device, so the fleet's lists need not read every SBOM.
        self.update_device(device, |d| d.sbom_outdated = Some(crate::sbom_view::outdated_count(sbom)))?;
        self.flush()
    }

    pub fn sbom(&self, device: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.sboms.get(device.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// The events recorded about `device`, oldest first.
    pub fn events(&self, device: &str) -> Result<Vec<HubEvent>, StoreError> {
        let mut prefix = device.as_bytes().to_vec();
        prefix.push(0);
        self.events.scan_prefix(prefix).values().map(|v| decode(&v?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::audit::{Actor, AuditEvent, AuditKind};

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("hub")).unwrap();
        (dir, s)
    }

    #[test]
    fn enrollment_tokens_are_one_time_and_expire() {
        let (_d, s) = store();
        let t = s.create_enroll_token("pump-1", 3600, None, 1000).unwrap();
        assert_eq!(s.check_enroll_token(&t, 1000).unwrap(), Ok("pump-1".into()));
        assert_eq!(s.check_enroll_token(&t, 4600).unwrap(), Err(EnrollRefusal::ExpiredToken));
        assert_eq!(s.check_enroll_token("rte_nope", 1000).unwrap(), Err(EnrollRefusal::UnknownToken));
        assert!(s.consume_enroll_token(&t).unwrap());
        assert!(!s.consume_enroll_token(&t).unwrap(), "only once");
        assert_eq!(s.check_enroll_token(&t, 1000).unwrap(), Err(EnrollRefusal::UsedToken));
        s.release_enroll_token(&t).unwrap();
        assert_eq!(
            s.check_enroll_token(&t, 1000).unwrap(),
            Ok("pump-1".into()),
            "given back after a failed enrollment"
        );
    }

    fn event(seq: u64, id: &str, kind: AuditKind) -> StoredEvent {
        let e = AuditEvent::new(kind, Actor::System, "t");
        StoredEvent::seal(e, seq, id.into(), "2026-12-05T00:00:00.000Z".into(), &redtether_proto::audit::GENESIS).0
    }

    #[test]
    fn delivered_audit_is_kept_once_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub");
        let first = [event(1, "e1", AuditKind::AgentStarted), event(2, "e2", AuditKind::ConfigLoaded)];
        {
            let s = SledStore::open(&path).unwrap();
            s.enroll_device("pump-1", "aa", 99, "", 1).unwrap();
            assert_eq!(s.ingest_audit("pump-1", &first).unwrap(), Ingested { stored: 2, duplicates: 0, ack: 2 });
            // The acknowledgement was lost; the agent sends from its cursor again, and more.
            let again = [first[1].clone(), event(3, "e3", AuditKind::NodeRedStarted)];
            assert_eq!(s.ingest_audit("pump-1", &again).unwrap(), Ingested { stored: 1, duplicates: 1, ack: 3 });
            let backwards = [event(5, "x", AuditKind::AuthFailed), event(4, "y", AuditKind::AuthFailed)];
            assert!(matches!(s.ingest_audit("pump-1", &backwards), Err(StoreError::InvalidBatch(_))));
        }
        let s = SledStore::open(&path).unwrap();
        let kinds: Vec<String> = s.device_audit("pump-1", 0).unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["agent.started", "config.loaded", "nodered.started"]);
        assert_eq!(s.device_audit("pump-1", 0).unwrap()[0], first[0], "kept exactly as sealed");
        assert_eq!(s.device_audit("pump-1", 2).unwrap().len(), 1);
        assert!(s.device_audit("pump-10", 0).unwrap().is_empty(), "a device's prefix is not another's");
        let d = s.device("pump-1").unwrap().unwrap();
        assert_eq!((d.audit_acked, d.audit_duplicates), (3, 1));
    }

    #[test]
    fn reenrolling_revokes_the_previous_certificate_and_revocation_sticks() {
        let (_d, s) = store();
        s.enroll_device("pump-1", "aa", 99, "", 1).unwrap();
        s.enroll_device("pump-1", "bb", 99, "", 2).unwrap();
        assert_eq!(s.revoked_serials().unwrap(), vec!["aa".to_string()]);
        assert_eq!(s.revoke_device("pump-1").unwrap(), "bb");
        assert!(s.device("pump-1").unwrap().unwrap().revoked);
        assert_eq!(s.revoked_serials().unwrap().len(), 2);
    }

    #[test]
    fn events_are_kept_per_device_in_order() {
        let (_d, s) = store();
        s.record_event("a", HubEventKind::DeviceConnected, serde_json::json!({})).unwrap();
        s.record_event("b", HubEventKind::DeviceConnected, serde_json::json!({})).unwrap();
        s.record_event("a", HubEventKind::DeviceDisconnected, serde_json::json!({})).unwrap();
        let kinds: Vec<String> = s.events("a").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["device.connected", "device.disconnected"]);
    }

    #[test]
    fn deployments_are_numbered_superseded_and_end_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let make = |id: &str| {
            let id = id.to_string();
            move |number| DeploymentRecord {
                id,
                device: "pump-1".into(),
                number,
                state: DeployState::Pending,
                detail: serde_json::Value::Null,
                flows_hash: String::new(),
                operator: "ci".into(),
                created: 1,
                updated: 1,
                expires: 9,
                snapshot: None,
                envelope: String::new(),
            }
        };
        assert_eq!(s.create_deployment("pump-1", make("a")).unwrap().number, 1);
        assert_eq!(s.create_deployment("pump-10", make("x")).unwrap().number, 1, "numbers are per device");
        assert_eq!(s.create_deployment("pump-1", make("b")).unwrap().number, 2);
        let a = s.deployment("pump-1", "a").unwrap().unwrap();
        assert_eq!((a.state, a.detail["reason"].as_str()), (DeployState::Failed, Some("superseded")));
        assert_eq!(s.deployment_to_send("pump-1").unwrap().unwrap().id, "b");
        assert!(s.update_deployment("pump-1", "b", DeployState::Applied, serde_json::json!({}), 2).unwrap());
        assert_eq!(s.deployment_to_send("pump-1").unwrap(), None, "nothing left to send");
        assert!(
            !s.update_deployment("pump-1", "b", DeployState::RolledBack, serde_json::json!({}), 3).unwrap(),
            "an ended deployment stays ended"
        );
        assert!(!s.update_deployment("pump-1", "nope", DeployState::Applied, serde_json::json!({}), 3).unwrap());
        assert!(
            !s.update_deployment("pump-10", "b", DeployState::Applied, serde_json::json!({}), 3).unwrap(),
            "another device's id"
        );
    }

    #[test]
    fn a_snapshot_is_found_by_its_id_whichever_device_it_came_from() {
        let (_d, s) = store();
        let record = |device: &str, id: &str| SnapshotRecord {
            id: id.into(),
            device: device.into(),
            created: 1,
            operator: "o".into(),
            snapshot: Snapshot {
                flows: vec![],
                credentials: None,
                modules: Default::default(),
                env: Default::default(),
                settings: Default::default(),
            },
        };
        s.add_snapshot(&record("pump-1", "s-1")).unwrap();
        s.add_snapshot(&record("pump-10", "s-2")).unwrap();
        assert_eq!(s.snapshot_by_id("s-2").unwrap(), Some(record("pump-10", "s-2")));
        assert_eq!(s.snapshot_by_id("s-1").unwrap(), Some(record("pump-1", "s-1")));
        assert_eq!(s.snapshot_by_id("1").unwrap(), None, "a suffix of an id is not the id");
        assert_eq!(s.snapshot_by_id("").unwrap(), None);
    }
}
