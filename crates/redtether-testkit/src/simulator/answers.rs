//! What a simulated device answers about itself: its status, and the hub's commands (restart,
//! snapshot, SBOM). A healthy device: Node-RED running, nothing waiting in the journal.

use super::device::Shared;
use redtether_proto::deployment::Snapshot;
use redtether_proto::wire::{Command, DeviceResources, DeviceStatus, NodeRedState, NodeRedStatus};
use serde_json::json;
use std::time::SystemTime;

/// The status a device pushes: the same for its whole life but for the restarts, so an idle
/// device sends it once per connection, as the agent does.
pub(super) fn status(
    agent_version: &str,
    since: SystemTime,
    restarts: u32,
    resources: Option<Box<DeviceResources>>,
) -> DeviceStatus {
    DeviceStatus {
        agent_version: agent_version.to_string(),
        node_red: NodeRedStatus {
            state: NodeRedState::Running,
            pid: Some(4242 + restarts),
            restarts,
            since,
            port: Some(41880),
            detail: None,
            last_exit: None,
        },
        audit_backlog: 0,
        audit_last_seq: 0,
        gate_listen: "127.0.0.1:1880".to_string(),
        protection: false,
        resources,
    }
}

/// Resource figures of poll number `poll`: plausible, and different at every poll as a real
/// device's are.
pub(super) fn resources(poll: u64) -> DeviceResources {
    let wobble = (poll % 17) as f64;
    DeviceResources {
        node_red_cpu_percent: Some(2.0 + wobble / 4.0),
        node_red_rss_bytes: Some((90 << 20) + (poll % 64) * 4096),
        agent_cpu_percent: Some(0.3 + wobble / 100.0),
        uptime_secs: Some(86_400 + poll * 10),
        ..DeviceResources::example()
    }
}

/// The first flows a device runs: a tab and an inject node named after it, so every device's
/// flows (and their hash) differ.
pub(super) fn initial_snapshot(device: &str) -> Snapshot {
    let flows = vec![
        json!({ "id": format!("{device}-tab"), "type": "tab", "label": device }),
        json!({ "id": format!("{device}-tick"), "type": "inject", "z": format!("{device}-tab"), "name": "tick", "repeat": "60" }),
    ];
    Snapshot {
        flows,
        credentials: None,
        modules: Default::default(),
        env: Default::default(),
        settings: Default::default(),
    }
}

/// The answer to a command, `(ok, detail)` as the agent gives it (`src/tunnel/session.rs`).
/// `restarts` counts Node-RED restarts, for the status.
pub(super) fn execute(command: Command, shared: &Shared, restarts: &mut u32) -> (bool, serde_json::Value) {
    match command {
        Command::RestartNodeRed => {
            *restarts += 1;
            (true, json!({ "pid": 4242 + *restarts }))
        }
        // Serialized as the agent serializes what it captures. A simulated device keeps no
        // credentials it could seal for the hub, so both kinds answer alike.
        Command::Snapshot | Command::PortableSnapshot { .. } => (true, json!(shared.lock().current)),
        Command::Sbom => (true, sbom(&shared.id)),
    }
}

/// A minimal CycloneDX document: the device and its Node-RED, no modules.
fn sbom(device: &str) -> serde_json::Value {
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "component": { "type": "device", "name": device, "bom-ref": format!("device:{device}") },
        },
        "components": [
            { "type": "application", "name": "node-red", "version": "4.0.0", "purl": "pkg:npm/node-red@4.0.0", "bom-ref": "pkg:npm/node-red@4.0.0" },
        ],
    })
}
