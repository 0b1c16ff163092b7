//! Single sign-on: operators who log in with their organisation's accounts rather than a hub
//! token. This folder owns the identity provider's side of a login and nothing after it:
//! reading and validating `[auth.oidc]` and `[auth.ldap]` ([`config`]), the OpenID Connect
//! authorization code flow with PKCE ([`oidc`]), the LDAP bind and group lookup ([`ldap`]), and
//! the pure choice of a hub role from an identity's groups ([`map_role`]). Sessions, cookies,
//! operator accounts and the login routes are the hub's, outside this folder: they take an
//! [`Identity`] from here and a role from [`map_role`], and let nobody in without a role.
//!
//! ```text
//! config.rs  [auth.oidc], [auth.ldap]: raw TOML structs → validated settings
//! oidc.rs    discovery, begin (authorization URL + pending login), finish (code → Identity)
//! http.rs    the HTTP client openidconnect calls (the workspace's reqwest, ring, no redirects)
//! ldap.rs    authenticate (bind by template or search-then-bind, groups) → Identity
//! dn.rs      distinguished names compared as a directory compares them
//! tls.rs     whom the TLS connections to providers trust (system CAs or a CA file)
//! ```

pub mod config;
mod dn;
mod http;
pub mod ldap;
pub mod oidc;
pub(crate) mod tls;

use std::collections::BTreeMap;

pub use dn::normalize_dn;
pub use http::HttpError;
pub use tls::TlsError;

/// The hub's roles, highest first: an identity whose groups map to several roles gets the
/// first of them in this list.
pub const ROLES: [&str; 4] = ["owner", "member", "viewer", "dashboard"];

/// Who logged in, as the identity provider vouched for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The login name, for people to read: OpenID Connect's `preferred_username` (else `sub`);
    /// the LDAP entry's name attribute (`uid` by default) as the directory spells it. Not a key:
    /// OpenID Connect does not promise it is unique or stable, and some providers let users
    /// change it. Key accounts on [`subject`](Self::subject).
    pub name: String,
    /// Who this is for the provider, stable and unique there: the ID token's `sub` (unique per
    /// issuer); the user entry's DN, normalised with [`normalize_dn`].
    pub subject: String,
    /// The groups the provider reports: the roles claim's values (OpenID Connect), or the DNs of
    /// the groups the user is a member of, normalised with [`normalize_dn`] (LDAP).
    pub groups: Vec<String>,
    /// As the provider gives it (OpenID Connect's `email`, LDAP's `mail`); whether the provider
    /// verified it is not checked.
    pub email: Option<String>,
    pub source: IdentitySource,
}

/// Which provider vouched for an [`Identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    Oidc,
    Ldap,
}

impl IdentitySource {
    /// `"oidc"` or `"ldap"`, for audit records and account metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Oidc => "oidc",
            IdentitySource::Ldap => "ldap",
        }
    }
}

/// The role `groups` earn under `role_map` (group → role): the highest of the roles their
/// groups map to (see [`ROLES`]), or `None` when no group is in the map, which must deny the
/// login. Group names match exactly (LDAP group DNs are normalised on both sides beforehand);
/// roles that are not in [`ROLES`] are ignored (validation refuses them earlier).
pub fn map_role(groups: &[String], role_map: &BTreeMap<String, String>) -> Option<String> {
    groups
        .iter()
        .filter_map(|group| role_map.get(group))
        .filter_map(|role| ROLES.iter().position(|known| known == role))
        .min()
        .map(|rank| ROLES[rank].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(g, r)| (g.to_string(), r.to_string())).collect()
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn the_highest_mapped_role_wins() {
        let role_map =
            map(&[("plant-admins", "owner"), ("operators", "member"), ("auditors", "viewer"), ("tv", "dashboard")]);
        assert_eq!(map_role(&groups(&["auditors", "plant-admins", "operators"]), &role_map).as_deref(), Some("owner"));
        assert_eq!(map_role(&groups(&["auditors", "operators"]), &role_map).as_deref(), Some("member"));
        assert_eq!(map_role(&groups(&["tv", "auditors"]), &role_map).as_deref(), Some("viewer"));
        assert_eq!(map_role(&groups(&["tv"]), &role_map).as_deref(), Some("dashboard"));
    }

    #[test]
    fn no_mapped_group_means_no_role() {
        let role_map = map(&[("plant-admins", "owner")]);
        assert_eq!(map_role(&groups(&[]), &role_map), None);
        assert_eq!(map_role(&groups(&["everyone", "Plant-Admins", "plant-admins "]), &role_map), None);
        assert_eq!(map_role(&groups(&["plant-admins"]), &BTreeMap::new()), None);
    }

    #[test]
    fn unknown_roles_in_the_map_grant_nothing() {
        let role_map = map(&[("plant-admins", "root"), ("operators", "viewer")]);
        assert_eq!(map_role(&groups(&["plant-admins"]), &role_map), None);
        assert_eq!(map_role(&groups(&["plant-admins", "operators"]), &role_map).as_deref(), Some("viewer"));
    }

    #[test]
    fn sources_are_named_for_records() {
        assert_eq!((IdentitySource::Oidc.as_str(), IdentitySource::Ldap.as_str()), ("oidc", "ldap"));
    }
}
