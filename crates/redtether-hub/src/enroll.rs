//! Enrollment on the hub: one stream on the enrollment ALPN carries `enroll {token, csr}`; the
//! hub answers `enrolled` with the device's certificate, the CA and its signing key, or
//! `enroll_refused` with a reason. The token is consumed only when a certificate was issued.

use crate::keys::HubKeys;
use crate::store::StoreError;
use crate::store::{GroupRecord, HubStore, PolicyChange};
use redtether_pki::{PkiError, cert_info, pem_to_der};
use redtether_proto::audit::{Actor, HubEventKind};
use redtether_proto::wire::{EnrollRefusal, EnrollRequest, EnrollResponse, FrameDecoder, FrameError, encode};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an enrollment stream ended without an answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no stream: {0}")]
    Connection(#[from] redtether_transport::ConnectionError),
    #[error("reading the request: {0}")]
    Read(#[from] redtether_transport::ReadError),
    #[error("sending the answer: {0}")]
    Write(#[from] redtether_transport::WriteError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the device closed the stream")]
    Ended,
}

/// Why a renewal was refused.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("the certificate request cannot be signed: {0}")]
    Sign(#[source] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Enrollment {
    pub store: Arc<HubStore>,
    pub keys: Arc<HubKeys>,
    pub cert_lifetime: Duration,
    /// Signs the policy of a device that joins a group with one.
    pub signer: Arc<ring::signature::Ed25519KeyPair>,
}

impl Enrollment {
    pub async fn serve(&self, connection: redtether_transport::Connection) {
        let addr = connection.remote_address();
        match tokio::time::timeout(ENROLL_TIMEOUT, self.exchange(&connection)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::info!(%addr, error = %e, "enrollment stream ended"),
            Err(_) => tracing::info!(%addr, "enrollment timed out"),
        }
        // Let the device read the answer before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
    }

    async fn exchange(&self, connection: &redtether_transport::Connection) -> Result<(), ExchangeError> {
        let (mut send, mut recv) = connection.accept_bi().await?;
        let mut decoder = FrameDecoder::default();
        let mut buf = [0u8; 8192];
        let EnrollRequest::Enroll { token, csr_pem } = loop {
            if let Some(request) = decoder.next_message::<EnrollRequest>()? {
                break request;
            }
            match recv.read(&mut buf).await? {
                Some(n) => decoder.feed(&buf[..n]),
                None => return Err(ExchangeError::Ended),
            }
        };
        let answer = match self.enroll(&token, &csr_pem, connection.remote_address()) {
            Ok(frame) => frame,
            Err(reason) => EnrollResponse::EnrollRefused { reason },
        };
        send.write_all(&encode(&answer)).await?;
        send.finish().await?;
        Ok(())
    }

    /// A new certificate for an enrolled device, from a CSR it sent over its tunnel (its key is
    /// new; the device id is the connection's, never the CSR's). Recorded before it is returned.
    pub fn renew(&self, device: &str, csr_pem: &str) -> Result<String, RenewError> {
        let cert_pem = self
            .keys
            .ca
            .sign_device_csr(csr_pem, device, SystemTime::now(), self.cert_lifetime)
            .map_err(RenewError::Sign)?;
        let info = pem_to_der(&cert_pem).and_then(|d| cert_info(&d)).map_err(RenewError::Sign)?;
        let not_after = redtether_proto::time::unix_of(info.not_after);
        self.store.renew_device(device, &info.serial_hex, not_after, &hex::encode(&info.spki_der))?;
        let _ = self.store.record_event(
            device,
            HubEventKind::DeviceRenewed,
            json!({ "serial": info.serial_hex, "not_after": not_after }),
        );
        tracing::info!(%device, serial = %info.serial_hex, "device certificate renewed");
        Ok(cert_pem)
    }

    /// Puts a device that enrolled with a group's token in that group, with its policy. A
    /// failure here is logged, not refused: the device is enrolled and can be moved later.
    fn join_group(&self, device: &str, group: &str) {
        let joined = match self.store.change_group_devices(group, &[device.to_string()], &[]) {
            Ok(change) => change,
            Err(e) => return tracing::error!(%device, %group, error = %e, "enrolled device could not join its group"),
        };
        let detail =
            json!({ "added": joined.added, "removed": [], "moved_from": joined.moved_from, "via": "enrollment" });
        let _ = self.store.record(HubEventKind::GroupDevicesChanged, Actor::System, &format!("group:{group}"), detail);
        let Ok(Some(GroupRecord { policy: Some(document), .. })) = self.store.group(group) else { return };
        let change = PolicyChange::Group { group: group.to_string(), document };
        let made = self.store.make_policy(
            device,
            change,
            "system",
            redtether_proto::time::unix_now(),
            Box::new(|p| redtether_proto::policy::sign(p, &self.signer)),
        );
        match made {
            Ok(made) => {
                let detail = json!({ "number": made.record.number, "group": group, "changes": made.document.changes_from(None) });
                let _ = self.store.record_event(device, HubEventKind::PolicyChanged, detail);
            }
            Err(e) => tracing::error!(%device, %group, error = %e, "enrolled device did not get its group's policy"),
        }
    }

    fn enroll(&self, token: &str, csr_pem: &str, addr: std::net::SocketAddr) -> Result<EnrollResponse, EnrollRefusal> {
        let now = SystemTime::now();
        let unix = redtether_proto::time::unix_now();
        let refuse = |device: &str, reason: EnrollRefusal| {
            tracing::warn!(%addr, device, ?reason, "enrollment refused");
            let _ = self.store.record_event(
                device,
                HubEventKind::EnrollRefused,
                json!({ "reason": reason, "addr": addr.to_string() }),
            );
            reason
        };
        let device = match self.store.check_enroll_token(token, unix) {
            Ok(Ok(device)) => device,
            Ok(Err(reason)) => return Err(refuse("", reason)),
            Err(e) => {
                tracing::error!(error = %e, "enrollment: store failed");
                return Err(EnrollRefusal::HubError);
            }
        };
        let cert_pem = self
            .keys
            .ca
            .sign_device_csr(csr_pem, &device, now, self.cert_lifetime)
            .map_err(|_| refuse(&device, EnrollRefusal::BadCsr))?;
        let info =
            pem_to_der(&cert_pem).and_then(|d| cert_info(&d)).map_err(|_| refuse(&device, EnrollRefusal::BadCsr))?;
        // Of two enrollments racing with one token, only one gets past this.
        if !self.store.consume_enroll_token(token).unwrap_or(false) {
            return Err(refuse(&device, EnrollRefusal::UsedToken));
        }
        let not_after = info.not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Err(e) =
            self.store.enroll_device(&device, &info.serial_hex, not_after, &hex::encode(&info.spki_der), unix)
        {
            tracing::error!(%device, error = %e, "enrollment: the device could not be recorded; its token stays valid");
            if let Err(e) = self.store.release_enroll_token(token) {
                tracing::error!(%device, error = %e, "enrollment: the token could not be given back either");
            }
            return Err(EnrollRefusal::HubError);
        }
        let group = self.store.enroll_token_group(token).ok().flatten();
        let _ = self.store.record_event(
            &device,
            HubEventKind::DeviceEnrolled,
            json!({ "serial": info.serial_hex, "addr": addr.to_string(), "group": group }),
        );
        if let Some(group) = group {
            self.join_group(&device, &group);
        }
        tracing::info!(%device, %addr, "device enrolled");
        Ok(EnrollResponse::Enrolled {
            device_id: device,
            cert_pem,
            ca_pem: self.keys.ca.cert_pem.clone(),
            hub_signing_key: self.keys.signing_public_hex().unwrap_or_default(),
        })
    }
}
