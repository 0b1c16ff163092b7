//! The TCP transport over real sockets and real TLS: a CA, a hub certificate and a device
//! certificate made here, both sides over loopback. Streams opened by either side carry bytes
//! both ways; a close carries its application code to the peer; a peer that vanishes is given
//! up; a device certificate from another CA is refused in the handshake, as a TLS alert.

use redtether_pki::Ca;
use redtether_transport::tcp::{accept, connect};
use redtether_transport::{Connection, ConnectionError, Transport};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};

const ALPN: &[u8] = b"redtether-tcp/1";
const DAY: Duration = Duration::from_secs(86_400);

struct Pki {
    ca: Ca,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    let now = SystemTime::now();
    let ca = Ca::create(now, DAY).unwrap();
    let (cert, key) = ca.issue_server(&["localhost".into()], now, DAY).unwrap();
    let revoked = Arc::new(RwLock::new(Default::default()));
    let server = redtether_pki::tls::hub_server(&cert, &key, &ca.cert_pem, revoked, &[ALPN]).unwrap();
    Pki { ca, server }
}

fn device(ca: &Ca, hub_ca: &Ca) -> rustls::ClientConfig {
    let (key, csr) = redtether_pki::device_key_and_csr().unwrap();
    let cert = ca.sign_device_csr(&csr, "pump-1", SystemTime::now(), DAY).unwrap();
    redtether_pki::tls::agent_client(&hub_ca.cert_pem, &cert, &key, ALPN).unwrap()
}

/// A connected pair: (device side, hub side).
async fn pair(
    pki: &Pki,
    client: rustls::ClientConfig,
) -> (Result<Connection, ConnectionError>, Result<Connection, ConnectionError>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(pki.server.clone());
    let hub = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        accept(tcp, peer, server, &[ALPN], Duration::from_millis(200)).await.map(Connection::from)
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let device =
        connect(tcp, addr, "localhost", Arc::new(client), Duration::from_millis(200)).await.map(Connection::from);
    (device, hub.await.unwrap())
}

#[tokio::test]
async fn streams_either_side_opens_carry_bytes_both_ways() {
    let pki = pki();
    let (device, hub) = pair(&pki, device(&pki.ca, &pki.ca)).await;
    let (device, hub) = (device.unwrap(), hub.unwrap());
    assert_eq!(device.transport(), Transport::Tcp);
    assert_eq!(hub.alpn().as_deref(), Some(ALPN));
    let certs = hub.peer_certificates().expect("the device's certificate");
    assert_eq!(redtether_pki::cert_info(&certs[0]).unwrap().common_name.as_deref(), Some("pump-1"));

    // The device opens (the control stream), the hub opens (a forwarded request), concurrently.
    let (mut ds, mut dr) = device.open_bi().await.unwrap();
    ds.write_all(b"hello").await.unwrap();
    ds.finish().await.unwrap();
    let (mut hs, mut hr) = hub.accept_bi().await.unwrap();
    assert_eq!(hr.read_to_end(1024).await.unwrap(), b"hello");
    hs.write_all(b"welcome").await.unwrap();
    hs.finish().await.unwrap();
    assert_eq!(dr.read_to_end(1024).await.unwrap(), b"welcome");

    let (mut hs2, mut hr2) = hub.open_bi().await.unwrap();
    let big = vec![7u8; 3 * 1024 * 1024];
    let sender = tokio::spawn(async move {
        hs2.write_all(&big).await.unwrap();
        hs2.finish().await.unwrap();
        hs2
    });
    let (mut ds2, mut dr2) = device.accept_bi().await.unwrap();
    let got = dr2.read_to_end(4 * 1024 * 1024).await.unwrap();
    assert_eq!(got.len(), 3 * 1024 * 1024);
    assert!(got.iter().all(|&b| b == 7));
    ds2.write_all(b"ok").await.unwrap();
    ds2.finish().await.unwrap();
    assert_eq!(hr2.read_to_end(16).await.unwrap(), b"ok");
    sender.await.unwrap();
    // Keep-alives measured a round trip.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(device.rtt() < Duration::from_millis(100), "{:?}", device.rtt());
}

#[tokio::test]
async fn a_close_carries_its_code_and_ends_every_stream() {
    let pki = pki();
    let (device, hub) = pair(&pki, device(&pki.ca, &pki.ca)).await;
    let (device, hub) = (device.unwrap(), hub.unwrap());
    let (mut ds, mut dr) = device.open_bi().await.unwrap();
    ds.write_all(b"x").await.unwrap();
    let _accepted = hub.accept_bi().await.unwrap();
    hub.close(0x14, b"device revoked");
    let ended = device.closed().await;
    assert_eq!(ended, ConnectionError::ApplicationClosed { code: 0x14, reason: "device revoked".into() });
    assert_eq!(device.close_reason(), Some(ended.clone()));
    assert_eq!(hub.close_reason(), Some(ConnectionError::LocallyClosed));
    let mut buf = [0u8; 8];
    assert!(dr.read(&mut buf).await.is_err() || dr.read(&mut buf).await.unwrap().is_none());
    assert!(device.open_bi().await.is_err());
    assert!(matches!(device.accept_bi().await, Err(ConnectionError::ApplicationClosed { code: 0x14, .. })));
}

#[tokio::test]
async fn a_peer_that_vanishes_is_given_up() {
    let pki = pki();
    let (device, hub) = pair(&pki, device(&pki.ca, &pki.ca)).await;
    let (device, hub) = (device.unwrap(), hub.unwrap());
    // The hub's handles go: its tasks end and the TCP connection with them.
    drop(hub);
    let ended = tokio::time::timeout(Duration::from_secs(10), device.closed()).await.expect("noticed");
    assert!(matches!(ended, ConnectionError::Lost(_)), "{ended:?}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_a_tls_alert() {
    let pki = pki();
    let stranger = Ca::create(SystemTime::now(), DAY).unwrap();
    let (device, hub) = pair(&pki, device(&stranger, &pki.ca)).await;
    let device_end = match device {
        Ok(c) => c.closed().await,
        Err(e) => e,
    };
    let hub_end = hub.err().expect("the hub refused the handshake");
    // 0x100 + a certificate alert (42 bad_certificate, 48 unknown_ca): what QUIC would say.
    for end in [&device_end, &hub_end] {
        match end {
            ConnectionError::TransportClosed { code, .. } => assert!((0x100..0x200).contains(code), "{end:?}"),
            other => panic!("not a TLS alert: {other:?}"),
        }
    }
}
