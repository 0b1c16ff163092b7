//! The control socket: how `redtether status` (and every CLI command that reads or changes the
//! running daemon's state) talks to the daemon.
//!
//! A unix stream socket in the state directory, mode 0600, peers checked by uid. One JSON
//! request per line, answered by one JSON line (`{"ok":true,"result":...}` or
//! `{"ok":false,"error":"..."}`).

mod protocol;

pub use protocol::{
    AuditPage, ControlRequest, EditorPermissions, EditorSession, GateStatus, NodeRedRestarted, PolicyInfo,
    PolicySource, RefusedPolicy, ReloadReply, StatusReply, TokenCreated, TokenRevoked, TunnelReloaded,
};
pub use redtether_host::control::{ClientError, ControlError, ControlResponse, ControlServer, Handler, request};
