//! `GET /console/live`: the devices' online state as server-sent events, so the device list
//! follows devices going on- and offline without a reload. The first event is every device
//! online now (`{"online": [...]}`); each later one says what changed (`{"up": [...],
//! "down": [...]}`); a comment every 15 s keeps proxies from closing a quiet stream.
//!
//! The stream is the response body itself: it is polled by the connection's task, which ends
//! with the hub, so there is no task of its own to own or cancel.

use crate::api::ApiBody;
use crate::registry::Registry;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::collections::BTreeSet;
use std::time::Duration;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What changed between two sets of online devices, as one event's data; `None` when nothing did.
pub fn change(before: Option<&BTreeSet<String>>, now: &BTreeSet<String>) -> Option<String> {
    let value = match before {
        None => serde_json::json!({ "online": now }),
        Some(before) => {
            let up: Vec<&String> = now.difference(before).collect();
            let down: Vec<&String> = before.difference(now).collect();
            if up.is_empty() && down.is_empty() {
                return None;
            }
            serde_json::json!({ "up": up, "down": down })
        }
    };
    // Serialized JSON has no raw newline, so it is one `data:` line.
    Some(format!("data: {value}\n\n"))
}

struct Follow {
    registry: Registry,
    presence: tokio::sync::watch::Receiver<u64>,
    last: Option<BTreeSet<String>>,
}

pub fn stream(registry: Registry) -> Response<ApiBody> {
    let follow = Follow { presence: registry.presence(), registry, last: None };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if f.last.is_some() {
                tokio::select! {
                    changed = f.presence.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        return Some((Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))), f));
                    }
                }
            }
            let now = f.registry.online_ids();
            let event = change(f.last.as_ref(), &now);
            f.last = Some(now);
            if let Some(event) = event {
                return Some((Ok::<_, crate::api::BodyError>(Frame::data(Bytes::from(event))), f));
            }
        }
    });
    let mut r = Response::new(StreamBody::new(events).boxed());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    super::layout::secure_headers(h);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_event_lists_everyone_online_then_only_changes_are_sent() {
        assert_eq!(change(None, &set(&["a", "b"])).unwrap(), "data: {\"online\":[\"a\",\"b\"]}\n\n");
        assert_eq!(change(Some(&set(&["a", "b"])), &set(&["a", "b"])), None);
        assert_eq!(
            change(Some(&set(&["a", "b"])), &set(&["b", "c"])).unwrap(),
            "data: {\"down\":[\"a\"],\"up\":[\"c\"]}\n\n"
        );
        // A device id cannot break out of its event (it is JSON, and newlines are escaped).
        assert!(!change(None, &set(&["x\n\ndata: {}"])).unwrap().trim_end().contains('\n'));
    }
}
