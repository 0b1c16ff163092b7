//! A fleet of simulated devices against a real `redtether-hub`, for integration tests and
//! rollout benchmarks: each enrolls with a one-time token (a real key, CSR and certificate),
//! connects with mutual TLS and runs the real control stream (the protocol's own
//! `AgentSession`), answers status and commands, verifies deployments and policies with the
//! hub's key, and reports outcomes as its [`Behaviour`] says. No Node-RED, no files, no threads
//! of its own: all devices share ONE client `quinn::Endpoint`, each is one tokio task, all
//! owned by one `TaskTracker` and stopped by one `CancellationToken`.
//!
//! This module owns the [`Simulator`] (enrolling, starting and stopping devices); the files
//! beside it own one job each: `config` (where and how), `enroll` (the enrollment exchange),
//! `identity` (what a device keeps, its client configuration), `device` (the test's handle and
//! the shared state), `task` (the reconnect loop), `stream` (the control-stream shell),
//! `deploy` and `policy` (what a device does with envelopes), `answers` (status and commands),
//! `error`.

mod answers;
mod config;
mod deploy;
mod device;
mod enroll;
mod error;
mod identity;
mod policy;
mod stream;
mod task;

pub use config::SimConfig;
pub use device::{Behaviour, SimDevice};
pub use error::SimError;
pub use identity::SimIdentity;

use device::Shared;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Simulator {
    config: Arc<SimConfig>,
    endpoint: quinn::Endpoint,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// In enrollment order.
    devices: Mutex<Vec<SimDevice>>,
}

impl Simulator {
    /// A simulator with its shared endpoint (call inside a tokio runtime).
    pub fn new(config: SimConfig) -> Result<Simulator, SimError> {
        let local: std::net::SocketAddr =
            if config.addr.is_ipv6() { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { ([0, 0, 0, 0], 0).into() };
        // One socket for the whole fleet: widened, as the hub's, so a fleet reconnecting at once
        // is not throttled by its own socket.
        let (socket, _) = redtether_host::udp::bind_wide(local).map_err(SimError::Endpoint)?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))
                .map_err(SimError::Endpoint)?;
        Ok(Simulator {
            config: Arc::new(config),
            endpoint,
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            devices: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Enrolls one device with `token` and starts it (it connects at once).
    pub async fn enroll(&self, token: &str) -> Result<SimDevice, SimError> {
        let identity = enroll::enroll(&self.endpoint, &self.config, token).await?;
        self.start(&identity)
    }

    /// Enrolls a device under each name, with the token `token(name)` gives, at most
    /// [`SimConfig::enroll_concurrency`] at a time; the devices in the order of `names`. The
    /// first failure stops it (the devices enrolled so far keep running).
    pub async fn enroll_many<F, Fut, E>(&self, names: Vec<String>, token: F) -> Result<Vec<SimDevice>, SimError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<String, E>>,
        E: std::fmt::Display,
    {
        use futures_util::{StreamExt, TryStreamExt};
        let token = &token;
        let one = |name: String| async move {
            let token =
                token(name.clone()).await.map_err(|e| SimError::Token { device: name, reason: e.to_string() })?;
            let identity = enroll::enroll(&self.endpoint, &self.config, &token).await?;
            self.start(&identity)
        };
        // Polled on this task, at most `enroll_concurrency` at once and in order: the QUIC
        // handshakes themselves run on the endpoint's driver, and no task is spawned for a
        // future that borrows the simulator.
        futures_util::stream::iter(names).map(one).buffered(self.config.enroll_concurrency.max(1)).try_collect().await
    }

    /// Enrolls one device per token (as [`Simulator::enroll_many`]).
    pub async fn enroll_tokens(&self, tokens: Vec<String>) -> Result<Vec<SimDevice>, SimError> {
        self.enroll_many(tokens, |token| async move { Ok::<_, std::convert::Infallible>(token) }).await
    }

    /// Starts a device that has enrolled already (its identity kept from before).
    pub fn start(&self, identity: &SimIdentity) -> Result<SimDevice, SimError> {
        let shared = Arc::new(Shared::new(identity.device_id.clone(), answers::initial_snapshot(&identity.device_id)));
        let task =
            task::DeviceTask::new(Arc::clone(&shared), identity, Arc::clone(&self.config), self.endpoint.clone())?;
        self.tasks.spawn(task.run(self.cancel.child_token()));
        let device = SimDevice { shared };
        self.lock().push(device.clone());
        Ok(device)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SimDevice>> {
        self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every device, in enrollment order.
    pub fn devices(&self) -> Vec<SimDevice> {
        self.lock().clone()
    }

    pub fn device(&self, id: &str) -> Option<SimDevice> {
        self.lock().iter().find(|d| d.id() == id).cloned()
    }

    /// How many devices are connected (welcomed by the hub) now.
    pub fn connected(&self) -> usize {
        self.lock().iter().filter(|d| d.is_connected()).count()
    }

    /// Waits until at least `n` devices are connected.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> Result<(), SimError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connected() < n {
            if tokio::time::Instant::now() >= deadline {
                let what = format!("{n} connected devices ({} are)", self.connected());
                return Err(SimError::Timeout { what, after: timeout });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops every device (each closes its connection), waits for their tasks, and lets the
    /// endpoint's connections close.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.endpoint.close(redtether_proto::wire::codes::SHUTDOWN.into(), b"simulator stopping");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

impl Drop for Simulator {
    /// A simulator dropped without [`Simulator::shutdown`] still stops its devices.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
