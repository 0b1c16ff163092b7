//! Credentials in a deployment. They are never in the clear outside the device:
//! - the hub **seals** an operator's credentials to the device's key (ECDH P-256 with a fresh
//!   ephemeral key, HKDF-SHA256, AES-256-GCM, the device id as associated data), so only the
//!   device can open them — not the hub's store, not a copy of the deployment;
//! - on the device they are written as Node-RED's own encrypted credentials file (AES-256-CTR
//!   under SHA-256 of the device's credential secret), which is also how a snapshot taken from
//!   the device carries them.
//!
//! Pure apart from the random numbers.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64_STD, URL_SAFE_NO_PAD as B64};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use sha2::{Digest, Sha256};

const SEAL_PREFIX: &str = "v1.";
const SEAL_INFO: &[u8] = b"redtether credentials v1\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("the device key is unusable: {0}")]
    Key(String),
    #[error("the sealed credentials are malformed")]
    Malformed,
    #[error("the sealed credentials do not open with this device's key (sealed for another key?)")]
    WrongKey,
    #[error("the credentials file is not Node-RED's encrypted format")]
    NotNodeRedFormat,
}

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
pub fn seal(device_spki: &[u8], device: &str, plaintext: &[u8]) -> Result<String, CredentialsError> {
    let recipient =
        p256::PublicKey::from_public_key_der(device_spki).map_err(|e| CredentialsError::Key(e.to_string()))?;
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
    .map_err(|_| CredentialsError::Malformed)?;
    Ok(format!("{SEAL_PREFIX}{}.{}.{}", B64.encode(ephemeral_public.as_bytes()), B64.encode(nonce), B64.encode(sealed)))
}

/// Opens what [`seal`] made, with the device's private key (PKCS#8 PEM).
pub fn unseal(device_key_pem: &str, device: &str, sealed: &str) -> Result<Vec<u8>, CredentialsError> {
    let secret = p256::SecretKey::from_pkcs8_pem(device_key_pem).map_err(|e| CredentialsError::Key(e.to_string()))?;
    let mut parts = sealed.strip_prefix(SEAL_PREFIX).ok_or(CredentialsError::Malformed)?.split('.');
    let mut next = || parts.next().and_then(|p| B64.decode(p).ok()).ok_or(CredentialsError::Malformed);
    let (ephemeral, nonce, mut body) = (next()?, next()?, next()?);
    let ephemeral_key = p256::PublicKey::from_sec1_bytes(&ephemeral).map_err(|_| CredentialsError::Malformed)?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CredentialsError::Malformed)?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral_key.as_affine());
    let key = aead_key(shared.raw_secret_bytes(), &ephemeral, device);
    let opened = key
        .open_in_place(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(device.as_bytes()),
            &mut body,
        )
        .map_err(|_| CredentialsError::WrongKey)?;
    Ok(opened.to_vec())
}

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

fn node_red_key(credential_secret: &str) -> [u8; 32] {
    Sha256::digest(credential_secret.as_bytes()).into()
}

/// Node-RED's encrypted credentials file for `credentials`: `{"$": <hex IV><base64 AES-256-CTR>}`
/// with the key SHA-256(credential secret), as Node-RED itself writes it.
pub fn node_red_encrypt(credential_secret: &str, credentials: &serde_json::Value) -> serde_json::Value {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let iv = random::<16>();
    let mut bytes = serde_json::to_vec(credentials).expect("JSON values always encode");
    Aes256Ctr::new(&node_red_key(credential_secret).into(), &iv.into()).apply_keystream(&mut bytes);
    serde_json::json!({ "$": format!("{}{}", hex::encode(iv), B64_STD.encode(bytes)) })
}

/// The credentials in Node-RED's encrypted file `file`.
pub fn node_red_decrypt(
    credential_secret: &str,
    file: &serde_json::Value,
) -> Result<serde_json::Value, CredentialsError> {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let text = file.get("$").and_then(|v| v.as_str()).ok_or(CredentialsError::NotNodeRedFormat)?;
    let iv: [u8; 16] = text
        .get(..32)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|v| v.try_into().ok())
        .ok_or(CredentialsError::NotNodeRedFormat)?;
    let mut bytes = B64_STD.decode(&text[32..]).map_err(|_| CredentialsError::NotNodeRedFormat)?;
    Aes256Ctr::new(&node_red_key(credential_secret).into(), &iv.into()).apply_keystream(&mut bytes);
    serde_json::from_slice(&bytes).map_err(|_| CredentialsError::WrongKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device_key() -> (String, Vec<u8>) {
        let (key_pem, _) = crate::pki::device_key_and_csr().unwrap();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        (key_pem, rcgen::PublicKeyData::subject_public_key_info(&key))
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
        assert_eq!(unseal(&other_key, "pump-1", &sealed), Err(CredentialsError::WrongKey));
        assert_eq!(unseal(&key, "pump-2", &sealed), Err(CredentialsError::WrongKey), "bound to the device id");
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(unseal(&key, "pump-1", std::str::from_utf8(&flipped).unwrap()).is_err(), "tampering is found");
        for junk in ["", "v1.", "v1.AA.AA.AA", "v2.x.y.z"] {
            assert!(unseal(&key, "pump-1", junk).is_err(), "{junk}");
        }
        assert!(matches!(seal(b"not a key", "pump-1", b"x"), Err(CredentialsError::Key(_))));
    }

    #[test]
    fn node_red_files_round_trip_and_need_the_secret() {
        let creds = json!({"n1": {"user": "u", "password": "p"}});
        let file = node_red_encrypt("s3cret", &creds);
        let text = file["$"].as_str().unwrap();
        assert!(text[..32].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!text.contains("password"));
        assert_eq!(node_red_decrypt("s3cret", &file).unwrap(), creds);
        assert!(node_red_decrypt("other", &file).is_err());
        assert_eq!(node_red_decrypt("s3cret", &json!({"n1": {}})), Err(CredentialsError::NotNodeRedFormat));
    }
}
