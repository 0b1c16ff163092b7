//! The link stream's frames: what QUIC gives the tunnel in its transport and yamux does not —
//! keep-alives with a round-trip time, and a close that carries the application's error code
//! (`REVOKED`, `REPLACED`, …) so the agent tells a refusal from a lost path over TCP as it does
//! over QUIC. Pure: bytes in, frames out.
//!
//! ```text
//! ping   0x01 nonce:u64
//! pong   0x02 nonce:u64
//! close  0x03 code:u32 len:u16 reason:len bytes (UTF-8, at most 1 KiB)
//! ```

/// The longest close reason sent or accepted.
pub const MAX_REASON: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFrame {
    Ping(u64),
    Pong(u64),
    Close { code: u32, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown link frame type {0:#04x}")]
    UnknownType(u8),
    #[error("a close reason of {0} bytes (at most {MAX_REASON})")]
    ReasonTooLong(usize),
}

impl LinkFrame {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LinkFrame::Ping(n) => [&[0x01][..], &n.to_be_bytes()].concat(),
            LinkFrame::Pong(n) => [&[0x02][..], &n.to_be_bytes()].concat(),
            LinkFrame::Close { code, reason } => {
                let mut reason = reason.as_bytes();
                if reason.len() > MAX_REASON {
                    // Cut at a character boundary: the peer reads UTF-8.
                    let mut end = MAX_REASON;
                    while std::str::from_utf8(&reason[..end]).is_err() {
                        end -= 1;
                    }
                    reason = &reason[..end];
                }
                let mut out = vec![0x03];
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
                out.extend_from_slice(reason);
                out
            }
        }
    }
}

/// Collects bytes and yields whole frames.
#[derive(Debug, Default)]
pub struct LinkDecoder {
    buf: Vec<u8>,
}

impl LinkDecoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. An error leaves the stream
    /// unreadable: the connection is to be closed.
    pub fn next_frame(&mut self) -> Result<Option<LinkFrame>, FrameError> {
        let Some(&kind) = self.buf.first() else { return Ok(None) };
        let (frame, used) = match kind {
            0x01 | 0x02 => {
                let Some(bytes) = self.buf.get(1..9) else { return Ok(None) };
                let n = u64::from_be_bytes(bytes.try_into().unwrap_or_default());
                (if kind == 0x01 { LinkFrame::Ping(n) } else { LinkFrame::Pong(n) }, 9)
            }
            0x03 => {
                let Some(head) = self.buf.get(1..7) else { return Ok(None) };
                let code = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
                if len > MAX_REASON {
                    return Err(FrameError::ReasonTooLong(len));
                }
                let Some(reason) = self.buf.get(7..7 + len) else { return Ok(None) };
                (LinkFrame::Close { code, reason: String::from_utf8_lossy(reason).into_owned() }, 7 + len)
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        self.buf.drain(..used);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whatever_the_chunking() {
        let frames = [
            LinkFrame::Ping(7),
            LinkFrame::Pong(u64::MAX),
            LinkFrame::Close { code: 0x14, reason: "device revoked".into() },
            LinkFrame::Close { code: 0, reason: String::new() },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(LinkFrame::encode).collect();
        for chunk in [1, 2, 5, bytes.len()] {
            let mut decoder = LinkDecoder::default();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.feed(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            assert_eq!(out, frames, "chunks of {chunk}");
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_and_refused_when_read() {
        let reason = "é".repeat(MAX_REASON);
        let bytes = LinkFrame::Close { code: 1, reason }.encode();
        let mut decoder = LinkDecoder::default();
        decoder.feed(&bytes);
        let Some(LinkFrame::Close { reason, .. }) = decoder.next_frame().unwrap() else { panic!() };
        assert!(reason.len() <= MAX_REASON && reason.chars().all(|c| c == 'é'));
        let mut forged = vec![0x03, 0, 0, 0, 1];
        forged.extend_from_slice(&(MAX_REASON as u16 + 1).to_be_bytes());
        let mut decoder = LinkDecoder::default();
        decoder.feed(&forged);
        assert_eq!(decoder.next_frame(), Err(FrameError::ReasonTooLong(MAX_REASON + 1)));
        let mut decoder = LinkDecoder::default();
        decoder.feed(&[0x09]);
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownType(0x09)));
    }
}
