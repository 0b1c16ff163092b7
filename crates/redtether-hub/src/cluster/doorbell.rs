//! Telling the hub that holds a device that something waits for it (a deployment, a policy)
//! made on another hub: a ring (`kind:device`) on the store's doorbell; every hub hears every
//! ring and wakes the device's session if it holds it. The session reads what waits from the
//! store, as it does at every connection: a ring lost is caught up when the device reconnects.

use super::Cluster;
use crate::registry::{Registry, Waiting};
use tokio_util::sync::CancellationToken;

impl Cluster {
    pub(crate) fn ring(&self, device: &str, what: Waiting) {
        if let Err(e) = self.store.ring(&format!("{}:{device}", what.as_str())) {
            tracing::warn!(%device, error = %e, "cluster: cannot ring the doorbell; the device gets it at its next connection");
        }
    }
}

/// The ring's parts: what waits, for which device.
fn parse(ring: &str) -> Option<(Waiting, &str)> {
    let (kind, device) = ring.split_once(':')?;
    Some((Waiting::parse(kind)?, device))
}

/// Wakes the local sessions the rings name, until cancelled.
pub async fn run(cluster: std::sync::Arc<Cluster>, registry: Registry, cancel: CancellationToken) {
    let mut rings = cluster.store.listen();
    loop {
        let ring = tokio::select! {
            _ = cancel.cancelled() => return,
            ring = rings.recv() => match ring {
                Some(r) => r,
                None => return,
            },
        };
        if let Some((what, device)) = parse(&ring)
            && registry.get(device).is_some()
        {
            registry.wake(device, what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_names_what_waits_and_for_whom() {
        assert_eq!(parse("deployment:pump-1"), Some((Waiting::Deployment, "pump-1")));
        assert_eq!(parse("policy:ops@site"), Some((Waiting::Policy, "ops@site")));
        assert_eq!(parse("reboot:pump-1"), None);
        assert_eq!(parse("policy"), None);
    }
}
