//! `/devices`: every enrolled device in a table, with search, filters, sorting and paging;
//! the online column follows the devices live (`live`). Rows are built from the store and the
//! registry at once (one read of each, no per-device API call), then selected purely by
//! [`DeviceQuery`].

use super::layout::{self, Nav, ago};
use super::{Query, seg};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use crate::store::{DeviceRecord, OperatorRole};
use http::{Response, StatusCode};
use maud::{Markup, html};

/// One device as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub online: bool,
    pub last_seen: Option<u64>,
    pub node_red: Option<String>,
    pub restarts: Option<u32>,
    pub agent_version: Option<String>,
    pub protection: Option<bool>,
    pub policy: Option<String>,
    pub backlog: Option<u64>,
    pub outdated: Option<u32>,
    pub revoked: bool,
    /// When the device's certificate ends (Unix seconds).
    pub cert_not_after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Online,
    Offline,
    CrashLoop,
    Outdated,
    PolicyProblem,
    /// The certificate ends within [`EXPIRING_WITHIN`] (or has ended).
    Expiring,
}

/// A certificate ending sooner than this is "expiring".
const EXPIRING_WITHIN: u64 = 30 * 86400;

/// Whether the device's certificate ends within [`EXPIRING_WITHIN`] of `now` (or has ended);
/// a revoked device's certificate no longer matters.
pub fn expiring(row: &DeviceRow, now: u64) -> bool {
    !row.revoked && row.cert_not_after.saturating_sub(now) < EXPIRING_WITHIN
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Id,
    LastSeen,
    Agent,
    Restarts,
    Backlog,
}

/// What part of the fleet a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceQuery {
    pub search: String,
    pub filter: Filter,
    pub sort: Sort,
    pub descending: bool,
    /// From 1.
    pub page: usize,
}

pub const PER_PAGE: usize = 50;

impl DeviceQuery {
    /// Read from the page's query; anything unknown falls back to the default, so an old
    /// bookmark still opens the list.
    pub fn parse(q: &Query) -> DeviceQuery {
        let filter = match q.get("show") {
            Some("online") => Filter::Online,
            Some("offline") => Filter::Offline,
            Some("crash_loop") => Filter::CrashLoop,
            Some("outdated") => Filter::Outdated,
            Some("policy") => Filter::PolicyProblem,
            Some("expiring") => Filter::Expiring,
            _ => Filter::All,
        };
        let sort = match q.get("sort") {
            Some("last_seen") => Sort::LastSeen,
            Some("agent") => Sort::Agent,
            Some("restarts") => Sort::Restarts,
            Some("backlog") => Sort::Backlog,
            _ => Sort::Id,
        };
        DeviceQuery {
            search: q.get("q").unwrap_or_default().trim().chars().take(100).collect(),
            filter,
            sort,
            descending: q.get("dir") == Some("desc"),
            page: q.get("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1),
        }
    }

    fn keeps(&self, row: &DeviceRow, now: u64) -> bool {
        let needle = self.search.to_lowercase();
        let found = needle.is_empty()
            || row.id.to_lowercase().contains(&needle)
            || row.agent_version.as_deref().is_some_and(|v| v.contains(&needle));
        found
            && match self.filter {
                Filter::All => true,
                Filter::Online => row.online,
                Filter::Offline => !row.online,
                Filter::CrashLoop => row.node_red.as_deref() == Some("crash_loop"),
                Filter::Outdated => row.outdated.is_some_and(|n| n > 0),
                Filter::PolicyProblem => matches!(row.policy.as_deref(), Some("pending" | "refused" | "failed")),
                Filter::Expiring => expiring(row, now),
            }
    }

    /// The rows of this page (as of `now`), and how many rows matched in all.
    pub fn select(&self, mut rows: Vec<DeviceRow>, now: u64) -> (Vec<DeviceRow>, usize) {
        rows.retain(|r| self.keeps(r, now));
        rows.sort_by(|a, b| {
            let order = match self.sort {
                Sort::Id => a.id.cmp(&b.id),
                Sort::LastSeen => (a.online, a.last_seen).cmp(&(b.online, b.last_seen)),
                Sort::Agent => a.agent_version.cmp(&b.agent_version),
                Sort::Restarts => a.restarts.cmp(&b.restarts),
                Sort::Backlog => a.backlog.cmp(&b.backlog),
            };
            // Ties keep a stable order by id, so pages never overlap.
            let order = order.then_with(|| a.id.cmp(&b.id));
            if self.descending { order.reverse() } else { order }
        });
        let total = rows.len();
        let start = (self.page - 1).saturating_mul(PER_PAGE).min(total);
        let end = (start + PER_PAGE).min(total);
        (rows.drain(start..end).collect(), total)
    }

    /// This query's URL with some of its parts changed.
    fn url(&self, sort: Option<Sort>, descending: Option<bool>, page: Option<usize>) -> String {
        let sort_name = |s: Sort| match s {
            Sort::Id => "id",
            Sort::LastSeen => "last_seen",
            Sort::Agent => "agent",
            Sort::Restarts => "restarts",
            Sort::Backlog => "backlog",
        };
        let show = match self.filter {
            Filter::All => "",
            Filter::Online => "online",
            Filter::Offline => "offline",
            Filter::CrashLoop => "crash_loop",
            Filter::Outdated => "outdated",
            Filter::PolicyProblem => "policy",
            Filter::Expiring => "expiring",
        };
        let mut url = form_urlencoded::Serializer::new(String::new());
        if !self.search.is_empty() {
            url.append_pair("q", &self.search);
        }
        if !show.is_empty() {
            url.append_pair("show", show);
        }
        url.append_pair("sort", sort_name(sort.unwrap_or(self.sort)));
        if descending.unwrap_or(self.descending) {
            url.append_pair("dir", "desc");
        }
        url.append_pair("page", &page.unwrap_or(self.page).to_string());
        format!("/devices?{}", url.finish())
    }
}

impl Api {
    /// Every device as a row, from one pass over the store and the registry.
    pub(crate) fn device_rows(&self) -> Result<Vec<DeviceRow>, crate::store::StoreError> {
        let online = self.registry.online_ids();
        let now = redtether_proto::time::unix_now();
        let devices = self.store.devices()?;
        let mut rows = Vec::with_capacity(devices.len());
        for d in devices {
            let policy = self.store.policy(&d.id)?.map(|p| json_word(&p.state));
            rows.push(row(&d, online.contains(&d.id), now, policy));
        }
        Ok(rows)
    }

    pub(super) fn devices_page(&self, caller: &Caller, q: &Query) -> Response<ApiBody> {
        let query = DeviceQuery::parse(q);
        let rows = match self.device_rows() {
            Ok(rows) => rows,
            Err(e) => return layout::store_failed(caller, "Devices", "the devices", &e),
        };
        let now = redtether_proto::time::unix_now();
        let (page, total) = query.select(rows, now);
        let pages = total.div_ceil(PER_PAGE).max(1);
        let viewer = caller.operator.role >= OperatorRole::Viewer;
        let header = |label: &str, sort: Sort| {
            let descending = query.sort == sort && !query.descending;
            let current = (query.sort == sort).then_some(if query.descending { "descending" } else { "ascending" });
            html! { th aria-sort=[current] { a href=(query.url(Some(sort), Some(descending), Some(1))) { (label) } } }
        };
        let content = html! {
            form.filters method="get" action="/devices" role="search" {
                label { "Search" input type="search" name="q" value=(query.search) placeholder="device id or agent version"; }
                label { "Show"
                    select name="show" {
                        @for (value, label, f) in [("", "all devices", Filter::All), ("online", "online", Filter::Online),
                            ("offline", "offline", Filter::Offline), ("crash_loop", "crash-looping", Filter::CrashLoop),
                            ("outdated", "with outdated packages", Filter::Outdated), ("policy", "policy pending or refused", Filter::PolicyProblem),
                            ("expiring", "certificate ending within 30 days", Filter::Expiring)] {
                            option value=(value) selected[query.filter == f] { (label) }
                        }
                    }
                }
                button { "Apply" }
            }
            p.muted { (total) " devices" @if total > PER_PAGE { ", page " (query.page) " of " (pages) } }
            div.scroll {
                table #devices {
                    thead { tr {
                        (header("Device", Sort::Id)) (header("Online", Sort::LastSeen)) th { "Node-RED" }
                        (header("Restarts", Sort::Restarts)) (header("Agent", Sort::Agent)) th { "Protection" }
                        th { "Policy" } (header("Audit backlog", Sort::Backlog)) th { "Outdated packages" }
                    } }
                    tbody {
                        @for r in &page {
                            tr data-device=(r.id) {
                                td {
                                    @if viewer { a href={ "/devices/" (seg(&r.id)) } { (r.id) } } @else { (r.id) }
                                    " " a.muted href={ "/devices/" (seg(&r.id)) "/http/" } { "dashboard" }
                                    @if r.revoked { " " span.state-bad { "revoked" } }
                                }
                                td data-online=(r.online) {
                                    span class={ "label state-" (if r.online { "online" } else { "offline" }) } {
                                        (if r.online { "online" } else { "offline" })
                                    }
                                    " " span.seen.muted { (r.last_seen.map(|t| ago(t, now)).unwrap_or_else(|| "never".into())) }
                                }
                                td { @if let Some(s) = &r.node_red { span class={ "state-" (s) } { (s) } } @else { "—" } }
                                td { (opt(r.restarts)) }
                                td { (r.agent_version.as_deref().unwrap_or("—")) }
                                td { (match r.protection { Some(true) => "on", Some(false) => "off", None => "—" }) }
                                td { @if let Some(p) = &r.policy { span class={ "state-" (p) } { (p) } } @else { "local" } }
                                td { (opt(r.backlog)) }
                                td { (opt(r.outdated)) }
                            }
                        }
                    }
                }
            }
            (pager(&query, pages))
        };
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Devices, "Devices", q.notice().as_ref(), content))
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".to_string())
}

fn pager(query: &DeviceQuery, pages: usize) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            @if query.page > 1 { a rel="prev" href=(query.url(None, None, Some(query.page - 1))) { "← Previous" } }
            @if query.page < pages { a rel="next" href=(query.url(None, None, Some(query.page + 1))) { "Next →" } }
        }
    }
}

/// A serializable enum's JSON word (`"applied"`), for labels and CSS classes.
pub fn json_word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn row(d: &DeviceRecord, online: bool, now: u64, policy: Option<String>) -> DeviceRow {
    let status = d.status.as_ref();
    DeviceRow {
        id: d.id.clone(),
        online,
        last_seen: if online { Some(now) } else { d.last_seen },
        node_red: status.map(|s| s.node_red.state.as_str().to_string()),
        restarts: status.map(|s| s.node_red.restarts),
        agent_version: d.agent_version.clone(),
        protection: status.map(|s| s.protection),
        policy,
        backlog: status.map(|s| s.audit_backlog),
        outdated: d.sbom_outdated,
        revoked: d.revoked,
        cert_not_after: d.cert_not_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, online: bool, restarts: u32) -> DeviceRow {
        DeviceRow {
            id: id.into(),
            online,
            last_seen: Some(100),
            node_red: Some(if restarts > 5 { "crash_loop" } else { "running" }.into()),
            restarts: Some(restarts),
            agent_version: Some("0.1.0".into()),
            protection: Some(false),
            policy: None,
            backlog: Some(0),
            outdated: Some(u32::from(id.ends_with('7'))),
            revoked: false,
            cert_not_after: if id.ends_with('5') { 1_000 } else { 100 * 86400 },
        }
    }

    fn query(q: &str) -> DeviceQuery {
        DeviceQuery::parse(&Query::parse(Some(q)))
    }

    #[test]
    fn search_filters_and_sorting_select_the_right_rows() {
        let rows: Vec<DeviceRow> = (0..30).map(|i| device(&format!("pump-{i:02}"), i % 3 == 0, i)).collect();
        let (page, total) = query("show=online").select(rows.clone(), 0);
        assert_eq!(total, 10);
        assert!(page.iter().all(|r| r.online));
        let (page, total) = query("q=PUMP-1").select(rows.clone(), 0);
        assert_eq!(total, 10, "case-insensitive search by id");
        assert!(page.iter().all(|r| r.id.starts_with("pump-1")));
        let (_, total) = query("show=crash_loop").select(rows.clone(), 0);
        assert_eq!(total, 24);
        let (_, total) = query("show=outdated").select(rows.clone(), 0);
        assert_eq!(total, 3);
        let (page, total) = query("show=expiring").select(rows.clone(), 0);
        assert_eq!(total, 3, "pump-05, -15, -25 end within 30 days");
        assert!(page.iter().all(|r| r.id.ends_with('5')));
        let (page, _) = query("sort=restarts&dir=desc").select(rows, 0);
        assert_eq!(page[0].id, "pump-29");
    }

    #[test]
    fn pages_cover_every_row_once_and_bad_parameters_fall_back() {
        let rows: Vec<DeviceRow> = (0..120).map(|i| device(&format!("d{i:03}"), false, 0)).collect();
        let mut seen = Vec::new();
        for page in 1..=3 {
            let (rows, total) = query(&format!("page={page}")).select(rows.clone(), 0);
            assert_eq!(total, 120);
            seen.extend(rows.into_iter().map(|r| r.id));
        }
        assert_eq!(seen.len(), 120);
        seen.dedup();
        assert_eq!(seen.len(), 120);
        assert!(query("page=99").select(rows.clone(), 0).0.is_empty());
        assert_eq!(query("page=0&sort=nonsense&show=%3Cx%3E"), query(""));
    }

    #[test]
    fn urls_keep_the_query_and_encode_the_search() {
        let q = query("q=a%26b&show=offline&sort=agent&dir=desc&page=2");
        assert_eq!(q.url(None, None, Some(3)), "/devices?q=a%26b&show=offline&sort=agent&dir=desc&page=3");
    }
}
