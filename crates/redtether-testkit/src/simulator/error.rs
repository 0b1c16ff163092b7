//! The simulator's one error type.

use redtether_proto::wire::{EnrollRefusal, FrameError};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0:?} is not HOST:PORT")]
    BadAddress(String),
    #[error("cannot resolve {hub}: {source}")]
    Resolve {
        hub: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a CA fingerprint (64 hex digits, colons allowed)")]
    BadFingerprint(String),
    #[error("cannot open the shared QUIC endpoint: {0}")]
    Endpoint(#[source] std::io::Error),
    #[error(transparent)]
    Pki(#[from] redtether_pki::PkiError),
    #[error("QUIC crypto: {0}")]
    Crypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("tunnel configuration: {0}")]
    ClientConfig(#[from] redtether_pki::quic::ClientConfigError),
    #[error("QUIC transport setting: {0}")]
    Transport(#[from] quinn::VarIntBoundsExceeded),
    #[error("cannot start a connection: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("writing to the hub: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("reading the hub's answer: {0}")]
    Read(#[from] quinn::ReadToEndError),
    #[error("the stream was already closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the hub refused the enrollment: {}", .0.describe())]
    EnrollRefused(EnrollRefusal),
    #[error("the hub closed the enrollment stream without an answer")]
    NoAnswer,
    #[error("the hub sent a CA other than the pinned one")]
    NotPinned,
    #[error("the hub's signing key is not hex: {0}")]
    HubKey(#[from] hex::FromHexError),
    #[error("no enrollment token for {device}: {reason}")]
    Token { device: String, reason: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: std::time::Duration },
}
