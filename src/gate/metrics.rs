//! What the gate counts as requests pass: requests by space, origin and status, denials by
//! reason, failed authentications, refusals by the limiters, and how long Node-RED took to
//! answer what was forwarded. Counting is a few atomic additions per request; whether anyone
//! scrapes them (`[metrics] listen`) makes no difference to the gate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `editor` (the editor and admin API, `/device-editor/…`) or `node` (dashboards, HTTP-In).
    space: &'static str,
    /// `network` (a LAN client) or `tunnel` (an operator through the platform).
    via: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpaceLabels {
    space: &'static str,
}

fn upstream_histogram() -> Histogram {
    // 1 ms to about 16 s: a Node-RED answering from memory to one stuck in a slow flow.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The gate's counters; cheap to clone (each family is shared).
#[derive(Debug, Clone)]
pub struct GateMetrics {
    requests: Family<RequestLabels, Counter>,
    denials: Family<ReasonLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    upstream: Family<SpaceLabels, Histogram, fn() -> Histogram>,
}

impl Default for GateMetrics {
    fn default() -> Self {
        GateMetrics {
            requests: Family::default(),
            denials: Family::default(),
            auth_failures: Family::default(),
            rate_limited: Family::default(),
            upstream: Family::new_with_constructor(upstream_histogram),
        }
    }
}

/// Which space a request path names, for the `space` label: the editor's prefix or node space.
/// (Read from the raw path: a request too malformed to canonicalise is counted under `node`.)
pub fn space_label(path: &str) -> &'static str {
    let editor = "/device-editor";
    if path.strip_prefix(editor).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')) {
        "editor"
    } else {
        "node"
    }
}

impl GateMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "redtether_gate_requests",
            "Requests the gate answered, by space, by where they came from and by status",
            self.requests.clone(),
        );
        registry.register(
            "redtether_gate_denials",
            "Requests refused by the access decision (role, token scope, cross-site, protection mode, tunnel assertion)",
            self.denials.clone(),
        );
        registry.register(
            "redtether_gate_auth_failures",
            "Failed authentications, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "redtether_gate_rate_limited",
            "Requests refused by a limiter: requests per address, failed authentications per address, or Node-RED's connection slots",
            self.rate_limited.clone(),
        );
        registry.register(
            "redtether_gate_upstream_duration_seconds",
            "Time from forwarding a request to Node-RED to its response head",
            self.upstream.clone(),
        );
    }

    pub fn request(&self, space: &'static str, tunnel: bool, status: u16) {
        let via = if tunnel { "tunnel" } else { "network" };
        self.requests.get_or_create(&RequestLabels { space, via, status }).inc();
    }

    pub fn denied(&self, reason: &'static str) {
        self.denials.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// `limit`: `requests`, `failed_auth` or `upstream_slots`.
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabels { limit }).inc();
    }

    pub fn upstream_answered(&self, space: &'static str, took: Duration) {
        self.upstream.get_or_create(&SpaceLabels { space }).observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_editor_space_is_its_prefix_and_nothing_that_only_starts_like_it() {
        assert_eq!(space_label("/device-editor"), "editor");
        assert_eq!(space_label("/device-editor/flows"), "editor");
        assert_eq!(space_label("/device-editorx"), "node");
        assert_eq!(space_label("/ui/"), "node");
    }

    #[test]
    fn counts_appear_in_the_exposition() {
        let metrics = GateMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.request("node", false, 200);
        metrics.request("node", false, 200);
        metrics.denied("protection_mode");
        metrics.upstream_answered("editor", Duration::from_millis(3));
        let text = redtether_host::metrics_server::encode(&registry);
        assert!(
            text.contains("redtether_gate_requests_total{space=\"node\",via=\"network\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("redtether_gate_denials_total{reason=\"protection_mode\"} 1"), "{text}");
        assert!(text.contains("redtether_gate_upstream_duration_seconds_count{space=\"editor\"} 1"), "{text}");
    }
}
