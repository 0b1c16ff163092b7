//! `redtether-snapshot.json` in a deployed generation: which deployment it is, and the
//! environment and settings overrides the supervisor applies at every start of Node-RED. The
//! deployer writes it, the supervisor and snapshot capture read it; this type is their contract.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployedSnapshot {
    /// The deployment's id and number (absent in a generation made before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// Environment variables for Node-RED.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Node-RED settings overrides (the protocol's allow-list).
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployedSnapshotError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a deployed snapshot's description: {source}", path.display())]
    Shape {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl DeployedSnapshot {
    /// The file in the Node-RED user dir `user_dir`.
    pub fn path(user_dir: &Path) -> PathBuf {
        user_dir.join(super::SNAPSHOT_FILE)
    }

    /// The file's bytes (pretty JSON, like the other files of a generation).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a deployed snapshot's description always encodes")
    }

    /// The description in `user_dir`; none before the first deployment.
    pub fn read(user_dir: &Path) -> Result<Option<DeployedSnapshot>, DeployedSnapshotError> {
        let path = Self::path(user_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|source| DeployedSnapshotError::Shape { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DeployedSnapshotError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back_missing_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DeployedSnapshot::read(dir.path()).unwrap(), None);
        let d = DeployedSnapshot {
            deployment: Some("d1".into()),
            number: Some(3),
            env: BTreeMap::from([("SITE".into(), "north".into())]),
            settings: serde_json::Map::from_iter([("functionTimeout".into(), serde_json::json!(5))]),
        };
        std::fs::write(DeployedSnapshot::path(dir.path()), d.to_json()).unwrap();
        assert_eq!(DeployedSnapshot::read(dir.path()).unwrap(), Some(d));
        std::fs::write(DeployedSnapshot::path(dir.path()), br#"{"env":{"A":1}}"#).unwrap();
        assert!(matches!(DeployedSnapshot::read(dir.path()), Err(DeployedSnapshotError::Shape { .. })));
    }
}
