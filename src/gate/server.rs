//! Accepting connections on `gate.listen` (plain or TLS) and serving HTTP/1.1 on them through
//! the framing guard, with a graceful drain on shutdown.

use super::GateError;
use super::framing::Guarded;
use super::pipeline::{Caller, Pipeline};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's read buffer; the framing guard refuses heads over half of it with 431 first.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A bound gate, ready to serve.
pub struct Gate {
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    tls: Option<TlsAcceptor>,
    tasks: TaskTracker,
}

impl Gate {
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        pipeline: Arc<Pipeline>,
        tasks: TaskTracker,
    ) -> Result<Gate, GateError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| GateError::Bind { addr, source })?;
        Ok(Gate { listener, pipeline, tls, tasks })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then stops accepting, lets open requests finish for a short
    /// while, and returns once every connection task has ended.
    pub async fn serve(self, cancel: CancellationToken) {
        // Ends connections that did not finish within the drain timeout.
        let force_close = CancellationToken::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "gate: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let pipeline = Arc::clone(&self.pipeline);
            let (drain, force) = (cancel.clone(), force_close.clone());
            match self.tls.clone() {
                None => {
                    self.tasks.spawn(serve_connection(stream, Caller::Network(peer), pipeline, drain, force));
                }
                Some(acceptor) => {
                    self.tasks.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => serve_connection(tls, Caller::Network(peer), pipeline, drain, force).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "gate: TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "gate: TLS handshake timed out"),
                        }
                    });
                }
            }
        }
        drop(self.listener);
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait()).await.is_err() {
            tracing::warn!("gate: connections still open after the drain timeout; closing them");
            force_close.cancel();
            self.tasks.wait().await;
        }
    }
}

/// Serves one stream the hub opened through the tunnel for an operator, exactly like a network
/// connection except for who the caller is. Ends when the stream does, or at `cancel`.
pub async fn serve_platform_stream<IO>(io: IO, caller: Caller, pipeline: Arc<Pipeline>, cancel: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection(io, caller, pipeline, cancel.clone(), cancel).await
}

async fn serve_connection<IO>(
    io: IO,
    caller: Caller,
    pipeline: Arc<Pipeline>,
    drain: CancellationToken,
    force_close: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = match &caller {
        Caller::Network(peer) => *peer,
        Caller::Platform { hub, .. } => *hub,
    };
    let service = service_fn(move |req| Arc::clone(&pipeline).handle(req, caller.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(100)
        // A request whose client has finished sending (or whose stream the framing guard ended
        // at a refused request or a broken body) is still answered, instead of dropped unanswered.
        .half_close(true)
        .serve_connection(TokioIo::new(Guarded::new(io)), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => Some(result),
        _ = drain.cancelled() => None,
    };
    let result = match result {
        Some(result) => result,
        None => {
            // Finish the request in flight, then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn => result,
                _ = force_close.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "gate: connection ended with an error");
    }
}
