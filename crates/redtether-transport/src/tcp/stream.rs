//! One yamux stream split in a sending and a receiving half, as QUIC's streams come. The halves
//! share the stream; resetting or stopping either drops it, which makes yamux reset it (RST),
//! the nearest thing to QUIC's reset and stop-sending (yamux carries no error code).

use crate::error::{ConnectionError, ReadError, WriteError};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

struct Shared {
    stream: Mutex<Option<Compat<yamux::Stream>>>,
    /// The connection's ending, once it ended: what a failed read or write is put down to.
    closed: watch::Receiver<Option<ConnectionError>>,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(Pin<&mut Compat<yamux::Stream>>) -> Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let mut guard = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(stream) => f(Pin::new(stream)),
            None => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "stream reset"))),
        }
    }

    fn drop_stream(&self) {
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn is_dropped(&self) -> bool {
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    fn connection_error(&self) -> Option<ConnectionError> {
        self.closed.borrow().clone()
    }
}

pub struct TcpSend(Arc<Shared>);
pub struct TcpRecv(Arc<Shared>);

pub(crate) fn split(stream: yamux::Stream, closed: watch::Receiver<Option<ConnectionError>>) -> (TcpSend, TcpRecv) {
    let shared = Arc::new(Shared { stream: Mutex::new(Some(stream.compat())), closed });
    (TcpSend(Arc::clone(&shared)), TcpRecv(shared))
}

impl TcpSend {
    /// Ends the stream at once, whatever was not yet delivered.
    pub fn reset(&mut self) {
        self.0.drop_stream();
    }

    pub(crate) fn write_error(&self, e: io::Error) -> WriteError {
        if let Some(c) = self.0.connection_error() {
            WriteError::ConnectionLost(c)
        } else if self.0.is_dropped() {
            WriteError::Closed
        } else {
            tracing::trace!(error = %e, "yamux write failed");
            WriteError::Stopped(0)
        }
    }
}

impl TcpRecv {
    /// Stops reading: the stream is dropped (and reset, if the peer still sends).
    pub fn stop(&mut self) {
        self.0.drop_stream();
    }

    pub(crate) fn read_error(&self, e: io::Error) -> ReadError {
        if let Some(c) = self.0.connection_error() {
            ReadError::ConnectionLost(c)
        } else if self.0.is_dropped() {
            ReadError::Closed
        } else {
            tracing::trace!(error = %e, "yamux read failed");
            ReadError::Reset(0)
        }
    }
}

impl AsyncWrite for TcpSend {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.with(|s| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.with(|s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.with(|s| s.poll_shutdown(cx))
    }
}

impl AsyncRead for TcpRecv {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.with(|s| s.poll_read(cx, buf))
    }
}
