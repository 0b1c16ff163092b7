//! A stream the hub opened for one operator connection (the remote editor) or one reader of
//! Node-RED's logs: its header frame names what follows and carries the hub's signed assertion
//! of who the operator is. The assertion is verified here, offline, against the hub key pinned
//! at enrollment. An `http` stream is then served by the gate like a network connection whose
//! caller is that operator — or, when the assertion is refused, whose every request is answered
//! 401/403 and audited. Node-RED is only ever reached through the gate. A `logs` stream is
//! served from the log buffer (`super::logs_stream`), only for an operator who may operate the
//! device.

use super::logs_stream;
use crate::audit::Auditor;
use crate::gate::{Caller, Pipeline, platform_user, serve_platform_stream};
use crate::logbuf::LogBuffer;
use redtether_proto::assertion::{self, Assertion, AssertionError};
use redtether_proto::wire::{FrameDecoder, StreamHeader, StreamKind, codes};
use redtether_transport::{RecvStream, SendStream};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// How long the hub has to send a stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A header longer than this is refused.
const MAX_HEADER: usize = 8 * 1024;

/// What forwarded streams need from the agent.
pub struct Forwarding {
    pub gate: Arc<Pipeline>,
    /// Node-RED's recent output, for `logs` streams.
    pub logs: LogBuffer,
    /// Where refused `logs` streams are recorded (the gate records refused `http` ones).
    pub audit: Auditor,
    pub device: String,
    /// Verifies assertions against the hub's Ed25519 public key as pinned at enrollment (empty
    /// if unusable: every assertion is then refused), each token once while it is valid.
    verified: Mutex<assertion::Verified>,
}

/// Tokens kept verified at most: the hub reuses one per operator and device.
const VERIFIED_TOKENS: usize = 256;

impl Forwarding {
    pub fn new(gate: Arc<Pipeline>, logs: LogBuffer, audit: Auditor, device: &str, hub_key_hex: &str) -> Forwarding {
        let hub_key = hex::decode(hub_key_hex).unwrap_or_default();
        let verified = Mutex::new(assertion::Verified::new(hub_key, VERIFIED_TOKENS));
        Forwarding { gate, logs, audit, device: device.to_string(), verified }
    }

    fn verify(&self, header: &StreamHeader, now: u64) -> Result<Assertion, AssertionError> {
        // Poisoned only if a verification panicked; what the cache holds was verified.
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        verified.verify(header.assertion.as_deref(), &self.device, now)
    }

    /// The caller the gate sees for a stream with this header.
    pub fn caller(&self, hub: SocketAddr, header: &StreamHeader, now: u64) -> Caller {
        let user = self.verify(header, now).and_then(|a| platform_user(&a).ok_or(AssertionError::Malformed));
        Caller::Platform { hub, user }
    }

    /// Serves one stream until it ends or `cancel` fires.
    pub async fn serve(&self, mut send: SendStream, mut recv: RecvStream, hub: SocketAddr, cancel: CancellationToken) {
        let header = tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await;
        let (header, rest) = match header {
            Ok(Ok(pair)) => pair,
            Ok(Err(code)) => {
                tracing::warn!(code, "a forwarded stream without a valid header; closed");
                send.reset(code);
                recv.stop(code);
                return;
            }
            Err(_) => {
                send.reset(codes::UNEXPECTED_FRAME);
                recv.stop(codes::UNEXPECTED_FRAME);
                return;
            }
        };
        if header.kind == StreamKind::Logs {
            return self.serve_logs(send, recv, hub, header, cancel).await;
        }
        let caller = self.caller(hub, &header, redtether_proto::time::unix_now());
        if let Caller::Platform { user: Err(e), .. } = &caller {
            tracing::warn!(reason = e.reason(), "a forwarded stream with a refused assertion");
        }
        let io = tokio::io::join(std::io::Cursor::new(rest).chain(recv), send);
        serve_platform_stream(io, caller, Arc::clone(&self.gate), cancel).await;
    }
}

impl Forwarding {
    /// A `logs` stream: admitted or reset with `STREAM_REFUSED` (and audited).
    async fn serve_logs(
        &self,
        mut send: SendStream,
        mut recv: RecvStream,
        hub: SocketAddr,
        header: StreamHeader,
        cancel: CancellationToken,
    ) {
        let verified = self.verify(&header, redtether_proto::time::unix_now());
        let user = verified.as_ref().ok().map(|a| a.user.clone());
        match logs_stream::admit(verified, header.logs) {
            Ok((assertion, request)) => {
                logs_stream::serve(&self.logs, &assertion.user, request, send, recv, cancel).await;
            }
            Err(refusal) => {
                tracing::warn!(reason = refusal.reason(), "a logs stream refused");
                send.reset(codes::STREAM_REFUSED);
                recv.stop(codes::STREAM_REFUSED);
                logs_stream::audit_refusal(&self.audit, hub, refusal, user.as_deref()).await;
            }
        }
    }
}

/// The header frame, and the bytes after it. `Err` is the code to close the stream with.
async fn read_header(recv: &mut RecvStream) -> Result<(StreamHeader, Vec<u8>), u32> {
    let mut decoder = FrameDecoder::default();
    let mut buf = [0u8; 2048];
    loop {
        match decoder.next_as::<StreamHeader>() {
            Ok(Some(header)) => return Ok((header, decoder.into_remaining())),
            Ok(None) if decoder.pending() > MAX_HEADER => return Err(codes::FRAME_TOO_LARGE),
            Ok(None) => {}
            Err(e) => return Err(e.code()),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.feed(&buf[..n]),
            _ => return Err(codes::UNEXPECTED_FRAME),
        }
    }
}
