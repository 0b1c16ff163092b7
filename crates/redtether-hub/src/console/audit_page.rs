//! `/audit`: every device's and the hub's events (being written).

use super::Query;
use super::layout::{self, Nav};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use http::{Response, StatusCode};
use maud::html;

impl Api {
    pub(super) fn audit_page(&self, caller: &Caller, q: &Query) -> Response<ApiBody> {
        let content = html! { p { "…" } };
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Audit, "Audit", q.notice().as_ref(), content))
    }
}
