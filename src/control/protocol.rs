//! The messages on the control socket: the requests, and the answer each one promises (the
//! daemon serialises these, the CLI reads them back as the same types).

use crate::audit::{JournalStatus, StoredEvent};
use crate::deploy::Report;
use crate::gate::TokenInfo;
pub use crate::security::{PolicyInfo, PolicySource, RefusedPolicy, ReloadReply};
use crate::tunnel::TunnelStatus;
use redtether_proto::wire::NodeRedStatus;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::SystemTime;

/// Each request names the answer it gets; the other answers are [`crate::audit::Verification`]
/// (`audit_verify`), [`Report`](crate::deploy::Report) (`deploy`) and `Vec<TokenInfo>` (`token_list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The daemon's status document: [`StatusReply`].
    Status,
    /// Restart Node-RED now: [`NodeRedRestarted`].
    RestartNodeRed,
    /// Node-RED asks who an editor session is (the websocket's auth frame): [`EditorSession`].
    CheckSession {
        token: String,
    },
    /// Make a bearer token; the answer ([`TokenCreated`]) carries it, once.
    TokenCreate {
        name: String,
        lifetime_secs: u64,
        scope: Option<String>,
    },
    TokenList,
    /// [`TokenRevoked`].
    TokenRevoke {
        name: String,
    },
    /// Journal events after sequence number `after`, up to `limit`, filtered by kind and start;
    /// with `wait_ms`, waits that long for new events when there are none: [`AuditPage`].
    AuditRead {
        after: u64,
        limit: u32,
        kind: Option<String>,
        since: Option<String>,
        wait_ms: Option<u64>,
    },
    /// Recompute the journal's hash chain.
    AuditVerify,
    /// Read the tunnel identity again (after `redtether enroll`): [`TunnelReloaded`].
    TunnelReload,
    /// Apply the signed deployment envelope in the file at `path` (read by the daemon: an
    /// envelope can be larger than a request line) and answer with its outcome.
    Deploy {
        path: String,
    },
    /// Read `agent.toml` again and apply what can change live (as SIGHUP does): [`ReloadReply`].
    Reload,
}

/// The answer to `status`; `redtether status --json` prints it as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// `null` when the journal did not answer.
    pub audit: Option<JournalStatus>,
    pub tunnel: TunnelStatus,
    pub version: String,
    pub pid: u32,
    #[serde(with = "redtether_proto::time::rfc3339")]
    pub started: SystemTime,
    /// Where the configuration came from.
    pub config: String,
    pub state_dir: String,
    pub node_red: NodeRedStatus,
    /// The last deployment's outcome, if there was one.
    pub deployment: Option<Report>,
    pub gate: GateStatus,
    pub policy: PolicyInfo,
    /// Where `GET /metrics` is served (`[metrics] listen`), if it is.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// The gate as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStatus {
    pub listen: SocketAddr,
    /// Protection mode: the editor is read-only for everyone.
    pub protection: bool,
    pub tls: bool,
}

/// The answer to `audit_read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The events of the page that match the filter.
    pub events: Vec<StoredEvent>,
    /// The sequence number to read after next: the page's last event, matching or not, so
    /// that a filter that skips a whole page still moves on.
    pub next: u64,
}

/// The answer to `token_create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The secret, shown this once.
    pub token: String,
    pub record: TokenInfo,
}

/// The answer to `token_revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    /// The revoked token's name.
    pub revoked: String,
}

/// The answer to `restart_node_red`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRedRestarted {
    /// The new Node-RED process.
    pub pid: u32,
}

/// The answer to `tunnel_reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelReloaded {
    pub reloaded: bool,
}

/// The answer to `check_session`, in the shape Node-RED's `adminAuth` wants a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditorSession {
    pub username: String,
    pub permissions: EditorPermissions,
}

/// Node-RED's permission strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EditorPermissions {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "*")]
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_cmd() {
        assert_eq!(serde_json::to_string(&ControlRequest::Status).unwrap(), r#"{"cmd":"status"}"#);
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"restart_node_red"}"#).unwrap(),
            ControlRequest::RestartNodeRed
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    #[test]
    fn editor_permissions_are_node_reds_strings() {
        let session = EditorSession { username: "ann".into(), permissions: EditorPermissions::Full };
        assert_eq!(serde_json::to_string(&session).unwrap(), r#"{"username":"ann","permissions":"*"}"#);
        assert_eq!(serde_json::to_string(&EditorPermissions::Read).unwrap(), r#""read""#);
    }

    #[test]
    fn a_verification_names_the_first_bad_record_as_seq_and_reason() {
        let v = crate::audit::Verification {
            checked: 3,
            first_seq: Some(1),
            last_seq: Some(3),
            first_bad: Some((2, "hash mismatch".into())),
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["first_bad"], serde_json::json!([2, "hash mismatch"]));
        assert_eq!(serde_json::from_value::<crate::audit::Verification>(json).unwrap(), v);
    }
}
