//! One device's task: connect over the shared endpoint, run the connection (`stream.rs`), and
//! after it ends wait out the delay the protocol's reconnect machine
//! (`redtether_proto::session::Link`) decides, as the agent's tunnel does; while the device is
//! offline, wait to be set online again. The deployer and policy keeper live here, across
//! connections.

use super::deploy::Deployer;
use super::device::Shared;
use super::policy::PolicyKeeper;
use super::{SimConfig, SimError, SimIdentity};
use redtether_proto::backoff::jitter;
use redtether_proto::session::{Ending, Link, Outcome, classify};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a connection (or the attempt at one) ended.
pub(super) enum End {
    /// The simulator is stopping.
    Stopped,
    /// The device was set offline.
    WentOffline,
    /// Anything else, in the reconnect machine's terms.
    Outcome(Outcome),
}

pub(super) struct DeviceTask {
    pub shared: Arc<Shared>,
    pub config: Arc<SimConfig>,
    pub endpoint: quinn::Endpoint,
    pub client: quinn::ClientConfig,
    pub deployer: Deployer,
    pub policy: PolicyKeeper,
    /// Node-RED restarts the hub asked for (they show in the status).
    pub restarts: u32,
    pub since: SystemTime,
    /// Status polls so far (the simulated resource figures move with it).
    pub polls: u64,
    /// Which hub it tries: 0 is `config.addr`, then `config.other_hubs` in order.
    pub hub: usize,
}

impl DeviceTask {
    pub fn new(
        shared: Arc<Shared>,
        identity: &SimIdentity,
        config: Arc<SimConfig>,
        endpoint: quinn::Endpoint,
    ) -> Result<DeviceTask, SimError> {
        let client = identity.client_config(config.keepalive)?;
        let key = identity.hub_key()?;
        Ok(DeviceTask {
            shared,
            config,
            endpoint,
            client,
            deployer: Deployer::new(key.clone()),
            policy: PolicyKeeper::new(key),
            restarts: 0,
            since: SystemTime::now(),
            polls: 0,
            hub: 0,
        })
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut link = Link::default();
        let mut online = self.shared.online.subscribe();
        loop {
            if !*online.borrow_and_update() {
                if !self.idle(None, &cancel, &mut online).await {
                    break;
                }
                continue;
            }
            let delay = match self.attempt(&cancel, &mut online).await {
                End::Stopped => break,
                // Back online is a fresh start, as an agent whose network came back.
                End::WentOffline => {
                    link.reset();
                    continue;
                }
                End::Outcome(outcome) => {
                    // A hub that went away or cannot be reached: the next one, in turn.
                    if matches!(outcome, Outcome::Unreachable | Outcome::Ended { .. })
                        && !self.config.other_hubs.is_empty()
                    {
                        self.hub = (self.hub + 1) % (self.config.other_hubs.len() + 1);
                    }
                    link.on_outcome(outcome, jitter()).retry_in
                }
            };
            let Some(delay) = delay else { break };
            if !self.idle(Some(delay), &cancel, &mut online).await {
                break;
            }
        }
    }

    /// Waits `delay` (none: until the device is set online or offline), finishing a due apply
    /// meanwhile; false when the simulator stops.
    async fn idle(
        &mut self,
        delay: Option<Duration>,
        cancel: &CancellationToken,
        online: &mut watch::Receiver<bool>,
    ) -> bool {
        let until = delay.map(|d| Instant::now() + d);
        loop {
            let due = self.deployer.due();
            tokio::select! {
                _ = cancel.cancelled() => return false,
                changed = online.changed() => return changed.is_ok(),
                _ = sleep_until(until) => return true,
                // Reported at the next welcome, as the last outcome.
                _ = sleep_until(due) => { self.finish_due(); }
            }
        }
    }

    /// Finishes the apply under way if it is due; the reports to send.
    pub fn finish_due(&mut self) -> Vec<redtether_proto::wire::DeployReport> {
        let (config, id) = (&self.config, &self.shared.id);
        self.deployer.finish_due(Instant::now(), &self.shared, |n| config.apply_delay_of(id, n))
    }

    async fn attempt(&mut self, cancel: &CancellationToken, online: &mut watch::Receiver<bool>) -> End {
        let addr = match self.hub {
            0 => self.config.addr,
            n => self.config.other_hubs[n - 1],
        };
        let connecting = match self.endpoint.connect_with(self.client.clone(), addr, &self.config.server_name) {
            Ok(c) => c,
            Err(_) => return End::Outcome(Outcome::Unreachable),
        };
        let connection = tokio::select! {
            _ = cancel.cancelled() => return End::Stopped,
            _ = online.wait_for(|up| !*up) => return End::WentOffline,
            result = tokio::time::timeout(self.config.connect_timeout, connecting) => match result {
                Err(_) => return End::Outcome(Outcome::Unreachable),
                // A TLS alert or a refusal code means the identity is the problem.
                Ok(Err(e)) => return End::Outcome(match classify(super::stream::closed_of(&e)) {
                    Ending::Refused => Outcome::Refused,
                    _ => Outcome::Unreachable,
                }),
                Ok(Ok(c)) => c,
            },
        };
        let started = Instant::now();
        let end = self.connection(&connection, cancel, online).await;
        self.shared.connected.store(false, Ordering::SeqCst);
        match end {
            super::stream::ConnectionEnd::Stopped => End::Stopped,
            super::stream::ConnectionEnd::WentOffline => End::WentOffline,
            super::stream::ConnectionEnd::Ended(ending) => {
                End::Outcome(Outcome::Ended { ending, lasted: started.elapsed() })
            }
        }
    }
}

/// Sleeps until `at`; never returns without one.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
