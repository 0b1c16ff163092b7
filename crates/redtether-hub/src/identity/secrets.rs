//! The secrets of operator accounts: passwords (argon2id, PHC strings), one-time recovery
//! codes and setup codes, API tokens and session ids. Everything but passwords is a random
//! string kept by the hub as its SHA-256 digest only, so a copy of the store opens nothing.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Recovery codes an operator gets when enrolling TOTP.
pub const RECOVERY_CODES: usize = 10;
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must have at least {MIN_PASSWORD} characters")]
    TooShort,
    #[error("the password must have at most {MAX_PASSWORD} bytes")]
    TooLong,
    #[error("the password cannot be hashed")]
    Hash,
}

/// A random secret with `prefix` (which says what it is when one turns up in a log or a
/// paste): 24 random bytes, URL-safe base64.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a secret: hex SHA-256.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Hashes a new password (argon2id, the crate's default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD {
        return Err(PasswordError::TooLong);
    }
    argon2::Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches the stored hash. `None` (no such account, or no password yet)
/// still costs one hash, so a wrong name answers as slowly as a wrong password.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let Ok(hash) = PasswordHash::new(stored.unwrap_or(DUMMY)) else { return false };
    argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok() && stored.is_some()
}

/// Ten recovery codes (`xxxxx-xxxxx`, lower-case base32 without look-alikes), shown once.
pub fn recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rand::fill(&mut bytes);
            let chars: String = bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// A recovery code as typed (spaces, case) to the form its digest was made of.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterY", Some(&hash)));
        assert!(!verify_password("correct horse battery", None), "no account never matches");
        assert!(!verify_password("anything", Some("not a hash")));
        assert_eq!(hash_password("short"), Err(PasswordError::TooShort));
    }

    #[test]
    fn secrets_are_random_prefixed_and_stored_as_digests() {
        let a = random_secret("rto_");
        assert!(a.starts_with("rto_") && a.len() == 4 + 32);
        assert_ne!(a, random_secret("rto_"));
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), a);
    }

    #[test]
    fn ten_distinct_recovery_codes() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 11 && &c[5..6] == "-"));
        assert_eq!(normalize_recovery_code(" ABCDE-fghjk "), "abcde-fghjk");
    }
}
