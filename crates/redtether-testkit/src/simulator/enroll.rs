//! Enrollment as `redtether enroll` does it (`src/tunnel/enroll.rs`), over the simulator's
//! shared endpoint: a new key and CSR, one request and one answer on the enrollment ALPN, the
//! hub's CA pinned by fingerprint (during the handshake and again on the CA it sends).

use super::{SimConfig, SimError, SimIdentity};
use redtether_proto::wire::{ENROLL_ALPN, EnrollRequest, EnrollResponse, FrameDecoder, MAX_FRAME, encode};
use std::sync::Arc;

/// Enrolls one device with the one-time `token`; the device id is the one the token was made for.
pub async fn enroll(endpoint: &quinn::Endpoint, config: &SimConfig, token: &str) -> Result<SimIdentity, SimError> {
    let (key_pem, csr_pem) = redtether_pki::device_key_and_csr()?;
    let tls = redtether_pki::tls::enroll_client(&config.ca_fingerprint, ENROLL_ALPN)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let connecting = endpoint.connect_with(client, config.addr, &config.server_name)?;
    let exchange = async {
        let connection = connecting.await?;
        let answer = exchange(&connection, token, &csr_pem).await;
        // Closed either way; the shared endpoint stays.
        connection.close(0u32.into(), b"done");
        answer
    };
    let answer = tokio::time::timeout(config.connect_timeout, exchange)
        .await
        .map_err(|_| SimError::Timeout { what: "the enrollment answer".into(), after: config.connect_timeout })??;
    let identity = match answer {
        EnrollResponse::Enrolled { device_id, cert_pem, ca_pem, hub_signing_key } => {
            SimIdentity { device_id, key_pem, cert_pem, ca_pem, hub_signing_key }
        }
        EnrollResponse::EnrollRefused { reason } => return Err(SimError::EnrollRefused(reason)),
    };
    // The CA sent must be the one pinned, as the agent checks: nothing else is trusted later.
    let sent = redtether_pki::fingerprint(&redtether_pki::pem_to_der(&identity.ca_pem)?);
    if sent != config.ca_fingerprint {
        return Err(SimError::NotPinned);
    }
    Ok(identity)
}

async fn exchange(connection: &quinn::Connection, token: &str, csr_pem: &str) -> Result<EnrollResponse, SimError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&encode(&EnrollRequest::Enroll { token: token.to_string(), csr_pem: csr_pem.to_string() })).await?;
    send.finish()?;
    let bytes = recv.read_to_end(MAX_FRAME + 4).await?;
    let mut decoder = FrameDecoder::default();
    decoder.feed(&bytes);
    decoder.next_message::<EnrollResponse>()?.ok_or(SimError::NoAnswer)
}
