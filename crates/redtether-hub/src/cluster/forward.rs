//! Passes an operator's request for a device to the hub that holds it: the whole request
//! (method, path, headers, body streamed) over mutual TLS to that hub's `[cluster] listen`,
//! marked with this hub's id ([`super::FORWARDED_BY`], so it is never forwarded again) and the
//! operator's address ([`super::CLIENT_IP`], for that hub's rate limits). The holder
//! authenticates and authorises the operator itself, from the shared store. Its answer is
//! streamed back; a websocket upgrade is spliced through.

use super::{CLIENT_IP, Cluster, FORWARDED_BY};
use crate::api::ApiBody;
use crate::store::domain::HubEntry;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

/// How long a forwarded request may wait for the holder's answer to begin (the editor's
/// requests are answered in milliseconds; a long-poll or a followed log is a streamed answer,
/// which has begun by then).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Headers of one connection, not of the request (RFC 9110 7.6.1); `upgrade` and `connection`
/// are kept for a websocket, and `host` is the operator's (the console's same-origin check
/// compares it with `Origin`; the TLS name checked is the cluster's, from the URL).
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"];

pub struct Forwarder {
    tls: rustls::ClientConfig,
    /// One client (and its connection pool) per hub address.
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0} did not answer within {ANSWER_TIMEOUT:?}")]
    Timeout(String),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl Forwarder {
    pub fn new(tls: rustls::ClientConfig) -> Forwarder {
        Forwarder { tls, clients: Mutex::default() }
    }

    async fn client(&self, address: &str) -> Result<reqwest::Client, ForwardError> {
        if let Some(client) = self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(address) {
            return Ok(client.clone());
        }
        let addr: SocketAddr = tokio::net::lookup_host(address)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ForwardError::Resolve(address.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(self.tls.clone())
            .resolve(super::tls::PEER_NAME, addr)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .build()?;
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).insert(address.to_string(), client.clone());
        Ok(client)
    }
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

impl Cluster {
    /// Forwards `req` to `holder`; 503 with `Retry-After` when that hub cannot be reached (it
    /// died, and its devices are on their way to another hub).
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        holder: &HubEntry,
        client_ip: IpAddr,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Response<ApiBody> {
        let upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
        match self.send(req, holder, client_ip).await {
            Ok(answer) => self.answer(answer, upgrade, holder, tasks).await,
            Err(e) => {
                self.unreachable(&holder.id);
                tracing::warn!(hub = %holder.id, error = %e, "cluster: cannot forward to the hub holding the device");
                let mut r =
                    crate::api::boxed(crate::api::error(StatusCode::SERVICE_UNAVAILABLE, "holding_hub_unreachable"));
                r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
                r
            }
        }
    }

    async fn send(
        &self,
        req: Request<Incoming>,
        holder: &HubEntry,
        client_ip: IpAddr,
    ) -> Result<reqwest::Response, ForwardError> {
        let client = self.forwarder.client(&holder.address).await?;
        let port = holder.address.rsplit_once(':').map_or("443", |(_, p)| p);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = format!("https://{}:{port}{path}", super::tls::PEER_NAME);
        let (parts, body) = req.into_parts();
        let mut headers = HeaderMap::new();
        copy_headers(&parts.headers, &mut headers);
        headers.insert(FORWARDED_BY, header::HeaderValue::from_str(&self.id).expect("hub ids are header-safe"));
        headers.insert(CLIENT_IP, header::HeaderValue::from_str(&client_ip.to_string()).expect("an address is"));
        let body = reqwest::Body::wrap_stream(body.into_data_stream());
        let request = client.request(parts.method, url).headers(headers).body(body);
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, request.send()).await;
        Ok(answer.map_err(|_| ForwardError::Timeout(holder.address.clone()))??)
    }

    async fn answer(
        &self,
        answer: reqwest::Response,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        holder: &HubEntry,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Response<ApiBody> {
        let mut response = Response::builder().status(answer.status());
        if let Some(headers) = response.headers_mut() {
            copy_headers(answer.headers(), headers);
        }
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream) = upgrade
        {
            let hub = holder.id.clone();
            tasks.spawn(async move {
                let (Ok(upstream), Ok(downstream)) = (answer.upgrade().await, downstream.await) else {
                    tracing::debug!(%hub, "cluster: a forwarded upgrade did not complete");
                    return;
                };
                let mut upstream = upstream;
                let mut downstream = hyper_util::rt::TokioIo::new(downstream);
                let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
            });
            return response.body(empty()).unwrap_or_else(|_| Response::new(empty()));
        }
        let stream = answer.bytes_stream();
        let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(stream, |chunk| {
            chunk.map(hyper::body::Frame::data).map_err(crate::api::BodyError::from)
        }));
        response.body(body.boxed()).unwrap_or_else(|_| Response::new(empty()))
    }
}

fn empty() -> ApiBody {
    http_body_util::Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// The device a request is about, by its path: `/devices/{id}…` (the editor, node space and the
/// console's device pages) and `/api/devices/{id}…`.
pub fn device_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/devices/").or_else(|| path.strip_prefix("/devices/"))?;
    let segment = rest.split('/').next()?;
    let query = format!("id={segment}");
    let (_, id) = form_urlencoded::parse(query.as_bytes()).next()?;
    redtether_proto::names::valid_name(&id).then(|| id.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_name_their_device() {
        assert_eq!(device_of_path("/devices/pump-1/editor/flows").as_deref(), Some("pump-1"));
        assert_eq!(device_of_path("/devices/pump-1").as_deref(), Some("pump-1"));
        assert_eq!(device_of_path("/api/devices/pump-1").as_deref(), Some("pump-1"));
        assert_eq!(device_of_path("/api/devices/ops%40site/logs").as_deref(), Some("ops@site"));
        assert_eq!(device_of_path("/api/devices"), None);
        assert_eq!(device_of_path("/api/devices/"), None);
        assert_eq!(device_of_path("/api/devices/a%2Fb/x"), None, "not a device id");
        assert_eq!(device_of_path("/api/groups/line-1"), None);
        assert_eq!(device_of_path("/devicesx/pump-1"), None);
    }
}
