//! The agent's state directory: its layout on top of the daemon's state directory
//! (`redtether_host::state_dir`: the lock, the control socket, private files).
//!
//! ```text
//! <state_dir>/                 0700
//!   lock                       held (flock) by the running agent
//!   control.sock               control socket, 0600
//!   credential-secret          Node-RED's credentialSecret, 0600, made once and kept
//!   audit/                     the audit journal (sled), hash-chained
//!   tokens.json                bearer tokens, as SHA-256 digests, 0600
//!   initial-admin-password     the first-run editor owner's password, when no users are configured
//!   gate-tls/                  the gate's self-signed certificate, when asked for
//!   runtime/                   Node-RED installed by npm (node_modules/node-red)
//!   node-red.instance          marker of the last Node-RED run (see supervisor::leftovers)
//!   node-red/                  Node-RED's userDir: flows.json, flows_cred.json, settings.js (0600);
//!                              after the first deployment a symlink into node-red.d/
//!   node-red.d/g<N>/           snapshot generations (see deploy::layout)
//!   deploy/                    the deployer's state
//!   identity/                  the tunnel identity (see identity)
//! ```

mod deployed;

pub use deployed::{DeployedSnapshot, DeployedSnapshotError};
pub use redtether_host::state_dir::{StateDirError, StateLock, random_secret, write_private};
use std::fs;
use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// Where deployed snapshot generations live; once it exists, the user dir is a symlink into it.
pub const GENERATIONS: &str = "node-red.d";
/// The file in a deployed generation that describes it (see `deploy::layout`).
pub const SNAPSHOT_FILE: &str = "redtether-snapshot.json";

/// Paths inside the agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir(redtether_host::state_dir::StateDir);

impl Deref for StateDir {
    type Target = redtether_host::state_dir::StateDir;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir(redtether_host::state_dir::StateDir::new(root).owned_by("redtether agent"))
    }

    pub fn credential_secret(&self) -> PathBuf {
        self.root().join("credential-secret")
    }
    /// The audit journal (a sled database).
    pub fn audit_dir(&self) -> PathBuf {
        self.root().join("audit")
    }
    /// Bearer tokens (hashed), 0600.
    pub fn tokens_file(&self) -> PathBuf {
        self.root().join("tokens.json")
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("runtime")
    }
    pub fn node_red_user_dir(&self) -> PathBuf {
        self.root().join("node-red")
    }
    pub fn node_red_settings(&self) -> PathBuf {
        self.node_red_user_dir().join("settings.js")
    }
    /// Names the current Node-RED run (the marker in its environment), so an agent that
    /// restarts after being killed can end what the previous one left running.
    pub fn node_red_instance_file(&self) -> PathBuf {
        self.root().join("node-red.instance")
    }

    /// Creates the directory tree (0700) if it is missing.
    pub fn create(&self) -> Result<(), StateDirError> {
        self.0.create()?;
        // Once deployments began, the user dir is a symlink to a snapshot generation, and a
        // missing one is restored by the deployer's recovery, not replaced by an empty folder.
        let user_dir = self.node_red_user_dir();
        if fs::symlink_metadata(&user_dir).is_err() && !self.root().join(GENERATIONS).exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&user_dir)
                .map_err(|source| StateDirError::Io { path: user_dir.clone(), source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_dir_is_made_until_deployments_began() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join("state"));
        sd.create().unwrap();
        assert!(sd.node_red_user_dir().is_dir());
        let other = StateDir::new(dir.path().join("deployed"));
        std::fs::create_dir_all(other.root().join(GENERATIONS)).unwrap();
        other.create().unwrap();
        assert!(!other.node_red_user_dir().exists(), "recovery restores it, not create");
    }
}
