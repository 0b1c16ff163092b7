//! Alerts: conditions the hub notices about its fleet and itself, posted as JSON to the
//! webhooks of `[[alerts.webhook]]` (README.md, "Alerts", documents the names and the body).
//!
//! ```text
//! name      the alerts and their names
//! config    [alerts] thresholds and [[alerts.webhook]]
//! engine    pure: observations and the time in, alerts out (fire once, resolve once, no spam)
//! watch     the engine's shell: device scans, recorded events, the hub's own trail
//! body      the JSON posted and what the audit trail records about it
//! delivery  per webhook: bounded queue, retries with backoff, alert.sent / alert.failed
//! ```
//!
//! "Hub audit gap" here means the hub's own trail (`audit.jsonl`) misses events: its chain
//! does not verify when the hub starts (a line lost or changed), or an event could not be
//! written while it runs. A device's own journal losing events shows in that device's trail
//! (`audit.gap`) and its backlog (`audit.backlog`).
//!
//! Alert state lives in memory: a hub restart forgets what fired, so a condition that still
//! holds fires again after the restart (as Alertmanager repeats a notification).

pub mod body;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod name;
pub mod watch;

use crate::registry::Registry;
use crate::store::HubStore;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("[[alerts.webhook]] {name}: {source}")]
    Tls {
        name: String,
        #[source]
        source: crate::sso::tls::TlsError,
    },
    #[error("[[alerts.webhook]] {name}: cannot make an HTTP client: {source}")]
    Client {
        name: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Starts the alerts' tasks on `tasks` when any webhook is configured (without one, nothing
/// would ever be sent, so nothing is watched).
pub fn start(
    settings: &config::AlertSettings,
    hub: String,
    store: &Arc<HubStore>,
    registry: &Registry,
    state_dir: &Path,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<(), AlertsError> {
    if settings.webhooks.is_empty() {
        return Ok(());
    }
    let mut senders = Vec::new();
    for webhook in &settings.webhooks {
        let name = webhook.name.clone();
        let tls = crate::sso::tls::client_config(&webhook.roots)
            .map_err(|source| AlertsError::Tls { name: name.clone(), source })?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
            // A redirect could carry the body (and the receiver's token) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(webhook.timeout)
            .connect_timeout(webhook.timeout)
            .build()
            .map_err(|source| AlertsError::Client { name, source })?;
        tracing::info!(webhook = %webhook.name, origin = %webhook.origin(), events = webhook.events.len(), "alerts: webhook");
        let sender = Arc::new(delivery::Sender {
            webhook: webhook.clone(),
            client,
            store: Arc::clone(store),
            hub: hub.clone(),
            queue: Default::default(),
        });
        senders.push(Arc::clone(&sender));
        tasks.spawn(sender.run(cancel.child_token()));
    }
    let watcher = watch::Watcher {
        store: Arc::clone(store),
        registry: registry.clone(),
        thresholds: settings.thresholds.clone(),
        state_dir: state_dir.to_path_buf(),
        senders,
    };
    tasks.spawn(watcher.run(cancel.child_token()));
    Ok(())
}
