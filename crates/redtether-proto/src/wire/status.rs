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
    /// What the device's resources were when the status was gathered (absent from agents
    /// that do not measure them). Boxed: the frames and actions that carry a status stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<DeviceResources>>,
}

/// The device's resources at one status report. Each figure is absent when it could not be
/// measured (Node-RED not running, the first reading of a CPU meter, no /proc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceResources {
    /// Node-RED's CPU use since the previous report, in percent of one CPU (as `top`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_red_cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_red_rss_bytes: Option<u64>,
    /// The agent's own CPU use since the previous report, in percent of one CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_rss_bytes: Option<u64>,
    /// How long Node-RED took to answer its last health probe, in milliseconds: its event loop's
    /// lag as seen from outside (a busy loop answers late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_loop_lag_ms: Option<f64>,
    /// Free space of the filesystem holding the agent's state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    /// Seconds since the device booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// The 1-, 5- and 15-minute load averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<[f64; 3]>,
}

impl DeviceResources {
    /// Plausible figures, for tests and simulations.
    pub fn example() -> Self {
        DeviceResources {
            node_red_cpu_percent: Some(3.5),
            node_red_rss_bytes: Some(80 * 1024 * 1024),
            agent_cpu_percent: Some(0.4),
            agent_rss_bytes: Some(12 * 1024 * 1024),
            event_loop_lag_ms: Some(2.0),
            disk_free_bytes: Some(4 * 1024 * 1024 * 1024),
            uptime_secs: Some(86_400),
            load_average: Some([0.2, 0.3, 0.25]),
        }
    }
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
            resources: None,
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

    #[test]
    fn resources_are_optional_both_ways() {
        // A status without them (an older agent) reads; one with them round-trips.
        let mut status = DeviceStatus::example();
        let v = serde_json::to_value(&status).unwrap();
        assert!(v.get("resources").is_none());
        status.resources = Some(Box::new(DeviceResources { event_loop_lag_ms: None, ..DeviceResources::example() }));
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["resources"]["load_average"], serde_json::json!([0.2, 0.3, 0.25]));
        assert!(v["resources"].get("event_loop_lag_ms").is_none());
        assert_eq!(serde_json::from_value::<DeviceStatus>(v).unwrap(), status);
    }
}
