//! The tunnel over TLS over TCP: one TLS 1.3 connection (the same certificates, pinning and
//! revocation as QUIC's) carrying yamux, so either side opens bidirectional streams as over
//! QUIC. yamux lacks two things QUIC gives the tunnel; a **link stream**, the first stream the
//! client opens, carries them ([`frame`]): pings every keep-alive interval (a round-trip time,
//! and a peer silent for the idle timeout is given up, as QUIC's idle timeout does) and a close
//! with the application's error code.
//!
//! One task drives each connection (yamux must be polled for anything to move) and one serves
//! its link stream; both are owned by the connection's handles and end with the connection, or
//! when the last handle is dropped.

pub mod frame;
mod stream;
mod tls;

pub use stream::{TcpRecv, TcpSend};
pub use tls::{accept, connect};

use crate::error::ConnectionError;
use frame::{LinkDecoder, LinkFrame};
use futures_util::future::poll_fn;
use rustls_pki_types::CertificateDer;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// A peer heard from for none of this long is gone (QUIC's idle timeout in the tunnel).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams the peer opened and nobody accepted yet; beyond, new ones are refused (reset).
const ACCEPT_BACKLOG: usize = 64;

/// Which end of the TLS connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// What is known of the peer once TLS is up.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    pub certificates: Option<Vec<CertificateDer<'static>>>,
    pub alpn: Option<Vec<u8>>,
}

enum Request {
    Open(oneshot::Sender<Result<yamux::Stream, ConnectionError>>),
    /// Close the yamux session (after the link stream said why).
    Shutdown,
}

/// Aborts a task when the last handle of the connection goes.
struct Owned(tokio::task::JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inner {
    requests: mpsc::UnboundedSender<Request>,
    inbound: tokio::sync::Mutex<mpsc::Receiver<yamux::Stream>>,
    closed: watch::Sender<Option<ConnectionError>>,
    link: mpsc::UnboundedSender<LinkFrame>,
    peer: Peer,
    rtt: Arc<Mutex<Duration>>,
    _tasks: [Owned; 2],
}

/// A tunnel connection over TCP; cheap to clone (handles to one connection).
#[derive(Clone)]
pub struct TcpConnection(Arc<Inner>);

impl TcpConnection {
    /// Starts yamux on an established TLS connection. The client opens the link stream; the
    /// server takes the first stream opened as the link.
    pub async fn start<S>(io: S, side: Side, peer: Peer, keepalive: Duration) -> Result<TcpConnection, ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mode = match side {
            Side::Client => yamux::Mode::Client,
            Side::Server => yamux::Mode::Server,
        };
        let mut config = yamux::Config::default();
        // At most 256 streams of 256 KiB windows: a gateway's memory, not a data centre's.
        config.set_max_num_streams(256);
        config.set_max_connection_receive_window(Some(256 * 256 * 1024));
        let connection = yamux::Connection::new(io.compat(), config, mode);
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::channel(ACCEPT_BACKLOG);
        let (closed, closed_rx) = watch::channel(None);
        let (link_tx, link_rx) = oneshot::channel();
        let transport_end = Arc::new(TransportEnd::default());
        let driver = tokio::spawn(drive(
            connection,
            side,
            requests_rx,
            inbound_tx,
            link_tx,
            closed.clone(),
            Arc::clone(&transport_end),
        ));
        let driver = Owned(driver);
        let link_stream = match side {
            Side::Client => {
                let (tx, rx) = oneshot::channel();
                let _ = requests.send(Request::Open(tx));
                rx.await.map_err(|_| lost(&closed_rx))?
            }
            Side::Server => tokio::time::timeout(Duration::from_secs(10), link_rx)
                .await
                .map_err(|_| ConnectionError::TimedOut)?
                .map_err(|_| lost(&closed_rx)),
        }?;
        let mut link_stream = link_stream.compat();
        if side == Side::Client {
            // yamux opens a stream with its first frame: the link stream's goes out before any
            // stream opened later, so the server takes the right one as the link.
            link_stream.write_all(&LinkFrame::Ping(0).encode()).await.map_err(|_| lost(&closed_rx))?;
            link_stream.flush().await.map_err(|_| lost(&closed_rx))?;
        }
        let rtt = Arc::new(Mutex::new(Duration::from_millis(100)));
        let (link_cmd, link_cmd_rx) = mpsc::unbounded_channel();
        let link = tokio::spawn(serve_link(
            link_stream,
            link_cmd_rx,
            requests.clone(),
            closed.clone(),
            Arc::clone(&rtt),
            keepalive,
            transport_end,
        ));
        Ok(TcpConnection(Arc::new(Inner {
            requests,
            inbound: tokio::sync::Mutex::new(inbound),
            closed,
            link: link_cmd,
            peer,
            rtt,
            _tasks: [driver, Owned(link)],
        })))
    }

    pub async fn open_bi(&self) -> Result<(TcpSend, TcpRecv), ConnectionError> {
        if let Some(e) = self.close_reason() {
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        self.0.requests.send(Request::Open(tx)).map_err(|_| self.lost())?;
        match rx.await {
            Ok(Ok(stream)) => Ok(stream::split(stream, self.0.closed.subscribe())),
            _ => Err(self.ending().await),
        }
    }

    pub async fn accept_bi(&self) -> Result<(TcpSend, TcpRecv), ConnectionError> {
        let mut inbound = self.0.inbound.lock().await;
        match inbound.recv().await {
            Some(stream) => Ok(stream::split(stream, self.0.closed.subscribe())),
            None => Err(self.ending().await),
        }
    }

    /// Why the connection ended, once its link stream has said (it may still hold the peer's
    /// close frame when the transport is already gone); briefly waited for.
    async fn ending(&self) -> ConnectionError {
        match tokio::time::timeout(Duration::from_secs(2), self.closed()).await {
            Ok(e) => e,
            Err(_) => self.lost(),
        }
    }

    /// Closes with an application code: the peer's connection ends with
    /// [`ConnectionError::ApplicationClosed`], this one with `LocallyClosed`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        let first = self.0.closed.send_if_modified(|c| {
            let first = c.is_none();
            if first {
                *c = Some(ConnectionError::LocallyClosed);
            }
            first
        });
        if first {
            let reason = String::from_utf8_lossy(reason).into_owned();
            // The link task writes it and then shuts yamux down; if the link is already gone,
            // the driver is told directly.
            if self.0.link.send(LinkFrame::Close { code, reason }).is_err() {
                let _ = self.0.requests.send(Request::Shutdown);
            }
        }
    }

    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.0.closed.borrow().clone()
    }

    /// Waits for the connection to end.
    pub async fn closed(&self) -> ConnectionError {
        let mut rx = self.0.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(c) => c.clone().unwrap_or(ConnectionError::LocallyClosed),
            Err(_) => ConnectionError::LocallyClosed,
        }
    }

    pub fn peer(&self) -> &Peer {
        &self.0.peer
    }

    pub fn rtt(&self) -> Duration {
        *self.0.rtt.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lost(&self) -> ConnectionError {
        lost(&self.0.closed.subscribe())
    }
}

fn lost(closed: &watch::Receiver<Option<ConnectionError>>) -> ConnectionError {
    closed.borrow().clone().unwrap_or_else(|| ConnectionError::Lost("connection lost".into()))
}

/// Sets the ending unless one is set (the first cause wins: a close frame over the broken
/// pipe it causes).
fn end(closed: &watch::Sender<Option<ConnectionError>>, e: ConnectionError) {
    closed.send_if_modified(|c| {
        let first = c.is_none();
        if first {
            *c = Some(e);
        }
        first
    });
}

/// Why the yamux session ended, left by the driver for the link task: the link stream may still
/// hold the peer's close frame, which says more. Whoever finishes last sets the ending.
#[derive(Default)]
struct TransportEnd {
    reason: Mutex<Option<ConnectionError>>,
    link_done: std::sync::atomic::AtomicBool,
}

impl TransportEnd {
    /// The driver ended with `reason`: the ending, unless the link task still runs.
    fn driver_ended(&self, reason: ConnectionError, closed: &watch::Sender<Option<ConnectionError>>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
        if self.link_done.load(std::sync::atomic::Ordering::SeqCst) {
            end(closed, reason);
        }
    }

    /// The link task ended without a reason of its own: the driver's, or a lost connection.
    fn link_ended(&self, closed: &watch::Sender<Option<ConnectionError>>) {
        self.link_done.store(true, std::sync::atomic::Ordering::SeqCst);
        let reason = self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
        end(closed, reason.unwrap_or_else(|| ConnectionError::Lost("the peer closed the connection".into())));
    }
}

/// The TLS alert behind a yamux error, if the connection died of one (a client certificate the
/// hub refused after the client's side of the handshake was done), as QUIC numbers it.
fn from_yamux(e: &yamux::ConnectionError) -> ConnectionError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(error), inner].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) = candidate.downcast_ref::<rustls::Error>() {
                return ConnectionError::TransportClosed {
                    code: 0x100 + u64::from(u8::from(*alert)),
                    reason: e.to_string(),
                };
            }
        }
        source = error.source();
    }
    ConnectionError::Lost(e.to_string())
}

/// Polls the yamux connection: accepts streams, opens the ones asked for, shuts down when told.
async fn drive<T>(
    mut connection: yamux::Connection<T>,
    side: Side,
    mut requests: mpsc::UnboundedReceiver<Request>,
    inbound: mpsc::Sender<yamux::Stream>,
    link: oneshot::Sender<yamux::Stream>,
    closed: watch::Sender<Option<ConnectionError>>,
    transport_end: Arc<TransportEnd>,
) where
    T: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut link = (side == Side::Server).then_some(link);
    let mut pending: VecDeque<oneshot::Sender<Result<yamux::Stream, ConnectionError>>> = VecDeque::new();
    let mut shutting_down = false;
    let ended = poll_fn(|cx| {
        loop {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(Request::Open(reply))) => pending.push_back(reply),
                Poll::Ready(Some(Request::Shutdown)) | Poll::Ready(None) => shutting_down = true,
                Poll::Pending => break,
            }
        }
        if shutting_down {
            return match connection.poll_close(cx) {
                Poll::Ready(_) => Poll::Ready(ConnectionError::LocallyClosed),
                Poll::Pending => Poll::Pending,
            };
        }
        while !pending.is_empty() {
            match connection.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(reply) = pending.pop_front() {
                        let _ = reply.send(Ok(stream));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(from_yamux(&e)),
                Poll::Pending => break,
            }
        }
        loop {
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    if let Some(link) = link.take() {
                        let _ = link.send(stream);
                    } else if inbound.try_send(stream).is_err() {
                        // Nobody accepts (or too many wait): dropping it resets it.
                        tracing::warn!("tunnel over TCP: a stream the peer opened was refused (backlog full)");
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(from_yamux(&e)),
                Poll::Ready(None) => {
                    return Poll::Ready(ConnectionError::Lost("the peer closed the connection".into()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if link.is_some() {
        // Ended before the link stream came: nobody else will say why.
        end(&closed, ended);
    } else {
        transport_end.driver_ended(ended, &closed);
    }
    for reply in pending {
        let _ = reply.send(Err(closed.borrow().clone().unwrap_or(ConnectionError::LocallyClosed)));
    }
}

/// Serves the link stream: answers pings, sends its own every `keepalive`, gives the peer up
/// after [`IDLE_TIMEOUT`] of silence, and carries closes both ways.
async fn serve_link(
    stream: tokio_util::compat::Compat<yamux::Stream>,
    mut commands: mpsc::UnboundedReceiver<LinkFrame>,
    requests: mpsc::UnboundedSender<Request>,
    closed: watch::Sender<Option<ConnectionError>>,
    rtt: Arc<Mutex<Duration>>,
    keepalive: Duration,
    transport_end: Arc<TransportEnd>,
) {
    serve_link_frames(stream, &mut commands, &requests, &closed, &rtt, keepalive).await;
    transport_end.link_ended(&closed);
}

async fn serve_link_frames(
    mut stream: tokio_util::compat::Compat<yamux::Stream>,
    commands: &mut mpsc::UnboundedReceiver<LinkFrame>,
    requests: &mpsc::UnboundedSender<Request>,
    closed: &watch::Sender<Option<ConnectionError>>,
    rtt: &Mutex<Duration>,
    keepalive: Duration,
) {
    let mut decoder = LinkDecoder::default();
    let mut buf = [0u8; 1024];
    let mut heard = Instant::now();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut nonce = 0u64;
    let mut ticker = tokio::time::interval(keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => {
                if let Some(frame) = command {
                    // The peer tears the connection down when it read the close, so the frame is
                    // not lost to a teardown racing it; a peer that does not is given a second.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        stream.write_all(&frame.encode()).await?;
                        stream.flush().await?;
                        while stream.read(&mut buf).await? > 0 {}
                        Ok::<_, std::io::Error>(())
                    })
                    .await;
                }
                let _ = requests.send(Request::Shutdown);
                return;
            }
            read = stream.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                heard = Instant::now();
                decoder.feed(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(LinkFrame::Ping(n))) => {
                            if stream.write_all(&LinkFrame::Pong(n).encode()).await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(LinkFrame::Pong(n))) => {
                            if let Some(at) = sent.remove(&n) {
                                *rtt.lock().unwrap_or_else(|e| e.into_inner()) = at.elapsed();
                            }
                        }
                        Ok(Some(LinkFrame::Close { code, reason })) => {
                            end(closed, ConnectionError::ApplicationClosed { code: u64::from(code), reason });
                            let _ = requests.send(Request::Shutdown);
                            return;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            end(closed, ConnectionError::Lost(format!("link stream: {e}")));
                            let _ = requests.send(Request::Shutdown);
                            return;
                        }
                    }
                }
            }
            _ = ticker.tick() => {
                if heard.elapsed() >= IDLE_TIMEOUT {
                    end(closed, ConnectionError::TimedOut);
                    let _ = requests.send(Request::Shutdown);
                    return;
                }
                nonce += 1;
                sent.insert(nonce, Instant::now());
                // Only the latest few are worth an answer.
                sent.retain(|n, _| *n + 16 > nonce);
                if stream.write_all(&LinkFrame::Ping(nonce).encode()).await.is_err() {
                    return;
                }
            }
        }
    }
}
