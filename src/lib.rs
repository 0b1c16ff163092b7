//! redtether: a device agent that supervises Node-RED, guards every endpoint it serves, and
//! (in later parts) keeps a durable audit trail and a tunnel to the platform.
//!
//! Each concern is a module folder; decision logic in each is pure and unit-tested, the I/O
//! around it is tested with real processes in `tests/`.

pub mod audit;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deploy;
pub mod gate;
pub mod heap;
pub mod hub;
pub mod identity;
pub mod pki;
pub mod protocol;
pub mod rfc3339;
pub mod sbom;
pub mod sled_open;
pub mod state_dir;
pub mod supervisor;
pub mod systemd;
pub mod tunnel;

/// The agent's version, as reported by `--version`, `status` and the tunnel hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
