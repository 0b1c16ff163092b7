//! The operator API's device groups and pipelines (viewers read; owners make, delete and fill
//! groups and set their policy, since membership decides a device's security settings; members
//! start and steer rollouts and promote snapshots):
//!
//! - `GET /api/groups` — every group: `name`, `description`, `devices` (how many), `policy`
//!   (whether it has one), `rollout` (its running or paused rollout's id, or null)
//! - `POST /api/groups` `{"name", "description"}` → 201; 409 `group_exists`
//! - `GET /api/groups/{name}` — the same with `devices` listed (`id`, `online`, `policy_from`:
//!   `group`, `device` or null) and its `rollouts` (ids, newest first)
//! - `PUT /api/groups/{name}/devices` `{"add": [ids], "remove": [ids]}` → `{"added", "removed",
//!   "moved_from"}`. A device is in at most one group: adding it here takes it out of its other.
//!   A device that joins gets the group's policy at once unless it has its own.
//! - `DELETE /api/groups/{name}` → 204; 409 `group_not_empty`
//! - `GET|PUT /api/groups/{name}/policy` — the group's policy document (as for a device). A PUT
//!   makes the policy of every member without its own: `{"devices": n, "overridden": [ids]}`.
//!   Precedence: a device's own policy (`PUT /api/devices/{id}/policy`) wins over its group's;
//!   `DELETE /api/devices/{id}/policy` gives the device its group's again.
//! - `GET /api/groups/{name}/audit` — as `GET /api/audit?group={name}`: its members' events and
//!   the hub's events about the group (target `group:<name>`)
//! - rollouts (`POST /api/groups/{name}/deploy`, `/api/rollouts…`): see `rollouts_api`
//! - pipelines (`/api/pipelines…`): see `pipelines_api`

use crate::api::{Api, RequestBody, error, json_response, store_error, time};
use crate::caller::Caller;
use crate::policy_body::parse_document;
use crate::store::prelude::*;
use crate::store::{GroupRecord, OperatorRole, PolicyChange, StoreError};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use redtether_proto::audit::{Actor, HubEventKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesChange {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub(crate) fn invalid(message: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, json!({ "error": "invalid", "message": message.into() }))
}

pub(crate) async fn read_json<T: DeserializeOwned>(body: RequestBody) -> Result<T, Response<Full<Bytes>>> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")),
    };
    serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
}

pub(crate) fn conflict(code: &str, e: &StoreError) -> Response<Full<Bytes>> {
    match e {
        StoreError::Conflict(message) => {
            json_response(StatusCode::CONFLICT, json!({ "error": code, "message": message }))
        }
        other => store_error(other),
    }
}

impl Api {
    pub(crate) async fn groups_route(
        &self,
        caller: &Caller,
        method: &Method,
        segments: &[&str],
        query: Option<&str>,
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        let role = caller.operator.role;
        let owner = || (role < OperatorRole::Owner).then(|| error(StatusCode::FORBIDDEN, "forbidden"));
        let member = || (role < OperatorRole::Member).then(|| error(StatusCode::FORBIDDEN, "forbidden"));
        match (method, segments) {
            (&Method::GET, ["api", "groups"]) => self.list_groups(),
            (&Method::POST, ["api", "groups"]) => match owner() {
                Some(r) => r,
                None => match read_json::<NewGroup>(body).await {
                    Ok(new) => self.create_group(caller, new),
                    Err(r) => r,
                },
            },
            (&Method::GET, ["api", "groups", name]) => self.show_group(name),
            (&Method::DELETE, ["api", "groups", name]) => owner().unwrap_or_else(|| self.delete_group(caller, name)),
            (&Method::PUT, ["api", "groups", name, "devices"]) => match owner() {
                Some(r) => r,
                None => match read_json::<DevicesChange>(body).await {
                    Ok(change) => self.change_members(caller, name, change).await,
                    Err(r) => r,
                },
            },
            (&Method::GET, ["api", "groups", name, "policy"]) => match self.store.group(name) {
                Ok(Some(GroupRecord { policy: Some(p), .. })) => json_response(StatusCode::OK, json!({ "desired": p })),
                Ok(Some(_)) => error(StatusCode::NOT_FOUND, "no_policy"),
                Ok(None) => error(StatusCode::NOT_FOUND, "unknown_group"),
                Err(e) => store_error(&e),
            },
            (&Method::PUT, ["api", "groups", name, "policy"]) => match owner() {
                Some(r) => r,
                None => self.put_group_policy(caller, name, body).await,
            },
            (&Method::GET, ["api", "groups", name, "audit"]) => match self.store.group(name) {
                Ok(Some(_)) => self.fleet_audit_page(query, Some(name)).await,
                Ok(None) => error(StatusCode::NOT_FOUND, "unknown_group"),
                Err(e) => store_error(&e),
            },
            (&Method::POST, ["api", "groups", name, "deploy"]) => match member() {
                Some(r) => r,
                None => self.deploy_group(caller, name, body).await,
            },
            (&Method::GET, ["api", "groups", name, "rollouts"]) => self.group_rollouts(name),
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    fn list_groups(&self) -> Response<Full<Bytes>> {
        let (groups, devices) = match (self.store.groups(), self.store.devices()) {
            (Ok(g), Ok(d)) => (g, d),
            (Err(e), _) | (_, Err(e)) => return store_error(&e),
        };
        let list: Vec<_> = groups
            .iter()
            .map(|g| {
                let members = devices.iter().filter(|d| d.group.as_deref() == Some(&g.name)).count();
                json!({
                    "name": g.name,
                    "description": g.description,
                    "devices": members,
                    "policy": g.policy.is_some(),
                    "rollout": self.rollouts.active_for_group(&g.name),
                    "created": time(Some(g.created)),
                    "created_by": g.created_by,
                })
            })
            .collect();
        json_response(StatusCode::OK, json!(list))
    }

    fn create_group(&self, caller: &Caller, new: NewGroup) -> Response<Full<Bytes>> {
        if !redtether_proto::names::valid_name(&new.name) {
            return invalid("name: 1-64 of A-Z a-z 0-9 . _ @ -");
        }
        if new.description.len() > 1000 || new.description.chars().any(char::is_control) {
            return invalid("description: at most 1000 characters, no control characters");
        }
        let record = GroupRecord {
            name: new.name.clone(),
            description: new.description.clone(),
            created: redtether_proto::time::unix_now(),
            created_by: caller.operator.name.clone(),
            policy: None,
        };
        if let Err(e) = self.store.create_group(&record) {
            return conflict("group_exists", &e);
        }
        let detail = json!({ "description": new.description });
        if let Err(e) = self.store.record(
            HubEventKind::GroupCreated,
            Actor::user(&caller.operator.name),
            &format!("group:{}", new.name),
            detail,
        ) {
            return store_error(&e);
        }
        json_response(StatusCode::CREATED, json!({ "name": new.name, "description": new.description }))
    }

    fn show_group(&self, name: &str) -> Response<Full<Bytes>> {
        let group = match self.store.group(name) {
            Ok(Some(g)) => g,
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_group"),
            Err(e) => return store_error(&e),
        };
        let members = match self.store.group_members(name) {
            Ok(m) => m,
            Err(e) => return store_error(&e),
        };
        let online = self.registry.online_ids();
        let devices: Vec<_> = members
            .iter()
            .map(|id| {
                let policy_from = match self.store.policy(id) {
                    Ok(Some(p)) if p.group.is_some() => json!("group"),
                    Ok(Some(_)) => json!("device"),
                    _ => serde_json::Value::Null,
                };
                json!({ "id": id, "online": online.contains(id), "policy_from": policy_from })
            })
            .collect();
        let rollouts: Vec<String> = match self.store.rollouts() {
            Ok(all) => all.into_iter().rev().filter(|r| r.group == name).map(|r| r.id).collect(),
            Err(e) => return store_error(&e),
        };
        json_response(
            StatusCode::OK,
            json!({
                "name": group.name,
                "description": group.description,
                "devices": devices,
                "policy": group.policy.is_some(),
                "rollout": self.rollouts.active_for_group(name),
                "rollouts": rollouts,
                "created": time(Some(group.created)),
                "created_by": group.created_by,
            }),
        )
    }

    fn delete_group(&self, caller: &Caller, name: &str) -> Response<Full<Bytes>> {
        match self.store.delete_group(name) {
            Ok(true) => {}
            Ok(false) => return error(StatusCode::NOT_FOUND, "unknown_group"),
            Err(e) => return conflict("group_not_empty", &e),
        }
        if let Err(e) = self.store.record(
            HubEventKind::GroupDeleted,
            Actor::user(&caller.operator.name),
            &format!("group:{name}"),
            json!({}),
        ) {
            return store_error(&e);
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    }

    async fn change_members(&self, caller: &Caller, name: &str, change: DevicesChange) -> Response<Full<Bytes>> {
        if change.add.iter().any(|d| change.remove.contains(d)) {
            return invalid("a device cannot be both added and removed");
        }
        if change.add.len() + change.remove.len() > 10_000 {
            return invalid("at most 10000 devices at once");
        }
        let store = std::sync::Arc::clone(&self.store);
        let (group, add, remove) = (name.to_string(), change.add, change.remove);
        let changed = tokio::task::spawn_blocking(move || store.change_group_devices(&group, &add, &remove)).await;
        let changed = match changed {
            Ok(Ok(c)) => c,
            Ok(Err(StoreError::Conflict(message))) if message.starts_with("no group") => {
                return error(StatusCode::NOT_FOUND, "unknown_group");
            }
            Ok(Err(e)) => return conflict("unknown_device", &e),
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        if !changed.added.is_empty() || !changed.removed.is_empty() {
            let detail = json!({ "added": changed.added, "removed": changed.removed, "moved_from": changed.moved_from, "operator": caller.operator.name });
            if let Err(e) = self.store.record(
                HubEventKind::GroupDevicesChanged,
                Actor::user(&caller.operator.name),
                &format!("group:{name}"),
                detail,
            ) {
                return store_error(&e);
            }
        }
        // Devices that joined get the group's policy, unless they have their own.
        if let Ok(Some(GroupRecord { policy: Some(document), .. })) = self.store.group(name) {
            for device in &changed.added {
                if let Err(r) = self.follow_group_policy(&caller.operator, device, name, &document).await {
                    return r;
                }
            }
        }
        json_response(StatusCode::OK, json!(changed))
    }

    /// Gives `device` its group's policy unless it has its own; whether it did.
    pub(crate) async fn follow_group_policy(
        &self,
        operator: &crate::store::OperatorRecord,
        device: &str,
        group: &str,
        document: &redtether_proto::policy::PolicyDocument,
    ) -> Result<bool, Response<Full<Bytes>>> {
        match self.store.policy(device) {
            Ok(Some(p)) if p.group.is_none() => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(store_error(&e)),
        }
        let change = PolicyChange::Group { group: group.to_string(), document: document.clone() };
        self.change_policy(operator, device, change).await.map(|_| true)
    }

    async fn put_group_policy(&self, caller: &Caller, name: &str, body: RequestBody) -> Response<Full<Bytes>> {
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        };
        let document = match parse_document(&bytes) {
            Ok(d) => d,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "invalid_policy", "field": e.field, "message": e.message }),
                );
            }
        };
        match self.store.update_group(name, |g| g.policy = Some(document.clone())) {
            Ok(Some(_)) => {}
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_group"),
            Err(e) => return store_error(&e),
        }
        let members = match self.store.group_members(name) {
            Ok(m) => m,
            Err(e) => return store_error(&e),
        };
        let (mut changed, mut overridden) = (0, Vec::new());
        for device in &members {
            match self.follow_group_policy(&caller.operator, device, name, &document).await {
                Ok(true) => changed += 1,
                Ok(false) => overridden.push(device.clone()),
                Err(r) => return r,
            }
        }
        let detail = json!({ "devices": changed, "overridden": overridden, "operator": caller.operator.name });
        if let Err(e) = self.store.record(
            HubEventKind::GroupPolicyChanged,
            Actor::user(&caller.operator.name),
            &format!("group:{name}"),
            detail,
        ) {
            return store_error(&e);
        }
        json_response(StatusCode::ACCEPTED, json!({ "devices": changed, "overridden": overridden }))
    }
}
