//! Node-RED's stdout and stderr, line by line, into `tracing` under the target `nodered`
//! (journald) and into the agent's log buffer (`crate::logbuf`, what the platform can fetch).

use crate::logbuf::LogBuffer;
use redtether_proto::wire::LogStream;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longer lines are split: a child printing a megabyte without a newline must not grow the
/// agent's memory.
const MAX_LINE: usize = 16 * 1024;

/// Node-RED's own level, read from its log prefix (`27 Nov 07:40:00 - [warn] ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLevel {
    Error,
    Warn,
    Info,
    Debug,
}

pub fn level_of(line: &str, from_stderr: bool) -> LineLevel {
    let tag = line.split_once(" - [").and_then(|(_, rest)| rest.split_once(']')).map(|(tag, _)| tag);
    match tag {
        Some("error" | "fatal") => LineLevel::Error,
        Some("warn") => LineLevel::Warn,
        Some("info") => LineLevel::Info,
        Some("debug" | "trace") => LineLevel::Debug,
        _ if from_stderr => LineLevel::Warn,
        _ => LineLevel::Info,
    }
}

/// Reads `pipe` until end of file, emitting one event per line.
pub async fn forward<R: AsyncRead + Unpin>(pipe: R, stream: LogStream, pid: u32, buffer: LogBuffer) {
    let mut reader = BufReader::with_capacity(4096, pipe);
    let mut line = Vec::with_capacity(256);
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (take, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        if complete || line.len() >= MAX_LINE {
            emit(&line, stream, pid, &buffer);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line, stream, pid, &buffer);
    }
}

fn emit(raw: &[u8], pipe: LogStream, pid: u32, buffer: &LogBuffer) {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return;
    }
    buffer.push(pipe, text);
    let stream = pipe.as_str();
    match level_of(text, pipe == LogStream::Stderr) {
        LineLevel::Error => tracing::error!(target: "nodered", stream, pid, "{text}"),
        LineLevel::Warn => tracing::warn!(target: "nodered", stream, pid, "{text}"),
        LineLevel::Info => tracing::info!(target: "nodered", stream, pid, "{text}"),
        LineLevel::Debug => tracing::debug!(target: "nodered", stream, pid, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_red_levels_are_read_from_the_prefix() {
        assert_eq!(level_of("27 Nov 07:40:00 - [warn] Flows file name not set", false), LineLevel::Warn);
        assert_eq!(level_of("27 Nov 07:40:00 - [error] boom", false), LineLevel::Error);
        assert_eq!(level_of("27 Nov 07:40:00 - [info] Server now running", true), LineLevel::Info);
        assert_eq!(level_of("27 Nov 07:40:00 - [trace] x", false), LineLevel::Debug);
    }

    #[test]
    fn unprefixed_lines_take_the_stream_default() {
        assert_eq!(level_of("Welcome to Node-RED", false), LineLevel::Info);
        assert_eq!(level_of("TypeError: x is undefined", true), LineLevel::Warn);
    }
}
