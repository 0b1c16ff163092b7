//! The alerts' decisions, without I/O: what the hub observed goes in (a scan of the devices,
//! the events it records, a gap in its own trail), with the time passed in as Unix seconds;
//! the alerts to send come out.
//!
//! A stateful condition (offline, crash loop, audit backlog, certificate expiring) fires once
//! when it begins to hold and resolves once when it clears; nothing is sent while it stays as
//! it is. Each has a clear state distinct from "no longer holds" where flapping is likely:
//! a crash loop is over when Node-RED runs again (not while it is being retried), a backlog when
//! it is down to half the threshold. After a resolve the same condition fires again no sooner
//! than [`REFIRE_AFTER`], so a device that keeps dropping and coming back does not page every
//! time. One-shot alerts (a deployment rolled back, a rollout halted, a policy refused, a gap
//! in the hub's trail) fire once per event and never resolve.

use super::config::Thresholds;
use super::name::AlertName;
use redtether_proto::time::format_unix;
use redtether_proto::wire::NodeRedState;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// The shortest time between a condition's resolve and its next firing (seconds).
pub const REFIRE_AFTER: u64 = 5 * 60;

/// The longest wait after the hub started before it calls devices offline: devices that only
/// waited for the hub to come back reconnect within their 30 s backoff cap.
pub const START_GRACE: u64 = 60;

/// One-shot alerts remembered, so an event seen twice alerts once.
const REMEMBERED: usize = 4096;

/// What the hub knows about one device at a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    pub id: String,
    pub group: Option<String>,
    /// Connected now (the registry).
    pub online: bool,
    /// When its last connection ended (or began, while connected), Unix seconds.
    pub last_seen: Option<u64>,
    pub enrolled: u64,
    pub cert_not_after: u64,
    /// Node-RED's state in the device's last status.
    pub node_red: Option<NodeRedState>,
    /// What Node-RED's last exit was, when the status says.
    pub node_red_detail: Option<String>,
    pub audit_backlog: Option<u64>,
}

/// An alert to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: AlertName,
    pub resolved: bool,
    /// The same for a condition's firing and its resolve: what a receiver pairs them by.
    pub key: String,
    pub device: Option<String>,
    pub group: Option<String>,
    pub summary: String,
    pub detail: Value,
    /// When it was decided, Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    Firing,
    Clear { resolved_at: Option<u64> },
}

#[derive(Debug, Default)]
struct Tracked {
    group: Option<String>,
    /// The last scan that found it connected.
    online_at: Option<u64>,
    conditions: BTreeMap<AlertName, Condition>,
}

pub struct Engine {
    thresholds: Thresholds,
    started: u64,
    devices: BTreeMap<String, Tracked>,
    fired_once: HashSet<String>,
    fired_order: VecDeque<String>,
}

/// How one stateful condition looks at a scan.
struct Reading {
    holds: bool,
    clears: bool,
    summary: String,
    resolved_summary: String,
    detail: Value,
}

impl Engine {
    pub fn new(thresholds: Thresholds, started: u64) -> Engine {
        Engine {
            thresholds,
            started,
            devices: BTreeMap::new(),
            fired_once: HashSet::new(),
            fired_order: VecDeque::new(),
        }
    }

    /// Every device the hub has, as it is now (revoked ones left out): the stateful alerts
    /// that began or ended. A device that is no longer there has its firing alerts resolved.
    pub fn scan(&mut self, now: u64, devices: &[DeviceView]) -> Vec<Alert> {
        let mut out = Vec::new();
        let present: HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let gone: Vec<String> = self.devices.keys().filter(|id| !present.contains(id.as_str())).cloned().collect();
        for id in gone {
            let Some(tracked) = self.devices.remove(&id) else { continue };
            for (name, condition) in tracked.conditions {
                if condition == Condition::Firing {
                    out.push(Alert {
                        name,
                        resolved: true,
                        key: key(name, &id),
                        device: Some(id.clone()),
                        group: tracked.group.clone(),
                        summary: format!("{id} was revoked or removed"),
                        detail: json!({ "reason": "device revoked or removed" }),
                        at: now,
                    });
                }
            }
        }
        for device in devices {
            let readings = self.read(now, device);
            let tracked = self.devices.entry(device.id.clone()).or_default();
            tracked.group.clone_from(&device.group);
            if device.online {
                tracked.online_at = Some(now);
            }
            for (name, reading) in readings {
                let condition = tracked.conditions.entry(name).or_insert(Condition::Clear { resolved_at: None });
                let resolved = match *condition {
                    Condition::Clear { resolved_at } if reading.holds => {
                        if resolved_at.is_some_and(|at| now < at.saturating_add(REFIRE_AFTER)) {
                            continue;
                        }
                        *condition = Condition::Firing;
                        false
                    }
                    Condition::Firing if reading.clears => {
                        *condition = Condition::Clear { resolved_at: Some(now) };
                        true
                    }
                    _ => continue,
                };
                out.push(Alert {
                    name,
                    resolved,
                    key: key(name, &device.id),
                    device: Some(device.id.clone()),
                    group: device.group.clone(),
                    summary: if resolved { reading.resolved_summary } else { reading.summary },
                    detail: reading.detail,
                    at: now,
                });
            }
        }
        out
    }

    fn read(&self, now: u64, d: &DeviceView) -> Vec<(AlertName, Reading)> {
        let t = &self.thresholds;
        let id = &d.id;
        let mut readings = Vec::new();

        // Offline since it was last seen, or since a scan last found it connected (its stored
        // last_seen is only written when a connection ends, a moment after the registry let
        // it go).
        let seen_online = self.devices.get(id).and_then(|t| t.online_at);
        let since = d.last_seen.unwrap_or(d.enrolled).max(seen_online.unwrap_or(0));
        let after = t.offline_after.as_secs();
        let grace = after.min(START_GRACE);
        let offline = !d.online && now >= self.started.saturating_add(grace) && now.saturating_sub(since) >= after;
        readings.push((
            AlertName::DeviceOffline,
            Reading {
                holds: offline,
                clears: d.online,
                summary: format!("{id} has been offline since {}", format_unix(since)),
                resolved_summary: format!("{id} is connected again"),
                detail: json!({ "last_seen": format_unix(since), "offline_after_secs": after }),
            },
        ));

        if let Some(state) = d.node_red {
            let why = d.node_red_detail.clone();
            readings.push((
                AlertName::NodeRedCrashLoop,
                Reading {
                    holds: state == NodeRedState::CrashLoop,
                    clears: state == NodeRedState::Running,
                    summary: format!("Node-RED on {id} is in a crash loop"),
                    resolved_summary: format!("Node-RED on {id} runs again"),
                    detail: json!({ "state": state, "last_exit": why }),
                },
            ));
        }

        if let Some(backlog) = d.audit_backlog {
            let above = t.audit_backlog_above;
            readings.push((
                AlertName::AuditBacklog,
                Reading {
                    holds: backlog > above,
                    clears: backlog <= above / 2,
                    summary: format!(
                        "{id} has {backlog} audit events the hub has not acknowledged (more than {above})"
                    ),
                    resolved_summary: format!("{id}'s audit backlog is down to {backlog}"),
                    detail: json!({ "backlog": backlog, "above": above }),
                },
            ));
        }

        let within = t.certificate_expiring_within.as_secs();
        let expiring = d.cert_not_after <= now.saturating_add(within);
        let expired = d.cert_not_after <= now;
        readings.push((
            AlertName::CertificateExpiring,
            Reading {
                holds: expiring,
                clears: !expiring,
                summary: format!(
                    "the certificate of {id} {} at {}",
                    if expired { "expired" } else { "expires" },
                    format_unix(d.cert_not_after)
                ),
                resolved_summary: format!("the certificate of {id} was renewed"),
                detail: json!({ "not_after": format_unix(d.cert_not_after), "expired": expired, "within_secs": within }),
            },
        ));
        readings
    }

    /// An event the hub recorded: a one-shot alert when it is one. `group` is the group of
    /// the device it is about, as the store has it now (a scan may not have seen a new member).
    pub fn recorded(
        &mut self,
        now: u64,
        kind: &str,
        target: &str,
        detail: &serde_json::Map<String, Value>,
        group: Option<String>,
    ) -> Option<Alert> {
        let text = |k: &str| detail.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (name, key, device, group, summary, detail) = match (kind, detail.get("state").and_then(Value::as_str)) {
            ("deployment.status", Some("rolled_back")) => {
                let deployment = text("deployment");
                let reason = detail
                    .get("detail")
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                (
                    AlertName::DeploymentRolledBack,
                    format!("{}:{target}:{deployment}", AlertName::DeploymentRolledBack),
                    Some(target.to_string()),
                    group,
                    format!("{target} rolled deployment {deployment} back: {reason}"),
                    json!({ "deployment": deployment, "report": detail.get("detail") }),
                )
            }
            ("policy.status", Some("refused")) => {
                let number = detail.get("number").cloned().unwrap_or(Value::Null);
                let reason = text("reason");
                (
                    AlertName::PolicyRefused,
                    format!("{}:{target}:{number}", AlertName::PolicyRefused),
                    Some(target.to_string()),
                    group,
                    format!("{target} refused policy {number}: {reason}"),
                    json!({ "number": number, "reason": reason }),
                )
            }
            ("rollout.halted", _) => {
                let rollout = text("rollout");
                let name = target.strip_prefix("group:").unwrap_or(target).to_string();
                let reasons: Vec<&str> = detail
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                (
                    AlertName::RolloutHalted,
                    format!("{}:{rollout}", AlertName::RolloutHalted),
                    None,
                    Some(name.clone()),
                    format!("rollout {rollout} to group {name} halted: {}", reasons.join("; ")),
                    json!({ "rollout": rollout, "reasons": reasons, "reverting": detail.get("reverting"), "on_halt": detail.get("on_halt") }),
                )
            }
            _ => return None,
        };
        self.once(Alert { name, resolved: false, key, device, group, summary, detail, at: now })
    }

    /// The hub's own trail misses events: `what` says which (a broken chain at `seq`, events
    /// that could not be written), `id` tells this gap from another.
    pub fn audit_gap(&mut self, now: u64, id: &str, summary: String, detail: Value) -> Option<Alert> {
        let name = AlertName::HubAuditGap;
        self.once(Alert {
            name,
            resolved: false,
            key: format!("{name}:{id}"),
            device: None,
            group: None,
            summary,
            detail,
            at: now,
        })
    }

    fn once(&mut self, alert: Alert) -> Option<Alert> {
        if !self.fired_once.insert(alert.key.clone()) {
            return None;
        }
        self.fired_order.push_back(alert.key.clone());
        if self.fired_order.len() > REMEMBERED
            && let Some(old) = self.fired_order.pop_front()
        {
            self.fired_once.remove(&old);
        }
        Some(alert)
    }
}

fn key(name: AlertName, device: &str) -> String {
    format!("{name}:{device}")
}

#[cfg(test)]
mod tests;
