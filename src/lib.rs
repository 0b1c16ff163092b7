//! redtether, the device agent: supervises Node-RED, guards every endpoint it serves, keeps a
//! durable hash-chained audit trail, and holds a tunnel to the platform.
//!
//! Each concern is a module folder; decision logic in each is pure and unit-tested, the I/O
//! around it is tested with real processes in `tests/`. What the agent shares with the hub
//! lives in the workspace's crates: the wire protocol and both control sessions
//! (`redtether-proto`), certificates (`redtether-pki`), and the daemon plumbing
//! (`redtether-host`). docs/architecture.md has the map and which module may use which.

pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deploy;
pub mod gate;
pub mod http_client;
pub mod identity;
pub mod logbuf;
pub mod metrics;
pub mod resources;
pub mod sbom;
pub mod security;
pub mod state_dir;
pub mod supervisor;
pub mod tunnel;

/// The agent's version, as reported by `--version`, `status` and the tunnel hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
