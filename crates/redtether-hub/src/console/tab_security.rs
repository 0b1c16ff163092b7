//! A device's *Security* tab: the policy in force at the hub and where it stands on the device
//! (pending / applied / refused and why), the protection and HTTP-In settings (owners change
//! them), the editor's users, and the node-space bearer tokens (made with an expiry and scope
//! and shown once, listed, revoked).

use super::device::{Shown, text};
use super::layout::csrf_field;
use super::seg;
use crate::api::Api;
use crate::caller::Caller;
use crate::store::OperatorRole;
use http::{Method, StatusCode};
use maud::{Markup, html};
use serde_json::Value;

impl Api {
    pub(super) async fn security_tab(&self, caller: &Caller, id: &str, shown: Option<Shown>) -> Markup {
        let base = format!("/api/devices/{}", seg(id));
        let (policy_status, policy) = self.call(caller, Method::GET, &format!("{base}/policy"), None).await;
        let (_, tokens) = self.call(caller, Method::GET, &format!("{base}/tokens"), None).await;
        let owner = caller.operator.role == OperatorRole::Owner;
        let has_policy = policy_status == StatusCode::OK;
        let desired = &policy["desired"];
        let state = policy["state"].as_str().unwrap_or("none");
        let protection = desired["protection"].as_bool().unwrap_or(false);
        let mode = desired["http_auth"]["mode"].as_str().unwrap_or("users");
        let action = format!("/console/devices/{}", seg(id));
        html! {
            h2 { "Policy" }
            @if has_policy {
                p #policy-state data-refresh=[(state == "pending").then_some("2")] {
                    "Policy " (text(&policy["number"])) ": "
                    span class={ "state-" (state) } { (state) }
                    @if let Some(reason) = policy["reason"].as_str() { " — " (reason) }
                    span.muted { " · made by " (text(&policy["made_by"])) " at " (text(&policy["made_at"]))
                        @if policy["applied_at"].is_string() { " · applied at " (text(&policy["applied_at"])) } }
                }
            } @else {
                p #policy-state { "No policy from the hub yet: the device follows its own agent.toml." }
            }
            @if owner {
                form.row #policy-form method="post" action={ (action) "/policy" } {
                    (csrf_field(caller))
                    label.check { input type="checkbox" name="protection" value="on" checked[protection]; "Protection mode (flows read-only; changes only as signed deployments)" }
                    label { "HTTP-In and dashboards"
                        select name="http_auth" {
                            @for (value, label) in [("users", "the editor's users"), ("basic", "one user (basic)"), ("none", "open to anyone")] {
                                option value=(value) selected[mode == value] { (label) }
                            }
                        }
                    }
                    label { "Basic user" input name="basic_user" value=(desired["http_auth"]["user"].as_str().unwrap_or_default()) autocomplete="off"; }
                    label { "Basic password (to change it)" input type="password" name="basic_password" autocomplete="new-password"; }
                    button.primary { "Apply to the device" }
                }
            } @else {
                p { "Protection mode: " strong { (if protection { "on" } else { "off" }) } " · HTTP-In: " strong { (mode) } }
            }
            h2 { "Users of the editor and dashboards" }
            @let users = desired["users"].as_array().cloned().unwrap_or_default();
            @if users.is_empty() {
                p.muted { "None set by the hub." }
            } @else {
                table #users { thead { tr { th { "Name" } th { "Role" } @if owner { th { span.muted { "Remove" } } } } }
                    tbody { @for u in &users { tr {
                        td { (text(&u["name"])) } td { (text(&u["role"])) }
                        @if owner { td {
                            form.inline method="post" action={ (action) "/users/" (seg(u["name"].as_str().unwrap_or_default())) "/remove" }
                                data-confirm="Remove this user from the device?" {
                                (csrf_field(caller)) button.danger aria-label={ "Remove " (text(&u["name"])) } { "Remove" }
                            }
                        } }
                    } } } }
            }
            @if owner {
                form.row #user-form method="post" action={ (action) "/users" } {
                    (csrf_field(caller))
                    label { "Name" input name="name" required pattern="[A-Za-z0-9._@-]{1,64}" autocomplete="off"; }
                    label { "Password" input type="password" name="password" required autocomplete="new-password"; }
                    label { "Role" select name="role" { @for r in redtether_proto::policy::ROLES { option value=(r) selected[r == "viewer"] { (r) } } } }
                    button { "Add or replace user" }
                }
            }
            h2 { "Bearer tokens" }
            @if let Some(Shown::Token { name, token }) = &shown {
                div.secret #new-token role="status" {
                    span { "Token " strong { (name) } " — copy it now, it is not shown again: " }
                    code #new-token-value { (token) }
                    button type="button" data-copy="new-token-value" hidden { "Copy" }
                }
            }
            (token_table(caller, &action, &tokens, owner))
            @if owner {
                form.row #token-form method="post" action={ (action) "/tokens" } {
                    (csrf_field(caller))
                    label { "Name" input name="name" required pattern="[A-Za-z0-9._-]{1,64}"; }
                    label { "Expires in" input name="expires_in" value="30d" required; }
                    label { "Scope (path prefix, optional)" input name="scope" placeholder="/api"; }
                    button { "Make a token" }
                }
            }
        }
    }
}

fn token_table(caller: &Caller, action: &str, tokens: &Value, owner: bool) -> Markup {
    let tokens = tokens.as_array().cloned().unwrap_or_default();
    html! {
        @if tokens.is_empty() {
            p.muted { "No tokens." }
        } @else {
            table #tokens {
                thead { tr { th { "Name" } th { "Scope" } th { "Expires" } th { "Made by" } @if owner { th { span.muted { "Revoke" } } } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (text(&t["name"])) }
                            td { (text(&t["scope"])) }
                            td { (text(&t["expires_at"])) @if t["expired"].as_bool() == Some(true) { " " span.state-bad { "expired" } } }
                            td { (text(&t["created_by"])) }
                            @if owner {
                                td {
                                    form.inline method="post" action={ (action) "/tokens/" (seg(t["name"].as_str().unwrap_or_default())) "/revoke" }
                                        data-confirm="Revoke this token? Requests with it are refused as soon as the device has the new policy." {
                                        (csrf_field(caller))
                                        button.danger aria-label={ "Revoke " (text(&t["name"])) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
