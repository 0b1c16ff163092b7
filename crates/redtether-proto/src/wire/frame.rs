//! Length-prefixed JSON frames: encoding, and an incremental decoder that never holds more than
//! one frame's worth of bytes.

use super::MAX_FRAME;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The bytes are not a message this side knows.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A message of the protocol, but one that travels the other way.
    #[error("unexpected {0}")]
    Unexpected(String),
}

impl FrameError {
    /// The QUIC error code to close the stream with.
    pub fn code(&self) -> u32 {
        match self {
            FrameError::TooLarge(_) => super::codes::FRAME_TOO_LARGE,
            FrameError::Malformed(_) => super::codes::MALFORMED_FRAME,
            FrameError::Unexpected(_) => super::codes::UNEXPECTED_FRAME,
        }
    }
}

/// A message type of one direction of one stream: JSON tagged by `type`.
pub trait Message: Serialize + DeserializeOwned {
    /// The `type` names of the protocol's messages that travel the other way: receiving one is
    /// an unexpected frame, not a malformed one.
    const OTHER_DIRECTION: &'static [&'static str];

    /// This message's `type` name, for logs and errors.
    fn kind(&self) -> &'static str;
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

    /// The next whole message of type `T`, if one has arrived. An error is final for the stream.
    pub fn next_message<T: Message>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(json) = self.take()? else { return Ok(None) };
        serde_json::from_slice(&json).map(Some).map_err(|e| {
            #[derive(serde::Deserialize)]
            struct Tag {
                #[serde(rename = "type")]
                kind: String,
            }
            match serde_json::from_slice::<Tag>(&json) {
                Ok(tag) if T::OTHER_DIRECTION.contains(&tag.kind.as_str()) => FrameError::Unexpected(tag.kind),
                _ => FrameError::Malformed(e),
            }
        })
    }

    /// As [`FrameDecoder::next_message`], for a value with the same framing that is not a
    /// tagged message (a stream header).
    pub fn next_as<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(json) = self.take()? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(&json)?))
    }

    /// The next whole frame's JSON bytes, taken out of the buffer.
    fn take(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = self.buf.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let json = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(json))
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
    use super::super::*;
    use super::*;
    use crate::audit::{Actor, AuditEvent, AuditKind, GENESIS, StoredEvent};

    fn agent_frames() -> Vec<AgentFrame> {
        let (event, _) = StoredEvent::seal(
            AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent"),
            1,
            "e1".into(),
            "t".into(),
            &GENESIS,
        );
        vec![
            AgentFrame::Hello { protocol: 1, agent_version: "0.1.0".into() },
            AgentFrame::Status { status: DeviceStatus { agent_version: "0.1.0".into(), ..DeviceStatus::example() } },
            AgentFrame::Heartbeat { n: 7 },
            AgentFrame::HeartbeatAck { n: 7 },
            AgentFrame::DeployStatus {
                id: "d".into(),
                state: DeployState::RolledBack,
                detail: serde_json::json!("why"),
            },
            AgentFrame::Sbom { sbom: serde_json::json!({"bomFormat": "CycloneDX"}) },
            AgentFrame::CommandResult { id: 1, ok: true, detail: serde_json::json!({"pid": 5}) },
            AgentFrame::AuditBatch { events: vec![event] },
            AgentFrame::RenewRequest { csr_pem: "x".into() },
            AgentFrame::PolicyStatus { number: 4, state: PolicyState::Applied, reason: None, hash: Some("h".into()) },
            AgentFrame::PolicyStatus {
                number: 5,
                state: PolicyState::Refused,
                reason: Some("locally_managed".into()),
                hash: None,
            },
            AgentFrame::Error { code: 16, message: "m".into() },
        ]
    }

    fn hub_frames() -> Vec<HubFrame> {
        vec![
            HubFrame::Welcome { protocol: 1, hub_version: "0.1.0".into() },
            HubFrame::Heartbeat { n: 7 },
            HubFrame::HeartbeatAck { n: 7 },
            HubFrame::Command { id: 1, command: Command::RestartNodeRed },
            HubFrame::Command { id: 2, command: Command::Snapshot },
            HubFrame::Command { id: 3, command: Command::Sbom },
            HubFrame::Command { id: 4, command: Command::PortableSnapshot { seal_to: "3059".into() } },
            HubFrame::Deploy { deployment: "v1.e30.AA".into() },
            HubFrame::AuditAck { seq: 1 },
            HubFrame::RenewResponse { cert_pem: "y".into() },
            HubFrame::Policy { policy: "v1.e30.AA".into() },
            HubFrame::Error { code: 16, message: "m".into() },
        ]
    }

    fn round_trip<T: Message + PartialEq + std::fmt::Debug>(frames: Vec<T>) {
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for b in bytes {
            d.feed(&[b]);
            while let Some(f) = d.next_message::<T>().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn every_frame_round_trips_even_one_byte_at_a_time() {
        round_trip(agent_frames());
        round_trip(hub_frames());
        round_trip(vec![EnrollRequest::Enroll { token: "t".into(), csr_pem: "c".into() }]);
        round_trip(vec![
            EnrollResponse::Enrolled {
                device_id: "d".into(),
                cert_pem: "c".into(),
                ca_pem: "a".into(),
                hub_signing_key: "k".into(),
            },
            EnrollResponse::EnrollRefused { reason: EnrollRefusal::UsedToken },
        ]);
    }

    #[test]
    fn kinds_are_the_wire_names() {
        for f in agent_frames() {
            assert_eq!(serde_json::to_value(&f).unwrap()["type"], f.kind());
        }
        for f in hub_frames() {
            assert_eq!(serde_json::to_value(&f).unwrap()["type"], f.kind());
        }
    }

    #[test]
    fn a_message_of_the_other_direction_is_unexpected_not_malformed() {
        for f in hub_frames() {
            let mut d = FrameDecoder::default();
            d.feed(&encode(&f));
            match d.next_message::<AgentFrame>() {
                // Heartbeats and errors go both ways.
                Ok(Some(_)) => assert!(["heartbeat", "heartbeat_ack", "error"].contains(&f.kind()), "{f:?}"),
                Err(e) => assert_eq!(e.code(), codes::UNEXPECTED_FRAME, "{f:?}: {e}"),
                Ok(None) => panic!("a whole frame"),
            }
        }
        for f in agent_frames() {
            let mut d = FrameDecoder::default();
            d.feed(&encode(&f));
            match d.next_message::<HubFrame>() {
                Ok(Some(_)) => assert!(["heartbeat", "heartbeat_ack", "error"].contains(&f.kind()), "{f:?}"),
                Err(e) => assert_eq!(e.code(), codes::UNEXPECTED_FRAME, "{f:?}: {e}"),
                Ok(None) => panic!("a whole frame"),
            }
        }
        let mut d = FrameDecoder::default();
        d.feed(&encode(&EnrollRequest::Enroll { token: "t".into(), csr_pem: "c".into() }));
        assert_eq!(d.next_message::<HubFrame>().unwrap_err().code(), codes::UNEXPECTED_FRAME);
    }

    #[test]
    fn wire_format_is_length_then_tagged_json() {
        let bytes = encode(&AgentFrame::Heartbeat { n: 3 });
        assert_eq!(&bytes[..4], &(bytes.len() as u32 - 4).to_be_bytes());
        assert_eq!(&bytes[4..], br#"{"type":"heartbeat","n":3}"#);
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut d = FrameDecoder::default();
        d.feed(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(matches!(d.next_message::<HubFrame>(), Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1));

        for junk in [
            &b"not json"[..],
            br#"{"type":"format_disk"}"#,
            br#"{"type":"heartbeat"}"#,
            br#"{"type":"heartbeat","n":1,"x":2}"#,
            br#"[1,2]"#,
            br#"{"type":"audit_batch","events":[{"seq":1}]}"#,
        ] {
            let mut d = FrameDecoder::default();
            d.feed(&(junk.len() as u32).to_be_bytes());
            d.feed(junk);
            let e = d.next_message::<AgentFrame>().unwrap_err();
            assert_eq!(e.code(), codes::MALFORMED_FRAME, "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn stream_headers_use_the_same_framing() {
        let header = StreamHeader { kind: StreamKind::Http, assertion: Some("a.b".into()), logs: None };
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
            while let Ok(Some(_)) = d.next_message::<AgentFrame>() {}
            let mut d = FrameDecoder::default();
            d.feed(&data);
            while let Ok(Some(_)) = d.next_message::<HubFrame>() {}
        }
    }
}
