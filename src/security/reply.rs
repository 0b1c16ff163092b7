//! What the daemon says about the security settings: in `status`, and in answer to `reload`.

use serde::{Deserialize, Serialize};

/// Which security settings the gate enforces, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// `[policy] managed`.
    pub managed: bool,
    /// `file` (agent.toml's `[gate]`) or `platform` (the policy numbered `number`).
    pub source: PolicySource,
    pub number: Option<u64>,
    /// SHA-256 of the platform policy's document.
    pub hash: Option<String>,
    pub applied_at: Option<String>,
    /// The last platform policy refused, if any since the start.
    pub last_refused: Option<RefusedPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    File,
    Platform,
}

impl PolicySource {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::File => "file",
            PolicySource::Platform => "platform",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedPolicy {
    pub number: u64,
    pub reason: String,
    pub at: String,
}

/// The answer to `reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The file read (or "built-in defaults").
    pub file: String,
    /// Whether it was valid and is applied; if not, the running settings stay.
    pub reloaded: bool,
    /// Why not: the configuration error, and its key when it has one.
    pub error: Option<String>,
    pub key: Option<String>,
    /// The security settings in force after the reload.
    pub source: PolicySource,
    /// What changed in the settings the gate enforces (empty when a platform policy is in force).
    pub changes: serde_json::Value,
    /// Keys that changed but take effect only when the agent restarts.
    pub needs_restart: Vec<String>,
}
