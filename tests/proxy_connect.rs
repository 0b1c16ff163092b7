//! The tunnel's HTTP CONNECT client (`redtether::tunnel::proxy`) against a real proxy
//! (tinyproxy): tunnels with and without Basic proxy authentication carry bytes both ways to a
//! TCP server the test runs; a wrong or missing password and a port the proxy does not allow
//! give the errors `redtether status` will show; `NO_PROXY` sends the hub around the proxy.

use redtether::config::{ProxyChoice, ProxyUrl};
use redtether::tunnel::proxy::{self, ProxyEnv, ProxyError, Via};
use redtether_testkit::tinyproxy::{Tinyproxy, TinyproxyOptions};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);
const GREETING: &[u8] = b"hello from the hub\n";

/// A loopback TCP server standing in for the hub: it speaks first (so its greeting may reach
/// the proxy's client in the same read as the proxy's answer), then echoes lines back.
async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let _ = socket.write_all(GREETING).await;
                let (read, mut write) = socket.split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write.write_all(format!("echo: {line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// The greeting, then one line echoed: what a working tunnel to [`echo_server`] carries.
async fn round_trip(stream: TcpStream) {
    let mut stream = BufReader::new(stream);
    let mut greeting = vec![0u8; GREETING.len()];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(greeting, GREETING, "the server's first bytes arrive intact after the proxy's answer");
    stream.get_mut().write_all(b"ping\n").await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_line(&mut line)).await.unwrap().unwrap();
    assert_eq!(line, "echo: ping\n");
}

fn url(proxy: &Tinyproxy, userinfo: &str) -> ProxyUrl {
    ProxyUrl::parse(&format!("http://{userinfo}127.0.0.1:{}", proxy.port())).unwrap()
}

fn connects_to(proxy: &Tinyproxy, port: u16) -> bool {
    proxy.requests().iter().any(|r| r == &format!("CONNECT 127.0.0.1:{port} HTTP/1.1"))
}

#[tokio::test]
async fn connect_without_authentication_carries_bytes_both_ways() {
    let proxy = Tinyproxy::start();
    let (port, _server) = echo_server().await;
    let stream = proxy::connect(&url(&proxy, ""), "127.0.0.1", port, TIMEOUT).await.unwrap();
    round_trip(stream).await;
    assert!(connects_to(&proxy, port), "the proxy carried it: {:?}", proxy.requests());
}

#[tokio::test]
async fn connect_with_basic_authentication_passes_and_a_wrong_or_missing_password_says_so() {
    let options = TinyproxyOptions { basic_auth: Some(("plant".into(), "Secret42".into())), ..Default::default() };
    let proxy = Tinyproxy::start_with(&options);
    let (port, _server) = echo_server().await;

    let stream = proxy::connect(&url(&proxy, "plant:Secret42@"), "127.0.0.1", port, TIMEOUT).await.unwrap();
    round_trip(stream).await;

    let wrong = proxy::connect(&url(&proxy, "plant:Wrong99@"), "127.0.0.1", port, TIMEOUT).await.unwrap_err();
    assert!(matches!(wrong, ProxyError::AuthRequired { had_credentials: true, .. }), "{wrong:?}");
    let message = wrong.to_string();
    // tinyproxy 1.11 answers 401 here where RFC 9110 (and squid) say 407; both mean the same.
    assert!(message.contains("refused its credentials (40"), "{message}");
    assert!(message.contains("http://plant:***@127.0.0.1:") && !message.contains("Wrong99"), "{message}");

    let missing = proxy::connect(&url(&proxy, ""), "127.0.0.1", port, TIMEOUT).await.unwrap_err();
    assert!(matches!(missing, ProxyError::AuthRequired { status: 407, had_credentials: false, .. }), "{missing:?}");
    assert!(missing.to_string().contains("needs credentials (407 Proxy Authentication Required)"), "{missing}");
}

#[tokio::test]
async fn a_port_the_proxy_does_not_allow_is_refused_with_403() {
    let proxy = Tinyproxy::start_with(&TinyproxyOptions { connect_ports: vec![443], ..Default::default() });
    let (port, _server) = echo_server().await;
    let refused = proxy::connect(&url(&proxy, ""), "127.0.0.1", port, TIMEOUT).await.unwrap_err();
    let ProxyError::Refused { status, .. } = &refused else { panic!("{refused:?}") };
    assert_eq!(*status, 403, "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains(&format!("refused CONNECT to 127.0.0.1:{port} (403")) && message.contains("may not allow"),
        "{message}"
    );
}

#[tokio::test]
async fn dial_takes_the_environments_proxy_unless_no_proxy_names_the_hub() {
    let proxy = Tinyproxy::start();
    let (port, _server) = echo_server().await;
    let through = ProxyEnv::from_pairs([("https_proxy", proxy.url.as_str()), ("NO_PROXY", "hub.example")]);
    let (stream, via) = proxy::dial("127.0.0.1", port, &ProxyChoice::Environment, &through, TIMEOUT).await.unwrap();
    assert_eq!(via, Via::Proxy { proxy: proxy.url.clone(), from: "https_proxy" });
    round_trip(stream).await;
    assert!(connects_to(&proxy, port), "{:?}", proxy.requests());

    // NO_PROXY names the hub: a direct connection, which the proxy never sees.
    let (port2, _server2) = echo_server().await;
    let around = ProxyEnv::from_pairs([("HTTPS_PROXY", proxy.url.as_str()), ("NO_PROXY", "localhost,127.0.0.0/8")]);
    let (stream, via) = proxy::dial("127.0.0.1", port2, &ProxyChoice::Environment, &around, TIMEOUT).await.unwrap();
    assert_eq!(via, Via::Direct);
    round_trip(stream).await;
    assert!(!connects_to(&proxy, port2), "NO_PROXY was ignored: {:?}", proxy.requests());

    // The configuration's `proxy = ""` overrides the environment too.
    let (stream, via) = proxy::dial("127.0.0.1", port2, &ProxyChoice::Direct, &through, TIMEOUT).await.unwrap();
    assert_eq!(via, Via::Direct);
    round_trip(stream).await;
    assert!(!connects_to(&proxy, port2), "{:?}", proxy.requests());
}

#[tokio::test]
async fn an_unreachable_or_silent_proxy_is_its_own_error() {
    let (port, _server) = echo_server().await;
    // A port nobody listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nobody = ProxyUrl::parse(&format!("http://127.0.0.1:{closed}")).unwrap();
    let e = proxy::connect(&nobody, "127.0.0.1", port, TIMEOUT).await.unwrap_err();
    assert!(matches!(e, ProxyError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("cannot reach the proxy http://127.0.0.1:{closed}: ")), "{e}");

    // A proxy that accepts and never answers: the timeout ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = ProxyUrl::parse(&format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port())).unwrap();
    let started = std::time::Instant::now();
    let e = proxy::connect(&silent_url, "127.0.0.1", port, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(e, ProxyError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(e.to_string().contains("did not answer CONNECT"), "{e}");
    drop(silent);
}
