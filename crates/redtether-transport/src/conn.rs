//! [`Connection`], [`SendStream`] and [`RecvStream`]: one type each over both transports, with
//! the operations the tunnel uses, named as quinn names them.

use crate::error::{ConnectionError, ReadError, WriteError};
use crate::tcp::{TcpConnection, TcpRecv, TcpSend};
use rustls_pki_types::CertificateDer;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Which transport a connection travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Quic,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tunnel connection; cheap to clone (handles to one connection).
#[derive(Clone)]
pub enum Connection {
    Quic(quinn::Connection),
    Tcp(TcpConnection),
}

impl From<quinn::Connection> for Connection {
    fn from(c: quinn::Connection) -> Self {
        Connection::Quic(c)
    }
}

impl From<TcpConnection> for Connection {
    fn from(c: TcpConnection) -> Self {
        Connection::Tcp(c)
    }
}

impl Connection {
    pub fn transport(&self) -> Transport {
        match self {
            Connection::Quic(_) => Transport::Quic,
            Connection::Tcp(_) => Transport::Tcp,
        }
    }

    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        match self {
            Connection::Quic(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendStream::Quic(s), RecvStream::Quic(r)))
            }
            Connection::Tcp(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendStream::Tcp(s), RecvStream::Tcp(r)))
            }
        }
    }

    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        match self {
            Connection::Quic(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendStream::Quic(s), RecvStream::Quic(r)))
            }
            Connection::Tcp(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendStream::Tcp(s), RecvStream::Tcp(r)))
            }
        }
    }

    /// Closes the connection with an application error code and a reason.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Connection::Quic(c) => c.close(code.into(), reason),
            Connection::Tcp(c) => c.close(code, reason),
        }
    }

    /// Why the connection ended, once it did.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        match self {
            Connection::Quic(c) => c.close_reason().map(Into::into),
            Connection::Tcp(c) => c.close_reason(),
        }
    }

    /// Waits until the connection ends.
    pub async fn closed(&self) -> ConnectionError {
        match self {
            Connection::Quic(c) => c.closed().await.into(),
            Connection::Tcp(c) => c.closed().await,
        }
    }

    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Connection::Quic(c) => c.remote_address(),
            Connection::Tcp(c) => c.peer().remote,
        }
    }

    /// The current estimate of the round trip to the peer.
    pub fn rtt(&self) -> Duration {
        match self {
            Connection::Quic(c) => c.rtt(),
            Connection::Tcp(c) => c.rtt(),
        }
    }

    /// The certificate chain the peer presented (verified by the TLS layer), if any.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match self {
            Connection::Quic(c) => {
                c.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok().map(|certs| *certs)
            }
            Connection::Tcp(c) => c.peer().certificates.clone(),
        }
    }

    /// The protocol the TLS handshake agreed on.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match self {
            Connection::Quic(c) => c
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol),
            Connection::Tcp(c) => c.peer().alpn.clone(),
        }
    }
}

/// The sending half of a bidirectional stream.
pub enum SendStream {
    Quic(quinn::SendStream),
    Tcp(TcpSend),
}

impl SendStream {
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        match self {
            SendStream::Quic(s) => Ok(s.write_all(buf).await?),
            SendStream::Tcp(s) => match AsyncWriteExt::write_all(s, buf).await {
                Ok(()) => Ok(()),
                Err(e) => Err(s.write_error(e)),
            },
        }
    }

    /// Says nothing more will be written; what was written is still delivered.
    pub async fn finish(&mut self) -> Result<(), WriteError> {
        match self {
            SendStream::Quic(s) => s.finish().map_err(|_| WriteError::Closed),
            SendStream::Tcp(s) => s.shutdown().await.map_err(|e| s.write_error(e)),
        }
    }

    /// Abandons the stream at once (QUIC: with `code`; TCP: yamux resets it without one).
    pub fn reset(&mut self, code: u32) {
        match self {
            SendStream::Quic(s) => {
                let _ = s.reset(code.into());
            }
            SendStream::Tcp(s) => s.reset(),
        }
    }

    /// Waits until the peer has everything sent, or stopped the stream (QUIC). Over TCP the
    /// bytes are with the kernel once written and flushed, which is all yamux can say.
    pub async fn stopped(&mut self) {
        match self {
            SendStream::Quic(s) => {
                let _ = s.stopped().await;
            }
            SendStream::Tcp(s) => {
                let _ = s.flush().await;
            }
        }
    }
}

/// The receiving half of a bidirectional stream.
pub enum RecvStream {
    Quic(quinn::RecvStream),
    Tcp(TcpRecv),
}

impl RecvStream {
    /// Bytes read into `buf`; `None` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        match self {
            RecvStream::Quic(s) => Ok(s.read(buf).await?),
            RecvStream::Tcp(s) => match AsyncReadExt::read(s, buf).await {
                Ok(0) if !buf.is_empty() => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(e) => Err(s.read_error(e)),
            },
        }
    }

    /// Everything up to the end of the stream, at most `limit` bytes (more is an error).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Some(n) = self.read(&mut buf).await? {
            if out.len() + n > limit {
                return Err(ReadError::Closed);
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// Stops reading: the peer's further writes fail (QUIC: with `code`).
    pub fn stop(&mut self, code: u32) {
        match self {
            RecvStream::Quic(s) => {
                let _ = s.stop(code.into());
            }
            RecvStream::Tcp(s) => s.stop(),
        }
    }
}

/// The most handed to quinn in one write. quinn copies each write into an allocation of its own
/// until the peer acknowledges it; one of hyper's body chunks (up to ~400 KiB) would be over
/// glibc's mmap threshold (256 KiB, `redtether_host::heap::MMAP_THRESHOLD`, a crate this one
/// does not link), a fresh mapping per write whose every page faults in, is zeroed by the kernel
/// and is unmapped again: 150k page faults/s in the agent during a bulk download. Pieces of this
/// size come from the heap and are reused.
const QUIC_WRITE_PIECE: usize = 64 * 1024;

impl AsyncWrite for SendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SendStream::Quic(s) => {
                Pin::new(s).poll_write(cx, &buf[..buf.len().min(QUIC_WRITE_PIECE)]).map_err(io::Error::from)
            }
            SendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    /// quinn copies whatever it is given into its send buffer, slice by slice, so slices are
    /// handed to it one after the other. Saying so matters: hyper flattens the head and body
    /// chunks of a response into one buffer of its own first (a copy of every body byte) when
    /// its connection cannot write vectored.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SendStream::Quic(s) => {
                let mut written = 0;
                for piece in bufs.iter().flat_map(|b| b.chunks(QUIC_WRITE_PIECE)) {
                    match Pin::new(&mut *s).poll_write(cx, piece) {
                        Poll::Ready(Ok(n)) => {
                            written += n;
                            if n < piece.len() {
                                break;
                            }
                        }
                        // What was taken is reported; the error comes again at the next write.
                        Poll::Ready(Err(_)) | Poll::Pending if written > 0 => break,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Poll::Ready(Ok(written))
            }
            SendStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            SendStream::Quic(_) => true,
            SendStream::Tcp(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SendStream::Quic(s) => Pin::new(s).poll_flush(cx),
            SendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SendStream::Quic(s) => Pin::new(s).poll_shutdown(cx),
            SendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RecvStream::Quic(s) => Pin::new(s).poll_read(cx, buf),
            RecvStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}
