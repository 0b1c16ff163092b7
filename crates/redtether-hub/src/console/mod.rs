//! The operator console: server-rendered pages at the hub for the fleet, each device, its
//! security settings, deployments, snapshots, audit trail and SBOM, device groups and their
//! staged rollouts, enrollment and operators.
//!
//! Every change a page offers is a form posted to `/console/…` that the hub turns into the
//! API request a script would make (same route, same role checks, same audit events: see
//! [`Api::call`]); pages read through the API too, except the fleet-wide lists, which read the
//! store directly to stay fast with thousands of devices. The console needs a login session
//! (the `/login` form); a form must carry the session's CSRF token and come from the hub's own
//! origin. Viewers get pages without write controls, and the API refuses their writes anyway.

mod actions;
mod assets;
mod audit_page;
mod charts;
mod device;
mod devices;
mod fleet;
mod group_forms;
mod groups;
mod layout;
mod live;
mod logs_page;
mod people;
mod route;
mod security;
mod tab_flows;
mod tab_records;
mod tab_security;

pub(crate) use fleet::sample_presence;

/// Where the login and setup pages link the console's stylesheet.
pub(crate) fn stylesheet() -> String {
    assets::href("console.css")
}

use crate::api::{Api, ApiBody, RequestBody, boxed, rate_limited, request_body};
use crate::caller::{Caller, Checked};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use layout::Notice;
use route::Route;
use std::net::IpAddr;

/// A form's largest body: a pasted flows.json for a deployment (the API takes up to 4 MiB).
const MAX_FORM: usize = 4 << 20;

/// A form's fields, by name (the first of each).
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A field, trimmed, or "".
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map(str::trim).unwrap_or_default()
    }
}

/// The query of a page's URL, by name (the first of each).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// What the last form did, from the `done` its redirect put here (a refusal is answered
    /// with its own page and status instead).
    pub fn notice(&self) -> Option<Notice> {
        self.get("done").map(|done| Notice::Done(actions::describe_done(done)))
    }
}

impl Api {
    /// Answers the console's pages and forms; gives any other request back.
    pub(crate) async fn console(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<ApiBody>, Request<Incoming>> {
        let Some(route) = route::route(req.method(), req.uri().path()) else {
            return Err(req);
        };
        if let Route::Asset(name) = &route {
            return Ok(assets::serve(name, req.headers()));
        }
        let caller = match self.authenticate(req.headers(), peer) {
            Some(Checked::Operator(caller)) => caller,
            Some(Checked::Limited(retry)) => return Ok(boxed(rate_limited(retry))),
            Some(Checked::Refused) | None => return Ok(to_login(&req)),
        };
        let raw_query = req.uri().query().map(str::to_string);
        let query = Query::parse(raw_query.as_deref());
        Ok(match route {
            Route::Action(action) => {
                if let Err(refusal) = security::check_form_origin(req.headers(), self.secure_cookies) {
                    return Ok(layout::message(Some(&caller), StatusCode::FORBIDDEN, "Refused", refusal.text()));
                }
                let form = match read_form(req.into_body()).await {
                    Ok(form) => form,
                    Err(r) => return Ok(r),
                };
                if !security::csrf_ok(&caller, form.get("csrf")) {
                    let text = "The form expired or did not come from this console; open the page again.";
                    return Ok(layout::message(Some(&caller), StatusCode::FORBIDDEN, "Refused", text));
                }
                self.act(&caller, action, &form).await
            }
            Route::Live => live::stream(self.registry.clone()),
            Route::Devices => self.devices_page(&caller, &query),
            // Dashboard operators see the device list (their way to node space), nothing else.
            _ if caller.operator.role < crate::store::OperatorRole::Viewer => layout::message(
                Some(&caller),
                StatusCode::FORBIDDEN,
                "Not for your role",
                "Dashboard accounts open devices' dashboards from the device list.",
            ),
            Route::Fleet => self.fleet_page(&caller),
            Route::Device(id) => self.device_page(&caller, &id, &query).await,
            Route::DeviceLogs(id) => self.logs_page(&caller, &id).await,
            Route::Audit => self.audit_page(&caller, &query, raw_query.as_deref()),
            Route::Enroll => self.enroll_page(&caller, &query, None),
            Route::Operators => self.operators_page(&caller, &query, None).await,
            Route::Account => self.account_page(&caller, &query, None).await,
            Route::Groups => self.groups_page(&caller, &query).await,
            Route::Group(name) => self.group_page(&caller, &name, query.notice()).await,
            Route::Rollout(id) => self.rollout_page(&caller, &id, &query).await,
            Route::Asset(_) => unreachable!("served above"),
        })
    }

    /// The API's answer to `method path` with `body` as JSON, for `caller`: how the console
    /// reads a device's details and makes every change (the same route, checks and events as
    /// a script's request).
    pub(crate) async fn call(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default();
        let mut req: Request<RequestBody> = Request::new(request_body(bytes));
        *req.method_mut() = method;
        match path.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return (StatusCode::NOT_FOUND, serde_json::json!({ "error": "not_found" })),
        }
        let answer = self.route(caller, req).await;
        let status = answer.status();
        let bytes = answer.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

/// The login form, coming back here afterwards.
fn to_login<B>(req: &Request<B>) -> Response<ApiBody> {
    let here = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
    layout::see_other(&format!("/login?next={next}"))
}

async fn read_form(body: Incoming) -> Result<Form, Response<ApiBody>> {
    match Limited::new(body, MAX_FORM).collect().await {
        Ok(b) => Ok(Form(form_urlencoded::parse(&b.to_bytes()).into_owned().collect())),
        Err(_) => Err(boxed(crate::api::error(StatusCode::PAYLOAD_TOO_LARGE, "form_too_large"))),
    }
}

/// The path of `id` in a URL (device ids and operator names are URL-safe already, but a
/// stored one is not trusted to be).
pub(crate) fn seg(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
