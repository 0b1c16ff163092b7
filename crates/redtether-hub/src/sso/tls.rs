//! Whom the hub's TLS connections to identity providers trust: the system's CA certificates
//! (rustls-platform-verifier, as the agent checks servers on the internet), or only the CAs of
//! one PEM file (`ca_file`), for a provider with a private CA. rustls with ring, the provider
//! the rest of the hub uses. The file is read each time a configuration is made, so a renewed
//! CA file needs no restart.

use crate::sso::config::TrustRoots;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::PathBuf;
use std::sync::Arc;

/// Why no TLS configuration could be made for a provider.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable PEM certificate.
    #[error("the CA file {} holds no usable PEM certificate{}", path.display(), reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NoCertificate { path: PathBuf, reason: Option<String> },
    /// The system's CA certificates could not be loaded.
    #[error("cannot use the system's CA certificates: {0}")]
    SystemRoots(#[source] rustls::Error),
    /// ring refused rustls's default protocol versions (cannot happen).
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
}

/// A client configuration that checks servers against `roots`.
pub fn client_config(roots: &TrustRoots) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = redtether_pki::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let config = match roots {
        TrustRoots::System => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(TlsError::SystemRoots)?;
            builder
                .dangerous() // not dangerous: the platform verifier is a full WebPKI check
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        TrustRoots::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsError::ReadCaFile { path: path.clone(), source })?;
            let mut store = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| TlsError::NoCertificate { path: path.clone(), reason: Some(e.to_string()) })?;
                store
                    .add(cert)
                    .map_err(|e| TlsError::NoCertificate { path: path.clone(), reason: Some(e.to_string()) })?;
            }
            if store.is_empty() {
                return Err(TlsError::NoCertificate { path: path.clone(), reason: None });
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_ca_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        let ca = redtether_pki::Ca::create(SystemTime::now(), Duration::from_secs(3600)).unwrap();
        std::fs::write(&good, &ca.cert_pem).unwrap();
        assert!(client_config(&TrustRoots::CaFile(good)).is_ok());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert!(matches!(client_config(&TrustRoots::CaFile(empty)), Err(TlsError::NoCertificate { .. })));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(client_config(&TrustRoots::CaFile(missing)), Err(TlsError::ReadCaFile { .. })));
    }
}
