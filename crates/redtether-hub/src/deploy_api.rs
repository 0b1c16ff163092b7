//! The operator API's deployment routes (members and owners change, viewers read):
//!
//! - `POST /api/devices/{id}/deploy` — body `{"flows": [...], "credentials": {...}, "modules":
//!   {...}, "env": {...}, "settings": {...}}` (all but flows optional; credentials are sealed to
//!   the device's key here and never stored in the clear), or `{"snapshot": "<snapshot id>"}`
//!   (a snapshot of any device: its portable credentials are sealed to this device's key here,
//!   see `crate::portable`; credentials that are not portable deploy back to their own device
//!   only, else 409 `credentials_not_portable`); optional `"expires_in"` seconds (default 7
//!   days). Answers 202 `{"id", "number", "state"}`.
//!   The hub signs it for the device with the next deployment number; an offline device gets it
//!   when it connects.
//! - `GET /api/devices/{id}/deployments[/{did}]` — `{"state": "pending|sent|applying|applied|
//!   rolled_back|failed", "detail": ...}` and the rest of the record;
//!   `GET .../deployments/{did}/envelope` — the signed envelope, for `redtether deploy FILE`
//! - `POST /api/devices/{id}/snapshot` — asks the device what it runs now and keeps it, its
//!   credentials sealed to the hub's credentials key (`portable_snapshot`);
//!   `GET /api/devices/{id}/snapshots[/{sid}]` (summaries say `credentials` and `portable`)
//! - `GET /api/devices/{id}/sbom` — the latest SBOM the device sent; `POST` asks for a new one

use crate::api::RequestBody;
use crate::api::{Api, error, json_response, store_error};
use crate::portable::{self, PortableError};
use crate::registry::CommandError;
use crate::store::{DeploymentRecord, OperatorRecord, OperatorRole, SnapshotRecord};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use redtether_proto::audit::HubEventKind;
use redtether_proto::deployment::flows_hash;
use redtether_proto::deployment::{self, Credentials, Deployment, Snapshot};
use redtether_proto::seal::seal;
use redtether_proto::wire::{Command, DeployState};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The largest deploy request body.
const MAX_BODY: usize = 4 << 20;
const DEFAULT_EXPIRY_SECS: u64 = 7 * 86400;
const MAX_EXPIRY_SECS: u64 = 30 * 86400;
/// How long the device may take to answer a snapshot or SBOM request.
const ASK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    flows: Option<Vec<serde_json::Value>>,
    credentials: Option<serde_json::Map<String, serde_json::Value>>,
    modules: Option<BTreeMap<String, String>>,
    env: Option<BTreeMap<String, String>>,
    settings: Option<serde_json::Map<String, serde_json::Value>>,
    snapshot: Option<String>,
    expires_in: Option<u64>,
}

fn bad(code: &str, detail: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, json!({ "error": code, "detail": detail.into() }))
}

fn deployment_json(d: &DeploymentRecord) -> serde_json::Value {
    let time = |s: u64| redtether_proto::time::format_unix(s);
    json!({
        "id": d.id,
        "device": d.device,
        "number": d.number,
        "state": d.state,
        "detail": d.detail,
        "flows_hash": d.flows_hash,
        "operator": d.operator,
        "snapshot": d.snapshot,
        "created": time(d.created),
        "updated": time(d.updated),
        "expires": time(d.expires),
    })
}

/// Why a deployment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the snapshot is not one a device would apply: {0}")]
    Invalid(#[from] deployment::SnapshotError),
    #[error("the signed deployment would not fit in one control frame")]
    TooLarge,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// `taken`'s credentials for `device` (whose key is `device_key`, hex SPKI): portable ones
/// sealed anew to it, a device's own back to that device only. `Err` is the API's error code and
/// why.
pub(crate) fn credentials_for_target(
    hub_key: &crate::keys::CredentialsKey,
    taken: &SnapshotRecord,
    device: &str,
    device_key: Option<&str>,
) -> Result<Option<Credentials>, (&'static str, String)> {
    let key = device_key.and_then(|k| hex::decode(k).ok());
    if matches!(taken.snapshot.credentials, Some(Credentials::Portable(_))) && key.is_none() {
        return Err(("device_key_unknown", "the hub has no key of this device".into()));
    }
    let sealed = portable::seal_for_device(
        hub_key.key_pem(),
        taken.snapshot.credentials.as_ref(),
        &taken.device,
        device,
        key.as_deref().unwrap_or_default(),
    );
    sealed.map_err(|e| {
        let code = match e {
            PortableError::NotPortable { .. } => "credentials_not_portable",
            PortableError::Open(_) | PortableError::NotJson => "credentials_unreadable",
            PortableError::Seal(_) => "device_key_unusable",
        };
        tracing::warn!(%device, snapshot = %taken.id, error = %e, "a snapshot's credentials cannot be deployed");
        (code, e.to_string())
    })
}

/// A deployment to make: for the API (one device) and for rollouts (many).
pub struct NewDeployment<'a> {
    pub device: &'a str,
    pub id: String,
    pub snapshot: Snapshot,
    /// The kept snapshot it was made from.
    pub from_snapshot: Option<String>,
    pub operator: &'a str,
    pub expires_in: u64,
    /// The rollout that made it, for the audit trail.
    pub rollout: Option<&'a str>,
}

/// Signs `new` for its device with the device's next deployment number, stores it, records
/// `deploy.created` and wakes the device's session (an offline device gets it when it
/// connects).
pub(crate) fn make_deployment(
    store: &crate::store::HubStore,
    signer: &ring::signature::Ed25519KeyPair,
    registry: &crate::registry::Registry,
    new: NewDeployment<'_>,
) -> Result<DeploymentRecord, DeployError> {
    new.snapshot.check()?;
    let now = redtether_proto::time::unix_now();
    let NewDeployment { device, id, snapshot, from_snapshot, operator, expires_in, rollout } = new;
    let hash = flows_hash(&snapshot.flows);
    let created = store.create_deployment(
        device,
        Box::new(|number| {
            let signed =
                Deployment { id: id.clone(), device: device.to_string(), number, exp: now + expires_in, snapshot };
            DeploymentRecord {
                id: id.clone(),
                device: device.to_string(),
                number,
                state: DeployState::Pending,
                detail: json!({}),
                flows_hash: hash.clone(),
                operator: operator.to_string(),
                created: now,
                updated: now,
                expires: now + expires_in,
                snapshot: from_snapshot,
                envelope: deployment::sign(&signed, signer),
            }
        }),
    )?;
    if created.envelope.len() > deployment::MAX_LEN {
        let _ = store.update_deployment(device, &id, DeployState::Failed, json!({ "reason": "too_large" }), now);
        return Err(DeployError::TooLarge);
    }
    let mut detail = json!({ "deployment": id, "number": created.number, "operator": operator, "flows_hash": hash });
    if let Some(rollout) = rollout {
        detail["rollout"] = json!(rollout);
    }
    let _ = store.record_event(device, HubEventKind::DeployCreated, detail);
    tracing::info!(%device, deployment = %id, number = created.number, %operator, "deployment created");
    registry.wake(device, crate::registry::Waiting::Deployment);
    Ok(created)
}

fn snapshot_summary(s: &SnapshotRecord) -> serde_json::Value {
    json!({
        "id": s.id,
        "device": s.device,
        "created": redtether_proto::time::format_unix(s.created),
        "operator": s.operator,
        "flows_hash": flows_hash(&s.snapshot.flows),
        "nodes": s.snapshot.flows.len(),
        "modules": s.snapshot.modules,
        "credentials": s.snapshot.credentials.is_some(),
        "portable": matches!(s.snapshot.credentials, Some(Credentials::Portable(_))),
    })
}

impl Api {
    fn may_change(operator: &OperatorRecord) -> bool {
        operator.role >= OperatorRole::Member
    }

    pub(super) async fn deploy(
        &self,
        operator: &OperatorRecord,
        device: &str,
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        if !Self::may_change(operator) {
            return error(StatusCode::FORBIDDEN, "forbidden");
        }
        let record = match self.store.device(device) {
            Ok(Some(d)) => d,
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_device"),
            Err(e) => return store_error(&e),
        };
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        };
        let body: DeployBody = match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => return bad("bad_body", e.to_string()),
        };
        let expires_in = body.expires_in.unwrap_or(DEFAULT_EXPIRY_SECS);
        if expires_in == 0 || expires_in > MAX_EXPIRY_SECS {
            return bad("bad_body", format!("expires_in must be 1..={MAX_EXPIRY_SECS} seconds"));
        }
        let (snapshot, from_snapshot) = match (body.snapshot, body.flows) {
            (Some(sid), None)
                if body.credentials.is_none()
                    && body.modules.is_none()
                    && body.env.is_none()
                    && body.settings.is_none() =>
            {
                let taken = match self.store.snapshot_by_id(&sid) {
                    Ok(Some(s)) => s,
                    Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_snapshot"),
                    Err(e) => return store_error(&e),
                };
                match self.credentials_for(&taken, device, record.device_key.as_deref()) {
                    Ok(credentials) => (Snapshot { credentials, ..taken.snapshot }, Some(sid)),
                    Err(response) => return *response,
                }
            }
            (Some(_), _) => return bad("bad_body", "a deployment by snapshot id carries nothing else"),
            (None, None) => return bad("bad_body", "flows (or snapshot) is required"),
            (None, Some(flows)) => {
                let credentials = match body.credentials {
                    None => None,
                    Some(plain) => {
                        // Sealed to the device's key here: the hub keeps no readable copy.
                        let Some(key) = record.device_key.as_deref().and_then(|k| hex::decode(k).ok()) else {
                            return error(StatusCode::CONFLICT, "device_key_unknown");
                        };
                        let plain = serde_json::to_vec(&plain).unwrap_or_default();
                        match seal(&key, device, &plain) {
                            Ok(sealed) => Some(Credentials::Sealed(sealed)),
                            Err(e) => return bad("bad_credentials", e.to_string()),
                        }
                    }
                };
                let snapshot = Snapshot {
                    flows,
                    credentials,
                    modules: body.modules.unwrap_or_default(),
                    env: body.env.unwrap_or_default(),
                    settings: body.settings.unwrap_or_default(),
                };
                (snapshot, None)
            }
        };
        let made = make_deployment(
            &*self.store,
            &self.signer,
            &self.registry,
            NewDeployment {
                device,
                id: uuid::Uuid::now_v7().to_string(),
                snapshot,
                from_snapshot,
                operator: &operator.name,
                expires_in,
                rollout: None,
            },
        );
        let created = match made {
            Ok(created) => created,
            Err(DeployError::Invalid(why)) => return bad("invalid_snapshot", why.to_string()),
            Err(DeployError::TooLarge) => return error(StatusCode::PAYLOAD_TOO_LARGE, "deployment_too_large"),
            Err(DeployError::Store(e)) => return store_error(&e),
        };
        let id = created.id.clone();
        json_response(StatusCode::ACCEPTED, json!({ "id": id, "number": created.number, "state": created.state }))
    }

    pub(super) fn deployments(
        &self,
        device: &str,
        id: Option<&str>,
        envelope: bool,
        operator: &OperatorRecord,
    ) -> Response<Full<Bytes>> {
        match (self.store.deployments(device), id) {
            (Err(e), _) => store_error(&e),
            (Ok(all), None) => {
                json_response(StatusCode::OK, json!(all.iter().map(deployment_json).collect::<Vec<_>>()))
            }
            (Ok(all), Some(id)) => match all.into_iter().find(|d| d.id == id) {
                None => error(StatusCode::NOT_FOUND, "unknown_deployment"),
                Some(d) if envelope => {
                    if !Self::may_change(operator) {
                        return error(StatusCode::FORBIDDEN, "forbidden");
                    }
                    json_response(StatusCode::OK, json!({ "envelope": d.envelope }))
                }
                Some(d) => json_response(StatusCode::OK, deployment_json(&d)),
            },
        }
    }

    pub(super) async fn take_snapshot(&self, operator: &OperatorRecord, device: &str) -> Response<Full<Bytes>> {
        if !Self::may_change(operator) {
            return error(StatusCode::FORBIDDEN, "forbidden");
        }
        // Portable: the device seals its credentials to the hub's credentials key, so the
        // snapshot can be deployed to any device (see `crate::portable`).
        let command = Command::PortableSnapshot { seal_to: hex::encode(self.credentials_key.spki()) };
        let detail = match self.ask(device, command).await {
            Ok(detail) => detail,
            Err(response) => return response,
        };
        let snapshot: Snapshot = match serde_json::from_value(detail) {
            Ok(s) => s,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    json!({ "error": "bad_snapshot", "detail": e.to_string() }),
                );
            }
        };
        let record = SnapshotRecord {
            id: uuid::Uuid::now_v7().to_string(),
            device: device.to_string(),
            created: redtether_proto::time::unix_now(),
            operator: operator.name.clone(),
            snapshot,
        };
        if let Err(e) = self.store.add_snapshot(&record) {
            return store_error(&e);
        }
        let _ = self.store.record_event(
            device,
            HubEventKind::SnapshotTaken,
            json!({ "snapshot": record.id, "operator": operator.name }),
        );
        json_response(StatusCode::CREATED, snapshot_summary(&record))
    }

    pub(super) fn snapshots(&self, device: &str, id: Option<&str>) -> Response<Full<Bytes>> {
        match (self.store.snapshots(device), id) {
            (Err(e), _) => store_error(&e),
            (Ok(all), None) => {
                json_response(StatusCode::OK, json!(all.iter().map(snapshot_summary).collect::<Vec<_>>()))
            }
            (Ok(all), Some(id)) => match all.into_iter().find(|s| s.id == id) {
                Some(s) => {
                    json_response(StatusCode::OK, json!({ "summary": snapshot_summary(&s), "snapshot": s.snapshot }))
                }
                None => error(StatusCode::NOT_FOUND, "unknown_snapshot"),
            },
        }
    }

    pub(super) async fn sbom(&self, operator: &OperatorRecord, device: &str, fresh: bool) -> Response<Full<Bytes>> {
        if fresh {
            if !Self::may_change(operator) {
                return error(StatusCode::FORBIDDEN, "forbidden");
            }
            let sbom = match self.ask(device, Command::Sbom).await {
                Ok(sbom) => sbom,
                Err(response) => return response,
            };
            if let Err(e) = self.store.put_sbom(device, &sbom) {
                return store_error(&e);
            }
            return json_response(StatusCode::OK, sbom);
        }
        match self.store.sbom(device) {
            Ok(Some(sbom)) => json_response(StatusCode::OK, sbom),
            Ok(None) => error(StatusCode::NOT_FOUND, "no_sbom"),
            Err(e) => store_error(&e),
        }
    }

    /// The credentials to deploy to `device` (its key `device_key`, hex SPKI) from the snapshot
    /// `taken`, or the response to give instead.
    fn credentials_for(
        &self,
        taken: &SnapshotRecord,
        device: &str,
        device_key: Option<&str>,
    ) -> Result<Option<Credentials>, Box<Response<Full<Bytes>>>> {
        credentials_for_target(&self.credentials_key, taken, device, device_key).map_err(|(code, detail)| {
            Box::new(json_response(StatusCode::CONFLICT, json!({ "error": code, "detail": detail })))
        })
    }

    /// Sends `command` to the device and returns its answer, or the response to give instead.
    async fn ask(&self, device: &str, command: Command) -> Result<serde_json::Value, Response<Full<Bytes>>> {
        if !matches!(self.store.device(device), Ok(Some(_))) {
            return Err(error(StatusCode::NOT_FOUND, "unknown_device"));
        }
        let _ = self.store.record_event(device, HubEventKind::OperatorCommand, json!({ "command": command.as_str() }));
        match self.registry.send(device, command, ASK_TIMEOUT).await {
            Ok((true, detail)) => Ok(detail),
            Ok((false, detail)) => {
                Err(json_response(StatusCode::BAD_GATEWAY, json!({ "error": "device_error", "detail": detail })))
            }
            Err(CommandError::Offline) => Err(error(StatusCode::CONFLICT, "device_offline")),
            Err(CommandError::Timeout) => Err(error(StatusCode::GATEWAY_TIMEOUT, "device_timeout")),
            Err(CommandError::Lost) => Err(error(StatusCode::BAD_GATEWAY, "connection_lost")),
        }
    }
}
