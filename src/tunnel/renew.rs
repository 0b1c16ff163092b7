//! Certificate renewal on the agent: at about 2/3 of the certificate's life a new key and CSR
//! go to the hub over the control stream; the certificate that comes back is checked (the pinned
//! CA, this device, this key) and swapped in for the next handshake, without touching the
//! current connection. A refusal, a bad answer or no answer is retried with backoff.
//!
//! The schedule is pure (times in, times out); the session does the sending and storing.

use crate::identity::Identity;
use crate::pki::{CertInfo, device_key_and_csr, tls::check_renewed};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Retries after a failed renewal back off from this ...
const RETRY_MIN: Duration = Duration::from_secs(30);
/// ... to this.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long the hub has to answer a renewal request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// When a certificate valid from `not_before` to `not_after` should be renewed.
pub fn due(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life * 2 / 3
}

/// The wait before retry number `failures` (1 = the first retry).
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(RETRY_MAX)
}

fn instant_of(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

pub struct Renewal {
    identity: Identity,
    /// The new key, while its CSR waits for an answer.
    pending: Option<String>,
    failures: u32,
    next: Instant,
}

impl Renewal {
    pub fn new(identity: Identity, cert: &CertInfo) -> Renewal {
        Renewal { identity, pending: None, failures: 0, next: instant_of(due(cert.not_before, cert.not_after)) }
    }

    /// When something is next to be done: send a request, or give up waiting for an answer.
    pub fn next(&self) -> Instant {
        self.next
    }

    pub fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// A new key and the CSR to send for it.
    pub fn start(&mut self) -> Result<String, String> {
        let (key_pem, csr_pem) = device_key_and_csr().map_err(|e| e.to_string())?;
        self.pending = Some(key_pem);
        self.next = Instant::now() + ANSWER_TIMEOUT;
        Ok(csr_pem)
    }

    /// The hub's answer: the identity to store, once checked. The next renewal is scheduled
    /// from the new certificate.
    pub fn answered(&mut self, cert_pem: String) -> Result<(Identity, CertInfo), String> {
        let key_pem = self.pending.take().ok_or("a certificate that was not asked for")?;
        let info = check_renewed(&self.identity.ca_pem, &cert_pem, &key_pem, &self.identity.info.device_id)
            .map_err(|e| e.to_string())?;
        let renewed = Identity { key_pem, cert_pem, ..self.identity.clone() };
        self.identity = renewed.clone();
        self.failures = 0;
        self.next = instant_of(due(info.not_before, info.not_after));
        Ok((renewed, info))
    }

    /// A refusal, a bad answer, or none in time: try again after a while.
    pub fn failed(&mut self) -> Duration {
        self.pending = None;
        self.failures = self.failures.saturating_add(1);
        let delay = retry_delay(self.failures);
        self.next = Instant::now() + delay;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(due(start, start + Duration::from_secs(90 * 86400)), start + Duration::from_secs(60 * 86400));
        assert_eq!(due(start, start + Duration::from_secs(30)), start + Duration::from_secs(20));
        assert_eq!(due(start, start), start, "a certificate with no life is due at once");
        assert_eq!(due(start + Duration::from_secs(5), start), start + Duration::from_secs(5), "inverted: due at once");
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(30));
        assert_eq!(retry_delay(2), Duration::from_secs(60));
        assert_eq!(retry_delay(5), Duration::from_secs(480));
        assert_eq!(retry_delay(8), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(3600));
    }
}
