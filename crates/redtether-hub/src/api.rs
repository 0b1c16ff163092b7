//! The operator API (JSON over HTTP, optionally HTTPS), for an API token
//! (`Authorization: Bearer rto_…`) or a login session (cookie, plus `X-CSRF-Token` on writes;
//! see `caller`); dashboard operators list devices and open node space, viewers read, members
//! also command and deploy, owners also set security settings.
//!
//! - the operator console's pages and forms (see `console`)
//! - accounts: setup, login, logout, `me`, the caller's API tokens (see `accounts_api`); the
//!   browser's `/login` and `/setup` forms (`login`, `setup_page`) and single sign-on
//!   (`/auth/oidc/…`, `sso_login`)
//! - `GET /api/devices` — every enrolled device: id, online, last_seen, agent_version, node_red
//! - `GET /api/devices/{id}` — one device, with the status it last pushed
//! - `POST /api/devices/{id}/restart` — restart its Node-RED; the answer carries the result
//! - `GET /api/devices/{id}/metrics[?since=T]` — its resource figures, a point a minute for
//!   the last day; `GET /metrics` — the hub's Prometheus metrics (see `metrics_api`)
//! - `GET /api/devices/{id}/logs[?lines=N|?follow=true]` — Node-RED's recent output, fetched or
//!   followed as server-sent events (see `logs_api`)
//! - `POST /api/devices/{id}/disconnect` — end the device's tunnel connection (it reconnects)
//! - `GET /api/devices/{id}/audit[?after=SEQ][&kind=K][&source=device|hub]` — the device's
//!   delivered audit events and what the hub recorded about it (see `audit_view`)
//! - `GET /api/audit`, `GET /api/audit/export` — the fleet's audit, paged or whole (see
//!   `fleet_audit_api`)
//! - deployments, snapshots and SBOMs (see `deploy_api`)
//! - the device's policy and bearer tokens, owners only (see `policy_api`)
//! - device groups, rollouts and pipelines (see `groups_api`, `rollouts_api`, `pipelines_api`)
//! - `ANY /devices/{id}/editor/{path}` — the device's editor through the tunnel (see `editor`)
//! - `ANY /devices/{id}/http/{path}` — the device's node space (dashboards, HTTP-In), every role

use crate::audit_view::{AuditQuery, merge};
use crate::caller::{Caller, Checked};
use crate::editor::DeviceSpace;
use crate::registry::{CommandError, Registry};
use crate::store::{DeviceRecord, HubStore, OperatorRole};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use redtether_host::ratelimit::Limiter;
use redtether_proto::audit::HubEventKind;
use redtether_proto::wire::Command;
use serde_json::json;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a command may take on the device.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Api {
    pub store: Arc<HubStore>,
    pub registry: Registry,
    /// Signs the assertions of who an operator is, for the devices' gates.
    pub signer: Arc<ring::signature::Ed25519KeyPair>,
    /// The remote editor's assertions, signed with `signer` once per claim and reused.
    pub assertions: crate::assertions::Assertions,
    /// Opens portable snapshots' credentials to seal them for the device they are deployed to
    /// (see `crate::portable`).
    pub credentials_key: Arc<crate::keys::CredentialsKey>,
    /// Owns the remote editor's stream and websocket tasks.
    pub tasks: tokio_util::task::TaskTracker,
    /// The API is HTTPS: the editor login cookie is `Secure`.
    pub secure_cookies: bool,
    /// Failed operator-token checks per source address, checked before a token is looked up.
    pub failed_auth: Limiter,
    /// Failed logins per account name, checked before a password is hashed.
    pub failed_logins: Limiter<String>,
    /// `[auth]`.
    pub auth: crate::config::AuthSettings,
    /// Browser logins between their password and their second factor.
    pub pending_logins: crate::accounts_api::PendingLogins,
    /// Single sign-on with an OpenID provider, and its logins in progress.
    pub sso: crate::sso_login::Sso,
    /// What the `redtether enroll` line of a new enrollment token says.
    pub enroll: crate::operators_api::EnrollHint,
    /// Fleet rollouts and their driver.
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// The hub's Prometheus metrics and the devices' resource history.
    pub metrics: Arc<crate::metrics::HubMetrics>,
}

/// Failed token checks allowed from one address at once, then one per second: enough for a
/// person who mistyped, nothing for someone guessing.
pub const FAILED_AUTH_BURST: u32 = 10;
pub const FAILED_AUTH_PER_SECOND: f64 = 1.0;

/// 429 with the time to wait, in whole seconds (rounded up) as `Retry-After` wants.
pub(crate) fn rate_limited(retry: Duration) -> Response<Full<Bytes>> {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    r
}

/// Bodies of requests to the API: a client's, or one the console made from a form.
pub type RequestBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// A body the hub made itself, as a request body.
pub(crate) fn request_body(bytes: impl Into<Bytes>) -> RequestBody {
    use http_body_util::BodyExt;
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Bodies of the API's answers: its own JSON, or a device's (or another hub's) answer streamed
/// through, whose failure midway cuts the connection.
pub type ApiBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// Why a streamed answer stopped.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

pub(super) fn boxed(r: Response<Full<Bytes>>) -> Response<ApiBody> {
    use http_body_util::BodyExt;
    r.map(|b| b.map_err(|never| match never {}).boxed())
}

pub(super) fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

pub(super) fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": code }))
}

fn accepts_html(headers: &http::HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

pub(super) fn time(unix: Option<u64>) -> serde_json::Value {
    unix.map(|s| redtether_proto::time::format_unix(s).into()).unwrap_or(serde_json::Value::Null)
}

impl Api {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<ApiBody>, Infallible> {
        let req = match self.to_holder(req, peer).await {
            Ok(answer) => return Ok(answer),
            Err(req) => req,
        };
        match req.uri().path() {
            "/login" => return Ok(self.login(req, peer).await),
            "/setup" | "/setup/confirm" => return Ok(self.setup_page(req, peer).await),
            "/auth/oidc/login" => return Ok(self.oidc_begin(req).await),
            crate::sso::config::CALLBACK_PATH => return Ok(self.oidc_callback(req, peer).await),
            crate::fleet_audit_api::EXPORT_PATH => return Ok(self.fleet_audit_export(&req, peer).await),
            "/metrics" => return Ok(self.scrape(&req, peer).await),
            _ => {}
        }
        let req = match self.console(req, peer).await {
            Ok(page) => return Ok(page),
            Err(req) => req,
        };
        if let Some((device, space, path)) = crate::editor::target(req.uri().path()) {
            let checked = self.authenticate(req.headers(), peer);
            if let Some(Checked::Limited(retry)) = checked {
                return Ok(boxed(rate_limited(retry)));
            }
            let Some(Checked::Operator(caller)) = checked else {
                let mut r = boxed(error(StatusCode::UNAUTHORIZED, "unauthorized"));
                if req.method() == http::Method::GET
                    && accepts_html(req.headers())
                    && let Ok(v) = header::HeaderValue::from_str(&format!("/login?next={}", req.uri().path()))
                {
                    // A browser is sent to the login form instead of a bare 401.
                    *r.status_mut() = StatusCode::SEE_OTHER;
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return Ok(r);
            };
            let caller = self.narrowed(&caller, &["api", "devices", device]);
            // Node space is every role's (dashboard operators' only one); the editor is not.
            if space == DeviceSpace::Editor && caller.operator.role < OperatorRole::Viewer {
                return Ok(boxed(error(StatusCode::FORBIDDEN, "forbidden")));
            }
            let device = device.to_string();
            return Ok(self.editor(req, caller.operator, &device, space, path).await);
        }
        if req.method() == Method::GET
            && let Some(device) = crate::logs_api::target(req.uri().path())
        {
            // Apart from the other routes: a followed answer is a stream, not a buffered body.
            let caller = match self.authenticate(req.headers(), peer) {
                Some(Checked::Operator(caller)) => caller,
                Some(Checked::Limited(retry)) => return Ok(boxed(rate_limited(retry))),
                Some(Checked::Refused) | None => return Ok(boxed(error(StatusCode::UNAUTHORIZED, "unauthorized"))),
            };
            let caller = self.narrowed(&caller, &["api", "devices", device]);
            let device = device.to_string();
            return Ok(self.device_logs(&caller, &device, req.uri().query(), req.headers()).await);
        }
        Ok(boxed(self.serve(req, peer).await))
    }

    /// In a cluster: a request about a device another hub holds, passed to that hub (unless it
    /// was forwarded here already: a request is forwarded once).
    async fn to_holder(&self, req: Request<Incoming>, peer: IpAddr) -> Result<Response<ApiBody>, Request<Incoming>> {
        let Some(cluster) = self.registry.cluster() else { return Err(req) };
        if req.headers().contains_key(crate::cluster::FORWARDED_BY) {
            return Err(req);
        }
        let Some(device) = crate::cluster::forward::device_of_path(req.uri().path()) else { return Err(req) };
        if self.registry.get(&device).is_some() {
            return Err(req);
        }
        let Some(holder) = cluster.find_holder(&device) else { return Err(req) };
        Ok(cluster.forward(req, &holder, peer, &self.tasks).await)
    }

    async fn serve(&self, req: Request<Incoming>, peer: IpAddr) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let req = req.map(|b| b.boxed());
        let path = req.uri().path().trim_end_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = req.method().clone();
        // Routes for those not logged in yet.
        match (&method, segments.as_slice()) {
            (&Method::POST, ["api", "login"]) => return self.login_json(req, peer).await,
            (&Method::POST, ["api", "setup"]) => return self.setup(req.into_body(), peer).await,
            (&Method::POST, ["api", "setup", "confirm"]) => return self.setup_confirm(req.into_body(), peer).await,
            _ => {}
        }
        let caller = match self.authenticate(req.headers(), peer) {
            Some(Checked::Operator(caller)) => caller,
            Some(Checked::Limited(retry)) => return rate_limited(retry),
            Some(Checked::Refused) | None => return error(StatusCode::UNAUTHORIZED, "unauthorized"),
        };
        // A cookie is sent by the browser whoever made the page: writes with it must also
        // carry the session's CSRF token, which only the hub's own pages and the login answer know.
        if !method.is_safe()
            && let Some(expected) = caller.csrf()
            && !crate::accounts_api::csrf_matches(req.headers(), expected)
        {
            return error(StatusCode::FORBIDDEN, "csrf_token_missing");
        }
        self.route(&caller, req).await
    }

    /// Answers an authenticated request (its CSRF check done): the API's routes after login,
    /// for clients and for the console's forms alike.
    pub(crate) async fn route(&self, caller: &Caller, req: Request<RequestBody>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = req.method().clone();
        let narrowed = self.narrowed(caller, &segments);
        let caller = &narrowed;
        if let ["api", "operators", ..] | ["api", "enrollment-tokens"] = segments.as_slice() {
            return self.operators_route(caller, &method, &segments, req.into_body()).await;
        }
        match (&method, segments.as_slice()) {
            (&Method::POST, ["api", "logout"]) => return self.logout(caller),
            (&Method::GET, ["api", "me"]) => return self.me(caller),
            (_, ["api", "me", what @ ..]) => {
                return self.self_service(caller, &method, what, req.into_body(), caller.peer).await;
            }
            (&Method::GET, ["api", "tokens"]) => return self.list_api_tokens(caller),
            (&Method::POST, ["api", "tokens"]) => return self.create_api_token(caller, req.into_body()).await,
            (&Method::DELETE, ["api", "tokens", name]) => return self.revoke_api_token(caller, name),
            (&Method::GET, ["api", "devices"]) => {}
            // Dashboard operators open node space and list devices; nothing else.
            _ if caller.operator.role < OperatorRole::Viewer => return error(StatusCode::FORBIDDEN, "forbidden"),
            _ => {}
        }
        if let ["api", "groups" | "rollouts" | "pipelines", ..] = segments.as_slice() {
            let query = req.uri().query().map(str::to_string);
            return self.fleet_route(caller, &method, &segments, query.as_deref(), req.into_body()).await;
        }
        let operator = &caller.operator;
        match (&method, segments.as_slice()) {
            (&Method::GET, ["api", "audit"]) => self.fleet_audit_page(req.uri().query(), None).await,
            (&Method::POST, ["api", "devices", id, "deploy"]) => self.deploy(operator, id, req.into_body()).await,
            (&Method::GET, ["api", "devices", id, "deployments"]) => self.deployments(id, None, false, operator),
            (&Method::GET, ["api", "devices", id, "deployments", did]) => {
                self.deployments(id, Some(did), false, operator)
            }
            (&Method::GET, ["api", "devices", id, "deployments", did, "envelope"]) => {
                self.deployments(id, Some(did), true, operator)
            }
            (&Method::POST, ["api", "devices", id, "snapshot"]) => self.take_snapshot(operator, id).await,
            (&Method::GET, ["api", "devices", id, "snapshots"]) => self.snapshots(id, None),
            (&Method::GET, ["api", "devices", id, "snapshots", sid]) => self.snapshots(id, Some(sid)),
            (&Method::GET, ["api", "devices", id, "policy"]) => self.get_policy(id),
            (&Method::PUT, ["api", "devices", id, "policy"]) => self.put_policy(operator, id, req.into_body()).await,
            (&Method::DELETE, ["api", "devices", id, "policy"]) => self.drop_device_policy(operator, id).await,
            (&Method::GET, ["api", "devices", id, "tokens"]) => self.list_tokens(id),
            (&Method::POST, ["api", "devices", id, "tokens"]) => self.create_token(operator, id, req.into_body()).await,
            (&Method::DELETE, ["api", "devices", id, "tokens", name]) => self.revoke_token(operator, id, name).await,
            (&Method::GET, ["api", "devices", id, "sbom"]) => self.sbom(operator, id, false).await,
            (&Method::GET, ["api", "devices", id, "metrics"]) => self.device_metrics(id, req.uri().query()),
            (&Method::POST, ["api", "devices", id, "sbom"]) => self.sbom(operator, id, true).await,
            (&Method::GET, ["api", "devices"]) => match self.store.devices() {
                Ok(devices) => json_response(
                    StatusCode::OK,
                    json!(devices.iter().map(|d| self.device_json(d, false)).collect::<Vec<_>>()),
                ),
                Err(e) => store_error(&e),
            },
            (&Method::GET, ["api", "devices", id]) => {
                self.with_device(id, |d| json_response(StatusCode::OK, self.device_json(d, true)))
            }
            (&Method::GET, ["api", "devices", id, "audit"]) => {
                let query = match AuditQuery::parse(req.uri().query()) {
                    Ok(q) => q,
                    Err(why) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            json!({ "error": "bad_query", "detail": why.to_string() }),
                        );
                    }
                };
                self.with_device(id, |_| {
                    let hub = match self.store.events(id) {
                        Ok(events) => events
                            .into_iter()
                            .map(|e| json!({"seq": e.seq, "ts": e.ts, "kind": e.kind, "detail": e.detail}))
                            .collect(),
                        Err(e) => return store_error(&e),
                    };
                    match self.store.device_audit(id, query.after) {
                        Ok(device) => {
                            let device = device.iter().map(|e| json!(e)).collect();
                            json_response(StatusCode::OK, json!(merge(device, hub, &query)))
                        }
                        Err(e) => store_error(&e),
                    }
                })
            }
            (&Method::POST, ["api", "devices", id, "restart"]) => {
                if operator.role < OperatorRole::Member {
                    return error(StatusCode::FORBIDDEN, "forbidden");
                }
                if !matches!(self.store.device(id), Ok(Some(_))) {
                    return error(StatusCode::NOT_FOUND, "unknown_device");
                }
                let _ = self.store.record_event(
                    id,
                    HubEventKind::OperatorCommand,
                    json!({ "operator": operator.name, "command": "restart_node_red" }),
                );
                match self.registry.send(id, Command::RestartNodeRed, COMMAND_TIMEOUT).await {
                    Ok((ok, detail)) => json_response(
                        if ok { StatusCode::OK } else { StatusCode::BAD_GATEWAY },
                        json!({ "ok": ok, "detail": detail }),
                    ),
                    Err(CommandError::Offline) => error(StatusCode::CONFLICT, "device_offline"),
                    Err(CommandError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, "device_timeout"),
                    Err(CommandError::Lost) => error(StatusCode::BAD_GATEWAY, "connection_lost"),
                }
            }
            (&Method::POST, ["api", "devices", id, "disconnect"]) => self.disconnect(operator, id),
            (_, ["api", "devices", ..]) => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    /// `POST /api/devices/{id}/disconnect` (members): closes the device's tunnel connection with
    /// `DISCONNECTED`; the agent reconnects as after a lost path (within its backoff, usually
    /// under a second). For a device whose link misbehaves, and for testing reconnects.
    fn disconnect(&self, operator: &crate::store::OperatorRecord, id: &str) -> Response<Full<Bytes>> {
        if operator.role < OperatorRole::Member {
            return error(StatusCode::FORBIDDEN, "forbidden");
        }
        if !matches!(self.store.device(id), Ok(Some(_))) {
            return error(StatusCode::NOT_FOUND, "unknown_device");
        }
        let Some(online) = self.registry.get(id) else { return error(StatusCode::CONFLICT, "device_offline") };
        let _ = self.store.record_event(
            id,
            HubEventKind::OperatorCommand,
            json!({ "operator": operator.name, "command": "disconnect" }),
        );
        online.connection.close(redtether_proto::wire::codes::DISCONNECTED, b"disconnected by an operator");
        json_response(StatusCode::OK, json!({ "disconnected": true }))
    }

    /// The caller of a route answered outside the router (`/metrics`, the audit export): an
    /// operator who may read (viewer and up), or the answer to send instead (401, 403, 429).
    pub(crate) fn reader(&self, headers: &http::HeaderMap, peer: IpAddr) -> Result<Caller, Box<Response<ApiBody>>> {
        let caller = match self.authenticate(headers, peer) {
            Some(Checked::Operator(caller)) => caller,
            Some(Checked::Limited(retry)) => return Err(Box::new(boxed(rate_limited(retry)))),
            Some(Checked::Refused) | None => {
                return Err(Box::new(boxed(error(StatusCode::UNAUTHORIZED, "unauthorized"))));
            }
        };
        if caller.operator.role < OperatorRole::Viewer {
            return Err(Box::new(boxed(error(StatusCode::FORBIDDEN, "forbidden"))));
        }
        Ok(*caller)
    }

    /// `caller` acting with their role in the group the request is about (a device's, a
    /// group's, a rollout's): the lower of their role and their role there.
    pub(crate) fn narrowed(&self, caller: &Caller, segments: &[&str]) -> Caller {
        if caller.operator.group_roles.is_empty() {
            return caller.clone();
        }
        let group = match segments {
            ["api", "devices", id, ..] => self.store.device(id).ok().flatten().and_then(|d| d.group),
            ["api", "groups", name, ..] => Some((*name).to_string()),
            ["api", "rollouts", id, ..] => self.rollouts.get(id).ok().flatten().map(|r| r.group),
            _ => None,
        };
        let mut narrowed = caller.clone();
        narrowed.operator.role = caller.operator.role_in(group.as_deref());
        narrowed
    }

    fn with_device(&self, id: &str, f: impl FnOnce(&DeviceRecord) -> Response<Full<Bytes>>) -> Response<Full<Bytes>> {
        match self.store.device(id) {
            Ok(Some(d)) => f(&d),
            Ok(None) => error(StatusCode::NOT_FOUND, "unknown_device"),
            Err(e) => store_error(&e),
        }
    }

    pub fn device_json(&self, d: &DeviceRecord, full: bool) -> serde_json::Value {
        let online = self.registry.is_online(&d.id);
        let status = d.status.as_ref();
        let mut v = json!({
            "id": d.id,
            "online": online,
            "last_seen": if online { time(Some(redtether_proto::time::unix_now())) } else { time(d.last_seen) },
            "agent_version": d.agent_version,
            "node_red": status.map(|s| json!(s.node_red)),
            "revoked": d.revoked,
            // The journal as the device last reported it, and what the hub holds of it.
            "audit": {
                "acked": d.audit_acked,
                "backlog": status.map(|s| s.audit_backlog),
                "last_seq": status.map(|s| s.audit_last_seq),
                "duplicates": d.audit_duplicates,
            },
        });
        if full {
            // The session's details, when this hub holds it (a forwarded request for the
            // device is answered by the hub that does).
            let online = self.registry.get(&d.id);
            if let Some(cluster) = self.registry.cluster() {
                // Which hub of the cluster holds the device's tunnel.
                v["hub"] = match (&online, cluster.holder(&d.id)) {
                    (Some(_), _) => cluster.id.clone().into(),
                    (None, Some(other)) => other.id.into(),
                    (None, None) => serde_json::Value::Null,
                };
            }
            v["enrolled"] = time(Some(d.enrolled));
            v["certificate_expires"] = time(Some(d.cert_not_after));
            v["transport"] =
                online.as_ref().map(|o| o.connection.transport().as_str().into()).unwrap_or(serde_json::Value::Null);
            v["connected_since"] = online.map(|o| crate::session::since(&o).into()).unwrap_or(serde_json::Value::Null);
            v["status"] = json!(status);
            v["resources"] = match self.metrics.history.latest(&d.id) {
                Some(sample) => crate::metrics_api::sample_json(&sample),
                None => serde_json::Value::Null,
            };
            v["policy"] = match self.store.policy(&d.id) {
                Ok(Some(p)) => json!({ "number": p.number, "state": p.state, "reason": p.reason }),
                Ok(None) => serde_json::Value::Null,
                Err(e) => {
                    tracing::error!(device = %d.id, error = %e, "cannot read the device's policy");
                    serde_json::Value::Null
                }
            };
        }
        v
    }
}

pub(super) fn store_error(e: &crate::store::StoreError) -> Response<Full<Bytes>> {
    tracing::error!(error = %e, "operator API: store failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "store_error")
}
