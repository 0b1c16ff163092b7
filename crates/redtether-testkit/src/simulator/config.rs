//! Where the simulated fleet connects and how its devices behave by default.

use super::SimError;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The hub's QUIC address, as `redtether enroll --hub` takes it.
    pub hub: String,
    pub addr: SocketAddr,
    /// Other hubs of a cluster (same CA and names), tried in turn after the one in use fails,
    /// as an agent with `[tunnel] hubs` does.
    pub other_hubs: Vec<SocketAddr>,
    /// The name the hub's certificate is checked against (the host part of `hub`, as the agent).
    pub server_name: String,
    /// The pinned CA fingerprint (lower-case hex), as `--ca-fingerprint`.
    pub ca_fingerprint: String,
    /// QUIC keep-alive; the agent's default ([`redtether_pki::quic::DEFAULT_KEEPALIVE`]).
    pub keepalive: Duration,
    /// How long "applying" a deployment takes: spread evenly over this range per deployment
    /// (deterministic per device and number, so a benchmark run repeats).
    pub apply_delay: Range<Duration>,
    /// Enrollments in flight at once in [`super::Simulator::enroll_many`].
    pub enroll_concurrency: usize,
    /// How long one connection attempt or enrollment may take.
    pub connect_timeout: Duration,
    /// The agent version the devices say they run.
    pub agent_version: String,
    /// How often a device polls its status (the agent's default is 10 s).
    pub status_every: Duration,
    /// Whether the status carries resource figures. They change at every poll, so a device
    /// that reports them sends a status every `status_every`, as the agent does; without them
    /// an idle device sends its status once per connection.
    pub resources: bool,
}

impl SimConfig {
    /// For the hub at `hub` (`HOST:PORT`) whose CA has `ca_fingerprint`.
    pub async fn new(hub: &str, ca_fingerprint: &str) -> Result<SimConfig, SimError> {
        let ca_fingerprint = redtether_pki::normalise_fingerprint(ca_fingerprint)
            .ok_or_else(|| SimError::BadFingerprint(ca_fingerprint.to_string()))?;
        let (host, port) = hub.rsplit_once(':').ok_or_else(|| SimError::BadAddress(hub.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| SimError::BadAddress(hub.to_string()))?;
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| SimError::Resolve { hub: hub.to_string(), source })?
            .next()
            .ok_or_else(|| SimError::BadAddress(hub.to_string()))?;
        Ok(SimConfig {
            hub: hub.to_string(),
            addr,
            other_hubs: Vec::new(),
            server_name: host.to_string(),
            ca_fingerprint,
            keepalive: redtether_pki::quic::DEFAULT_KEEPALIVE,
            apply_delay: Duration::ZERO..Duration::from_millis(50),
            enroll_concurrency: 32,
            connect_timeout: Duration::from_secs(10),
            agent_version: "0.0.0-sim".to_string(),
            status_every: Duration::from_secs(10),
            resources: false,
        })
    }

    /// The apply delay of deployment `number` on `device`: a hash of both, spread over
    /// [`SimConfig::apply_delay`] (no random source needed, and runs repeat).
    pub fn apply_delay_of(&self, device: &str, number: u64) -> Duration {
        let Range { start, end } = self.apply_delay.clone();
        let span = end.saturating_sub(start).as_micros() as u64;
        if span == 0 {
            return start;
        }
        // FNV-1a over the id, then one splitmix64 round with the number.
        let mut h =
            device.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        h = h.wrapping_add(number.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        start + Duration::from_micros(h % span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn apply_delays_stay_in_their_range_and_repeat() {
        let config = SimConfig::new("127.0.0.1:7443", &"ab".repeat(32)).await.unwrap();
        let delays: Vec<_> = (1..200).map(|n| config.apply_delay_of("pump-1", n)).collect();
        assert!(delays.iter().all(|d| config.apply_delay.contains(d)), "{delays:?}");
        assert!(delays.iter().any(|d| *d != delays[0]), "spread, not one value");
        assert_eq!(config.apply_delay_of("pump-1", 7), delays[6]);
        let fixed = SimConfig { apply_delay: Duration::from_secs(1)..Duration::from_secs(1), ..config };
        assert_eq!(fixed.apply_delay_of("pump-1", 7), Duration::from_secs(1));
    }
}
