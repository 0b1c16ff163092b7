//! Reaching the hub over TCP, directly or through an HTTP proxy with `CONNECT`: which proxy
//! (`choose`, pure), the bytes of the exchange (`head`, pure), and the dialling itself.
//!
//! The result is a plain TCP stream to the hub: the caller runs its TLS (and everything inside
//! it) over it, so the proxy sees only `CONNECT host:port` and then TLS. Nothing here knows
//! about QUIC or TLS. The proxy's password leaves [`ProxyUrl`] only in the request's
//! `Proxy-Authorization` header, which is never logged; errors and [`Via`] show the URL with
//! the password as `***`, so their text can go into `redtether status` as it is.

mod choose;
mod head;

pub use choose::{choose, no_proxy_matches};

use crate::config::{ProxyChoice, ProxyUrl, ProxyUrlError, authority};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why the tunnel could not get a TCP stream to the hub. Each message says which proxy (password
/// hidden) and where it was named, and is meant to be shown as the tunnel's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `HTTPS_PROXY` / `https_proxy` holds something that is not an `http://` proxy URL.
    #[error(
        "{variable} does not name a usable proxy ({reason}); set [tunnel] proxy, or proxy = \"\" to connect directly"
    )]
    BadEnvironment { variable: &'static str, reason: ProxyUrlError },
    /// No TCP connection to the proxy (refused, no route, name unknown, timed out).
    #[error("cannot reach the proxy {proxy}: {reason}")]
    Unreachable { proxy: String, reason: String },
    /// The proxy took the connection but did not answer `CONNECT` in time.
    #[error("the proxy {proxy} did not answer CONNECT to {target} within {}", humantime::format_duration(*after))]
    Timeout { proxy: String, target: String, after: Duration },
    /// The proxy answered something other than an HTTP response, or closed the connection.
    #[error("the proxy {proxy} gave no usable answer to CONNECT to {target}: {detail}")]
    BadResponse { proxy: String, target: String, detail: String },
    /// 407 (or 401, which tinyproxy 1.11 answers to wrong credentials): the proxy wants (other)
    /// credentials.
    #[error("{}", auth_message(proxy, *status, *had_credentials, schemes))]
    AuthRequired { proxy: String, status: u16, had_credentials: bool, schemes: Vec<String> },
    /// Any other answer than 2xx, 401 or 407: the proxy will not open this tunnel.
    #[error("{}", refused_message(proxy, target, *status, reason))]
    Refused { proxy: String, target: String, status: u16, reason: String },
    /// The hub's host is not a name or an IP address (it would go into the request line as is).
    #[error("the hub's host {0:?} is not a host name or IP address")]
    BadHost(String),
    /// No proxy is used, and the hub cannot be reached over TCP.
    #[error("cannot reach the hub at {hub} over TCP: {reason}")]
    HubUnreachable { hub: String, reason: String },
}

fn auth_message(proxy: &str, status: u16, had_credentials: bool, schemes: &[String]) -> String {
    let answer = if status == 401 { "401 Unauthorized" } else { "407 Proxy Authentication Required" };
    let mut text = if had_credentials {
        format!("the proxy {proxy} refused its credentials ({answer}): check the user and password")
    } else {
        format!("the proxy {proxy} needs credentials ({answer}): give them as http://user:password@host:port")
    };
    // Plant proxies often want Windows logins; say so rather than retry Basic for ever.
    if !schemes.is_empty() && !schemes.iter().any(|s| s.eq_ignore_ascii_case("basic")) {
        text.push_str(&format!("; it asks for {}, and redtether speaks Basic only", schemes.join(", ")));
    }
    text
}

fn refused_message(proxy: &str, target: &str, status: u16, reason: &str) -> String {
    let answer = if reason.is_empty() { status.to_string() } else { format!("{status} {reason}") };
    match status {
        403 => format!(
            "the proxy {proxy} refused CONNECT to {target} ({answer}): it may not allow that host or port \
             (many proxies allow CONNECT to port 443 only)"
        ),
        502..=504 => format!("the proxy {proxy} could not reach {target} ({answer})"),
        _ => format!("the proxy {proxy} refused CONNECT to {target} ({answer})"),
    }
}

/// The proxy variables of an environment: `HTTPS_PROXY`, `https_proxy`, `NO_PROXY`, `no_proxy`.
/// Its `Debug` shows which are set, never their values (a proxy URL may hold a password).
#[derive(Clone, Default)]
pub struct ProxyEnv {
    vars: BTreeMap<&'static str, String>,
}

const VARIABLES: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"];

impl ProxyEnv {
    /// The variables of this process.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_pairs(VARIABLES.iter().filter_map(|name| Some((*name, std::env::var(name).ok()?))))
    }

    /// The given variables (others than the four are ignored).
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> ProxyEnv {
        let mut vars = BTreeMap::new();
        for (name, value) in pairs {
            if let Some(known) = VARIABLES.iter().find(|v| **v == name.as_ref()) {
                vars.insert(*known, value.into());
            }
        }
        ProxyEnv { vars }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

/// How a stream reached the hub, for status: `direct`, or `via proxy http://proxy:3128
/// (from HTTPS_PROXY)` (password hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Direct,
    Proxy { proxy: String, from: &'static str },
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Direct => f.write_str("direct"),
            Via::Proxy { proxy, from } => write!(f, "via proxy {proxy} (from {from})"),
        }
    }
}

/// A TCP stream to the hub at `host:port`: directly, or through the proxy that `choice` and
/// `env` name (see `choose`). `timeout` bounds the whole of it (TCP, and the proxy's answer).
/// The stream has `TCP_NODELAY` set; the caller starts its TLS on it.
pub async fn dial(
    host: &str,
    port: u16,
    choice: &ProxyChoice,
    env: &ProxyEnv,
    timeout: Duration,
) -> Result<(TcpStream, Via), ProxyError> {
    let host = checked_host(host)?;
    match choose(choice, host, port, env)? {
        None => {
            let hub = authority(host, port);
            let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
                Err(_) => Err(format!("no connection within {}", humantime::format_duration(timeout))),
                Ok(result) => result.map_err(|e| e.to_string()),
            }
            .map_err(|reason| ProxyError::HubUnreachable { hub, reason })?;
            let _ = stream.set_nodelay(true);
            Ok((stream, Via::Direct))
        }
        Some((proxy, from)) => {
            let label = format!("{proxy} (from {from})");
            let stream = connect_labelled(&proxy, &label, host, port, timeout).await?;
            let _ = stream.set_nodelay(true);
            Ok((stream, Via::Proxy { proxy: proxy.to_string(), from }))
        }
    }
}

/// A TCP stream to `host:port` through `proxy`'s `CONNECT`, with Basic proxy authentication
/// when the URL has user information. `timeout` bounds the TCP connection and the answer
/// together. On success not a byte past the proxy's response head has been read.
pub async fn connect(proxy: &ProxyUrl, host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ProxyError> {
    connect_labelled(proxy, &proxy.to_string(), checked_host(host)?, port, timeout).await
}

/// The host without IPv6 brackets, if it is a name or an address: nothing that could end the
/// request line or add a header to it.
fn checked_host(host: &str) -> Result<&str, ProxyError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let valid =
        !bare.is_empty() && bare.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid { Ok(bare) } else { Err(ProxyError::BadHost(host.to_string())) }
}

async fn connect_labelled(
    proxy: &ProxyUrl,
    label: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    let deadline = Instant::now() + timeout;
    let target = authority(host, port);
    let unreachable = |reason: String| ProxyError::Unreachable { proxy: label.to_string(), reason };
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect((proxy.host(), proxy.port()))).await {
        Err(_) => return Err(unreachable(format!("no connection within {}", humantime::format_duration(timeout)))),
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let exchange = exchange(&mut stream, proxy, label, &target);
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Err(ProxyError::Timeout { proxy: label.to_string(), target, after: timeout }),
        Ok(Err(e)) => {
            tracing::debug!(proxy = %label, %target, error = %e, "proxy refused CONNECT");
            Err(e)
        }
        Ok(Ok(())) => {
            tracing::debug!(proxy = %label, %target, "proxy opened a tunnel");
            Ok(stream)
        }
    }
}

/// Sends `CONNECT` and reads the answer's head, exactly: bytes after it stay in the socket.
async fn exchange(stream: &mut TcpStream, proxy: &ProxyUrl, label: &str, target: &str) -> Result<(), ProxyError> {
    let bad = |detail: String| ProxyError::BadResponse { proxy: label.to_string(), target: target.to_string(), detail };
    let basic = proxy.basic_credentials();
    stream.write_all(&head::request(target, basic.as_deref())).await.map_err(|e| bad(format!("sending: {e}")))?;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 4096];
    let (answer, head_len) = loop {
        // Peek, so that what follows the head (should a proxy pass the hub's first bytes along
        // with its answer) is left in the socket for the caller's TLS.
        let n = stream.peek(&mut buf).await.map_err(|e| bad(format!("reading: {e}")))?;
        if n == 0 {
            return Err(bad("it closed the connection without answering".into()));
        }
        let mut candidate = received.clone();
        candidate.extend_from_slice(&buf[..n]);
        match head::parse(&candidate) {
            head::Parsed::Partial => {
                stream.read_exact(&mut buf[..n]).await.map_err(|e| bad(format!("reading: {e}")))?;
                received.extend_from_slice(&buf[..n]);
            }
            head::Parsed::Complete { answer, head_len } => break (answer, head_len),
            head::Parsed::Invalid(detail) => return Err(bad(detail)),
        }
    };
    let rest = head_len - received.len();
    stream.read_exact(&mut buf[..rest]).await.map_err(|e| bad(format!("reading: {e}")))?;
    match answer.status {
        200..=299 => Ok(()),
        // A proxy answers 401 only about itself (the hub is not reached before a 2xx), and
        // tinyproxy 1.11 does so for wrong credentials where RFC 9110 says 407.
        status @ (401 | 407) => Err(ProxyError::AuthRequired {
            proxy: label.to_string(),
            status,
            had_credentials: basic.is_some(),
            schemes: answer.auth_schemes,
        }),
        status => Err(ProxyError::Refused {
            proxy: label.to_string(),
            target: target.to_string(),
            status,
            reason: answer.reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do_and_hide_the_password() {
        let proxy = ProxyUrl::parse("http://alice:hunter2@proxy:3128").unwrap();
        let label = format!("{proxy} (from tunnel.proxy)");
        let refused =
            ProxyError::AuthRequired { proxy: label.clone(), status: 407, had_credentials: true, schemes: vec![] };
        assert_eq!(
            refused.to_string(),
            "the proxy http://alice:***@proxy:3128 (from tunnel.proxy) refused its credentials \
             (407 Proxy Authentication Required): check the user and password"
        );
        let needs = ProxyError::AuthRequired {
            proxy: "http://proxy:3128".into(),
            status: 401,
            had_credentials: false,
            schemes: vec![],
        };
        assert!(
            needs.to_string().contains("the proxy http://proxy:3128 needs credentials (401 Unauthorized)"),
            "{needs}"
        );
        let ntlm = ProxyError::AuthRequired {
            proxy: "http://proxy:3128".into(),
            status: 407,
            had_credentials: false,
            schemes: vec!["NTLM".into(), "Negotiate".into()],
        };
        assert!(ntlm.to_string().ends_with("it asks for NTLM, Negotiate, and redtether speaks Basic only"), "{ntlm}");
        let port = ProxyError::Refused {
            proxy: "http://proxy:3128".into(),
            target: "hub.example:4433".into(),
            status: 403,
            reason: "Forbidden".into(),
        };
        assert!(
            port.to_string().starts_with(
                "the proxy http://proxy:3128 refused CONNECT to hub.example:4433 (403 Forbidden): \
                 it may not allow that host or port"
            ),
            "{port}"
        );
        let gateway =
            ProxyError::Refused { proxy: "p".into(), target: "hub:443".into(), status: 502, reason: String::new() };
        assert_eq!(gateway.to_string(), "the proxy p could not reach hub:443 (502)");
        assert!(!format!("{refused:?}{label}").contains("hunter2"));
    }

    #[test]
    fn hosts_that_could_break_the_request_line_are_refused() {
        assert_eq!(checked_host("hub.example").unwrap(), "hub.example");
        assert_eq!(checked_host("[fd00::1]").unwrap(), "fd00::1");
        assert_eq!(checked_host("10.0.0.1").unwrap(), "10.0.0.1");
        for bad in ["", "[]", "hub\r\nX-Injected: 1", "hub example", "hub/path", "user@hub"] {
            assert!(matches!(checked_host(bad), Err(ProxyError::BadHost(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_environments_debug_shows_names_not_values() {
        let env = ProxyEnv::from_pairs([("HTTPS_PROXY", "http://u:hunter2@p:1"), ("PATH", "/bin")]);
        assert_eq!(format!("{env:?}"), r#"{"HTTPS_PROXY"}"#);
        assert_eq!(env.get("PATH"), None);
    }

    #[test]
    fn via_says_direct_or_which_proxy() {
        assert_eq!(Via::Direct.to_string(), "direct");
        let via = Via::Proxy { proxy: "http://proxy:3128".into(), from: "HTTPS_PROXY" };
        assert_eq!(via.to_string(), "via proxy http://proxy:3128 (from HTTPS_PROXY)");
    }
}
