//! A listener of its own for Prometheus: `GET /metrics` answered with what a render function
//! makes at each scrape, nothing else. Both daemons use it for `[metrics] listen`, so a scraper
//! never needs a port that serves anything but numbers (the agent's gate, the hub's operator
//! API).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Prometheus text format's content type (version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Makes the exposition text at each scrape.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}")]
pub struct MetricsListenError {
    pub addr: SocketAddr,
    /// The configuration key that named the address.
    pub key: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds the metrics listener (before the daemon says it is ready, so a busy port is a start
/// error, not a log line).
pub async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, MetricsListenError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsListenError { addr, key, source })
}

/// Serves scrapes until `cancel` fires.
pub async fn serve(listener: TcpListener, render: Render, tasks: TaskTracker, cancel: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (render, cancel) = (Arc::clone(&render), cancel.clone());
        tasks.spawn(async move {
            let service = service_fn(move |req| answer(req, Arc::clone(&render)));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = served => if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                },
            }
        });
    }
}

async fn answer(req: Request<Incoming>, render: Render) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: only /metrics is served here\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(exposition(render().await))
}

/// A 200 carrying exposition text, with the format's content type.
pub fn exposition(text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

/// Encodes a registry in the Prometheus text format.
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    // (Writing to a String cannot fail.)
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}
