//! Logging in against an LDAP directory: [`authenticate`] checks a user name and password with
//! a simple bind as the user, over TLS (ldaps:// or StartTLS) unless the directory is on
//! loopback, and reads the user's name, email and groups.
//!
//! - The user's DN comes from the `bind_dn` template (the name escaped as RFC 4514 says), or
//!   from a search as the service account (the name escaped as RFC 4515 says, exactly one
//!   entry must match).
//! - An empty password is refused before the server is contacted: a simple bind with a DN and
//!   no password is an unauthenticated bind, which many servers (Active Directory among them)
//!   answer with success.
//! - Groups are the user entry's `memberOf`, or the groups under `group_base` whose `member` or
//!   `uniqueMember` is the user's DN; read as the service account when there is one (it is
//!   meant to read the directory), else as the user.
//! - Every operation has the configured timeout, and the whole login four times that.

use crate::sso::config::{GroupLookup, LdapBind, LdapSettings, LdapTransport};
use crate::sso::dn::normalize_dn;
use crate::sso::tls::TlsError;
use crate::sso::{Identity, IdentitySource};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::time::Duration;

/// The longest user name passed to the directory.
const MAX_USER_NAME: usize = 256;
/// LDAP result codes (RFC 4511 appendix A) the hub tells apart.
const INVALID_CREDENTIALS: u32 = 49;

/// Why an LDAP login did not give an identity.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The password was empty; refused without asking the directory (see the module's
    /// documentation).
    #[error("an empty password is refused")]
    EmptyPassword,
    /// The user name was empty, longer than 256 bytes, or had control characters; refused
    /// without asking the directory.
    #[error("not a user name")]
    InvalidUserName,
    /// No such user, or not their password: the directory does not say which, nor does the hub.
    #[error("wrong user name or password")]
    WrongCredentials,
    /// The search for the user matched several entries: the filter is too broad.
    #[error("the user search matched {count} entries; it must match one (search_filter)")]
    AmbiguousUser { count: usize },
    /// The directory could not be reached, or the connection broke.
    #[error("the LDAP server {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: ldap3::LdapError,
    },
    /// The login took longer than four operation timeouts.
    #[error("the LDAP server {url} did not finish the login within {} s", after.as_secs())]
    TimedOut { url: String, after: Duration },
    /// TLS with the directory failed: its certificate is not trusted (or not for its name), or
    /// it refused StartTLS.
    #[error("TLS with the LDAP server {url} failed: {source}")]
    TlsHandshake {
        url: String,
        #[source]
        source: ldap3::LdapError,
    },
    /// The TLS trust settings (`ca_file`) cannot be used.
    #[error("[auth.ldap]: {0}")]
    TrustSettings(#[from] TlsError),
    /// The directory refused what the settings make the hub do: the service account's bind, a
    /// search base that does not exist, a search it may not make.
    #[error("the LDAP server refused {what}: {result} (check [auth.ldap])")]
    Misconfigured { what: String, result: String },
}

/// Checks `user`'s `password` against the directory and returns who they are.
pub async fn authenticate(settings: &LdapSettings, user: &str, password: &str) -> Result<Identity, LdapError> {
    if password.is_empty() {
        return Err(LdapError::EmptyPassword);
    }
    if user.is_empty() || user.len() > MAX_USER_NAME || user.chars().any(char::is_control) {
        return Err(LdapError::InvalidUserName);
    }
    let tls = match settings.transport {
        LdapTransport::Plain => None,
        LdapTransport::StartTls | LdapTransport::Ldaps => Some(crate::sso::tls::client_config(&settings.trust)?),
    };
    let overall = settings.timeout * 4;
    match tokio::time::timeout(overall, login(settings, tls, user, password)).await {
        Ok(result) => result,
        Err(_) => Err(LdapError::TimedOut { url: settings.url.clone(), after: overall }),
    }
}

async fn login(
    settings: &LdapSettings,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    user: &str,
    password: &str,
) -> Result<Identity, LdapError> {
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(settings.transport == LdapTransport::StartTls);
    if let Some(config) = tls {
        conn_settings = conn_settings.set_config(config);
    }
    let (conn, ldap) =
        LdapConnAsync::with_settings(conn_settings, &settings.url).await.map_err(|e| connect_error(settings, e))?;
    // The connection is driven by a task of its own (ldap3's design; a malformed answer panics
    // there, not in the caller), which ends when `ldap` is dropped and is aborted if this
    // login is abandoned first (a timeout).
    let _driver = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "LDAP connection ended with an error");
        }
    }));
    let mut session = Session { ldap, settings };
    let result = session.login(user, password).await;
    let _ = session.ldap.with_timeout(settings.timeout).unbind().await;
    result
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Session<'a> {
    ldap: Ldap,
    settings: &'a LdapSettings,
}

impl Session<'_> {
    async fn login(&mut self, user: &str, password: &str) -> Result<Identity, LdapError> {
        let user_dn = match &self.settings.bind {
            LdapBind::Template { dn } => dn.replace("{user}", &ldap3::dn_escape(user)),
            LdapBind::Search { service_dn, service_password, base, filter } => {
                self.service_bind(service_dn, service_password.expose()).await?;
                let filter = filter.replace("{user}", &ldap3::ldap_escape(user));
                let found = self.search(base, Scope::Subtree, &filter, &["1.1"], "the user search").await?;
                match found.as_slice() {
                    [] => return Err(LdapError::WrongCredentials),
                    [entry] => entry.dn.clone(),
                    more => return Err(LdapError::AmbiguousUser { count: more.len() }),
                }
            }
        };
        // The password check.
        let bound = self.ldap.with_timeout(self.settings.timeout).simple_bind(&user_dn, password).await;
        let result = bound.map_err(|e| self.transport_error(e))?;
        match result.rc {
            0 => {}
            INVALID_CREDENTIALS => return Err(LdapError::WrongCredentials),
            _ => return Err(LdapError::Misconfigured { what: "the user's bind".into(), result: result.to_string() }),
        }
        // The rest is read as the service account when there is one.
        if let LdapBind::Search { service_dn, service_password, .. } = &self.settings.bind {
            self.service_bind(service_dn, service_password.expose()).await?;
        }
        let name_attribute = self.settings.name_attribute.as_str();
        let own = self
            .search(&user_dn, Scope::Base, "(objectClass=*)", &[name_attribute, "mail", "memberOf"], "the user's entry")
            .await?;
        let entry = own.into_iter().next().ok_or_else(|| LdapError::Misconfigured {
            what: "reading the user's own entry".into(),
            result: "no entry".into(),
        })?;
        let groups = match &self.settings.groups {
            GroupLookup::MemberOf => values(&entry, "memberOf").to_vec(),
            GroupLookup::Members { base } => {
                let dn = ldap3::ldap_escape(entry.dn.as_str());
                let filter = format!("(|(member={dn})(uniqueMember={dn}))");
                self.search(base, Scope::Subtree, &filter, &["1.1"], "the group search (group_base)")
                    .await?
                    .into_iter()
                    .map(|group| group.dn)
                    .collect()
            }
        };
        Ok(Identity {
            name: values(&entry, name_attribute).first().cloned().unwrap_or_else(|| user.to_string()),
            subject: normalize_dn(&entry.dn),
            groups: groups.iter().map(|g| normalize_dn(g)).collect(),
            email: values(&entry, "mail").first().cloned(),
            source: IdentitySource::Ldap,
        })
    }

    async fn service_bind(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
        let bound = self.ldap.with_timeout(self.settings.timeout).simple_bind(dn, password).await;
        let result = bound.map_err(|e| self.transport_error(e))?;
        if result.rc != 0 {
            return Err(LdapError::Misconfigured {
                what: "the service account's bind (service_dn, service_password)".into(),
                result: result.to_string(),
            });
        }
        Ok(())
    }

    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        what: &str,
    ) -> Result<Vec<SearchEntry>, LdapError> {
        let answer = self.ldap.with_timeout(self.settings.timeout).search(base, scope, filter, attrs.to_vec()).await;
        let answer = answer.map_err(|e| self.transport_error(e))?;
        if answer.1.rc != 0 {
            return Err(LdapError::Misconfigured { what: what.to_string(), result: answer.1.to_string() });
        }
        Ok(answer.0.into_iter().map(SearchEntry::construct).collect())
    }

    /// An operation that got no LDAP answer at all.
    fn transport_error(&self, source: ldap3::LdapError) -> LdapError {
        LdapError::Unreachable { url: self.settings.url.clone(), source }
    }
}

/// An attribute's values; attribute names compare case-insensitively.
fn values<'e>(entry: &'e SearchEntry, name: &str) -> &'e [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

fn connect_error(settings: &LdapSettings, source: ldap3::LdapError) -> LdapError {
    let url = settings.url.clone();
    let tls = match &source {
        ldap3::LdapError::Rustls { .. } | ldap3::LdapError::DNSName { .. } => true,
        // The certificate check fails inside the handshake, which reports it as an I/O error.
        ldap3::LdapError::Io { source } => source.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
        // The only operation while connecting is StartTLS.
        ldap3::LdapError::LdapResult { .. } => true,
        _ => false,
    };
    if tls { LdapError::TlsHandshake { url, source } } else { LdapError::Unreachable { url, source } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sso::config::{Secret, TrustRoots};
    use std::collections::BTreeMap;

    /// Settings for a directory that does not exist (nothing listens on port 9 of loopback).
    fn nowhere() -> LdapSettings {
        LdapSettings {
            url: "ldap://127.0.0.1:9".into(),
            transport: LdapTransport::Plain,
            trust: TrustRoots::System,
            bind: LdapBind::Search {
                service_dn: "cn=hub,dc=test".into(),
                service_password: Secret::new("pw"),
                base: "dc=test".into(),
                filter: "(uid={user})".into(),
            },
            groups: GroupLookup::MemberOf,
            group_map: BTreeMap::new(),
            name_attribute: "uid".into(),
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn empty_passwords_and_bad_names_are_refused_before_any_connection() {
        // Were the server asked, the answer would be Unreachable.
        assert!(matches!(authenticate(&nowhere(), "alice", "").await, Err(LdapError::EmptyPassword)));
        assert!(matches!(authenticate(&nowhere(), "", "pw").await, Err(LdapError::InvalidUserName)));
        assert!(matches!(authenticate(&nowhere(), "al\nice", "pw").await, Err(LdapError::InvalidUserName)));
        assert!(matches!(authenticate(&nowhere(), &"a".repeat(257), "pw").await, Err(LdapError::InvalidUserName)));
        assert!(matches!(authenticate(&nowhere(), "alice", "pw").await, Err(LdapError::Unreachable { .. })));
    }
}
