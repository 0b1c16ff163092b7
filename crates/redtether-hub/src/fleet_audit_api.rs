//! The fleet audit for the operator console, viewers and above (see `store::fleet_audit`):
//!
//! - `GET /api/audit?device=&group=&kind=&actor=&since=&until=&source=device|hub&before=&limit=` →
//!   `{"events": [row, …], "next": cursor or null, "partial": bool, "scanned_to": time or
//!   null}`, newest first; `next` goes as `before` for the next page. `partial` says the scan
//!   stopped at its bound with fewer rows than asked for: older matches may remain.
//! - `GET /api/audit/export?format=jsonl|csv&<the same filters>` → every matching row, streamed
//!   as read (no bound), as an attachment. An export the store fails in the middle of ends with
//!   a last line saying so, since the status was sent with the first row.
//!
//! A bad parameter is 400 `{"error": "bad_query", "parameter", "detail"}`. Both read sled on a
//! blocking thread: a page may scan for tens of milliseconds, an export for minutes.

use crate::api::{Api, ApiBody, boxed, error, json_response, store_error};
use crate::store::prelude::*;
use crate::store::{CSV_HEADER, ExportFormat, FleetAuditError, FleetQuery, GroupScope, QueryFor, csv_line};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The export's path: routed before the API's other routes, because its body is streamed.
pub const EXPORT_PATH: &str = "/api/audit/export";

/// Bytes gathered before a chunk of the export is handed to the connection.
const EXPORT_CHUNK: usize = 64 * 1024;
/// Chunks waiting for a slow client before reading pauses.
const EXPORT_CHUNKS_QUEUED: usize = 4;

fn bad_query(e: &FleetAuditError) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({ "error": "bad_query", "parameter": e.parameter(), "detail": e.to_string() }),
    )
}

impl Api {
    /// A `group` filter's members, as they are now. (A group deleted since still has its own
    /// events: an unknown group is not an error.)
    fn fill_group(&self, q: &mut FleetQuery) -> Result<(), crate::store::StoreError> {
        if let Some(group) = &mut q.filter.group {
            group.members = self.store.group_members(&group.name)?.into_iter().collect();
        }
        Ok(())
    }

    /// `GET /api/audit` (the caller's role was checked by the router).
    pub(crate) async fn fleet_audit_page(&self, query: Option<&str>, group: Option<&str>) -> Response<Full<Bytes>> {
        let mut q = match FleetQuery::parse(query, QueryFor::Page) {
            Ok(q) => q,
            Err(e) => return bad_query(&e),
        };
        if let Some(name) = group {
            q.filter.group = Some(GroupScope { name: name.to_string(), members: Default::default() });
        }
        if let Err(e) = self.fill_group(&mut q) {
            return store_error(&e);
        }
        let store = Arc::clone(&self.store);
        let read = self.tasks.spawn_blocking(move || store.audit_page(&q.filter, q.before.as_ref(), q.limit));
        match read.await {
            Ok(Ok(page)) => json_response(
                StatusCode::OK,
                json!({ "events": page.rows, "next": page.next, "partial": page.partial, "scanned_to": page.scanned_to }),
            ),
            Ok(Err(e)) => store_error(&e),
            Err(e) => {
                tracing::error!(error = %e, "fleet audit: the page's reading task failed");
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }

    /// `GET /api/audit/export`, authenticated here since it does not go through the router.
    pub(crate) async fn fleet_audit_export(&self, req: &Request<Incoming>, peer: IpAddr) -> Response<ApiBody> {
        let caller = match self.reader(req.headers(), peer) {
            Ok(caller) => caller,
            Err(refused) => return *refused,
        };
        if req.method() != Method::GET {
            return boxed(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
        }
        let mut q = match FleetQuery::parse(req.uri().query(), QueryFor::Export) {
            Ok(q) => q,
            Err(e) => return boxed(bad_query(&e)),
        };
        if let Err(e) = self.fill_group(&mut q) {
            return boxed(store_error(&e));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_QUEUED);
        let store = Arc::clone(&self.store);
        let format = q.format;
        let operator = caller.operator.name.clone();
        self.tasks.spawn_blocking(move || {
            let mut out = ChunkWriter { tx, buffer: Vec::with_capacity(EXPORT_CHUNK) };
            let header = match format {
                ExportFormat::Csv => out.push(CSV_HEADER.as_bytes()),
                ExportFormat::JsonLines => Ok(()),
            };
            let exported = header.map_err(FleetAuditError::Write).and_then(|()| {
                store.audit_export_to(&q.filter, |row| match format {
                    ExportFormat::JsonLines => {
                        let mut line = serde_json::to_vec(row).map_err(std::io::Error::other)?;
                        line.push(b'\n');
                        out.push(&line)
                    }
                    ExportFormat::Csv => out.push(csv_line(row).as_bytes()),
                })
            });
            match exported {
                Ok(rows) => tracing::info!(%operator, rows, "fleet audit exported"),
                Err(FleetAuditError::Write(e)) => {
                    tracing::info!(%operator, error = %e, "fleet audit export ended early: the client went away");
                }
                Err(e) => {
                    tracing::error!(%operator, error = %e, "fleet audit export failed");
                    let note = match format {
                        ExportFormat::JsonLines => {
                            "{\"error\":\"store_error\",\"detail\":\"the export is incomplete\"}\n"
                        }
                        ExportFormat::Csv => "ERROR: the export is incomplete (store error)\r\n",
                    };
                    let _ = out.push(note.as_bytes());
                }
            }
            let _ = out.send();
        });
        let (content_type, extension) = match format {
            ExportFormat::JsonLines => ("application/x-ndjson", "jsonl"),
            ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        };
        let stamp = redtether_proto::time::format_unix(redtether_proto::time::unix_now()).replace(':', "");
        let mut response = Response::new(ChunkBody(rx).map_err(|never| match never {}).boxed());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        if let Ok(v) =
            header::HeaderValue::from_str(&format!("attachment; filename=\"redtether-audit-{stamp}.{extension}\""))
        {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        response
    }
}

/// Gathers the export into chunks for the connection; fails once the client is gone.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= EXPORT_CHUNK { self.send() } else { Ok(()) }
    }

    /// Hands the gathered bytes over, waiting while the client is behind.
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(EXPORT_CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client closed the connection"))
    }
}

/// The export's body: the chunks [`ChunkWriter`] sends, ending when it is dropped.
struct ChunkBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
