//! A device's *Deployments* and *Snapshots* tabs: the deployments with their state and detail
//! (the page looks again every two seconds while one is in progress), deploying a snapshot or
//! a pasted / picked `flows.json`, rolling back by deploying an earlier snapshot; snapshots
//! taken from the device, compared (nodes added, removed and changed, by id and type) and
//! downloaded.

use super::device::text;
use super::layout::csrf_field;
use super::{Query, seg};
use crate::api::Api;
use crate::caller::Caller;
use crate::store::OperatorRole;
use http::Method;
use maud::{Markup, html};
use serde_json::Value;
use std::collections::BTreeMap;

/// How a node differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// The nodes that differ from `before` to `after`, by id, with their type.
pub fn compare(before: &[Value], after: &[Value]) -> Vec<(Change, String, String)> {
    let by_id = |flows: &[Value]| -> BTreeMap<String, Value> {
        flows.iter().filter_map(|n| Some((n["id"].as_str()?.to_string(), n.clone()))).collect()
    };
    let (a, b) = (by_id(before), by_id(after));
    let kind = |n: &Value| n["type"].as_str().unwrap_or("?").to_string();
    let mut changes = Vec::new();
    for (id, node) in &b {
        match a.get(id) {
            None => changes.push((Change::Added, id.clone(), kind(node))),
            Some(old) if old != node => changes.push((Change::Changed, id.clone(), kind(node))),
            Some(_) => {}
        }
    }
    changes
        .extend(a.iter().filter(|(id, _)| !b.contains_key(*id)).map(|(id, n)| (Change::Removed, id.clone(), kind(n))));
    changes
}

impl Api {
    pub(super) async fn deployments_tab(&self, caller: &Caller, id: &str) -> Markup {
        let base = format!("/api/devices/{}", seg(id));
        let (_, deployments) = self.call(caller, Method::GET, &format!("{base}/deployments"), None).await;
        let (_, snapshots) = self.call(caller, Method::GET, &format!("{base}/snapshots"), None).await;
        let mut deployments = deployments.as_array().cloned().unwrap_or_default();
        deployments.sort_by_key(|d| std::cmp::Reverse(d["number"].as_u64().unwrap_or(0)));
        let snapshots = snapshots.as_array().cloned().unwrap_or_default();
        let member = caller.operator.role >= OperatorRole::Member;
        let in_progress =
            deployments.iter().any(|d| matches!(d["state"].as_str(), Some("pending" | "sent" | "applying")));
        let action = format!("/console/devices/{}/deploy", seg(id));
        html! {
            @if member {
                h2 { "Deploy" }
                @if !snapshots.is_empty() {
                    form.row #deploy-snapshot method="post" action=(action) {
                        (csrf_field(caller))
                        label { "Snapshot"
                            select name="snapshot" {
                                @for s in &snapshots { option value=(text(&s["id"])) { (text(&s["created"])) " · " (text(&s["nodes"])) " nodes · " (text(&s["id"])) } }
                            }
                        }
                        button.primary { "Deploy this snapshot" }
                    }
                }
                form #deploy-flows method="post" action=(action) {
                    (csrf_field(caller))
                    label { "flows.json" textarea #flows name="flows" placeholder="[ { \"id\": \"…\", \"type\": \"tab\" } ]" {} }
                    input type="file" accept=".json,application/json" data-fills="flows" hidden aria-label="Pick a flows.json file";
                    p { button.primary { "Deploy these flows" } }
                }
            }
            h2 { "History" }
            @if deployments.is_empty() {
                p.muted { "No deployments yet." }
            } @else {
                table #deployments data-refresh=[in_progress.then_some("2")] {
                    thead { tr { th { "#" } th { "State" } th { "Made" } th { "By" } th { "From snapshot" } th { "Detail" } @if member { th { span.muted { "Again" } } } } }
                    tbody {
                        @for d in &deployments {
                            @let state = d["state"].as_str().unwrap_or("?");
                            tr {
                                td { (text(&d["number"])) }
                                td { span class={ "state-" (state) } { (state) } }
                                td { (text(&d["created"])) }
                                td { (text(&d["operator"])) }
                                td { (text(&d["snapshot"])) }
                                td { pre.detail { (text(&d["detail"])) } }
                                @if member {
                                    td {
                                        @if let Some(sid) = d["snapshot"].as_str() {
                                            form.inline method="post" action=(action) data-confirm="Deploy this snapshot again (roll back to it)?" {
                                                (csrf_field(caller))
                                                input type="hidden" name="snapshot" value=(sid);
                                                button { "Roll back to this" }
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
    }

    pub(super) async fn snapshots_tab(&self, caller: &Caller, id: &str, q: &Query) -> Markup {
        let base = format!("/api/devices/{}", seg(id));
        let (_, snapshots) = self.call(caller, Method::GET, &format!("{base}/snapshots"), None).await;
        let snapshots = snapshots.as_array().cloned().unwrap_or_default();
        let member = caller.operator.role >= OperatorRole::Member;
        let comparison = match (q.get("a"), q.get("b")) {
            (Some(a), Some(b)) => {
                let flows = |v: Value| v["snapshot"]["flows"].as_array().cloned().unwrap_or_default();
                let (_, first) = self.call(caller, Method::GET, &format!("{base}/snapshots/{}", seg(a)), None).await;
                let (_, second) = self.call(caller, Method::GET, &format!("{base}/snapshots/{}", seg(b)), None).await;
                Some((a.to_string(), b.to_string(), compare(&flows(first), &flows(second))))
            }
            _ => None,
        };
        html! {
            @if member {
                form.row method="post" action={ "/console/devices/" (seg(id)) "/snapshot" } {
                    (csrf_field(caller))
                    button.primary { "Take a snapshot from the device" }
                }
            }
            @if snapshots.is_empty() {
                p.muted { "No snapshots yet." }
            } @else {
                table #snapshots {
                    thead { tr { th { "Taken" } th { "By" } th { "Nodes" } th { "Id" } th { "Download" } } }
                    tbody {
                        @for s in &snapshots {
                            tr {
                                td { (text(&s["created"])) } td { (text(&s["operator"])) } td { (text(&s["nodes"])) }
                                td { code { (text(&s["id"])) } }
                                td { a href={ (base) "/snapshots/" (seg(s["id"].as_str().unwrap_or_default())) } download { "JSON" } }
                            }
                        }
                    }
                }
                @if snapshots.len() >= 2 {
                    h2 { "Compare" }
                    form.row method="get" action={ "/devices/" (seg(id)) } {
                        input type="hidden" name="tab" value="snapshots";
                        @for (name, label, pick) in [("a", "Before", 1usize), ("b", "After", 0usize)] {
                            label { (label)
                                select name=(name) {
                                    @for (i, s) in snapshots.iter().enumerate() {
                                        option value=(text(&s["id"])) selected[i == pick] { (text(&s["created"])) " · " (text(&s["id"])) }
                                    }
                                }
                            }
                        }
                        button { "Compare" }
                    }
                }
            }
            @if let Some((a, b, changes)) = comparison {
                h2 { "From " code { (a) } " to " code { (b) } }
                @if changes.is_empty() {
                    p #comparison { "The flows are the same." }
                } @else {
                    table #comparison {
                        thead { tr { th { "Change" } th { "Node" } th { "Type" } } }
                        tbody { @for (change, node, kind) in &changes {
                            tr { td { (match change { Change::Added => "added", Change::Removed => "removed", Change::Changed => "changed" }) }
                                 td { code { (node) } } td { (kind) } }
                        } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_comparison_names_nodes_added_removed_and_changed_by_id_and_type() {
        let before = [
            json!({"id": "t1", "type": "tab"}),
            json!({"id": "n1", "type": "inject", "repeat": "5"}),
            json!({"id": "n2", "type": "debug"}),
        ];
        let after = [
            json!({"id": "t1", "type": "tab"}),
            json!({"id": "n1", "type": "inject", "repeat": "10"}),
            json!({"id": "n3", "type": "http in"}),
        ];
        assert_eq!(
            compare(&before, &after),
            [
                (Change::Changed, "n1".to_string(), "inject".to_string()),
                (Change::Added, "n3".to_string(), "http in".to_string()),
                (Change::Removed, "n2".to_string(), "debug".to_string()),
            ]
        );
        assert!(compare(&after, &after).is_empty());
    }
}
