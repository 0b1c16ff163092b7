//! The gate: the only port users reach. A reverse proxy in front of Node-RED that decides, for
//! every request, whether and as whom it reaches Node-RED.
//!
//! ```text
//! bytes ─ framing guard ─ hyper ─ canonicalise ─ rate limit ─ authenticate ─ decide ─ audit
//!                                                                              │
//!                            Node-RED (gate's per-user credential) ◀─ forward ─┴─ or answer here
//! ```
//!
//! Pure parts: [`canon`] (request targets), [`space`] (what part of Node-RED a path is),
//! [`decision`] (roles, tokens, protection mode), [`ratelimit`] (token buckets), [`cors`],
//! [`framing`] (message framing), [`auth::header`] (Authorization parsing).

pub mod auth;
pub mod canon;
pub mod cors;
pub mod decision;
pub mod framing;
mod headers;
mod local;
pub mod metrics;
mod pipeline;
mod proxy;
pub use redtether_host::ratelimit;
mod responses;
pub mod rules;
mod server;
pub mod space;

pub use decision::{NodeMode, Policy};
pub use local::{TokenInfo, unix_now};
pub use metrics::GateMetrics;
pub use pipeline::{CHUNKED_BUDGET, Caller, MAX_CHUNKED_BODY, Pipeline, PipelineParts, platform_user};
pub use proxy::Proxy;
pub use server::{Gate, serve_platform_stream};

/// Errors of the gate that stop it from serving.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// `gate.listen` could not be bound.
    #[error("cannot listen on {addr} (gate.listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// HTTPS was asked for and cannot be set up.
    #[error(transparent)]
    Tls(#[from] redtether_host::tls_server::TlsError),
}
