//! The gate: the only port users reach. A reverse proxy in front of Node-RED that forwards
//! requests (streaming bodies both ways) and websocket upgrades to the loopback-only Node-RED,
//! presenting the gate's own credential upstream.
//!
//! Every request passes one place, [`proxy::Proxy::handle`], where the access decision sits
//! before forwarding; the proxy itself never decides who may do what.

mod headers;
mod proxy;
mod server;

pub use server::Gate;

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
}
