//! The CLI's side of the control socket (blocking: a CLI call is one short exchange).

use super::ControlResponse;
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon is listening on the socket.
    #[error("redtether is not running (no daemon answers on {})", .0.display())]
    NotRunning(PathBuf),
    /// The exchange failed midway.
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered something that is not a response.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon understood and refused.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and returns the `result` of a successful response, read as `T`.
pub fn request<T: DeserializeOwned>(
    socket: &Path,
    request: &impl serde::Serialize,
    timeout: Duration,
) -> Result<T, ClientError> {
    let io = |source| ClientError::Io { path: socket.to_path_buf(), source };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Err(ClientError::NotRunning(socket.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let response: ControlResponse =
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(format!("{e}: {answer:?}")))?;
    if response.ok {
        let result = response.result.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(result).map_err(|e| ClientError::Protocol(format!("unexpected result: {e}")))
    } else {
        Err(ClientError::Refused(response.error.unwrap_or_else(|| "refused without a reason".into())))
    }
}
