//! How a connection or a stream ended, the same for both transports: what the agent's
//! reconnect machine classifies (`redtether_proto::session::Closed`) and the hub logs.

/// Why a connection is over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer closed it with an application error code (the protocol's `codes`).
    #[error("closed by peer: {reason} (code {code:#x})")]
    ApplicationClosed { code: u64, reason: String },
    /// A transport-level close, sent or received: a TLS alert is `0x100 + alert`, as QUIC
    /// numbers them.
    #[error("transport error {code:#x}: {reason}")]
    TransportClosed { code: u64, reason: String },
    /// The peer answered with a stateless reset (QUIC): it restarted and lost the connection.
    #[error("reset by peer")]
    Reset,
    /// Nothing heard from the peer for the idle timeout.
    #[error("timed out")]
    TimedOut,
    /// This side closed it.
    #[error("closed")]
    LocallyClosed,
    /// Anything else: the TCP connection broke, a version mismatch.
    #[error("{0}")]
    Lost(String),
}

impl From<quinn::ConnectionError> for ConnectionError {
    fn from(e: quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        match e {
            E::ApplicationClosed(c) => ConnectionError::ApplicationClosed {
                code: c.error_code.into_inner(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            E::ConnectionClosed(c) => {
                ConnectionError::TransportClosed { code: c.error_code.into(), reason: c.to_string() }
            }
            E::TransportError(t) => ConnectionError::TransportClosed { code: t.code.into(), reason: t.to_string() },
            E::Reset => ConnectionError::Reset,
            E::TimedOut => ConnectionError::TimedOut,
            E::LocallyClosed => ConnectionError::LocallyClosed,
            other => ConnectionError::Lost(other.to_string()),
        }
    }
}

/// A read that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The peer reset the stream (QUIC: with this code; TCP: yamux carries none, 0).
    #[error("stream reset by peer (code {0})")]
    Reset(u64),
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// This side already stopped or reset the stream.
    #[error("stream closed")]
    Closed,
}

/// A write that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The peer stopped reading the stream.
    #[error("stream stopped by peer (code {0})")]
    Stopped(u64),
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// This side already finished or reset the stream.
    #[error("stream closed")]
    Closed,
}

impl From<quinn::ReadError> for ReadError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => ReadError::Reset(code.into_inner()),
            quinn::ReadError::ConnectionLost(c) => ReadError::ConnectionLost(c.into()),
            _ => ReadError::Closed,
        }
    }
}

impl From<quinn::WriteError> for WriteError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => WriteError::Stopped(code.into_inner()),
            quinn::WriteError::ConnectionLost(c) => WriteError::ConnectionLost(c.into()),
            _ => WriteError::Closed,
        }
    }
}
