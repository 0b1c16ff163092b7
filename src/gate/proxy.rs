//! Forwarding one request to Node-RED and its answer back, including websocket upgrades. The
//! caller has already decided and prepared the headers; this only moves bytes.

use super::headers::{set_upgrade, strip_hop_by_hop, upgrade_protocol};
use super::responses;
use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the gate answers with: Node-RED's streamed body, or a small body of its own.
pub type GateBody = Either<Incoming, Full<Bytes>>;

/// How long Node-RED may take to start answering a request (nginx's `proxy_read_timeout`).
const UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which websockets a change of settings can close together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebsocketSpace {
    /// The editor's `/comms`.
    Editor,
    /// Node space (dashboards, websocket nodes).
    Node,
}

/// The most hyper reads from Node-RED at once ([`Proxy::new`]).
const UPSTREAM_READ_BUFFER: usize = redtether_host::heap::MMAP_THRESHOLD / 2;

pub struct Proxy {
    /// Requests go up as they came (a streamed body) or as the gate made them (a whole one).
    client: Client<HttpConnector, GateBody>,
    upstream: watch::Receiver<Option<SocketAddr>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Ends the open websockets of each space ([`Proxy::close_websockets`]); replaced by a fresh
    /// one each time, so later websockets are not ended with them.
    websockets: Mutex<[CancellationToken; 2]>,
}

impl Proxy {
    pub fn new(upstream: watch::Receiver<Option<SocketAddr>>, tasks: TaskTracker, cancel: CancellationToken) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30)).pool_max_idle_per_host(64);
        // Reads from Node-RED stay under glibc's mmap threshold (`redtether_host::heap`):
        // hyper's default lets its read buffer grow to ~400 KiB, and each body chunk split off it
        // left the next read a fresh mapping to fault in page by page (two fifths of the agent's
        // page faults during a bulk download). Also the largest response head Node-RED may send.
        builder.http1_max_buf_size(UPSTREAM_READ_BUFFER);
        let websockets = Mutex::new([cancel.child_token(), cancel.child_token()]);
        Proxy { client: builder.build(connector), upstream, tasks, cancel, websockets }
    }

    /// Closes every open websocket of `space` (their clients see the connection end and may
    /// reconnect, under the settings in force then).
    pub fn close_websockets(&self, space: WebsocketSpace) {
        let mut tokens = self.websockets.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut tokens[space as usize];
        slot.cancel();
        *slot = self.cancel.child_token();
    }

    fn websocket_token(&self, space: WebsocketSpace) -> CancellationToken {
        self.websockets.lock().unwrap_or_else(|e| e.into_inner())[space as usize].clone()
    }

    /// Node-RED's address while it runs.
    pub fn upstream(&self) -> Option<SocketAddr> {
        *self.upstream.borrow()
    }

    /// Sends `req` to Node-RED at `path_and_query` and returns its answer. Headers must already
    /// be what Node-RED is to see (hop-by-hop ones are dropped here).
    pub async fn forward(
        &self,
        mut req: Request<GateBody>,
        path_and_query: &str,
        peer: SocketAddr,
        space: WebsocketSpace,
    ) -> Response<GateBody> {
        let Some(upstream) = self.upstream() else {
            return responses::unavailable("node_red_not_running", 5);
        };
        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        parts.uri = match upstream_uri(upstream, path_and_query) {
            Some(uri) => uri,
            None => return responses::bad_request("request target"),
        };
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgrade {
            set_upgrade(&mut parts.headers, protocol);
        }
        let request = Request::from_parts(parts, body);
        let mut response = match tokio::time::timeout(UPSTREAM_RESPONSE_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::debug!(%upstream, error = %e, "gate: upstream request failed");
                return responses::unavailable("node_red_not_answering", 5);
            }
            Err(_) => return responses::error(StatusCode::GATEWAY_TIMEOUT, "node_red_timeout"),
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            self.splice(client_upgrade, hyper::upgrade::on(&mut response), peer, self.websocket_token(space));
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

    /// Copies bytes both ways between an upgraded client and Node-RED until either side closes,
    /// the gate stops, or the websockets of its space are closed (`cancel`, a child of the
    /// gate's own token).
    fn splice(
        &self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        peer: SocketAddr,
        cancel: CancellationToken,
    ) {
        self.tasks.spawn(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
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
    }

    /// A bodiless request of the gate's own to Node-RED (for example reading the flows'
    /// revision around a deploy); returns status and body.
    pub async fn fetch(&self, path: &str, headers: http::HeaderMap) -> Option<(StatusCode, Bytes)> {
        use http_body_util::BodyExt;
        let upstream = self.upstream()?;
        let mut request = Request::new(Either::Right(Full::new(Bytes::new())));
        *request.uri_mut() = upstream_uri(upstream, path)?;
        *request.headers_mut() = headers;
        let response =
            tokio::time::timeout(UPSTREAM_RESPONSE_TIMEOUT, self.client.request(request)).await.ok()?.ok()?;
        let status = response.status();
        let body =
            http_body_util::Limited::new(response.into_body(), 64 * 1024 * 1024).collect().await.ok()?.to_bytes();
        Some((status, body))
    }
}

fn upstream_uri(upstream: SocketAddr, path_and_query: &str) -> Option<Uri> {
    Uri::builder().scheme("http").authority(upstream.to_string()).path_and_query(path_and_query).build().ok()
}
