//! What the device runs now, as a snapshot the hub can store and deploy back: the flows, the
//! credentials file still encrypted with the device's secret, the modules from the user dir's
//! package.json, and the environment and settings a deployment set.

use crate::state_dir::{DeployedSnapshot, DeployedSnapshotError};
use redtether_proto::deployment::{Credentials, Snapshot};
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
