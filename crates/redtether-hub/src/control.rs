//! The hub's control socket: the `redtether-hub` subcommands talk to the running hub here.

use crate::api::Api;
use crate::store::{HubStore, OperatorRole, StoreError};
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

/// Why the hub (or the CLI, with the hub stopped) refused a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0:?} is not a device id (1-64 of A-Z a-z 0-9 . _ @ -)")]
    DeviceId(String),
    #[error("{0:?} is not one of owner, member, viewer")]
    Role(String),
    #[error("{0:?} is not an operator name")]
    OperatorName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is about the running hub itself.
    #[error("needs the running hub")]
    NeedsRunningHub,
}

/// What both the running hub and the CLI (with the hub stopped) do for a request.
pub fn apply(store: &HubStore, request: &HubRequest) -> Result<serde_json::Value, RequestError> {
    let now = redtether_proto::time::unix_now();
    match request {
        HubRequest::EnrollToken { device, lifetime_secs } => {
            if !redtether_proto::names::valid_name(device) {
                return Err(RequestError::DeviceId(device.clone()));
            }
            let token = store.create_enroll_token(device, *lifetime_secs, now)?;
            let _ =
                store.record_event(device, HubEventKind::EnrollTokenCreated, json!({ "expires_in": lifetime_secs }));
            Ok(json!({ "token": token }))
        }
        HubRequest::OperatorAdd { name, role } => {
            let role = OperatorRole::parse(role).ok_or_else(|| RequestError::Role(role.clone()))?;
            if !redtether_proto::names::valid_name(name) {
                return Err(RequestError::OperatorName(name.clone()));
            }
            let token = store.add_operator(name, role, now)?;
            Ok(json!({ "token": token }))
        }
        HubRequest::OperatorList => {
            let ops = store.operators()?;
            Ok(json!(ops.iter().map(|o| json!({ "name": o.name, "role": o.role, "created": redtether_proto::time::format_seconds(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(o.created)) })).collect::<Vec<_>>()))
        }
        HubRequest::OperatorRemove { name } => {
            store.remove_operator(name)?;
            Ok(json!({ "removed": name }))
        }
        HubRequest::Devices => {
            let devices = store.devices()?;
            Ok(json!(devices.iter().map(|d| json!({ "id": d.id, "revoked": d.revoked, "agent_version": d.agent_version, "last_seen": d.last_seen })).collect::<Vec<_>>()))
        }
        HubRequest::DeviceRevoke { device } => {
            let serial = revoke_device(store, device)?;
            Ok(revoked_json(device, &serial))
        }
        HubRequest::Status | HubRequest::CaFingerprint => Err(RequestError::NeedsRunningHub),
    }
}

/// Marks the device revoked in the registry and records it; returns its certificate's serial.
fn revoke_device(store: &HubStore, device: &str) -> Result<String, StoreError> {
    let serial = store.revoke_device(device)?;
    let _ = store.record_event(device, HubEventKind::DeviceRevoked, json!({ "serial": serial }));
    Ok(serial)
}

fn revoked_json(device: &str, serial: &str) -> serde_json::Value {
    json!({ "revoked": device, "serial": serial })
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
                Err(e) => ControlResponse::error(redtether_host::error_chain(&e)),
            },
            HubRequest::DeviceRevoke { device } => match revoke_device(&self.store, device) {
                Ok(serial) => {
                    // Refused from the next handshake on, and the tunnel it has now is closed.
                    if let Ok(mut revoked) = self.revoked.write() {
                        revoked.insert(serial.clone());
                    }
                    if let Some(online) = self.api.registry.get(device) {
                        online.connection.close(codes::REVOKED.into(), b"device revoked");
                    }
                    ControlResponse::ok(revoked_json(device, &serial))
                }
                Err(e) => ControlResponse::error(redtether_host::error_chain(&e)),
            },
            _ => match apply(&self.store, &request) {
                Ok(result) => ControlResponse::ok(result),
                Err(e) => ControlResponse::error(redtether_host::error_chain(&e)),
            },
        }
    }
}
