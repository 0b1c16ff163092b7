//! A device's Node-RED logs through its tunnel: a `logs` stream opened with the operator's signed
//! assertion and the request in its header, then the agent's newline-delimited JSON items read
//! back one at a time, each bounded in size. The operator is looked up again at every open, so
//! a follow that outlives a reconnect stops for an operator removed or demoted meanwhile.

use crate::registry::Registry;
use crate::store::{HubStore, OperatorRole};
use redtether_proto::assertion::{self, Assertion};
use redtether_proto::wire::{LogItem, LogsRequest, StreamHeader, StreamKind, codes, encode};
use std::sync::Arc;

/// A JSON item longer than this ends the stream (the agent's lines are at most 16 KiB of text,
/// so an honest item is well under it even with every byte escaped).
const MAX_ITEM: usize = 256 * 1024;

/// Why logs could not be opened or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogsError {
    #[error("the device is not connected")]
    Offline,
    #[error("the stream to the device failed")]
    Lost,
    #[error("the device refused the stream")]
    Refused,
    #[error("the operator may no longer read this device's logs")]
    Forbidden,
    #[error("the device sent something that is not a log item")]
    Malformed,
}

/// Who reads which device's logs: what every (re)open needs.
#[derive(Clone)]
pub struct LogsSource {
    pub store: Arc<HubStore>,
    pub registry: Registry,
    pub signer: Arc<ring::signature::Ed25519KeyPair>,
    pub device: String,
    pub operator: String,
    /// The role the request was authorised with (the token's scope and the group applied).
    pub role: OperatorRole,
}

/// The lowest role that reads logs: they hold whatever a flow printed.
pub const LOGS_ROLE: OperatorRole = OperatorRole::Member;

/// An open `logs` stream. The send half is kept only so the device sees the hub's side end
/// when this is dropped (the client left).
pub struct DeviceLogs {
    _send: redtether_transport::SendStream,
    recv: redtether_transport::RecvStream,
    buf: Vec<u8>,
}

impl LogsSource {
    /// The operator's role for this device now, no higher than the request's.
    fn role_now(&self) -> Option<OperatorRole> {
        let operator = self.store.operator(&self.operator).ok().flatten()?;
        let group = self.store.device(&self.device).ok().flatten().and_then(|d| d.group);
        Some(operator.role_in(group.as_deref()).min(self.role))
    }

    pub async fn open(&self, request: LogsRequest) -> Result<DeviceLogs, LogsError> {
        let role = self.role_now().filter(|r| *r >= LOGS_ROLE).ok_or(LogsError::Forbidden)?;
        let online = self.registry.get(&self.device).ok_or(LogsError::Offline)?;
        let claim = Assertion {
            user: self.operator.clone(),
            role: role.as_str().to_string(),
            device: self.device.clone(),
            exp: redtether_proto::time::unix_now() + assertion::LIFETIME_SECS,
        };
        let header = StreamHeader {
            kind: StreamKind::Logs,
            assertion: Some(assertion::sign(&claim, &self.signer)),
            logs: Some(request),
        };
        let (mut send, recv) = online.connection.open_bi().await.map_err(|_| LogsError::Lost)?;
        send.write_all(&encode(&header)).await.map_err(|_| LogsError::Lost)?;
        Ok(DeviceLogs { _send: send, recv, buf: Vec::new() })
    }
}

impl DeviceLogs {
    /// The next item; `None` when the device finished the stream.
    pub async fn next(&mut self) -> Result<Option<LogItem>, LogsError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return serde_json::from_slice(&line[..end]).map(Some).map_err(|_| LogsError::Malformed);
            }
            if self.buf.len() > MAX_ITEM {
                return Err(LogsError::Malformed);
            }
            let mut chunk = [0u8; 8192];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(LogsError::Malformed),
                // (Over TCP a reset carries no code: yamux has none. A device resets a logs
                // stream only to refuse it, so any reset is read as the refusal there.)
                Err(redtether_transport::ReadError::Reset(code))
                    if code == u64::from(codes::STREAM_REFUSED) || code == 0 =>
                {
                    return Err(LogsError::Refused);
                }
                Err(_) => return Err(LogsError::Lost),
            }
        }
    }
}
