//! Credentials in Node-RED's own encrypted credentials file (AES-256-CTR under SHA-256 of the
//! device's credential secret): how a deployment's credentials are written on the device once
//! opened (they arrive sealed to the device's key: `redtether_proto::seal`), and how a snapshot
//! taken from the device carries them. Pure apart from the random IV.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64_STD;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeRedFileError {
    #[error("the credentials file is not Node-RED's encrypted format")]
    NotNodeRedFormat,
    #[error("the credentials file does not decrypt with this credential secret")]
    WrongSecret,
}

fn random_iv() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[..]);
    bytes
}

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

fn node_red_key(credential_secret: &str) -> [u8; 32] {
    Sha256::digest(credential_secret.as_bytes()).into()
}

/// Node-RED's encrypted credentials file for `credentials`: `{"$": <hex IV><base64 AES-256-CTR>}`
/// with the key SHA-256(credential secret), as Node-RED itself writes it.
pub fn node_red_encrypt(credential_secret: &str, credentials: &serde_json::Value) -> serde_json::Value {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let iv = random_iv();
    let mut bytes = serde_json::to_vec(credentials).expect("JSON values always encode");
    Aes256Ctr::new(&node_red_key(credential_secret).into(), &iv.into()).apply_keystream(&mut bytes);
    serde_json::json!({ "$": format!("{}{}", hex::encode(iv), B64_STD.encode(bytes)) })
}

/// The credentials in Node-RED's encrypted file `file`.
pub fn node_red_decrypt(
    credential_secret: &str,
    file: &serde_json::Value,
) -> Result<serde_json::Value, NodeRedFileError> {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let text = file.get("$").and_then(|v| v.as_str()).ok_or(NodeRedFileError::NotNodeRedFormat)?;
    let iv: [u8; 16] = text
        .get(..32)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|v| v.try_into().ok())
        .ok_or(NodeRedFileError::NotNodeRedFormat)?;
    let mut bytes = B64_STD.decode(&text[32..]).map_err(|_| NodeRedFileError::NotNodeRedFormat)?;
    Aes256Ctr::new(&node_red_key(credential_secret).into(), &iv.into()).apply_keystream(&mut bytes);
    serde_json::from_slice(&bytes).map_err(|_| NodeRedFileError::WrongSecret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_red_files_round_trip_and_need_the_secret() {
        let creds = json!({"n1": {"user": "u", "password": "p"}});
        let file = node_red_encrypt("s3cret", &creds);
        let text = file["$"].as_str().unwrap();
        assert!(text[..32].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!text.contains("password"));
        assert_eq!(node_red_decrypt("s3cret", &file).unwrap(), creds);
        assert!(node_red_decrypt("other", &file).is_err());
        assert_eq!(node_red_decrypt("s3cret", &json!({"n1": {}})), Err(NodeRedFileError::NotNodeRedFormat));
    }
}
