//! The hubs' certificates for talking to each other: issued by the cluster CA (shared through
//! `keys`), one per hub in its state directory (`cluster-peer.pem`/`.key`), all for one name
//! ([`PEER_NAME`]): a hub checks that it reached a hub of its cluster, which is what matters
//! (any hub can serve or pass on any request).

use redtether_host::state_dir::write_private;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The name every hub's peer certificate is for (never resolved: the address is the peer's).
pub const PEER_NAME: &str = "hub.cluster.redtether";
pub(super) const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86400);
const PEER_LIFETIME: Duration = Duration::from_secs(365 * 86400);

#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("cluster TLS: {0}")]
    Pki(#[from] redtether_pki::PkiError),
    #[error("cluster TLS: {0}")]
    Files(#[from] redtether_host::state_dir::StateDirError),
    #[error("cluster TLS: {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The server and client TLS of this hub toward the others.
pub struct PeerTls {
    pub server: rustls::ServerConfig,
    pub client: rustls::ClientConfig,
}

fn read(path: &Path) -> Result<String, ClusterTlsError> {
    std::fs::read_to_string(path).map_err(|source| ClusterTlsError::Read { path: path.to_path_buf(), source })
}

/// Loads this hub's peer certificate, issuing one under the cluster CA when missing.
pub fn load(dir: &Path) -> Result<PeerTls, ClusterTlsError> {
    let ca =
        redtether_pki::Ca { cert_pem: read(&dir.join("cluster-ca.pem"))?, key_pem: read(&dir.join("cluster-ca.key"))? };
    let (cert_path, key_path) = (dir.join("cluster-peer.pem"), dir.join("cluster-peer.key"));
    let (cert, key) = match (read(&cert_path), read(&key_path)) {
        (Ok(cert), Ok(key)) => (cert, key),
        _ => {
            let (cert, key) = ca.issue_peer(PEER_NAME, SystemTime::now(), PEER_LIFETIME)?;
            write_private(&key_path, key.as_bytes())?;
            write_private(&cert_path, cert.as_bytes())?;
            (cert, key)
        }
    };
    Ok(PeerTls {
        server: redtether_pki::tls::cluster_server(&cert, &key, &ca.cert_pem)?,
        client: redtether_pki::tls::cluster_client(&cert, &key, &ca.cert_pem)?,
    })
}
