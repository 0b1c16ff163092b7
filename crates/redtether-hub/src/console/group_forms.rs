//! The groups pages' forms, each turned into the API request a script would make: make or
//! delete a group, add or remove devices, start a rollout, pause, resume or abort one.

use super::actions::{back, refused};
use super::groups::plan_from_form;
use super::route::GroupAction;
use super::{Form, seg};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

/// Device ids in a form field, separated by spaces, commas or new lines.
pub fn ids(field: &str) -> Vec<String> {
    field.split([',', ' ', '\n', '\r', '\t']).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl Api {
    pub(super) async fn group_act(&self, caller: &Caller, action: GroupAction, form: &Form) -> Response<ApiBody> {
        match action {
            GroupAction::Create => {
                let body = json!({ "name": form.text("name"), "description": form.text("description") });
                let (status, answer) = self.call(caller, Method::POST, "/api/groups", Some(body)).await;
                let page =
                    if status.is_success() { format!("/groups/{}", seg(form.text("name"))) } else { "/groups".into() };
                back(caller, &page, status, &answer, "group")
            }
            GroupAction::Devices(name) => {
                let body = json!({ "add": ids(form.text("add")), "remove": ids(form.text("remove")) });
                let path = format!("/api/groups/{}/devices", seg(&name));
                let (status, answer) = self.call(caller, Method::PUT, &path, Some(body)).await;
                back(caller, &format!("/groups/{}", seg(&name)), status, &answer, "members")
            }
            GroupAction::Delete(name) => {
                let (status, answer) =
                    self.call(caller, Method::DELETE, &format!("/api/groups/{}", seg(&name)), None).await;
                if status.is_success() {
                    back(caller, "/groups", status, &answer, "removed")
                } else {
                    back(caller, &format!("/groups/{}", seg(&name)), status, &answer, "")
                }
            }
            GroupAction::Deploy(name) => {
                let page = format!("/groups/{}", seg(&name));
                let plan = match plan_from_form(form) {
                    Ok(plan) => plan,
                    Err(word) => return refused(caller, &page, StatusCode::BAD_REQUEST, word),
                };
                let snapshot = [form.text("snapshot_id"), form.text("snapshot")].into_iter().find(|s| !s.is_empty());
                let body = match snapshot {
                    Some(id) => json!({ "snapshot": id, "plan": plan }),
                    None => match serde_json::from_str::<Value>(form.text("flows")) {
                        Ok(flows @ Value::Array(_)) => json!({ "flows": flows, "plan": plan }),
                        _ => return refused(caller, &page, StatusCode::BAD_REQUEST, "bad_body"),
                    },
                };
                let (status, answer) =
                    self.call(caller, Method::POST, &format!("/api/groups/{}/deploy", seg(&name)), Some(body)).await;
                match answer["rollout"].as_str() {
                    Some(id) if status.is_success() => {
                        super::layout::see_other(&format!("/rollouts/{}?done=rollout", seg(id)))
                    }
                    _ => back(caller, &page, status, &answer, ""),
                }
            }
            GroupAction::Steer(id, verb) => {
                let path = format!("/api/rollouts/{}/{verb}", seg(&id));
                let (status, answer) = self.call(caller, Method::POST, &path, None).await;
                back(caller, &format!("/rollouts/{}", seg(&id)), status, &answer, verb)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_split_on_spaces_commas_and_lines() {
        assert_eq!(super::ids("a, b\nc  d,"), ["a", "b", "c", "d"]);
        assert!(super::ids(" , ").is_empty());
    }
}
