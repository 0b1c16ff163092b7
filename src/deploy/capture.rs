//! What the device runs now, as a snapshot the hub can store and deploy back: the flows, the
//! credentials file still encrypted with the device's secret, the modules from the user dir's
//! package.json, and the environment and settings a deployment set.
//!
//! A portable snapshot ([`capture_portable`]) carries the credentials opened here and sealed to
//! the hub's credentials key instead, so the hub can seal them again for another device. They
//! are plain only in memory, never logged or written.

use super::node_red_credentials::{NodeRedFileError, node_red_decrypt};
use crate::state_dir::{DeployedSnapshot, DeployedSnapshotError};
use redtether_proto::deployment::{Credentials, PORTABLE_LABEL, Snapshot};
use redtether_proto::seal::{SealError, seal};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON of the expected shape: {source}", path.display())]
    Shape {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Deployed(#[from] DeployedSnapshotError),
    /// The hub's key to seal a portable snapshot's credentials to is not hex.
    #[error("the key to seal the credentials to is not hex")]
    SealToNotHex,
    #[error("cannot seal the credentials for the hub: {0}")]
    Seal(#[source] SealError),
    /// Node-RED's credentials file could not be opened to be sealed for the hub.
    #[error("cannot open flows_cred.json: {0}")]
    Credentials(#[source] NodeRedFileError),
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, CaptureError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CaptureError::Shape { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaptureError::Read { path: path.to_path_buf(), source }),
    }
}

fn shaped<T: serde::de::DeserializeOwned>(path: &Path, value: serde_json::Value) -> Result<T, CaptureError> {
    serde_json::from_value(value).map_err(|source| CaptureError::Shape { path: path.to_path_buf(), source })
}

/// The snapshot of the Node-RED user dir `user_dir`.
pub fn capture(user_dir: &Path) -> Result<Snapshot, CaptureError> {
    let flows_path = user_dir.join("flows.json");
    let flows = match read_json(&flows_path)? {
        Some(v) => shaped(&flows_path, v)?,
        None => Vec::new(),
    };
    let credentials = read_json(&user_dir.join("flows_cred.json"))?.map(Credentials::NodeRed);
    let package_path = user_dir.join("package.json");
    let modules = match read_json(&package_path)?.and_then(|p| p.get("dependencies").cloned()) {
        Some(deps) => shaped(&package_path, deps)?,
        None => Default::default(),
    };
    let DeployedSnapshot { env, settings, .. } = DeployedSnapshot::read(user_dir)?.unwrap_or_default();
    Ok(Snapshot { flows, credentials, modules, env, settings })
}

/// The snapshot of `user_dir` with its credentials portable: Node-RED's credentials file opened
/// with the device's `credential_secret` and the credentials (plain JSON) sealed to `seal_to`
/// (hex SPKI DER of the hub's credentials key) with the label [`PORTABLE_LABEL`], as
/// [`Credentials::Portable`].
pub fn capture_portable(user_dir: &Path, credential_secret: &str, seal_to: &str) -> Result<Snapshot, CaptureError> {
    let hub_key = hex::decode(seal_to).map_err(|_| CaptureError::SealToNotHex)?;
    let mut snapshot = capture(user_dir)?;
    snapshot.credentials = match snapshot.credentials {
        None => None,
        Some(Credentials::NodeRed(file)) => {
            let plain = node_red_decrypt(credential_secret, &file).map_err(CaptureError::Credentials)?;
            let plain = serde_json::to_vec(&plain).expect("JSON values always encode");
            Some(Credentials::Portable(seal(&hub_key, PORTABLE_LABEL, &plain).map_err(CaptureError::Seal)?))
        }
        // `capture` reads only Node-RED's file.
        Some(other) => Some(other),
    };
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_portable_capture_seals_the_opened_credentials_to_the_hub() {
        use super::super::node_red_credentials::node_red_encrypt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (hub_pem, hub_spki) = redtether_proto::seal::generate_key();
        let seal_to = hex::encode(&hub_spki);
        std::fs::write(d.join("flows.json"), br#"[{"id":"n1","type":"inject"}]"#).unwrap();
        let no_creds = capture_portable(d, "s3cret", &seal_to).unwrap();
        assert_eq!(no_creds.credentials, None, "no credentials file, no credentials");

        let creds = json!({"n1": {"user": "u", "password": "correct-horse-battery-staple"}});
        let file = node_red_encrypt("s3cret", &creds);
        std::fs::write(d.join("flows_cred.json"), serde_json::to_vec(&file).unwrap()).unwrap();
        let s = capture_portable(d, "s3cret", &seal_to).unwrap();
        let Some(Credentials::Portable(sealed)) = &s.credentials else { panic!("{:?}", s.credentials) };
        assert!(!serde_json::to_string(&s).unwrap().contains("correct-horse-battery-staple"));
        let opened = redtether_proto::seal::unseal(&hub_pem, PORTABLE_LABEL, sealed).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&opened).unwrap(),
            node_red_decrypt("s3cret", &file).unwrap(),
            "the hub's key opens what Node-RED's file holds"
        );
        assert_eq!(s.flows, capture(d).unwrap().flows, "the rest is as captured");
        assert_eq!(s.check(), Err(redtether_proto::deployment::SnapshotError::PortableCredentials));

        assert!(matches!(capture_portable(d, "other", &seal_to), Err(CaptureError::Credentials(_))));
        assert!(matches!(capture_portable(d, "s3cret", "zz"), Err(CaptureError::SealToNotHex)));
        assert!(matches!(capture_portable(d, "s3cret", "00"), Err(CaptureError::Seal(_))));
    }

    #[test]
    fn a_user_dir_becomes_a_deployable_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(capture(d).unwrap().flows.len(), 0, "an empty user dir is an empty snapshot");
        std::fs::write(d.join("flows.json"), br#"[{"id":"n1","type":"inject"}]"#).unwrap();
        std::fs::write(d.join("flows_cred.json"), br#"{"$":"00ff"}"#).unwrap();
        std::fs::write(d.join("package.json"), br#"{"name":"x","dependencies":{"node-red-contrib-y":"1.0.0"}}"#)
            .unwrap();
        std::fs::write(DeployedSnapshot::path(d), br#"{"env":{"SITE":"n"},"settings":{"functionTimeout":3}}"#).unwrap();
        let s = capture(d).unwrap();
        assert_eq!(s.flows, vec![json!({"id": "n1", "type": "inject"})]);
        assert_eq!(s.credentials, Some(Credentials::NodeRed(json!({"$": "00ff"}))));
        assert_eq!(s.modules["node-red-contrib-y"], "1.0.0");
        assert_eq!(s.env["SITE"], "n");
        assert_eq!(s.settings["functionTimeout"], 3);
        assert_eq!(s.check(), Ok(()), "what is captured can be deployed back");
        std::fs::write(d.join("flows.json"), b"{").unwrap();
        assert!(matches!(capture(d), Err(CaptureError::Shape { .. })));
    }
}
