//! The operator API's pipelines: an ordered list of groups a snapshot is promoted through
//! (development → test → production). Viewers read, owners make and delete, members promote.
//!
//! - `POST /api/pipelines` `{"name", "stages": ["dev", "test", "prod"]}` — each stage a group
//!   name, or `{"group", "plan"}` with the plan its rollouts take (default: one canary, then
//!   everything, 60 s wait, no failure allowed) → 201
//! - `GET /api/pipelines[/{name}]`, `DELETE /api/pipelines/{name}` → 204
//! - `POST /api/pipelines/{name}/promote` `{"from": "dev", "snapshot": id}` → 202 `{"rollout",
//!   "to"}`: a rollout of the snapshot to the stage after `from`, with that stage's plan. The
//!   snapshot must have come from `from`: taken from one of its devices, or rolled out to it
//!   by a rollout that completed. 409 `last_stage`, `snapshot_not_from_stage`.

use crate::api::{Api, RequestBody, error, json_response, store_error, time};
use crate::caller::Caller;
use crate::groups_api::{conflict, invalid, read_json};
use crate::rollout::{Plan, RawPlan, State};
use crate::store::{OperatorRole, PipelineRecord, PipelineStage};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use redtether_proto::audit::{Actor, HubEventKind};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StageBody {
    Group(String),
    WithPlan { group: String, plan: RawPlan },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPipeline {
    name: String,
    stages: Vec<StageBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Promotion {
    from: String,
    snapshot: String,
}

fn pipeline_json(p: &PipelineRecord) -> serde_json::Value {
    json!({
        "name": p.name,
        "stages": p.stages.iter().map(|s| json!({ "group": s.group, "plan": s.plan.to_json() })).collect::<Vec<_>>(),
        "created": time(Some(p.created)),
        "created_by": p.created_by,
    })
}

impl Api {
    pub(crate) async fn pipelines_route(
        &self,
        caller: &Caller,
        method: &Method,
        segments: &[&str],
        body: RequestBody,
    ) -> Response<Full<Bytes>> {
        let role = caller.operator.role;
        match (method, segments) {
            (&Method::GET, ["api", "pipelines"]) => match self.store.pipelines() {
                Ok(all) => json_response(StatusCode::OK, json!(all.iter().map(pipeline_json).collect::<Vec<_>>())),
                Err(e) => store_error(&e),
            },
            (&Method::GET, ["api", "pipelines", name]) => match self.store.pipeline(name) {
                Ok(Some(p)) => json_response(StatusCode::OK, pipeline_json(&p)),
                Ok(None) => error(StatusCode::NOT_FOUND, "unknown_pipeline"),
                Err(e) => store_error(&e),
            },
            (&Method::POST, ["api", "pipelines"]) if role == OperatorRole::Owner => match read_json(body).await {
                Ok(new) => self.create_pipeline(caller, new),
                Err(r) => r,
            },
            (&Method::DELETE, ["api", "pipelines", name]) if role == OperatorRole::Owner => {
                match self.store.delete_pipeline(name) {
                    Ok(true) => {
                        let target = format!("pipeline:{name}");
                        if let Err(e) = self.store.record(
                            HubEventKind::PipelineDeleted,
                            Actor::user(&caller.operator.name),
                            &target,
                            json!({}),
                        ) {
                            return store_error(&e);
                        }
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        r
                    }
                    Ok(false) => error(StatusCode::NOT_FOUND, "unknown_pipeline"),
                    Err(e) => store_error(&e),
                }
            }
            (&Method::POST, ["api", "pipelines", name, "promote"]) if role >= OperatorRole::Member => {
                match read_json(body).await {
                    Ok(promotion) => self.promote(caller, name, promotion).await,
                    Err(r) => r,
                }
            }
            (&Method::POST | &Method::DELETE, ["api", "pipelines", ..]) => error(StatusCode::FORBIDDEN, "forbidden"),
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    fn create_pipeline(&self, caller: &Caller, new: NewPipeline) -> Response<Full<Bytes>> {
        if !redtether_proto::names::valid_name(&new.name) {
            return invalid("name: 1-64 of A-Z a-z 0-9 . _ @ -");
        }
        if new.stages.len() < 2 || new.stages.len() > 10 {
            return invalid("stages: 2 to 10 groups");
        }
        let mut stages: Vec<PipelineStage> = Vec::new();
        for (i, stage) in new.stages.into_iter().enumerate() {
            let (group, plan) = match stage {
                StageBody::Group(group) => (group, Plan::default()),
                StageBody::WithPlan { group, plan } => match plan.check() {
                    Ok(plan) => (group, plan),
                    Err(e) => return invalid(format!("stages[{i}].{e}")),
                },
            };
            match self.store.group(&group) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return json_response(StatusCode::NOT_FOUND, json!({ "error": "unknown_group", "group": group }));
                }
                Err(e) => return store_error(&e),
            }
            if stages.iter().any(|s| s.group == group) {
                return invalid(format!("stages[{i}]: {group:?} is already a stage"));
            }
            stages.push(PipelineStage { group, plan });
        }
        let record = PipelineRecord {
            name: new.name.clone(),
            stages,
            created: redtether_proto::time::unix_now(),
            created_by: caller.operator.name.clone(),
        };
        if let Err(e) = self.store.create_pipeline(&record) {
            return conflict("pipeline_exists", &e);
        }
        let detail = json!({ "stages": record.stages.iter().map(|s| &s.group).collect::<Vec<_>>() });
        if let Err(e) = self.store.record(
            HubEventKind::PipelineCreated,
            Actor::user(&caller.operator.name),
            &format!("pipeline:{}", record.name),
            detail,
        ) {
            return store_error(&e);
        }
        json_response(StatusCode::CREATED, pipeline_json(&record))
    }

    async fn promote(&self, caller: &Caller, name: &str, promotion: Promotion) -> Response<Full<Bytes>> {
        let pipeline = match self.store.pipeline(name) {
            Ok(Some(p)) => p,
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_pipeline"),
            Err(e) => return store_error(&e),
        };
        let Some(at) = pipeline.stages.iter().position(|s| s.group == promotion.from) else {
            return json_response(StatusCode::BAD_REQUEST, json!({ "error": "not_a_stage", "from": promotion.from }));
        };
        let Some(next) = pipeline.stages.get(at + 1) else { return error(StatusCode::CONFLICT, "last_stage") };
        // A promotion changes the next stage's devices: the role there decides.
        if caller.operator.role_in(Some(&next.group)) < OperatorRole::Member {
            return error(StatusCode::FORBIDDEN, "forbidden");
        }
        if let Some(refusal) = self.refuse_promotion(&promotion.snapshot, &promotion.from) {
            return refusal;
        }
        let started = self.start_rollout(caller, &next.group, &promotion.snapshot, next.plan.clone(), Some(name)).await;
        if started.status() != StatusCode::ACCEPTED {
            return started;
        }
        let rollout = self.rollouts.active_for_group(&next.group);
        let detail = json!({ "from": promotion.from, "to": next.group, "snapshot": promotion.snapshot, "rollout": rollout, "operator": caller.operator.name });
        if let Err(e) = self.store.record(
            HubEventKind::PipelinePromoted,
            Actor::user(&caller.operator.name),
            &format!("pipeline:{name}"),
            detail,
        ) {
            return store_error(&e);
        }
        json_response(StatusCode::ACCEPTED, json!({ "rollout": rollout, "to": next.group }))
    }

    /// Why `snapshot` may not be promoted from `group`, if it may not: it must have been taken
    /// from one of the group's devices, or reached the group through a rollout that completed.
    fn refuse_promotion(&self, snapshot: &str, group: &str) -> Option<Response<Full<Bytes>>> {
        let record = match self.store.snapshot_by_id(snapshot) {
            Ok(Some(r)) => r,
            Ok(None) => return Some(error(StatusCode::NOT_FOUND, "unknown_snapshot")),
            Err(e) => return Some(store_error(&e)),
        };
        match self.store.device(&record.device) {
            Ok(Some(d)) if d.group.as_deref() == Some(group) => return None,
            Ok(_) => {}
            Err(e) => return Some(store_error(&e)),
        }
        match self.store.rollouts() {
            Ok(all)
                if all.iter().any(|r| r.group == group && r.snapshot == snapshot && r.state == State::Completed) =>
            {
                None
            }
            Ok(_) => Some(error(StatusCode::CONFLICT, "snapshot_not_from_stage")),
            Err(e) => Some(store_error(&e)),
        }
    }
}
