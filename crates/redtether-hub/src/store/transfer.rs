//! Moving a hub's records from the embedded store to PostgreSQL (`redtether-hub
//! migrate-store`): every record as it is kept — secrets as the digests they are stored as, so
//! tokens, sessions and setup codes go on working — read from the sled store and the hub's
//! journal (`export`), written by the PostgreSQL store (`postgres::PgStore::import`). Which hub
//! holds which device is not moved: it is rebuilt as devices connect.

use super::{
    ApiTokenRecord, DeploymentRecord, DeviceRecord, GroupRecord, HubTokenRecord, OperatorRecord, PipelineRecord,
    PolicyRecord, PresenceSample, SessionRecord, SnapshotRecord,
};
use crate::rollout::Rollout;
use redtether_proto::audit::StoredEvent;

/// One record as the store keeps it.
#[derive(Debug, Clone)]
pub enum Record {
    Device(Box<DeviceRecord>),
    Revoked {
        serial: String,
        device: String,
    },
    EnrollToken {
        digest: Vec<u8>,
        device: String,
        created: u64,
        expires: u64,
        used: bool,
        group: Option<String>,
    },
    Operator(Box<OperatorRecord>),
    ApiToken {
        digest: String,
        record: ApiTokenRecord,
    },
    Session {
        digest: String,
        record: SessionRecord,
    },
    DeployNumber {
        device: String,
        last: u64,
    },
    Deployment(Box<DeploymentRecord>),
    Snapshot(Box<SnapshotRecord>),
    Sbom {
        device: String,
        sbom: serde_json::Value,
    },
    Policy(Box<PolicyRecord>),
    PolicyToken {
        device: String,
        record: HubTokenRecord,
    },
    Group(Box<GroupRecord>),
    Rollout(Box<Rollout>),
    Pipeline(Box<PipelineRecord>),
    DeviceAudit {
        device: String,
        event: Box<StoredEvent>,
    },
    /// An event of the hub's journal, about `device` if it is one.
    HubEvent {
        device: Option<String>,
        event: Box<StoredEvent>,
    },
    Presence(PresenceSample),
    SharedSecret {
        name: String,
        value: Vec<u8>,
    },
}

impl Record {
    /// What it is, for the counts `migrate-store` prints and checks.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Device(_) => "devices",
            Record::Revoked { .. } => "revoked certificates",
            Record::EnrollToken { .. } => "enrollment tokens",
            Record::Operator(_) => "operators",
            Record::ApiToken { .. } => "API tokens",
            Record::Session { .. } => "sessions",
            Record::DeployNumber { .. } => "deployment counters",
            Record::Deployment(_) => "deployments",
            Record::Snapshot(_) => "snapshots",
            Record::Sbom { .. } => "SBOMs",
            Record::Policy(_) => "policies",
            Record::PolicyToken { .. } => "policy tokens",
            Record::Group(_) => "groups",
            Record::Rollout(_) => "rollouts",
            Record::Pipeline(_) => "pipelines",
            Record::DeviceAudit { .. } => "device audit events",
            Record::HubEvent { .. } => "hub events",
            Record::Presence(_) => "presence samples",
            Record::SharedSecret { .. } => "shared secrets",
        }
    }
}
