//! Dialling the hub: resolve the configured addresses, then race the handshakes the way happy
//! eyeballs (RFC 8305) does — the first candidate at once, each next one when the one before
//! has failed or after a head start of [`STAGGER`] — and keep the first that completes. A
//! handshake is QUIC's ([`quic`]) or TLS over TCP ([`tcp`], direct or through an HTTP proxy's
//! CONNECT); which one, and when to fall back, is the caller's decision (`[tunnel] transport`).
//! Used by the tunnel and by enrollment, each with its own TLS configuration.

use super::hubs::{Candidate, Chooser, Resolved};
use super::proxy::{ProxyEnv, ProxyError};
use crate::config::{HubAddress, ProxyChoice};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redtether_transport::{Connection, ConnectionError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The head start each candidate gets before the next one is dialled too. Longer than a QUIC
/// handshake to a distant hub over a cellular link usually takes (so a live first hub rarely
/// costs a second handshake), short enough that a dead first hub costs about a second, not a
/// whole connect timeout or a backoff.
pub const STAGGER: Duration = Duration::from_secs(1);

/// How long a name lookup may take before the hub counts as unresolved this round.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a hub, or a candidate of one, could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No configured hub resolved to any address (each one's reason).
    #[error("cannot resolve the hub: {0}")]
    Unresolved(String),
    /// The handshake ended with this error (a TLS alert, a refusal code, a lost path).
    #[error(transparent)]
    Handshake(ConnectionError),
    /// The HTTP proxy did not open the way (its answer, or no answer).
    #[error(transparent)]
    Proxy(ProxyError),
    /// No answer within the timeout.
    #[error("no answer from the hub")]
    Timeout,
    /// The attempt could not start (no socket for the address family, an invalid address).
    #[error("{0}")]
    Start(String),
}

/// What a race came to.
pub enum Dialled {
    Connected {
        connection: Connection,
        candidate: Candidate,
    },
    /// None connected: each candidate and why, in the order they were tried.
    Failed(Vec<(Candidate, Failure)>),
    Cancelled,
}

/// One client endpoint per address family, made when first needed: a name may resolve to both
/// IPv4 and IPv6 addresses, and a dual-stack socket is not available everywhere.
#[derive(Default)]
pub struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Endpoints {
    pub fn for_addr(&mut self, remote: &SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let slot = if remote.is_ipv6() { &mut self.v6 } else { &mut self.v4 };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let endpoint = super::enroll::client_endpoint(remote)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Closes both with `code` and waits (at most `wait`, for both together) for the hub to
    /// hear it.
    pub async fn close(self, code: u32, reason: &[u8], wait: Duration) {
        let endpoints: Vec<quinn::Endpoint> = [self.v4, self.v6].into_iter().flatten().collect();
        for endpoint in &endpoints {
            endpoint.close(code.into(), reason);
        }
        let idle = futures_util::future::join_all(endpoints.iter().map(quinn::Endpoint::wait_idle));
        let _ = tokio::time::timeout(wait, idle).await;
    }
}

/// Resolves every hub address (concurrently; a name that does not resolve has no addresses this
/// round, and its error is in the second list).
async fn resolve_all(hubs: &[HubAddress]) -> (Vec<Resolved>, Vec<String>) {
    let lookups = hubs.iter().map(|hub| async move {
        let lookup = tokio::net::lookup_host((hub.host.as_str(), hub.port));
        let result = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => Ok(dedup(addrs)),
            Ok(Err(e)) => Err(format!("{hub}: {e}")),
            Err(_) => Err(format!("{hub}: the name lookup timed out")),
        };
        (hub.clone(), result)
    });
    let mut resolved = Vec::new();
    let mut errors = Vec::new();
    for (hub, result) in futures_util::future::join_all(lookups).await {
        match result {
            Ok(addrs) if addrs.is_empty() => errors.push(format!("{hub}: no address")),
            Ok(addrs) => resolved.push(Resolved { hub, addrs }),
            Err(e) => {
                errors.push(e);
                resolved.push(Resolved { hub, addrs: Vec::new() });
            }
        }
    }
    (resolved, errors)
}

/// Resolves `hubs` and has the chooser order this round's candidates.
pub async fn candidates(hubs: &[HubAddress], chooser: &mut Chooser) -> Result<Vec<Candidate>, Failure> {
    let (resolved, errors) = resolve_all(hubs).await;
    let candidates = chooser.round(&resolved);
    if candidates.is_empty() {
        return Err(Failure::Unresolved(errors.join("; ")));
    }
    Ok(candidates)
}

fn dedup(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Races the handshakes `dial` makes to `candidates` (best first) and returns the first
/// connection. Handshakes still under way when one wins are dropped, which abandons them.
pub async fn race<F, Fut>(candidates: Vec<Candidate>, mut dial: F, cancel: &CancellationToken) -> Dialled
where
    F: FnMut(Candidate) -> Fut,
    Fut: Future<Output = (Candidate, Result<Connection, Failure>)>,
{
    let mut pending = FuturesUnordered::new();
    let mut failures = Vec::new();
    let mut waiting = candidates.into_iter();
    let mut next_at = tokio::time::Instant::now();
    let mut more = true;
    loop {
        if more && (pending.is_empty() || tokio::time::Instant::now() >= next_at) {
            match waiting.next() {
                Some(candidate) => {
                    tracing::debug!(hub = %candidate.hub, addr = %candidate.addr, "dialling hub candidate");
                    pending.push(dial(candidate));
                    next_at = tokio::time::Instant::now() + STAGGER;
                    continue;
                }
                None => more = false,
            }
        }
        if pending.is_empty() {
            return Dialled::Failed(failures);
        }
        tokio::select! {
            _ = cancel.cancelled() => return Dialled::Cancelled,
            _ = tokio::time::sleep_until(next_at), if more => {}
            Some((candidate, result)) = pending.next() => match result {
                Ok(connection) => return Dialled::Connected { connection, candidate },
                Err(failure) => {
                    tracing::debug!(hub = %candidate.hub, addr = %candidate.addr, reason = %failure, "hub candidate failed");
                    failures.push((candidate, failure));
                    // A failure hands the head start on at once (RFC 8305, section 5).
                    next_at = tokio::time::Instant::now();
                }
            },
        }
    }
}

/// One candidate's handshake, as [`race`] runs it.
pub type Handshake = std::pin::Pin<Box<dyn Future<Output = (Candidate, Result<Connection, Failure>)> + Send>>;

/// A QUIC handshake to one candidate, on the endpoint of its address family.
pub fn quic(
    endpoints: &mut Endpoints,
    config: quinn::ClientConfig,
    timeout: Duration,
) -> impl FnMut(Candidate) -> Handshake + '_ {
    move |candidate| {
        let endpoint = endpoints.for_addr(&candidate.addr);
        let config = config.clone();
        Box::pin(async move {
            let endpoint = match endpoint {
                Ok(e) => e,
                Err(e) => return (candidate, Err(Failure::Start(e.to_string()))),
            };
            let connecting = match endpoint.connect_with(config, candidate.addr, &candidate.server_name) {
                Ok(c) => c,
                Err(e) => return (candidate, Err(Failure::Start(e.to_string()))),
            };
            let result = match tokio::time::timeout(timeout, connecting).await {
                Err(_) => Err(Failure::Timeout),
                Ok(Err(e)) => Err(Failure::Handshake(e.into())),
                Ok(Ok(connection)) => Ok(Connection::Quic(connection)),
            };
            (candidate, result)
        })
    }
}

/// How TLS-over-TCP handshakes are made.
#[derive(Clone)]
pub struct TcpDial {
    pub tls: Arc<rustls::ClientConfig>,
    /// `[tunnel] tcp_port`: the hub's TCP port when it is not the address's.
    pub port: Option<u16>,
    pub proxy: ProxyChoice,
    pub env: Arc<ProxyEnv>,
    /// The link stream's keep-alive interval.
    pub keepalive: Duration,
    pub timeout: Duration,
}

impl TcpDial {
    /// Whether the hub `host:port` is reached through a proxy (then its name goes to the proxy
    /// and nothing needs resolving here).
    pub fn proxied(&self, host: &str, port: u16) -> bool {
        matches!(super::proxy::choose(&self.proxy, host, self.port.unwrap_or(port), &self.env), Ok(Some(_)))
    }

    /// A TLS-over-TCP handshake to one candidate: TCP to its address, or CONNECT through the
    /// proxy to its name, then TLS and the multiplexer.
    pub fn one(&self) -> impl FnMut(Candidate) -> Handshake + '_ {
        move |candidate| {
            let dial = self.clone();
            Box::pin(async move {
                let result = tokio::time::timeout(dial.timeout, dial.handshake(&candidate)).await;
                let result = result.unwrap_or(Err(Failure::Timeout));
                (candidate, result)
            })
        }
    }

    async fn handshake(&self, candidate: &Candidate) -> Result<Connection, Failure> {
        let mut addr = candidate.addr;
        if let Some(port) = self.port {
            addr.set_port(port);
        }
        let host = candidate.server_name.as_str();
        let stream = match super::proxy::choose(&self.proxy, host, addr.port(), &self.env).map_err(Failure::Proxy)? {
            Some((proxy, from)) => {
                tracing::debug!(hub = %candidate.hub, %proxy, from, "TCP to the hub through a proxy");
                super::proxy::connect(&proxy, host, addr.port(), self.timeout).await.map_err(Failure::Proxy)?
            }
            None => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| Failure::Start(format!("TCP to {addr}: {e}")))?;
                let _ = stream.set_nodelay(true);
                stream
            }
        };
        let connection = redtether_transport::tcp::connect(stream, addr, host, Arc::clone(&self.tls), self.keepalive)
            .await
            .map_err(Failure::Handshake)?;
        Ok(Connection::Tcp(connection))
    }
}

/// Candidates for hubs reached through a proxy: their names, unresolved (the proxy resolves).
pub fn unresolved(hubs: &[HubAddress]) -> Vec<Candidate> {
    hubs.iter()
        .map(|hub| Candidate {
            hub: hub.to_string(),
            server_name: hub.host.clone(),
            addr: SocketAddr::from(([0, 0, 0, 0], hub.port)),
        })
        .collect()
}
