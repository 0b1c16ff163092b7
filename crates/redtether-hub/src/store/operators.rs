//! Operator accounts, their API tokens and their login sessions. Secrets (setup codes,
//! recovery codes, tokens, session ids) are kept as SHA-256 digests; passwords as argon2id
//! hashes; a TOTP secret as itself (it must be, to check codes).
//!
//! Trees: `operators` (name → [`OperatorRecord`]), `api_tokens` (token digest →
//! [`ApiTokenRecord`]), `sessions` (session id digest → [`SessionRecord`]). Removing an operator
//! removes their tokens and sessions; changing their role or clearing their second factor ends
//! their sessions (their tokens stay, and act with the new role when used).

use super::{SledStore, StoreError, decode, encode};
use crate::identity::secrets::{digest, random_secret};
use crate::identity::{OperatorRole, TokenScope};
use serde::{Deserialize, Serialize};

/// Where an account's identity is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountSource {
    /// Password (and TOTP) kept by the hub.
    #[default]
    Local,
    /// An OpenID provider; the role comes from its claim at each login.
    Oidc,
    /// An LDAP directory; the role comes from group membership at each login.
    Ldap,
}

/// A one-time code that lets an operator set their password and enroll TOTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupCode {
    pub sha256: String,
    /// Unix seconds; the code is refused from this second on.
    pub expires: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorRecord {
    pub name: String,
    pub role: OperatorRole,
    /// Unix seconds.
    pub created: u64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub source: AccountSource,
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Base32; present once TOTP is enrolled.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// Offered during setup, enrolled when the operator confirms a code of it.
    #[serde(default)]
    pub totp_pending: Option<String>,
    /// The TOTP step of the last code accepted: that step and earlier ones are replays.
    #[serde(default)]
    pub totp_last_step: u64,
    /// Digests of the unused recovery codes.
    #[serde(default)]
    pub recovery_sha256: Vec<String>,
    #[serde(default)]
    pub setup: Option<SetupCode>,
    /// For an account from single sign-on: who the provider says it is (OpenID `sub`, the
    /// LDAP entry's DN), so another person given the same name there is not let in as this one.
    #[serde(default)]
    pub subject: Option<String>,
    /// Roles narrowed per device group: on a group's devices, the group and its rollouts the
    /// operator acts with the lower of this and `role` (never a higher one).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub group_roles: std::collections::BTreeMap<String, OperatorRole>,
}

impl OperatorRecord {
    pub fn new(name: &str, role: OperatorRole, email: Option<String>, source: AccountSource, now: u64) -> Self {
        OperatorRecord {
            name: name.to_string(),
            role,
            created: now,
            email,
            source,
            password_hash: None,
            totp_secret: None,
            totp_pending: None,
            totp_last_step: 0,
            recovery_sha256: Vec::new(),
            setup: None,
            subject: None,
            group_roles: Default::default(),
        }
    }

    /// The role to act with on something of `group` (none: not in a group): `role`, narrowed
    /// by the group's entry in `group_roles`.
    pub fn role_in(&self, group: Option<&str>) -> OperatorRole {
        match group.and_then(|g| self.group_roles.get(g)) {
            Some(narrowed) => self.role.min(*narrowed),
            None => self.role,
        }
    }

    /// What `operator list` and the API show: never a secret or digest.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "role": self.role,
            "email": self.email,
            "source": self.source,
            "created": redtether_proto::time::format_unix(self.created),
            "password_set": self.password_hash.is_some(),
            "totp_enrolled": self.totp_secret.is_some(),
            "recovery_codes_left": self.recovery_sha256.len(),
            "setup_pending": self.setup.is_some(),
            "group_roles": self.group_roles,
        })
    }
}

/// An API token of an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub operator: String,
    pub name: String,
    pub scope: TokenScope,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; refused from this second on.
    pub expires: u64,
}

/// A browser's or script's login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub operator: String,
    /// Unix seconds.
    pub created: u64,
    pub last_used: u64,
    /// The value cookie-authenticated writes must carry in `X-CSRF-Token` (or a form field).
    pub csrf: String,
    /// How the operator logged in: `password`, `oidc`, `ldap`.
    pub method: String,
}

impl SledStore {
    /// Adds an account and returns its setup code (valid for `setup_secs`).
    pub fn add_operator(&self, record: OperatorRecord, setup_secs: u64) -> Result<String, StoreError> {
        let code = random_secret("rtsetup_");
        let mut record = record;
        record.setup = Some(SetupCode { sha256: digest(&code), expires: record.created.saturating_add(setup_secs) });
        let name = record.name.clone();
        let inserted =
            self.operators.compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(encode(&record)))?;
        if inserted.is_err() {
            return Err(StoreError::Conflict(format!("an operator named {name:?} exists (remove it first)")));
        }
        self.flush()?;
        Ok(code)
    }

    pub fn operator(&self, name: &str) -> Result<Option<OperatorRecord>, StoreError> {
        self.operators.get(name.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    pub fn operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        self.operators.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Changes an operator's record in one step (a concurrent change is retried on top).
    pub fn update_operator<T>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut OperatorRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        loop {
            let Some(old) = self.operators.get(name.as_bytes())? else { return Ok(None) };
            let mut record: OperatorRecord = decode(&old)?;
            let out = change(&mut record);
            if self.operators.compare_and_swap(name.as_bytes(), Some(&old), Some(encode(&record)))?.is_ok() {
                self.flush()?;
                return Ok(Some(out));
            }
        }
    }

    /// Removes an account with its tokens and sessions; returns the record it had.
    pub fn remove_operator(&self, name: &str) -> Result<OperatorRecord, StoreError> {
        let Some(old) = self.operators.remove(name.as_bytes())? else {
            return Err(StoreError::Conflict(format!("no operator named {name:?}")));
        };
        self.end_sessions(name)?;
        for (key, token) in self.token_entries()? {
            if token.operator == name {
                self.api_tokens.remove(key)?;
            }
        }
        self.flush()?;
        decode(&old)
    }

    /// The account whose unexpired setup code this is.
    pub fn operator_by_setup_code(&self, code: &str, now: u64) -> Result<Option<OperatorRecord>, StoreError> {
        use subtle::ConstantTimeEq;
        let presented = digest(code);
        let mut found = None;
        for record in self.operators()? {
            if let Some(setup) = &record.setup
                && bool::from(setup.sha256.as_bytes().ct_eq(presented.as_bytes()))
                && now < setup.expires
            {
                found = Some(record);
            }
        }
        Ok(found)
    }

    /// Makes an API token for `operator`; returns the token (shown once).
    pub fn add_api_token(
        &self,
        operator: &str,
        name: &str,
        scope: TokenScope,
        now: u64,
        expires: u64,
    ) -> Result<String, StoreError> {
        if self.api_tokens(operator)?.iter().any(|t| t.name == name) {
            return Err(StoreError::Conflict(format!("{operator:?} already has a token named {name:?}")));
        }
        let token = random_secret("rto_");
        let record =
            ApiTokenRecord { operator: operator.to_string(), name: name.to_string(), scope, created: now, expires };
        self.api_tokens.insert(digest(&token).as_bytes(), encode(&record))?;
        self.flush()?;
        Ok(token)
    }

    fn token_entries(&self) -> Result<Vec<(sled::IVec, ApiTokenRecord)>, StoreError> {
        self.api_tokens.iter().map(|kv| kv.map_err(StoreError::from).and_then(|(k, v)| Ok((k, decode(&v)?)))).collect()
    }

    pub fn api_tokens(&self, operator: &str) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let mut tokens: Vec<ApiTokenRecord> =
            self.token_entries()?.into_iter().map(|(_, t)| t).filter(|t| t.operator == operator).collect();
        tokens.sort_by(|x, y| x.name.cmp(&y.name));
        Ok(tokens)
    }

    /// The record of a presented token, expired or not (the caller decides).
    pub fn api_token(&self, token: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        self.api_tokens.get(digest(token).as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// Whether a token of that name existed.
    pub fn revoke_api_token(&self, operator: &str, name: &str) -> Result<bool, StoreError> {
        let mut found = false;
        for (key, token) in self.token_entries()? {
            if token.operator == operator && token.name == name {
                self.api_tokens.remove(key)?;
                found = true;
            }
        }
        if found {
            self.flush()?;
        }
        Ok(found)
    }

    /// Starts a session; returns its id (the cookie's value) and record.
    pub fn create_session(
        &self,
        operator: &str,
        method: &str,
        now: u64,
    ) -> Result<(String, SessionRecord), StoreError> {
        let id = random_secret("rtsess_");
        let record = SessionRecord {
            operator: operator.to_string(),
            created: now,
            last_used: now,
            csrf: random_secret(""),
            method: method.to_string(),
        };
        self.sessions.insert(digest(&id).as_bytes(), encode(&record))?;
        self.flush()?;
        Ok((id, record))
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions.get(digest(id).as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// Notes a session's use (not flushed: losing it in a crash only shortens the session).
    pub fn touch_session(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let key = digest(id);
        if let Some(v) = self.sessions.get(key.as_bytes())? {
            let mut record: SessionRecord = decode(&v)?;
            record.last_used = now;
            self.sessions.insert(key.as_bytes(), encode(&record))?;
        }
        Ok(())
    }

    pub fn end_session(&self, id: &str) -> Result<(), StoreError> {
        self.sessions.remove(digest(id).as_bytes())?;
        self.flush()
    }

    /// Ends every session of `operator`; returns how many there were.
    pub fn end_sessions(&self, operator: &str) -> Result<usize, StoreError> {
        let mut ended = 0;
        for kv in self.sessions.iter() {
            let (key, value) = kv?;
            let record: SessionRecord = decode(&value)?;
            if record.operator == operator {
                self.sessions.remove(key)?;
                ended += 1;
            }
        }
        self.flush()?;
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn a_group_role_narrows_and_never_raises() {
        let mut member = OperatorRecord::new("max", OperatorRole::Member, None, AccountSource::Local, 0);
        member.group_roles.insert("prod".into(), OperatorRole::Viewer);
        member.group_roles.insert("dev".into(), OperatorRole::Owner);
        assert_eq!(member.role_in(Some("prod")), OperatorRole::Viewer);
        assert_eq!(member.role_in(Some("dev")), OperatorRole::Member, "never above the account's role");
        assert_eq!(member.role_in(Some("test")), OperatorRole::Member);
        assert_eq!(member.role_in(None), OperatorRole::Member);
        // Stored and read back; an account without group roles stores none.
        let back: OperatorRecord = serde_json::from_value(serde_json::to_value(&member).unwrap()).unwrap();
        assert_eq!(back, member);
        let plain = OperatorRecord::new("ann", OperatorRole::Owner, None, AccountSource::Local, 0);
        assert!(serde_json::to_value(&plain).unwrap().get("group_roles").is_none());
    }

    #[test]
    fn setup_codes_are_found_until_they_expire_and_names_are_unique() {
        let (_d, s) = store();
        let code = s
            .add_operator(OperatorRecord::new("ann", OperatorRole::Owner, None, AccountSource::Local, 100), 60)
            .unwrap();
        assert_eq!(s.operator_by_setup_code(&code, 159).unwrap().unwrap().name, "ann");
        assert!(s.operator_by_setup_code(&code, 160).unwrap().is_none(), "expired at its second");
        assert!(s.operator_by_setup_code("rtsetup_guess", 100).unwrap().is_none());
        let again = OperatorRecord::new("ann", OperatorRole::Viewer, None, AccountSource::Local, 100);
        assert!(matches!(s.add_operator(again, 60), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn removing_an_operator_removes_their_tokens_and_sessions() {
        let (_d, s) = store();
        s.add_operator(OperatorRecord::new("ann", OperatorRole::Owner, None, AccountSource::Local, 1), 60).unwrap();
        s.add_operator(OperatorRecord::new("bob", OperatorRole::Viewer, None, AccountSource::Local, 1), 60).unwrap();
        let token = s.add_api_token("ann", "ci", TokenScope::Admin, 1, 100).unwrap();
        let bobs = s.add_api_token("bob", "ci", TokenScope::Read, 1, 100).unwrap();
        assert!(s.add_api_token("ann", "ci", TokenScope::Read, 1, 100).is_err(), "names are unique per operator");
        let (session, _) = s.create_session("ann", "password", 1).unwrap();
        assert_eq!(s.api_token(&token).unwrap().unwrap().operator, "ann");
        assert!(s.session(&session).unwrap().is_some());
        s.remove_operator("ann").unwrap();
        assert!(s.api_token(&token).unwrap().is_none());
        assert!(s.session(&session).unwrap().is_none());
        assert!(s.api_token(&bobs).unwrap().is_some(), "another operator's token stays");
    }

    #[test]
    fn ending_sessions_touches_only_that_operator() {
        let (_d, s) = store();
        let (a, _) = s.create_session("ann", "password", 1).unwrap();
        let (b, _) = s.create_session("bob", "password", 1).unwrap();
        assert_eq!(s.end_sessions("ann").unwrap(), 1);
        assert!(s.session(&a).unwrap().is_none());
        assert!(s.session(&b).unwrap().is_some());
        assert!(!s.revoke_api_token("bob", "none").unwrap(), "no such token");
    }
}
