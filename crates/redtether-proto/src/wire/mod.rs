//! The tunnel's wire protocol, version 1: ALPNs, frames and their codec, the messages typed per
//! direction, stream headers and error codes. Types and codecs only — no I/O — so every byte
//! sequence can be tested here. docs/protocol.md describes the same thing for people.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of JSON: an object whose `type`
//! names the message. A frame longer than [`MAX_FRAME`], or one that is not JSON, or not a
//! known message, is an error that closes the stream it came on (never the connection); a
//! known message that travels the other way (a `welcome` sent to the hub) is an unexpected
//! frame.

mod control;
mod enroll;
mod frame;
mod status;
mod stream;

pub use control::{AgentFrame, Command, DeployReport, DeployState, HubFrame, PolicyReport, PolicyState};
pub use enroll::{EnrollRefusal, EnrollRequest, EnrollResponse};
pub use frame::{FrameDecoder, FrameError, Message, encode};
pub use status::{DeviceResources, DeviceStatus, NodeRedState, NodeRedStatus};
pub use stream::{LogItem, LogLine, LogStream, LogsRequest, StreamHeader, StreamKind};

/// ALPN of the tunnel proper (a client certificate from the hub's CA is required).
pub const ALPN: &[u8] = b"redtether/1";
/// ALPN of enrollment (no client certificate yet; a one-time token instead).
pub const ENROLL_ALPN: &[u8] = b"redtether-enroll/1";
/// The tunnel's ALPN over TLS-over-TCP (the fallback where UDP is blocked): the same protocol,
/// streams multiplexed by yamux.
pub const TCP_ALPN: &[u8] = b"redtether-tcp/1";
/// Enrollment's ALPN over TLS-over-TCP.
pub const TCP_ENROLL_ALPN: &[u8] = b"redtether-enroll-tcp/1";
/// The protocol version in `hello` and `welcome`.
pub const VERSION: u32 = 1;
/// Largest frame accepted, in bytes of JSON.
pub const MAX_FRAME: usize = 1 << 20;

/// QUIC application error codes, for closing streams and connections.
pub mod codes {
    /// Orderly shutdown of one side.
    pub const SHUTDOWN: u32 = 0x01;
    /// A frame that is not JSON or not a known message.
    pub const MALFORMED_FRAME: u32 = 0x10;
    /// A frame over [`super::MAX_FRAME`].
    pub const FRAME_TOO_LARGE: u32 = 0x11;
    /// A known message where it makes no sense (a second `hello`, a message of the other
    /// direction).
    pub const UNEXPECTED_FRAME: u32 = 0x12;
    /// The peer speaks a protocol version this side does not.
    pub const VERSION_MISMATCH: u32 = 0x13;
    /// The tunnel ALPN without a client certificate.
    pub const CERTIFICATE_REQUIRED: u32 = 0x20;
    /// The device's certificate was revoked.
    pub const REVOKED: u32 = 0x21;
    /// Another connection of the same device replaced this one.
    pub const REPLACED: u32 = 0x22;
    /// An operator had the hub end this connection (`POST /api/devices/{id}/disconnect`): the
    /// device reconnects as after a lost path.
    pub const DISCONNECTED: u32 = 0x23;
    /// A forwarded stream whose assertion does not allow what it asks (a `logs` stream for a role
    /// that may not read logs, or without a valid assertion).
    pub const STREAM_REFUSED: u32 = 0x24;
    /// In an `error` frame that does not close the stream: the hub could not renew the
    /// certificate (the device keeps its current one and tries again later).
    pub const RENEW_REFUSED: u32 = 0x30;
}
