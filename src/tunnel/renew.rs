//! Certificate renewal on the agent, the part that handles keys: a new key and CSR when the
//! session asks for one, and the check of the hub's answer (the pinned CA, this device, this
//! key) before the renewed identity is stored for the next handshake. When to renew and how to
//! retry is the session's (`redtether_proto::session::renewal`).

use crate::identity::{Identity, IdentityError};
use crate::state_dir::StateDir;
use redtether_pki::{CertInfo, PkiError, device_key_and_csr, tls::check_renewed};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("cannot make a new key: {0}")]
    Key(#[source] PkiError),
    #[error("a certificate that was not asked for")]
    NotAsked,
    #[error("{0}")]
    Check(#[source] PkiError),
    #[error("the renewed identity could not be stored: {0}")]
    Store(#[source] IdentityError),
}

/// The identity being renewed, and the new key while its CSR waits for an answer.
pub struct RenewalKeys {
    identity: Identity,
    pending: Option<String>,
}

impl RenewalKeys {
    pub fn new(identity: Identity) -> RenewalKeys {
        RenewalKeys { identity, pending: None }
    }

    /// A new key, kept until the answer comes, and the CSR to send for it.
    pub fn start(&mut self) -> Result<String, RenewError> {
        let (key_pem, csr_pem) = device_key_and_csr().map_err(RenewError::Key)?;
        self.pending = Some(key_pem);
        Ok(csr_pem)
    }

    /// Checks the hub's answer against the pending key and stores the renewed identity.
    pub fn answered(&mut self, cert_pem: String, dir: &StateDir) -> Result<CertInfo, RenewError> {
        let key_pem = self.pending.take().ok_or(RenewError::NotAsked)?;
        let info = check_renewed(&self.identity.ca_pem, &cert_pem, &key_pem, &self.identity.info.device_id)
            .map_err(RenewError::Check)?;
        let renewed = Identity { key_pem, cert_pem, ..self.identity.clone() };
        renewed.save_renewed(dir).map_err(RenewError::Store)?;
        self.identity = renewed;
        Ok(info)
    }
}

/// How long until `cert` is due for renewal, from now.
pub fn due_in(cert: &CertInfo) -> Duration {
    redtether_proto::session::renewal::due_in(cert.not_before, cert.not_after, SystemTime::now())
}
