//! What a person does to their own local account, logged in (a session, not an API token: a
//! leaked token must not be able to take the account over):
//!
//! - `POST /api/me/password` `{current, new}` — a new password; every session of the account
//!   ends, this one too (they log in again with it)
//! - `POST /api/me/totp` `{password}` — a new authenticator: offers a secret (and its
//!   `otpauth://` URI), which replaces the old one only when confirmed
//! - `POST /api/me/totp/confirm` `{totp}` — confirms it with a code; answers new recovery codes
//! - `POST /api/me/recovery-codes` `{password}` — ten new recovery codes; the old ones end
//!
//! The current password is asked again for each (someone at an unlocked screen has the
//! session, not the password), and a wrong one counts as a failed login.

use crate::accounts_api::read_json;
use crate::api::{Api, RequestBody, error, json_response, store_error};
use crate::caller::{Caller, Credential};
use crate::identity::secrets::{self, digest};
use crate::identity::totp;
use crate::store::AccountSource;
use crate::store::prelude::*;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use redtether_proto::audit::{Actor, HubEventKind};
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    current: String,
    new: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Password {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    totp: String,
}

impl Api {
    /// The routes under `/api/me/` but `GET /api/me` itself.
    pub(crate) async fn self_service(
        &self,
        caller: &Caller,
        method: &Method,
        what: &[&str],
        body: RequestBody,
        peer: IpAddr,
    ) -> Response<Full<Bytes>> {
        if !matches!(caller.credential, Credential::Session { .. }) {
            return error(StatusCode::FORBIDDEN, "session_required");
        }
        if caller.operator.source != AccountSource::Local {
            return error(StatusCode::CONFLICT, "single_sign_on_account");
        }
        match (method, what) {
            (&Method::POST, ["password"]) => match read_json::<NewPassword>(body).await {
                Ok(b) => self.change_password(caller, &b.current, &b.new, peer),
                Err(r) => r,
            },
            (&Method::POST, ["totp"]) => match read_json::<Password>(body).await {
                Ok(b) => self.offer_totp(caller, &b.password, peer),
                Err(r) => r,
            },
            (&Method::POST, ["totp", "confirm"]) => match read_json::<Code>(body).await {
                Ok(b) => self.confirm_new_totp(caller, &b.totp),
                Err(r) => r,
            },
            (&Method::POST, ["recovery-codes"]) => match read_json::<Password>(body).await {
                Ok(b) => self.renew_recovery_codes(caller, &b.password, peer),
                Err(r) => r,
            },
            (_, ["password"] | ["totp"] | ["totp", "confirm"] | ["recovery-codes"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    /// Whether `password` is the caller's (a wrong one is a failed login, and may be limited).
    fn password_again(&self, caller: &Caller, password: &str, peer: IpAddr) -> Result<(), Box<Response<Full<Bytes>>>> {
        let name = &caller.operator.name;
        if let Some(retry) = self.login_limits(name, peer) {
            return Err(Box::new(crate::api::rate_limited(retry)));
        }
        let stored = self.store.operator(name).ok().flatten().and_then(|r| r.password_hash);
        if secrets::verify_password(password, stored.as_deref()) {
            Ok(())
        } else {
            self.login_failed(name, peer, "wrong_password");
            Err(Box::new(error(StatusCode::FORBIDDEN, "wrong_password")))
        }
    }

    fn record_self(
        &self,
        caller: &Caller,
        kind: HubEventKind,
        detail: serde_json::Value,
    ) -> Result<(), Box<Response<Full<Bytes>>>> {
        let target = format!("operator:{}", caller.operator.name);
        self.store
            .record(kind, Actor::user(&caller.operator.name), &target, detail)
            .map(drop)
            .map_err(|e| Box::new(store_error(&e)))
    }

    fn change_password(&self, caller: &Caller, current: &str, new: &str, peer: IpAddr) -> Response<Full<Bytes>> {
        if let Err(r) = self.password_again(caller, current, peer) {
            return *r;
        }
        let hash = match secrets::hash_password(new) {
            Ok(h) => h,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "weak_password", "message": e.to_string() }),
                );
            }
        };
        let name = &caller.operator.name;
        if let Err(e) = self.store.update_operator(name, |r| r.password_hash = Some(hash.clone())) {
            return store_error(&e);
        }
        let ended = match self.store.end_sessions(name) {
            Ok(n) => n,
            Err(e) => return store_error(&e),
        };
        if let Err(r) = self.record_self(
            caller,
            HubEventKind::OperatorPasswordSet,
            json!({ "changed": true, "sessions_ended": ended }),
        ) {
            return *r;
        }
        json_response(StatusCode::OK, json!({ "sessions_ended": ended }))
    }

    fn offer_totp(&self, caller: &Caller, password: &str, peer: IpAddr) -> Response<Full<Bytes>> {
        if let Err(r) = self.password_again(caller, password, peer) {
            return *r;
        }
        let secret = totp::new_secret();
        let name = &caller.operator.name;
        if let Err(e) = self.store.update_operator(name, |r| r.totp_pending = Some(secret.clone())) {
            return store_error(&e);
        }
        let uri = totp::uri(&secret, name).unwrap_or_default();
        json_response(StatusCode::OK, json!({ "totp_secret": secret, "otpauth_uri": uri }))
    }

    fn confirm_new_totp(&self, caller: &Caller, code: &str) -> Response<Full<Bytes>> {
        let name = &caller.operator.name;
        let Some(secret) = self.store.operator(name).ok().flatten().and_then(|r| r.totp_pending) else {
            return error(StatusCode::CONFLICT, "no_totp_offered");
        };
        let Ok(step) = totp::check(&secret, code, redtether_proto::time::unix_now(), 0) else {
            return error(StatusCode::FORBIDDEN, "wrong_totp");
        };
        let codes = secrets::recovery_codes();
        let digests: Vec<String> = codes.iter().map(|c| digest(c)).collect();
        let changed = self.store.update_operator(name, |r| {
            r.totp_secret = Some(secret.clone());
            r.totp_pending = None;
            r.totp_last_step = step;
            r.recovery_sha256 = digests.clone();
        });
        if let Err(e) = changed {
            return store_error(&e);
        }
        if let Err(r) = self.record_self(caller, HubEventKind::Operator2faEnrolled, json!({ "replaced": true })) {
            return *r;
        }
        json_response(StatusCode::OK, json!({ "recovery_codes": codes }))
    }

    fn renew_recovery_codes(&self, caller: &Caller, password: &str, peer: IpAddr) -> Response<Full<Bytes>> {
        if let Err(r) = self.password_again(caller, password, peer) {
            return *r;
        }
        let codes = secrets::recovery_codes();
        let digests: Vec<String> = codes.iter().map(|c| digest(c)).collect();
        if let Err(e) = self.store.update_operator(&caller.operator.name, |r| r.recovery_sha256 = digests.clone()) {
            return store_error(&e);
        }
        if let Err(r) =
            self.record_self(caller, HubEventKind::OperatorRecoveryCodesRenewed, json!({ "count": codes.len() }))
        {
            return *r;
        }
        json_response(StatusCode::OK, json!({ "recovery_codes": codes }))
    }
}
