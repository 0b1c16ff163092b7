//! The last platform policy this device accepted, kept durably in `<state_dir>/policy.json`
//! (0600, written whole and synced before it is enforced): it is what the device enforces
//! offline, across restarts, until a newer one replaces it. The signed envelope is kept as it
//! came, and checked again at every start.

use super::SecurityError;
use crate::state_dir::{StateDir, write_private};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub number: u64,
    /// SHA-256 of the document.
    pub hash: String,
    /// RFC 3339, when this device first enforced it.
    pub applied_at: String,
    /// The hub's signed envelope, exactly as received.
    pub envelope: String,
}

pub fn path(dir: &StateDir) -> PathBuf {
    dir.root().join("policy.json")
}

/// The stored policy, if there is one.
pub fn load(dir: &StateDir) -> Result<Option<StoredPolicy>, SecurityError> {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|source| SecurityError::Unreadable { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecurityError::Read { path, source }),
    }
}

pub fn save(dir: &StateDir, policy: &StoredPolicy) -> Result<(), SecurityError> {
    let bytes = serde_json::to_vec_pretty(policy).expect("a stored policy always encodes");
    write_private(&path(dir), &bytes)?;
    Ok(())
}
