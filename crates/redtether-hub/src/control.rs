//! The hub's control socket: the `redtether-hub` subcommands talk to the running hub here.

use crate::api::Api;
use crate::identity::TokenScope;
use crate::store::prelude::*;
use crate::store::{AccountSource, HubStore, OperatorRecord, OperatorRole, SetupCode, StoreError};
use redtether_host::control::{ControlResponse, Handler};
use redtether_pki::tls::Revoked;
use redtether_proto::audit::{Actor, HubEventKind};
use redtether_proto::wire::codes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum HubRequest {
    Status,
    CaFingerprint,
    EnrollToken {
        device: String,
        lifetime_secs: u64,
        /// The group the device joins when it enrolls.
        #[serde(default)]
        group: Option<String>,
    },
    /// With `token_expires_secs`, an account for automation: no person, no password, one
    /// `admin` API token that expires; without it, a setup code for the person.
    OperatorAdd {
        name: String,
        role: String,
        #[serde(default)]
        email: Option<String>,
        #[serde(default)]
        token_expires_secs: Option<u64>,
        setup_secs: u64,
    },
    OperatorList,
    OperatorRemove {
        name: String,
    },
    OperatorRole {
        name: String,
        role: String,
    },
    OperatorReset2fa {
        name: String,
        setup_secs: u64,
    },
    Devices,
    DeviceRevoke {
        device: String,
    },
}

pub struct HubControl {
    pub store: Arc<HubStore>,
    pub api: Arc<Api>,
    pub revoked: Revoked,
    pub ca_fingerprint: String,
    pub listen: String,
    pub api_listen: String,
    /// The bound `[metrics] listen` address, if any.
    pub metrics_listen: Option<String>,
    /// The bound `[tcp] listen` address, if any.
    pub tcp_listen: Option<String>,
}

/// Why the hub (or the CLI, with the hub stopped) refused a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0:?} is not a device id (1-64 of A-Z a-z 0-9 . _ @ -)")]
    DeviceId(String),
    #[error("{0:?} is not one of owner, member, viewer, dashboard")]
    Role(String),
    #[error("{0:?} is not an e-mail address")]
    Email(String),
    #[error("{0:?} logs in through single sign-on: its second factor is the provider's")]
    NotLocal(String),
    #[error("{0:?} is not an operator name")]
    OperatorName(String),
    #[error("there is no group named {0:?}")]
    UnknownGroup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is about the running hub itself.
    #[error("needs the running hub")]
    NeedsRunningHub,
}

/// What both the running hub and the CLI (with the hub stopped) do for a request.
pub fn apply(store: &HubStore, request: &HubRequest) -> Result<serde_json::Value, RequestError> {
    apply_as(store, request, Actor::System)
}

/// [`apply`], recorded in the audit trail as done by `actor` (an operator through the API or
/// console; the CLI is the hub's administrator, [`Actor::System`]).
pub fn apply_as(store: &HubStore, request: &HubRequest, actor: Actor) -> Result<serde_json::Value, RequestError> {
    let now = redtether_proto::time::unix_now();
    match request {
        HubRequest::EnrollToken { device, lifetime_secs, group } => {
            if !redtether_proto::names::valid_name(device) {
                return Err(RequestError::DeviceId(device.clone()));
            }
            if let Some(group) = group
                && store.group(group)?.is_none()
            {
                return Err(RequestError::UnknownGroup(group.clone()));
            }
            let token = store.create_enroll_token(device, *lifetime_secs, group.as_deref(), now)?;
            let mut detail = json!({ "expires_in": lifetime_secs, "group": group });
            // The hub's device events name an operator in `operator`, which becomes the actor.
            if let Actor::User { name } = &actor {
                detail["operator"] = json!(name);
            }
            let _ = store.record_event(device, HubEventKind::EnrollTokenCreated, detail);
            Ok(json!({ "token": token }))
        }
        HubRequest::OperatorAdd { name, role, email, token_expires_secs, setup_secs } => {
            let role = OperatorRole::parse(role).ok_or_else(|| RequestError::Role(role.clone()))?;
            let record = OperatorRecord::new(name, role, email.clone(), AccountSource::Local, now);
            let code = add_operator(store, record, token_expires_secs.is_some(), *setup_secs, actor.clone())?;
            match token_expires_secs {
                None => Ok(json!({ "setup_code": code, "expires_in": setup_secs })),
                Some(secs) => {
                    // An automation account never logs in: its setup code is dropped at once.
                    store.update_operator(name, |r| r.setup = None)?;
                    let expires = now.saturating_add(*secs);
                    let token = store.add_api_token(name, "bootstrap", TokenScope::Admin, now, expires)?;
                    let detail = json!({ "name": "bootstrap", "scope": TokenScope::Admin, "expires": expires });
                    store.record(HubEventKind::TokenCreated, actor.clone(), &format!("operator:{name}"), detail)?;
                    Ok(json!({ "token": token, "expires": redtether_proto::time::format_unix(expires) }))
                }
            }
        }
        HubRequest::OperatorList => {
            let ops = store.operators()?;
            Ok(json!(ops.iter().map(|o| o.public_json()).collect::<Vec<_>>()))
        }
        HubRequest::OperatorRemove { name } => {
            let old = store.remove_operator(name)?;
            store.record(
                HubEventKind::OperatorRemoved,
                actor.clone(),
                &format!("operator:{name}"),
                json!({ "role": old.role }),
            )?;
            Ok(json!({ "removed": name }))
        }
        HubRequest::OperatorRole { name, role } => {
            let role = OperatorRole::parse(role).ok_or_else(|| RequestError::Role(role.clone()))?;
            let from = store
                .update_operator(name, |r| std::mem::replace(&mut r.role, role))?
                .ok_or_else(|| RequestError::Store(StoreError::Conflict(format!("no operator named {name:?}"))))?;
            // The sessions end; tokens act with the new role from their next use.
            let ended = store.end_sessions(name)?;
            let detail = json!({ "from": from, "to": role, "sessions_ended": ended });
            store.record(HubEventKind::OperatorRoleChanged, actor.clone(), &format!("operator:{name}"), detail)?;
            Ok(json!({ "operator": name, "role": role }))
        }
        HubRequest::OperatorReset2fa { name, setup_secs } => {
            let code =
                redtether_proto::names::valid_name(name).then(|| crate::identity::secrets::random_secret("rtsetup_"));
            let code = code.ok_or_else(|| RequestError::OperatorName(name.clone()))?;
            // A single sign-on account's second factor is its provider's.
            if let Some(record) = store.operator(name)?
                && record.source != AccountSource::Local
            {
                return Err(RequestError::NotLocal(name.clone()));
            }
            let setup =
                SetupCode { sha256: crate::identity::secrets::digest(&code), expires: now.saturating_add(*setup_secs) };
            store
                .update_operator(name, |r| {
                    r.totp_secret = None;
                    r.totp_pending = None;
                    r.recovery_sha256.clear();
                    r.setup = Some(setup.clone());
                })?
                .ok_or_else(|| RequestError::Store(StoreError::Conflict(format!("no operator named {name:?}"))))?;
            let ended = store.end_sessions(name)?;
            store.record(
                HubEventKind::Operator2faReset,
                actor.clone(),
                &format!("operator:{name}"),
                json!({ "sessions_ended": ended }),
            )?;
            Ok(json!({ "setup_code": code, "expires_in": setup_secs }))
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

/// Adds the local account `record` with a setup code (returned), checking its name and
/// e-mail, and records it as done by `actor`.
pub(crate) fn add_operator(
    store: &HubStore,
    record: OperatorRecord,
    with_token: bool,
    setup_secs: u64,
    actor: Actor,
) -> Result<String, RequestError> {
    let name = record.name.clone();
    if !redtether_proto::names::valid_name(&name) {
        return Err(RequestError::OperatorName(name));
    }
    if let Some(e) = &record.email
        && (e.len() > 254 || !e.contains('@') || e.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(RequestError::Email(e.clone()));
    }
    let detail = json!({ "role": record.role, "email": record.email, "with_token": with_token });
    let code = store.add_operator(record, setup_secs)?;
    store.record(HubEventKind::OperatorAdded, actor, &format!("operator:{name}"), detail)?;
    Ok(code)
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
                "metrics_listen": self.metrics_listen,
                "tcp_listen": self.tcp_listen,
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
            HubRequest::DeviceRevoke { device } => match revoke_device(&*self.store, device) {
                Ok(serial) => {
                    // Refused from the next handshake on, and the tunnel it has now is closed.
                    if let Ok(mut revoked) = self.revoked.write() {
                        revoked.insert(serial.clone());
                    }
                    if let Some(online) = self.api.registry.get(device) {
                        online.connection.close(codes::REVOKED, b"device revoked");
                    }
                    ControlResponse::ok(revoked_json(device, &serial))
                }
                Err(e) => ControlResponse::error(redtether_host::error_chain(&e)),
            },
            _ => match apply(&*self.store, &request) {
                Ok(result) => ControlResponse::ok(result),
                Err(e) => ControlResponse::error(redtether_host::error_chain(&e)),
            },
        }
    }
}
