//! The messages of protocol version 1.

use serde::{Deserialize, Serialize};

/// Everything that travels on the control stream (and on the enrollment stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Frame {
    /// Agent → hub, first on the control stream.
    Hello {
        protocol: u32,
        agent_version: String,
    },
    /// Hub → agent, the answer to `hello`.
    Welcome {
        protocol: u32,
        hub_version: String,
    },
    /// Agent → hub, on connect and on every change.
    Status {
        status: DeviceStatus,
    },
    /// Either way; answered with `heartbeat_ack` carrying the same number.
    Heartbeat {
        n: u64,
    },
    HeartbeatAck {
        n: u64,
    },
    /// Hub → agent.
    Command {
        id: u64,
        command: Command,
    },
    /// Agent → hub, for the command with the same id.
    CommandResult {
        id: u64,
        ok: bool,
        detail: serde_json::Value,
    },
    /// Agent → hub: journal events in sequence order (each a stored audit event as JSON).
    AuditBatch {
        events: Vec<serde_json::Value>,
    },
    /// Hub → agent: every event up to `seq` is stored at the hub.
    AuditAck {
        seq: u64,
    },
    /// Hub → agent: a signed deployment envelope (see `deployment`).
    Deploy {
        deployment: String,
    },
    /// Agent → hub: where a deployment stands; sent on every change and again on every new
    /// control stream for the last one, so a result reached while offline arrives.
    DeployStatus {
        id: String,
        state: DeployState,
        detail: serde_json::Value,
    },
    /// Agent → hub: the device's CycloneDX SBOM, after each deployment.
    Sbom {
        sbom: serde_json::Value,
    },
    /// Agent → hub: a CSR for a new certificate (renewal).
    RenewRequest {
        csr_pem: String,
    },
    RenewResponse {
        cert_pem: String,
    },
    /// Agent → hub on the enrollment ALPN.
    Enroll {
        token: String,
        csr_pem: String,
    },
    /// Hub → agent: the certificate for the device, the CA, and the hub's signing key.
    Enrolled {
        device_id: String,
        cert_pem: String,
        ca_pem: String,
        hub_signing_key: String,
    },
    EnrollRefused {
        reason: EnrollRefusal,
    },
    /// Either way: what went wrong, before the stream is closed.
    Error {
        code: u32,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    RestartNodeRed,
    /// Answer with what the device runs now (flows, credentials still encrypted, modules,
    /// environment and settings overrides).
    Snapshot,
    /// Answer with the device's SBOM.
    Sbom,
}

/// Where a deployment stands (the hub adds `pending` and `sent` before the device has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    Pending,
    Sent,
    Applying,
    Applied,
    RolledBack,
    Failed,
}

impl DeployState {
    /// Whether the deployment is over, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(self, DeployState::Applied | DeployState::RolledBack | DeployState::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollRefusal {
    UnknownToken,
    UsedToken,
    ExpiredToken,
    BadCsr,
    /// The hub could not record the enrollment (its store failed); the token is still valid.
    HubError,
}

impl EnrollRefusal {
    pub fn describe(self) -> &'static str {
        match self {
            EnrollRefusal::UnknownToken => "the hub does not know this enrollment token",
            EnrollRefusal::UsedToken => "this enrollment token was already used",
            EnrollRefusal::ExpiredToken => "this enrollment token has expired",
            EnrollRefusal::BadCsr => "the hub could not use the certificate request",
            EnrollRefusal::HubError => {
                "the hub could not record the enrollment (see its log); the token is still valid, try again"
            }
        }
    }
}

/// What an agent reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeviceStatus {
    pub agent_version: String,
    /// Node-RED's status as `redtether status` shows it (`state`, `pid`, `restarts`, `since`).
    pub node_red: serde_json::Value,
    /// Journal events not yet acknowledged by the hub, and the newest sequence number.
    pub audit_backlog: u64,
    pub audit_last_seq: u64,
    pub gate_listen: String,
    pub protection: bool,
}

/// The header of a stream the hub opens for one forwarded client connection, before its raw
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHeader {
    /// What the bytes are: `http` (an HTTP/1.1 connection to the gate).
    pub kind: String,
    /// The hub's signed statement of who the operator is, for the gate.
    pub assertion: Option<String>,
}
