//! Accepting connections on `gate.listen` and serving HTTP/1.1 on them, with a graceful drain on
//! shutdown.

use super::GateError;
use super::proxy::Proxy;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open requests may finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound gate, ready to serve.
pub struct Gate {
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tasks: TaskTracker,
}

impl Gate {
    /// Binds `addr`. `upstream` carries Node-RED's loopback address while it runs;
    /// `gate_token` is the credential the gate presents to Node-RED.
    pub async fn bind(
        addr: SocketAddr,
        upstream: watch::Receiver<Option<SocketAddr>>,
        gate_token: &str,
        cancel: CancellationToken,
    ) -> Result<Gate, GateError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GateError::Bind { addr, source })?;
        let tasks = TaskTracker::new();
        let proxy = Arc::new(Proxy::new(upstream, gate_token, tasks.clone(), cancel));
        Ok(Gate {
            listener,
            proxy,
            tasks,
        })
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
            let proxy = Arc::clone(&self.proxy);
            let service = service_fn(move |req| Arc::clone(&proxy).handle(req, peer));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let (drain, force_close) = (cancel.clone(), force_close.clone());
            self.tasks.spawn(async move {
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
            });
        }
        drop(self.listener);
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("gate: connections still open after the drain timeout; closing them");
            force_close.cancel();
            self.tasks.wait().await;
        }
    }
}
