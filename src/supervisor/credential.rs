//! The credential the gate presents to Node-RED: `v1.<perm>.<hex user>.<hex HMAC>` under a key
//! made at every start of the agent and written only into Node-RED's settings file. Node-RED
//! verifies it offline (see [`super::settings_js`]), so it knows the real user and grants `read`
//! or `*` — a second line of defence behind the gate's own decision.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What Node-RED lets a request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Node-RED's `*`.
    Full,
    /// Node-RED's `read`.
    Read,
}

impl Perm {
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Full => "full",
            Perm::Read => "read",
        }
    }
}

#[derive(Clone)]
pub struct UpstreamTokens {
    key: [u8; 32],
}

impl UpstreamTokens {
    pub fn new(key: [u8; 32]) -> Self {
        UpstreamTokens { key }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        UpstreamTokens { key }
    }

    /// The key as hex, for the settings file.
    pub fn key_hex(&self) -> String {
        hex::encode(self.key)
    }

    pub fn token(&self, user: &str, perm: Perm) -> String {
        let perm = perm.as_str();
        let payload = format!("v1.{perm}.{}", hex::encode(user.as_bytes()));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        format!("{payload}.{}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamTokens(<key redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_user_and_permission() {
        let t = UpstreamTokens::new([7; 32]);
        let full = t.token("ann", Perm::Full);
        assert!(full.starts_with("v1.full.616e6e."), "{full}");
        assert_ne!(full, t.token("ann", Perm::Read));
        assert_ne!(full, t.token("bob", Perm::Full));
        assert_ne!(full, UpstreamTokens::new([8; 32]).token("ann", Perm::Full));
        assert!(!format!("{t:?}").contains("0707"));
    }
}
