//! The QUIC side of the transport's streams over a real quinn connection on loopback, with real
//! certificates: vectored writes (how hyper writes a response's head and body chunks) arrive
//! whole and in order, also when flow control takes only part of them.

use redtether_pki::Ca;
use redtether_transport::{Connection, RecvStream, SendStream};
use std::io::IoSlice;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

const ALPN: &[u8] = b"redtether-test/1";
const DAY: Duration = Duration::from_secs(86_400);

/// A connected pair over loopback: (device side, hub side).
async fn pair() -> (Connection, Connection, quinn::Endpoint, quinn::Endpoint) {
    let now = SystemTime::now();
    let ca = Ca::create(now, DAY).unwrap();
    let (cert, key) = ca.issue_server(&["localhost".into()], now, DAY).unwrap();
    let revoked = Arc::new(RwLock::new(Default::default()));
    let tls = redtether_pki::tls::hub_server(&cert, &key, &ca.cert_pem, revoked, &[ALPN]).unwrap();
    let server =
        quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap()));
    let hub = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = hub.local_addr().unwrap();
    let (device_key, csr) = redtether_pki::device_key_and_csr().unwrap();
    let device_cert = ca.sign_device_csr(&csr, "pump-1", now, DAY).unwrap();
    let client =
        redtether_pki::quic::tunnel_client(&ca.cert_pem, &device_cert, &device_key, ALPN, Duration::from_secs(3))
            .unwrap();
    let mut device = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    device.set_default_client_config(client);
    let accepting = tokio::spawn({
        let hub = hub.clone();
        async move { hub.accept().await.unwrap().await.unwrap() }
    });
    let device_conn = device.connect(addr, "localhost").unwrap().await.unwrap();
    let hub_conn = accepting.await.unwrap();
    (Connection::from(device_conn), Connection::from(hub_conn), device, hub)
}

async fn read_all(mut recv: RecvStream) -> Vec<u8> {
    recv.read_to_end(64 * 1024 * 1024).await.unwrap()
}

#[tokio::test]
async fn vectored_writes_arrive_whole_and_in_order_past_flow_control() {
    let (device, hub, _d, _h) = pair().await;
    let (mut send, _recv) = device.open_bi().await.unwrap();
    assert!(matches!(send, SendStream::Quic(_)));
    // Slices larger than the stream's receive window (1.25 MB by default): a write takes part
    // of them, and the rest follows once the reader has caught up.
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 6291456\r\n\r\n".to_vec();
    let body: Vec<Vec<u8>> = (0..3u8).map(|i| (0..2 * 1024 * 1024).map(|j| (j % 251) as u8 ^ i).collect()).collect();
    let mut expected = head.clone();
    body.iter().for_each(|b| expected.extend_from_slice(b));
    assert!(tokio::io::AsyncWrite::is_write_vectored(&send));

    let reader = tokio::spawn(async move {
        let (_s, recv) = hub.accept_bi().await.unwrap();
        read_all(recv).await
    });
    let mut slices: Vec<&[u8]> = vec![&head, &[], &body[0], &body[1], &body[2]];
    let mut writes = 0;
    while slices.iter().any(|s| !s.is_empty()) {
        let io: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
        let mut n = send.write_vectored(&io).await.unwrap();
        assert!(n > 0, "a vectored write took nothing");
        writes += 1;
        for slice in slices.iter_mut() {
            let taken = n.min(slice.len());
            *slice = &slice[taken..];
            n -= taken;
        }
    }
    send.finish().await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the bytes arrived changed or out of order");
    assert!(writes > 1, "flow control never cut a write short: the test did not cover partial writes");
}

/// quinn copies each write into an allocation of its own: a large write is handed to it in
/// pieces that stay under glibc's mmap threshold, and the data still arrives whole.
#[tokio::test]
async fn a_large_write_goes_to_quinn_in_pieces_and_arrives_whole() {
    let (device, hub, _d, _h) = pair().await;
    let (mut send, _recv) = device.open_bi().await.unwrap();
    let data: Vec<u8> = (0..1024 * 1024).map(|j| (j % 253) as u8).collect();
    let reader = tokio::spawn(async move {
        let (_s, recv) = hub.accept_bi().await.unwrap();
        read_all(recv).await
    });
    let mut at = 0;
    while at < data.len() {
        let taken = send.write(&data[at..]).await.unwrap();
        // glibc's mmap threshold as the agent sets it (`redtether_host::heap`).
        assert!(taken > 0 && taken < 256 * 1024, "one write took {taken} bytes");
        at += taken;
    }
    send.finish().await.unwrap();
    assert!(reader.await.unwrap() == data, "the bytes arrived changed or out of order");
}
