//! The control socket: how `redtether status` (and every CLI command that reads or changes the
//! running daemon's state) talks to the daemon.
//!
//! A unix stream socket in the state directory, mode 0600, peers checked by uid. One JSON
//! request per line, answered by one JSON line (`{"ok":true,"result":...}` or
//! `{"ok":false,"error":"..."}`).

mod client;
mod protocol;
mod server;

pub use client::{ClientError, request};
pub use protocol::{ControlRequest, ControlResponse};
pub use server::{ControlServer, Handler};

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
