//! The messages on the control socket.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The daemon's status document.
    Status,
    /// Restart Node-RED now.
    RestartNodeRed,
    /// Node-RED asks who an editor session is (the websocket's auth frame).
    CheckSession {
        token: String,
    },
    /// Make a bearer token; the answer carries it, once.
    TokenCreate {
        name: String,
        lifetime_secs: u64,
        scope: Option<String>,
    },
    TokenList,
    TokenRevoke {
        name: String,
    },
    /// Journal events after sequence number `after`, up to `limit`, filtered by kind and start;
    /// with `wait_ms`, waits that long for new events when there are none.
    AuditRead {
        after: u64,
        limit: u32,
        kind: Option<String>,
        since: Option<String>,
        wait_ms: Option<u64>,
    },
    /// Recompute the journal's hash chain.
    AuditVerify,
    /// Read the tunnel identity again (after `redtether enroll`).
    TunnelReload,
    /// Apply the signed deployment envelope in the file at `path` (read by the daemon: an
    /// envelope can be larger than a request line) and answer with its outcome.
    Deploy {
        path: String,
    },
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
}
