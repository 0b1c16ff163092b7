//! Optional HTTPS on an HTTP listener (the agent's gate, the hub's API): a certificate and key
//! from files, or a self-signed pair made with rcgen on first start and kept in a folder of the
//! state directory.

use crate::state_dir::{StateDir, write_private};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSettings {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// A self-signed pair made with rcgen in the state directory on first start.
    SelfSigned,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("{table}.cert {}: {reason}", path.display())]
    Cert { table: &'static str, path: PathBuf, reason: String },
    /// The key file could not be read or holds no private key.
    #[error("{table}.key {}: {reason}", path.display())]
    Key { table: &'static str, path: PathBuf, reason: String },
    /// The pair was refused by rustls (for example, they do not belong together).
    #[error("{table}: {source}")]
    Config {
        table: &'static str,
        #[source]
        source: rustls::Error,
    },
    /// The self-signed pair could not be made.
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// The self-signed pair could not be stored.
    #[error("cannot store the self-signed certificate: {0}")]
    Store(#[from] crate::state_dir::StateDirError),
}

/// Builds the acceptor for `settings` (from the configuration table `table`, which errors
/// name), making the self-signed pair (in `<state_dir>/<folder>/`) first if asked to.
pub fn acceptor(
    settings: &TlsSettings,
    table: &'static str,
    dir: &StateDir,
    folder: &str,
) -> Result<TlsAcceptor, TlsError> {
    let (cert, key) = match settings {
        TlsSettings::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSettings::SelfSigned => self_signed(dir, folder)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { table, path: cert.clone(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { table, path: cert, reason: "no certificate in the file".into() });
    }
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::Key {
        table,
        path: key.clone(),
        reason: e.to_string(),
    })?;
    let fingerprint = hex::encode(Sha256::digest(certs[0].as_ref()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { table, source })?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|source| TlsError::Config { table, source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tracing::info!(cert = %cert.display(), sha256 = %fingerprint, "serving HTTPS");
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn self_signed(dir: &StateDir, folder: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let folder = dir.root().join(folder);
    let (cert, key) = (folder.join("cert.pem"), folder.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    StateDir::new(&folder).create()?;
    let (cert_pem, key_pem) = make_self_signed(&host_names())?;
    write_private(&key, key_pem.as_bytes())?;
    write_private(&cert, cert_pem.as_bytes())?;
    tracing::info!(dir = %folder.display(), "made a self-signed certificate");
    Ok((cert, key))
}

/// The names a device is reached by on the LAN.
fn host_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
        && !host.is_empty()
    {
        names.push(host.to_string());
        names.push(format!("{host}.local"));
    }
    names
}

/// A self-signed certificate (PEM) and its key (PEM), valid from yesterday for ten years: an
/// explicit validity, not rcgen's 1975–4096 default.
pub fn make_self_signed(names: &[String]) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let (year, month, day) = today();
    params.not_before = rcgen::date_time_ymd(year, month, day.saturating_sub(1).max(1));
    params.not_after = rcgen::date_time_ymd(year + 10, month, day.min(28));
    params.distinguished_name.push(rcgen::DnType::CommonName, names.last().cloned().unwrap_or_default());
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn today() -> (i32, u8, u8) {
    let text = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let parse = |range: std::ops::Range<usize>| text.get(range).and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    (parse(0..4) as i32, parse(5..7) as u8, parse(8..10) as u8)
}

/// Whether a path holds a PEM certificate (for messages).
pub fn looks_like_pem(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains("-----BEGIN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads_into_rustls() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        acceptor(&TlsSettings::SelfSigned, "gate.tls", &sd, "gate-tls").unwrap();
        let key = dir.path().join("gate-tls/key.pem");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert!(looks_like_pem(&dir.path().join("gate-tls/cert.pem")));
    }

    #[test]
    fn missing_files_name_the_key() {
        let e = acceptor(
            &TlsSettings::Files { cert: "/nonexistent/c.pem".into(), key: "/nonexistent/k.pem".into() },
            "gate.tls",
            &StateDir::new("/tmp"),
            "gate-tls",
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("gate.tls.cert /nonexistent/c.pem"), "{e}");
    }
}
