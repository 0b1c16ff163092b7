//! Secrets sealed by the hub to one device's key: ECDH P-256 with a fresh ephemeral key,
//! HKDF-SHA256 (salt: the ephemeral public key; info: a domain separator and the device id),
//! AES-256-GCM with the device id as associated data. Only the device can open them — not the
//! hub's store, not a copy of the deployment that carries them.
//!
//! `v1.<base64url(ephemeral SEC1 point)>.<base64url(nonce)>.<base64url(ciphertext+tag)>`.
//! Pure apart from the random numbers.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the device key is unusable: {0}")]
    Key(String),
    #[error("the sealed credentials are malformed")]
    Malformed,
    #[error("the sealed credentials do not open with this device's key (sealed for another key?)")]
    WrongKey,
}

const SEAL_PREFIX: &str = "v1.";
const SEAL_INFO: &[u8] = b"redtether credentials v1\0";

fn aead_key(shared: &[u8], ephemeral: &[u8], device: &str) -> ring::aead::LessSafeKey {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, ephemeral);
    let info = [SEAL_INFO, device.as_bytes()];
    let prk = salt.extract(shared);
    let okm = prk.expand(&info, &ring::aead::AES_256_GCM).expect("32 bytes is a valid length");
    ring::aead::LessSafeKey::new(ring::aead::UnboundKey::from(okm))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes[..]);
    bytes
}

/// Seals `plaintext` for the device whose public key is `device_spki` (DER).
pub fn seal(device_spki: &[u8], device: &str, plaintext: &[u8]) -> Result<String, SealError> {
    let recipient = p256::PublicKey::from_public_key_der(device_spki).map_err(|e| SealError::Key(e.to_string()))?;
    let ephemeral = loop {
        // Out-of-range scalars are astronomically rare; draw again if one comes.
        if let Ok(key) = p256::SecretKey::from_slice(&random::<32>()) {
            break key;
        }
    };
    let ephemeral_public = ephemeral.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
    let key = aead_key(shared.raw_secret_bytes(), ephemeral_public.as_bytes(), device);
    let nonce = random::<12>();
    let mut sealed = plaintext.to_vec();
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(device.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| SealError::Malformed)?;
    Ok(format!("{SEAL_PREFIX}{}.{}.{}", B64.encode(ephemeral_public.as_bytes()), B64.encode(nonce), B64.encode(sealed)))
}

/// A new P-256 key to seal to: its PKCS#8 PEM (private) and its SPKI DER (public).
pub fn generate_key() -> (String, Vec<u8>) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = loop {
        if let Ok(key) = p256::SecretKey::from_slice(&random::<32>()) {
            break key;
        }
    };
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("a P-256 key always encodes").to_string();
    let spki = secret.public_key().to_public_key_der().expect("a P-256 key always encodes").as_bytes().to_vec();
    (pem, spki)
}

/// The SPKI DER of the P-256 private key `key_pem` (PKCS#8 PEM): what [`seal`] seals to.
pub fn public_spki(key_pem: &str) -> Result<Vec<u8>, SealError> {
    use p256::pkcs8::EncodePublicKey;
    let secret = p256::SecretKey::from_pkcs8_pem(key_pem).map_err(|e| SealError::Key(e.to_string()))?;
    let spki = secret.public_key().to_public_key_der().map_err(|e| SealError::Key(e.to_string()))?;
    Ok(spki.as_bytes().to_vec())
}

/// Opens what [`seal`] made, with the device's private key (PKCS#8 PEM).
pub fn unseal(device_key_pem: &str, device: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
    let secret = p256::SecretKey::from_pkcs8_pem(device_key_pem).map_err(|e| SealError::Key(e.to_string()))?;
    let mut parts = sealed.strip_prefix(SEAL_PREFIX).ok_or(SealError::Malformed)?.split('.');
    let mut next = || parts.next().and_then(|p| B64.decode(p).ok()).ok_or(SealError::Malformed);
    let (ephemeral, nonce, mut body) = (next()?, next()?, next()?);
    let ephemeral_key = p256::PublicKey::from_sec1_bytes(&ephemeral).map_err(|_| SealError::Malformed)?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| SealError::Malformed)?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral_key.as_affine());
    let key = aead_key(shared.raw_secret_bytes(), &ephemeral, device);
    let opened = key
        .open_in_place(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(device.as_bytes()),
            &mut body,
        )
        .map_err(|_| SealError::WrongKey)?;
    Ok(opened.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device_key() -> (String, Vec<u8>) {
        generate_key()
    }

    #[test]
    fn a_generated_key_seals_to_its_public_half() {
        let (pem, spki) = generate_key();
        assert_eq!(public_spki(&pem).unwrap(), spki);
        assert_eq!(unseal(&pem, "hub", &seal(&spki, "hub", b"x").unwrap()).unwrap(), b"x");
        assert!(matches!(public_spki("not a key"), Err(SealError::Key(_))));
    }

    #[test]
    fn sealed_credentials_open_only_with_that_device_key_and_id() {
        let (key, spki) = device_key();
        let (other_key, _) = device_key();
        let plain = br#"{"n1":{"password":"correct-horse-battery-staple"}}"#;
        let sealed = seal(&spki, "pump-1", plain).unwrap();
        // (A short secret could appear in the base64 of random bytes by chance.)
        assert!(!sealed.contains("correct-horse-battery-staple"));
        assert_eq!(unseal(&key, "pump-1", &sealed).unwrap(), plain);
        assert_eq!(unseal(&other_key, "pump-1", &sealed), Err(SealError::WrongKey));
        assert_eq!(unseal(&key, "pump-2", &sealed), Err(SealError::WrongKey), "bound to the device id");
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(unseal(&key, "pump-1", std::str::from_utf8(&flipped).unwrap()).is_err(), "tampering is found");
        for junk in ["", "v1.", "v1.AA.AA.AA", "v2.x.y.z"] {
            assert!(unseal(&key, "pump-1", junk).is_err(), "{junk}");
        }
        assert!(matches!(seal(b"not a key", "pump-1", b"x"), Err(SealError::Key(_))));
    }
}
