//! The keys every hub of a cluster holds alike, kept in the shared store encrypted under the
//! key-encryption key (`[cluster] key_file`, 32 bytes as hex; AES-256-GCM, the key's name as
//! associated data): the device CA, the signing key devices pin, the credentials key, the
//! stateless-reset and connection-ID keys (so any hub resets a connection another held), and
//! the cluster CA that issues the hubs' certificates for talking to each other (devices never
//! get one of those). The first hub to start offers its own; every hub then writes the stored
//! ones into its state directory, where `crate::keys` reads them, and issues its own server
//! certificate under the shared CA.

use crate::store::StoreError;
use crate::store::domain::SharedSecrets;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::path::{Path, PathBuf};

/// The files shared, by their name in the state directory (which is also their name in the
/// store).
const SHARED: [&str; 8] =
    ["ca.pem", "ca.key", "signing.key", "credentials.key", "reset.key", "cid.key", "cluster-ca.pem", "cluster-ca.key"];

#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    #[error("cluster.key_file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster.key_file {}: not 32 bytes as 64 hex digits (make one with `openssl rand -hex 32`)", path.display())]
    Malformed { path: PathBuf },
    #[error("cluster.key_file does not open the cluster's {0}: every hub needs the same key-encryption key")]
    WrongKey(String),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: redtether_host::state_dir::StateDirError,
    },
    #[error("{}: cannot read the hub's own key: {source}", path.display())]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] redtether_pki::PkiError),
}

/// The key-encryption key.
pub struct Kek(LessSafeKey);

impl Kek {
    pub fn load(path: &Path) -> Result<Kek, ClusterKeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClusterKeyError::Read { path: path.to_path_buf(), source })?;
        let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
        let bytes = bytes.ok_or_else(|| ClusterKeyError::Malformed { path: path.to_path_buf() })?;
        Ok(Kek::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Kek {
        Kek(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes make an AES-256 key")))
    }

    /// nonce · ciphertext · tag.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let mut sealed = plain.to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut sealed)
            .expect("sealing a key this size cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, ClusterKeyError> {
        let wrong = || ClusterKeyError::WrongKey(name.to_string());
        let (nonce, body) = sealed.split_first_chunk::<12>().ok_or_else(wrong)?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(name.as_bytes()), &mut body)
            .map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }
}

/// Makes the cluster CA in `dir` if it is missing (the device CA is `crate::keys`').
fn ensure_cluster_ca(dir: &Path) -> Result<(), ClusterKeyError> {
    if dir.join("cluster-ca.pem").is_file() && dir.join("cluster-ca.key").is_file() {
        return Ok(());
    }
    let ca = redtether_pki::Ca::create(std::time::SystemTime::now(), super::tls::CA_LIFETIME)?;
    write(&dir.join("cluster-ca.key"), ca.key_pem.as_bytes())?;
    write(&dir.join("cluster-ca.pem"), ca.cert_pem.as_bytes())?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ClusterKeyError> {
    redtether_host::state_dir::write_private(path, bytes)
        .map_err(|source| ClusterKeyError::Write { path: path.to_path_buf(), source })
}

/// Offers this hub's keys (made by `crate::keys` and here if missing) and writes the ones the
/// store holds into `dir`. Returns whether any file changed: the caller then issues its server
/// certificate again, under the shared CA.
pub fn share(store: &dyn SharedSecrets, kek: &Kek, dir: &Path) -> Result<bool, ClusterKeyError> {
    ensure_cluster_ca(dir)?;
    let mut changed = false;
    for name in SHARED {
        let path = dir.join(name);
        let local = std::fs::read(&path).map_err(|source| ClusterKeyError::ReadLocal { path: path.clone(), source })?;
        let stored = store.shared_secret(&format!("key:{name}"), &kek.seal(name, &local))?;
        let shared = kek.open(name, &stored)?;
        if shared != local {
            write(&path, &shared)?;
            changed = true;
        }
    }
    if changed {
        // Issued under this hub's own CA before it joined: issued again under the shared one.
        for stale in ["server.pem", "server.key", "server.names", "cluster-peer.pem", "cluster-peer.key"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        tracing::info!("cluster: took the cluster's shared keys");
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_the_same_kek_and_name() {
        let kek = Kek::from_bytes(&[7; 32]);
        let sealed = kek.seal("ca.key", b"secret key");
        assert_ne!(&sealed[12..], b"secret key", "not in clear");
        assert_eq!(kek.open("ca.key", &sealed).unwrap(), b"secret key");
        assert!(kek.open("signing.key", &sealed).is_err(), "bound to its name");
        assert!(Kek::from_bytes(&[8; 32]).open("ca.key", &sealed).is_err(), "another KEK");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(kek.open("ca.key", &tampered).is_err());
        assert!(kek.open("ca.key", &sealed[..5]).is_err());
        assert_ne!(kek.seal("ca.key", b"secret key"), sealed, "a fresh nonce each time");
    }

    #[test]
    fn the_kek_file_must_be_32_hex_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(Kek::load(&path).is_ok());
        std::fs::write(&path, "ab".repeat(16)).unwrap();
        assert!(matches!(Kek::load(&path), Err(ClusterKeyError::Malformed { .. })));
        assert!(matches!(Kek::load(&dir.path().join("none")), Err(ClusterKeyError::Read { .. })));
    }

    #[test]
    fn the_first_hubs_keys_are_every_hubs() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(store_dir.path()).unwrap();
        let kek = Kek::from_bytes(&[1; 32]);
        let names = vec!["localhost".to_string()];
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let now = std::time::SystemTime::now();
        let first = crate::keys::load_or_create(a.path(), &names, now).unwrap();
        crate::keys::load_or_create(b.path(), &names, now).unwrap();
        assert!(!share(&store, &kek, a.path()).unwrap(), "the first hub's keys are stored as they are");
        assert!(share(&store, &kek, b.path()).unwrap(), "the second takes them");
        let second = crate::keys::load_or_create(b.path(), &names, now).unwrap();
        assert_eq!(second.ca_fingerprint().unwrap(), first.ca_fingerprint().unwrap());
        assert_eq!((second.reset_key, second.cid_key), (first.reset_key, first.cid_key));
        assert_eq!(second.signing_public_hex().unwrap(), first.signing_public_hex().unwrap());
        for name in SHARED {
            assert_eq!(std::fs::read(a.path().join(name)).unwrap(), std::fs::read(b.path().join(name)).unwrap());
        }
        let der = redtether_pki::pem_to_der(&second.server_cert_pem).unwrap();
        assert!(redtether_pki::cert_info(&der).is_ok(), "a server certificate issued again");
        assert!(matches!(share(&store, &Kek::from_bytes(&[2; 32]), b.path()), Err(ClusterKeyError::WrongKey(_))));
    }
}
