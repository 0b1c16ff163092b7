//! What the gate enforces right now: the security settings (from `agent.toml` or a platform
//! policy) and everything the gate derives from them. A request reads them once, at its start,
//! and decides by that one set; a change swaps the whole set, so no request is judged half by
//! the old settings and half by the new. Which sessions and websockets a change must end is
//! decided here, purely ([`consequences`]).

use super::auth::tokens::TokenRecord;
use super::cors::Cors;
use super::decision::{NodeMode, Policy};
use crate::config::{NodeAuth, UserSettings};
use redtether_host::ratelimit::Limiter;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Addresses tracked per limiter; beyond this idle ones are forgotten first.
pub const LIMITER_CAPACITY: usize = 16 * 1024;

/// The security settings, wherever they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    pub protection: bool,
    pub http_auth: NodeAuth,
    /// The editor's users.
    pub users: Vec<UserSettings>,
    /// Bearer tokens the platform made (digests); tokens made on the device are in its own store.
    pub platform_tokens: Vec<TokenRecord>,
    /// Per source address; 0 turns the request limit off.
    pub requests_per_second: f64,
    pub burst: u32,
    pub cors_origins: Vec<String>,
}

impl Security {
    /// The limit's burst: as set, or twice the rate (at least 1).
    fn effective_burst(&self) -> u32 {
        if self.burst > 0 { self.burst } else { (self.requests_per_second * 2.0).ceil().max(1.0) as u32 }
    }
}

/// Who may authenticate, as the authenticator reads it.
pub struct Credentials {
    pub(super) users: HashMap<String, UserSettings>,
    pub(super) node_basic: Option<(String, String)>,
    pub(super) platform_tokens: Vec<TokenRecord>,
    /// Changes with every swap: a credential verified under one set is never taken from the
    /// cache under another.
    pub(super) generation: u64,
}

impl Credentials {
    /// A configured user by name.
    pub fn user(&self, name: &str) -> Option<&UserSettings> {
        self.users.get(name)
    }
}

/// The gate's whole view of the settings in force.
pub struct Rules {
    pub security: Security,
    pub policy: Policy,
    pub cors: Cors,
    /// Per-source request limit, when configured.
    pub requests: Option<Arc<Limiter>>,
    pub credentials: Credentials,
}

impl Rules {
    /// The rules for `security`. `previous`: the rules they replace, whose request limiter (and
    /// the buckets in it) is kept when the limit did not change.
    pub fn new(security: Security, generation: u64, previous: Option<&Rules>) -> Rules {
        let node_auth = match security.http_auth {
            NodeAuth::None => NodeMode::None,
            NodeAuth::Basic { .. } => NodeMode::Basic,
            NodeAuth::Users => NodeMode::Users,
        };
        let node_basic = match &security.http_auth {
            NodeAuth::Basic { user, password_hash } => Some((user.clone(), password_hash.clone())),
            _ => None,
        };
        let same_limit = previous.filter(|p| {
            p.security.requests_per_second == security.requests_per_second && p.security.burst == security.burst
        });
        let requests = match same_limit {
            Some(previous) => previous.requests.clone(),
            None => (security.requests_per_second > 0.0).then(|| {
                Arc::new(Limiter::new(security.requests_per_second, security.effective_burst(), LIMITER_CAPACITY))
            }),
        };
        Rules {
            policy: Policy { node_auth, protection: security.protection },
            cors: Cors::new(security.cors_origins.clone()),
            requests,
            credentials: Credentials {
                users: security.users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
                node_basic,
                platform_tokens: security.platform_tokens.clone(),
                generation,
            },
            security,
        }
    }
}

/// What a change of settings must end at once, beyond what the next request decides anew.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consequences {
    /// Users whose editor sessions end: removed, or with another role or password.
    pub end_sessions_of: BTreeSet<String>,
    /// The editor's websockets (`/comms`) close. Node-RED checks who a websocket is once, when
    /// it opens, and the gate cannot tell whose each one is: all of them close, and the editors
    /// of users still allowed reconnect on their own, with the rights they have now.
    pub close_editor_websockets: bool,
    /// Node space's websockets (dashboards) close: node-space access became different.
    pub close_node_websockets: bool,
}

/// What replacing `old` by `new` must end.
pub fn consequences(old: &Security, new: &Security) -> Consequences {
    let new_users: HashMap<&str, &UserSettings> = new.users.iter().map(|u| (u.name.as_str(), u)).collect();
    let end_sessions_of: BTreeSet<String> = old
        .users
        .iter()
        .filter(|u| {
            new_users.get(u.name.as_str()).is_none_or(|n| n.role != u.role || n.password_hash != u.password_hash)
        })
        .map(|u| u.name.clone())
        .collect();
    let lost_write = old.protection != new.protection && new.protection;
    let tokens_gone = old.platform_tokens.iter().any(|t| !new.platform_tokens.contains(t));
    let node_users_matter = new.http_auth == NodeAuth::Users || old.http_auth == NodeAuth::Users;
    Consequences {
        close_editor_websockets: lost_write || !end_sessions_of.is_empty(),
        close_node_websockets: old.http_auth != new.http_auth
            || tokens_gone
            || (node_users_matter && !end_sessions_of.is_empty()),
        end_sessions_of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn user(name: &str, role: Role, hash: &str) -> UserSettings {
        UserSettings { name: name.into(), password_hash: hash.into(), role }
    }

    fn security() -> Security {
        Security {
            protection: false,
            http_auth: NodeAuth::None,
            users: vec![user("ann", Role::Owner, "h1"), user("bob", Role::Viewer, "h2")],
            platform_tokens: vec![],
            requests_per_second: 0.0,
            burst: 0,
            cors_origins: vec![],
        }
    }

    #[test]
    fn nothing_ends_when_nothing_that_matters_changed() {
        let mut new = security();
        new.cors_origins = vec!["https://a.example".into()];
        new.requests_per_second = 5.0;
        assert_eq!(consequences(&security(), &new), Consequences::default());
        let mut added = security();
        added.users.push(user("cy", Role::Member, "h3"));
        assert_eq!(consequences(&security(), &added), Consequences::default(), "a new user ends nothing");
    }

    #[test]
    fn removed_or_changed_users_lose_their_sessions_and_editor_websockets_close() {
        let mut new = security();
        new.users = vec![user("ann", Role::Viewer, "h1")];
        let c = consequences(&security(), &new);
        assert_eq!(c.end_sessions_of, BTreeSet::from(["ann".to_string(), "bob".to_string()]));
        assert!(c.close_editor_websockets);
        assert!(!c.close_node_websockets, "node space is open either way");

        let mut password = security();
        password.users[1].password_hash = "h9".into();
        assert_eq!(consequences(&security(), &password).end_sessions_of, BTreeSet::from(["bob".to_string()]));
    }

    #[test]
    fn protection_turned_on_closes_the_editor_websockets_and_off_does_not() {
        let mut on = security();
        on.protection = true;
        let c = consequences(&security(), &on);
        assert!(c.close_editor_websockets && c.end_sessions_of.is_empty());
        assert!(!consequences(&on, &security()).close_editor_websockets, "gaining rights needs no reconnect");
    }

    #[test]
    fn node_space_websockets_close_when_its_access_changes() {
        let mut users = security();
        users.http_auth = NodeAuth::Users;
        assert!(consequences(&security(), &users).close_node_websockets);
        let token = TokenRecord { name: "t".into(), sha256: "ab".repeat(32), created: 0, expires: 9, scope: None };
        let mut with_token = users.clone();
        with_token.platform_tokens = vec![token];
        assert!(!consequences(&users, &with_token).close_node_websockets, "a new token ends nothing");
        assert!(consequences(&with_token, &users).close_node_websockets, "a revoked one does");
    }

    #[test]
    fn an_unchanged_limit_keeps_its_buckets() {
        let mut limited = security();
        limited.requests_per_second = 2.0;
        let first = Rules::new(limited.clone(), 1, None);
        let same = Rules::new(limited.clone(), 2, Some(&first));
        assert!(Arc::ptr_eq(first.requests.as_ref().unwrap(), same.requests.as_ref().unwrap()));
        limited.burst = 9;
        let other = Rules::new(limited, 3, Some(&same));
        assert!(!Arc::ptr_eq(same.requests.as_ref().unwrap(), other.requests.as_ref().unwrap()));
        assert!(Rules::new(security(), 4, Some(&other)).requests.is_none());
    }
}
