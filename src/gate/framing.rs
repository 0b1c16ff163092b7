//! A guard on the client's byte stream, in front of the HTTP parser: it follows HTTP/1.1
//! message framing (heads, Content-Length bodies, chunked bodies) and refuses a request whose
//! framing is ambiguous before the parser sees any of it.
//!
//! hyper resolves `Content-Length` together with `Transfer-Encoding` by dropping the length
//! (RFC 9112 §6.3) and closing afterwards; that is safe, but such a request is a smuggling
//! attempt, and the gate answers it with 400 instead. Each head is held back until it is
//! complete and judged; bodies pass through as they arrive.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Larger request heads are refused with 431 (hyper's own buffer is larger, so it never has to).
pub const MAX_HEAD: usize = 32 * 1024;
/// How long, and how much, a closing connection's late input is read and dropped.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// After an upgrade, or once the stream can no longer be followed: bytes pass unchanged.
    Passthrough,
}

/// Why a request was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    const TOO_LARGE: Refusal = Refusal { status: 431, reason: "request head too large" };

    fn bad(reason: &'static str) -> Refusal {
        Refusal { status: 400, reason }
    }
}

/// The framing follower. Pure: bytes in, bytes to release and a verdict out.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    line: Vec<u8>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { state: State::Head, line: Vec::new() }
    }
}

impl Tracker {
    /// Feeds bytes read from the client. Releasable bytes are appended to `out`. Returns why a
    /// request must be refused; nothing of that request is released.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        while !input.is_empty() {
            match self.state.clone() {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Head => match find_head_end(&self.line, input) {
                    Some(n) => {
                        if self.line.len() + n > MAX_HEAD {
                            self.line.clear();
                            return Err(Refusal::TOO_LARGE);
                        }
                        // The common case, a whole head in one read, is judged in place.
                        let next = if self.line.is_empty() {
                            let next = judge_head(&input[..n]).map_err(Refusal::bad)?;
                            out.extend_from_slice(&input[..n]);
                            next
                        } else {
                            self.line.extend_from_slice(&input[..n]);
                            let next = judge_head(&self.line).map_err(Refusal::bad)?;
                            out.extend_from_slice(&self.line);
                            self.line.clear();
                            next
                        };
                        self.state = next;
                        input = &input[n..];
                    }
                    None => {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_HEAD {
                            self.line = Vec::new();
                            return Err(Refusal::TOO_LARGE);
                        }
                        return Ok(());
                    }
                },
                State::Body(remaining) => {
                    let n = (remaining.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state =
                        if remaining - n as u64 == 0 { State::Head } else { State::Body(remaining - n as u64) };
                }
                State::ChunkSize | State::Trailers | State::ChunkDataEnd => {
                    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(input);
                        out.extend_from_slice(input);
                        if self.line.len() > MAX_HEAD {
                            self.state = State::Passthrough;
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..=nl]);
                    out.extend_from_slice(&input[..=nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.state = self.after_line(&line);
                }
                State::ChunkData(remaining) => {
                    let n = (remaining.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if remaining - n as u64 == 0 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(remaining - n as u64)
                    };
                }
            }
        }
        Ok(())
    }

    fn after_line(&self, line: &[u8]) -> State {
        let trimmed = trim_crlf(line);
        match self.state {
            State::ChunkDataEnd => State::ChunkSize,
            State::Trailers if trimmed.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => {
                let size = trimmed.split(|&b| b == b';').next().unwrap_or(&[]);
                match std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok()) {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    // hyper will refuse this chunk; stop following.
                    None => State::Passthrough,
                }
            }
        }
    }

    /// Whether a head is being held back (the stream ends mid-head).
    pub fn holding(&self) -> bool {
        self.state == State::Head && !self.line.is_empty()
    }

    /// Releases a held, incomplete head (at end of stream), for the parser to refuse.
    pub fn release(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.line);
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Index just past the blank line ending a head, counting what is already buffered. Empty
/// lines before a request are allowed (RFC 9112 §2.2) and end no head.
fn find_head_end(buffered: &[u8], input: &[u8]) -> Option<usize> {
    let blank = |b: &u8| *b == b'\r' || *b == b'\n';
    let started = !buffered.iter().all(blank);
    let from = if started { 0 } else { input.iter().position(|b| !blank(b))? };
    let tail = &buffered[buffered.len().saturating_sub(2)..];
    let before = |at: usize, k: usize| -> Option<u8> {
        match at.checked_sub(k) {
            Some(i) if i >= from => input.get(i).copied(),
            Some(_) => None,
            None if started => tail.len().checked_sub(k - at).map(|i| tail[i]),
            None => None,
        }
    };
    let mut i = from;
    while let Some(offset) = input[i..].iter().position(|&b| b == b'\n') {
        let at = i + offset;
        let ends = matches!((before(at, 1), before(at, 2)), (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')));
        if ends {
            return Some(at + 1);
        }
        i = at + 1;
    }
    None
}

/// Parses a complete head and says how its body is framed, or why it is refused.
fn judge_head(head: &[u8]) -> Result<State, &'static str> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(head.len());
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head[start..]) {
        Ok(httparse::Status::Complete(_)) => {}
        // Whatever hyper makes of it, it will not be a request to follow.
        _ => return Ok(State::Passthrough),
    }
    let mut te: Option<&[u8]> = None;
    let mut cl: Option<&[u8]> = None;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if te.is_some() && cl.is_some() {
        return Err("conflicting Content-Length and Transfer-Encoding");
    }
    if upgrade || req.method == Some("CONNECT") {
        return Ok(State::Passthrough);
    }
    if let Some(te) = te {
        let chunked_last = std::str::from_utf8(te)
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last { State::ChunkSize } else { State::Passthrough });
    }
    match cl.map(|v| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u64>().ok())) {
        None => Ok(State::Head),
        Some(Some(0)) => Ok(State::Head),
        Some(Some(n)) => Ok(State::Body(n)),
        Some(None) => Ok(State::Passthrough),
    }
}

/// The guarded connection: reads through a [`Tracker`]; a refused request ends the read side,
/// and the 400 is written after whatever hyper had still to write, when it shuts the
/// connection down.
pub struct Guarded<IO: AsyncRead + Unpin + Send + 'static> {
    /// Always `Some` until dropped (taken by the lingering close).
    inner: Option<IO>,
    tracker: Tracker,
    ready: Vec<u8>,
    ready_pos: usize,
    refusal: Option<Vec<u8>>,
    refusal_sent: usize,
    eof: bool,
}

impl<IO: AsyncRead + Unpin + Send + 'static> Guarded<IO> {
    pub fn new(inner: IO) -> Self {
        Guarded {
            inner: Some(inner),
            tracker: Tracker::default(),
            ready: Vec::new(),
            ready_pos: 0,
            refusal: None,
            refusal_sent: 0,
            eof: false,
        }
    }

    fn io(&mut self) -> &mut IO {
        self.inner.as_mut().expect("present until drop")
    }
}

/// Lingering close, as nginx does it: when the gate closes a connection while the client may
/// still be sending (a refused request, an oversized head), the rest of its bytes are read and
/// dropped for a moment, so the kernel does not answer them with a reset that destroys the
/// response the client has not read yet.
impl<IO: AsyncRead + Unpin + Send + 'static> Drop for Guarded<IO> {
    fn drop(&mut self) {
        // hyper does not always shut down before dropping (it does not after a parse error),
        // so any connection whose client has not finished sending lingers.
        if self.eof {
            return;
        }
        let (Some(mut io), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut sink = [0u8; 4096];
            let mut budget = LINGER_BYTES;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                while budget > 0 {
                    match io.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => budget = budget.saturating_sub(n),
                    }
                }
            })
            .await;
        });
    }
}

fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let (status_line, code) = match refusal.status {
        431 => ("431 Request Header Fields Too Large", "header_too_large"),
        _ => ("400 Bad Request", "bad_request"),
    };
    let body = format!("{{\"error\":\"{code}\",\"detail\":\"{}\"}}", refusal.reason);
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<IO: AsyncRead + Unpin + Send + 'static> AsyncRead for Guarded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_pos < this.ready.len() {
                let n = (this.ready.len() - this.ready_pos).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_pos..this.ready_pos + n]);
                this.ready_pos += n;
                if this.ready_pos == this.ready.len() {
                    this.ready.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.refusal.is_some() || this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            ready!(Pin::new(this.io()).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                this.tracker.release(&mut this.ready);
                continue;
            }
            if let Err(refusal) = this.tracker.feed(read.filled(), &mut this.ready) {
                tracing::debug!(reason = refusal.reason, "gate: refused a request before parsing");
                this.refusal = Some(refusal_response(refusal));
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Guarded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let io = this.inner.as_mut().expect("present until drop");
        if let Some(response) = &this.refusal {
            while this.refusal_sent < response.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &response[this.refusal_sent..]))?;
                if n == 0 {
                    break;
                }
                this.refusal_sent += n;
            }
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
        }
        Pin::new(io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<&'static str>) {
        let mut t = Tracker::default();
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = t.feed(c, &mut out) {
                return (out, Some(e.reason));
            }
        }
        (out, None)
    }

    #[test]
    fn oversized_heads_are_refused_with_431() {
        let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let mut t = Tracker::default();
        let mut out = Vec::new();
        assert_eq!(t.feed(head.as_bytes(), &mut out), Err(Refusal::TOO_LARGE));
        assert!(out.is_empty());
        let mut t = Tracker::default();
        let results: Vec<_> = head.as_bytes().chunks(1000).map(|c| t.feed(c, &mut out)).collect();
        assert!(results.contains(&Err(Refusal::TOO_LARGE)), "also when it arrives in pieces");
    }

    #[test]
    fn plain_requests_pass_whole_even_split_anywhere() {
        let stream: &[u8] =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..stream.len() {
            let (out, err) = run(&[&stream[..split], &stream[split..]]);
            assert_eq!(err, None, "split at {split}");
            assert_eq!(out, stream, "split at {split}");
        }
    }

    #[test]
    fn leading_blank_lines_end_no_head() {
        let stream: &[u8] = b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n\nGET /b HTTP/1.1\nHost: x\n\n";
        for split in 0..stream.len() {
            let mut t = Tracker::default();
            let mut out = Vec::new();
            t.feed(&stream[..split], &mut out).unwrap();
            t.feed(&stream[split..], &mut out).unwrap();
            assert_eq!(out, stream, "split at {split}");
            assert!(!t.holding(), "split at {split}: both heads complete");
        }
    }

    #[test]
    fn conflicting_length_and_chunking_is_refused_and_held_back() {
        let bad: &[u8] =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (out, err) = run(&[bad]);
        assert_eq!(err, Some("conflicting Content-Length and Transfer-Encoding"));
        assert!(out.is_empty(), "nothing of the refused request reaches the parser");
    }

    #[test]
    fn a_smuggled_request_inside_a_body_is_not_judged_as_a_head() {
        // The body of the first request looks like a conflicting head; it is body, not a head.
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let first = format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut stream = first.into_bytes();
        stream.extend_from_slice(body);
        let (out, err) = run(&[&stream]);
        assert_eq!(err, None);
        assert_eq!(out, stream);
    }

    #[test]
    fn the_second_request_on_a_connection_is_judged_after_a_chunked_body() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for split in 0..stream.len() {
            let (_, err) = run(&[&stream[..split], &stream[split..]]);
            assert_eq!(err, Some("conflicting Content-Length and Transfer-Encoding"), "split at {split}");
        }
    }

    #[test]
    fn after_an_upgrade_bytes_pass_unchanged() {
        let stream: &[u8] = b"GET /comms HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (out, err) = run(&[stream]);
        assert_eq!(err, None);
        assert_eq!(out, stream);
    }

    #[test]
    fn an_incomplete_head_is_held_then_released_at_end_of_stream() {
        let mut t = Tracker::default();
        let mut out = Vec::new();
        t.feed(b"GET / HTTP/1.1\r\nHost:", &mut out).unwrap();
        assert!(out.is_empty() && t.holding());
        t.release(&mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost:");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), split in 0usize..512) {
            let split = split.min(data.len());
            let _ = run(&[&data[..split], &data[split..]]);
        }
    }
}
