//! Password hashes (argon2id PHC strings), verification off the async threads, and the cache of
//! recently verified credentials so steady traffic does not pay argon2 on every request.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A hash of a password nobody knows, with argon2's default parameters: verified in place of a
/// missing user's hash so that an unknown user, a malformed header and a wrong password take the
/// same time.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("{0}")]
    Hash(#[source] argon2::password_hash::Error),
    #[error("{0}")]
    Params(#[source] argon2::Error),
}

/// Hashes a password for the config file (`redtether passwd`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(PasswordError::Hash)
}

/// Hashes a machine-made random secret (the first-run admin password): argon2id still, so it
/// verifies like any other hash, but with light parameters, as a 96-bit random secret cannot be
/// guessed however cheap each guess is.
pub fn hash_random_secret(secret: &str) -> Result<String, PasswordError> {
    let params = argon2::Params::new(256, 1, 1, None).map_err(PasswordError::Params)?;
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

/// Verifies passwords on blocking threads, a few at a time: argon2 takes tens of milliseconds
/// and about 19 MiB each, which must not stall the gate or exhaust a small device's memory.
#[derive(Clone)]
pub struct Verifier {
    permits: Arc<Semaphore>,
    verifications: Arc<AtomicU64>,
}

impl Verifier {
    pub fn new(concurrent: usize) -> Self {
        Verifier { permits: Arc::new(Semaphore::new(concurrent.max(1))), verifications: Arc::new(AtomicU64::new(0)) }
    }

    /// How many argon2 verifications ran (real or dummy).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Whether `password` matches `phc` (or, when `phc` is `None`, burns the same time on the
    /// dummy hash and returns false).
    pub async fn verify(&self, phc: Option<String>, password: String) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let known = phc.is_some();
        let hash = phc.unwrap_or_else(|| DUMMY_HASH.to_string());
        let ok = tokio::task::spawn_blocking(move || verify_now(&hash, &password)).await.unwrap_or(false);
        ok && known
    }
}

fn verify_now(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Credentials verified recently, keyed by an HMAC of realm, user and password under a key made
/// at start-up: the cache never holds a password, and its keys are useless outside this process.
pub struct VerifiedCache<V: Clone> {
    key: [u8; 32],
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (V, Instant)>>,
}

impl<V: Clone> VerifiedCache<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        VerifiedCache { key, ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    fn mac(&self, realm: u64, user: &str, password: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&realm.to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn get(&self, realm: u64, user: &str, password: &str, now: Instant) -> Option<V> {
        let key = self.mac(realm, user, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key).filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl).map(|(v, _)| v.clone())
    }

    pub fn insert(&self, realm: u64, user: &str, password: &str, value: V, now: Instant) {
        let key = self.mac(realm, user, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, now));
    }

    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_secret_hashes_are_light_argon2id_and_verify() {
        let hash = hash_random_secret("0123456789abcdef01234567").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{hash}");
        assert!(verify_now(&hash, "0123456789abcdef01234567"));
        assert!(!verify_now(&hash, "0123456789abcdef01234568"));
    }

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_now(&hash, "correct horse"));
        assert!(!verify_now(&hash, "correct horse "));
        assert!(!verify_now("not a hash", "x"));
    }

    #[test]
    fn dummy_hash_is_a_valid_default_parameter_hash() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = hash_password("x").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(parsed.params.to_string(), real.params.to_string(), "same cost as real hashes");
        assert!(!verify_now(DUMMY_HASH, ""));
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let v = Verifier::new(1);
        assert!(!v.verify(None, "anything".into()).await);
        let hash = hash_password("pw").unwrap();
        assert!(v.verify(Some(hash), "pw".into()).await);
    }

    #[test]
    fn cache_hits_only_the_same_realm_user_and_password_within_ttl() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        cache.insert(1, "ann", "pw", "owner", t0);
        assert_eq!(cache.get(1, "ann", "pw", t0 + Duration::from_secs(59)), Some("owner"));
        assert_eq!(cache.get(1, "ann", "pw", t0 + Duration::from_secs(60)), None, "expired");
        assert_eq!(cache.get(1, "ann", "pw2", t0), None);
        assert_eq!(cache.get(2, "ann", "pw", t0), None);
        assert_eq!(cache.get(1, "an", "npw", t0), None, "user/password boundary is kept");
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for i in 0..100 {
            cache.insert(1, &format!("u{i}"), "pw", i, t0);
        }
        assert!(cache.entries.lock().unwrap().len() <= 4);
    }
}
