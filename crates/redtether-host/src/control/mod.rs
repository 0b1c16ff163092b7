//! The control socket both daemons serve for their CLI: a unix stream socket in the state
//! directory, mode 0600, peers checked by uid. One JSON request per line, answered by one JSON
//! line (`{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`). Each daemon has its own
//! request type; the client reads each answer as the type the request promises.

mod client;
mod server;

pub use client::{ClientError, request};
pub use server::{ControlServer, Handler};

use serde::{Deserialize, Serialize};

/// Longest request line a daemon reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Errors of the daemon's side of the socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created.
    #[error("cannot create the control socket {}: {source}", path.display())]
    Bind {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlResponse {
    pub fn ok(result: impl Serialize) -> Self {
        match serde_json::to_value(result) {
            Ok(value) => ControlResponse { ok: true, result: Some(value), error: None },
            Err(e) => ControlResponse::error(format!("the answer could not be encoded: {e}")),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        ControlResponse { ok: false, result: None, error: Some(message.into()) }
    }
}
