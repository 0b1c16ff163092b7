//! `/devices/{id}`: a device's status and identity, *Open editor* and *Restart Node-RED*, its
//! resource charts (the last six hours), and
//! its tabs (`?tab=`): security, deployments, snapshots, audit, SBOM. Everything shown comes
//! from the API's answers for the caller (`Api::call`), so a page shows what the caller's role
//! may read and nothing else.

use super::layout::{self, Nav, Notice, ago, csrf_field};
use super::{Query, seg};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use crate::store::OperatorRole;
use http::{Method, Response, StatusCode};
use maud::{Markup, html};
use serde_json::Value;

/// The device page's tabs, in the order shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Security,
    Deployments,
    Snapshots,
    Audit,
    Sbom,
}

impl Tab {
    pub const ALL: [Tab; 5] = [Tab::Security, Tab::Deployments, Tab::Snapshots, Tab::Audit, Tab::Sbom];

    pub fn parse(name: Option<&str>) -> Tab {
        Tab::ALL.into_iter().find(|t| Some(t.name()) == name).unwrap_or(Tab::Security)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tab::Security => "security",
            Tab::Deployments => "deployments",
            Tab::Snapshots => "snapshots",
            Tab::Audit => "audit",
            Tab::Sbom => "sbom",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tab::Security => "Security",
            Tab::Deployments => "Deployments",
            Tab::Snapshots => "Snapshots",
            Tab::Audit => "Audit",
            Tab::Sbom => "SBOM",
        }
    }
}

/// Text of a JSON value for a page: strings as they are, null as a dash, the rest as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix seconds of an RFC 3339 time the API gave.
pub fn unix(rfc3339: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(rfc3339).ok().map(redtether_proto::time::unix_of)
}

/// How far back the device page's charts go.
const CHART_WINDOW_SECS: u64 = 6 * 3600;

/// Something the tab shows once, in place of a redirect's notice: a secret just made.
pub enum Shown {
    Token { name: String, token: String },
}

impl Api {
    pub(super) async fn device_page(&self, caller: &Caller, id: &str, q: &Query) -> Response<ApiBody> {
        let tab = Tab::parse(q.get("tab"));
        self.device_tab(caller, id, tab, q.notice(), None, q).await
    }

    /// The device page with `tab` open.
    pub(super) async fn device_tab(
        &self,
        caller: &Caller,
        id: &str,
        tab: Tab,
        notice: Option<Notice>,
        shown: Option<Shown>,
        q: &Query,
    ) -> Response<ApiBody> {
        let path = format!("/api/devices/{}", seg(id));
        let (status, device) = self.call(caller, Method::GET, &path, None).await;
        if status != StatusCode::OK {
            let (code, text) = if status == StatusCode::NOT_FOUND {
                (StatusCode::NOT_FOUND, "No device has this id.")
            } else {
                (status, "The hub could not read this device.")
            };
            return layout::message(Some(caller), code, "Device", text);
        }
        let to = redtether_proto::time::unix_now();
        let from = to.saturating_sub(CHART_WINDOW_SECS);
        let metrics_path = format!("/api/devices/{}/metrics?since={from}", seg(id));
        let (_, metrics) = self.call(caller, Method::GET, &metrics_path, None).await;
        let samples = metrics["samples"].as_array().cloned().unwrap_or_default();
        let body = match tab {
            Tab::Security => self.security_tab(caller, id, shown).await,
            Tab::Deployments => self.deployments_tab(caller, id).await,
            Tab::Snapshots => self.snapshots_tab(caller, id, q).await,
            Tab::Audit => self.device_audit_tab(caller, id),
            Tab::Sbom => self.sbom_tab(caller, id).await,
        };
        let content = html! {
            (facts(caller, id, &device))
            (super::charts::charts(&samples, from, to))
            nav.tabs aria-label="Device" {
                ul {
                    @for t in Tab::ALL {
                        li { a href={ "/devices/" (seg(id)) "?tab=" (t.name()) } aria-current=[(t == tab).then_some("page")] { (t.label()) } }
                    }
                }
            }
            section #tab aria-label=(tab.label()) { (body) }
        };
        let title = format!("Device {id}");
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Devices, &title, notice.as_ref(), content))
    }
}

/// The device's status and identity, and the buttons that act on it at once.
fn facts(caller: &Caller, id: &str, d: &Value) -> Markup {
    let now = redtether_proto::time::unix_now();
    let online = d["online"].as_bool().unwrap_or(false);
    let status = &d["status"];
    let node_red = &status["node_red"];
    let last_seen = d["last_seen"].as_str().and_then(unix);
    html! {
        dl.facts #device-facts {
            dt { "Online" }
            dd data-device=(id) {
                span data-online=(online) {
                    span class={ "label state-" (if online { "online" } else { "offline" }) } { (if online { "online" } else { "offline" }) }
                    " " span.seen.muted { @if let Some(t) = last_seen { "last seen " (ago(t, now)) } @else { "never seen" } }
                }
            }
            dt { "Connected since" } dd { (text(&d["connected_since"])) }
            dt { "Node-RED" }
            dd {
                @if let Some(state) = node_red["state"].as_str() {
                    span class={ "state-" (state) } { (state) }
                    " · " (text(&node_red["restarts"])) " restarts"
                    @if let Some(detail) = node_red["detail"].as_str() { " · " (detail) }
                    @if let Some(exit) = node_red["last_exit"].as_str() { " · last exit: " (exit) }
                } @else { "not reported yet" }
            }
            dt { "Agent" } dd { (text(&d["agent_version"])) }
            dt { "Protection" } dd { (match status["protection"].as_bool() { Some(true) => "on", Some(false) => "off", None => "—" }) }
            dt { "Audit" } dd { "backlog " (text(&d["audit"]["backlog"])) ", " (text(&d["audit"]["acked"])) " delivered" }
            dt { "Certificate ends" } dd { (text(&d["certificate_expires"])) }
            dt { "Enrolled" } dd { (text(&d["enrolled"])) }
            @if d["revoked"].as_bool() == Some(true) { dt { "Revoked" } dd.state-bad { "yes" } }
        }
        div.actions {
            a.button href={ "/devices/" (seg(id)) "/editor/" } { "Open editor" }
            " "
            a href={ "/devices/" (seg(id)) "/http/" } { "Open dashboard" }
            @if caller.operator.role >= crate::logs_source::LOGS_ROLE {
                " "
                a href={ "/devices/" (seg(id)) "/logs" } { "Node-RED logs" }
            }
            @if caller.operator.role >= OperatorRole::Member {
                form.inline method="post" action={ "/console/devices/" (seg(id)) "/restart" } data-confirm="Restart Node-RED on this device?" {
                    (csrf_field(caller))
                    button { "Restart Node-RED" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_are_named_in_urls_and_unknown_ones_open_security() {
        for t in Tab::ALL {
            assert_eq!(Tab::parse(Some(t.name())), t);
        }
        assert_eq!(Tab::parse(Some("<script>")), Tab::Security);
        assert_eq!(Tab::parse(None), Tab::Security);
        assert_eq!(text(&Value::Null), "—");
        assert_eq!(text(&serde_json::json!("a<b")), "a<b");
        assert_eq!(text(&serde_json::json!(3)), "3");
    }
}
