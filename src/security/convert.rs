//! Between the three shapes of the security settings: the `[gate]` table of `agent.toml`, a
//! platform policy's document, and what the gate enforces ([`Security`]). Pure.

use crate::config::{GateSettings, NodeAuth, Role, UserSettings};
use crate::gate::auth::tokens::{TokenRecord, normalise_scope};
use crate::gate::rules::Security;
use redtether_proto::policy::{HttpAuth, PolicyDocument, PolicyToken, PolicyUser, RateLimit, normalize_origin};

/// The security settings of the file (with the users the daemon runs with: the configured ones
/// or the first-run `admin`).
pub fn from_file(gate: &GateSettings, users: Vec<UserSettings>) -> Security {
    Security {
        protection: gate.protection,
        http_auth: gate.http_auth.clone(),
        users,
        platform_tokens: Vec::new(),
        requests_per_second: gate.rate_limit.requests_per_second,
        burst: gate.rate_limit.burst,
        cors_origins: gate.cors_origins.clone(),
    }
}

/// The settings a checked policy document sets. (The document was checked: a role or scope it
/// could not hold was refused before this; anything left unreadable is left out, never widened.)
pub fn from_policy(document: &PolicyDocument) -> Security {
    let http_auth =
        match (document.http_auth.mode.as_str(), &document.http_auth.user, &document.http_auth.password_hash) {
            ("none", _, _) => NodeAuth::None,
            ("basic", Some(user), Some(hash)) => NodeAuth::Basic { user: user.clone(), password_hash: hash.clone() },
            _ => NodeAuth::Users,
        };
    let users = document
        .users
        .iter()
        .filter_map(|u| {
            Role::parse(&u.role).map(|role| UserSettings {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                role,
            })
        })
        .collect();
    let platform_tokens = document
        .tokens
        .iter()
        .filter_map(|t| {
            let scope = match &t.scope {
                Some(scope) => Some(normalise_scope(scope).ok()?),
                None => None,
            };
            Some(TokenRecord { name: t.name.clone(), sha256: t.sha256.clone(), created: 0, expires: t.expires, scope })
        })
        .collect();
    Security {
        protection: document.protection,
        http_auth,
        users,
        platform_tokens,
        requests_per_second: document.rate_limit.requests_per_second,
        burst: document.rate_limit.burst,
        cors_origins: document.cors_origins.iter().filter_map(|o| normalize_origin(o)).collect(),
    }
}

/// The settings as a policy document, to describe a change between any two of them the same way
/// ([`PolicyDocument::changes_from`]).
pub fn to_document(security: &Security) -> PolicyDocument {
    let http_auth = match &security.http_auth {
        NodeAuth::None => HttpAuth { mode: "none".into(), user: None, password_hash: None },
        NodeAuth::Users => HttpAuth { mode: "users".into(), user: None, password_hash: None },
        NodeAuth::Basic { user, password_hash } => {
            HttpAuth { mode: "basic".into(), user: Some(user.clone()), password_hash: Some(password_hash.clone()) }
        }
    };
    PolicyDocument {
        protection: security.protection,
        http_auth,
        users: security
            .users
            .iter()
            .map(|u| PolicyUser {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                role: u.role.as_str().into(),
            })
            .collect(),
        tokens: security
            .platform_tokens
            .iter()
            .map(|t| PolicyToken {
                name: t.name.clone(),
                sha256: t.sha256.clone(),
                expires: t.expires,
                scope: t.scope.clone(),
            })
            .collect(),
        rate_limit: RateLimit { requests_per_second: security.requests_per_second, burst: security.burst },
        cors_origins: security.cors_origins.clone(),
    }
}

/// What changed from `old` to `new`: names and values, never a hash or a digest.
pub fn changes(old: &Security, new: &Security) -> serde_json::Value {
    to_document(new).changes_from(Some(&to_document(old)))
}

/// Platform tokens `new` adds and removes against `old`.
pub fn token_changes<'a>(old: &'a Security, new: &'a Security) -> (Vec<&'a TokenRecord>, Vec<&'a TokenRecord>) {
    let added = new.platform_tokens.iter().filter(|t| !old.platform_tokens.iter().any(|o| o.name == t.name)).collect();
    let removed =
        old.platform_tokens.iter().filter(|t| !new.platform_tokens.iter().any(|n| n.name == t.name)).collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

    fn document() -> PolicyDocument {
        PolicyDocument {
            protection: true,
            http_auth: HttpAuth { mode: "basic".into(), user: Some("hmi".into()), password_hash: Some(HASH.into()) },
            users: vec![PolicyUser { name: "ann".into(), password_hash: HASH.into(), role: "viewer".into() }],
            tokens: vec![PolicyToken {
                name: "t".into(),
                sha256: "ab".repeat(32),
                expires: 99,
                scope: Some("/API/x".into()),
            }],
            rate_limit: RateLimit { requests_per_second: 3.0, burst: 4 },
            cors_origins: vec!["HTTPS://HMI.example/".into()],
        }
    }

    #[test]
    fn a_document_becomes_the_gate_settings_it_describes() {
        let s = from_policy(&document());
        assert!(s.protection);
        assert_eq!(s.http_auth, NodeAuth::Basic { user: "hmi".into(), password_hash: HASH.into() });
        assert_eq!(s.users[0].role, Role::Viewer);
        assert_eq!(s.platform_tokens[0].scope.as_deref(), Some("/api/x"), "scopes compare canonically");
        assert_eq!(s.cors_origins, ["https://hmi.example"]);
        assert_eq!((s.requests_per_second, s.burst), (3.0, 4));
    }

    #[test]
    fn round_trips_describe_no_change_and_real_changes_by_name() {
        let s = from_policy(&document());
        assert_eq!(changes(&s, &s), serde_json::json!({}));
        let mut open = s.clone();
        open.http_auth = NodeAuth::None;
        open.platform_tokens.clear();
        let c = changes(&s, &open);
        assert_eq!(c["http_auth"]["mode"], "none");
        assert_eq!(c["tokens"]["removed"], serde_json::json!(["t"]));
        let (added, removed) = token_changes(&s, &open);
        assert!(added.is_empty());
        assert_eq!(removed[0].name, "t");
    }
}
