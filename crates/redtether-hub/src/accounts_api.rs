//! Operator accounts on the API: setting up an account with its one-time setup code
//! (`POST /api/setup`, `POST /api/setup/confirm`), logging in (`POST /api/login`; the browser
//! form is `login`), logging out, `GET /api/me`, and an operator's own API tokens
//! (`GET|POST /api/tokens`, `DELETE /api/tokens/{name}`).
//!
//! A login checks, in this order and before any hashing: the source address's failures, then
//! the account's failures (either limited: 429 with `Retry-After`, audited once per burst);
//! then the password (argon2id; an unknown name costs the same hash), then — for a local
//! account when `[auth] require_2fa` — a TOTP code (±1 step, never the same step twice) or one
//! of the recovery codes (each works once). Every failure is audited with its reason, never
//! with what was typed.

use crate::api::RequestBody;
use crate::api::{Api, json_response, rate_limited, store_error};
use crate::caller::{Caller, Credential, SESSION_COOKIE};
use crate::identity::TokenScope;
use crate::identity::secrets::{self, digest};
use crate::identity::totp::{self, TotpRefusal};
use crate::setup::Offer;
use crate::store::prelude::*;
use crate::store::{AccountSource, OperatorRecord, SessionRecord};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use redtether_host::ratelimit::Limited as RateLimited;
use redtether_proto::audit::{Actor, HubEventKind};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

const MAX_BODY: usize = 8 * 1024;

/// An answer that ends a request early (boxed: a response is large to move around).
pub(crate) type Answer = Box<Response<Full<Bytes>>>;
/// Longest an API token may live.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 86400);
/// How long a browser has between its password and its second factor.
const PENDING_SECS: u64 = 300;
/// Browser logins waiting for their second factor at once (older ones are dropped).
const MAX_PENDING: usize = 1024;

/// The second factor a login came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactor {
    Totp(String),
    RecoveryCode(String),
}

/// Why a login did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Too many failures from the address or for the account.
    Limited(Duration),
    /// The password is right; a second factor is needed.
    NeedsSecondFactor,
    /// Refused; the reason goes to the audit trail, never to the caller.
    Refused(&'static str),
}

/// Browser logins between their password and their second factor: ticket digest → (name,
/// when the password was right). Kept in memory: a hub restart asks for the password again.
#[derive(Default)]
pub struct PendingLogins(Mutex<HashMap<String, (String, u64)>>);

impl PendingLogins {
    pub fn start(&self, name: &str, now: u64) -> String {
        let ticket = secrets::random_secret("rtlogin_");
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, at)| now < *at + PENDING_SECS);
        if map.len() >= MAX_PENDING {
            map.clear();
        }
        map.insert(digest(&ticket), (name.to_string(), now));
        ticket
    }

    /// The name a ticket was given for, while it is valid.
    pub fn name(&self, ticket: &str, now: u64) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&digest(ticket)).filter(|(_, at)| now < *at + PENDING_SECS).map(|(name, _)| name.clone())
    }

    pub fn finish(&self, ticket: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&digest(ticket));
    }
}

/// Whether a request carries the session's CSRF token (`X-CSRF-Token`), compared in constant time.
pub fn csrf_matches(headers: &HeaderMap, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(body: RequestBody) -> Result<T, Response<Full<Bytes>>> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(crate::api::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| json_response(StatusCode::BAD_REQUEST, json!({ "error": "bad_request", "detail": e.to_string() })))
}

fn refused(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    crate::api::error(status, code)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
    totp: Option<String>,
    recovery_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    code: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    code: String,
    totp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    /// Seconds, or a duration such as "30d".
    expires_in: serde_json::Value,
    scope: String,
}

fn lifetime(value: &serde_json::Value) -> Option<Duration> {
    let d = match value {
        serde_json::Value::Number(n) => Duration::from_secs(n.as_u64()?),
        serde_json::Value::String(s) => humantime::parse_duration(s).ok()?,
        _ => return None,
    };
    (!d.is_zero() && d <= MAX_TOKEN_LIFETIME).then_some(d)
}

impl Api {
    fn audit(&self, kind: HubEventKind, actor: Actor, target: &str, detail: serde_json::Value) -> Result<(), Answer> {
        self.store.record(kind, actor, target, detail).map(|_| ()).map_err(|e| Box::new(store_error(&e)))
    }

    pub(crate) fn login_failed(&self, name: &str, peer: IpAddr, reason: &'static str) {
        let now = std::time::Instant::now();
        self.failed_auth.charge(peer, now);
        self.failed_logins.charge(name.to_string(), now);
        let detail = json!({ "name": name, "reason": reason, "addr": peer.to_string() });
        if let Err(e) = self.store.record(HubEventKind::OperatorLoginFailed, Actor::anonymous(peer), "hub", detail) {
            tracing::error!(error = %e, "cannot record operator.login_failed");
        }
    }

    pub(crate) fn login_limits(&self, name: &str, peer: IpAddr) -> Option<Duration> {
        let now = std::time::Instant::now();
        let checks = [
            self.failed_auth.check_burst(peer, now).map_err(|l| (l, json!({ "addr": peer.to_string() }))),
            self.failed_logins.check_burst(name.to_string(), now).map_err(|l| (l, json!({ "account": name }))),
        ];
        for check in checks {
            if let Err((RateLimited { retry, first }, mut detail)) = check {
                if first {
                    detail["retry_after_secs"] = json!(retry.as_secs().max(1));
                    self.audit_limited(detail);
                }
                return Some(retry);
            }
        }
        None
    }

    /// A password login from the API or the form: a local account's (with its second factor),
    /// or — with `[auth.ldap]` — the directory's for any other name. Returns the account and
    /// how it logged in.
    pub(crate) async fn password_login(
        &self,
        name: &str,
        password: &str,
        second: Option<SecondFactor>,
        peer: IpAddr,
    ) -> Result<(OperatorRecord, &'static str), LoginOutcome> {
        if self.is_directory_name(name) {
            if let Some(retry) = self.login_limits(name, peer) {
                return Err(LoginOutcome::Limited(retry));
            }
            return self.ldap_login(name, password, peer).await.map(|o| (o, "ldap"));
        }
        if !self.auth.password_login() {
            self.login_failed(name, peer, "password_login_disabled");
            return Err(LoginOutcome::Refused("password_login_disabled"));
        }
        self.check_login(name, Some(password), second, peer).map(|o| (o, "password"))
    }

    /// Checks a local account's password and second factor; on success the account as it is now.
    pub(crate) fn check_login(
        &self,
        name: &str,
        password: Option<&str>,
        second: Option<SecondFactor>,
        peer: IpAddr,
    ) -> Result<OperatorRecord, LoginOutcome> {
        if let Some(retry) = self.login_limits(name, peer) {
            return Err(LoginOutcome::Limited(retry));
        }
        let record = self.store.operator(name).ok().flatten().filter(|r| r.source == AccountSource::Local);
        // The password is skipped only for the second step of a browser login, whose ticket
        // proved it minutes ago.
        if let Some(password) = password
            && !secrets::verify_password(password, record.as_ref().and_then(|r| r.password_hash.as_deref()))
        {
            let reason = if record.is_some() { "wrong_password" } else { "unknown_operator" };
            self.login_failed(name, peer, reason);
            return Err(LoginOutcome::Refused(reason));
        }
        let Some(record) = record else {
            self.login_failed(name, peer, "unknown_operator");
            return Err(LoginOutcome::Refused("unknown_operator"));
        };
        if !self.auth.require_2fa {
            return Ok(record);
        }
        let Some(secret) = record.totp_secret.clone() else {
            self.login_failed(name, peer, "setup_incomplete");
            return Err(LoginOutcome::Refused("setup_incomplete"));
        };
        let now = redtether_proto::time::unix_now();
        let accepted = match second {
            None => return Err(LoginOutcome::NeedsSecondFactor),
            Some(SecondFactor::Totp(code)) => match totp::check(&secret, &code, now, record.totp_last_step) {
                // The step is written only if no other login took it meanwhile.
                Ok(step) => self
                    .store
                    .update_operator(name, |r| {
                        let fresh = step > r.totp_last_step;
                        r.totp_last_step = r.totp_last_step.max(step);
                        fresh
                    })
                    .ok()
                    .flatten()
                    .map_or(Err("wrong_totp"), |fresh| if fresh { Ok(()) } else { Err("replayed_totp") }),
                Err(TotpRefusal::Replayed) => Err("replayed_totp"),
                Err(_) => Err("wrong_totp"),
            },
            Some(SecondFactor::RecoveryCode(code)) => {
                let wanted = digest(&secrets::normalize_recovery_code(&code));
                let used = self.store.update_operator(name, |r| {
                    let before = r.recovery_sha256.len();
                    r.recovery_sha256.retain(|d| *d != wanted);
                    r.recovery_sha256.len() < before
                });
                if matches!(used, Ok(Some(true))) { Ok(()) } else { Err("wrong_recovery_code") }
            }
        };
        match accepted {
            Ok(()) => Ok(self.store.operator(name).ok().flatten().unwrap_or(record)),
            Err(reason) => {
                self.login_failed(name, peer, reason);
                Err(LoginOutcome::Refused(reason))
            }
        }
    }

    /// Starts a session for a login that succeeded: the event, then the cookie.
    pub(crate) fn start_session(
        &self,
        operator: &OperatorRecord,
        method: &str,
        second_factor: &str,
        peer: IpAddr,
    ) -> Result<(String, SessionRecord), Answer> {
        let now = redtether_proto::time::unix_now();
        let detail = json!({ "method": method, "second_factor": second_factor, "addr": peer.to_string() });
        self.audit(HubEventKind::OperatorLogin, Actor::user(&operator.name), "hub", detail)?;
        self.store.create_session(&operator.name, method, now).map_err(|e| Box::new(store_error(&e)))
    }

    pub(crate) fn session_cookie(&self, id: &str) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let value = format!(
            "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            self.auth.session.max
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub(super) async fn login_json(&self, req: Request<RequestBody>, peer: IpAddr) -> Response<Full<Bytes>> {
        let body: LoginBody = match read_json(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let second = match (body.totp, body.recovery_code) {
            (Some(code), _) => Some(SecondFactor::Totp(code)),
            (None, Some(code)) => Some(SecondFactor::RecoveryCode(code)),
            (None, None) => None,
        };
        let factor = match &second {
            Some(SecondFactor::Totp(_)) => "totp",
            Some(SecondFactor::RecoveryCode(_)) => "recovery_code",
            None => "none",
        };
        let (operator, method) = match self.password_login(&body.name, &body.password, second, peer).await {
            Ok(found) => found,
            Err(LoginOutcome::Limited(retry)) => return rate_limited(retry),
            Err(LoginOutcome::NeedsSecondFactor) => return refused(StatusCode::UNAUTHORIZED, "second_factor_required"),
            Err(LoginOutcome::Refused(_)) => return refused(StatusCode::UNAUTHORIZED, "invalid_credentials"),
        };
        let factor = if method == "password" { factor } else { "provider" };
        let (id, session) = match self.start_session(&operator, method, factor, peer) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let mut r = json_response(
            StatusCode::OK,
            json!({
                "operator": operator.name,
                "role": operator.role,
                "csrf_token": session.csrf,
                "expires": redtether_proto::time::format_unix(session.created + self.auth.session.max),
            }),
        );
        r.headers_mut().insert(header::SET_COOKIE, self.session_cookie(&id));
        r
    }

    pub(super) fn logout(&self, caller: &Caller) -> Response<Full<Bytes>> {
        if let Credential::Session { id, .. } = &caller.credential {
            if let Err(e) = self.store.end_session(id) {
                return store_error(&e);
            }
            if let Err(r) =
                self.audit(HubEventKind::OperatorLogout, Actor::user(&caller.operator.name), "hub", json!({}))
            {
                return *r;
            }
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        if let Ok(v) =
            HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"))
        {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }

    pub(super) fn me(&self, caller: &Caller) -> Response<Full<Bytes>> {
        let mut v = match self.store.operator(&caller.operator.name) {
            Ok(Some(record)) => record.public_json(),
            Ok(None) => return refused(StatusCode::UNAUTHORIZED, "unauthorized"),
            Err(e) => return store_error(&e),
        };
        // The role this request acts with (a token's scope may cap it).
        v["acting_role"] = json!(caller.operator.role);
        match &caller.credential {
            Credential::Token { name } => v["token"] = json!(name),
            Credential::Session { record, .. } => {
                v["csrf_token"] = json!(record.csrf);
                v["session"] = json!({
                    "method": record.method,
                    "created": redtether_proto::time::format_unix(record.created),
                });
            }
        }
        json_response(StatusCode::OK, v)
    }

    pub(super) async fn setup(&self, body: RequestBody, peer: IpAddr) -> Response<Full<Bytes>> {
        let body: SetupBody = match read_json(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match self.set_password(&body.code, &body.password, peer) {
            Ok(Offer { operator, totp: None }) => {
                json_response(StatusCode::OK, json!({ "operator": operator, "done": true }))
            }
            Ok(Offer { operator, totp: Some((secret, uri)) }) => json_response(
                StatusCode::OK,
                json!({
                    "operator": operator,
                    "done": false,
                    "totp_secret": secret,
                    "qr_svg": totp::qr_svg(&uri),
                    "otpauth_uri": uri,
                    "confirm": "/api/setup/confirm",
                }),
            ),
            Err(refusal) => refusal.json(),
        }
    }

    pub(super) async fn setup_confirm(&self, body: RequestBody, peer: IpAddr) -> Response<Full<Bytes>> {
        let body: ConfirmBody = match read_json(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match self.confirm_totp(&body.code, &body.totp, peer) {
            Ok((operator, codes)) => {
                json_response(StatusCode::OK, json!({ "operator": operator, "recovery_codes": codes }))
            }
            Err(refusal) => refusal.json(),
        }
    }

    /// Tokens are made and revoked by a person (a session) or an `admin` token.
    fn may_manage_tokens(caller: &Caller) -> bool {
        match &caller.credential {
            Credential::Session { .. } => true,
            Credential::Token { .. } => caller.operator.role == crate::identity::OperatorRole::Owner,
        }
    }

    pub(super) fn list_api_tokens(&self, caller: &Caller) -> Response<Full<Bytes>> {
        let now = redtether_proto::time::unix_now();
        match self.store.api_tokens(&caller.operator.name) {
            Ok(tokens) => json_response(
                StatusCode::OK,
                json!(
                    tokens
                        .iter()
                        .map(|t| json!({
                            "name": t.name,
                            "scope": t.scope,
                            "created": redtether_proto::time::format_unix(t.created),
                            "expires": redtether_proto::time::format_unix(t.expires),
                            "expired": now >= t.expires,
                        }))
                        .collect::<Vec<_>>()
                ),
            ),
            Err(e) => store_error(&e),
        }
    }

    pub(super) async fn create_api_token(&self, caller: &Caller, body: RequestBody) -> Response<Full<Bytes>> {
        if !Self::may_manage_tokens(caller) {
            return refused(StatusCode::FORBIDDEN, "forbidden");
        }
        let body: TokenBody = match read_json(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let invalid = |field: &str, message: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_token", "field": field, "message": message }),
            )
        };
        if !redtether_proto::names::valid_name(&body.name) {
            return invalid("name", "1-64 of A-Z a-z 0-9 . _ @ -");
        }
        let Some(scope) = TokenScope::parse(&body.scope) else {
            return invalid("scope", "one of read, operate, admin");
        };
        let Some(lifetime) = lifetime(&body.expires_in) else {
            return invalid("expires_in", "seconds or a duration such as \"30d\", at most 366 days");
        };
        let name = &caller.operator.name;
        let now = redtether_proto::time::unix_now();
        let expires = now + lifetime.as_secs();
        let token = match self.store.add_api_token(name, &body.name, scope, now, expires) {
            Ok(t) => t,
            Err(crate::store::StoreError::Conflict(_)) => return refused(StatusCode::CONFLICT, "token_exists"),
            Err(e) => return store_error(&e),
        };
        let detail = json!({ "name": body.name, "scope": scope, "expires": expires });
        if let Err(r) = self.audit(HubEventKind::TokenCreated, Actor::user(name), &format!("operator:{name}"), detail) {
            return *r;
        }
        json_response(
            StatusCode::CREATED,
            json!({ "token": token, "name": body.name, "scope": scope, "expires": redtether_proto::time::format_unix(expires) }),
        )
    }

    pub(super) fn revoke_api_token(&self, caller: &Caller, token_name: &str) -> Response<Full<Bytes>> {
        if !Self::may_manage_tokens(caller) {
            return refused(StatusCode::FORBIDDEN, "forbidden");
        }
        let name = &caller.operator.name;
        match self.store.revoke_api_token(name, token_name) {
            Ok(true) => {}
            Ok(false) => return refused(StatusCode::NOT_FOUND, "no_such_token"),
            Err(e) => return store_error(&e),
        }
        let target = format!("operator:{name}");
        if let Err(r) =
            self.audit(HubEventKind::TokenRevoked, Actor::user(name), &target, json!({ "name": token_name }))
        {
            return *r;
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_are_bounded_and_required() {
        assert_eq!(lifetime(&json!(60)), Some(Duration::from_secs(60)));
        assert_eq!(lifetime(&json!("30d")), Some(Duration::from_secs(30 * 86400)));
        assert_eq!(lifetime(&json!(0)), None);
        assert_eq!(lifetime(&json!("400d")), None);
        assert_eq!(lifetime(&json!("forever")), None);
        assert_eq!(lifetime(&json!(null)), None);
    }

    #[test]
    fn pending_logins_expire_and_end_once() {
        let p = PendingLogins::default();
        let t = p.start("ann", 1000);
        assert_eq!(p.name(&t, 1000 + PENDING_SECS - 1).as_deref(), Some("ann"));
        assert_eq!(p.name(&t, 1000 + PENDING_SECS), None);
        p.finish(&t);
        assert_eq!(p.name(&t, 1001), None);
        assert_eq!(p.name("rtlogin_guess", 1001), None);
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!csrf_matches(&h, "abc"));
        h.insert("x-csrf-token", HeaderValue::from_static("abd"));
        assert!(!csrf_matches(&h, "abc"));
        h.insert("x-csrf-token", HeaderValue::from_static("abc"));
        assert!(csrf_matches(&h, "abc"));
    }
}
