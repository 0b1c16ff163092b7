//! What the CLI's `operator` and `enroll-token` commands do, as owners' API routes (so the
//! console's operator and enrollment pages are API calls a script could make too):
//!
//! - `GET /api/operators` — every account
//! - `POST /api/operators` `{name, role, email?}` — a new account; answers its one-time setup code
//! - `PUT /api/operators/{name}` `{role}` — a new role (its sessions end)
//! - `DELETE /api/operators/{name}` — removes the account (its sessions and tokens end)
//! - `POST /api/operators/{name}/reset-2fa` — clears its second factor; answers a new setup code
//! - `PUT /api/operators/{name}/groups` `{"<group>": "<role>", …}` — its roles narrowed per
//!   device group (replacing the ones it had; `{}` clears them): on a group's devices, the group
//!   and its rollouts, and when promoting into the group, it acts with the lower of its role and
//!   its role there. A group role never raises a role.
//! - `POST /api/enrollment-tokens` `{device, expires_in?, group?}` — a one-time enrollment token
//!   (for a device that joins `group` when it enrolls) and the exact `redtether enroll …` line
//!   for the device
//!
//! Owners only, recorded as done by the operator. An owner cannot remove or demote themself:
//! a hub whose last owner locked themself out needs the CLI on the machine.

use crate::accounts_api::read_json;
use crate::api::{Api, RequestBody, error, json_response};
use crate::caller::Caller;
use crate::control::{HubRequest, RequestError, apply_as};
use crate::store::prelude::*;
use crate::store::{OperatorRole, StoreError};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use redtether_proto::audit::{Actor, HubEventKind};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// Where devices reach the hub, for the `redtether enroll` line the console shows.
#[derive(Debug, Clone)]
pub struct EnrollHint {
    /// `HOST:PORT` of the QUIC listener for devices (`HubSettings::device_address`).
    pub hub: String,
    pub ca_fingerprint: String,
    /// `enroll_token_lifetime`: a token's lifetime when the request names none.
    pub token_lifetime: Duration,
}

impl EnrollHint {
    /// The command a device's administrator runs with `token`.
    pub fn command(&self, token: &str) -> String {
        format!("redtether enroll --hub {} --token {token} --ca-fingerprint {}", self.hub, self.ca_fingerprint)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOperator {
    name: String,
    role: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnrollment {
    device: String,
    /// A duration like `1h` or `7d`.
    #[serde(default)]
    expires_in: Option<String>,
    /// The group the device joins when it enrolls.
    #[serde(default)]
    group: Option<String>,
}

/// The longest an enrollment token may live: a forgotten token must not enroll a year later.
const MAX_ENROLL_LIFETIME: Duration = Duration::from_secs(30 * 86400);

fn refusal(e: RequestError) -> Response<Full<Bytes>> {
    let (status, code) = match &e {
        RequestError::DeviceId(_) | RequestError::Role(_) | RequestError::Email(_) | RequestError::OperatorName(_) => {
            (StatusCode::BAD_REQUEST, "invalid")
        }
        RequestError::NotLocal(_) => (StatusCode::CONFLICT, "single_sign_on_account"),
        RequestError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
        RequestError::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, "conflict"),
        RequestError::Store(store) => return crate::api::store_error(store),
        RequestError::NeedsRunningHub => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    json_response(status, json!({ "error": code, "message": e.to_string() }))
}

impl Api {
    fn run_as(&self, caller: &Caller, request: &HubRequest) -> Response<Full<Bytes>> {
        match apply_as(&*self.store, request, Actor::user(&caller.operator.name)) {
            Ok(value) => json_response(StatusCode::OK, value),
            Err(e) => refusal(e),
        }
    }

    /// The operator and enrollment routes (`segments` start with `api/operators` or
    /// `api/enrollment-tokens`).
    pub(crate) async fn operators_route(
        &self,
        caller: &Caller,
        method: &http::Method,
        segments: &[&str],
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        use http::Method;
        let owner = caller.operator.role == OperatorRole::Owner;
        let me = caller.operator.name.as_str();
        match (method, segments) {
            (_, ["api", "operators", ..] | ["api", "enrollment-tokens"]) if !owner => {
                error(StatusCode::FORBIDDEN, "forbidden")
            }
            (&Method::GET, ["api", "operators"]) => self.run_as(caller, &HubRequest::OperatorList),
            (&Method::POST, ["api", "operators"]) => match read_json::<NewOperator>(body).await {
                Ok(new) => self.run_as(
                    caller,
                    &HubRequest::OperatorAdd {
                        name: new.name,
                        role: new.role,
                        email: new.email.filter(|e| !e.is_empty()),
                        token_expires_secs: None,
                        setup_secs: self.auth.setup_code_lifetime.as_secs(),
                    },
                ),
                Err(r) => r,
            },
            (&Method::PUT | &Method::DELETE, ["api", "operators", name, ..]) if *name == me => {
                error(StatusCode::CONFLICT, "cannot_change_yourself")
            }
            (&Method::PUT, ["api", "operators", name]) => match read_json::<NewRole>(body).await {
                Ok(new) => self.run_as(caller, &HubRequest::OperatorRole { name: name.to_string(), role: new.role }),
                Err(r) => r,
            },
            (&Method::PUT, ["api", "operators", name, "groups"]) => {
                match read_json::<std::collections::BTreeMap<String, String>>(body).await {
                    Ok(roles) => self.set_group_roles(caller, name, roles),
                    Err(r) => r,
                }
            }
            (&Method::DELETE, ["api", "operators", name]) => {
                self.run_as(caller, &HubRequest::OperatorRemove { name: name.to_string() })
            }
            (&Method::POST, ["api", "operators", name, "reset-2fa"]) => self.run_as(
                caller,
                &HubRequest::OperatorReset2fa {
                    name: name.to_string(),
                    setup_secs: self.auth.setup_code_lifetime.as_secs(),
                },
            ),
            (&Method::POST, ["api", "enrollment-tokens"]) => match read_json::<NewEnrollment>(body).await {
                Ok(new) => self.enrollment_token(caller, new),
                Err(r) => r,
            },
            (_, ["api", "operators"] | ["api", "operators", _] | ["api", "enrollment-tokens"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    /// `PUT /api/operators/{name}/groups` `{"<group>": "<role>", …}`: the operator's roles
    /// narrowed per group, replacing the ones they had (`{}` clears them).
    fn set_group_roles(
        &self,
        caller: &Caller,
        name: &str,
        roles: std::collections::BTreeMap<String, String>,
    ) -> Response<Full<Bytes>> {
        let mut parsed = std::collections::BTreeMap::new();
        for (group, role) in roles {
            let Some(role) = OperatorRole::parse(&role) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "invalid", "message": format!("{group}: {role:?} is not owner, member, viewer or dashboard") }),
                );
            };
            match self.store.group(&group) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return json_response(StatusCode::NOT_FOUND, json!({ "error": "unknown_group", "group": group }));
                }
                Err(e) => return crate::api::store_error(&e),
            }
            parsed.insert(group, role);
        }
        let changed = self.store.update_operator(name, |r| std::mem::replace(&mut r.group_roles, parsed.clone()));
        let from = match changed {
            Ok(Some(from)) => from,
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_operator"),
            Err(e) => return crate::api::store_error(&e),
        };
        let detail = json!({ "group_roles": { "from": from, "to": parsed } });
        if let Err(e) = self.store.record(
            HubEventKind::OperatorRoleChanged,
            Actor::user(&caller.operator.name),
            &format!("operator:{name}"),
            detail,
        ) {
            return crate::api::store_error(&e);
        }
        json_response(StatusCode::OK, json!({ "operator": name, "group_roles": parsed }))
    }

    fn enrollment_token(&self, caller: &Caller, new: NewEnrollment) -> Response<Full<Bytes>> {
        let lifetime = match new.expires_in.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => self.enroll.token_lifetime,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() && d <= MAX_ENROLL_LIFETIME => d,
                _ => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "invalid", "message": "expires_in: a duration from 1s to 30d, like 1h" }),
                    );
                }
            },
        };
        let group = new.group.filter(|g| !g.trim().is_empty());
        let request =
            HubRequest::EnrollToken { device: new.device.clone(), lifetime_secs: lifetime.as_secs().max(1), group };
        match apply_as(&*self.store, &request, Actor::user(&caller.operator.name)) {
            Ok(value) => {
                let token = value["token"].as_str().unwrap_or_default();
                let expires = redtether_proto::time::unix_now().saturating_add(lifetime.as_secs());
                json_response(
                    StatusCode::OK,
                    json!({
                        "device": new.device,
                        "token": token,
                        "expires": redtether_proto::time::format_unix(expires),
                        "command": self.enroll.command(token),
                    }),
                )
            }
            Err(e) => refusal(e),
        }
    }
}
