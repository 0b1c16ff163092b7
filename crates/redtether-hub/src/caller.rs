//! Who is asking the operator API: an API token (`Authorization: Bearer rto_…`) or a login
//! session (the `redtether_session` cookie). Either way the answer is the operator as they are
//! *now* — a removed operator's token and session stop at once, a demoted operator's token acts
//! with the new role — with the role capped by the token's scope.
//!
//! Failed checks are counted per source address and refused before any lookup once the
//! address has failed too often (429 with `Retry-After`); the first refusal of a burst is
//! audited, the rest are not.

use crate::api::Api;
use crate::identity::role::effective;
use crate::identity::session::{self, SessionState};
use crate::store::{OperatorRecord, SessionRecord};
use http::{HeaderMap, header};
use redtether_host::ratelimit::Limited;
use redtether_proto::audit::{Actor, HubEventKind};
use serde_json::json;
use std::net::IpAddr;
use std::time::Duration;

/// The login session's cookie.
pub const SESSION_COOKIE: &str = "redtether_session";

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    Token { name: String },
    Session { id: String, record: SessionRecord },
}

/// An authenticated caller; `operator.role` is the role this request acts with.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub operator: OperatorRecord,
    pub credential: Credential,
    /// Where the request came from (failed checks made on its behalf count against it).
    pub peer: IpAddr,
}

impl Caller {
    /// The session's CSRF token, when the caller came with the cookie.
    pub fn csrf(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { record, .. } => Some(&record.csrf),
            Credential::Token { .. } => None,
        }
    }
}

/// What a presented credential comes to.
pub(crate) enum Checked {
    Operator(Box<Caller>),
    /// Unknown, expired, or its operator is gone (the failure is counted against the address).
    Refused,
    /// The address failed too often: not even looked up; try again after this.
    Limited(Duration),
}

/// The token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

impl Api {
    /// The caller of a request: its bearer token if it has one, else its session cookie;
    /// `None` when it has neither (nothing checked, nothing counted).
    pub(crate) fn authenticate(&self, headers: &HeaderMap, peer: IpAddr) -> Option<Checked> {
        if let Some(token) = bearer(headers) {
            return Some(self.limited(peer).unwrap_or_else(|| self.check_token(token, peer)));
        }
        let id = cookie(headers, SESSION_COOKIE)?;
        Some(self.limited(peer).unwrap_or_else(|| self.check_session(id, peer)))
    }

    /// `Some(Limited)` when `peer` failed too often (audited once per burst).
    pub(crate) fn limited(&self, peer: IpAddr) -> Option<Checked> {
        match self.failed_auth.check_burst(peer, std::time::Instant::now()) {
            Ok(()) => None,
            Err(Limited { retry, first }) => {
                if first {
                    self.audit_limited(json!({ "addr": peer.to_string(), "retry_after_secs": retry.as_secs().max(1) }));
                }
                Some(Checked::Limited(retry))
            }
        }
    }

    pub(crate) fn audit_limited(&self, detail: serde_json::Value) {
        if let Err(e) = self.store.record(HubEventKind::OperatorLoginLimited, Actor::System, "hub", detail) {
            tracing::error!(error = %e, "cannot record operator.login_limited");
        }
    }

    fn refuse(&self, peer: IpAddr) -> Checked {
        self.failed_auth.charge(peer, std::time::Instant::now());
        Checked::Refused
    }

    fn check_token(&self, token: &str, peer: IpAddr) -> Checked {
        let now = redtether_proto::time::unix_now();
        let Ok(Some(record)) = self.store.api_token(token) else { return self.refuse(peer) };
        // Expired from its expiry second on.
        if now >= record.expires {
            return self.refuse(peer);
        }
        let Ok(Some(mut operator)) = self.store.operator(&record.operator) else { return self.refuse(peer) };
        operator.role = effective(operator.role, Some(record.scope));
        Checked::Operator(Box::new(Caller { operator, credential: Credential::Token { name: record.name }, peer }))
    }

    fn check_session(&self, id: &str, peer: IpAddr) -> Checked {
        let now = redtether_proto::time::unix_now();
        let Ok(Some(record)) = self.store.session(id) else { return self.refuse(peer) };
        match session::state(self.auth.session, record.created, record.last_used, now) {
            SessionState::Valid { touch } => {
                if touch && let Err(e) = self.store.touch_session(id, now) {
                    tracing::warn!(error = %e, "cannot note a session's use");
                }
            }
            SessionState::Idle | SessionState::Expired => {
                let _ = self.store.end_session(id);
                // An expired session is not a guess: the address is not charged.
                return Checked::Refused;
            }
        }
        let Ok(Some(operator)) = self.store.operator(&record.operator) else { return self.refuse(peer) };
        Checked::Operator(Box::new(Caller {
            operator,
            credential: Credential::Session { id: id.to_string(), record },
            peer,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; redtether_session=rtsess_x; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("rtsess_x"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("redtether_session_other=y"));
        assert_eq!(cookie(&h, SESSION_COOKIE), None, "a cookie whose name only starts the same");
    }

    #[test]
    fn only_bearer_tokens_are_read_from_authorization() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer rto_x"));
        assert_eq!(bearer(&h), Some("rto_x"));
    }
}
