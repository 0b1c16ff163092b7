//! The hub's control socket: the `redtether-hub` subcommands talk to the running hub here.

use crate::api::Api;
use crate::store::{HubStore, OperatorRole};
use redtether_host::control::{ControlResponse, Handler};
use redtether_pki::tls::Revoked;
use redtether_proto::audit::HubEventKind;
use redtether_proto::wire::codes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum HubRequest {
    Status,
    CaFingerprint,
    EnrollToken { device: String, lifetime_secs: u64 },
    OperatorAdd { name: String, role: String },
    OperatorList,
    OperatorRemove { name: String },
    Devices,
    DeviceRevoke { device: String },
}

pub struct HubControl {
    pub store: Arc<HubStore>,
    pub api: Arc<Api>,
    pub revoked: Revoked,
    pub ca_fingerprint: String,
    pub listen: String,
    pub api_listen: String,
}

/// What both the running hub and the CLI (with the hub stopped) do for a request.
pub fn apply(store: &HubStore, request: &HubRequest) -> Result<serde_json::Value, String> {
    let now = redtether_proto::time::unix_now();
    match request {
        HubRequest::EnrollToken { device, lifetime_secs } => {
            if !redtether_proto::names::valid_name(device) {
                return Err(format!("{device:?} is not a device id (1-64 of A-Z a-z 0-9 . _ @ -)"));
            }
            let token = store.create_enroll_token(device, *lifetime_secs, now).map_err(|e| e.to_string())?;
            let _ =
                store.record_event(device, HubEventKind::EnrollTokenCreated, json!({ "expires_in": lifetime_secs }));
            Ok(json!({ "token": token }))
        }
        HubRequest::OperatorAdd { name, role } => {
            let role =
                OperatorRole::parse(role).ok_or_else(|| format!("{role:?} is not one of owner, member, viewer"))?;
            if !redtether_proto::names::valid_name(name) {
                return Err(format!("{name:?} is not an operator name"));
            }
            let token = store.add_operator(name, role, now).map_err(|e| e.to_string())?;
            Ok(json!({ "token": token }))
        }
        HubRequest::OperatorList => {
            let ops = store.operators().map_err(|e| e.to_string())?;
            Ok(json!(ops.iter().map(|o| json!({ "name": o.name, "role": o.role, "created": redtether_proto::time::format_seconds(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(o.created)) })).collect::<Vec<_>>()))
        }
        HubRequest::OperatorRemove { name } => {
            store.remove_operator(name).map(|()| json!({ "removed": name })).map_err(|e| e.to_string())
        }
        HubRequest::Devices => {
            let devices = store.devices().map_err(|e| e.to_string())?;
            Ok(json!(devices.iter().map(|d| json!({ "id": d.id, "revoked": d.revoked, "agent_version": d.agent_version, "last_seen": d.last_seen })).collect::<Vec<_>>()))
        }
        HubRequest::DeviceRevoke { device } => {
            let serial = store.revoke_device(device).map_err(|e| e.to_string())?;
            let _ = store.record_event(device, HubEventKind::DeviceRevoked, json!({ "serial": serial }));
            Ok(json!({ "revoked": device, "serial": serial }))
        }
        HubRequest::Status | HubRequest::CaFingerprint => Err("needs the running hub".into()),
    }
}

impl Handler for HubControl {
    type Request = HubRequest;

    async fn handle(&self, request: HubRequest) -> ControlResponse {
        match &request {
            HubRequest::Status => ControlResponse::ok(json!({
                "version": crate::VERSION,
                "listen": self.listen,
                "api_listen": self.api_listen,
                "ca_fingerprint": self.ca_fingerprint,
                "online": self.api.registry.count(),
            })),
            HubRequest::CaFingerprint => ControlResponse::ok(json!({ "fingerprint": self.ca_fingerprint })),
            HubRequest::Devices => match self.store.devices() {
                Ok(devices) => ControlResponse::ok(json!(
                    devices.iter().map(|d| self.api.device_json(d, false)).collect::<Vec<_>>()
                )),
                Err(e) => ControlResponse::error(e.to_string()),
            },
            HubRequest::DeviceRevoke { device } => match apply(&self.store, &request) {
                Ok(result) => {
                    if let Some(serial) = result["serial"].as_str()
                        && let Ok(mut revoked) = self.revoked.write()
                    {
                        revoked.insert(serial.to_string());
                    }
                    if let Some(online) = self.api.registry.get(device) {
                        online.connection.close(codes::REVOKED.into(), b"device revoked");
                    }
                    ControlResponse::ok(result)
                }
                Err(e) => ControlResponse::error(e),
            },
            _ => match apply(&self.store, &request) {
                Ok(result) => ControlResponse::ok(result),
                Err(e) => ControlResponse::error(e),
            },
        }
    }
}
