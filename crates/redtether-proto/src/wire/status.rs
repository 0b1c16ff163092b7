//! What a device reports about itself: [`DeviceStatus`], and in it Node-RED's status as the
//! agent's supervisor publishes it (the same record `redtether status` shows).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRedState {
    /// Being installed or started, not yet answering its health check.
    Starting,
    /// Started and answering.
    Running,
    /// Exited; waiting before the next start.
    Backoff,
    /// Too many exits in the crash window; retried at the longest delay.
    CrashLoop,
    /// Not running and not going to be (the agent is stopping).
    Stopped,
}

impl NodeRedState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRedState::Starting => "starting",
            NodeRedState::Running => "running",
            NodeRedState::Backoff => "backoff",
            NodeRedState::CrashLoop => "crash_loop",
            NodeRedState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRedStatus {
    pub state: NodeRedState,
    pub pid: Option<u32>,
    /// Starts after the first one, for whatever reason.
    pub restarts: u32,
    /// When `state` was entered.
    #[serde(with = "crate::time::rfc3339")]
    pub since: SystemTime,
    /// Loopback port Node-RED was told to listen on, while it runs.
    pub port: Option<u16>,
    /// A human explanation of the state: what is being installed, why it is waiting.
    pub detail: Option<String>,
    /// How the previous run ended.
    pub last_exit: Option<String>,
}

/// What an agent reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub agent_version: String,
    /// Node-RED's status as `redtether status` shows it.
    pub node_red: NodeRedStatus,
    /// Journal events not yet acknowledged by the hub, and the newest sequence number.
    pub audit_backlog: u64,
    pub audit_last_seq: u64,
    pub gate_listen: String,
    pub protection: bool,
}

impl DeviceStatus {
    /// A plausible status, for tests and simulations.
    pub fn example() -> Self {
        DeviceStatus {
            agent_version: "0.0.0".into(),
            node_red: NodeRedStatus {
                since: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_762_800),
                ..NodeRedStatus::initial()
            },
            audit_backlog: 0,
            audit_last_seq: 0,
            gate_listen: "127.0.0.1:1880".into(),
            protection: false,
        }
    }
}

impl NodeRedStatus {
    pub fn initial() -> Self {
        NodeRedStatus {
            state: NodeRedState::Starting,
            pid: None,
            restarts: 0,
            since: SystemTime::now(),
            port: None,
            detail: None,
            last_exit: None,
        }
    }

    /// One line for logs, `redtether status` and systemd's STATUS=.
    pub fn summary(&self) -> String {
        let mut s = format!("Node-RED {}", self.state.as_str().replace('_', " "));
        if let Some(pid) = self.pid {
            s.push_str(&format!(" (pid {pid})"));
        }
        if let Some(detail) = &self.detail {
            s.push_str(": ");
            s.push_str(detail);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_states_in_snake_case() {
        let mut s = NodeRedStatus::initial();
        s.state = NodeRedState::CrashLoop;
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "crash_loop");
        assert!(v["since"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["pid"], serde_json::Value::Null);
    }

    #[test]
    fn summary_names_pid_and_detail() {
        let mut s = NodeRedStatus::initial();
        s.state = NodeRedState::Backoff;
        s.pid = Some(7);
        s.detail = Some("restarting in 2s".into());
        assert_eq!(s.summary(), "Node-RED backoff (pid 7): restarting in 2s");
    }

    #[test]
    fn device_status_carries_node_red_as_an_object() {
        let status = DeviceStatus::example();
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["node_red"]["state"], "starting");
        assert_eq!(v["protection"], false);
        assert_eq!(serde_json::from_value::<DeviceStatus>(v).unwrap(), status);
    }
}
