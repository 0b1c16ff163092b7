//! The operator API's policy and token routes (owners change, every role reads):
//!
//! - `GET /api/devices/{id}/policy` — the newest policy: `{"desired", "number", "state",
//!   "reason", "applied_at", "hash", "made_at", "made_by"}`; 404 `no_policy` before the first
//! - `PUT /api/devices/{id}/policy` — a new document (the policy's fields but `tokens`) →
//!   202 `{"number"}`; 400 `invalid_policy` with the `field` to blame. It is the device's own
//!   and wins over its group's (`groups_api`)
//! - `DELETE /api/devices/{id}/policy` — the device takes its group's policy again → 202
//!   `{"number", "group"}`; 409 `no_group_policy` when its group has none (or it has no group)
//! - `GET /api/devices/{id}/tokens` — name, expiry, scope, who made it; never the token
//! - `POST /api/devices/{id}/tokens` `{"name", "expires_in", "scope"}` → 201 with the token,
//!   shown this once; 409 when the name is taken or no policy was set (a token reaches the
//!   device only inside one)
//! - `DELETE /api/devices/{id}/tokens/{name}` → 204
//!
//! Every change makes the device's next policy (signed for it with the hub's key, numbered per
//! device) and wakes its session, so an online device gets it at once and an offline one when
//! it connects.

use crate::api::RequestBody;
use crate::api::{Api, error, json_response, store_error, time};
use crate::policy_body::{BodyError, parse_document, parse_token_request};
use crate::store::{HubTokenRecord, MadePolicy, OperatorRecord, OperatorRole, PolicyChange, PolicyError};
use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use redtether_proto::audit::HubEventKind;
use redtether_proto::time::unix_now;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The largest policy body: a thousand users with their hashes fit well within it.
const MAX_POLICY_BODY: usize = 1 << 20;
const MAX_TOKEN_BODY: usize = 16 << 10;
/// What the device's token store accepts: this prefix and 32 random bytes.
const TOKEN_PREFIX: &str = "rtt_";

fn invalid(code: &str, e: &BodyError) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, json!({ "error": code, "field": e.field, "message": e.message }))
}

/// A new bearer token and its digest (SHA-256 of the whole token, lower-case hex).
fn new_token() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    (token, digest)
}

/// The operator's document as they PUT it: tokens are shown by the token routes only.
fn desired_json(desired: &redtether_proto::policy::PolicyDocument) -> serde_json::Value {
    let mut v = json!(desired);
    if let Some(fields) = v.as_object_mut() {
        fields.remove("tokens");
    }
    v
}

fn token_json(t: &HubTokenRecord, now: u64) -> serde_json::Value {
    json!({
        "name": t.name,
        "expires": t.expires,
        "expires_at": time(Some(t.expires)),
        "expired": now >= t.expires,
        "scope": t.scope,
        "created": time(Some(t.created)),
        "created_by": t.created_by,
    })
}

async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")),
    }
}

impl Api {
    /// Security settings are the owner's: a member deploys flows but does not open the gate.
    fn may_set_policy(operator: &OperatorRecord) -> bool {
        operator.role == OperatorRole::Owner
    }

    /// The answer to give instead when the device is unknown (or cannot be looked up).
    /// The checks every change runs first: an owner, a known device.
    fn refuse_change(&self, operator: &OperatorRecord, device: &str) -> Option<Response<Full<Bytes>>> {
        if !Self::may_set_policy(operator) {
            return Some(error(StatusCode::FORBIDDEN, "forbidden"));
        }
        self.unknown_device(device)
    }

    /// [`Self::refuse_change`], then the body (never read for an operator who may not change).
    async fn change_request(
        &self,
        operator: &OperatorRecord,
        device: &str,
        body: RequestBody,
        limit: usize,
    ) -> Result<Bytes, Response<Full<Bytes>>> {
        if let Some(refusal) = self.refuse_change(operator, device) {
            return Err(refusal);
        }
        read_body(body, limit).await
    }

    fn unknown_device(&self, device: &str) -> Option<Response<Full<Bytes>>> {
        match self.store.device(device) {
            Ok(Some(_)) => None,
            Ok(None) => Some(error(StatusCode::NOT_FOUND, "unknown_device")),
            Err(e) => Some(store_error(&e)),
        }
    }

    pub(super) fn get_policy(&self, device: &str) -> Response<Full<Bytes>> {
        if let Some(r) = self.unknown_device(device) {
            return r;
        }
        match self.store.policy(device) {
            Ok(Some(p)) => json_response(
                StatusCode::OK,
                json!({
                    "desired": desired_json(&p.desired),
                    "number": p.number,
                    "state": p.state,
                    "reason": p.reason,
                    "applied_at": time(p.applied_at),
                    "hash": p.hash,
                    "made_at": time(Some(p.made_at)),
                    "made_by": p.made_by,
                    "group": p.group,
                }),
            ),
            Ok(None) => error(StatusCode::NOT_FOUND, "no_policy"),
            Err(e) => store_error(&e),
        }
    }

    pub(super) async fn put_policy(
        &self,
        operator: &OperatorRecord,
        device: &str,
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        let bytes = match self.change_request(operator, device, body, MAX_POLICY_BODY).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let document = match parse_document(&bytes) {
            Ok(d) => d,
            Err(e) => return invalid("invalid_policy", &e),
        };
        match self.change_policy(operator, device, PolicyChange::Document(document)).await {
            Ok(made) => json_response(StatusCode::ACCEPTED, json!({ "number": made.record.number })),
            Err(r) => r,
        }
    }

    pub(super) fn list_tokens(&self, device: &str) -> Response<Full<Bytes>> {
        if let Some(r) = self.unknown_device(device) {
            return r;
        }
        let now = unix_now();
        match self.store.policy_tokens(device) {
            Ok(tokens) => {
                json_response(StatusCode::OK, json!(tokens.iter().map(|t| token_json(t, now)).collect::<Vec<_>>()))
            }
            Err(e) => store_error(&e),
        }
    }

    pub(super) async fn create_token(
        &self,
        operator: &OperatorRecord,
        device: &str,
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        let bytes = match self.change_request(operator, device, body, MAX_TOKEN_BODY).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let request = match parse_token_request(&bytes) {
            Ok(r) => r,
            Err(e) => return invalid("invalid_token", &e),
        };
        let now = unix_now();
        let (token, sha256) = new_token();
        let record = HubTokenRecord {
            name: request.name.clone(),
            sha256,
            created: now,
            expires: now.saturating_add(request.lifetime.as_secs()),
            scope: request.scope.clone(),
            created_by: operator.name.clone(),
        };
        let (name, expires, scope) = (record.name.clone(), record.expires, record.scope.clone());
        let event = json!({ "name": name, "expires": expires, "scope": scope, "operator": operator.name });
        match self
            .change_policy_with(operator, device, PolicyChange::TokenAdded(record), |api| {
                api.record(device, HubEventKind::TokenCreated, event)
            })
            .await
        {
            Ok(made) => json_response(
                StatusCode::CREATED,
                json!({ "token": token, "name": name, "expires": expires, "scope": scope, "number": made.record.number }),
            ),
            Err(r) => r,
        }
    }

    pub(super) async fn revoke_token(
        &self,
        operator: &OperatorRecord,
        device: &str,
        name: &str,
    ) -> Response<Full<Bytes>> {
        if let Some(r) = self.refuse_change(operator, device) {
            return r;
        }
        let event = json!({ "name": name, "operator": operator.name });
        match self
            .change_policy_with(operator, device, PolicyChange::TokenRevoked(name.to_string()), |api| {
                api.record(device, HubEventKind::TokenRevoked, event)
            })
            .await
        {
            Ok(_) => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Err(r) => r,
        }
    }

    /// `DELETE /api/devices/{id}/policy`: the device's own policy gives way to its group's.
    pub(super) async fn drop_device_policy(&self, operator: &OperatorRecord, device: &str) -> Response<Full<Bytes>> {
        if let Some(refusal) = self.refuse_change(operator, device) {
            return refusal;
        }
        let group = match self.store.device(device) {
            Ok(d) => d.and_then(|d| d.group),
            Err(e) => return store_error(&e),
        };
        let document = match group.as_deref().map(|g| self.store.group(g)) {
            Some(Ok(Some(g))) => g.policy,
            Some(Err(e)) => return store_error(&e),
            _ => None,
        };
        let (Some(group), Some(document)) = (group, document) else {
            // Without a group policy to fall back on, the device's policy is all it has.
            return error(StatusCode::CONFLICT, "no_group_policy");
        };
        match self.change_policy(operator, device, PolicyChange::Group { group, document }).await {
            Ok(made) => {
                json_response(StatusCode::ACCEPTED, json!({ "number": made.record.number, "group": made.record.group }))
            }
            Err(r) => r,
        }
    }

    /// Makes the device's next policy from `change` (no role check: the caller's route did it).
    pub(crate) async fn change_policy(
        &self,
        operator: &OperatorRecord,
        device: &str,
        change: PolicyChange,
    ) -> Result<MadePolicy, Response<Full<Bytes>>> {
        self.change_policy_with(operator, device, change, |_| {}).await
    }

    /// Makes the device's next policy from `change`, records `before_changed` (a token event)
    /// and `policy.changed`, and wakes the device's session. `Err` is the answer to give.
    async fn change_policy_with(
        &self,
        operator: &OperatorRecord,
        device: &str,
        change: PolicyChange,
        before_changed: impl FnOnce(&Self),
    ) -> Result<MadePolicy, Response<Full<Bytes>>> {
        let (store, signer) = (Arc::clone(&self.store), Arc::clone(&self.signer));
        let (dev, by) = (device.to_string(), operator.name.clone());
        // The store's lock and fdatasync are blocking; concurrent changes queue there, not on
        // the runtime's threads.
        let made = tokio::task::spawn_blocking(move || {
            store.make_policy(&dev, change, &by, unix_now(), Box::new(|p| redtether_proto::policy::sign(p, &signer)))
        })
        .await;
        let made = match made {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => return Err(policy_error(&e)),
            Err(e) => {
                tracing::error!(%device, error = %e, "policy change failed");
                return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "store_error"));
            }
        };
        before_changed(self);
        let changes = made.document.changes_from(made.previous.as_ref());
        let number = made.record.number;
        let mut detail = json!({ "number": number, "operator": operator.name, "changes": changes });
        if let Some(group) = &made.record.group {
            detail["group"] = json!(group);
        }
        self.record(device, HubEventKind::PolicyChanged, detail);
        tracing::info!(%device, number, operator = %operator.name, hash = %made.record.hash, "policy made");
        self.registry.wake(device, crate::registry::Waiting::Policy);
        Ok(made)
    }

    fn record(&self, device: &str, kind: HubEventKind, detail: serde_json::Value) {
        if let Err(e) = self.store.record_event(device, kind, detail) {
            tracing::error!(%device, %kind, error = %e, "hub event not recorded");
        }
    }
}

fn policy_error(e: &PolicyError) -> Response<Full<Bytes>> {
    match e {
        PolicyError::NoPolicy => error(StatusCode::CONFLICT, "no_policy"),
        PolicyError::TokenExists(_) => error(StatusCode::CONFLICT, "token_exists"),
        PolicyError::UnknownToken(_) => error(StatusCode::NOT_FOUND, "unknown_token"),
        PolicyError::Invalid(f) => json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid_policy", "field": f.field, "message": f.message }),
        ),
        PolicyError::TooLarge(_) => error(StatusCode::PAYLOAD_TOO_LARGE, "policy_too_large"),
        PolicyError::Store(e) => store_error(e),
    }
}
