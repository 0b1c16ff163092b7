//! `redtether run`: wires the subsystems together, owns their tasks, and shuts them down in
//! order on SIGTERM/SIGINT.
//!
//! Order of start: state directory and its lock → gate bound → control socket → supervisor →
//! READY once Node-RED has first been started (or its install begun). Order of stop: one
//! cancellation token for all; the supervisor stops Node-RED (SIGTERM, SIGKILL after
//! `node_red.stop_timeout`), the gate drains, and the process exits 0 within the stop timeout.

mod control;
mod gate;
mod users;

use crate::audit::{Actor, AuditEvent, AuditKind, Auditor, OnFailure};
use crate::config::Settings;
use crate::control::ControlServer;
use crate::gate::Gate;
use crate::gate::auth::sessions::SessionStore;
use crate::gate::auth::tokens::TokenStore;
use crate::state_dir::{StateDir, StateDirError, random_secret};
use crate::supervisor::{Supervisor, UpstreamTokens};
use crate::tunnel::{Tunnel, TunnelParts};
use redtether_host::notify::{Notifier, watchdog_interval};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Extra time past `node_red.stop_timeout` for everything else to wind down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not run. Each maps to its own exit code at the binary's edge.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory could not be created or locked.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The gate's port could not be bound.
    #[error(transparent)]
    Gate(#[from] crate::gate::GateError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// `[metrics] listen` could not be bound.
    #[error(transparent)]
    Metrics(#[from] redtether_host::metrics_server::MetricsListenError),
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let settings = Arc::new(settings);
    let notifier = Arc::new(Notifier::from_env());
    let mut signals = redtether_host::signals::Signals::install().map_err(DaemonError::Signals)?;
    // Installed first thing: from here on a SIGHUP reloads the configuration instead of ending
    // the process.
    let hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let dir = StateDir::new(&settings.state_dir);
    dir.create()?;
    let _lock = dir.lock()?;
    let credential_secret = dir.read_or_create_secret(&dir.credential_secret(), || random_secret(32))?;
    // A fresh key for the gate's credential at every run: nothing on disk outlives it for long.
    let upstream_tokens = UpstreamTokens::generate();
    let users = users::effective_users(&settings.gate.users, &dir)?;
    let tokens = Arc::new(TokenStore::open(&dir.tokens_file()));
    let sessions = Arc::new(SessionStore::new(settings.gate.session_ttl, 1024));

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let on_failure = match settings.audit.on_failure {
        crate::config::AuditFailurePolicy::Deny => OnFailure::Deny,
        crate::config::AuditFailurePolicy::Allow => OnFailure::Allow,
    };
    let (audit, journal) = Auditor::start(&dir.audit_dir(), settings.audit.max_bytes, on_failure);
    // Queued, not awaited: they answer no request, and READY should not wait for two fsyncs.
    audit.enqueue(
        AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent")
            .with("version", crate::VERSION)
            .with("pid", std::process::id()),
    );
    audit.enqueue(config_loaded(&settings));
    // Before Node-RED starts: an apply the previous run did not finish is rolled back.
    if let Some(event) = crate::deploy::recover(&dir) {
        audit.enqueue(event);
    }

    let (first_attempt_tx, first_attempt_rx) = oneshot::channel();
    // Node-RED's recent output, for the platform's `logs` streams.
    let logs = crate::logbuf::LogBuffer::new(settings.logs.buffer_lines);
    let (supervisor, handle) = Supervisor::new(
        Arc::new(settings.node_red.clone()),
        dir.clone(),
        upstream_tokens.clone(),
        credential_secret.clone(),
        audit.clone(),
        first_attempt_tx,
        logs.clone(),
    );
    let (deployer, deploy) = crate::deploy::Deployer::new(
        Arc::clone(&settings),
        dir.clone(),
        handle.clone(),
        audit.clone(),
        credential_secret,
        &upstream_tokens,
    );

    let tls = match &settings.gate.tls {
        Some(tls) => Some(
            redtether_host::tls_server::acceptor(tls, "gate.tls", &dir, "gate-tls")
                .map_err(crate::gate::GateError::from)?,
        ),
        None => None,
    };
    let initial = crate::security::initial(&settings, users, &dir);
    let gate_metrics = crate::gate::GateMetrics::default();
    let pipeline = Arc::new(gate::pipeline(gate::GateParts {
        settings: Arc::clone(&settings),
        security: initial.security.clone(),
        tokens: Arc::clone(&tokens),
        sessions: Arc::clone(&sessions),
        upstream_tokens,
        upstream: handle.upstream(),
        audit: audit.clone(),
        tasks: TaskTracker::new(),
        cancel: cancel.child_token(),
        metrics: gate_metrics.clone(),
    }));
    let users_dir = dir.clone();
    let security = Arc::new(crate::security::SecurityControl::new(
        initial,
        Arc::clone(&settings),
        Arc::clone(&pipeline),
        audit.clone(),
        dir.clone(),
        Box::new(move |configured| users::effective_users(configured, &users_dir)),
    ));
    let gate = Gate::bind(settings.gate.listen, tls, Arc::clone(&pipeline), TaskTracker::new()).await?;
    let gate_addr = gate.local_addr().unwrap_or(settings.gate.listen);
    let control = ControlServer::bind(&dir.control_socket())?;
    let metrics_listener = match settings.metrics.listen {
        Some(addr) => Some(redtether_host::metrics_server::bind(addr, "metrics.listen").await?),
        None => None,
    };
    tracing::info!(
        version = crate::VERSION,
        config = %settings.source.describe(),
        state_dir = %dir.root().display(),
        gate = %gate_addr,
        protection = pipeline.rules().security.protection,
        policy = security.info().source.as_str(),
        "redtether agent starting"
    );

    tasks.spawn(supervisor.run(cancel.child_token()));
    tasks.spawn(gate.serve(cancel.child_token()));
    tasks.spawn(gate::report_rate_limits(Arc::clone(&pipeline), cancel.child_token()));
    tasks.spawn(deployer.run(cancel.child_token()));
    let (tunnel, tunnel_handle) = Tunnel::new(TunnelParts {
        dir: dir.clone(),
        supervisor: handle.clone(),
        deploy: deploy.clone(),
        audit: audit.clone(),
        gate_listen: gate_addr.to_string(),
        security: Arc::clone(&security),
        keepalive: settings.tunnel.keepalive,
        transport: settings.tunnel.transport,
        quic_probe: settings.tunnel.quic_probe,
        tcp_port: settings.tunnel.tcp_port,
        proxy: settings.tunnel.proxy.clone(),
        gate: Arc::clone(&pipeline),
        resources: std::sync::Mutex::new(crate::resources::ResourceSampler::new(dir.root().to_path_buf())),
        logs,
        hubs: settings.tunnel.hubs.clone(),
    });
    let metrics_listen = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let metrics =
            crate::metrics::AgentMetrics::new(&gate_metrics, handle.clone(), audit.clone(), tunnel_handle.clone());
        tasks.spawn(redtether_host::metrics_server::serve(
            listener,
            crate::metrics::render_fn(Arc::new(metrics)),
            TaskTracker::new(),
            cancel.child_token(),
        ));
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    tasks.spawn(tunnel.run(cancel.child_token()));
    let control_handler = Arc::new(control::DaemonControl {
        supervisor: handle.clone(),
        tunnel: tunnel_handle,
        deploy,
        gate_listen: gate_addr,
        settings: Arc::clone(&settings),
        sessions,
        tokens,
        audit: audit.clone(),
        started: SystemTime::now(),
        gate: Arc::clone(&pipeline),
        security: Arc::clone(&security),
        metrics_listen,
    });
    tasks.spawn(reload_on_hangup(hangup, Arc::clone(&security), cancel.child_token()));
    tasks.spawn(control.serve(control_handler, cancel.child_token()));
    tasks.spawn(publish_status(handle.subscribe(), Arc::clone(&notifier), cancel.child_token()));
    tasks.spawn(release_start_up_code(handle.subscribe(), cancel.child_token()));
    if let Some(interval) = watchdog_interval() {
        tasks.spawn(redtether_host::notify::keep_watchdog(interval, Arc::clone(&notifier), cancel.child_token()));
    }
    tasks.close();

    tokio::select! {
        _ = first_attempt_rx => {
            notifier.ready(&handle.status().summary());
            tracing::info!(gate = %gate_addr, "ready");
        }
        signal = signals.next() => {
            tracing::info!(%signal, "signal received before ready");
        }
    }
    if signals.received().is_none() {
        let signal = signals.next().await;
        tracing::info!(%signal, "stopping");
    }

    notifier.stopping("stopping Node-RED");
    let signal = signals.received().map(|s| s.to_string()).unwrap_or_default();
    audit.record_or_log(AuditEvent::new(AuditKind::AgentStopping, Actor::System, "agent").with("signal", signal)).await;
    cancel.cancel();
    let deadline = settings.node_red.stop_timeout + SHUTDOWN_GRACE;
    tokio::select! {
        _ = tasks.wait() => tracing::info!("stopped"),
        _ = tokio::time::sleep(deadline) => tracing::error!(timeout = %humantime::format_duration(deadline), "shutdown took too long; exiting anyway"),
        signal = signals.next() => tracing::warn!(%signal, "second signal; exiting at once"),
    }
    // Every other holder of an auditor has ended: the journal thread ends when these go.
    drop(pipeline);
    drop(audit);
    let joined = tokio::task::spawn_blocking(move || journal.join());
    if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
        tracing::warn!("the audit journal did not close in time");
    }
    Ok(())
}

/// SIGHUP: read `agent.toml` again, as `redtether reload` does.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    security: Arc<crate::security::SecurityControl>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = security.reload().await;
    }
}

/// Sends systemd a STATUS line on every supervisor state change.
async fn publish_status(
    mut status: tokio::sync::watch::Receiver<crate::supervisor::NodeRedStatus>,
    notifier: Arc<Notifier>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
        let summary = status.borrow_and_update().summary();
        notifier.status(&summary);
    }
}

/// How long after Node-RED first answers the start counts as over.
const START_SETTLES: Duration = Duration::from_secs(1);

/// Once Node-RED first runs, gives back the code pages only the start used
/// (`redtether_host::code_pages`): most of the idle agent's resident memory.
async fn release_start_up_code(
    mut status: tokio::sync::watch::Receiver<crate::supervisor::NodeRedStatus>,
    cancel: CancellationToken,
) {
    let settled = async {
        let running = status.wait_for(|s| s.state == crate::supervisor::NodeRedState::Running).await.is_ok();
        tokio::time::sleep(START_SETTLES).await;
        running
    };
    tokio::select! {
        _ = cancel.cancelled() => return,
        running = settled => if !running { return },
    }
    match redtether_host::code_pages::release_after_start() {
        Ok(released) => {
            tracing::debug!(bytes = released.bytes, refused = released.refused, "start-up code pages given back")
        }
        Err(e) => tracing::debug!(error = %e, "cannot read this process's mappings"),
    }
}

/// `config.loaded`: where the settings came from and a digest of the file.
fn config_loaded(settings: &Settings) -> AuditEvent {
    let digest = match &settings.source {
        crate::config::ConfigSource::File(path) => std::fs::read(path).ok().map(|bytes| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(bytes))
        }),
        crate::config::ConfigSource::Defaults => None,
    };
    AuditEvent::new(AuditKind::ConfigLoaded, Actor::System, settings.source.describe())
        .with("sha256", digest)
        .with("protection", settings.gate.protection)
}
