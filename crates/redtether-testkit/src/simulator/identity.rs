//! What a simulated device keeps after enrolling (in memory, never on disk), and the QUIC client
//! configuration it connects with: the agent's own (`redtether::tunnel::client_config`), rebuilt
//! here because the test kit does not link the agent.

use super::SimError;
use redtether_proto::wire::ALPN;
use std::time::Duration;

/// A device's identity as `redtether enroll` stores it.
#[derive(Debug, Clone)]
pub struct SimIdentity {
    pub device_id: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    /// The hub's Ed25519 signing key, hex, as the enrollment answer carries it.
    pub hub_signing_key: String,
}

impl SimIdentity {
    /// The hub's signing key as bytes, for checking deployments and policies.
    pub fn hub_key(&self) -> Result<Vec<u8>, SimError> {
        Ok(hex::decode(&self.hub_signing_key)?)
    }

    /// The tunnel's client configuration, made once per device: each connection attempt clones
    /// it (an `Arc` inside), so reconnecting parses no PEM.
    pub fn client_config(&self, keepalive: Duration) -> Result<quinn::ClientConfig, SimError> {
        // The agent's own configuration, so the simulated devices behave as agents do.
        Ok(redtether_pki::quic::tunnel_client(&self.ca_pem, &self.cert_pem, &self.key_pem, ALPN, keepalive)?)
    }
}
