//! `GET /api/devices/{id}/logs?follow=true`: a device's Node-RED output as server-sent events.
//!
//! Each line is one event: `id: <seq>` and `data: {"seq","time","stream","text"}` (JSON, so a
//! line's own newlines cannot break out of it). Lines the device's buffer dropped before they
//! were sent are an `event: skipped` with `{"after", "count"}`; the end of the stream for a reason
//! other than the client leaving (the operator lost the role, the device refused) is an
//! `event: end` with `{"reason"}`. A `: keep-alive` comment every 15 s keeps proxies from closing
//! a quiet stream and lets hyper notice a client that left.
//!
//! When the device's tunnel drops, the client's response stays open: the follower waits for the
//! device to be back (the registry's presence watch, and a retry every half second) and opens a
//! new `logs` stream with `after` = the last `seq` it sent, so nothing is sent twice and nothing
//! still in the device's buffer is lost. When the client leaves, hyper drops the body and with
//! it the tunnel stream; the agent sees the hub's side end and stops.
//!
//! The stream is the response body itself, polled by the connection's task, which ends with the
//! hub: no task of its own to own or cancel.

use crate::api::ApiBody;
use crate::logs_source::{DeviceLogs, LogsError, LogsSource};
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use redtether_proto::wire::{LogItem, LogsRequest};
use std::time::Duration;
use tokio::time::Instant;

const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a follower whose device is away tries to reopen its stream (besides on presence
/// changes): a device that reconnected before its old connection was noticed gone is found.
const RETRY: Duration = Duration::from_millis(500);

/// One item as an event.
pub fn event(item: &LogItem) -> String {
    match item {
        LogItem::Line(line) => {
            format!("id: {}\ndata: {}\n\n", line.seq, serde_json::to_string(line).unwrap_or_default())
        }
        LogItem::Skipped { after, count } => {
            format!("event: skipped\ndata: {}\n\n", serde_json::json!({ "after": after, "count": count }))
        }
    }
}

/// The last event, for an end the client did not choose.
pub fn end_event(reason: &str) -> String {
    format!("event: end\ndata: {}\n\n", serde_json::json!({ "reason": reason }))
}

/// The cursor after `item` was sent.
fn cursor_after(item: &LogItem) -> u64 {
    match item {
        LogItem::Line(line) => line.seq,
        LogItem::Skipped { after, count } => after + count,
    }
}

struct Follower {
    source: LogsSource,
    /// How many lines the first open asks for (later opens resume after `cursor`).
    lines: u32,
    /// The last `seq` sent; `None` until the first item.
    cursor: Option<u64>,
    logs: Option<DeviceLogs>,
    presence: tokio::sync::watch::Receiver<u64>,
    keep_alive: Instant,
    ended: bool,
}

impl Follower {
    fn request(&self) -> LogsRequest {
        LogsRequest { lines: self.lines, after: self.cursor, follow: true }
    }

    /// The next chunk of the body; `None` ends it.
    async fn next(&mut self) -> Option<String> {
        if self.ended {
            return None;
        }
        loop {
            let Some(logs) = self.logs.as_mut() else {
                match self.source.open(self.request()).await {
                    Ok(logs) => {
                        tracing::info!(device = %self.source.device, after = ?self.cursor, "logs: following again");
                        self.logs = Some(logs);
                        continue;
                    }
                    Err(e @ (LogsError::Forbidden | LogsError::Refused)) => return Some(self.end(e)),
                    Err(_) => {
                        // Away: wait for the device, saying we are still here now and then.
                        tokio::select! {
                            changed = self.presence.changed() => if changed.is_err() {
                                tokio::time::sleep(RETRY).await;
                            },
                            _ = tokio::time::sleep(RETRY) => {}
                        }
                        if let Some(comment) = self.keep_alive_due() {
                            return Some(comment);
                        }
                        continue;
                    }
                }
            };
            tokio::select! {
                item = logs.next() => match item {
                    Ok(Some(item)) => {
                        self.cursor = Some(cursor_after(&item));
                        return Some(event(&item));
                    }
                    Err(e @ (LogsError::Refused | LogsError::Malformed)) => return Some(self.end(e)),
                    // The device finished (it is stopping) or the tunnel went: reopen when back.
                    Ok(None) | Err(_) => {
                        tracing::info!(device = %self.source.device, "logs: the device's stream ended; waiting for it");
                        self.logs = None;
                    }
                },
                _ = tokio::time::sleep_until(self.keep_alive) => {
                    self.keep_alive = Instant::now() + KEEP_ALIVE;
                    return Some(": keep-alive\n\n".into());
                }
            }
        }
    }

    fn keep_alive_due(&mut self) -> Option<String> {
        (Instant::now() >= self.keep_alive).then(|| {
            self.keep_alive = Instant::now() + KEEP_ALIVE;
            ": keep-alive\n\n".to_string()
        })
    }

    fn end(&mut self, e: LogsError) -> String {
        tracing::info!(device = %self.source.device, reason = %e, "logs: follow ended");
        self.ended = true;
        self.logs = None;
        end_event(match e {
            LogsError::Forbidden => "forbidden",
            LogsError::Refused => "device_refused",
            _ => "device_error",
        })
    }
}

/// Opens the first stream (so an offline device is a 409, not an empty event stream), then
/// answers with the events.
pub async fn start(
    source: LogsSource,
    request: LogsRequest,
    presence: tokio::sync::watch::Receiver<u64>,
) -> Result<Response<ApiBody>, LogsError> {
    let logs = source.open(request).await?;
    let follower = Follower {
        source,
        lines: request.lines,
        cursor: request.after,
        logs: Some(logs),
        presence,
        keep_alive: Instant::now() + KEEP_ALIVE,
        ended: false,
    };
    let events = futures_util::stream::unfold(follower, |mut f| async move {
        let chunk = f.next().await?;
        Some((Ok::<_, crate::api::BodyError>(Frame::data(Bytes::from(chunk))), f))
    });
    let mut r = Response::new(StreamBody::new(events).boxed());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer (nginx) would hold lines back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::wire::{LogLine, LogStream};

    #[test]
    fn a_line_is_one_event_with_its_seq_as_id_and_cannot_break_out() {
        let line = LogLine {
            seq: 42,
            time: "2025-01-01T00:00:00.000Z".into(),
            stream: LogStream::Stdout,
            text: "a\n\ndata: {\"forged\":1}\r\nid: 99".into(),
        };
        let e = event(&LogItem::Line(line));
        assert!(e.starts_with("id: 42\ndata: {"), "{e}");
        assert!(e.ends_with("}\n\n"));
        assert_eq!(e.matches('\n').count(), 3, "id, data, blank: {e}");
        assert_eq!(cursor_after(&LogItem::Skipped { after: 3, count: 4 }), 7);
        assert_eq!(
            event(&LogItem::Skipped { after: 3, count: 4 }),
            "event: skipped\ndata: {\"after\":3,\"count\":4}\n\n"
        );
        assert_eq!(end_event("forbidden"), "event: end\ndata: {\"reason\":\"forbidden\"}\n\n");
    }
}
