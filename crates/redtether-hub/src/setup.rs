//! Setting an account up with its one-time setup code: first the password (and, with
//! `[auth] require_2fa`, a TOTP secret offered), then a code of that secret confirms the
//! enrollment, makes the ten recovery codes and uses the setup code up. Shared by the JSON
//! routes (`accounts_api`) and the browser's pages (`setup_page`).
//!
//! A wrong setup code counts against the source address like a wrong token; a code that
//! expired or was used is simply unknown.

use crate::api::{Api, json_response, rate_limited, store_error};
use crate::identity::secrets::{self, digest};
use crate::identity::totp;
use crate::store::prelude::*;
use crate::store::{OperatorRecord, StoreError};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use redtether_proto::audit::{Actor, HubEventKind};
use serde_json::json;
use std::net::IpAddr;
use std::time::Duration;

/// What setting the password led to.
pub struct Offer {
    pub operator: String,
    /// The TOTP secret to enroll and its `otpauth://` URI, when a second factor is required.
    pub totp: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupRefusal {
    #[error("too many failures from this address")]
    Limited(Duration),
    #[error("the setup code is not valid (wrong, used or expired)")]
    InvalidCode,
    #[error("{0}")]
    WeakPassword(secrets::PasswordError),
    #[error("set a password first")]
    PasswordFirst,
    #[error("the code from the authenticator app is not right")]
    WrongTotp,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SetupRefusal {
    pub fn json(&self) -> Response<Full<Bytes>> {
        let (status, code) = match self {
            SetupRefusal::Limited(retry) => return rate_limited(*retry),
            SetupRefusal::Store(e) => return store_error(e),
            SetupRefusal::InvalidCode => (StatusCode::UNAUTHORIZED, "invalid_setup_code"),
            SetupRefusal::WeakPassword(_) => (StatusCode::BAD_REQUEST, "weak_password"),
            SetupRefusal::PasswordFirst => (StatusCode::CONFLICT, "set_password_first"),
            SetupRefusal::WrongTotp => (StatusCode::UNAUTHORIZED, "wrong_totp"),
        };
        json_response(status, json!({ "error": code, "message": self.to_string() }))
    }
}

impl Api {
    /// The account whose setup code this is; a wrong one counts against the address.
    fn setup_account(&self, code: &str, peer: IpAddr) -> Result<OperatorRecord, SetupRefusal> {
        if let Some(crate::caller::Checked::Limited(retry)) = self.limited(peer) {
            return Err(SetupRefusal::Limited(retry));
        }
        match self.store.operator_by_setup_code(code, redtether_proto::time::unix_now())? {
            Some(record) => Ok(record),
            None => {
                self.failed_auth.charge(peer, std::time::Instant::now());
                Err(SetupRefusal::InvalidCode)
            }
        }
    }

    fn record_setup(&self, kind: HubEventKind, operator: &str, detail: serde_json::Value) -> Result<(), SetupRefusal> {
        self.store.record(kind, Actor::user(operator), "hub", detail)?;
        Ok(())
    }

    pub(crate) fn set_password(&self, code: &str, password: &str, peer: IpAddr) -> Result<Offer, SetupRefusal> {
        let account = self.setup_account(code, peer)?;
        let hash = secrets::hash_password(password).map_err(SetupRefusal::WeakPassword)?;
        let require_2fa = self.auth.require_2fa;
        let pending = require_2fa.then(totp::new_secret);
        self.store.update_operator(&account.name, |r| {
            r.password_hash = Some(hash.clone());
            r.totp_pending = pending.clone();
            if !require_2fa {
                // Without a second factor to enroll, the password ends the setup.
                r.setup = None;
            }
        })?;
        self.record_setup(HubEventKind::OperatorPasswordSet, &account.name, json!({ "second_factor": require_2fa }))?;
        let totp = pending.map(|secret| {
            let uri = totp::uri(&secret, &account.name).unwrap_or_default();
            (secret, uri)
        });
        Ok(Offer { operator: account.name, totp })
    }

    /// Enrolls the offered secret with a code of it; returns the recovery codes (shown once).
    pub(crate) fn confirm_totp(
        &self,
        code: &str,
        totp_code: &str,
        peer: IpAddr,
    ) -> Result<(String, Vec<String>), SetupRefusal> {
        let account = self.setup_account(code, peer)?;
        let (Some(secret), Some(_)) = (account.totp_pending.clone(), account.password_hash.as_ref()) else {
            return Err(SetupRefusal::PasswordFirst);
        };
        let Ok(step) = totp::check(&secret, totp_code, redtether_proto::time::unix_now(), 0) else {
            self.failed_auth.charge(peer, std::time::Instant::now());
            return Err(SetupRefusal::WrongTotp);
        };
        let codes = secrets::recovery_codes();
        let digests: Vec<String> = codes.iter().map(|c| digest(c)).collect();
        self.store.update_operator(&account.name, |r| {
            r.totp_secret = Some(secret.clone());
            r.totp_pending = None;
            r.totp_last_step = step;
            r.recovery_sha256 = digests.clone();
            r.setup = None;
        })?;
        self.record_setup(HubEventKind::Operator2faEnrolled, &account.name, json!({}))?;
        Ok((account.name, codes))
    }
}
