//! The agent's Prometheus metrics, served on `[metrics] listen` (off by default, never on the
//! gate's port).
//!
//! The gate counts as requests pass (`crate::gate::GateMetrics`); what the supervisor, the
//! journal and the tunnel know is read at each scrape ([`AgentMetrics::render`]), so nothing
//! runs for the metrics between scrapes. Only the daemon uses this module.

use crate::audit::Auditor;
use crate::gate::GateMetrics;
use crate::supervisor::SupervisorHandle;
use crate::tunnel::TunnelHandle;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use redtether_proto::session::TunnelState;
use redtether_proto::wire::NodeRedState;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

const NODE_RED_STATES: [NodeRedState; 5] = [
    NodeRedState::Starting,
    NodeRedState::Running,
    NodeRedState::Backoff,
    NodeRedState::CrashLoop,
    NodeRedState::Stopped,
];
const TUNNEL_STATES: [(TunnelState, &str); 4] = [
    (TunnelState::Offline, "offline"),
    (TunnelState::Connecting, "connecting"),
    (TunnelState::Online, "online"),
    (TunnelState::AuthFailed, "auth_failed"),
];

/// What is read at each scrape, and the registry it is written into.
pub struct AgentMetrics {
    registry: Registry,
    supervisor: SupervisorHandle,
    audit: Auditor,
    tunnel: TunnelHandle,
    node_red_state: Family<StateLabels, Gauge>,
    node_red_restarts: Counter,
    node_red_uptime: FloatGauge,
    journal_events: Counter,
    journal_bytes: Gauge,
    journal_backlog: Gauge,
    journal_failing: Gauge,
    tunnel_state: Family<StateLabels, Gauge>,
    tunnel_rtt: FloatGauge,
    tunnel_connects: Counter,
}

impl AgentMetrics {
    pub fn new(gate: &GateMetrics, supervisor: SupervisorHandle, audit: Auditor, tunnel: TunnelHandle) -> AgentMetrics {
        let mut registry = Registry::default();
        registry.register(
            "redtether_agent",
            "The agent's version",
            Info::new(vec![("version".to_string(), crate::VERSION.to_string())]),
        );
        gate.register(&mut registry);
        let metrics = AgentMetrics {
            supervisor,
            audit,
            tunnel,
            node_red_state: Family::default(),
            node_red_restarts: Counter::default(),
            node_red_uptime: FloatGauge::default(),
            journal_events: Counter::default(),
            journal_bytes: Gauge::default(),
            journal_backlog: Gauge::default(),
            journal_failing: Gauge::default(),
            tunnel_state: Family::default(),
            tunnel_rtt: FloatGauge::default(),
            tunnel_connects: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "redtether_node_red_state",
            "1 for the state Node-RED is in, 0 for the others",
            metrics.node_red_state.clone(),
        );
        r.register(
            "redtether_node_red_restarts",
            "Node-RED starts after the first one, for whatever reason",
            metrics.node_red_restarts.clone(),
        );
        r.register(
            "redtether_node_red_uptime_seconds",
            "How long Node-RED has been running (0 when it is not)",
            metrics.node_red_uptime.clone(),
        );
        r.register(
            "redtether_journal_events",
            "Audit events the journal has made durable (its newest sequence number)",
            metrics.journal_events.clone(),
        );
        r.register("redtether_journal_bytes", "Bytes the journal's records take", metrics.journal_bytes.clone());
        r.register(
            "redtether_journal_backlog",
            "Audit events not yet acknowledged by the platform",
            metrics.journal_backlog.clone(),
        );
        r.register(
            "redtether_journal_failing",
            "1 while the journal cannot make events durable",
            metrics.journal_failing.clone(),
        );
        r.register(
            "redtether_tunnel_state",
            "1 for the state the tunnel to the platform is in, 0 for the others",
            metrics.tunnel_state.clone(),
        );
        r.register(
            "redtether_tunnel_rtt_seconds",
            "QUIC's estimate of the round trip to the hub (0 while the tunnel is down)",
            metrics.tunnel_rtt.clone(),
        );
        r.register(
            "redtether_tunnel_connects",
            "Tunnel connections made since the agent started",
            metrics.tunnel_connects.clone(),
        );
        AgentMetrics { registry, ..metrics }
    }

    /// Reads the supervisor, the journal and the tunnel, and encodes every metric.
    pub async fn render(&self) -> String {
        let node_red = self.supervisor.status();
        for state in NODE_RED_STATES {
            self.node_red_state
                .get_or_create(&StateLabels { state: state.as_str() })
                .set(i64::from(state == node_red.state));
        }
        catch_up(&self.node_red_restarts, u64::from(node_red.restarts));
        let uptime = match node_red.state {
            NodeRedState::Running => SystemTime::now().duration_since(node_red.since).unwrap_or_default().as_secs_f64(),
            _ => 0.0,
        };
        self.node_red_uptime.set(uptime);

        if let Ok(journal) = self.audit.status().await {
            catch_up(&self.journal_events, journal.last_seq);
            self.journal_bytes.set(i64::try_from(journal.bytes).unwrap_or(i64::MAX));
            self.journal_backlog.set(i64::try_from(journal.backlog).unwrap_or(i64::MAX));
            self.journal_failing.set(i64::from(journal.state != crate::audit::JournalState::Ok));
        }

        let tunnel = self.tunnel.status();
        for (state, name) in TUNNEL_STATES {
            self.tunnel_state.get_or_create(&StateLabels { state: name }).set(i64::from(state == tunnel.state));
        }
        self.tunnel_rtt.set(self.tunnel.rtt().map_or(0.0, |d| d.as_secs_f64()));
        catch_up(&self.tunnel_connects, tunnel.connects);
        redtether_host::metrics_server::encode(&self.registry)
    }
}

/// Moves a counter up to a total another part of the agent keeps (never down: a total that
/// went back, like a journal reset, shows as no increase rather than a negative one).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// The render function the metrics listener calls.
pub fn render_fn(metrics: Arc<AgentMetrics>) -> redtether_host::metrics_server::Render {
    Arc::new(move || {
        let metrics = Arc::clone(&metrics);
        Box::pin(async move { metrics.render().await })
    })
}
