//! `/audit`: every device's and the hub's events, newest first, filtered by device, kind,
//! actor, time and source, a page at a time (the store's time index: a page never reads the
//! whole trail), with the same filters exported as JSON Lines or CSV by the API.

use super::Query;
use super::layout::{self, Nav};
use super::seg;
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use crate::store::{AuditPage, AuditRow, FleetQuery, QueryFor};
use http::{Response, StatusCode};
use maud::{Markup, html};

/// The filters of `query` as a query string (without paging), for links that keep them.
pub fn filters_query(q: &Query) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for name in ["device", "kind", "actor", "since", "until", "source"] {
        if let Some(value) = q.get(name) {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

fn row(r: &AuditRow) -> Markup {
    let detail = if r.detail.as_object().is_some_and(|d| d.is_empty()) || r.detail.is_null() {
        String::new()
    } else {
        serde_json::to_string(&r.detail).unwrap_or_default()
    };
    html! {
        tr {
            td { (r.ts) }
            td { (r.source.as_str()) }
            td { @if let Some(d) = &r.device { a href={ "/devices/" (seg(d)) } { (d) } } @else { "hub" } }
            td { code { (r.kind) } }
            td { (r.actor) }
            td { (r.target) }
            td { pre.detail { (detail) } }
        }
    }
}

impl Api {
    pub(super) fn audit_page(&self, caller: &Caller, q: &Query, raw_query: Option<&str>) -> Response<ApiBody> {
        let filters = filters_query(q);
        let (status, result) = match FleetQuery::parse(raw_query, QueryFor::Page) {
            Ok(query) => match self.store.audit_page(&query.filter, query.before.as_ref(), query.limit) {
                Ok(page) => (StatusCode::OK, Ok(page)),
                Err(e) => {
                    tracing::error!(error = %e, "console: cannot read the audit trail");
                    (StatusCode::INTERNAL_SERVER_ERROR, Err(layout::STORE_FAILED.to_string()))
                }
            },
            Err(e) => (StatusCode::BAD_REQUEST, Err(e.to_string())),
        };
        let source = q.get("source").unwrap_or_default();
        let export = |format: &str| {
            let sep = if filters.is_empty() { "" } else { "&" };
            format!("/api/audit/export?format={format}{sep}{filters}")
        };
        let content = html! {
            form.filters method="get" action="/audit" role="search" {
                label { "Device" input name="device" value=(q.get("device").unwrap_or_default()); }
                label { "Kind (or its first part, e.g. auth)" input name="kind" value=(q.get("kind").unwrap_or_default()); }
                label { "Actor" input name="actor" value=(q.get("actor").unwrap_or_default()); }
                label { "Since" input name="since" value=(q.get("since").unwrap_or_default()) placeholder="2026-12-01T00:00:00Z"; }
                label { "Until" input name="until" value=(q.get("until").unwrap_or_default()) placeholder="2026-12-05T00:00:00Z"; }
                label { "Source"
                    select name="source" {
                        @for (value, label) in [("", "device and hub"), ("device", "device"), ("hub", "hub")] {
                            option value=(value) selected[source == value] { (label) }
                        }
                    }
                }
                button { "Filter" }
            }
            p.actions {
                a #export-jsonl href=(export("jsonl")) download { "Export JSON Lines" }
                a #export-csv href=(export("csv")) download { "Export CSV" }
            }
            @match &result {
                Err(message) => p.notice.err role="alert" { (message) },
                Ok(page) => (rows(page, &filters)),
            }
        };
        layout::respond(status, layout::frame(caller, Nav::Audit, "Audit", q.notice().as_ref(), content))
    }
}

fn rows(page: &AuditPage, filters: &str) -> Markup {
    let sep = if filters.is_empty() { "" } else { "&" };
    html! {
        @if page.rows.is_empty() && !page.partial {
            p.muted #audit-empty { "No events match." }
        } @else {
            div.scroll {
                table #audit {
                    thead { tr { th { "Time" } th { "Source" } th { "Device" } th { "Kind" } th { "Actor" } th { "Target" } th { "Detail" } } }
                    tbody { @for r in &page.rows { (row(r)) } }
                }
            }
        }
        nav.pager aria-label="Pages" {
            a href={ "/audit?" (filters) } { "Newest" }
            @if let Some(next) = &page.next {
                @if page.partial {
                    span.muted { "Searched back to " (page.scanned_to.as_deref().unwrap_or("?")) "." }
                    a rel="next" href={ "/audit?" (filters) (sep) "before=" (next) } { "Search further back →" }
                } @else {
                    a rel="next" href={ "/audit?" (filters) (sep) "before=" (next) } { "Older →" }
                }
            }
        }
    }
}
