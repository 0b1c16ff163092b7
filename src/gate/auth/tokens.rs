//! Bearer tokens for node space: made by `redtether token create`, shown once, stored as SHA-256
//! digests in `<state_dir>/tokens.json` (0600), valid until their expiry second, optionally
//! limited to a path prefix.

use crate::state_dir::write_private;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

const PREFIX: &str = "rtt_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name is not usable.
    #[error("invalid token name {0:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    /// A token of that name exists.
    #[error("a token named {0:?} already exists (revoke it first)")]
    Exists(String),
    /// No token of that name.
    #[error("no token named {0:?}")]
    Unknown(String),
    /// The scope is not a plain absolute path.
    #[error("invalid scope {0:?}: use a path prefix such as /api")]
    BadScope(String),
    /// The lifetime is zero or too long to represent.
    #[error("invalid expiry: {0}")]
    BadExpiry(String),
    /// The store could not be written.
    #[error(transparent)]
    Io(#[from] crate::state_dir::StateDirError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the token is refused from this second on.
    pub expires: u64,
    /// Canonical lower-case path prefix the token is limited to.
    pub scope: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired { name: String },
}

/// A token is live strictly before its expiry second.
pub fn is_live(expires: u64, now: u64) -> bool {
    now < expires
}

/// Whether a canonical classification key lies under `scope` (whole path segments only).
pub fn scope_covers(scope: &str, key: &str) -> bool {
    scope == "/" || key == scope || key.strip_prefix(scope).is_some_and(|rest| rest.starts_with('/'))
}

pub struct TokenStore {
    path: PathBuf,
    tokens: Mutex<Vec<TokenRecord>>,
}

impl TokenStore {
    /// Opens the store at `path`. An unreadable file is moved aside (kept for inspection) and
    /// the store starts empty: the agent must start even when its token file is damaged.
    pub fn open(path: &Path) -> TokenStore {
        let tokens = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<TokenFile>(&bytes) {
                Ok(file) => file.tokens,
                Err(e) => {
                    let aside = path.with_extension(format!(
                        "corrupt-{}",
                        redtether_proto::time::format_seconds(std::time::SystemTime::now())
                    ));
                    let _ = std::fs::rename(path, &aside);
                    tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %e, "token file unreadable; starting with no tokens");
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        TokenStore { path: path.to_path_buf(), tokens: Mutex::new(tokens) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TokenRecord>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, tokens: &[TokenRecord]) -> Result<(), TokenError> {
        let text = serde_json::to_vec_pretty(&TokenFile { tokens: tokens.to_vec() })
            .map_err(|e| TokenError::BadExpiry(e.to_string()))?;
        write_private(&self.path, &text)?;
        Ok(())
    }

    /// Makes a token valid for `lifetime_secs` from `now`; returns the token (shown once).
    pub fn create(
        &self,
        name: &str,
        lifetime_secs: u64,
        scope: Option<&str>,
        now: u64,
    ) -> Result<(String, TokenRecord), TokenError> {
        if !crate::config::valid_user_name(name) || name.contains('@') {
            return Err(TokenError::BadName(name.to_string()));
        }
        if lifetime_secs == 0 {
            return Err(TokenError::BadExpiry("the lifetime must be at least one second".into()));
        }
        let expires =
            now.checked_add(lifetime_secs).ok_or_else(|| TokenError::BadExpiry("too far in the future".into()))?;
        let scope = scope.map(normalise_scope).transpose()?;
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let token = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let record = TokenRecord { name: name.to_string(), sha256: digest(&token), created: now, expires, scope };
        let mut tokens = self.lock();
        if tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        let mut next = tokens.clone();
        next.push(record.clone());
        self.save(&next)?;
        *tokens = next;
        Ok((token, record))
    }

    pub fn revoke(&self, name: &str) -> Result<TokenRecord, TokenError> {
        let mut tokens = self.lock();
        let Some(index) = tokens.iter().position(|t| t.name == name) else {
            return Err(TokenError::Unknown(name.to_string()));
        };
        let mut next = tokens.clone();
        let removed = next.remove(index);
        self.save(&next)?;
        *tokens = next;
        Ok(removed)
    }

    pub fn list(&self) -> Vec<TokenRecord> {
        self.lock().clone()
    }

    /// Checks a presented token at `now` (unix seconds).
    pub fn check(&self, token: &str, now: u64) -> Result<TokenRecord, TokenRefusal> {
        check_records(&self.lock(), token, now)
    }
}

/// Checks a presented token at `now` (unix seconds) against `records`.
pub fn check_records(records: &[TokenRecord], token: &str, now: u64) -> Result<TokenRecord, TokenRefusal> {
    if !token.starts_with(PREFIX) {
        return Err(TokenRefusal::Unknown);
    }
    let presented = digest(token);
    // Every record is compared, in constant time each, so timing says nothing about which
    // digest prefix matched.
    let mut found: Option<&TokenRecord> = None;
    for t in records {
        if bool::from(t.sha256.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(t);
        }
    }
    match found {
        Some(t) if is_live(t.expires, now) => Ok(t.clone()),
        Some(t) => Err(TokenRefusal::Expired { name: t.name.clone() }),
        None => Err(TokenRefusal::Unknown),
    }
}

/// The SHA-256 (hex) a token is kept as.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A scope as the gate compares it: the canonical, lower-case form of the path prefix.
pub fn normalise_scope(scope: &str) -> Result<String, TokenError> {
    let canonical = super::super::canon::canonicalize(super::super::canon::Target {
        path: scope,
        query: None,
        authority: None,
        host_header: None,
    })
    .map_err(|_| TokenError::BadScope(scope.to_string()))?;
    Ok(canonical.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("tokens.json"));
        (dir, store)
    }

    #[test]
    fn expiry_is_enforced_to_the_second() {
        let (_d, s) = store();
        let now = 1_800_000_000;
        let (token, rec) = s.create("ci", 3600, None, now).unwrap();
        assert_eq!(rec.expires, now + 3600);
        assert!(s.check(&token, now + 3599).is_ok(), "exp - 1 s");
        assert_eq!(s.check(&token, now + 3600), Err(TokenRefusal::Expired { name: "ci".into() }), "exp");
        assert_eq!(s.check(&token, now + 3601), Err(TokenRefusal::Expired { name: "ci".into() }), "exp + 1 s");
    }

    #[test]
    fn tokens_are_stored_hashed_and_survive_reopen() {
        let (dir, s) = store();
        let (token, _) = s.create("hmi", 60, Some("/API/"), 100).unwrap();
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!file.contains(&token[4..]), "the token itself is never written");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("tokens.json")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let reopened = TokenStore::open(&dir.path().join("tokens.json"));
        let rec = reopened.check(&token, 101).unwrap();
        assert_eq!(rec.scope.as_deref(), Some("/api"));
    }

    #[test]
    fn unknown_tampered_and_revoked_tokens_are_refused() {
        let (_d, s) = store();
        let (token, _) = s.create("a", 60, None, 0).unwrap();
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push('x');
        assert_eq!(s.check(&tampered, 1), Err(TokenRefusal::Unknown));
        assert_eq!(s.check("not-a-token", 1), Err(TokenRefusal::Unknown));
        s.revoke("a").unwrap();
        assert_eq!(s.check(&token, 1), Err(TokenRefusal::Unknown));
        assert!(matches!(s.revoke("a"), Err(TokenError::Unknown(_))));
    }

    #[test]
    fn names_are_unique_and_checked() {
        let (_d, s) = store();
        s.create("a", 60, None, 0).unwrap();
        assert!(matches!(s.create("a", 60, None, 0), Err(TokenError::Exists(_))));
        assert!(matches!(s.create("bad name", 60, None, 0), Err(TokenError::BadName(_))));
        assert!(matches!(s.create("b", 0, None, 0), Err(TokenError::BadExpiry(_))));
        assert!(matches!(s.create("c", 60, Some("api"), 0), Err(TokenError::BadScope(_))));
        assert!(matches!(s.create("d", 60, Some("/a/../../b"), 0), Err(TokenError::BadScope(_))));
    }

    #[test]
    fn scope_is_a_whole_segment_prefix() {
        assert!(scope_covers("/api", "/api"));
        assert!(scope_covers("/api", "/api/x"));
        assert!(!scope_covers("/api", "/apix"));
        assert!(!scope_covers("/api", "/"));
        assert!(scope_covers("/", "/anything"));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, "{not json").unwrap();
        let s = TokenStore::open(&path);
        assert!(s.list().is_empty());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt"))
        );
    }
}
