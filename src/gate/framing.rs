//! A guard on the client's byte stream, in front of the HTTP parser: it follows HTTP/1.1
//! message framing (heads, Content-Length bodies, chunked bodies) and refuses a request whose
//! framing is ambiguous or malformed before the parser sees any of it.
//!
//! hyper resolves `Content-Length` together with `Transfer-Encoding` by dropping the length
//! (RFC 9112 §6.3) and closing afterwards; that is safe, but such a request is a smuggling
//! attempt, and the gate answers it with 400 instead. The same goes for every other head whose
//! body length is not exactly one thing: several or non-numeric `Content-Length`s, transfer
//! codings other than a single `chunked`, `Transfer-Encoding` in HTTP/1.0. Each head is held
//! back until it is complete and judged.
//!
//! Bodies pass through as they arrive. A chunked body is followed byte by byte against the
//! grammar of RFC 9112 §7.1 — at least as strictly as hyper decodes it, so the two never disagree
//! on where a message ends (hyper alone accepts, for example, any bytes as a chunk extension and
//! a bare LF before the trailer section, and would then read the next request as trailers).
//! When the grammar breaks, the guard stops releasing bytes: hyper sees the body end early, and
//! whoever reads the body answers 400. The gate reads every chunked body whole before it
//! forwards anything (`pipeline`), so Node-RED sees nothing of such a request.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Larger request heads are refused with 431 (hyper's own buffer is larger, so it never has to).
pub const MAX_HEAD: usize = 32 * 1024;
/// A chunk-size line (size and extensions) longer than this is refused; hyper allows 16 KiB of
/// extensions per body, which no client needs.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// A larger trailer section is refused (hyper's own limit is 16 KiB).
const MAX_TRAILERS: usize = 8 * 1024;
/// How long, and how much, a closing connection's late input is read and dropped.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Chunked(Chunk),
    /// After an upgrade, or once the stream can no longer be followed: bytes pass unchanged.
    Passthrough,
    /// A body's framing broke: nothing more is released.
    Cut,
}

/// Where in a chunked body the guard is (RFC 9112 §7.1). The `u64` is the chunk's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a chunk size.
    SizeStart,
    Size(u64),
    /// Whitespace after the size or an extension's value: `;` or CR may follow.
    SizeBws(u64),
    /// After `;`: an extension's name.
    ExtStart(u64),
    ExtName(u64),
    /// Whitespace after an extension's name: `=`, `;` or CR may follow.
    ExtAfterName(u64),
    /// After `=`: a token or a quoted string.
    ExtValueStart(u64),
    ExtToken(u64),
    ExtQuoted(u64),
    ExtQuotedPair(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// The start of a trailer field line, or the CRLF that ends the message.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
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

/// Why the guard stopped releasing bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A request refused before the parser saw any of it: the guard answers it.
    Refused(Refusal),
    /// A chunked body whose framing broke after its head was released: the parser sees the body
    /// end there, and whoever reads the body answers 400.
    Cut(&'static str),
}

/// The framing follower. Pure: bytes in, bytes to release and a verdict out.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    line: Vec<u8>,
    /// Bytes of the current chunk-size line, or of the trailer section.
    counted: usize,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { state: State::Head, line: Vec::new(), counted: 0 }
    }
}

impl Tracker {
    /// Feeds bytes read from the client. Releasable bytes are appended to `out`. Returns why
    /// the guard stops: nothing of a refused request is released; of a cut body, what came
    /// before the fault.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Stop> {
        while !input.is_empty() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Cut => return Err(Stop::Cut("the body's framing already broke")),
                State::Head => match find_head_end(&self.line, input) {
                    Some(n) => {
                        if self.line.len() + n > MAX_HEAD {
                            self.line.clear();
                            return Err(Stop::Refused(Refusal::TOO_LARGE));
                        }
                        // The common case, a whole head in one read, is judged in place.
                        let next = if self.line.is_empty() {
                            let next = judge_head(&input[..n]).map_err(Stop::Refused)?;
                            out.extend_from_slice(&input[..n]);
                            next
                        } else {
                            self.line.extend_from_slice(&input[..n]);
                            let next = judge_head(&self.line).map_err(Stop::Refused)?;
                            out.extend_from_slice(&self.line);
                            self.line.clear();
                            next
                        };
                        self.state = next;
                        self.counted = 0;
                        input = &input[n..];
                    }
                    None => {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_HEAD {
                            self.line = Vec::new();
                            return Err(Stop::Refused(Refusal::TOO_LARGE));
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
                State::Chunked(Chunk::Data(remaining)) => {
                    let n = (remaining.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = remaining - n as u64;
                    self.state = State::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data(left) });
                }
                State::Chunked(chunk) => {
                    // Framing bytes, one at a time; released only once they are known good.
                    let b = input[0];
                    match self.chunk_byte(chunk, b) {
                        Ok(next) => {
                            out.push(b);
                            input = &input[1..];
                            self.state = next;
                        }
                        Err(reason) => {
                            self.state = State::Cut;
                            return Err(Stop::Cut(reason));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One framing byte of a chunked body (RFC 9112 §7.1, §7.1.1, §7.1.2): the next state, or
    /// why the body is malformed.
    fn chunk_byte(&mut self, chunk: Chunk, b: u8) -> Result<State, &'static str> {
        use Chunk::*;
        let in_size_line = matches!(
            chunk,
            SizeStart
                | Size(_)
                | SizeBws(_)
                | ExtStart(_)
                | ExtName(_)
                | ExtAfterName(_)
                | ExtValueStart(_)
                | ExtToken(_)
                | ExtQuoted(_)
                | ExtQuotedPair(_)
                | SizeLf(_)
        );
        if in_size_line {
            self.counted += 1;
            if self.counted > MAX_CHUNK_LINE {
                return Err("chunk-size line too long");
            }
        }
        if matches!(chunk, TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf) {
            self.counted += 1;
            if self.counted > MAX_TRAILERS {
                return Err("trailer section too large");
            }
        }
        let ws = b == b' ' || b == b'\t';
        let next = match chunk {
            SizeStart => Size(hex(b).ok_or("chunk size is not hexadecimal")?),
            Size(n) => match b {
                b'\r' => SizeLf(n),
                b';' => ExtStart(n),
                _ if ws => SizeBws(n),
                _ => {
                    let digit = hex(b).ok_or("chunk size is not hexadecimal")?;
                    Size(n.checked_mul(16).and_then(|n| n.checked_add(digit)).ok_or("chunk size overflows")?)
                }
            },
            SizeBws(n) => match b {
                b'\r' => SizeLf(n),
                b';' => ExtStart(n),
                _ if ws => SizeBws(n),
                _ => return Err("malformed chunk extension"),
            },
            ExtStart(n) if ws => ExtStart(n),
            ExtStart(n) if is_tchar(b) => ExtName(n),
            ExtStart(_) => return Err("chunk extension without a name"),
            ExtName(n) | ExtAfterName(n) => match b {
                b'\r' => SizeLf(n),
                b';' => ExtStart(n),
                b'=' => ExtValueStart(n),
                _ if ws => ExtAfterName(n),
                _ if is_tchar(b) && matches!(chunk, ExtName(_)) => ExtName(n),
                _ => return Err("malformed chunk extension"),
            },
            ExtValueStart(n) => match b {
                b'"' => ExtQuoted(n),
                _ if ws => ExtValueStart(n),
                _ if is_tchar(b) => ExtToken(n),
                _ => return Err("malformed chunk extension value"),
            },
            ExtToken(n) => match b {
                b'\r' => SizeLf(n),
                b';' => ExtStart(n),
                _ if ws => SizeBws(n),
                _ if is_tchar(b) => ExtToken(n),
                _ => return Err("malformed chunk extension value"),
            },
            ExtQuoted(n) => match b {
                b'"' => SizeBws(n),
                b'\\' => ExtQuotedPair(n),
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => ExtQuoted(n),
                _ => return Err("malformed quoted chunk extension value"),
            },
            ExtQuotedPair(n) => match b {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => ExtQuoted(n),
                _ => return Err("malformed quoted chunk extension value"),
            },
            SizeLf(n) => match b {
                b'\n' => {
                    self.counted = 0;
                    if n == 0 { TrailerStart } else { Data(n) }
                }
                _ => return Err("chunk-size line does not end in CRLF"),
            },
            Data(_) => unreachable!("chunk data is released in bulk"),
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => SizeStart,
            DataCr | DataLf => return Err("chunk data does not end in CRLF"),
            TrailerStart => match b {
                b'\r' => EndLf,
                _ if is_tchar(b) => TrailerName,
                _ if ws => return Err("folded or indented trailer field"),
                _ => return Err("malformed trailer field"),
            },
            TrailerName => match b {
                b':' => TrailerValue,
                _ if is_tchar(b) => TrailerName,
                _ => return Err("malformed trailer field name"),
            },
            TrailerValue => match b {
                b'\r' => TrailerLf,
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => TrailerValue,
                _ => return Err("malformed trailer field value"),
            },
            TrailerLf if b == b'\n' => TrailerStart,
            TrailerLf => return Err("trailer field does not end in CRLF"),
            EndLf if b == b'\n' => return Ok(State::Head),
            EndLf => return Err("chunked body does not end in CRLF"),
        };
        Ok(State::Chunked(next))
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

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
fn judge_head(head: &[u8]) -> Result<State, Refusal> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(head.len());
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head[start..]) {
        Ok(httparse::Status::Complete(_)) => {}
        // Whatever hyper makes of it, it will not be a request to follow.
        _ => return Ok(State::Passthrough),
    }
    // hyper's URI parser drops a fragment silently; a request-target never has one (RFC 9112
    // §3.2), so a client that sends one means something the gate cannot know.
    if req.path.is_some_and(|p| p.contains('#')) {
        return Err(Refusal::bad("fragment in request target"));
    }
    let mut te: Vec<&[u8]> = Vec::new();
    let mut cl: Vec<&[u8]> = Vec::new();
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te.push(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl.push(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if !te.is_empty() && !cl.is_empty() {
        return Err(Refusal::bad("conflicting Content-Length and Transfer-Encoding"));
    }
    let length = match cl.as_slice() {
        [] => None,
        // RFC 9110 §8.6 lets a recipient merge identical values; the gate refuses, so that no
        // list or repeat reaches Node-RED, whose parser refuses them too.
        [value] => Some(content_length(value).ok_or(Refusal::bad("Content-Length is not a decimal number"))?),
        _ => return Err(Refusal::bad("more than one Content-Length")),
    };
    let chunked = !te.is_empty();
    if chunked {
        transfer_codings(&te, req.version)?;
    }
    if upgrade || req.method == Some("CONNECT") {
        return Ok(State::Passthrough);
    }
    Ok(match length {
        _ if chunked => State::Chunked(Chunk::SizeStart),
        None | Some(0) => State::Head,
        Some(n) => State::Body(n),
    })
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), within 64 bits.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Accepts `Transfer-Encoding` (all its lines as one list) only as exactly `chunked`
/// (RFC 9112 §6.1, §6.3): the gate implements no other transfer coding, and Node-RED would get
/// a body still coded once the gate has removed the hop-by-hop header.
fn transfer_codings(lines: &[&[u8]], version: Option<u8>) -> Result<(), Refusal> {
    if version == Some(0) {
        return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let mut codings = Vec::new();
    for line in lines {
        let text = std::str::from_utf8(line).map_err(|_| Refusal::bad("malformed Transfer-Encoding"))?;
        for coding in text.split(',').map(|c| c.trim_matches([' ', '\t'])) {
            if coding.is_empty() || !coding.bytes().all(is_tchar) {
                return Err(Refusal::bad("malformed Transfer-Encoding"));
            }
            codings.push(coding);
        }
    }
    let is_chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
    match codings.split_last() {
        Some((last, _)) if !is_chunked(last) => Err(Refusal::bad("the final transfer coding is not chunked")),
        Some((_, before)) if before.iter().any(is_chunked) => Err(Refusal::bad("chunked applied more than once")),
        Some((_, [])) => Ok(()),
        _ => Err(Refusal { status: 501, reason: "transfer coding not implemented" }),
    }
}

/// The guarded connection: reads through a [`Tracker`]; a refused request ends the read side,
/// and the 400 is written after whatever hyper had still to write, when it shuts the
/// connection down. A cut body also ends the read side; its answer is the reader's.
pub struct Guarded<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// Always `Some` until dropped (taken by the lingering close).
    inner: Option<IO>,
    tracker: Tracker,
    ready: Vec<u8>,
    ready_pos: usize,
    refusal: Option<Vec<u8>>,
    refusal_sent: usize,
    /// A body's framing broke: hyper is told the stream ended there.
    cut: bool,
    eof: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Guarded<IO> {
    pub fn new(inner: IO) -> Self {
        Guarded {
            inner: Some(inner),
            tracker: Tracker::default(),
            ready: Vec::new(),
            ready_pos: 0,
            refusal: None,
            refusal_sent: 0,
            cut: false,
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
impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Guarded<IO> {
    fn drop(&mut self) {
        // hyper does not always shut down before dropping (it does not after a parse error, nor
        // after refusing an upgrade), so any connection whose client has not finished sending
        // lingers: its write side is shut first, so the client sees the answer end at once.
        if self.eof {
            return;
        }
        let (Some(mut io), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER_TIME, io.shutdown()).await;
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
        501 => ("501 Not Implemented", "not_implemented"),
        _ => ("400 Bad Request", "bad_request"),
    };
    let body = format!("{{\"error\":\"{code}\",\"detail\":\"{}\"}}", refusal.reason);
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Guarded<IO> {
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
            if this.refusal.is_some() || this.cut || this.eof {
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
            match this.tracker.feed(read.filled(), &mut this.ready) {
                Ok(()) => {}
                Err(Stop::Refused(refusal)) => {
                    tracing::debug!(reason = refusal.reason, "gate: refused a request before parsing");
                    this.refusal = Some(refusal_response(refusal));
                }
                Err(Stop::Cut(reason)) => {
                    tracing::debug!(reason, "gate: malformed chunked body; the stream ends there");
                    this.cut = true;
                }
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

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<Stop>) {
        let mut t = Tracker::default();
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = t.feed(c, &mut out) {
                return (out, Some(e));
            }
        }
        (out, None)
    }

    fn refused(reason: &'static str) -> Option<Stop> {
        Some(Stop::Refused(Refusal::bad(reason)))
    }

    #[test]
    fn oversized_heads_are_refused_with_431() {
        let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let mut t = Tracker::default();
        let mut out = Vec::new();
        assert_eq!(t.feed(head.as_bytes(), &mut out), Err(Stop::Refused(Refusal::TOO_LARGE)));
        assert!(out.is_empty());
        let mut t = Tracker::default();
        let results: Vec<_> = head.as_bytes().chunks(1000).map(|c| t.feed(c, &mut out)).collect();
        assert!(results.contains(&Err(Stop::Refused(Refusal::TOO_LARGE))), "also when it arrives in pieces");
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
        assert_eq!(err, refused("conflicting Content-Length and Transfer-Encoding"));
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
            assert_eq!(err, refused("conflicting Content-Length and Transfer-Encoding"), "split at {split}");
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

    fn post(framing: &str, body: &str) -> Vec<u8> {
        format!("POST /a HTTP/1.1\r\nHost: x\r\n{framing}\r\n{body}").into_bytes()
    }

    #[test]
    fn content_length_is_one_decimal_number() {
        for framing in [
            "Content-Length: +5\r\n",
            "Content-Length: 5a\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length:\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 99999999999999999999999\r\n",
        ] {
            let (out, err) = run(&[&post(framing, "hello")]);
            assert_eq!(err, refused("Content-Length is not a decimal number"), "{framing:?}");
            assert!(out.is_empty(), "{framing:?}");
        }
        let (_, err) = run(&[&post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello")]);
        assert_eq!(err, refused("more than one Content-Length"));
        let stream =
            [post("Content-Length: 005\r\n", "hello"), b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()].concat();
        assert_eq!(run(&[&stream]), (stream.clone(), None), "leading zeros are digits");
    }

    #[test]
    fn transfer_encoding_is_exactly_chunked() {
        let cases: [(&str, Option<Stop>); 6] = [
            ("Transfer-Encoding: gzip\r\n", refused("the final transfer coding is not chunked")),
            ("Transfer-Encoding: chunked, gzip\r\n", refused("the final transfer coding is not chunked")),
            ("Transfer-Encoding: chunked, chunked\r\n", refused("chunked applied more than once")),
            ("Transfer-Encoding: chunked,\r\n", refused("malformed Transfer-Encoding")),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                Some(Stop::Refused(Refusal { status: 501, reason: "transfer coding not implemented" })),
            ),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                Some(Stop::Refused(Refusal { status: 501, reason: "transfer coding not implemented" })),
            ),
        ];
        for (framing, expected) in cases {
            let (out, err) = run(&[&post(framing, "0\r\n\r\n")]);
            assert_eq!(err, expected, "{framing:?}");
            assert!(out.is_empty(), "{framing:?}");
        }
        let ok = post("Transfer-Encoding:  Chunked \r\n", "0\r\n\r\n");
        assert_eq!(run(&[&ok]), (ok.clone(), None), "coding names are case-insensitive, OWS around them");
        let old = b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(run(&[old]).1, refused("Transfer-Encoding in an HTTP/1.0 request"));
    }

    #[test]
    fn a_fragment_in_the_target_is_refused() {
        assert_eq!(run(&[b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"]).1, refused("fragment in request target"));
        assert_eq!(run(&[b"GET /a?q=%23 HTTP/1.1\r\nHost: x\r\n\r\n"]).1, None, "an escaped # is data");
    }

    const GOOD_CHUNKED: [&str; 6] = [
        "5\r\nhello\r\n0\r\n\r\n",
        "5;name=value\r\nhello\r\n6 ; q=\"a \\\"b\\\"\" ;flag\r\n world\r\n0\r\n\r\n",
        "000B\r\nhello world\r\n0;last\r\n\r\n",
        "a \r\n0123456789\r\n0\r\nX-Trailer: t\r\nX-Empty:\r\n\r\n",
        "5\r\nhello\r\n0\r\nX-T: v\t w \r\n\r\n",
        "0\r\n\r\n",
    ];

    #[test]
    fn well_formed_chunked_bodies_pass_whole_and_the_next_head_is_judged() {
        for body in GOOD_CHUNKED {
            let next: &[u8] = b"POST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
            let stream = [post("Transfer-Encoding: chunked\r\n", body).as_slice(), next].concat();
            let first = stream.len() - next.len();
            for split in 0..stream.len() {
                let (out, err) = run(&[&stream[..split], &stream[split..]]);
                assert_eq!(
                    err,
                    refused("conflicting Content-Length and Transfer-Encoding"),
                    "{body:?} split at {split}"
                );
                assert_eq!(out, &stream[..first], "{body:?} split at {split}");
            }
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_cut_at_the_fault() {
        let cases = [
            ("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "ffffffffffffffff", "chunk size overflows"),
            ("5x\r\nhello\r\n0\r\n\r\n", "5", "chunk size is not hexadecimal"),
            ("0x5\r\nhello\r\n0\r\n\r\n", "0", "chunk size is not hexadecimal"),
            ("+5\r\nhello\r\n0\r\n\r\n", "", "chunk size is not hexadecimal"),
            (" 5\r\nhello\r\n0\r\n\r\n", "", "chunk size is not hexadecimal"),
            ("\r\nhello\r\n0\r\n\r\n", "", "chunk size is not hexadecimal"),
            ("5\nhello\r\n0\r\n\r\n", "5", "chunk size is not hexadecimal"),
            ("5\r\r\nhello\r\n0\r\n\r\n", "5\r", "chunk-size line does not end in CRLF"),
            ("5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhello", "chunk data does not end in CRLF"),
            ("5\r\nhello\n0\r\n\r\n", "5\r\nhello", "chunk data does not end in CRLF"),
            ("5;=x\r\nhello\r\n0\r\n\r\n", "5;", "chunk extension without a name"),
            ("5;a b\r\nhello\r\n0\r\n\r\n", "5;a ", "malformed chunk extension"),
            ("5;a=\"x\r\nhello\r\n0\r\n\r\n", "5;a=\"x", "malformed quoted chunk extension value"),
            ("5;a=\nhello\r\n0\r\n\r\n", "5;a=", "malformed chunk extension value"),
            ("5 x\r\nhello\r\n0\r\n\r\n", "5 ", "malformed chunk extension"),
            ("0\r\nNo colon\r\n\r\n", "0\r\nNo", "malformed trailer field name"),
            ("0\r\nX-T: a\r\n b\r\n\r\n", "0\r\nX-T: a\r\n", "folded or indented trailer field"),
            ("0\r\n\nX: y\r\n\r\n", "0\r\n", "malformed trailer field"),
            ("0\r\nX: a\nb\r\n\r\n", "0\r\nX: a", "malformed trailer field value"),
            ("0\r\nX: a\r\r\n", "0\r\nX: a\r", "trailer field does not end in CRLF"),
            ("0\r\n\r\r", "0\r\n\r", "chunked body does not end in CRLF"),
        ];
        for (body, released, reason) in cases {
            let head = post("Transfer-Encoding: chunked\r\n", "");
            let stream = [head.as_slice(), body.as_bytes(), b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
            for split in 0..stream.len() {
                let mut t = Tracker::default();
                let mut out = Vec::new();
                let first = t.feed(&stream[..split], &mut out);
                let second = t.feed(&stream[split..], &mut out);
                let err = first.err().or(second.err());
                assert_eq!(err, Some(Stop::Cut(reason)), "{body:?} split at {split}");
                assert_eq!(out, [head.as_slice(), released.as_bytes()].concat(), "{body:?} split at {split}");
                assert!(t.feed(b"more", &mut out).is_err(), "a cut stream stays cut");
            }
        }
    }

    #[test]
    fn chunk_lines_and_trailers_are_bounded() {
        let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
        let (_, err) = run(&[&post("Transfer-Encoding: chunked\r\n", &long_ext)]);
        assert_eq!(err, Some(Stop::Cut("chunk-size line too long")));
        let trailers = format!("0\r\n{}\r\n", "X-T: v\r\n".repeat(MAX_TRAILERS / 8 + 1));
        let (_, err) = run(&[&post("Transfer-Encoding: chunked\r\n", &trailers)]);
        assert_eq!(err, Some(Stop::Cut("trailer section too large")));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), split in 0usize..512) {
            let split = split.min(data.len());
            let _ = run(&[&data[..split], &data[split..]]);
        }

        /// Any data, chunked any way, with a split anywhere, passes whole and ends the message
        /// where it ends.
        #[test]
        fn chunked_bodies_pass_whole_however_cut_up(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            sizes in proptest::collection::vec(1usize..40, 1..20),
            split in 0usize..600,
        ) {
            let mut body = Vec::new();
            let mut rest = data.as_slice();
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap()).min(rest.len());
                body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                body.extend_from_slice(&rest[..n]);
                body.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let mut stream = post("Transfer-Encoding: chunked\r\n", "");
            stream.extend_from_slice(&body);
            stream.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
            let split = split.min(stream.len());
            let mut t = Tracker::default();
            let mut out = Vec::new();
            t.feed(&stream[..split], &mut out).unwrap();
            t.feed(&stream[split..], &mut out).unwrap();
            proptest::prop_assert_eq!(&out, &stream);
            proptest::prop_assert_eq!(t.state, State::Head);
        }
    }
}
