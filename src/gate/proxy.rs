//! Forwarding one request to Node-RED and its answer back, including websocket upgrades.

use super::headers::{set_upgrade, strip_hop_by_hop, upgrade_protocol};
use crate::supervisor::GATE_TOKEN_HEADER;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the gate answers with: Node-RED's streamed body, or a small body of its own.
pub type GateBody = Either<Incoming, Full<Bytes>>;

/// How long Node-RED may take to start answering a request (nginx's `proxy_read_timeout`).
const UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Proxy {
    client: Client<HttpConnector, Incoming>,
    upstream: watch::Receiver<Option<SocketAddr>>,
    gate_token: HeaderValue,
    gate_token_header: HeaderName,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Proxy {
    pub fn new(
        upstream: watch::Receiver<Option<SocketAddr>>,
        gate_token: &str,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        let mut gate_token = HeaderValue::from_str(gate_token)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        gate_token.set_sensitive(true);
        Proxy {
            client,
            upstream,
            gate_token,
            gate_token_header: HeaderName::from_static(GATE_TOKEN_HEADER),
            tasks,
            cancel,
        }
    }

    /// Serves one request: the single place every request passes.
    pub async fn handle(
        self: std::sync::Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<GateBody>, Infallible> {
        Ok(self.forward(req, peer).await)
    }

    async fn forward(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<GateBody> {
        let Some(upstream) = *self.upstream.borrow() else {
            return local(
                StatusCode::SERVICE_UNAVAILABLE,
                "Node-RED is not running yet\n",
                Some("5"),
            );
        };
        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match Uri::builder()
            .scheme("http")
            .authority(upstream.to_string())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => return local(StatusCode::BAD_REQUEST, "bad request target\n", None),
        };
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgrade.clone() {
            set_upgrade(&mut parts.headers, protocol);
        }
        // The credential Node-RED trusts is the gate's alone: a client-sent copy never passes.
        parts.headers.remove(&self.gate_token_header);
        parts
            .headers
            .insert(self.gate_token_header.clone(), self.gate_token.clone());
        add_forwarded(&mut parts.headers, peer);

        let request = Request::from_parts(parts, body);
        let mut response =
            match tokio::time::timeout(UPSTREAM_RESPONSE_TIMEOUT, self.client.request(request))
                .await
            {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "gate: upstream request failed");
                    return local(
                        StatusCode::BAD_GATEWAY,
                        "Node-RED is not answering\n",
                        Some("5"),
                    );
                }
                Err(_) => {
                    return local(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Node-RED did not answer in time\n",
                        None,
                    );
                }
            };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let cancel = self.cancel.clone();
            self.tasks.spawn(async move {
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!(error = %e, "gate: upgrade did not complete");
                        return;
                    }
                };
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "gate: upgraded connection ended with an error");
                        }
                    }
                }
            });
            let protocol = response.headers().get(header::UPGRADE).cloned();
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(protocol) = protocol {
                set_upgrade(&mut parts.headers, protocol);
            }
            return Response::from_parts(parts, Either::Left(body));
        }

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, Either::Left(body))
    }
}

fn add_forwarded(headers: &mut http::HeaderMap, peer: SocketAddr) {
    // The gate is the edge: what a client claims in X-Forwarded-* is not evidence.
    headers.remove("x-forwarded-for");
    headers.remove("x-forwarded-proto");
    headers.remove("forwarded");
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
}

/// A response the gate makes itself.
pub fn local(
    status: StatusCode,
    body: &'static str,
    retry_after: Option<&'static str>,
) -> Response<GateBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}
