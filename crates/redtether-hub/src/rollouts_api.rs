//! The operator API's rollouts (viewers read, members start and steer):
//!
//! - `POST /api/groups/{name}/deploy` `{"snapshot": id}` or `{"flows": [...], "modules",
//!   "env", "settings"}`, and `"plan": {"canary", "waves", "wait", "max_failed", "offline":
//!   "wait|skip", "on_halt": "rollback|hold", "timeout"}` (see `rollout::plan`) → 202
//!   `{"rollout": id}`. 409 `rollout_active` while the group has a running or paused one,
//!   `group_empty` without devices. Credentials travel only inside a snapshot.
//! - `GET /api/groups/{name}/rollouts` — its rollouts, newest first, summarised
//! - `GET /api/rollouts[/{id}]` — summaries; one with every device's `state` (`waiting`,
//!   `capturing`, `deploying`, `applied`, `failed`, `skipped`, `reverting`, `reverted`,
//!   `revert_failed`), `stage`, `reason`, `online`
//! - `POST /api/rollouts/{id}/pause|resume|abort` → the rollout; 409 `not_applicable`

use crate::api::{Api, RequestBody, error, json_response, store_error, time};
use crate::caller::Caller;
use crate::groups_api::{invalid, read_json};
use crate::rollout::{Command, CommandError, Plan, RawPlan, Rollout};
use crate::store::{OperatorRole, SnapshotRecord};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use redtether_proto::deployment::{Credentials, Snapshot, flows_hash};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDeploy {
    snapshot: Option<String>,
    flows: Option<Vec<serde_json::Value>>,
    modules: Option<BTreeMap<String, String>>,
    env: Option<BTreeMap<String, String>>,
    settings: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    plan: RawPlan,
}

/// A rollout in a list.
pub(crate) fn summary(r: &Rollout) -> serde_json::Value {
    json!({
        "id": r.id,
        "group": r.group,
        "state": r.state,
        "snapshot": r.snapshot,
        "flows_hash": r.flows_hash,
        "plan": r.plan.to_json(),
        "stage": r.stage,
        "stages": r.stages,
        "devices": r.devices.len(),
        "counts": r.counts(),
        "reasons": r.reasons,
        "operator": r.operator,
        "pipeline": r.pipeline,
        "created": time(Some(r.created_ms / 1000)),
        "updated": time(Some(r.updated_ms / 1000)),
    })
}

fn reason(state: &crate::rollout::DeviceState) -> Option<&str> {
    use crate::rollout::DeviceState as D;
    match state {
        D::Failed { reason, .. } | D::Skipped { reason } | D::RevertFailed { reason } => Some(reason),
        _ => None,
    }
}

impl Api {
    /// Routes under `/api/groups`, `/api/rollouts` and `/api/pipelines`.
    pub(crate) async fn fleet_route(
        &self,
        caller: &Caller,
        method: &Method,
        segments: &[&str],
        query: Option<&str>,
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        match segments {
            ["api", "groups", ..] => self.groups_route(caller, method, segments, query, body).await,
            ["api", "pipelines", ..] => self.pipelines_route(caller, method, segments, body).await,
            _ => self.rollouts_route(caller, method, segments),
        }
    }

    fn rollouts_route(&self, caller: &Caller, method: &Method, segments: &[&str]) -> Response<Full<Bytes>> {
        match (method, segments) {
            (&Method::GET, ["api", "rollouts"]) => match self.store.rollouts() {
                Ok(all) => {
                    // The active ones as they stand now, not as last stored.
                    let list: Vec<_> = all
                        .iter()
                        .rev()
                        .map(|r| self.rollouts.get(&r.id).ok().flatten().unwrap_or_else(|| r.clone()))
                        .map(|r| summary(&r))
                        .collect();
                    json_response(StatusCode::OK, json!(list))
                }
                Err(e) => store_error(&e),
            },
            (&Method::GET, ["api", "rollouts", id]) => match self.rollouts.get(id) {
                Ok(Some(r)) => json_response(StatusCode::OK, self.rollout_json(&r)),
                Ok(None) => error(StatusCode::NOT_FOUND, "unknown_rollout"),
                Err(e) => store_error(&e),
            },
            (&Method::POST, ["api", "rollouts", id, what @ ("pause" | "resume" | "abort")]) => {
                if caller.operator.role < OperatorRole::Member {
                    return error(StatusCode::FORBIDDEN, "forbidden");
                }
                let command = match *what {
                    "pause" => Command::Pause,
                    "resume" => Command::Resume,
                    _ => Command::Abort,
                };
                match self.rollouts.command(id, command, &caller.operator.name) {
                    Ok(r) => json_response(StatusCode::OK, self.rollout_json(&r)),
                    Err(CommandError::Unknown) => error(StatusCode::NOT_FOUND, "unknown_rollout"),
                    Err(CommandError::NotApplicable(state)) => json_response(
                        StatusCode::CONFLICT,
                        json!({ "error": "not_applicable", "message": format!("the rollout is {}", json!(state)) }),
                    ),
                    Err(CommandError::Store(e)) => store_error(&e),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    pub(crate) fn rollout_json(&self, r: &Rollout) -> serde_json::Value {
        let online = self.registry.online_ids();
        let mut v = summary(r);
        v["devices"] = json!(
            r.devices
                .iter()
                .map(|e| json!({
                    "device": e.device,
                    "stage": e.stage,
                    "state": e.state.name(),
                    "reason": reason(&e.state),
                    "online": online.contains(&e.device),
                    "previous": e.previous,
                    "deployment": e.forward,
                }))
                .collect::<Vec<_>>()
        );
        v
    }

    pub(crate) fn group_rollouts(&self, group: &str) -> Response<Full<Bytes>> {
        match self.store.rollouts() {
            Ok(all) => json_response(
                StatusCode::OK,
                json!(all.iter().rev().filter(|r| r.group == group).map(summary).collect::<Vec<_>>()),
            ),
            Err(e) => store_error(&e),
        }
    }

    pub(crate) async fn deploy_group(&self, caller: &Caller, group: &str, body: RequestBody) -> Response<Full<Bytes>> {
        let body: GroupDeploy = match read_json(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let plan = match body.plan.check() {
            Ok(p) => p,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "invalid_plan", "field": e.field, "message": e.message }),
                );
            }
        };
        let snapshot = match (body.snapshot, body.flows) {
            (Some(id), None) if body.modules.is_none() && body.env.is_none() && body.settings.is_none() => id,
            (Some(_), _) => return invalid("a rollout by snapshot id carries nothing else"),
            (None, None) => return invalid("flows (or snapshot) is required"),
            (None, Some(flows)) => {
                let snapshot = Snapshot {
                    flows,
                    credentials: None,
                    modules: body.modules.unwrap_or_default(),
                    env: body.env.unwrap_or_default(),
                    settings: body.settings.unwrap_or_default(),
                };
                if let Err(why) = snapshot.check() {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "invalid_snapshot", "detail": why.to_string() }),
                    );
                }
                // Kept like a device's snapshot, from no device: rollbacks and promotions name it.
                let record = SnapshotRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    device: String::new(),
                    created: redtether_proto::time::unix_now(),
                    operator: caller.operator.name.clone(),
                    snapshot,
                };
                if let Err(e) = self.store.add_snapshot(&record) {
                    return store_error(&e);
                }
                record.id
            }
        };
        self.start_rollout(caller, group, &snapshot, plan, None).await
    }

    /// Starts a rollout of kept snapshot `snapshot` to `group`'s devices: 202 `{"rollout"}`.
    pub(crate) async fn start_rollout(
        &self,
        caller: &Caller,
        group: &str,
        snapshot: &str,
        plan: Plan,
        pipeline: Option<&str>,
    ) -> Response<Full<Bytes>> {
        match self.store.group(group) {
            Ok(Some(_)) => {}
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_group"),
            Err(e) => return store_error(&e),
        }
        let record = match self.store.snapshot_by_id(snapshot) {
            Ok(Some(r)) => r,
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_snapshot"),
            Err(e) => return store_error(&e),
        };
        // Checked as each device will get it: portable credentials are sealed anew by then.
        let as_sent = Snapshot { credentials: None, ..record.snapshot.clone() };
        if let Err(why) = as_sent.check() {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_snapshot", "detail": why.to_string() }),
            );
        }
        if let Some(active) = self.rollouts.active_for_group(group) {
            return json_response(StatusCode::CONFLICT, json!({ "error": "rollout_active", "rollout": active }));
        }
        let mut members = match self.store.group_members(group) {
            Ok(m) => m,
            Err(e) => return store_error(&e),
        };
        if members.is_empty() {
            return error(StatusCode::CONFLICT, "group_empty");
        }
        // Credentials only the source device opens cannot go anywhere else (portable ones are
        // sealed anew per device as each deployment is made).
        let bound = matches!(record.snapshot.credentials, Some(Credentials::NodeRed(_) | Credentials::Sealed(_)));
        if bound && members.iter().any(|m| *m != record.device) {
            return error(StatusCode::CONFLICT, "credentials_not_portable");
        }
        // Online devices first, so the canary is one that can answer now; then by id.
        let online = self.registry.online_ids();
        members.sort_by_key(|d| !online.contains(d));
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let rollout = Rollout::new(
            uuid::Uuid::now_v7().to_string(),
            group.to_string(),
            snapshot.to_string(),
            flows_hash(&record.snapshot.flows),
            plan,
            members,
            caller.operator.name.clone(),
            pipeline.map(str::to_string),
            now_ms,
        );
        let id = rollout.id.clone();
        if let Err(e) = self.rollouts.start(rollout) {
            return store_error(&e);
        }
        json_response(StatusCode::ACCEPTED, json!({ "rollout": id }))
    }
}
