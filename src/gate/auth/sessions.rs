//! Editor sessions: the bearer tokens the gate issues at the editor's login
//! (`POST /device-editor/auth/token`). Held in memory only: a restart of the agent logs editors
//! out, and nothing on disk can be replayed.

use crate::config::Role;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const PREFIX: &str = "rts_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub expires: SystemTime,
}

pub struct SessionStore {
    ttl: Duration,
    capacity: usize,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl SessionStore {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        SessionStore { ttl, capacity, sessions: Mutex::new(HashMap::new()) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session; returns its token.
    pub fn create(&self, user: &str, role: Role, now: SystemTime) -> String {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let token = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= self.capacity
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(digest(&token), Session { user: user.to_string(), role, expires: now + self.ttl });
        token
    }

    /// The live session for `token` at `now`.
    pub fn check(&self, token: &str, now: SystemTime) -> Option<Session> {
        if !token.starts_with(PREFIX) {
            return None;
        }
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&digest(token)).filter(|s| now < s.expires).cloned()
    }

    pub fn revoke(&self, token: &str) -> bool {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&digest(token)).is_some()
    }

    /// Ends every session of these users; how many there were.
    pub fn end_sessions_of(&self, users: &std::collections::BTreeSet<String>) -> usize {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let before = sessions.len();
        sessions.retain(|_, s| !users.contains(&s.user));
        before - sessions.len()
    }

    pub fn is_session_token(token: &str) -> bool {
        token.starts_with(PREFIX)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_for_their_ttl_and_can_be_revoked() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = store.create("ann", Role::Viewer, t0);
        assert_eq!(store.check(&token, t0 + Duration::from_secs(59)).unwrap().role, Role::Viewer);
        assert!(store.check(&token, t0 + Duration::from_secs(60)).is_none());
        let token = store.create("ann", Role::Owner, t0);
        assert!(store.revoke(&token));
        assert!(store.check(&token, t0).is_none());
        assert!(store.check("rtt_other", t0).is_none());
    }

    #[test]
    fn ending_a_users_sessions_leaves_the_others() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let t0 = SystemTime::now();
        let (a1, a2, b) = (
            store.create("ann", Role::Owner, t0),
            store.create("ann", Role::Owner, t0),
            store.create("bob", Role::Viewer, t0),
        );
        assert_eq!(store.end_sessions_of(&["ann".to_string()].into()), 2);
        assert!(store.check(&a1, t0).is_none() && store.check(&a2, t0).is_none());
        assert!(store.check(&b, t0).is_some());
    }

    #[test]
    fn the_store_is_bounded() {
        let store = SessionStore::new(Duration::from_secs(60), 3);
        let t0 = SystemTime::now();
        let first = store.create("a", Role::Owner, t0);
        for i in 0..5 {
            store.create("b", Role::Owner, t0 + Duration::from_secs(i + 1));
        }
        assert!(store.check(&first, t0).is_none(), "the oldest went first");
        assert!(store.sessions.lock().unwrap().len() <= 3);
    }
}
