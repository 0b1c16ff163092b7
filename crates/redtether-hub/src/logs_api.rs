//! `GET /api/devices/{id}/logs`: Node-RED's recent output on a device, from the agent's log
//! buffer through the tunnel (`logs_source`).
//!
//! - `?lines=N` (default 100, 1 ..= 100000; the device sends at most its buffer) → JSON
//!   `{"device": id, "lines": [{"seq", "time", "stream", "text"}], "skipped": n}`.
//! - `?follow=true[&lines=N|&after=SEQ]` → `text/event-stream` (see `logs_follow`): the last N
//!   lines (or those after `SEQ`, or after the `Last-Event-ID` header), then new ones as Node-RED
//!   writes them, until the client leaves; a dropped tunnel is waited out.
//!
//! Members and owners only (in the device's group, within the token's scope): logs hold
//! whatever a flow printed. 404 unknown device, 409 `device_offline`, 400 `bad_query`, 403.

use crate::api::{Api, ApiBody, boxed, error, json_response};
use crate::caller::Caller;
use crate::logs_source::{LOGS_ROLE, LogsError, LogsSource};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use redtether_proto::wire::{LogItem, LogsRequest};
use serde_json::json;
use std::time::Duration;

/// Lines sent when the query does not say.
pub const DEFAULT_LINES: u32 = 100;
/// The most `lines` may ask for (the agent's own bound on its buffer).
pub const MAX_LINES: u32 = 100_000;
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A `logs` request's query, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsQuery {
    pub lines: u32,
    pub follow: bool,
    pub after: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("lines must be a whole number from 1 to {MAX_LINES}")]
    Lines,
    #[error("follow must be true or false")]
    Follow,
    #[error("after (or Last-Event-ID) must be a line's seq")]
    After,
    #[error("unknown parameter {0:?}")]
    Unknown(String),
}

impl LogsQuery {
    /// Parses the query; with `follow`, a browser's `Last-Event-ID` resumes where it left off
    /// unless `after` says otherwise.
    pub fn parse(query: Option<&str>, last_event_id: Option<&str>) -> Result<LogsQuery, QueryError> {
        let mut q = LogsQuery { lines: DEFAULT_LINES, follow: false, after: None };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "lines" => {
                    q.lines = value.parse().ok().filter(|n| (1..=MAX_LINES).contains(n)).ok_or(QueryError::Lines)?;
                }
                "follow" => {
                    q.follow = match value.as_ref() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(QueryError::Follow),
                    }
                }
                "after" => q.after = Some(value.parse().map_err(|_| QueryError::After)?),
                other => return Err(QueryError::Unknown(other.chars().take(40).collect())),
            }
        }
        // A browser resending `Last-Event-ID` after a dropped connection is further along than the
        // `after` of the URL it first opened.
        if q.follow
            && let Some(id) = last_event_id.map(str::trim).filter(|v| !v.is_empty())
        {
            q.after = Some(id.parse().map_err(|_| QueryError::After)?);
        }
        Ok(q)
    }

    pub fn request(&self) -> LogsRequest {
        LogsRequest { lines: self.lines, after: self.after, follow: self.follow }
    }
}

/// `Some((device, query))` for `GET /api/devices/{id}/logs`.
pub fn target(path: &str) -> Option<&str> {
    let device = path.strip_prefix("/api/devices/")?.strip_suffix("/logs")?;
    (!device.is_empty() && !device.contains('/')).then_some(device)
}

fn bad_query(e: &QueryError) -> Response<Full<Bytes>> {
    json_response(StatusCode::BAD_REQUEST, json!({ "error": "bad_query", "detail": e.to_string() }))
}

fn open_error(e: LogsError) -> Response<Full<Bytes>> {
    match e {
        LogsError::Offline => error(StatusCode::CONFLICT, "device_offline"),
        LogsError::Forbidden => error(StatusCode::FORBIDDEN, "forbidden"),
        LogsError::Refused => error(StatusCode::BAD_GATEWAY, "device_refused"),
        LogsError::Lost | LogsError::Malformed => error(StatusCode::BAD_GATEWAY, "device_unreachable"),
    }
}

impl Api {
    /// The reader of `device`'s logs for `caller`, or the answer refusing them.
    /// (`Err` is the status and error code to answer with.)
    fn logs_source(&self, caller: &Caller, device: &str) -> Result<LogsSource, (StatusCode, &'static str)> {
        if caller.operator.role < LOGS_ROLE {
            return Err((StatusCode::FORBIDDEN, "forbidden"));
        }
        match self.store.device(device) {
            Ok(Some(_)) => {}
            Ok(None) => return Err((StatusCode::NOT_FOUND, "unknown_device")),
            Err(e) => {
                tracing::error!(error = %e, "logs: store failed");
                return Err((StatusCode::INTERNAL_SERVER_ERROR, "store_error"));
            }
        }
        Ok(LogsSource {
            store: self.store.clone(),
            registry: self.registry.clone(),
            signer: self.signer.clone(),
            device: device.to_string(),
            operator: caller.operator.name.clone(),
            role: caller.operator.role,
        })
    }

    /// `GET /api/devices/{id}/logs` (a narrowed caller), either form.
    pub(crate) async fn device_logs(
        &self,
        caller: &Caller,
        device: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<ApiBody> {
        let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let query = match LogsQuery::parse(query, last_event_id) {
            Ok(q) => q,
            Err(e) => return boxed(bad_query(&e)),
        };
        let source = match self.logs_source(caller, device) {
            Ok(s) => s,
            Err((status, code)) => return boxed(error(status, code)),
        };
        if query.follow {
            return match crate::logs_follow::start(source, query.request(), self.presence_of()).await {
                Ok(r) => r,
                Err(e) => boxed(open_error(e)),
            };
        }
        boxed(fetch(&source, query.request()).await)
    }

    /// The last `lines` lines as the API's JSON answer, for the console's logs page.
    pub(crate) async fn logs_now(&self, caller: &Caller, device: &str, lines: u32) -> (StatusCode, serde_json::Value) {
        let answer = match self.logs_source(caller, device) {
            Ok(source) => fetch(&source, LogsRequest { lines, after: None, follow: false }).await,
            Err((status, code)) => error(status, code),
        };
        let status = answer.status();
        let body = http_body_util::BodyExt::collect(answer.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    fn presence_of(&self) -> tokio::sync::watch::Receiver<u64> {
        self.registry.presence()
    }
}

/// The lines at once, as JSON.
async fn fetch(source: &LogsSource, request: LogsRequest) -> Response<Full<Bytes>> {
    let read = async {
        let mut logs = source.open(request).await?;
        let (mut lines, mut skipped) = (Vec::new(), 0u64);
        while let Some(item) = logs.next().await? {
            match item {
                LogItem::Line(line) => lines.push(line),
                LogItem::Skipped { count, .. } => skipped += count,
            }
        }
        Ok::<_, LogsError>((lines, skipped))
    };
    match tokio::time::timeout(FETCH_TIMEOUT, read).await {
        Ok(Ok((lines, skipped))) => {
            json_response(StatusCode::OK, json!({ "device": source.device, "lines": lines, "skipped": skipped }))
        }
        Ok(Err(e)) => {
            tracing::warn!(device = %source.device, error = %e, "logs: fetch failed");
            open_error(e)
        }
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "device_timeout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked() {
        let q = LogsQuery::parse(None, None).unwrap();
        assert_eq!(q, LogsQuery { lines: 100, follow: false, after: None });
        let q = LogsQuery::parse(Some("lines=5&follow=true"), None).unwrap();
        assert_eq!((q.lines, q.follow), (5, true));
        assert_eq!(LogsQuery::parse(Some("after=7&follow=1"), Some("9")).unwrap().after, Some(9), "the resume wins");
        assert_eq!(LogsQuery::parse(Some("after=7&follow=1"), None).unwrap().after, Some(7));
        assert_eq!(LogsQuery::parse(Some("follow=true"), Some("42")).unwrap().after, Some(42), "resumed");
        assert_eq!(LogsQuery::parse(None, Some("42")).unwrap().after, None, "a fetch ignores Last-Event-ID");
        for (bad, e) in [
            ("lines=0", QueryError::Lines),
            ("lines=100001", QueryError::Lines),
            ("lines=-1", QueryError::Lines),
            ("lines=ten", QueryError::Lines),
            ("follow=yes", QueryError::Follow),
            ("after=x", QueryError::After),
            ("tail=3", QueryError::Unknown("tail".into())),
        ] {
            assert_eq!(LogsQuery::parse(Some(bad), None), Err(e), "{bad}");
        }
        assert_eq!(LogsQuery::parse(Some("follow=true"), Some("x")), Err(QueryError::After));
    }

    #[test]
    fn only_the_logs_path_of_a_device_is_taken() {
        assert_eq!(target("/api/devices/pump-1/logs"), Some("pump-1"));
        for other in ["/api/devices//logs", "/api/devices/a/b/logs", "/api/devices/pump-1/logs/x", "/api/devices/logs"]
        {
            assert_eq!(target(other), None, "{other}");
        }
    }
}
