//! The single sign-on sections of `hub.toml`: raw TOML structs ([`RawOidc`], [`RawLdap`], unknown
//! keys refused) and their validation into settings with every default filled in
//! ([`validate_oidc`], [`validate_ldap`]). The hub's config module embeds the raw structs as
//! `auth.oidc` and `auth.ldap` and calls the validators with its `invalid(key, message)`, so
//! every error names the file and the dotted key, like the rest of the file's errors.
//!
//! ```toml
//! [auth.oidc]
//! issuer = "https://login.example.com/realms/plant"   # exactly as the provider's tokens say it
//! client_id = "redtether-hub"
//! client_secret = "…"
//! public_url = "https://hub.example.com"      # the hub as browsers reach it; the provider must
//!                                             # accept <public_url>/auth/oidc/callback
//! roles_claim = "groups"                      # default
//! scopes = ["profile", "email"]               # default; `openid` is always asked for
//! role_map = { "plant-admins" = "owner", "operators" = "member" }
//! password_login = true                       # default: token logins stay possible
//! ca_file = "/etc/redtether/idp-ca.pem"       # default: the system's CAs
//! timeout = "10s"                             # default, per request
//!
//! [auth.ldap]
//! url = "ldaps://ldap.example.com"            # or ldap:// with starttls = true
//! starttls = false                            # default
//! ca_file = "/etc/redtether/ldap-ca.pem"      # default: the system's CAs
//! bind_dn = "uid={user},ou=people,dc=example,dc=com"     # bind as the user directly, or:
//! service_dn = "cn=hub,ou=services,dc=example,dc=com"    # search for the user first
//! service_password = "…"
//! search_base = "ou=people,dc=example,dc=com"
//! search_filter = "(uid={user})"
//! group_base = "ou=groups,dc=example,dc=com"  # search (member=<user DN>) here; without it the
//!                                             # user's memberOf attribute is read
//! group_map = { "cn=plant-admins,ou=groups,dc=example,dc=com" = "owner" }
//! name_attribute = "uid"                      # default; `sAMAccountName` for Active Directory
//! timeout = "10s"                             # default, per operation
//! ```
//!
//! The redirect URL is derived from `public_url` and the fixed [`CALLBACK_PATH`] rather than
//! given whole: the hub's route cannot drift from what the provider was told, and a hub behind a
//! reverse proxy under a path prefix (`https://example.com/hub`) still works when the proxy
//! strips the prefix.

use crate::sso::ROLES;
use crate::sso::dn::normalize_dn;
use redtether_host::config_file::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::{Host, Url};

/// Where the provider sends the browser back to, under the hub's `public_url`.
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A password or client secret: never shown by `Debug`, so settings can be logged whole.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// `[auth.oidc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub public_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub roles_claim: Option<String>,
    pub role_map: Option<BTreeMap<String, String>>,
    pub password_login: Option<bool>,
    pub ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    pub timeout: Option<Duration>,
}

/// `[auth.ldap]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    pub url: Option<String>,
    pub starttls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub service_dn: Option<String>,
    pub service_password: Option<Secret>,
    pub search_base: Option<String>,
    pub search_filter: Option<String>,
    pub group_base: Option<String>,
    pub group_map: Option<BTreeMap<String, String>>,
    pub name_attribute: Option<String>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    pub timeout: Option<Duration>,
}

/// Whose certificates a provider's TLS certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The system's CA certificates.
    System,
    /// Only the CA certificates in this PEM file (absolute).
    CaFile(PathBuf),
}

/// Validated `[auth.oidc]`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer identifier, exactly as written (it is compared as a string with the `iss` of
    /// the discovery document and of every ID token; no slash is added or removed).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `<public_url>` + [`CALLBACK_PATH`].
    pub redirect_url: String,
    /// Asked for besides `openid`.
    pub scopes: Vec<String>,
    pub roles_claim: String,
    /// Claim value → role, roles from [`ROLES`].
    pub role_map: BTreeMap<String, String>,
    /// Whether operators may still log in with a hub token rather than through the provider.
    pub password_login: bool,
    pub trust: TrustRoots,
    /// For each request to the provider.
    pub timeout: Duration,
}

/// How the hub talks to the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapTransport {
    /// `ldap://` in clear: only to a loopback address.
    Plain,
    /// `ldap://` then StartTLS before anything else is sent.
    StartTls,
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
}

/// How a user's entry is found and their password checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapBind {
    /// Bind as `dn` with `{user}` replaced by the escaped user name (RFC 4514).
    Template { dn: String },
    /// Bind as the service account, search `base` (subtree) with `filter`, `{user}` replaced by
    /// the escaped user name (RFC 4515); exactly one entry must match; bind as it.
    Search { service_dn: String, service_password: Secret, base: String, filter: String },
}

/// Where the user's groups come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLookup {
    /// The user entry's `memberOf` attribute (Active Directory, OpenLDAP's memberof overlay).
    MemberOf,
    /// Groups under `base` with `member` or `uniqueMember` equal to the user's DN.
    Members { base: String },
}

/// Validated `[auth.ldap]`.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    pub transport: LdapTransport,
    pub trust: TrustRoots,
    pub bind: LdapBind,
    pub groups: GroupLookup,
    /// Group DN (normalised with [`normalize_dn`]) → role, roles from [`ROLES`].
    pub group_map: BTreeMap<String, String>,
    /// The attribute of the user's entry that names them (`uid`).
    pub name_attribute: String,
    /// For the connection and for each operation.
    pub timeout: Duration,
}

/// Validates `[auth.oidc]`; relative paths are relative to `base` (the file's folder).
pub fn validate_oidc(
    raw: RawOidc,
    base: &Path,
    invalid: impl Fn(&str, String) -> ConfigError,
) -> Result<OidcSettings, ConfigError> {
    let key = |name: &str| format!("auth.oidc.{name}");
    let required = |value: Option<String>, name: &str| match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(invalid(&key(name), "must not be empty".into())),
        None => Err(invalid(&key(name), "is required".into())),
    };
    let issuer = required(raw.issuer, "issuer")?;
    check_web_url(&issuer).map_err(|msg| invalid(&key("issuer"), msg))?;
    let client_id = required(raw.client_id, "client_id")?;
    let client_secret = Secret(required(raw.client_secret.map(|s| s.0), "client_secret")?);
    let public_url = required(raw.public_url, "public_url")?;
    check_web_url(&public_url).map_err(|msg| invalid(&key("public_url"), msg))?;
    let redirect_url = format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/'));
    let mut scopes = Vec::new();
    for scope in raw.scopes.unwrap_or_else(|| vec!["profile".into(), "email".into()]) {
        // Scope tokens: printable ASCII without spaces, quotes or backslashes (RFC 6749 3.3).
        let ok = !scope.is_empty() && scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            return Err(invalid(&key("scopes"), format!("{scope:?} is not a scope")));
        }
        if scope != "openid" && !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let roles_claim = raw.roles_claim.unwrap_or_else(|| "groups".into());
    if roles_claim.trim().is_empty() {
        return Err(invalid(&key("roles_claim"), "must not be empty".into()));
    }
    let role_map = roles(raw.role_map, &key("role_map"), |group| Ok(group.to_string()), &invalid)?;
    Ok(OidcSettings {
        issuer,
        client_id,
        client_secret,
        redirect_url,
        scopes,
        roles_claim,
        role_map,
        password_login: raw.password_login.unwrap_or(true),
        trust: trust(raw.ca_file, base, &key("ca_file"), &invalid)?,
        timeout: timeout(raw.timeout, &key("timeout"), &invalid)?,
    })
}

/// Validates `[auth.ldap]`; relative paths are relative to `base` (the file's folder).
pub fn validate_ldap(
    raw: RawLdap,
    base: &Path,
    invalid: impl Fn(&str, String) -> ConfigError,
) -> Result<LdapSettings, ConfigError> {
    let key = |name: &str| format!("auth.ldap.{name}");
    let text = raw.url.ok_or_else(|| invalid(&key("url"), "is required".into()))?;
    let url = Url::parse(&text).map_err(|e| invalid(&key("url"), format!("{text:?} is not a URL ({e})")))?;
    let host = url.host().ok_or_else(|| invalid(&key("url"), format!("{text:?} names no server")))?;
    if !url.path().trim_start_matches('/').is_empty() || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(&key("url"), format!("{text:?}: give only the scheme, server and port")));
    }
    let starttls = raw.starttls.unwrap_or(false);
    let transport = match (url.scheme(), starttls) {
        ("ldaps", false) => LdapTransport::Ldaps,
        ("ldaps", true) => {
            return Err(invalid(&key("starttls"), "ldaps:// is TLS already; StartTLS is for ldap://".into()));
        }
        ("ldap", true) => LdapTransport::StartTls,
        ("ldap", false) if is_loopback(&host) => LdapTransport::Plain,
        ("ldap", false) => {
            // A simple bind carries the password as it was typed.
            return Err(invalid(
                &key("url"),
                format!("{text:?} would carry passwords in clear text: use ldaps://, or set starttls = true"),
            ));
        }
        (other, _) => return Err(invalid(&key("url"), format!("{other}:// is not ldap:// or ldaps://"))),
    };
    if transport == LdapTransport::Plain && raw.ca_file.is_some() {
        return Err(invalid(&key("ca_file"), "is for TLS: use ldaps://, or set starttls = true".into()));
    }
    let service = [&raw.service_dn, &raw.search_base, &raw.search_filter].iter().any(|v| v.is_some())
        || raw.service_password.is_some();
    let bind = match (raw.bind_dn, service) {
        (Some(_), true) => {
            return Err(invalid(
                &key("bind_dn"),
                "give either bind_dn, or service_dn, service_password, search_base and search_filter, not both".into(),
            ));
        }
        (Some(template), false) => {
            let filled = template.replace("{user}", "x");
            if !template.contains("{user}") || !looks_like_dn(&filled) {
                return Err(invalid(
                    &key("bind_dn"),
                    format!(
                        "{template:?} is not a DN with {{user}} in it, like \"uid={{user}},ou=people,dc=example,dc=com\""
                    ),
                ));
            }
            LdapBind::Template { dn: template }
        }
        (None, true) => {
            let dn = |value: Option<String>, name: &str| match value {
                Some(v) if looks_like_dn(&v) => Ok(v),
                Some(v) => Err(invalid(&key(name), format!("{v:?} is not a DN"))),
                None => Err(invalid(&key(name), "is required with service_dn".into())),
            };
            let service_dn = dn(raw.service_dn, "service_dn")?;
            let service_password = match raw.service_password {
                Some(p) if !p.0.is_empty() => p,
                // An empty password would make the service bind an anonymous one.
                Some(_) => return Err(invalid(&key("service_password"), "must not be empty".into())),
                None => return Err(invalid(&key("service_password"), "is required with service_dn".into())),
            };
            let base = dn(raw.search_base, "search_base")?;
            let filter = raw.search_filter.ok_or_else(|| invalid(&key("search_filter"), "is required".into()))?;
            check_filter(&filter).map_err(|msg| invalid(&key("search_filter"), msg))?;
            LdapBind::Search { service_dn, service_password, base, filter }
        }
        (None, false) => {
            return Err(invalid(
                &key("bind_dn"),
                "is required, unless the user is searched for with service_dn, service_password, search_base and \
                 search_filter"
                    .into(),
            ));
        }
    };
    let groups = match raw.group_base {
        None => GroupLookup::MemberOf,
        Some(base) if looks_like_dn(&base) => GroupLookup::Members { base },
        Some(base) => return Err(invalid(&key("group_base"), format!("{base:?} is not a DN"))),
    };
    let group_map = roles(
        raw.group_map,
        &key("group_map"),
        |group| {
            if looks_like_dn(group) { Ok(normalize_dn(group)) } else { Err(format!("{group:?} is not a group DN")) }
        },
        &invalid,
    )?;
    let name_attribute = raw.name_attribute.unwrap_or_else(|| "uid".into());
    let descr = name_attribute.starts_with(|c: char| c.is_ascii_alphabetic())
        && name_attribute.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !descr {
        return Err(invalid(&key("name_attribute"), format!("{name_attribute:?} is not an attribute name")));
    }
    Ok(LdapSettings {
        url: format!("{}://{}", url.scheme(), url.authority()),
        transport,
        trust: trust(raw.ca_file, base, &key("ca_file"), &invalid)?,
        bind,
        groups,
        group_map,
        name_attribute,
        timeout: timeout(raw.timeout, &key("timeout"), &invalid)?,
    })
}

/// A map of group → role with at least one entry, roles from [`ROLES`], groups checked and
/// rewritten by `group`. Errors name `<map_key>.<group>`.
fn roles(
    map: Option<BTreeMap<String, String>>,
    map_key: &str,
    group: impl Fn(&str) -> Result<String, String>,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let map = map.unwrap_or_default();
    if map.is_empty() {
        // Nobody could ever log in: surely not what was meant.
        return Err(invalid(map_key, "must map at least one group to a role".into()));
    }
    let mut out = BTreeMap::new();
    for (name, role) in map {
        let entry_key = format!("{map_key}.{name}");
        if name.trim().is_empty() {
            return Err(invalid(&entry_key, "a group name must not be empty".into()));
        }
        if !ROLES.contains(&role.as_str()) {
            return Err(invalid(&entry_key, format!("{role:?} is not one of {}", ROLES.join(", "))));
        }
        let name = group(&name).map_err(|msg| invalid(&entry_key, msg))?;
        out.insert(name, role);
    }
    Ok(out)
}

fn trust(
    ca_file: Option<PathBuf>,
    base: &Path,
    key: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<TrustRoots, ConfigError> {
    match ca_file {
        None => Ok(TrustRoots::System),
        Some(p) if p.as_os_str().is_empty() => Err(invalid(key, "must not be empty".into())),
        Some(p) => Ok(TrustRoots::CaFile(base.join(p))),
    }
}

fn timeout(
    value: Option<Duration>,
    key: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    match value.unwrap_or(DEFAULT_TIMEOUT) {
        d if d.is_zero() => Err(invalid(key, "must be greater than zero".into())),
        d => Ok(d),
    }
}

/// An `https` URL, or `http` to a loopback address (a provider on the same machine, tests);
/// no query or fragment.
fn check_web_url(text: &str) -> Result<(), String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    let host = url.host().ok_or_else(|| format!("{text:?} names no server"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(format!("{text:?}: use https (http only for a loopback address)")),
        other => return Err(format!("{text:?}: {other}:// is not https://")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?}: no query, fragment or credentials, please"));
    }
    Ok(())
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        // In URLs of schemes the URL standard does not know (ldap://), an IPv4 address is not
        // parsed: it arrives as a name.
        Host::Domain(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// At least one `type=value` part, each with a type and nothing unbalanced.
fn looks_like_dn(text: &str) -> bool {
    let dn = normalize_dn(text);
    !text.trim().is_empty() && dn.split(',').all(|rdn| rdn.split_once('=').is_some_and(|(kind, _)| !kind.is_empty()))
}

/// A filter in parentheses, balanced, with `{user}` in it.
fn check_filter(filter: &str) -> Result<(), String> {
    if !filter.contains("{user}") {
        return Err(format!("{filter:?} does not contain {{user}}"));
    }
    let mut depth = 0i32;
    for c in filter.replace("{user}", "x").chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            break;
        }
    }
    if !(filter.starts_with('(') && filter.ends_with(')')) || depth != 0 {
        return Err(format!("{filter:?} is not a filter in balanced parentheses, like \"(uid={{user}})\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_host::config_file::parse_toml;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        auth: Auth,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Auth {
        #[serde(default)]
        oidc: RawOidc,
        #[serde(default)]
        ldap: RawLdap,
    }

    const PATH: &str = "/etc/redtether/hub.toml";

    fn parse(text: &str) -> Result<Auth, ConfigError> {
        parse_toml::<File>(text, Path::new(PATH)).map(|f| f.auth)
    }

    fn invalid(key: &str, msg: String) -> ConfigError {
        ConfigError::invalid(PATH, key, msg)
    }

    fn oidc(text: &str) -> Result<OidcSettings, ConfigError> {
        validate_oidc(parse(text)?.oidc, Path::new("/etc/redtether"), invalid)
    }

    fn ldap(text: &str) -> Result<LdapSettings, ConfigError> {
        validate_ldap(parse(text)?.ldap, Path::new("/etc/redtether"), invalid)
    }

    const OIDC: &str = r#"[auth.oidc]
issuer = "https://login.example.com/realms/plant"
client_id = "hub"
client_secret = "s3cret"
public_url = "https://hub.example.com/"
role_map = { "plant-admins" = "owner", "tv" = "dashboard" }
"#;

    /// OIDC with `line` in place of the line starting with the same key, or added.
    fn oidc_with(line: &str) -> String {
        let name = line.split('=').next().unwrap().trim();
        let mut lines: Vec<&str> = OIDC.lines().filter(|l| l.split('=').next().unwrap().trim() != name).collect();
        lines.push(line);
        lines.join("\n") + "\n"
    }

    fn oidc_key(text: &str) -> String {
        oidc(text).unwrap_err().key().unwrap_or("").to_string()
    }

    #[test]
    fn oidc_defaults() {
        let s = oidc(OIDC).unwrap();
        assert_eq!(s.issuer, "https://login.example.com/realms/plant");
        assert_eq!(s.redirect_url, "https://hub.example.com/auth/oidc/callback");
        assert_eq!(s.roles_claim, "groups");
        assert_eq!(s.scopes, ["profile", "email"]);
        assert_eq!(s.role_map.get("plant-admins").map(String::as_str), Some("owner"));
        assert!(s.password_login);
        assert_eq!(s.trust, TrustRoots::System);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert!(!format!("{s:?}").contains("s3cret"), "the secret stays out of Debug");
    }

    #[test]
    fn oidc_options() {
        let s = oidc(&format!(
            "{OIDC}roles_claim = \"roles\"\nscopes = [\"openid\", \"groups\"]\npassword_login = false\n\
             ca_file = \"idp-ca.pem\"\ntimeout = \"3s\"\n"
        ))
        .unwrap();
        assert_eq!((s.roles_claim.as_str(), s.scopes.as_slice()), ("roles", &["groups".to_string()][..]));
        assert!(!s.password_login);
        assert_eq!(s.trust, TrustRoots::CaFile("/etc/redtether/idp-ca.pem".into()));
        assert_eq!(s.timeout, Duration::from_secs(3));
        let local = oidc(&oidc_with("issuer = \"http://127.0.0.1:5556\"")).unwrap();
        assert_eq!(local.issuer, "http://127.0.0.1:5556", "the issuer is kept as written, without a slash added");
    }

    #[test]
    fn oidc_errors_name_their_key() {
        assert_eq!(oidc_key("[auth.oidc]\n"), "auth.oidc.issuer");
        assert_eq!(oidc_key(&oidc_with("issuer = \"not a url\"")), "auth.oidc.issuer");
        assert_eq!(oidc_key(&oidc_with("issuer = \"http://login.example.com\"")), "auth.oidc.issuer");
        assert_eq!(oidc_key(&oidc_with("issuer = \"https://login.example.com/?a=b\"")), "auth.oidc.issuer");
        assert_eq!(oidc_key(&oidc_with("client_id = \"\"")), "auth.oidc.client_id");
        assert_eq!(oidc_key(&oidc_with("client_secret = \" \"")), "auth.oidc.client_secret");
        assert_eq!(oidc_key(&oidc_with("public_url = \"http://hub.example.com\"")), "auth.oidc.public_url");
        assert_eq!(oidc_key(&oidc_with("scopes = [\"two words\"]")), "auth.oidc.scopes");
        assert_eq!(oidc_key(&oidc_with("roles_claim = \"\"")), "auth.oidc.roles_claim");
        assert_eq!(oidc_key(&oidc_with("role_map = {}")), "auth.oidc.role_map");
        assert_eq!(oidc_key(&oidc_with("role_map = { \"ops\" = \"admin\" }")), "auth.oidc.role_map.ops");
        assert_eq!(oidc_key(&oidc_with("ca_file = \"\"")), "auth.oidc.ca_file");
        assert_eq!(oidc_key(&oidc_with("timeout = \"0s\"")), "auth.oidc.timeout");
        assert_eq!(oidc_key(&oidc_with("colour = \"red\"")), "auth.oidc.colour");
        assert_eq!(oidc_key(&oidc_with("password_login = \"yes\"")), "auth.oidc.password_login");
    }

    const LDAP: &str = r#"[auth.ldap]
url = "ldaps://ldap.example.com"
bind_dn = "uid={user},ou=people,dc=example,dc=com"
group_map = { "CN=Plant Admins, OU=Groups,DC=example,DC=com" = "owner" }
"#;

    const SEARCH: &str = r#"[auth.ldap]
url = "ldap://ldap.example.com:3389"
starttls = true
service_dn = "cn=hub,ou=services,dc=example,dc=com"
service_password = "pw"
search_base = "ou=people,dc=example,dc=com"
search_filter = "(&(objectClass=person)(uid={user}))"
group_base = "ou=groups,dc=example,dc=com"
group_map = { "cn=ops,ou=groups,dc=example,dc=com" = "member" }
"#;

    fn with(base: &str, line: &str) -> String {
        let name = line.split('=').next().unwrap().trim();
        let mut lines: Vec<&str> = base.lines().filter(|l| l.split('=').next().unwrap().trim() != name).collect();
        lines.push(line);
        lines.join("\n") + "\n"
    }

    fn without(base: &str, name: &str) -> String {
        base.lines().filter(|l| l.split('=').next().unwrap().trim() != name).collect::<Vec<_>>().join("\n") + "\n"
    }

    fn ldap_key(text: &str) -> String {
        ldap(text).unwrap_err().key().unwrap_or("").to_string()
    }

    #[test]
    fn ldap_by_template() {
        let s = ldap(LDAP).unwrap();
        assert_eq!(s.url, "ldaps://ldap.example.com");
        assert_eq!(s.transport, LdapTransport::Ldaps);
        assert_eq!(s.bind, LdapBind::Template { dn: "uid={user},ou=people,dc=example,dc=com".into() });
        assert_eq!(s.groups, GroupLookup::MemberOf);
        assert_eq!(
            s.group_map.keys().collect::<Vec<_>>(),
            ["cn=plant admins,ou=groups,dc=example,dc=com"],
            "group DNs are normalised"
        );
        assert_eq!((s.name_attribute.as_str(), s.timeout), ("uid", Duration::from_secs(10)));
    }

    #[test]
    fn ldap_by_search() {
        let s = ldap(SEARCH).unwrap();
        assert_eq!((s.url.as_str(), s.transport), ("ldap://ldap.example.com:3389", LdapTransport::StartTls));
        let LdapBind::Search { service_dn, service_password, base, filter } = &s.bind else { panic!("{:?}", s.bind) };
        assert_eq!(service_dn, "cn=hub,ou=services,dc=example,dc=com");
        assert_eq!(service_password.expose(), "pw");
        assert_eq!(base, "ou=people,dc=example,dc=com");
        assert_eq!(filter, "(&(objectClass=person)(uid={user}))");
        assert_eq!(s.groups, GroupLookup::Members { base: "ou=groups,dc=example,dc=com".into() });
        assert!(!format!("{s:?}").contains("\"pw\""), "the password stays out of Debug");
    }

    #[test]
    fn ldap_in_clear_only_on_loopback() {
        assert_eq!(ldap_key(&with(LDAP, "url = \"ldap://ldap.example.com\"")), "auth.ldap.url");
        assert_eq!(ldap_key(&with(LDAP, "url = \"ldap://10.0.0.5:389\"")), "auth.ldap.url");
        for local in ["ldap://127.0.0.1:3389", "ldap://localhost", "ldap://[::1]:389"] {
            let s = ldap(&with(LDAP, &format!("url = \"{local}\""))).unwrap();
            assert_eq!(s.transport, LdapTransport::Plain, "{local}");
        }
        let s = ldap(
            &with(LDAP, "url = \"ldap://ldap.example.com\"").replace("[auth.ldap]", "[auth.ldap]\nstarttls = true"),
        )
        .unwrap();
        assert_eq!(s.transport, LdapTransport::StartTls);
    }

    #[test]
    fn ldap_errors_name_their_key() {
        assert_eq!(ldap_key("[auth.ldap]\n"), "auth.ldap.url");
        assert_eq!(ldap_key(&with(LDAP, "url = \"https://ldap.example.com\"")), "auth.ldap.url");
        assert_eq!(ldap_key(&with(LDAP, "url = \"ldaps://ldap.example.com/dc=x\"")), "auth.ldap.url");
        assert_eq!(ldap_key(&with(LDAP, "starttls = true")), "auth.ldap.starttls");
        assert_eq!(ldap_key(&with(LDAP, "bind_dn = \"uid=alice,ou=people\"")), "auth.ldap.bind_dn");
        assert_eq!(ldap_key(&with(LDAP, "bind_dn = \"{user}\"")), "auth.ldap.bind_dn");
        assert_eq!(ldap_key(&without(LDAP, "bind_dn")), "auth.ldap.bind_dn");
        assert_eq!(ldap_key(&with(LDAP, "service_dn = \"cn=hub,dc=example,dc=com\"")), "auth.ldap.bind_dn");
        assert_eq!(ldap_key(&with(LDAP, "group_map = {}")), "auth.ldap.group_map");
        assert_eq!(ldap_key(&with(LDAP, "group_map = { \"admins\" = \"owner\" }")), "auth.ldap.group_map.admins");
        assert_eq!(ldap_key(&with(LDAP, "group_map = { \"cn=a,dc=x\" = \"god\" }")), "auth.ldap.group_map.cn=a,dc=x");
        assert_eq!(ldap_key(&with(LDAP, "group_base = \"groups\"")), "auth.ldap.group_base");
        assert_eq!(ldap_key(&with(LDAP, "name_attribute = \"uid)(x\"")), "auth.ldap.name_attribute");
        assert_eq!(ldap_key(&with(LDAP, "timeout = \"0s\"")), "auth.ldap.timeout");
        assert_eq!(ldap_key(&with(LDAP, "ca_file = \"\"")), "auth.ldap.ca_file");
        assert_eq!(
            ldap_key(
                &with(LDAP, "url = \"ldap://127.0.0.1\"").replace("[auth.ldap]", "[auth.ldap]\nca_file = \"ca.pem\"")
            ),
            "auth.ldap.ca_file"
        );
        assert_eq!(ldap_key(&with(LDAP, "password = \"x\"")), "auth.ldap.password");

        assert_eq!(ldap_key(&without(SEARCH, "service_dn")), "auth.ldap.service_dn");
        assert_eq!(ldap_key(&with(SEARCH, "service_password = \"\"")), "auth.ldap.service_password");
        assert_eq!(ldap_key(&without(SEARCH, "service_password")), "auth.ldap.service_password");
        assert_eq!(ldap_key(&with(SEARCH, "search_base = \"people\"")), "auth.ldap.search_base");
        assert_eq!(ldap_key(&without(SEARCH, "search_filter")), "auth.ldap.search_filter");
        assert_eq!(ldap_key(&with(SEARCH, "search_filter = \"(uid=alice)\"")), "auth.ldap.search_filter");
        assert_eq!(ldap_key(&with(SEARCH, "search_filter = \"uid={user}\"")), "auth.ldap.search_filter");
        assert_eq!(ldap_key(&with(SEARCH, "search_filter = \"(&(uid={user})\"")), "auth.ldap.search_filter");
        assert_eq!(ldap_key(&with(SEARCH, "bind_dn = \"uid={user},dc=example,dc=com\"")), "auth.ldap.bind_dn");
    }
}
