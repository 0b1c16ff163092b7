//! A `logs` stream the hub opened: Node-RED's recent output from the agent's log buffer
//! (`crate::logbuf`), as newline-delimited JSON `LogItem`s — the last N lines or those after a
//! `seq`, then, when following, new lines as Node-RED writes them until the hub ends its side,
//! the connection goes, or the agent stops.
//!
//! Deny by default: only a valid assertion (the hub's signature, this device, not expired) of an
//! operator whose role operates the device (`owner` or `member`) opens it. Logs hold whatever a
//! flow printed, so viewers and dashboard users are refused like a missing or forged assertion:
//! the stream is reset with `STREAM_REFUSED` and the refusal audited.

use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::Role;
use crate::logbuf::LogBuffer;
use redtether_proto::assertion::{Assertion, AssertionError};
use redtether_proto::wire::{LogItem, LogsRequest, codes};
use redtether_transport::{ReadError, RecvStream, SendStream, WriteError};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Items read from the ring and written in one go: bounds what a follower holds at once.
const BATCH: usize = 256;

/// Why a `logs` stream is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogsRefusal {
    #[error("{}", .0.reason())]
    Assertion(AssertionError),
    #[error("role {0:?} may not read logs")]
    Role(&'static str),
    #[error("a logs stream without its request")]
    NoRequest,
}

impl LogsRefusal {
    /// The `reason` recorded in the audit event.
    pub fn reason(self) -> &'static str {
        match self {
            LogsRefusal::Assertion(e) => e.reason(),
            LogsRefusal::Role(_) => "role_may_not_read_logs",
            LogsRefusal::NoRequest => "logs_request_missing",
        }
    }
}

/// Whether a `logs` stream is served: pure, on the verified assertion and the header's request.
pub fn admit(
    verified: Result<Assertion, AssertionError>,
    request: Option<LogsRequest>,
) -> Result<(Assertion, LogsRequest), LogsRefusal> {
    let assertion = verified.map_err(LogsRefusal::Assertion)?;
    match Role::parse(&assertion.role) {
        Some(Role::Owner | Role::Member) => {}
        Some(other) => return Err(LogsRefusal::Role(other.as_str())),
        None => return Err(LogsRefusal::Assertion(AssertionError::Malformed)),
    }
    let request = request.ok_or(LogsRefusal::NoRequest)?;
    Ok((assertion, request))
}

/// Records a refused `logs` stream: `access.denied` for a known operator whose role may not,
/// `auth.failed` for anything else.
pub async fn audit_refusal(audit: &Auditor, hub: SocketAddr, refusal: LogsRefusal, user: Option<&str>) {
    let (kind, actor) = match (refusal, user) {
        (LogsRefusal::Role(_), Some(user)) => (AuditKind::AccessDenied, Actor::user(format!("{user}@platform"))),
        (LogsRefusal::Assertion(AssertionError::OtherDevice), _) => {
            (AuditKind::AccessDenied, Actor::anonymous(hub.ip()))
        }
        _ => (AuditKind::AuthFailed, Actor::anonymous(hub.ip())),
    };
    let event = AuditEvent::new(kind, actor, "logs").with("reason", refusal.reason()).with("via", "tunnel");
    audit.record_or_log(event).await;
}

/// Why a served stream ended (in the agent's log line "logs stream ended").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Sent,
    HubLeft,
    ConnectionLost,
    Write,
    Cancelled,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Sent => "sent",
            Ended::HubLeft => "hub_ended_stream",
            Ended::ConnectionLost => "connection_lost",
            Ended::Write => "write_failed",
            Ended::Cancelled => "agent_stopping",
        }
    }
}

/// One item per line.
fn encode(items: &[LogItem]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        // (Serialising these types cannot fail: strings and numbers only.)
        if let Ok(json) = serde_json::to_vec(item) {
            out.extend_from_slice(&json);
            out.push(b'\n');
        }
    }
    out
}

/// Where the cursor is after sending `items`.
fn cursor_after(items: &[LogItem], cursor: u64) -> u64 {
    items.iter().fold(cursor, |_, item| match item {
        LogItem::Line(line) => line.seq,
        LogItem::Skipped { after, count } => after + count,
    })
}

/// Serves an admitted stream.
pub async fn serve(
    logs: &LogBuffer,
    user: &str,
    request: LogsRequest,
    mut send: SendStream,
    mut recv: RecvStream,
    cancel: CancellationToken,
) {
    // Subscribed before the first read, so a line written in between wakes the loop.
    let mut newest = logs.subscribe();
    let (first, mut cursor) = match request.after {
        Some(after) => {
            let items = logs.after(after, BATCH);
            let cursor = cursor_after(&items, after);
            (items, cursor)
        }
        None => {
            let (lines, cursor) = logs.tail((request.lines as usize).min(logs.capacity()));
            (lines.into_iter().map(LogItem::Line).collect(), cursor)
        }
    };
    let mut sent = first.len();
    tracing::info!(user, follow = request.follow, after = ?request.after, "logs stream opened");
    let mut ended = match write(&mut send, &first, &cancel).await {
        Some(end) => end,
        None if !request.follow => Ended::Sent,
        None => loop {
            let items = logs.after(cursor, BATCH);
            if !items.is_empty() {
                if let Some(end) = write(&mut send, &items, &cancel).await {
                    break end;
                }
                sent += items.len();
                cursor = cursor_after(&items, cursor);
                continue;
            }
            let mut probe = [0u8; 64];
            tokio::select! {
                _ = cancel.cancelled() => break Ended::Cancelled,
                changed = newest.changed() => if changed.is_err() { break Ended::Cancelled },
                // The hub sends nothing after the header: its side ending (or anything else
                // arriving) means its client left.
                read = recv.read(&mut probe) => break match read {
                    Err(ReadError::ConnectionLost(_)) => Ended::ConnectionLost,
                    _ => Ended::HubLeft,
                },
            }
        },
    };
    if ended == Ended::Sent && send.finish().await.is_err() {
        ended = Ended::Write;
    }
    if ended != Ended::Sent {
        send.reset(codes::SHUTDOWN);
        recv.stop(codes::SHUTDOWN);
    }
    tracing::info!(user, sent, reason = ended.as_str(), "logs stream ended");
}

/// Writes `items`; `Some` when the stream is over.
async fn write(send: &mut SendStream, items: &[LogItem], cancel: &CancellationToken) -> Option<Ended> {
    if items.is_empty() {
        return None;
    }
    let bytes = encode(items);
    tokio::select! {
        _ = cancel.cancelled() => Some(Ended::Cancelled),
        written = send.write_all(&bytes) => written.err().map(|e| match e {
            WriteError::ConnectionLost(_) => Ended::ConnectionLost,
            // The hub stopped reading: its client left.
            WriteError::Stopped(_) => Ended::HubLeft,
            _ => Ended::Write,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::wire::{LogLine, LogStream};

    fn claim(role: &str) -> Assertion {
        Assertion { user: "ann".into(), role: role.into(), device: "pump-1".into(), exp: 10 }
    }
    const ASK: Option<LogsRequest> = Some(LogsRequest { lines: 5, after: None, follow: true });

    #[test]
    fn operators_who_operate_the_device_are_admitted() {
        for role in ["owner", "member"] {
            let (a, r) = admit(Ok(claim(role)), ASK).unwrap();
            assert_eq!((a.role.as_str(), r.lines), (role, 5));
        }
    }

    #[test]
    fn everyone_else_is_refused() {
        assert_eq!(admit(Ok(claim("viewer")), ASK).unwrap_err(), LogsRefusal::Role("viewer"));
        assert_eq!(admit(Ok(claim("dashboard")), ASK).unwrap_err(), LogsRefusal::Role("dashboard"));
        assert_eq!(
            admit(Ok(claim("root")), ASK).unwrap_err(),
            LogsRefusal::Assertion(AssertionError::Malformed),
            "an unknown role is no role"
        );
        for e in [AssertionError::Missing, AssertionError::BadSignature, AssertionError::Expired] {
            assert_eq!(admit(Err(e), ASK).unwrap_err(), LogsRefusal::Assertion(e));
        }
        assert_eq!(admit(Ok(claim("owner")), None).unwrap_err(), LogsRefusal::NoRequest);
        assert_eq!(LogsRefusal::Assertion(AssertionError::BadSignature).reason(), "platform_assertion_forged");
    }

    #[test]
    fn a_forged_or_absent_assertion_never_opens_logs() {
        use redtether_proto::assertion::{sign, verify};
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let key = || Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let (hub, mallory) = (key(), key());
        let pinned = hub.public_key().as_ref().to_vec();
        let member = Assertion { exp: 1060, ..claim("member") };
        let check = |token: Option<&str>| admit(verify(token, &pinned, "pump-1", 1000), ASK).map(|(a, _)| a.user);
        assert_eq!(check(Some(&sign(&member, &hub))), Ok("ann".to_string()));
        assert_eq!(
            check(Some(&sign(&member, &mallory))),
            Err(LogsRefusal::Assertion(AssertionError::BadSignature)),
            "signed by another key"
        );
        assert_eq!(check(None), Err(LogsRefusal::Assertion(AssertionError::Missing)));
        let viewer = Assertion { exp: 1060, ..claim("viewer") };
        assert_eq!(check(Some(&sign(&viewer, &hub))), Err(LogsRefusal::Role("viewer")), "signed, but a viewer");
    }

    #[test]
    fn items_are_one_json_per_line_and_move_the_cursor() {
        let line =
            |seq| LogItem::Line(LogLine { seq, time: "t".into(), stream: LogStream::Stdout, text: "a\nb".into() });
        let items = [LogItem::Skipped { after: 2, count: 3 }, line(6), line(7)];
        let text = String::from_utf8(encode(&items)).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(cursor_after(&items, 2), 7);
        assert_eq!(cursor_after(&items[..1], 2), 5, "a gap alone moves the cursor past it");
        assert_eq!(cursor_after(&[], 9), 9);
    }
}
