//! The engine's I/O shell: one task that scans the devices every [`CHECK_EVERY`] (the registry
//! says who is connected, the store what each reported), follows the events the hub records
//! (a deployment rolled back, a policy refused, a rollout halted), checks the hub's own trail
//! at start and its failed writes since, and hands each alert to every webhook that wants it.

use super::config::Thresholds;
use super::delivery::{Job, Sender};
use super::engine::REFIRE_AFTER;
use super::engine::{DeviceView, Engine};
use crate::registry::Registry;
use crate::store::{DeviceRecord, HubStore};
use redtether_proto::time::unix_now;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How often devices are looked at for the time-based conditions.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

pub struct Watcher {
    pub store: Arc<HubStore>,
    pub registry: Registry,
    pub thresholds: Thresholds,
    pub state_dir: PathBuf,
    pub senders: Vec<Arc<Sender>>,
}

impl Watcher {
    pub async fn run(self, cancel: CancellationToken) {
        // Subscribed before anything is looked at, so no event falls between.
        let mut recorded = self.store.subscribe_recorded();
        let mut engine = Engine::new(self.thresholds.clone(), unix_now());
        self.check_chain(&mut engine).await;
        let mut failures = 0;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    self.scan(&mut engine).await;
                    // Events the journal could not write: at most one alert per REFIRE_AFTER
                    // while it keeps failing (recording this alert's delivery fails too).
                    let now_failed = self.store.journal_failures();
                    if now_failed > failures {
                        let now = unix_now();
                        let summary = format!("the hub could not write {} events to its audit trail", now_failed - failures);
                        let detail = json!({ "cause": "write_failed", "missed": now_failed - failures, "missed_since_start": now_failed });
                        if let Some(alert) = engine.audit_gap(now, &format!("write:{}", now / REFIRE_AFTER), summary, detail) {
                            self.send(alert);
                        }
                        failures = now_failed;
                    }
                }
                event = recorded.recv() => match event {
                    Ok(e) => {
                        let group = match e.kind.as_str() {
                            "deployment.status" | "policy.status" => self.store.device(&e.target).ok().flatten().and_then(|d| d.group),
                            _ => None,
                        };
                        if let Some(alert) = engine.recorded(unix_now(), &e.kind, &e.target, &e.detail, group) {
                            self.send(alert);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "alerts fell behind the recorded events: some were not looked at"),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// A chain that does not verify when the hub starts: events were lost or changed.
    async fn check_chain(&self, engine: &mut Engine) {
        let dir = self.state_dir.clone();
        let verified =
            tokio::task::spawn_blocking(move || crate::journal::read(&dir).map(|t| crate::journal::chain::verify(&t)))
                .await;
        let verification = match verified {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return tracing::error!(error = %e, "alerts: cannot read the hub's audit trail"),
            Err(e) => return tracing::error!(error = %e, "alerts: cannot read the hub's audit trail"),
        };
        let Some((seq, why)) = verification.first_bad else { return };
        let summary = format!("the hub's audit trail does not verify from seq {seq}: {why}");
        let detail = json!({ "cause": "chain_broken", "seq": seq, "reason": why, "checked": verification.checked });
        if let Some(alert) = engine.audit_gap(unix_now(), &format!("chain:{seq}"), summary, detail) {
            self.send(alert);
        }
    }

    async fn scan(&self, engine: &mut Engine) {
        let store = Arc::clone(&self.store);
        let devices = match tokio::task::spawn_blocking(move || store.devices()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return tracing::error!(error = %e, "alerts: cannot read the devices"),
            Err(e) => return tracing::error!(error = %e, "alerts: cannot read the devices"),
        };
        let online = self.registry.online_ids();
        let views: Vec<DeviceView> = devices.into_iter().filter(|d| !d.revoked).map(|d| view(d, &online)).collect();
        for alert in engine.scan(unix_now(), &views) {
            self.send(alert);
        }
    }

    fn send(&self, alert: super::engine::Alert) {
        tracing::info!(alert = %alert.name, key = %alert.key, resolved = alert.resolved, summary = %alert.summary, "alert");
        let id = uuid::Uuid::now_v7().to_string();
        for sender in self.senders.iter().filter(|s| s.webhook.wants(alert.name, alert.resolved)) {
            sender.enqueue(Job { alert: alert.clone(), id: id.clone() });
        }
    }
}

fn view(d: DeviceRecord, online: &std::collections::BTreeSet<String>) -> DeviceView {
    let status = d.status.as_ref();
    DeviceView {
        online: online.contains(&d.id),
        group: d.group,
        last_seen: d.last_seen,
        enrolled: d.enrolled,
        cert_not_after: d.cert_not_after,
        node_red: status.map(|s| s.node_red.state),
        node_red_detail: status.and_then(|s| s.node_red.last_exit.clone().or_else(|| s.node_red.detail.clone())),
        audit_backlog: status.map(|s| s.audit_backlog),
        id: d.id,
    }
}
