//! The hub's signed envelopes: `v1.<base64url(payload)>.<base64url(Ed25519 signature)>`, the
//! signature over a per-kind domain separator followed by the payload bytes exactly as sent, so
//! a signature made for one kind of message (an operator assertion) can never be replayed as
//! another (a deployment), and nothing is re-serialised before it is checked. Pure.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

const PREFIX: &str = "v1.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed")]
    Malformed,
    #[error("not signed by the hub")]
    BadSignature,
}

fn signed_bytes(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = domain.to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Wraps `payload` in an envelope signed with `key` for `domain`.
pub fn seal(domain: &[u8], payload: &[u8], key: &ring::signature::Ed25519KeyPair) -> String {
    let signature = key.sign(&signed_bytes(domain, payload));
    format!("{PREFIX}{}.{}", B64.encode(payload), B64.encode(signature.as_ref()))
}

/// The payload of `envelope`, once its signature for `domain` checks out against `hub_key`
/// (32 bytes). Envelopes over `max_len` are refused before any decoding.
pub fn open(domain: &[u8], envelope: &str, hub_key: &[u8], max_len: usize) -> Result<Vec<u8>, EnvelopeError> {
    if envelope.len() > max_len {
        return Err(EnvelopeError::Malformed);
    }
    let rest = envelope.strip_prefix(PREFIX).ok_or(EnvelopeError::Malformed)?;
    let (payload, signature) = rest.split_once('.').ok_or(EnvelopeError::Malformed)?;
    let payload = B64.decode(payload).map_err(|_| EnvelopeError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| EnvelopeError::Malformed)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, hub_key)
        .verify(&signed_bytes(domain, &payload), &signature)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok(payload)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    pub(crate) fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    /// Re-signs a hand-made payload, for tests that need a validly signed odd message.
    pub(crate) fn encode_raw(payload: &[u8], signature: &[u8]) -> String {
        format!("{PREFIX}{}.{}", B64.encode(payload), B64.encode(signature))
    }

    #[test]
    fn a_signature_for_one_domain_is_void_in_another() {
        let k = key();
        let sealed = seal(b"a\0", b"{}", &k);
        let pk = k.public_key().as_ref();
        assert_eq!(open(b"a\0", &sealed, pk, 100).unwrap(), b"{}");
        assert_eq!(open(b"b\0", &sealed, pk, 100), Err(EnvelopeError::BadSignature));
        assert_eq!(open(b"a\0", &sealed, pk, 10), Err(EnvelopeError::Malformed), "over the length limit");
    }
}
