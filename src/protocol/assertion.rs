//! The hub's signed statement of who an operator is, carried in the header of a forwarded
//! stream: `{user, role, device, exp}`, signed with the hub's Ed25519 key, whose public half the
//! device pinned at enrollment. The device verifies it offline; the gate then treats the
//! operator like a LAN user with that role.
//!
//! Encoding: `v1.<base64url(payload JSON)>.<base64url(signature)>`, the signature over a domain
//! separator followed by the payload bytes exactly as sent (nothing is re-serialised before
//! checking). Pure: no I/O, no clock (the caller passes `now`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "v1.";
const DOMAIN: &[u8] = b"redtether platform assertion v1\0";
/// An assertion longer than this is refused before any decoding.
const MAX_LEN: usize = 2048;
/// How long an assertion the hub makes is valid.
pub const LIFETIME_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub user: String,
    /// A gate role: owner, member, viewer, dashboard.
    pub role: String,
    pub device: String,
    /// Unix seconds after which it is void.
    pub exp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("no platform assertion")]
    Missing,
    #[error("the platform assertion is malformed")]
    Malformed,
    #[error("the platform assertion's signature is not the hub's")]
    BadSignature,
    #[error("the platform assertion has expired")]
    Expired,
    #[error("the platform assertion is for another device")]
    OtherDevice,
}

impl AssertionError {
    /// The `reason` recorded in the audit event.
    pub fn reason(self) -> &'static str {
        match self {
            AssertionError::Missing => "platform_assertion_missing",
            AssertionError::Malformed => "platform_assertion_malformed",
            AssertionError::BadSignature => "platform_assertion_forged",
            AssertionError::Expired => "platform_assertion_expired",
            AssertionError::OtherDevice => "platform_assertion_other_device",
        }
    }
}

fn signed_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = DOMAIN.to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Signs `assertion` with the hub's key.
pub fn sign(assertion: &Assertion, key: &ring::signature::Ed25519KeyPair) -> String {
    let payload = serde_json::to_vec(assertion).expect("assertions always encode");
    let signature = key.sign(&signed_bytes(&payload));
    format!("{PREFIX}{}.{}", B64.encode(&payload), B64.encode(signature.as_ref()))
}

/// Checks `token` against the pinned hub key (32 bytes), for `device`, at `now` (Unix seconds).
/// The signature is checked before anything the payload says is believed.
pub fn verify(token: Option<&str>, hub_key: &[u8], device: &str, now: u64) -> Result<Assertion, AssertionError> {
    let token = token.ok_or(AssertionError::Missing)?;
    if token.len() > MAX_LEN {
        return Err(AssertionError::Malformed);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(AssertionError::Malformed)?;
    let (payload, signature) = rest.split_once('.').ok_or(AssertionError::Malformed)?;
    let payload = B64.decode(payload).map_err(|_| AssertionError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| AssertionError::Malformed)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, hub_key)
        .verify(&signed_bytes(&payload), &signature)
        .map_err(|_| AssertionError::BadSignature)?;
    let assertion: Assertion = serde_json::from_slice(&payload).map_err(|_| AssertionError::Malformed)?;
    if assertion.device != device {
        return Err(AssertionError::OtherDevice);
    }
    if assertion.exp <= now {
        return Err(AssertionError::Expired);
    }
    Ok(assertion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn ann(exp: u64) -> Assertion {
        Assertion { user: "ann".into(), role: "viewer".into(), device: "pump-1".into(), exp }
    }

    #[test]
    fn a_fresh_assertion_for_this_device_is_accepted() {
        let k = key();
        let token = sign(&ann(1060), &k);
        assert_eq!(verify(Some(&token), k.public_key().as_ref(), "pump-1", 1000), Ok(ann(1060)));
    }

    #[test]
    fn attacks_are_refused() {
        let (k, other) = (key(), key());
        let pk = k.public_key().as_ref().to_vec();
        let good = sign(&ann(1060), &k);
        assert_eq!(verify(None, &pk, "pump-1", 1000), Err(AssertionError::Missing));
        assert_eq!(
            verify(Some(&sign(&ann(1060), &other)), &pk, "pump-1", 1000),
            Err(AssertionError::BadSignature),
            "another key"
        );
        assert_eq!(verify(Some(&good), &pk, "pump-1", 1060), Err(AssertionError::Expired), "expired at exp");
        assert_eq!(verify(Some(&good), &pk, "pump-2", 1000), Err(AssertionError::OtherDevice));

        // A payload raised to owner keeps the old signature: refused.
        let (_, sig) = good.rsplit_once('.').unwrap();
        let raised = serde_json::to_vec(&Assertion { role: "owner".into(), ..ann(1060) }).unwrap();
        let forged = format!("v1.{}.{sig}", B64.encode(raised));
        assert_eq!(verify(Some(&forged), &pk, "pump-1", 1000), Err(AssertionError::BadSignature));
        // A payload with a longer lifetime: refused the same way.
        let longer = serde_json::to_vec(&ann(99_999)).unwrap();
        assert_eq!(
            verify(Some(&format!("v1.{}.{sig}", B64.encode(longer))), &pk, "pump-1", 1000),
            Err(AssertionError::BadSignature)
        );

        for junk in ["", "v1.", "v1..", "v2.e30.AAAA", "v1.e30", "v1.!!!.AAAA", "v1.e30.AAAA", &"v1.".repeat(1000)] {
            assert!(verify(Some(junk), &pk, "pump-1", 1000).is_err(), "{junk:?}");
        }
        // Signed, but not an assertion (unknown fields are refused too).
        let odd = br#"{"user":"ann","role":"owner","device":"pump-1","exp":1060,"admin":true}"#;
        let token = format!("v1.{}.{}", B64.encode(odd), B64.encode(k.sign(&signed_bytes(odd)).as_ref()));
        assert_eq!(verify(Some(&token), &pk, "pump-1", 1000), Err(AssertionError::Malformed));
        // A key that is not 32 bytes never verifies.
        assert_eq!(verify(Some(&good), &pk[..31], "pump-1", 1000), Err(AssertionError::BadSignature));
    }
}
