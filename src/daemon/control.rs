//! The daemon's answers on the control socket.

use crate::config::Settings;
use crate::control::{ControlRequest, ControlResponse, Handler};
use crate::supervisor::SupervisorHandle;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

pub struct DaemonControl {
    supervisor: SupervisorHandle,
    gate_listen: SocketAddr,
    settings: Arc<Settings>,
    started: SystemTime,
}

impl DaemonControl {
    pub fn new(
        supervisor: SupervisorHandle,
        gate_listen: SocketAddr,
        settings: Arc<Settings>,
    ) -> Self {
        DaemonControl {
            supervisor,
            gate_listen,
            settings,
            started: SystemTime::now(),
        }
    }

    fn status(&self) -> serde_json::Value {
        json!({
            "version": crate::VERSION,
            "pid": std::process::id(),
            "started": crate::rfc3339::format_seconds(self.started),
            "config": self.settings.source.describe(),
            "state_dir": self.settings.state_dir.display().to_string(),
            "node_red": self.supervisor.status(),
            "gate": { "listen": self.gate_listen.to_string() },
        })
    }
}

impl Handler for DaemonControl {
    async fn handle(&self, request: ControlRequest) -> ControlResponse {
        match request {
            ControlRequest::Status => ControlResponse::ok(self.status()),
            ControlRequest::RestartNodeRed => match self.supervisor.restart().await {
                Ok(pid) => ControlResponse::ok(json!({ "pid": pid })),
                Err(e) => ControlResponse::error(e.to_string()),
            },
        }
    }
}
