//! rustls configurations of the tunnel (TLS 1.3 only, ring): the hub's server side with its
//! device-certificate check, the agent's client side pinned to the hub's CA, and the
//! enrollment client that pins the CA by fingerprint before it has the CA.

use super::{PkiError, fingerprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid(format!("certificate PEM: {e}")))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Invalid(format!("key PEM: {e}")))
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots.add(cert).map_err(|e| PkiError::Invalid(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Serial numbers (hex) of revoked device certificates, shared with the hub's registry.
pub type Revoked = Arc<RwLock<HashSet<String>>>;

/// The hub's check of a device certificate: issued by the hub's CA, within its validity, and not
/// revoked. A connection without a certificate is let through the handshake, because
/// enrollment shares the port; the hub closes tunnel connections that have none.
#[derive(Debug)]
struct DeviceCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let serial = super::cert_info(end_entity)
            .map(|i| i.serial_hex)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if self.revoked.read().map(|r| r.contains(&serial)).unwrap_or(true) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The hub's QUIC server TLS: its certificate chain (server, CA), device certificates checked.
pub fn hub_server(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    revoked: Revoked,
    alpns: &[&[u8]],
) -> Result<rustls::ServerConfig, PkiError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    let mut chain = certs(cert_pem)?;
    chain.extend(certs(ca_pem)?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(e.to_string()))?
        .with_client_cert_verifier(Arc::new(DeviceCertVerifier { inner, revoked }))
        .with_single_cert(chain, key(key_pem)?)
        .map_err(|e| PkiError::Invalid(format!("hub certificate: {e}")))?;
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// The agent's tunnel TLS: the hub must chain to the pinned CA; the device presents its own
/// certificate and key.
pub fn agent_client(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, PkiError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)
        .map_err(|e| PkiError::Invalid(format!("device certificate: {e}")))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Enrollment: the device does not have the CA yet, only its fingerprint (given by the
/// operator). The hub sends its chain with the CA in it; the CA whose SHA-256 matches becomes
/// the one trust anchor the hub's certificate must verify against.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    supported: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint) else {
            return Err(rustls::Error::General("the hub's CA does not match the pinned fingerprint".into()));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.supported)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.supported)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.supported.supported_schemes()
    }
}

/// The enrollment client: no client certificate, the hub's CA pinned by fingerprint.
pub fn enroll_client(ca_fingerprint: &str, alpn: &[u8]) -> Result<rustls::ClientConfig, PkiError> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_string(),
        supported: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Checks a certificate the hub issued on renewal before the device relies on it: it chains to
/// the pinned CA and is valid now (the same check the hub makes in the handshake), it names
/// `device_id`, and it is for `key_pem` — a certificate for another key would lock the device
/// out at its next handshake.
pub fn check_renewed(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    device_id: &str,
) -> Result<super::CertInfo, PkiError> {
    let der = certs(cert_pem)?.into_iter().next().ok_or_else(|| PkiError::Invalid("no certificate".into()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .map_err(|e| PkiError::Invalid(format!("the renewed certificate does not verify: {e}")))?;
    let info = super::cert_info(&der)?;
    if info.common_name.as_deref() != Some(device_id) {
        return Err(PkiError::Invalid(format!(
            "the renewed certificate names {:?}, not {device_id:?}",
            info.common_name
        )));
    }
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Invalid(format!("certificate: {e}")))?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| PkiError::Invalid(format!("key: {e}")))?;
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(PkiError::Invalid("the renewed certificate is for another key".into()));
    }
    Ok(info)
}

/// The TLS a hub of a cluster serves the others on: only a client whose certificate the
/// cluster's own CA issued (another hub) gets in.
pub fn cluster_server(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<rustls::ServerConfig, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_pem)?, key(key_pem)?)
        .map_err(|e| PkiError::Invalid(format!("cluster certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS a hub of a cluster dials the others with: the server must chain to the cluster's CA,
/// and this hub presents its own certificate from it.
pub fn cluster_client(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<rustls::ClientConfig, PkiError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)
        .map_err(|e| PkiError::Invalid(format!("cluster certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod renewal_tests {
    use super::check_renewed;
    use crate::{Ca, device_key_and_csr};
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_renewed_certificate_must_be_the_cas_for_this_device_and_this_key() {
        let day = Duration::from_secs(86400);
        let now = SystemTime::now();
        let ca = Ca::create(now - day, 3650 * day).unwrap();
        let (key, csr) = device_key_and_csr().unwrap();
        let good = ca.sign_device_csr(&csr, "pump-1", now, 90 * day).unwrap();
        assert_eq!(check_renewed(&ca.cert_pem, &good, &key, "pump-1").unwrap().common_name.as_deref(), Some("pump-1"));

        let (other_key, _) = device_key_and_csr().unwrap();
        assert!(check_renewed(&ca.cert_pem, &good, &other_key, "pump-1").is_err(), "another key");
        assert!(check_renewed(&ca.cert_pem, &good, &key, "pump-2").is_err(), "another device");
        let other_ca = Ca::create(now - day, 3650 * day).unwrap();
        let foreign = other_ca.sign_device_csr(&csr, "pump-1", now, 90 * day).unwrap();
        assert!(check_renewed(&ca.cert_pem, &foreign, &key, "pump-1").is_err(), "another CA");
        let expired = ca.sign_device_csr(&csr, "pump-1", now - 100 * day, 10 * day).unwrap();
        assert!(check_renewed(&ca.cert_pem, &expired, &key, "pump-1").is_err(), "expired");
        assert!(check_renewed(&ca.cert_pem, "not a certificate", &key, "pump-1").is_err());
    }
}
