//! The endpoints the gate answers itself, under `/device-editor`:
//! - `GET auth/login`, `POST auth/token`, `POST auth/revoke`: the editor's own login, backed by
//!   the gate's users (Node-RED never sees a password);
//! - `redtether/tokens[/NAME]`: bearer-token management for owners.

use super::auth::tokens::{TokenRecord, is_live};
use super::auth::{Presented, Realm, Who};
use super::decision::Local;
use super::pipeline::{Pipeline, actor_of};
use super::proxy::GateBody;
use super::responses;
use crate::audit::{AuditEvent, AuditKind};
use crate::config::Role;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

/// Request bodies the gate reads itself are small.
const MAX_BODY: usize = 16 * 1024;

pub async fn serve(
    pipeline: &Pipeline,
    endpoint: Local,
    req: Request<Incoming>,
    who: &Who,
    ip: IpAddr,
) -> Response<GateBody> {
    match endpoint {
        Local::LoginScheme => responses::json(
            StatusCode::OK,
            &json!({
                "type": "credentials",
                "prompts": [
                    {"id": "username", "type": "text", "label": "user.username"},
                    {"id": "password", "type": "password", "label": "user.password"}
                ]
            }),
        ),
        Local::Login => login(pipeline, req, ip).await,
        Local::Logout => logout(pipeline, req).await,
        Local::Tokens => tokens(pipeline, req, who, ip).await,
    }
}

async fn read_fields(req: Request<Incoming>) -> Result<Vec<(String, String)>, Response<GateBody>> {
    let is_json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(responses::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
        }
        // The body's framing broke (the framing guard cut it) or the client went away.
        Err(_) => return Err(responses::bad_request("malformed request body")),
    };
    if is_json {
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| responses::bad_request("body is not JSON"))?;
        let object = value.as_object().ok_or_else(|| responses::bad_request("body is not a JSON object"))?;
        Ok(object.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
    } else {
        Ok(form_urlencoded::parse(&body).into_owned().collect())
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `POST auth/token` (OAuth2 password grant, as Node-RED's editor sends it).
async fn login(pipeline: &Pipeline, req: Request<Incoming>, ip: IpAddr) -> Response<GateBody> {
    let path = req.uri().path().to_string();
    let fields = match read_fields(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let presented = match (field(&fields, "username"), field(&fields, "password")) {
        (Some(user), Some(password)) if !user.is_empty() => {
            Presented::Basic { user: user.to_string(), password: password.to_string() }
        }
        _ => Presented::Malformed,
    };
    let rules = pipeline.rules();
    if pipeline.auth.cached(&rules.credentials, &presented, Realm::Admin).is_none()
        && let Err(wait) = pipeline.failed_auth.check(ip, Instant::now())
    {
        return responses::too_many(wait);
    }
    let who = match pipeline.auth.authenticate(&rules.credentials, &presented, Realm::Admin, SystemTime::now()).await {
        Ok(who) => who,
        Err(failure) => {
            pipeline.failed_auth.charge(ip, Instant::now());
            // While the journal cannot record it, a failed login gets the same 503 as a good
            // one, so that nobody can try passwords here unaudited.
            if let Err(refused) = pipeline.audit_auth_failure(&failure, ip, &Method::POST, &path).await {
                return refused;
            }
            return responses::unauthorized(false);
        }
    };
    let Who::User { name, role, .. } = who else {
        return responses::unauthorized(false);
    };
    if role == Role::Dashboard {
        let event = AuditEvent::new(AuditKind::AccessDenied, crate::audit::Actor::user(name.as_str()), path.as_str())
            .with("reason", "role")
            .with("role", role.as_str())
            .with("method", "POST");
        if let Err(refused) = pipeline.audited(event).await {
            return refused;
        }
        return responses::error(StatusCode::FORBIDDEN, "forbidden");
    }
    if let Some(refused) = pipeline.unaudited(AuditKind::AuthLogin) {
        return refused;
    }
    let sessions = &pipeline.auth.sessions;
    let token = sessions.create(&name, role, SystemTime::now());
    // The settings may have changed while the password was checked: a session is kept only if
    // the user is still there, with the same role, under the settings in force now.
    let still = pipeline.rules().credentials.user(&name).is_some_and(|u| u.role == role);
    if !still {
        sessions.revoke(&token);
        return responses::unauthorized(false);
    }
    let event = AuditEvent::new(AuditKind::AuthLogin, crate::audit::Actor::user(name.as_str()), path.as_str())
        .with("role", role.as_str())
        .with("addr", ip.to_string());
    if let Err(refused) = pipeline.audited(event).await {
        // No session that the journal does not know of.
        sessions.revoke(&token);
        return refused;
    }
    responses::json(
        StatusCode::OK,
        &json!({ "access_token": token, "expires_in": sessions.ttl().as_secs(), "token_type": "Bearer" }),
    )
}

/// `POST auth/revoke`: ends the session named in the body.
async fn logout(pipeline: &Pipeline, req: Request<Incoming>) -> Response<GateBody> {
    let fields = match read_fields(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(token) = field(&fields, "token") {
        pipeline.auth.sessions.revoke(token);
    }
    responses::json(StatusCode::OK, &json!({}))
}

/// `GET|POST redtether/tokens`, `DELETE redtether/tokens/NAME`: owners only (decided before).
async fn tokens(pipeline: &Pipeline, req: Request<Incoming>, who: &Who, ip: IpAddr) -> Response<GateBody> {
    let actor = actor_of(who, ip);
    let name_in_path = req.uri().path().rsplit('/').next().filter(|last| *last != "tokens").map(str::to_string);
    let store = &pipeline.auth.tokens;
    match (req.method().clone(), name_in_path) {
        (Method::GET, None) => responses::json(
            StatusCode::OK,
            &json!(store.list().iter().map(|t| TokenInfo::of(t, unix_now())).collect::<Vec<_>>()),
        ),
        (Method::POST, None) => {
            let fields = match read_fields(req).await {
                Ok(f) => f,
                Err(r) => return r,
            };
            let (Some(name), Some(expires)) = (field(&fields, "name"), field(&fields, "expires")) else {
                return responses::bad_request("name and expires are required");
            };
            let Ok(lifetime) = humantime::parse_duration(expires) else {
                return responses::bad_request("expires must be a duration such as 1h");
            };
            if let Some(refused) = pipeline.unaudited(AuditKind::TokenCreated) {
                return refused;
            }
            let now = unix_now();
            match store.create(name, lifetime.as_secs(), field(&fields, "scope"), now) {
                Ok((token, record)) => {
                    let event = AuditEvent::new(AuditKind::TokenCreated, actor, record.name.as_str())
                        .with("expires", record.expires)
                        .with("scope", record.scope.clone());
                    if let Err(refused) = pipeline.audited(event).await {
                        // No token that the journal does not know of.
                        let _ = store.revoke(&record.name);
                        return refused;
                    }
                    responses::json(
                        StatusCode::CREATED,
                        &json!({ "token": token, "name": record.name, "expires": record.expires }),
                    )
                }
                Err(e) => responses::json(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": "bad_request", "detail": e.to_string() }),
                ),
            }
        }
        (Method::DELETE, Some(name)) => {
            if let Some(refused) = pipeline.unaudited(AuditKind::TokenRevoked) {
                return refused;
            }
            match store.revoke(&name) {
                Ok(record) => {
                    // A revocation the journal failed to record meanwhile stands (it only takes a
                    // right away); it is answered as refused all the same.
                    if let Err(refused) =
                        pipeline.audited(AuditEvent::new(AuditKind::TokenRevoked, actor, record.name.as_str())).await
                    {
                        return refused;
                    }
                    responses::json(StatusCode::OK, &json!({ "revoked": record.name }))
                }
                Err(e) => {
                    responses::json(StatusCode::NOT_FOUND, &json!({ "error": "not_found", "detail": e.to_string() }))
                }
            }
        }
        _ => responses::method_not_allowed("GET, POST, DELETE"),
    }
}

/// A token as owners see it, never its secret: the gate's token list, and the control
/// socket's `token_list` (and `redtether token list` with the agent stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    #[serde(with = "redtether_proto::time::rfc3339")]
    pub created: SystemTime,
    #[serde(with = "redtether_proto::time::rfc3339")]
    pub expires: SystemTime,
    pub expired: bool,
    /// The path prefix the token is limited to.
    pub scope: Option<String>,
}

impl TokenInfo {
    /// `record` as of `now` (Unix seconds), which decides `expired`.
    pub fn of(record: &TokenRecord, now: u64) -> TokenInfo {
        let at = |secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        TokenInfo {
            name: record.name.clone(),
            created: at(record.created),
            expires: at(record.expires),
            expired: !is_live(record.expires, now),
            scope: record.scope.clone(),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
