//! `redtether-transport`: the tunnel's connection, whichever way it travels — QUIC (quinn), or
//! TLS 1.3 over TCP with yamux ([`tcp`]) where a network lets no UDP through — behind one
//! [`Connection`] type with QUIC's shape: bidirectional streams either side opens, a close with
//! an application code, the peer's certificates, a round-trip time. The session state machines,
//! forwarded streams, deployments and policies above it are the same for both.

mod conn;
mod error;
pub mod tcp;

pub use conn::{Connection, RecvStream, SendStream, Transport};
pub use error::{ConnectionError, ReadError, WriteError};
