//! The hub's signed statement of who an operator is, carried in the header of a forwarded
//! stream: `{user, role, device, exp}`, signed with the hub's Ed25519 key, whose public half the
//! device pinned at enrollment. The device verifies it offline; the gate then treats the
//! operator like a LAN user with that role.
//!
//! Encoding: `v1.<base64url(payload JSON)>.<base64url(signature)>`, the signature over a domain
//! separator followed by the payload bytes exactly as sent (nothing is re-serialised before
//! checking). Pure: no I/O, no clock (the caller passes `now`).

mod cache;

pub use cache::{Issued, REUSE_WHILE_LEFT_SECS, Verified};

use crate::signed::{self, EnvelopeError};
use serde::{Deserialize, Serialize};

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

/// Signs `assertion` with the hub's key.
pub fn sign(assertion: &Assertion, key: &ring::signature::Ed25519KeyPair) -> String {
    signed::seal(DOMAIN, &serde_json::to_vec(assertion).expect("assertions always encode"), key)
}

/// Checks `token` against the pinned hub key (32 bytes), for `device`, at `now` (Unix seconds).
/// The signature is checked before anything the payload says is believed.
pub fn verify(token: Option<&str>, hub_key: &[u8], device: &str, now: u64) -> Result<Assertion, AssertionError> {
    let token = token.ok_or(AssertionError::Missing)?;
    let payload = signed::open(DOMAIN, token, hub_key, MAX_LEN).map_err(|e| match e {
        EnvelopeError::Malformed => AssertionError::Malformed,
        EnvelopeError::BadSignature => AssertionError::BadSignature,
    })?;
    let assertion: Assertion = serde_json::from_slice(&payload).map_err(|_| AssertionError::Malformed)?;
    assertion.valid_for(device, now)?;
    Ok(assertion)
}

impl Assertion {
    /// What a signed assertion must still say when it is used: this device, not expired.
    fn valid_for(&self, device: &str, now: u64) -> Result<(), AssertionError> {
        if self.device != device {
            return Err(AssertionError::OtherDevice);
        }
        if self.exp <= now {
            return Err(AssertionError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::tests::{encode_raw, key};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::KeyPair;

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
        let token = encode_raw(odd, k.sign(&[DOMAIN, &odd[..]].concat()).as_ref());
        assert_eq!(verify(Some(&token), &pk, "pump-1", 1000), Err(AssertionError::Malformed));
        // A key that is not 32 bytes never verifies.
        assert_eq!(verify(Some(&good), &pk[..31], "pump-1", 1000), Err(AssertionError::BadSignature));
    }
}
