//! The hub's key material in its state directory, made on first start and kept (all 0600):
//! the CA, the server certificate (re-issued when the configured names change or it nears
//! expiry), the stateless-reset key (so agents notice a restarted hub at once), the Ed25519
//! signing key whose public half devices pin at enrollment, and the P-256 credentials key that
//! portable snapshots' credentials are sealed to (see `crate::portable`).

use redtether_host::state_dir::{StateDirError, write_private};
use redtether_pki::{Ca, PkiError, cert_info, pem_to_der};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86400);
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 86400);
/// A server certificate with less left than this is replaced at start.
const SERVER_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86400);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Files(#[from] StateDirError),
    /// A key file exists but is unusable.
    #[error("{}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
}

pub struct HubKeys {
    pub ca: Ca,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub reset_key: [u8; 32],
    /// Key of the connection-ID generator: a restarted hub recognises the old connections' IDs
    /// as its own and answers them with a stateless reset instead of dropping them.
    pub cid_key: u64,
    /// PKCS#8 of the Ed25519 signing key.
    pub signing_pkcs8: Vec<u8>,
    /// The key devices seal a portable snapshot's credentials to.
    pub credentials: CredentialsKey,
}

/// The hub's P-256 credentials key (`credentials.key`, PKCS#8 PEM): devices seal the
/// credentials of a portable snapshot to its public half, and the hub opens them with it only to
/// seal them again for the device it deploys the snapshot to.
#[derive(Clone)]
pub struct CredentialsKey {
    key_pem: String,
    spki_der: Vec<u8>,
}

impl CredentialsKey {
    /// From its PKCS#8 PEM; `None` if it is not a P-256 key.
    pub fn from_pem(key_pem: &str) -> Option<CredentialsKey> {
        let spki_der = redtether_proto::seal::public_spki(key_pem).ok()?;
        Some(CredentialsKey { key_pem: key_pem.to_string(), spki_der })
    }

    /// The public half, SPKI DER: what devices seal to.
    pub fn spki(&self) -> &[u8] {
        &self.spki_der
    }

    /// The private half, PKCS#8 PEM: what opens the sealed credentials.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl std::fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsKey").field("spki_der", &hex::encode(&self.spki_der)).finish_non_exhaustive()
    }
}

impl HubKeys {
    /// SHA-256 of the CA certificate.
    pub fn ca_fingerprint(&self) -> Result<String, KeyError> {
        Ok(redtether_pki::fingerprint(&self.ca.der()?))
    }

    /// The signing key's public half, hex: what devices pin.
    pub fn signing_public_hex(&self) -> Result<String, KeyError> {
        use ring::signature::KeyPair;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&self.signing_pkcs8)
            .map_err(|e| KeyError::Unusable { path: PathBuf::from("signing.key"), reason: e.to_string() })?;
        Ok(hex::encode(pair.public_key().as_ref()))
    }

    /// The credentials key's public half, SPKI DER: what devices seal portable snapshots to.
    pub fn credentials_spki(&self) -> &[u8] {
        self.credentials.spki()
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().filter(|s| !s.trim().is_empty())
}

/// Loads the keys in `dir`, making whatever is missing.
pub fn load_or_create(dir: &Path, names: &[String], now: SystemTime) -> Result<HubKeys, KeyError> {
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = match (read(&ca_pem), read(&ca_key)) {
        (Some(cert_pem), Some(key_pem)) => Ca { cert_pem, key_pem },
        _ => {
            let ca = Ca::create(now, CA_LIFETIME)?;
            write_private(&ca_key, ca.key_pem.as_bytes())?;
            write_private(&ca_pem, ca.cert_pem.as_bytes())?;
            tracing::info!(fingerprint = %redtether_pki::fingerprint(&ca.der()?), "made the hub's certificate authority");
            ca
        }
    };

    let (server_pem, server_key, names_file) =
        (dir.join("server.pem"), dir.join("server.key"), dir.join("server.names"));
    let wanted_names = names.join("\n");
    let current = match (read(&server_pem), read(&server_key), read(&names_file)) {
        (Some(cert), Some(key), Some(for_names)) if for_names == wanted_names => {
            let fresh = pem_to_der(&cert)
                .and_then(|der| cert_info(&der))
                .is_ok_and(|info| info.not_after > now + SERVER_RENEW_BEFORE);
            fresh.then_some((cert, key))
        }
        _ => None,
    };
    let (server_cert_pem, server_key_pem) = match current {
        Some(pair) => pair,
        None => {
            let (cert, key) = ca.issue_server(names, now, SERVER_LIFETIME)?;
            write_private(&server_key, key.as_bytes())?;
            write_private(&server_pem, cert.as_bytes())?;
            write_private(&names_file, wanted_names.as_bytes())?;
            tracing::info!(names = ?names, "issued the hub's server certificate");
            (cert, key)
        }
    };

    let reset_path = dir.join("reset.key");
    let reset_key = match std::fs::read(&reset_path) {
        Ok(bytes) if bytes.len() == 32 => bytes.try_into().unwrap_or([0; 32]),
        _ => {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            write_private(&reset_path, &key)?;
            key
        }
    };

    let cid_path = dir.join("cid.key");
    let cid_key = match std::fs::read(&cid_path) {
        Ok(bytes) if bytes.len() == 8 => u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8])),
        _ => {
            let key: u64 = rand::random();
            write_private(&cid_path, &key.to_be_bytes())?;
            key
        }
    };

    let signing_path = dir.join("signing.key");
    let signing_pkcs8 = match std::fs::read(&signing_path) {
        Ok(bytes) if ring::signature::Ed25519KeyPair::from_pkcs8(&bytes).is_ok() => bytes,
        _ => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|e| KeyError::Unusable { path: signing_path.clone(), reason: e.to_string() })?;
            write_private(&signing_path, pkcs8.as_ref())?;
            pkcs8.as_ref().to_vec()
        }
    };

    let credentials_path = dir.join("credentials.key");
    let credentials = match read(&credentials_path) {
        Some(pem) => CredentialsKey::from_pem(&pem).ok_or_else(|| KeyError::Unusable {
            path: credentials_path.clone(),
            reason: "not a P-256 private key (PKCS#8 PEM)".into(),
        })?,
        None => {
            let (pem, spki_der) = redtether_proto::seal::generate_key();
            write_private(&credentials_path, pem.as_bytes())?;
            tracing::info!("made the hub's credentials key");
            CredentialsKey { key_pem: pem, spki_der }
        }
    };

    Ok(HubKeys { ca, server_cert_pem, server_key_pem, reset_key, cid_key, signing_pkcs8, credentials })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = load_or_create(dir.path(), &names, SystemTime::now()).unwrap();
        let b = load_or_create(dir.path(), &names, SystemTime::now()).unwrap();
        assert_eq!(a.ca_fingerprint().unwrap(), b.ca_fingerprint().unwrap());
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        assert_eq!(a.reset_key, b.reset_key);
        assert_eq!(a.cid_key, b.cid_key);
        assert_eq!(a.signing_public_hex().unwrap(), b.signing_public_hex().unwrap());
        assert_eq!(a.credentials_spki(), b.credentials_spki(), "the credentials key is kept");
        assert_eq!(a.credentials.key_pem(), b.credentials.key_pem());
        let sealed = redtether_proto::seal::seal(a.credentials_spki(), "hub", b"{}").unwrap();
        assert_eq!(redtether_proto::seal::unseal(b.credentials.key_pem(), "hub", &sealed).unwrap(), b"{}");
        assert!(!format!("{:?}", a.credentials).contains("PRIVATE"), "Debug does not show the private key");
        for f in ["ca.key", "server.key", "reset.key", "signing.key", "credentials.key"] {
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join(f)).unwrap().permissions());
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // New names: a new server certificate under the same CA.
        let c = load_or_create(dir.path(), &["hub.example".to_string()], SystemTime::now()).unwrap();
        assert_ne!(c.server_cert_pem, a.server_cert_pem);
        assert_eq!(c.ca_fingerprint().unwrap(), a.ca_fingerprint().unwrap());
    }

    #[test]
    fn an_unusable_credentials_key_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("credentials.key"), "junk").unwrap();
        let names = vec!["localhost".to_string()];
        assert!(matches!(load_or_create(dir.path(), &names, SystemTime::now()), Err(KeyError::Unusable { .. })));
        assert_eq!(std::fs::read_to_string(dir.path().join("credentials.key")).unwrap(), "junk");
    }
}
