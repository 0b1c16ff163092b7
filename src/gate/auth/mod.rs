//! Who is asking: HTTP Basic against configured users (argon2, with a short-lived cache of
//! verified credentials), editor sessions, and bearer tokens. Every failure costs the same time
//! as a wrong password, whatever was wrong.

pub mod header;
pub mod passwords;
pub mod sessions;
pub mod tokens;

pub use header::{Presented, presented};

use super::rules::Credentials;
use crate::config::Role;
use passwords::{VerifiedCache, Verifier};
use sessions::SessionStore;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use subtle::ConstantTimeEq;
use tokens::{TokenRefusal, TokenStore};

/// Which credentials count where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// The editor and admin API: configured users and editor sessions.
    Admin,
    /// Node space with `mode = "basic"`: the one node-space user.
    NodeBasic,
    /// Node space with `mode = "users"`: users, sessions and bearer tokens.
    NodeUsers,
}

impl Realm {
    /// The cache's tag for this realm under one set of credentials.
    fn tag(self, credentials: &Credentials) -> u64 {
        let realm = match self {
            Realm::Admin | Realm::NodeUsers => 1,
            Realm::NodeBasic => 2,
        };
        (credentials.generation << 8) | realm
    }
}

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// HTTP Basic: sent by browsers on their own, so cross-site writes are refused.
    Basic,
    /// An editor session token, sent only by the editor's own code.
    Session,
}

/// An authenticated (or anonymous) requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    User {
        name: String,
        role: Role,
        via: Via,
    },
    /// The node-space user of `mode = "basic"`.
    NodeUser {
        name: String,
    },
    Token {
        name: String,
        scope: Option<String>,
    },
}

/// A refused credential. `claimed` names who it claimed to be, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: &'static str,
    pub claimed: Option<String>,
}

#[derive(Clone)]
enum Cached {
    User(String, Role),
    NodeUser(String),
}

/// Verified Basic credentials are remembered this long.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Checks credentials against the [`Credentials`] in force, which each call is given.
pub struct Authenticator {
    pub tokens: Arc<TokenStore>,
    pub sessions: Arc<SessionStore>,
    verifier: Verifier,
    cache: VerifiedCache<Cached>,
}

impl Authenticator {
    pub fn new(tokens: Arc<TokenStore>, sessions: Arc<SessionStore>) -> Self {
        Authenticator { tokens, sessions, verifier: Verifier::new(2), cache: VerifiedCache::new(CACHE_TTL, 4096) }
    }

    /// How many password verifications (real or dummy) ran.
    pub fn verifications(&self) -> u64 {
        self.verifier.verifications()
    }

    /// Forgets every verified credential (after the credentials changed: entries of the old
    /// set could never be hit again, and need not take the room).
    pub fn forget_verified(&self) {
        self.cache.clear();
    }

    /// Answers from the cache of verified credentials only: no hashing, so it may run before
    /// the failed-authentication limiter.
    pub fn cached(&self, credentials: &Credentials, presented: &Presented, realm: Realm) -> Option<Who> {
        let Presented::Basic { user, password } = presented else {
            return None;
        };
        self.cache.get(realm.tag(credentials), user, password, Instant::now()).map(|c| match c {
            Cached::User(name, role) => Who::User { name, role, via: Via::Basic },
            Cached::NodeUser(name) => Who::NodeUser { name },
        })
    }

    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        presented: &Presented,
        realm: Realm,
        now: SystemTime,
    ) -> Result<Who, AuthFailure> {
        match presented {
            Presented::Nothing => Ok(Who::Anonymous),
            Presented::Malformed => Err(self.fail("malformed_authorization", None).await),
            Presented::Basic { user, password } => self.basic(credentials, user, password, realm).await,
            Presented::Bearer(token) => self.bearer(credentials, token, realm, now).await,
        }
    }

    async fn basic(
        &self,
        credentials: &Credentials,
        user: &str,
        password: &str,
        realm: Realm,
    ) -> Result<Who, AuthFailure> {
        let presented = Presented::Basic { user: user.into(), password: password.into() };
        if let Some(who) = self.cached(credentials, &presented, realm) {
            return Ok(who);
        }
        let candidate = match realm {
            Realm::NodeBasic => credentials
                .node_basic
                .as_ref()
                .filter(|(name, _)| bool::from(name.as_bytes().ct_eq(user.as_bytes())))
                .map(|(name, hash)| (Cached::NodeUser(name.clone()), hash.clone())),
            Realm::Admin | Realm::NodeUsers => {
                credentials.users.get(user).map(|u| (Cached::User(u.name.clone(), u.role), u.password_hash.clone()))
            }
        };
        let known = candidate.is_some();
        let (identity, hash) = match candidate {
            Some((identity, hash)) => (Some(identity), Some(hash)),
            None => (None, None),
        };
        if self.verifier.verify(hash, password.to_string()).await
            && let Some(identity) = identity
        {
            self.cache.insert(realm.tag(credentials), user, password, identity.clone(), Instant::now());
            return Ok(match identity {
                Cached::User(name, role) => Who::User { name, role, via: Via::Basic },
                Cached::NodeUser(name) => Who::NodeUser { name },
            });
        }
        Err(AuthFailure {
            reason: if known { "wrong_password" } else { "unknown_user" },
            claimed: Some(user.to_string()),
        })
    }

    async fn bearer(
        &self,
        credentials: &Credentials,
        token: &str,
        realm: Realm,
        now: SystemTime,
    ) -> Result<Who, AuthFailure> {
        if SessionStore::is_session_token(token) && realm != Realm::NodeBasic {
            return match self.sessions.check(token, now) {
                Some(s) => Ok(Who::User { name: s.user, role: s.role, via: Via::Session }),
                None => Err(self.fail("unknown_or_expired_session", None).await),
            };
        }
        if realm == Realm::NodeBasic {
            return Err(self.fail("bearer_not_accepted", None).await);
        }
        let unix = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // The device's own tokens first, then the platform's (digests from its policy).
        let checked = match self.tokens.check(token, unix) {
            Err(TokenRefusal::Unknown) => tokens::check_records(&credentials.platform_tokens, token, unix),
            other => other,
        };
        match checked {
            Ok(record) => Ok(Who::Token { name: record.name, scope: record.scope }),
            Err(TokenRefusal::Expired { name }) => Err(self.fail("expired_token", Some(name)).await),
            Err(TokenRefusal::Unknown) => Err(self.fail("unknown_token", None).await),
        }
    }

    /// A failure after the same argon2 work a wrong password costs.
    async fn fail(&self, reason: &'static str, claimed: Option<String>) -> AuthFailure {
        self.verifier.verify(None, String::new()).await;
        AuthFailure { reason, claimed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeAuth, UserSettings};
    use crate::gate::rules::{Rules, Security};

    fn credentials(users: Vec<UserSettings>, http_auth: NodeAuth, generation: u64) -> Credentials {
        let security = Security {
            protection: false,
            http_auth,
            users,
            platform_tokens: vec![],
            requests_per_second: 0.0,
            burst: 0,
            cors_origins: vec![],
        };
        Rules::new(security, generation, None).credentials
    }

    fn ann() -> Vec<UserSettings> {
        vec![UserSettings {
            name: "ann".into(),
            password_hash: passwords::hash_password("pw").unwrap(),
            role: Role::Member,
        }]
    }

    fn authenticator(dir: &std::path::Path) -> (Authenticator, Credentials) {
        let auth = Authenticator::new(
            Arc::new(TokenStore::open(&dir.join("tokens.json"))),
            Arc::new(SessionStore::new(Duration::from_secs(60), 16)),
        );
        (auth, credentials(ann(), NodeAuth::Users, 1))
    }

    #[tokio::test]
    async fn every_failure_costs_one_password_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, creds) = authenticator(dir.path());
        let now = SystemTime::now();
        let failures = [
            Presented::Malformed,
            Presented::Basic { user: "ann".into(), password: "wrong".into() },
            Presented::Basic { user: "nobody".into(), password: "pw".into() },
            Presented::Bearer("rtt_unknown".into()),
            Presented::Bearer("rts_unknown".into()),
        ];
        for (i, presented) in failures.iter().enumerate() {
            assert!(auth.authenticate(&creds, presented, Realm::Admin, now).await.is_err(), "{presented:?}");
            assert_eq!(auth.verifications(), i as u64 + 1, "{presented:?} paid for one verification");
        }
    }

    #[tokio::test]
    async fn verified_credentials_are_cached_and_wrong_ones_never_are() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, creds) = authenticator(dir.path());
        let good = Presented::Basic { user: "ann".into(), password: "pw".into() };
        assert!(auth.cached(&creds, &good, Realm::Admin).is_none());
        let who = auth.authenticate(&creds, &good, Realm::Admin, SystemTime::now()).await.unwrap();
        assert_eq!(who, Who::User { name: "ann".into(), role: Role::Member, via: Via::Basic });
        assert_eq!(auth.cached(&creds, &good, Realm::Admin), Some(who));
        assert!(auth.cached(&creds, &good, Realm::NodeBasic).is_none(), "another realm");
        let before = auth.verifications();
        auth.authenticate(&creds, &good, Realm::Admin, SystemTime::now()).await.unwrap();
        assert_eq!(auth.verifications(), before, "no argon2 for a cached credential");
        let bad = Presented::Basic { user: "ann".into(), password: "nope".into() };
        let _ = auth.authenticate(&creds, &bad, Realm::Admin, SystemTime::now()).await;
        assert!(auth.cached(&creds, &bad, Realm::Admin).is_none());
        // Under the next set of credentials (ann removed), nothing verified before is taken.
        let next = credentials(vec![], NodeAuth::Users, 2);
        assert!(auth.cached(&next, &good, Realm::Admin).is_none(), "a removed user's cached password");
        assert!(auth.authenticate(&next, &good, Realm::Admin, SystemTime::now()).await.is_err());
    }

    #[tokio::test]
    async fn node_basic_realm_takes_only_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, _) = authenticator(dir.path());
        let creds = credentials(
            ann(),
            NodeAuth::Basic { user: "hmi".into(), password_hash: passwords::hash_password("hmi-pw").unwrap() },
            1,
        );
        let now = SystemTime::now();
        let hmi = Presented::Basic { user: "hmi".into(), password: "hmi-pw".into() };
        assert_eq!(
            auth.authenticate(&creds, &hmi, Realm::NodeBasic, now).await.unwrap(),
            Who::NodeUser { name: "hmi".into() }
        );
        let ann = Presented::Basic { user: "ann".into(), password: "pw".into() };
        assert!(auth.authenticate(&creds, &ann, Realm::NodeBasic, now).await.is_err());
        assert!(
            auth.authenticate(&creds, &hmi, Realm::Admin, now).await.is_err(),
            "the node user is not an editor user"
        );
    }

    #[tokio::test]
    async fn tokens_and_sessions_authenticate_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, creds) = authenticator(dir.path());
        let now = SystemTime::now();
        let unix = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let (token, _) = auth.tokens.create("ci", 60, Some("/api"), unix).unwrap();
        let who = auth.authenticate(&creds, &Presented::Bearer(token.clone()), Realm::NodeUsers, now).await.unwrap();
        assert_eq!(who, Who::Token { name: "ci".into(), scope: Some("/api".into()) });
        assert!(auth.authenticate(&creds, &Presented::Bearer(token), Realm::NodeBasic, now).await.is_err());
        let session = auth.sessions.create("ann", Role::Member, now);
        let who = auth.authenticate(&creds, &Presented::Bearer(session), Realm::Admin, now).await.unwrap();
        assert_eq!(who, Who::User { name: "ann".into(), role: Role::Member, via: Via::Session });
    }

    #[tokio::test]
    async fn platform_tokens_work_until_their_expiry_second_and_only_while_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, _) = authenticator(dir.path());
        let token = "rtt_platform-made-token";
        let record = tokens::TokenRecord {
            name: "hub-hmi".into(),
            sha256: tokens::digest(token),
            created: 0,
            expires: 1_000,
            scope: None,
        };
        let security = Security {
            protection: false,
            http_auth: NodeAuth::Users,
            users: vec![],
            platform_tokens: vec![record],
            requests_per_second: 0.0,
            burst: 0,
            cors_origins: vec![],
        };
        let with = Rules::new(security, 1, None).credentials;
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let presented = Presented::Bearer(token.into());
        let who = auth.authenticate(&with, &presented, Realm::NodeUsers, at(999)).await.unwrap();
        assert_eq!(who, Who::Token { name: "hub-hmi".into(), scope: None });
        let expired = auth.authenticate(&with, &presented, Realm::NodeUsers, at(1_000)).await.unwrap_err();
        assert_eq!(expired.reason, "expired_token");
        let without = credentials(vec![], NodeAuth::Users, 2);
        assert_eq!(
            auth.authenticate(&without, &presented, Realm::NodeUsers, at(999)).await.unwrap_err().reason,
            "unknown_token"
        );
    }
}
