//! Builds the gate's request pipeline from the settings.

use crate::audit::{AuditEvent, AuditKind, Auditor};
use crate::config::Settings;
use crate::gate::auth::Authenticator;
use crate::gate::auth::sessions::SessionStore;
use crate::gate::auth::tokens::TokenStore;
use crate::gate::ratelimit::Limiter;
use crate::gate::rules::{LIMITER_CAPACITY, Security};
use crate::gate::{Pipeline, PipelineParts, Proxy};
use crate::supervisor::UpstreamTokens;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often refusals by the limiters are reported (one event per address per window).
pub const RATE_LIMIT_REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct GateParts {
    pub settings: Arc<Settings>,
    /// The security settings to start with (the file's, or a stored platform policy's).
    pub security: Security,
    pub tokens: Arc<TokenStore>,
    pub sessions: Arc<SessionStore>,
    pub upstream_tokens: UpstreamTokens,
    pub upstream: watch::Receiver<Option<SocketAddr>>,
    pub audit: Auditor,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
    pub metrics: crate::gate::GateMetrics,
}

pub fn pipeline(parts: GateParts) -> Pipeline {
    let g = &parts.settings.gate;
    let r = &g.rate_limit;
    let fixed = PipelineParts {
        proxy: Proxy::new(parts.upstream, parts.tasks, parts.cancel),
        auth: Authenticator::new(parts.tokens, parts.sessions),
        upstream_tokens: parts.upstream_tokens,
        failed_auth: Limiter::new(r.failed_auth_per_second, r.failed_auth_burst, LIMITER_CAPACITY),
        upstream_slots: Arc::new(Semaphore::new(r.max_upstream_connections as usize)),
        chunked_budget: Arc::new(Semaphore::new(crate::gate::CHUNKED_BUDGET)),
        audit: parts.audit,
        scheme: if g.tls.is_some() { "https" } else { "http" },
        metrics: parts.metrics,
    };
    Pipeline::new(fixed, parts.security)
}

/// Reports what the limiters refused, one log line and one `auth.rate_limited` event per
/// address per window.
pub async fn report_rate_limits(pipeline: Arc<Pipeline>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(RATE_LIMIT_REPORT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let rules = pipeline.rules();
        let limiters = [("failed_auth", Some(&pipeline.failed_auth)), ("requests", rules.requests.as_deref())];
        for (limiter, refusals) in limiters.into_iter().filter_map(|(n, l)| l.map(|l| (n, l.drain_refusals()))) {
            for (addr, count) in refusals {
                tracing::warn!(%addr, count, limiter, window_seconds = RATE_LIMIT_REPORT_EVERY.as_secs(), "gate: rate limited");
                let event = AuditEvent::new(AuditKind::AuthRateLimited, crate::audit::Actor::anonymous(addr), "gate")
                    .with("addr", addr.to_string())
                    .with("count", count)
                    .with("limiter", limiter)
                    .with("window_seconds", RATE_LIMIT_REPORT_EVERY.as_secs());
                pipeline.audit.record_or_log(event).await;
            }
        }
    }
}
