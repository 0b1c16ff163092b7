//! Logins through single sign-on, on top of `sso`: the OpenID Connect browser flow
//! (`GET /auth/oidc/login?next=…` → the provider → `GET /auth/oidc/callback`) and LDAP
//! passwords (through `POST /api/login` and the login form, for names that are not a local
//! account). The role comes from the provider's groups at every login (`role_map`,
//! `group_map`); a person whose groups map to no role is refused. The account is made on the
//! first login (source `oidc` or `ldap`, keyed by the provider's subject) and its role updated
//! at each one; a name that belongs to a local account or another subject is refused. Second
//! factors are the provider's business here.

use crate::accounts_api::LoginOutcome;
use crate::api::{Api, ApiBody, boxed, error};
use crate::caller::cookie;
use crate::identity::OperatorRole;
use crate::identity::secrets::{digest, random_secret};
use crate::login::{esc, page, safe_next};
use crate::sso::ldap::LdapError;
use crate::sso::oidc::{OidcLogin, PENDING_MAX_AGE, PendingLogin};
use crate::sso::{Identity, IdentitySource, map_role};
use crate::store::prelude::*;
use crate::store::{AccountSource, OperatorRecord};
use http::{HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use redtether_proto::audit::{Actor, HubEventKind};
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Binds a browser to the login it started at the provider.
const OIDC_COOKIE: &str = "redtether_oidc";
/// Logins waiting for the provider at once (older ones are dropped).
const MAX_PENDING: usize = 1024;

/// Single sign-on as configured, and the OpenID logins waiting for the provider's answer
/// (binding cookie digest → the login and where to go after it).
#[derive(Default)]
pub struct Sso {
    pub oidc: Option<OidcLogin>,
    pending: Mutex<HashMap<String, (PendingLogin, String)>>,
}

impl Sso {
    pub fn new(oidc: Option<OidcLogin>) -> Sso {
        Sso { oidc, pending: Mutex::default() }
    }
}

/// Why an identity from a provider gets no account here; the reason goes to the audit trail.
fn account_refusal(
    existing: Option<&OperatorRecord>,
    identity: &Identity,
    source: AccountSource,
) -> Option<&'static str> {
    if !redtether_proto::names::valid_name(&identity.name) {
        return Some("name_not_allowed");
    }
    match existing {
        None => None,
        Some(r) if r.source != source => Some("name_taken"),
        Some(r) if r.subject.as_deref() != Some(identity.subject.as_str()) => Some("name_taken"),
        Some(_) => None,
    }
}

impl Api {
    /// The account for a provider's identity, made or updated with the role its groups give.
    fn sso_account(&self, identity: &Identity, peer: IpAddr) -> Result<OperatorRecord, LoginOutcome> {
        let (source, map) = match identity.source {
            IdentitySource::Oidc => (AccountSource::Oidc, self.auth.oidc.as_ref().map(|o| &o.role_map)),
            IdentitySource::Ldap => (AccountSource::Ldap, self.auth.ldap.as_ref().map(|l| &l.group_map)),
        };
        let role = map.and_then(|m| map_role(&identity.groups, m)).and_then(|r| OperatorRole::parse(&r));
        let Some(role) = role else {
            self.login_failed(&identity.name, peer, "no_role");
            return Err(LoginOutcome::Refused("no_role"));
        };
        let existing = self.store.operator(&identity.name).ok().flatten();
        if let Some(reason) = account_refusal(existing.as_ref(), identity, source) {
            self.login_failed(&identity.name, peer, reason);
            return Err(LoginOutcome::Refused(reason));
        }
        let stored = match existing {
            None => {
                let mut record = OperatorRecord::new(
                    &identity.name,
                    role,
                    identity.email.clone(),
                    source,
                    redtether_proto::time::unix_now(),
                );
                record.subject = Some(identity.subject.clone());
                let made = self
                    .store
                    .add_operator(record, 0)
                    .and_then(|_| self.store.update_operator(&identity.name, |r| r.setup = None).map(|_| ()));
                let detail = json!({ "role": role, "email": identity.email, "with_token": false, "via": identity.source.as_str() });
                made.and_then(|()| {
                    self.store.record(
                        HubEventKind::OperatorAdded,
                        Actor::System,
                        &format!("operator:{}", identity.name),
                        detail,
                    )
                })
                .map(|_| ())
            }
            Some(old) if old.role != role => {
                let changed = self.store.update_operator(&identity.name, |r| r.role = role);
                let detail = json!({ "from": old.role, "to": role, "via": identity.source.as_str() });
                changed
                    .and_then(|_| {
                        self.store.record(
                            HubEventKind::OperatorRoleChanged,
                            Actor::System,
                            &format!("operator:{}", identity.name),
                            detail,
                        )
                    })
                    .map(|_| ())
            }
            Some(_) => Ok(()),
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot keep a single sign-on account");
            return Err(LoginOutcome::Refused("store_error"));
        }
        self.store.operator(&identity.name).ok().flatten().ok_or(LoginOutcome::Refused("store_error"))
    }

    /// A password login for a name that is not a local account, checked by the directory.
    pub(crate) async fn ldap_login(
        &self,
        name: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<OperatorRecord, LoginOutcome> {
        let Some(settings) = &self.auth.ldap else { return Err(LoginOutcome::Refused("unknown_operator")) };
        match crate::sso::ldap::authenticate(settings, name, password).await {
            Ok(identity) => self.sso_account(&identity, peer),
            Err(LdapError::WrongCredentials | LdapError::EmptyPassword | LdapError::InvalidUserName) => {
                self.login_failed(name, peer, "wrong_password");
                Err(LoginOutcome::Refused("wrong_password"))
            }
            Err(e) => {
                // Not the person's fault: nothing is charged, the operator is told why in the log.
                tracing::error!(error = %redtether_host::error_chain(&e), "LDAP login failed");
                let detail = json!({ "name": name, "reason": "directory_unavailable", "addr": peer.to_string() });
                let _ = self.store.record(HubEventKind::OperatorLoginFailed, Actor::anonymous(peer), "hub", detail);
                Err(LoginOutcome::Refused("directory_unavailable"))
            }
        }
    }

    /// Whether a name should go to the directory: LDAP is on and it is not a local account.
    pub(crate) fn is_directory_name(&self, name: &str) -> bool {
        self.auth.ldap.is_some()
            && !matches!(self.store.operator(name), Ok(Some(r)) if r.source == AccountSource::Local)
    }

    /// `GET /auth/oidc/login?next=…`: off to the provider, with a cookie that ties the answer to
    /// this browser.
    pub(super) async fn oidc_begin(&self, req: Request<Incoming>) -> http::Response<ApiBody> {
        let Some(oidc) = &self.sso.oidc else { return boxed(error(StatusCode::NOT_FOUND, "not_found")) };
        let next = req
            .uri()
            .query()
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v.into_owned()))
            .unwrap_or_default();
        let (url, pending) = match oidc.begin().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %redtether_host::error_chain(&e), "single sign-on: the provider is unreachable");
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<p>The sign-on provider cannot be reached. Try again later.</p>",
                    None,
                );
            }
        };
        let binding = random_secret("");
        {
            let mut map = self.sso.pending.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, (p, _)| p.created.elapsed().is_ok_and(|age| age < PENDING_MAX_AGE));
            if map.len() >= MAX_PENDING {
                map.clear();
            }
            map.insert(digest(&binding), (pending, safe_next(&next).to_string()));
        }
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        // Lax, not Strict: the provider's redirect back is a navigation another site started.
        let cookie = format!("{OIDC_COOKIE}={binding}; Path=/auth/oidc; Max-Age=600; HttpOnly; SameSite=Lax{secure}");
        let mut r = boxed(error(StatusCode::SEE_OTHER, "to_provider"));
        if let (Ok(c), Ok(l)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(&url)) {
            r.headers_mut().insert(header::SET_COOKIE, c);
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }

    /// `GET /auth/oidc/callback?code=…&state=…`: the provider's answer.
    pub(super) async fn oidc_callback(&self, req: Request<Incoming>, peer: IpAddr) -> http::Response<ApiBody> {
        let Some(oidc) = &self.sso.oidc else { return boxed(error(StatusCode::NOT_FOUND, "not_found")) };
        let failed = || page(StatusCode::UNAUTHORIZED, "<p>Login failed. <a href=\"/login\">Try again</a>.</p>", None);
        if let Some(crate::caller::Checked::Limited(retry)) = self.limited(peer) {
            return boxed(crate::api::rate_limited(retry));
        }
        let query: HashMap<String, String> =
            req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let waiting = cookie(req.headers(), OIDC_COOKIE)
            .and_then(|b| self.sso.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&digest(b)));
        let (Some((pending, next)), Some(code), Some(state)) = (waiting, query.get("code"), query.get("state")) else {
            self.login_failed("", peer, "no_login_started");
            return failed();
        };
        let identity = match oidc.finish(&pending, code, state).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(error = %redtether_host::error_chain(&e), "single sign-on refused");
                self.login_failed("", peer, "provider_refused");
                return failed();
            }
        };
        let operator = match self.sso_account(&identity, peer) {
            Ok(operator) => operator,
            Err(_) => return failed(),
        };
        let (id, _) = match self.start_session(&operator, "oidc", "provider", peer) {
            Ok(s) => s,
            Err(r) => return boxed(*r),
        };
        // A page that moves on, not a redirect: after a chain another site started, a browser
        // would not send the SameSite=Strict session cookie with the next request.
        let body =
            format!("<p>Logged in as {}. <a href=\"{next}\">Continue</a>.</p>", esc(&operator.name), next = esc(&next));
        let mut r = page(StatusCode::OK, &body, Some(self.session_cookie(&id)));
        if let Ok(refresh) = HeaderValue::from_str(&format!("0;url={next}")) {
            r.headers_mut().insert("refresh", refresh);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, subject: &str) -> Identity {
        Identity {
            name: name.into(),
            subject: subject.into(),
            groups: vec![],
            email: None,
            source: IdentitySource::Oidc,
        }
    }

    #[test]
    fn a_provider_identity_never_takes_over_another_account() {
        let mut local = OperatorRecord::new("ann", OperatorRole::Owner, None, AccountSource::Local, 1);
        assert_eq!(account_refusal(Some(&local), &identity("ann", "sub-1"), AccountSource::Oidc), Some("name_taken"));
        local.source = AccountSource::Oidc;
        local.subject = Some("sub-1".into());
        assert_eq!(account_refusal(Some(&local), &identity("ann", "sub-1"), AccountSource::Oidc), None);
        assert_eq!(account_refusal(Some(&local), &identity("ann", "sub-2"), AccountSource::Oidc), Some("name_taken"));
        assert_eq!(account_refusal(Some(&local), &identity("ann", "sub-1"), AccountSource::Ldap), Some("name_taken"));
        assert_eq!(account_refusal(None, &identity("new", "sub-9"), AccountSource::Oidc), None);
        assert_eq!(account_refusal(None, &identity("a b", "sub-9"), AccountSource::Oidc), Some("name_not_allowed"));
    }
}
