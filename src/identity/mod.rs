//! The device's identity for the tunnel, in `<state_dir>/identity/` (0700, files 0600): its
//! private key (made on the device, never sent anywhere), its certificate, the hub's CA, and
//! where the hub is.

use crate::state_dir::{StateDir, StateDirError, write_private};
use redtether_pki::{CertInfo, PkiError, cert_info, pem_to_der};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Files(#[from] StateDirError),
    /// A file is there but unusable.
    #[error("identity file {}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
}

/// Where the hub is and what was pinned at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubInfo {
    /// `host:port` of the hub's QUIC listener that enrolled this device.
    pub hub: String,
    /// Every hub address given at enrollment (`enroll --hub a --hub b`), in the order given.
    /// Empty in identities made before there could be several: then `hub` is the one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<String>,
    /// The name the hub's certificate must carry (the host part of `hub`).
    pub server_name: String,
    pub device_id: String,
    /// SHA-256 of the hub's CA certificate.
    pub ca_fingerprint: String,
    /// The hub's Ed25519 public key, hex (for signed assertions and deployments).
    pub hub_signing_key: String,
}

impl HubInfo {
    /// The hub addresses stored at enrollment: the list, or the enrolling hub alone.
    pub fn hub_list(&self) -> Vec<String> {
        if self.hubs.is_empty() { vec![self.hub.clone()] } else { self.hubs.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub info: HubInfo,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// The renewed key and certificate together, while they replace the old ones.
const RENEWED: &str = "renewed.pem";

/// The key block and the certificate block(s) of `renewed.pem`.
fn split_renewed(both: &str) -> Option<(String, String)> {
    let at = both.find("-----BEGIN CERTIFICATE-----")?;
    let (key, cert) = both.split_at(at);
    (key.contains("PRIVATE KEY-----") && !cert.is_empty()).then(|| (key.to_string(), cert.to_string()))
}

fn folder(dir: &StateDir) -> PathBuf {
    dir.root().join("identity")
}

impl Identity {
    /// The stored identity, or `None` when the device is not enrolled.
    pub fn load(dir: &StateDir) -> Result<Option<Identity>, IdentityError> {
        let f = folder(dir);
        let info_path = f.join("hub.json");
        let Ok(info_text) = std::fs::read_to_string(&info_path) else { return Ok(None) };
        let unusable = |path: PathBuf, reason: String| IdentityError::Unusable { path, reason };
        let info: HubInfo = serde_json::from_str(&info_text).map_err(|e| unusable(info_path.clone(), e.to_string()))?;
        let read =
            |name: &str| std::fs::read_to_string(f.join(name)).map_err(|e| unusable(f.join(name), e.to_string()));
        // A renewal in progress (see `save_renewed`) is complete in `renewed.pem`: it wins.
        let (key_pem, cert_pem) = match std::fs::read_to_string(f.join(RENEWED)) {
            Ok(both) => {
                split_renewed(&both).ok_or_else(|| unusable(f.join(RENEWED), "not a key and a certificate".into()))?
            }
            Err(_) => (read("device.key")?, read("device.pem")?),
        };
        Ok(Some(Identity { info, key_pem, cert_pem, ca_pem: read("ca.pem")? }))
    }

    /// Swaps in a renewed key and certificate so that a crash at any point leaves either the
    /// old pair or the new one, never a key with another key's certificate: the new pair is
    /// first written as one file (atomically), then the two files are replaced, then that one
    /// file goes.
    pub fn save_renewed(&self, dir: &StateDir) -> Result<(), IdentityError> {
        let f = folder(dir);
        write_private(&f.join(RENEWED), format!("{}{}", self.key_pem, self.cert_pem).as_bytes())?;
        write_private(&f.join("device.key"), self.key_pem.as_bytes())?;
        write_private(&f.join("device.pem"), self.cert_pem.as_bytes())?;
        std::fs::remove_file(f.join(RENEWED)).map_err(|source| StateDirError::Io { path: f.join(RENEWED), source })?;
        Ok(())
    }

    /// Stores the identity; the hub information is written last, so a half-written identity
    /// is never taken for an enrollment.
    pub fn save(&self, dir: &StateDir) -> Result<(), IdentityError> {
        let f = folder(dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&f)
            .map_err(|source| StateDirError::Io { path: f.clone(), source })?;
        // A new enrollment replaces everything, an unfinished renewal of an older one included.
        let _ = std::fs::remove_file(f.join(RENEWED));
        write_private(&f.join("device.key"), self.key_pem.as_bytes())?;
        write_private(&f.join("device.pem"), self.cert_pem.as_bytes())?;
        write_private(&f.join("ca.pem"), self.ca_pem.as_bytes())?;
        let info = serde_json::to_vec_pretty(&self.info).unwrap_or_default();
        write_private(&f.join("hub.json"), &info)?;
        Ok(())
    }

    pub fn certificate(&self) -> Result<CertInfo, PkiError> {
        cert_info(&pem_to_der(&self.cert_pem)?)
    }
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_privately_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        assert!(Identity::load(&sd).unwrap().is_none(), "not enrolled");
        let id = Identity {
            info: HubInfo {
                hub: "hub:7443".into(),
                hubs: vec!["dead:7443".into(), "hub:7443".into()],
                server_name: "hub".into(),
                device_id: "d".into(),
                ca_fingerprint: "f".into(),
                hub_signing_key: "k".into(),
            },
            key_pem: "key".into(),
            cert_pem: "cert".into(),
            ca_pem: "ca".into(),
        };
        id.save(&sd).unwrap();
        let back = Identity::load(&sd).unwrap().unwrap();
        assert_eq!(back.info, id.info);
        assert_eq!(back.key_pem, "key");
        for f in ["device.key", "device.pem", "ca.pem", "hub.json"] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dir.path().join("identity").join(f)).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn an_identity_from_before_hub_lists_loads_with_its_one_hub() {
        let old =
            r#"{"hub":"hub:7443","server_name":"hub","device_id":"d","ca_fingerprint":"f","hub_signing_key":"k"}"#;
        let info: HubInfo = serde_json::from_str(old).unwrap();
        assert!(info.hubs.is_empty());
        assert_eq!(info.hub_list(), ["hub:7443"]);
        let listed = HubInfo { hubs: vec!["a:1".into(), "hub:7443".into()], ..info };
        assert_eq!(listed.hub_list(), ["a:1", "hub:7443"]);
    }

    #[test]
    fn a_renewal_cut_short_leaves_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let key = |n: u8| format!("-----BEGIN PRIVATE KEY-----\nk{n}\n-----END PRIVATE KEY-----\n");
        let cert = |n: u8| format!("-----BEGIN CERTIFICATE-----\nc{n}\n-----END CERTIFICATE-----\n");
        let info = HubInfo {
            hub: "h:1".into(),
            hubs: Vec::new(),
            server_name: "h".into(),
            device_id: "d".into(),
            ca_fingerprint: "f".into(),
            hub_signing_key: "k".into(),
        };
        let old = Identity { info, key_pem: key(1), cert_pem: cert(1), ca_pem: "ca".into() };
        old.save(&sd).unwrap();
        let new = Identity { key_pem: key(2), cert_pem: cert(2), ..old.clone() };
        new.save_renewed(&sd).unwrap();
        let back = Identity::load(&sd).unwrap().unwrap();
        assert_eq!((back.key_pem, back.cert_pem), (key(2), cert(2)));
        assert!(!dir.path().join("identity/renewed.pem").exists());

        // A crash after the new key replaced the old one but before the certificate did: the
        // pair in renewed.pem is what loads, not the mixed files.
        let f = dir.path().join("identity");
        std::fs::write(f.join("renewed.pem"), format!("{}{}", key(3), cert(3))).unwrap();
        std::fs::write(f.join("device.key"), key(3)).unwrap();
        let back = Identity::load(&sd).unwrap().unwrap();
        assert_eq!((back.key_pem, back.cert_pem), (key(3), cert(3)));
        // A new enrollment is not overridden by an old unfinished renewal.
        old.save(&sd).unwrap();
        assert_eq!(Identity::load(&sd).unwrap().unwrap().key_pem, key(1));
    }
}
