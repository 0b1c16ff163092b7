//! `/`: the fleet at a glance — devices online, offline and crash-looping, deployments and
//! policies waiting or failed, devices with outdated packages, certificates ending within 30
//! days — and a chart of devices online over the last 24 hours, from samples the hub takes
//! every five minutes ([`sample_presence`]).

use super::devices::{DeviceRow, expiring};
use super::layout::{self, Nav};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use crate::registry::Registry;
use crate::store::{HubStore, PresenceSample};
use http::{Response, StatusCode};
use maud::{Markup, html};
use redtether_proto::wire::DeployState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the number of devices online is sampled for the chart.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(300);

/// Samples the number of devices online now and every [`SAMPLE_EVERY`], until cancelled.
pub async fn sample_presence(store: Arc<HubStore>, registry: Registry, cancel: CancellationToken) {
    loop {
        let total = store.devices().map(|d| d.iter().filter(|d| !d.revoked).count()).unwrap_or(0);
        let sample = PresenceSample {
            at: redtether_proto::time::unix_now(),
            online: u32::try_from(registry.count()).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
        };
        if let Err(e) = store.record_presence(sample) {
            tracing::warn!(error = %e, "cannot record how many devices are online");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// The overview's numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub devices: usize,
    pub online: usize,
    pub offline: usize,
    pub crash_looping: usize,
    pub outdated: usize,
    pub policies_waiting: usize,
    pub policies_refused: usize,
    pub deployments_waiting: usize,
    pub deployments_failed: usize,
    pub certificates_expiring: usize,
}

/// Counts the rows as of `now`.
pub fn summarize(rows: &[DeviceRow], now: u64) -> Summary {
    let mut s = Summary { devices: rows.len(), ..Summary::default() };
    for r in rows {
        if r.online {
            s.online += 1;
        } else {
            s.offline += 1;
        }
        s.crash_looping += usize::from(r.node_red.as_deref() == Some("crash_loop"));
        s.outdated += usize::from(r.outdated.is_some_and(|n| n > 0));
        s.policies_waiting += usize::from(r.policy.as_deref() == Some("pending"));
        s.policies_refused += usize::from(matches!(r.policy.as_deref(), Some("refused" | "failed")));
        s.certificates_expiring += usize::from(expiring(r, now));
    }
    s
}

/// The chart of devices online over the 24 hours before `now`: a line of the samples, the
/// enrolled total dashed above it.
pub fn chart(samples: &[PresenceSample], now: u64) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    const PAD: f64 = 30.0;
    let start = now.saturating_sub(86400);
    let top = samples.iter().map(|s| s.total.max(s.online)).max().unwrap_or(0).max(1);
    let x = |at: u64| PAD + (at.saturating_sub(start) as f64 / 86400.0) * (W - 2.0 * PAD);
    let y = |n: u32| H - PAD - (f64::from(n) / f64::from(top)) * (H - 2.0 * PAD);
    let line = |pick: fn(&PresenceSample) -> u32| {
        samples.iter().map(|s| format!("{:.1},{:.1}", x(s.at), y(pick(s)))).collect::<Vec<_>>().join(" ")
    };
    let label = format!(
        "Devices online over the last 24 hours: {} samples, now {} of {}",
        samples.len(),
        samples.last().map_or(0, |s| s.online),
        samples.last().map_or(0, |s| s.total)
    );
    html! {
        svg.chart #presence-chart viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img" aria-label=(label) xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#aab2bf" {}
            line x1=(PAD) y1=(PAD) x2=(PAD) y2=(H - PAD) stroke="#aab2bf" {}
            text x="4" y=(PAD + 4.0) font-size="11" fill="#5b6575" { (top) }
            text x="4" y=(H - PAD + 4.0) font-size="11" fill="#5b6575" { "0" }
            text x=(PAD) y=(H - 8.0) font-size="11" fill="#5b6575" { "24 h ago" }
            text x=(W - PAD - 24.0) y=(H - 8.0) font-size="11" fill="#5b6575" { "now" }
            @if samples.is_empty() {
                text x=(W / 2.0 - 60.0) y=(H / 2.0) font-size="13" fill="#5b6575" { "No samples yet" }
            } @else {
                polyline points=(line(|s| s.total)) fill="none" stroke="#aab2bf" stroke-dasharray="4 4" {}
                polyline points=(line(|s| s.online)) fill="none" stroke="#1f6f3a" stroke-width="2" {}
            }
        }
    }
}

impl Api {
    pub(super) fn fleet_page(&self, caller: &Caller) -> Response<ApiBody> {
        let now = redtether_proto::time::unix_now();
        let read = || -> Result<_, crate::store::StoreError> {
            let rows = self.device_rows()?;
            let mut summary = summarize(&rows, now);
            for d in &rows {
                let deployments = self.store.deployments(&d.id)?;
                summary.deployments_waiting += deployments.iter().filter(|d| !d.state.is_final()).count();
                // A failure a later deployment put right is history, not trouble.
                if let Some(last) = deployments.iter().max_by_key(|d| d.number) {
                    let failed = matches!(last.state, DeployState::Failed | DeployState::RolledBack);
                    summary.deployments_failed += usize::from(failed);
                }
            }
            let mut samples = self.store.presence_since(now.saturating_sub(86400))?;
            // The line ends at this moment, not at the last five-minute sample.
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            let enrolled = rows.iter().filter(|r| !r.revoked).count();
            samples.push(PresenceSample { at: now, online: count(summary.online), total: count(enrolled) });
            Ok((summary, samples))
        };
        let (s, samples) = match read() {
            Ok(read) => read,
            Err(e) => return layout::store_failed(caller, "Overview", "the fleet", &e),
        };
        let card = |n: usize, label: &str, href: &str, class: &str| {
            html! { div.card { a href=(href) { span class={ "n " (if n > 0 { class } else { "" }) } { (n) } (label) } } }
        };
        let content = html! {
            div.cards #summary {
                (card(s.devices, "devices", "/devices", ""))
                (card(s.online, "online", "/devices?show=online", "state-ok"))
                (card(s.offline, "offline", "/devices?show=offline", "state-bad"))
                (card(s.crash_looping, "crash-looping", "/devices?show=crash_loop", "state-bad"))
                (card(s.deployments_waiting, "deployments in progress", "/audit?kind=deploy", "state-warn"))
                (card(s.deployments_failed, "devices whose last deployment failed", "/audit?kind=deploy", "state-bad"))
                (card(s.policies_waiting, "policies pending", "/devices?show=policy", "state-warn"))
                (card(s.policies_refused, "policies refused", "/devices?show=policy", "state-bad"))
                (card(s.outdated, "devices with outdated packages", "/devices?show=outdated", "state-warn"))
                (card(s.certificates_expiring, "certificates ending within 30 days", "/devices?show=expiring", "state-warn"))
            }
            h2 { "Devices online, last 24 hours" }
            (chart(&samples, now))
        };
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Fleet, "Overview", None, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(online: bool, node_red: &str, policy: Option<&str>, outdated: u32, cert_not_after: u64) -> DeviceRow {
        DeviceRow {
            id: "d".into(),
            online,
            last_seen: None,
            node_red: Some(node_red.into()),
            restarts: None,
            agent_version: None,
            protection: None,
            policy: policy.map(str::to_string),
            backlog: None,
            outdated: Some(outdated),
            revoked: false,
            cert_not_after,
        }
    }

    #[test]
    fn the_summary_counts_each_kind_of_trouble() {
        let now = 1_000_000_000;
        let rows = [
            row(true, "running", Some("applied"), 0, now + 86400),
            row(false, "crash_loop", Some("pending"), 2, now + 90 * 86400),
            row(false, "running", Some("refused"), 0, now - 1),
        ];
        let s = summarize(&rows, now);
        assert_eq!(
            s,
            Summary {
                devices: 3,
                online: 1,
                offline: 2,
                crash_looping: 1,
                outdated: 1,
                policies_waiting: 1,
                policies_refused: 1,
                certificates_expiring: 2,
                ..Summary::default()
            }
        );
    }

    #[test]
    fn the_chart_draws_the_samples_of_the_day_within_its_frame() {
        let now = 200_000;
        let samples =
            [PresenceSample { at: now - 86400, online: 0, total: 4 }, PresenceSample { at: now, online: 4, total: 4 }];
        let svg = chart(&samples, now).into_string();
        // The first sample at the left edge and the bottom, the last at the right and the top.
        assert!(svg.contains("points=\"30.0,170.0 690.0,30.0\""), "{svg}");
        assert!(svg.contains("now 4 of 4"));
        assert!(chart(&[], now).into_string().contains("No samples yet"));
    }
}
