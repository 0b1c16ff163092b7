//! The supervisor owns Node-RED: installs it when missing, writes its settings, starts it in its
//! own process group, health-checks it, restarts it with backoff, and stops it cleanly.
//!
//! It runs as one actor task ([`Supervisor::run`]); the rest of the agent talks to it through a
//! [`SupervisorHandle`]: status on a `watch` channel, the current upstream address for the
//! gate, and commands with replies.
//!
//! Decision logic lives in pure modules: [`policy`] (when to restart), [`health`] (when a run is
//! hung), [`launch`] (the command line), [`settings_js`] (the settings file).

mod child;
pub mod credential;
pub mod health;
pub mod install;
pub mod launch;
mod leftovers;
mod logs;
pub mod policy;
mod runner;
pub mod settings_js;

pub use credential::{Perm, UpstreamTokens};
pub use redtether_proto::wire::{NodeRedState, NodeRedStatus};
pub use runner::{Supervisor, SupervisorHandle};
pub use settings_js::{ADMIN_ROOT, GATE_TOKEN_HEADER};

/// Errors a caller of the supervisor can see.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The supervisor task is no longer running (the agent is stopping).
    #[error("the supervisor is not running")]
    Gone,
    /// A restart was asked for while Node-RED cannot be restarted (for example while npm is
    /// still installing it).
    #[error("cannot restart Node-RED now: {0}")]
    Busy(String),
}
