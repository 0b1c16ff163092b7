//! Length-prefixed JSON frames: encoding, and an incremental decoder that never holds more than
//! one frame's worth of bytes.

use super::MAX_FRAME;
use super::messages::Frame;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The bytes are not a known message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The QUIC error code to close the stream with.
    pub fn code(&self) -> u32 {
        match self {
            FrameError::TooLarge(_) => super::codes::FRAME_TOO_LARGE,
            FrameError::Malformed(_) => super::codes::MALFORMED_FRAME,
        }
    }
}

/// A frame's bytes: length, then JSON.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let json = serde_json::to_vec(message).expect("protocol messages always encode");
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Collects bytes as they arrive and hands out whole frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. An error is final for the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.next_as()
    }

    /// As [`FrameDecoder::next_frame`], for another message type with the same framing.
    pub fn next_as<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(len) = self.buf.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let parsed = serde_json::from_slice(&self.buf[4..4 + len]).map_err(|e| FrameError::Malformed(e.to_string()));
        self.buf.drain(..4 + len);
        parsed.map(Some)
    }

    /// Bytes waiting that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The bytes after the frames taken so far: where a stream switches from frames to raw
    /// bytes (after a stream header), they are the first raw bytes.
    pub fn into_remaining(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::super::messages::{Command, DeployState, DeviceStatus, EnrollRefusal, StreamHeader};
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello { protocol: 1, agent_version: "0.1.0".into() },
            Frame::Welcome { protocol: 1, hub_version: "0.1.0".into() },
            Frame::Status { status: DeviceStatus { agent_version: "0.1.0".into(), ..Default::default() } },
            Frame::Heartbeat { n: 7 },
            Frame::HeartbeatAck { n: 7 },
            Frame::Command { id: 1, command: Command::RestartNodeRed },
            Frame::Command { id: 2, command: Command::Snapshot },
            Frame::Command { id: 3, command: Command::Sbom },
            Frame::Deploy { deployment: "v1.e30.AA".into() },
            Frame::DeployStatus { id: "d".into(), state: DeployState::RolledBack, detail: serde_json::json!("why") },
            Frame::Sbom { sbom: serde_json::json!({"bomFormat": "CycloneDX"}) },
            Frame::CommandResult { id: 1, ok: true, detail: serde_json::json!({"pid": 5}) },
            Frame::AuditBatch { events: vec![serde_json::json!({"seq": 1})] },
            Frame::AuditAck { seq: 1 },
            Frame::RenewRequest { csr_pem: "x".into() },
            Frame::RenewResponse { cert_pem: "y".into() },
            Frame::Enroll { token: "t".into(), csr_pem: "c".into() },
            Frame::Enrolled {
                device_id: "d".into(),
                cert_pem: "c".into(),
                ca_pem: "a".into(),
                hub_signing_key: "k".into(),
            },
            Frame::EnrollRefused { reason: EnrollRefusal::UsedToken },
            Frame::Error { code: 16, message: "m".into() },
        ]
    }

    #[test]
    fn every_frame_round_trips_even_one_byte_at_a_time() {
        let bytes: Vec<u8> = all_frames().iter().flat_map(encode).collect();
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for b in bytes {
            d.feed(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, all_frames());
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn wire_format_is_length_then_tagged_json() {
        let bytes = encode(&Frame::Heartbeat { n: 3 });
        assert_eq!(&bytes[..4], &(bytes.len() as u32 - 4).to_be_bytes());
        assert_eq!(&bytes[4..], br#"{"type":"heartbeat","n":3}"#);
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut d = FrameDecoder::default();
        d.feed(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(MAX_FRAME + 1)));

        for junk in [
            &b"not json"[..],
            br#"{"type":"format_disk"}"#,
            br#"{"type":"heartbeat"}"#,
            br#"{"type":"heartbeat","n":1,"x":2}"#,
            br#"[1,2]"#,
        ] {
            let mut d = FrameDecoder::default();
            d.feed(&(junk.len() as u32).to_be_bytes());
            d.feed(junk);
            let e = d.next_frame().unwrap_err();
            assert_eq!(e.code(), super::super::codes::MALFORMED_FRAME, "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn stream_headers_use_the_same_framing() {
        let header = StreamHeader { kind: "http".into(), assertion: Some("a.b".into()) };
        let mut d = FrameDecoder::default();
        d.feed(&encode(&header));
        d.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(d.next_as::<StreamHeader>().unwrap(), Some(header));
        assert_eq!(d.pending(), 16, "the raw bytes after the header stay");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut d = FrameDecoder::default();
            d.feed(&data);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
