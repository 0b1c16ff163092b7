//! The header of a stream the hub opens for one forwarded client connection, before its raw
//! bytes; and what a `logs` stream carries after it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHeader {
    /// What the bytes after the header are.
    pub kind: StreamKind,
    /// The hub's signed statement of who the operator is, for the gate.
    pub assertion: Option<String>,
    /// What a `logs` stream should send; absent on every other kind (and then not written, so an
    /// `http` header is the same bytes as before logs existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsRequest>,
}

/// What a forwarded stream carries. A kind this side does not know makes the header malformed:
/// the stream is closed before any byte of it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// An HTTP/1.1 connection to the gate.
    Http,
    /// Node-RED's output from the agent's log buffer: newline-delimited JSON [`LogItem`]s from
    /// the device; the hub sends nothing after the header and ends its side when its client left.
    Logs,
}

/// Which of the buffered lines a `logs` stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// The last this many lines (when `after` is not given).
    pub lines: u32,
    /// Only lines with a larger `seq` than this (resuming); `lines` is then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Keep the stream open and send new lines as Node-RED writes them.
    #[serde(default)]
    pub follow: bool,
}

/// Which of Node-RED's pipes a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line of Node-RED's output, as it wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// Numbers the agent's lines since it started, from 1, without gaps.
    pub seq: u64,
    /// When the agent read it, RFC 3339 with milliseconds.
    pub time: String,
    pub stream: LogStream,
    pub text: String,
}

/// One element of a `logs` stream (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LogItem {
    Line(LogLine),
    /// Lines `after + 1 ..= after + count` were overwritten in the buffer before this reader got
    /// to them (a slow reader, or a resume from too far back): said, never silently skipped.
    Skipped {
        after: u64,
        count: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_plain_strings_and_unknown_ones_are_refused() {
        let header = StreamHeader { kind: StreamKind::Http, assertion: None, logs: None };
        assert_eq!(serde_json::to_string(&header).unwrap(), r#"{"kind":"http","assertion":null}"#);
        assert!(serde_json::from_str::<StreamHeader>(r#"{"kind":"ssh","assertion":null}"#).is_err());
    }

    #[test]
    fn a_logs_header_carries_its_request() {
        let logs = LogsRequest { lines: 10, after: Some(7), follow: true };
        let header = StreamHeader { kind: StreamKind::Logs, assertion: Some("a".into()), logs: Some(logs) };
        let json = serde_json::to_string(&header).unwrap();
        assert_eq!(json, r#"{"kind":"logs","assertion":"a","logs":{"lines":10,"after":7,"follow":true}}"#);
        assert_eq!(serde_json::from_str::<StreamHeader>(&json).unwrap(), header);
        let short: StreamHeader =
            serde_json::from_str(r#"{"kind":"logs","assertion":null,"logs":{"lines":5}}"#).unwrap();
        assert_eq!(short.logs, Some(LogsRequest { lines: 5, after: None, follow: false }));
    }

    #[test]
    fn log_items_are_tagged_objects() {
        let line = LogItem::Line(LogLine {
            seq: 3,
            time: "2025-01-01T00:00:00.000Z".into(),
            stream: LogStream::Stderr,
            text: "x\ny".into(),
        });
        let json = serde_json::to_string(&line).unwrap();
        assert!(!json.contains('\n'), "one item is one line: {json}");
        assert_eq!(serde_json::from_str::<LogItem>(&json).unwrap(), line);
        let skipped = serde_json::to_string(&LogItem::Skipped { after: 2, count: 5 }).unwrap();
        assert_eq!(skipped, r#"{"skipped":{"after":2,"count":5}}"#);
    }
}
