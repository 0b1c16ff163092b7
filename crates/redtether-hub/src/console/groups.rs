//! `/groups`, `/groups/{name}` and `/rollouts/{id}`: device groups with their members and
//! policy origin, starting a staged rollout (a snapshot, or pasted flows, with its plan), and a
//! rollout's progress stage by stage (the page looks again every two seconds while it runs),
//! with pause, resume and abort. Reads and changes go through the API (`Api::call`).

use super::device::text;
use super::layout::{self, Nav, Notice, csrf_field};
use super::{Query, seg};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use crate::store::OperatorRole;
use http::{Method, Response, StatusCode};
use maud::html;
use serde_json::Value;

/// The device states of a rollout, in the order its progress is told.
const STATES: [&str; 9] =
    ["applied", "deploying", "capturing", "waiting", "failed", "skipped", "reverting", "reverted", "revert_failed"];

fn count(counts: &Value, state: &str) -> u64 {
    counts[state].as_u64().unwrap_or(0)
}

/// A plan as people say it: "1 canary, then 10 %, 50 %, 100 % · wait 60s · …".
fn plan_line(plan: &Value) -> String {
    let waves: Vec<String> = plan["waves"].as_array().into_iter().flatten().map(|w| format!("{} %", text(w))).collect();
    format!(
        "{} canary, then {} · wait {} per stage · halt after {} failed · offline devices: {} · on halt: {} · timeout {}",
        text(&plan["canary"]),
        waves.join(", "),
        text(&plan["wait"]),
        plan["max_failed"].as_u64().unwrap_or(0) + 1,
        text(&plan["offline"]),
        text(&plan["on_halt"]),
        text(&plan["timeout"]),
    )
}

/// "12 applied · 3 waiting": the states with devices in them.
fn progress_line(counts: &Value) -> String {
    STATES
        .iter()
        .filter(|s| count(counts, s) > 0)
        .map(|s| format!("{} {}", count(counts, s), s.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(" · ")
}

impl Api {
    pub(super) async fn groups_page(&self, caller: &Caller, query: &Query) -> Response<ApiBody> {
        let (status, groups) = self.call(caller, Method::GET, "/api/groups", None).await;
        if !status.is_success() {
            return layout::message(Some(caller), status, "Groups", layout::STORE_FAILED);
        }
        let owner = caller.operator.role == OperatorRole::Owner;
        let groups = groups.as_array().cloned().unwrap_or_default();
        let content = html! {
            @if groups.is_empty() {
                p { "No groups yet. A group holds devices that get the same policy and the same rollouts." }
            } @else {
                table #groups {
                    thead { tr { th { "Group" } th { "Description" } th { "Devices" } th { "Policy" } th { "Rollout" } } }
                    tbody {
                        @for g in &groups {
                            @let name = text(&g["name"]);
                            tr {
                                td { a href={ "/groups/" (seg(&name)) } { (name) } }
                                td { (text(&g["description"])) }
                                td { (text(&g["devices"])) }
                                td { @if g["policy"] == true { "set" } @else { "—" } }
                                td {
                                    @match g["rollout"].as_str() {
                                        Some(id) => a href={ "/rollouts/" (seg(id)) } { "in progress" },
                                        None => "—",
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if owner {
                h2 { "New group" }
                form.row #new-group method="post" action="/console/groups" {
                    (csrf_field(caller))
                    label { "Name" input name="name" required pattern="[A-Za-z0-9._@-]{1,64}"; }
                    label { "Description" input name="description" maxlength="1000"; }
                    button.primary { "Make the group" }
                }
            }
        };
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Groups, "Groups", query.notice().as_ref(), content))
    }

    pub(super) async fn group_page(&self, caller: &Caller, name: &str, notice: Option<Notice>) -> Response<ApiBody> {
        let base = format!("/api/groups/{}", seg(name));
        let (status, group) = self.call(caller, Method::GET, &base, None).await;
        if status == StatusCode::NOT_FOUND {
            return layout::message(Some(caller), status, "No such group", "No group has this name.");
        }
        if !status.is_success() {
            return layout::message(Some(caller), status, "Group", layout::STORE_FAILED);
        }
        let (_, rollouts) = self.call(caller, Method::GET, &format!("{base}/rollouts"), None).await;
        let rollouts = rollouts.as_array().cloned().unwrap_or_default();
        let members = group["devices"].as_array().cloned().unwrap_or_default();
        let role = caller.operator.role;
        let active = rollouts.iter().find(|r| matches!(r["state"].as_str(), Some("running" | "paused")));
        // Snapshots to roll out: the members' own, newest first.
        let mut snapshots: Vec<(String, String)> = Vec::new();
        for m in members.iter().take(50) {
            let id = text(&m["id"]);
            if let Ok(kept) = self.store.snapshots(&id) {
                snapshots.extend(
                    kept.into_iter()
                        .map(|s| (s.id, format!("{id} · {}", redtether_proto::time::format_unix(s.created)))),
                );
            }
        }
        snapshots.sort_by(|a, b| b.0.cmp(&a.0));
        snapshots.truncate(30);
        let action = |what: &str| format!("/console/groups/{}/{what}", seg(name));
        let content = html! {
            p #description { (text(&group["description"])) }
            @if let Some(r) = active {
                section.rollout-now data-refresh="2" {
                    h2 { "Rollout in progress" }
                    p { a href={ "/rollouts/" (seg(&text(&r["id"]))) } { (text(&r["state"])) ": stage " (r["stage"].as_u64().unwrap_or(0) + 1) " of " (text(&r["stages"])) } }
                    p { (progress_line(&r["counts"])) }
                    progress max=(text(&r["devices"])) value=(count(&r["counts"], "applied")) {}
                }
            }
            h2 { "Devices" }
            @if members.is_empty() { p { "No devices in this group." } } @else {
                table #members {
                    thead { tr { th { "Device" } th { "Online" } th { "Policy" } @if role == OperatorRole::Owner { th {} } } }
                    tbody {
                        @for m in &members {
                            @let id = text(&m["id"]);
                            tr {
                                td { a href={ "/devices/" (seg(&id)) } { (id) } }
                                td { @if m["online"] == true { "online" } @else { "offline" } }
                                td { (match m["policy_from"].as_str() { Some("group") => "the group's", Some("device") => "its own", _ => "—" }) }
                                @if role == OperatorRole::Owner {
                                    td {
                                        form method="post" action=(action("devices")) {
                                            (csrf_field(caller))
                                            input type="hidden" name="remove" value=(id);
                                            button.link { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if role == OperatorRole::Owner {
                form.row #add-devices method="post" action=(action("devices")) {
                    (csrf_field(caller))
                    label { "Add devices (ids, separated by spaces or commas)" input name="add" required; }
                    button { "Add" }
                }
            }
            @if role >= OperatorRole::Member {
                h2 { "Roll out" }
                form #rollout method="post" action=(action("deploy")) data-confirm="Start the rollout to every device of this group?" {
                    (csrf_field(caller))
                    @if !snapshots.is_empty() {
                        label { "Snapshot"
                            select name="snapshot" {
                                option value="" { "— paste flows below instead —" }
                                @for (id, label) in &snapshots { option value=(id) { (label) " · " (id) } }
                            }
                        }
                    }
                    label { "or a snapshot id" input name="snapshot_id"; }
                    label { "or flows.json" textarea name="flows" placeholder="[ { \"id\": \"…\", \"type\": \"tab\" } ]" {} }
                    fieldset.row {
                        legend { "Plan" }
                        label { "Canary devices" input type="number" name="canary" min="0" value="1"; }
                        label { "Waves (% after the canary)" input name="waves" value="10, 50, 100"; }
                        label { "Wait per stage" input name="wait" value="60s"; }
                        label { "Failures allowed" input type="number" name="max_failed" min="0" value="0"; }
                        label { "Offline devices"
                            select name="offline" { option value="wait" { "wait for them" } option value="skip" { "skip them" } }
                        }
                        label { "On halt"
                            select name="on_halt" { option value="rollback" { "roll back" } option value="hold" { "hold" } }
                        }
                    }
                    p { button.primary { "Start the rollout" } }
                }
            }
            h2 { "Rollouts" }
            @if rollouts.is_empty() { p { "None yet." } } @else {
                table #rollouts {
                    thead { tr { th { "Started" } th { "By" } th { "State" } th { "Progress" } th { "Flows" } } }
                    tbody {
                        @for r in &rollouts {
                            tr {
                                td { a href={ "/rollouts/" (seg(&text(&r["id"]))) } { (text(&r["created"])) } }
                                td { (text(&r["operator"])) @if let Some(p) = r["pipeline"].as_str() { " (pipeline " (p) ")" } }
                                td { (text(&r["state"])) }
                                td { (progress_line(&r["counts"])) }
                                td.mono { (text(&r["flows_hash"]).chars().take(12).collect::<String>()) }
                            }
                        }
                    }
                }
            }
            @if role == OperatorRole::Owner && members.is_empty() {
                form method="post" action=(action("delete")) data-confirm="Delete this group?" {
                    (csrf_field(caller))
                    button.danger { "Delete the group" }
                }
            }
        };
        let title = format!("Group {name}");
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Groups, &title, notice.as_ref(), content))
    }

    pub(super) async fn rollout_page(&self, caller: &Caller, id: &str, query: &Query) -> Response<ApiBody> {
        let (status, r) = self.call(caller, Method::GET, &format!("/api/rollouts/{}", seg(id)), None).await;
        if status == StatusCode::NOT_FOUND {
            return layout::message(Some(caller), status, "No such rollout", "No rollout has this id.");
        }
        if !status.is_success() {
            return layout::message(Some(caller), status, "Rollout", layout::STORE_FAILED);
        }
        let state = r["state"].as_str().unwrap_or_default();
        let devices = r["devices"].as_array().cloned().unwrap_or_default();
        let moving =
            devices.iter().any(|d| matches!(d["state"].as_str(), Some("deploying" | "capturing" | "reverting")));
        let live = state == "running" || moving;
        let stages = r["stages"].as_u64().unwrap_or(0);
        let member = caller.operator.role >= OperatorRole::Member;
        let steer = |verb: &str| format!("/console/rollouts/{}/{verb}", seg(id));
        let group = text(&r["group"]);
        let content = html! {
            section #rollout-summary data-refresh=[live.then_some("2")] {
                p {
                    "To group " a href={ "/groups/" (seg(&group)) } { (group) } " · started " (text(&r["created"])) " by " (text(&r["operator"]))
                    @if let Some(p) = r["pipeline"].as_str() { " through pipeline " (p) }
                }
                p { strong { (state) } " · stage " (r["stage"].as_u64().unwrap_or(0) + 1) " of " (stages) " · " (progress_line(&r["counts"])) }
                progress max=(devices.len()) value=(count(&r["counts"], "applied")) {}
                p.mono { "Snapshot " (text(&r["snapshot"])) " · flows " (text(&r["flows_hash"])) }
                p { "Plan: " (plan_line(&r["plan"])) }
                @if let Some(reasons) = r["reasons"].as_array().filter(|a| !a.is_empty()) {
                    h2 { "Why it halted" }
                    ul { @for reason in reasons { li { (text(reason)) } } }
                }
            }
            @if member && matches!(state, "running" | "paused") {
                div.row {
                    @if state == "running" {
                        form method="post" action=(steer("pause")) { (csrf_field(caller)) button { "Pause" } }
                    } @else {
                        form method="post" action=(steer("resume")) { (csrf_field(caller)) button.primary { "Resume" } }
                    }
                    form method="post" action=(steer("abort")) data-confirm="Abort the rollout? Devices already moved keep the new flows." {
                        (csrf_field(caller))
                        button.danger { "Abort" }
                    }
                }
            }
            @for stage in 0..stages {
                @let in_stage: Vec<&Value> = devices.iter().filter(|d| d["stage"].as_u64() == Some(stage)).collect();
                h2 { @if stage == 0 && r["plan"]["canary"].as_u64().unwrap_or(0) > 0 { "Canary" } @else { "Stage " (stage + 1) } " (" (in_stage.len()) ")" }
                table.stage {
                    thead { tr { th { "Device" } th { "State" } th { "Online" } th { "Reason" } } }
                    tbody {
                        @for d in in_stage {
                            @let device = text(&d["device"]);
                            tr {
                                td { a href={ "/devices/" (seg(&device)) "?tab=deployments" } { (device) } }
                                td class={ "state-" (text(&d["state"])) } { (text(&d["state"]).replace('_', " ")) }
                                td { @if d["online"] == true { "online" } @else { "offline" } }
                                td { @if let Some(reason) = d["reason"].as_str() { (reason) } }
                            }
                        }
                    }
                }
            }
        };
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Groups, "Rollout", query.notice().as_ref(), content))
    }
}

/// The plan a rollout form asks for, as the API takes it.
pub fn plan_from_form(form: &super::Form) -> Result<Value, &'static str> {
    let number = |name: &str| form.text(name).parse::<u64>().map_err(|_| "invalid_plan");
    let waves: Result<Vec<u64>, _> = form
        .text("waves")
        .split([',', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches('%').parse::<u64>().map_err(|_| "invalid_plan"))
        .collect();
    Ok(serde_json::json!({
        "canary": number("canary")?,
        "waves": waves?,
        "wait": form.text("wait"),
        "max_failed": number("max_failed")?,
        "offline": form.text("offline"),
        "on_halt": form.text("on_halt"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_names_the_states_with_devices() {
        let counts = serde_json::json!({ "applied": 12, "waiting": 3, "revert_failed": 1 });
        assert_eq!(progress_line(&counts), "12 applied · 3 waiting · 1 revert failed");
        assert_eq!(progress_line(&serde_json::json!({})), "");
    }

    #[test]
    fn a_plan_reads_as_a_sentence() {
        let plan = crate::rollout::Plan::default().to_json();
        assert_eq!(
            plan_line(&plan),
            "1 canary, then 100 % · wait 60s per stage · halt after 1 failed · offline devices: wait · on halt: rollback · timeout 1800s"
        );
    }

    #[test]
    fn a_plan_form_becomes_the_apis_plan() {
        let form = super::super::Form(
            [
                ("canary", "1"),
                ("waves", "10, 50,100%"),
                ("wait", "30s"),
                ("max_failed", "2"),
                ("offline", "skip"),
                ("on_halt", "hold"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
        );
        let plan = plan_from_form(&form).unwrap();
        assert_eq!(plan["waves"], serde_json::json!([10, 50, 100]));
        assert_eq!((plan["canary"].as_u64(), plan["max_failed"].as_u64()), (Some(1), Some(2)));
        let bad = super::super::Form(vec![("canary".into(), "one".into())]);
        assert_eq!(plan_from_form(&bad), Err("invalid_plan"));
    }
}
