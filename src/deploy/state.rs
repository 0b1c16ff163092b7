//! What the device remembers about deployments, in `<state_dir>/deploy/state.json`, replaced
//! atomically: the highest deployment number accepted (replay protection survives restarts),
//! the generation running and the last good one before it, an apply in progress, and the last
//! outcome (reported to the hub again on every new control stream until it has it).

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The highest deployment number ever accepted.
    pub number: u64,
    /// The generation `node-red` points at, once deployments began.
    pub current: Option<String>,
    /// The generation before it, kept on disk as the last good snapshot.
    pub previous: Option<String>,
    /// Set before the swap and cleared after the outcome is known: found set at start-up, it
    /// means the agent stopped mid-apply.
    pub applying: Option<Applying>,
    pub last: Option<Report>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applying {
    pub id: String,
    pub number: u64,
    pub generation: String,
    pub flows_hash: String,
}

/// A deployment's state as the hub is told (the protocol's type: the last one is kept here too).
pub use redtether_proto::wire::DeployReport as Report;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is damaged: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: crate::state_dir::StateDirError,
    },
}

impl DeployRecord {
    pub fn load(path: &Path) -> Result<DeployRecord, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: path.to_path_buf(), source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployRecord::default()),
            Err(source) => Err(StateError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// Replaces the file atomically and durably (temporary file, fsync, rename, fsync of the
    /// directory): a power cut leaves the old record or the new one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("records always encode");
        crate::state_dir::write_private(path, &bytes)
            .map_err(|source| StateError::Write { path: path.to_path_buf(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::wire::DeployState;

    #[test]
    fn a_missing_record_is_the_empty_one_and_a_saved_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(DeployRecord::load(&path).unwrap(), DeployRecord::default());
        let record = DeployRecord {
            number: 7,
            current: Some("g7".into()),
            previous: Some("g6".into()),
            applying: None,
            last: Some(Report { id: "d".into(), state: DeployState::Applied, detail: serde_json::json!({}) }),
        };
        record.save(&path).unwrap();
        assert_eq!(DeployRecord::load(&path).unwrap(), record);
        std::fs::write(&path, b"{").unwrap();
        assert!(matches!(DeployRecord::load(&path), Err(StateError::Parse { .. })));
    }
}
