//! The hub's numbers: the Prometheus metrics (`GET /metrics` on the operator listener for an
//! operator, or on `[metrics] listen` for a scraper) and each device's resource history
//! (`GET /api/devices/{id}/metrics`, the console's charts).
//!
//! Counters move where things happen: the tunnel endpoint counts handshakes and refusals, the
//! sessions count delivered audit events, the API listener counts requests by route, the store
//! times itself. Fleet totals (devices, online, deployments and policies by state) are read at
//! each scrape, so nothing is kept twice.

pub mod history;
pub mod routes;

use crate::registry::Registry as Presence;
use crate::store::HubStore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3 s: a cached page to a command waiting on a device.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

const DEPLOY_STATES: [&str; 6] = ["pending", "sent", "applying", "applied", "rolled_back", "failed"];
const POLICY_STATES: [&str; 3] = ["pending", "applied", "refused"];

pub struct HubMetrics {
    registry: Registry,
    store: Arc<HubStore>,
    presence: Presence,
    /// Each device's resource figures over the last day.
    pub history: history::History,
    api_requests: Family<ApiLabels, Counter>,
    api_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    handshakes: Family<KindLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    audit_ingested: Counter,
    audit_duplicates: Counter,
    connections: Gauge,
    devices: Gauge,
    revoked: Gauge,
    online: Gauge,
    deployments: Family<StateLabels, Gauge>,
    policies: Family<StateLabels, Gauge>,
    history_points: Gauge,
}

impl HubMetrics {
    pub fn new(store: Arc<HubStore>, presence: Presence) -> HubMetrics {
        let mut r = Registry::default();
        r.register(
            "redtether_hub",
            "The hub's version",
            Info::new(vec![("version".to_string(), crate::VERSION.to_string())]),
        );
        let m = HubMetrics {
            registry: Registry::default(),
            history: history::History::default(),
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(latency_histogram),
            handshakes: Family::default(),
            refusals: Family::default(),
            audit_ingested: Counter::default(),
            audit_duplicates: Counter::default(),
            connections: Gauge::default(),
            devices: Gauge::default(),
            revoked: Gauge::default(),
            online: Gauge::default(),
            deployments: Family::default(),
            policies: Family::default(),
            history_points: Gauge::default(),
            store,
            presence,
        };
        r.register("redtether_hub_devices", "Enrolled devices (revoked ones included)", m.devices.clone());
        r.register("redtether_hub_devices_revoked", "Devices whose certificate is revoked", m.revoked.clone());
        // This hub's own: in a cluster the fleet's is the sum over the hubs.
        r.register("redtether_hub_devices_online", "Devices with a tunnel up to this hub now", m.online.clone());
        r.register(
            "redtether_hub_connections",
            "QUIC connections open now (tunnels and enrollments)",
            m.connections.clone(),
        );
        r.register("redtether_hub_handshakes", "Connections accepted, by kind (tunnel, enroll)", m.handshakes.clone());
        r.register("redtether_hub_handshake_refusals", "Connections refused, by reason", m.refusals.clone());
        r.register(
            "redtether_hub_audit_events_ingested",
            "Device audit events stored (each once)",
            m.audit_ingested.clone(),
        );
        r.register(
            "redtether_hub_audit_duplicates",
            "Device audit events delivered again and kept once",
            m.audit_duplicates.clone(),
        );
        r.register(
            "redtether_hub_api_requests",
            "Operator API requests, by route template, method and status",
            m.api_requests.clone(),
        );
        r.register(
            "redtether_hub_api_request_duration_seconds",
            "Time to the response head of operator API requests, by route template",
            m.api_latency.clone(),
        );
        r.register(
            "redtether_hub_deployments",
            "Devices by the state of their newest deployment",
            m.deployments.clone(),
        );
        r.register("redtether_hub_policies", "Devices by the state of their newest policy", m.policies.clone());
        r.register(
            "redtether_hub_store_duration_seconds",
            "Time the store's operations take, by operation",
            m.store.latency().family(),
        );
        r.register(
            "redtether_hub_resource_history_points",
            "Points of device resource history held in memory",
            m.history_points.clone(),
        );
        HubMetrics { registry: r, ..m }
    }

    pub fn api_answered(&self, route: String, method: &http::Method, status: u16, took: Duration) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::HEAD => "HEAD",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::DELETE => "DELETE",
            http::Method::PATCH => "PATCH",
            http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.api_latency.get_or_create(&RouteLabels { route: route.clone() }).observe(took.as_secs_f64());
        self.api_requests.get_or_create(&ApiLabels { route, method, status }).inc();
    }

    /// `kind`: `tunnel` or `enroll`.
    pub fn handshake(&self, kind: &'static str) {
        self.handshakes.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A connection opened; the guard closes it in the count when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(Arc::clone(self))
    }

    pub fn audit_stored(&self, stored: usize, duplicates: usize) {
        self.audit_ingested.inc_by(stored as u64);
        self.audit_duplicates.inc_by(duplicates as u64);
    }

    /// Reads the fleet's totals and encodes every metric.
    pub async fn render(self: &Arc<Self>) -> String {
        let this = Arc::clone(self);
        let counted = tokio::task::spawn_blocking(move || this.store.census()).await;
        match counted {
            Ok(Ok(census)) => {
                self.devices.set(census.devices as i64);
                self.revoked.set(census.revoked as i64);
                for state in DEPLOY_STATES {
                    let n = census.deployments.get(state).copied().unwrap_or(0);
                    self.deployments.get_or_create(&StateLabels { state }).set(n as i64);
                }
                for state in POLICY_STATES {
                    let n = census.policies.get(state).copied().unwrap_or(0);
                    self.policies.get_or_create(&StateLabels { state }).set(n as i64);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "metrics: cannot count the fleet"),
            Err(e) => tracing::error!(error = %e, "metrics: cannot count the fleet"),
        }
        self.online.set(self.presence.local_count() as i64);
        self.history_points.set(self.history.points() as i64);
        redtether_host::metrics_server::encode(&self.registry)
    }

    /// The render function a `[metrics] listen` listener calls.
    pub fn render_fn(self: &Arc<Self>) -> redtether_host::metrics_server::Render {
        let this = Arc::clone(self);
        Arc::new(move || {
            let this = Arc::clone(&this);
            Box::pin(async move { this.render().await })
        })
    }
}

/// Counts one open connection until dropped.
pub struct ConnectionGuard(Arc<HubMetrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}
