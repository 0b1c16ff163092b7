//! A TLS client that trusts exactly one self-signed certificate.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over TLS to `addr`, trusting only `cert_pem`; returns the raw response.
pub async fn get(addr: &str, cert_pem: &[u8], path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the pinned certificate");
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A device certificate from `ca` for `device`, valid from `issued` for `lifetime`, and its key
/// (PEM): for presenting certificates the hub must refuse (another CA, expired, not yet valid).
pub fn device_cert(
    ca: &redtether_pki::Ca,
    device: &str,
    issued: std::time::SystemTime,
    lifetime: std::time::Duration,
) -> (String, String) {
    let (key, csr) = redtether_pki::device_key_and_csr().unwrap();
    (ca.sign_device_csr(&csr, device, issued, lifetime).unwrap(), key)
}
