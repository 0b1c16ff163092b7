//! The control stream's messages, typed per direction: [`AgentFrame`] is what the agent sends,
//! [`HubFrame`] what the hub sends. The JSON is the same as when one enum carried both (a
//! `type` tag in snake case, no unknown fields), so either end of version 1 talks to the other.

use super::frame::Message;
use super::status::DeviceStatus;
use crate::audit::StoredEvent;
use serde::{Deserialize, Serialize};

/// Agent → hub, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentFrame {
    /// First on every control stream.
    Hello {
        protocol: u32,
        agent_version: String,
    },
    /// On connect and on every change.
    Status {
        status: DeviceStatus,
    },
    /// Answered with `heartbeat_ack` carrying the same number.
    Heartbeat {
        n: u64,
    },
    HeartbeatAck {
        n: u64,
    },
    /// The result of the hub's command with the same id.
    CommandResult {
        id: u64,
        ok: bool,
        detail: serde_json::Value,
    },
    /// Journal events in sequence order, each exactly as the device sealed it.
    AuditBatch {
        events: Vec<StoredEvent>,
    },
    /// Where a deployment stands; sent on every change and again on every new control stream
    /// for the last one, so a result reached while offline arrives.
    DeployStatus {
        id: String,
        state: DeployState,
        detail: serde_json::Value,
    },
    /// The device's CycloneDX SBOM, after each deployment.
    Sbom {
        sbom: serde_json::Value,
    },
    /// A CSR for a new certificate (renewal).
    RenewRequest {
        csr_pem: String,
    },
    /// What became of a policy: sent when one arrives and again on every new control stream for
    /// the last one, so an answer reached while offline arrives.
    PolicyStatus {
        number: u64,
        state: PolicyState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    /// What went wrong, before the stream is closed.
    Error {
        code: u32,
        message: String,
    },
}

/// Hub → agent, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HubFrame {
    /// The answer to `hello`.
    Welcome {
        protocol: u32,
        hub_version: String,
    },
    Heartbeat {
        n: u64,
    },
    HeartbeatAck {
        n: u64,
    },
    Command {
        id: u64,
        command: Command,
    },
    /// Every event up to `seq` is stored at the hub.
    AuditAck {
        seq: u64,
    },
    /// A signed deployment envelope (see [`crate::deployment`]).
    Deploy {
        deployment: String,
    },
    RenewResponse {
        cert_pem: String,
    },
    /// A signed policy envelope (see [`crate::policy`]): the device's security settings.
    Policy {
        policy: String,
    },
    /// What went wrong: before the stream is closed, or (code `RENEW_REFUSED`) a refused renewal.
    Error {
        code: u32,
        message: String,
    },
}

impl Message for AgentFrame {
    const OTHER_DIRECTION: &'static [&'static str] =
        &["welcome", "command", "audit_ack", "deploy", "renew_response", "policy", "enrolled", "enroll_refused"];

    fn kind(&self) -> &'static str {
        match self {
            AgentFrame::Hello { .. } => "hello",
            AgentFrame::Status { .. } => "status",
            AgentFrame::Heartbeat { .. } => "heartbeat",
            AgentFrame::HeartbeatAck { .. } => "heartbeat_ack",
            AgentFrame::CommandResult { .. } => "command_result",
            AgentFrame::AuditBatch { .. } => "audit_batch",
            AgentFrame::DeployStatus { .. } => "deploy_status",
            AgentFrame::Sbom { .. } => "sbom",
            AgentFrame::RenewRequest { .. } => "renew_request",
            AgentFrame::PolicyStatus { .. } => "policy_status",
            AgentFrame::Error { .. } => "error",
        }
    }
}

impl Message for HubFrame {
    const OTHER_DIRECTION: &'static [&'static str] = &[
        "hello",
        "status",
        "command_result",
        "audit_batch",
        "deploy_status",
        "sbom",
        "renew_request",
        "policy_status",
        "enroll",
    ];

    fn kind(&self) -> &'static str {
        match self {
            HubFrame::Welcome { .. } => "welcome",
            HubFrame::Heartbeat { .. } => "heartbeat",
            HubFrame::HeartbeatAck { .. } => "heartbeat_ack",
            HubFrame::Command { .. } => "command",
            HubFrame::AuditAck { .. } => "audit_ack",
            HubFrame::Deploy { .. } => "deploy",
            HubFrame::RenewResponse { .. } => "renew_response",
            HubFrame::Policy { .. } => "policy",
            HubFrame::Error { .. } => "error",
        }
    }
}

/// An operator's command. The ones without fields are their name as a JSON string
/// (`"snapshot"`); the others an object under their name
/// (`{"portable_snapshot": {"seal_to": "..."}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    RestartNodeRed,
    /// Answer with what the device runs now (flows, credentials still encrypted, modules,
    /// environment and settings overrides).
    Snapshot,
    /// Answer as for [`Command::Snapshot`], but with the credentials opened on the device and
    /// sealed to `seal_to` with the label [`crate::deployment::PORTABLE_LABEL`]
    /// ([`crate::deployment::Credentials::Portable`]), so the hub can deploy them to another
    /// device.
    PortableSnapshot {
        /// Hex of the SPKI DER of the hub's credentials key (P-256).
        seal_to: String,
    },
    /// Answer with the device's SBOM.
    Sbom,
}

impl Command {
    /// The command's wire name (as in audit details).
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::RestartNodeRed => "restart_node_red",
            Command::Snapshot => "snapshot",
            Command::PortableSnapshot { .. } => "portable_snapshot",
            Command::Sbom => "sbom",
        }
    }
}

/// A deployment's state as the device tells the hub (and keeps on disk as its last outcome).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployReport {
    pub id: String,
    pub state: DeployState,
    /// The stage and reason of a refusal or rollback, what was applied.
    pub detail: serde_json::Value,
}

impl DeployReport {
    /// The frame that carries it.
    pub fn frame(self) -> AgentFrame {
        AgentFrame::DeployStatus { id: self.id, state: self.state, detail: self.detail }
    }
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

/// What a device says about a policy it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyReport {
    /// The policy's number (0 when the envelope was too broken to read one).
    pub number: u64,
    pub state: PolicyState,
    /// Why it was refused: `locally_managed`, `replayed`, `other_device`, `bad_signature`,
    /// `malformed`, `invalid`, `not_stored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The SHA-256 of the document the device enforces (applied) or was sent (refused, when readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl PolicyReport {
    /// The frame that carries it.
    pub fn frame(self) -> AgentFrame {
        AgentFrame::PolicyStatus { number: self.number, state: self.state, reason: self.reason, hash: self.hash }
    }
}

/// Where a policy stands (the hub adds `pending` before the device answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyState {
    Pending,
    Applied,
    Refused,
}

impl PolicyState {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Pending => "pending",
            PolicyState::Applied => "applied",
            PolicyState::Refused => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_their_json() {
        for c in [Command::RestartNodeRed, Command::Snapshot, Command::Sbom] {
            assert_eq!(serde_json::to_value(&c).unwrap(), c.as_str());
        }
        let portable = Command::PortableSnapshot { seal_to: "3059".into() };
        let json = serde_json::to_value(&portable).unwrap();
        assert_eq!(json, serde_json::json!({"portable_snapshot": {"seal_to": "3059"}}));
        assert_eq!(json.as_object().unwrap().keys().next().map(String::as_str), Some(portable.as_str()));
    }

    #[test]
    fn a_portable_snapshot_command_round_trips_and_unknown_fields_are_refused() {
        let frame = HubFrame::Command { id: 4, command: Command::PortableSnapshot { seal_to: "ab".into() } };
        let text = serde_json::to_string(&frame).unwrap();
        assert_eq!(text, r#"{"type":"command","id":4,"command":{"portable_snapshot":{"seal_to":"ab"}}}"#);
        assert_eq!(serde_json::from_str::<HubFrame>(&text).unwrap(), frame);
        for bad in [
            r#"{"type":"command","id":4,"command":{"portable_snapshot":{"seal_to":"ab","x":1}}}"#,
            r#"{"type":"command","id":4,"command":{"portable_snapshot":{}}}"#,
            r#"{"type":"command","id":4,"command":"portable_snapshot"}"#,
        ] {
            assert!(serde_json::from_str::<HubFrame>(bad).is_err(), "{bad}");
        }
    }
}
