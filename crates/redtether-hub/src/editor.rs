//! The remote editor, `ANY /devices/{id}/editor/{path}`, and the device's node space (dashboards,
//! HTTP-In), `ANY /devices/{id}/http/{path}`, on the operator API, websocket upgrades included. Each request goes down a new stream of the device's tunnel: a header frame with the
//! hub's signed assertion of who the operator is (`protocol::assertion`, 60 s, one per operator,
//! role and device reused for half of that: `crate::assertions`), then the HTTP/1.1
//! exchange as raw bytes to the device's gate, which applies roles and protection mode exactly
//! as for a LAN user. The operator's own credentials never leave the hub.
//!
//! Bodies are streamed, not buffered or re-encoded; QUIC flow control is the backpressure, and
//! each request has its own stream, so a slow download does not hold up anything else.

use crate::api::{Api, ApiBody, boxed, error};
use crate::store::OperatorRecord;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use redtether_proto::audit::HubEventKind;
use redtether_proto::wire::{StreamHeader, StreamKind, encode};
use tokio::io::AsyncWriteExt;

/// Which of a device's spaces a hub path opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpace {
    /// `/devices/{id}/editor/…` → the device's `/device-editor/…` (editor and admin API).
    Editor,
    /// `/devices/{id}/http/…` → the device's `/…` (dashboards, HTTP-In), for every role.
    Node,
}

impl DeviceSpace {
    fn segment(self) -> &'static str {
        match self {
            DeviceSpace::Editor => "editor",
            DeviceSpace::Node => "http",
        }
    }
}

/// `(device, space, path on the device)` for a hub path into a device; the path is `None`
/// when the space's root lacks its trailing slash (redirected, so relative links resolve
/// under it).
pub fn target(path: &str) -> Option<(&str, DeviceSpace, Option<String>)> {
    let rest = path.strip_prefix("/devices/")?;
    let (device, rest) = rest.split_once('/')?;
    if device.is_empty() {
        return None;
    }
    for space in [DeviceSpace::Editor, DeviceSpace::Node] {
        if let Some(after) = rest.strip_prefix(space.segment())
            && (after.is_empty() || after.starts_with('/'))
        {
            let on_device = match space {
                DeviceSpace::Editor => format!("/device-editor{after}"),
                DeviceSpace::Node => after.to_string(),
            };
            return Some((device, space, (!after.is_empty()).then_some(on_device)));
        }
    }
    None
}

/// What the editor's stream to the device buffers of the header and the request before
/// they go out together; larger writes (uploaded bodies) pass straight through.
const STREAM_BUFFER: usize = 16 * 1024;

/// Headers that stay at the hub: the operator's credentials for the hub, and hop-by-hop ones
/// hyper sets itself.
const NOT_FORWARDED: [header::HeaderName; 4] =
    [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION, header::TE];

impl Api {
    pub(super) async fn editor(
        &self,
        mut req: Request<Incoming>,
        operator: OperatorRecord,
        device: &str,
        space: DeviceSpace,
        path: Option<String>,
    ) -> Response<ApiBody> {
        let Some(path) = path else {
            let mut r = boxed(error(StatusCode::PERMANENT_REDIRECT, "moved"));
            if let Ok(v) = HeaderValue::from_str(&format!("/devices/{device}/{}/", space.segment())) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        };
        if !matches!(self.store.device(device), Ok(Some(_))) {
            return boxed(error(StatusCode::NOT_FOUND, "unknown_device"));
        }
        let Some(online) = self.registry.get(device) else {
            // Devices reconnect within seconds of a hub going away (`[tunnel] hubs`).
            let mut r = boxed(error(StatusCode::SERVICE_UNAVAILABLE, "device_offline"));
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return r;
        };

        let assertion = self.assertions.for_operator(&operator.name, operator.role.as_str(), device);
        let header = StreamHeader { kind: StreamKind::Http, assertion: Some(assertion), logs: None };
        let (send, recv) = match online.connection.open_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%device, error = %e, "remote editor: no stream to the device");
                return boxed(error(StatusCode::BAD_GATEWAY, "device_unreachable"));
            }
        };
        // The header waits in the buffer for the request hyper writes (and flushes) next: one
        // write to the stream, so the device gets both in one packet and wakes once for them.
        let mut send = tokio::io::BufWriter::with_capacity(STREAM_BUFFER, send);
        if send.write_all(&encode(&header)).await.is_err() {
            return boxed(error(StatusCode::BAD_GATEWAY, "device_unreachable"));
        }
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tokio::io::join(recv, send))).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(%device, error = %e, "remote editor: HTTP over the stream failed");
                    return boxed(error(StatusCode::BAD_GATEWAY, "device_unreachable"));
                }
            };
        self.tasks.spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "remote editor: stream ended with an error");
            }
        });

        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        let upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut forwarded = Request::builder().method(parts.method.clone()).uri(format!("{path}{query}"));
        for (name, value) in parts.headers.iter().filter(|(n, _)| !NOT_FORWARDED.contains(n)) {
            forwarded = forwarded.header(name, value);
        }
        let Ok(forwarded) = forwarded.body(body) else { return boxed(error(StatusCode::BAD_REQUEST, "bad_request")) };
        if space == DeviceSpace::Editor && !parts.method.is_safe() {
            let _ = self.store.record_event(
                device,
                HubEventKind::EditorWrite,
                serde_json::json!({ "operator": operator.name, "method": parts.method.as_str(), "path": path }),
            );
        }
        let mut response = match sender.send_request(forwarded).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%device, error = %e, "remote editor: the device did not answer");
                return boxed(error(StatusCode::BAD_GATEWAY, "device_unreachable"));
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client) = upgrade
        {
            let device_side = hyper::upgrade::on(&mut response);
            self.tasks.spawn(async move {
                match (client.await, device_side.await) {
                    (Ok(client), Ok(device_side)) => {
                        let _ =
                            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(device_side))
                                .await;
                    }
                    _ => tracing::debug!("remote editor: websocket upgrade did not complete"),
                }
            });
        }
        response.map(|b| b.map_err(crate::api::BodyError::from).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn editor_and_node_paths_map_to_the_device() {
        use super::DeviceSpace::{Editor, Node};
        assert_eq!(target("/devices/pump-1/editor/"), Some(("pump-1", Editor, Some("/device-editor/".into()))));
        assert_eq!(
            target("/devices/pump-1/editor/flows"),
            Some(("pump-1", Editor, Some("/device-editor/flows".into())))
        );
        assert_eq!(target("/devices/pump-1/editor"), Some(("pump-1", Editor, None)), "redirected to the slash");
        assert_eq!(target("/devices/pump-1/http/ui/"), Some(("pump-1", Node, Some("/ui/".into()))));
        assert_eq!(target("/devices/pump-1/http/"), Some(("pump-1", Node, Some("/".into()))));
        assert_eq!(target("/devices/pump-1/http"), Some(("pump-1", Node, None)));
        for other in [
            "/devices/pump-1/editors",
            "/devices/pump-1/https/x",
            "/devices//editor/",
            "/devices//http/x",
            "/api/devices/pump-1",
            "/devices/pump-1",
            "/devices/pump-1/restart",
        ] {
            assert_eq!(target(other), None, "{other}");
        }
    }
}
