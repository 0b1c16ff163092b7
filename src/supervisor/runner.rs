//! The supervisor actor: the I/O shell around the pure restart policy and health verdict.

use super::child::NodeRedProcess;
use super::credential::{Perm, UpstreamTokens};
use super::health::{HealthLimits, Probe, Verdict, verdict};
use super::launch::launch_spec;
use super::policy::{PolicyConfig, RestartPolicy};
use super::settings_js::{GATE_TOKEN_HEADER, SettingsJs};
use super::{NodeRedState, NodeRedStatus};
use super::{SupervisorError, install, leftovers, logs};
use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::{NodeRedLaunch, NodeRedSettings};
use crate::logbuf::LogBuffer;
use crate::state_dir::DeployedSnapshot;
use crate::state_dir::{StateDir, write_private};
use redtether_host::error_chain;
use redtether_proto::backoff::{Backoff, jitter};
use redtether_proto::wire::LogStream;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why one run of Node-RED could not be started.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("no free loopback port: {0}")]
    NoPort(#[source] std::io::Error),
    /// The settings file or the run's instance marker could not be written.
    #[error("{0}")]
    Write(#[source] crate::state_dir::StateDirError),
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How often to probe a Node-RED that has not answered yet.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(250);

enum Command {
    Restart { reply: oneshot::Sender<Result<u32, SupervisorError>> },
}

/// The rest of the agent's view of the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<NodeRedStatus>,
    upstream: watch::Receiver<Option<SocketAddr>>,
    probe_latency: watch::Receiver<Option<Duration>>,
}

impl SupervisorHandle {
    pub fn status(&self) -> NodeRedStatus {
        self.status.borrow().clone()
    }
    pub fn subscribe(&self) -> watch::Receiver<NodeRedStatus> {
        self.status.clone()
    }
    /// Where Node-RED listens while a run is up; `None` between runs.
    pub fn upstream(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.upstream.clone()
    }
    /// How long the running Node-RED took to answer its last successful health probe: its
    /// event loop's lag as seen from outside. `None` between runs.
    pub fn probe_latency(&self) -> Option<Duration> {
        *self.probe_latency.borrow()
    }
    /// Stops Node-RED gracefully and starts it again at once (not counted as a crash).
    /// Returns the new pid once it is spawned.
    pub async fn restart(&self) -> Result<u32, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Restart { reply }).await.map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }
}

/// The actor; build with [`Supervisor::new`], then drive with [`Supervisor::run`].
pub struct Supervisor {
    settings: Arc<NodeRedSettings>,
    dir: StateDir,
    upstream_tokens: UpstreamTokens,
    credential_secret: String,
    audit: Auditor,
    /// Where every line Node-RED writes also goes (for the platform).
    logs: LogBuffer,
    status: watch::Sender<NodeRedStatus>,
    upstream: watch::Sender<Option<SocketAddr>>,
    probe_latency: watch::Sender<Option<Duration>>,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    first_attempt: Option<oneshot::Sender<()>>,
    run_id: String,
    spawns: u32,
    probe: Probe,
    tasks: TaskTracker,
    /// Restart requests answered once the next run is spawned.
    pending_restarts: Vec<oneshot::Sender<Result<u32, SupervisorError>>>,
}

/// How one run of Node-RED ended.
enum RunEnd {
    Cancelled,
    Restart(oneshot::Sender<Result<u32, SupervisorError>>),
    Exited(std::io::Result<ExitStatus>),
    Hung(&'static str),
}

impl Supervisor {
    /// `first_attempt` fires once Node-RED has been spawned, or its install or start has first
    /// been tried: the point after which the agent reports READY.
    pub fn new(
        settings: Arc<NodeRedSettings>,
        dir: StateDir,
        upstream_tokens: UpstreamTokens,
        credential_secret: String,
        audit: Auditor,
        first_attempt: oneshot::Sender<()>,
        logs: LogBuffer,
    ) -> (Supervisor, SupervisorHandle) {
        let (status_tx, status_rx) = watch::channel(NodeRedStatus::initial());
        let (upstream_tx, upstream_rx) = watch::channel(None);
        let (latency_tx, latency_rx) = watch::channel(None);
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let probe_timeout = settings.health_interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
        // Probes as the agent itself, with Node-RED's own notion of full rights.
        let probe = Probe::new(GATE_TOKEN_HEADER, upstream_tokens.token("redtether", Perm::Full), probe_timeout);
        let supervisor = Supervisor {
            settings,
            dir,
            upstream_tokens,
            credential_secret,
            audit,
            logs,
            status: status_tx,
            upstream: upstream_tx,
            probe_latency: latency_tx,
            commands: cmd_rx,
            commands_open: true,
            first_attempt: Some(first_attempt),
            run_id: crate::state_dir::random_secret(6),
            spawns: 0,
            probe,
            tasks: TaskTracker::new(),
            pending_restarts: Vec::new(),
        };
        (
            supervisor,
            SupervisorHandle { commands: cmd_tx, status: status_rx, upstream: upstream_rx, probe_latency: latency_rx },
        )
    }

    /// Supervises until `cancel` fires, then stops Node-RED and returns.
    pub async fn run(mut self, cancel: CancellationToken) {
        self.end_leftovers_of_previous_agent();
        let s = &self.settings;
        let mut policy = RestartPolicy::new(PolicyConfig {
            backoff: Backoff::new(s.restart_backoff_min, s.restart_backoff_max),
            reset_after: s.restart_reset_after,
            crash_loop_restarts: s.crash_loop_restarts,
            window: s.crash_loop_window,
        });
        let install_backoff = Backoff::new(s.restart_backoff_min, s.restart_backoff_max);
        let mut install_attempt = 0u32;

        loop {
            let red_js = match self.entry_point(&cancel).await {
                Ok(red_js) => red_js,
                Err(None) => break,
                Err(Some(e)) => {
                    let reason = error_chain(&e);
                    let delay = install_backoff.delay(install_attempt, jitter());
                    install_attempt = install_attempt.saturating_add(1);
                    tracing::error!(error = %reason, retry_in = %fmt(delay), "cannot install Node-RED");
                    self.set(NodeRedState::Backoff, None, None, Some(format!("{reason}; retrying in {}", fmt(delay))));
                    if !self.wait(delay, &cancel).await {
                        break;
                    }
                    continue;
                }
            };
            install_attempt = 0;

            let end = match self.start(red_js) {
                Ok((process, port, instance)) => {
                    let mut process = process;
                    let started = AuditEvent::new(AuditKind::NodeRedStarted, Actor::System, "node-red")
                        .with("pid", process.pid())
                        .with("port", port)
                        .with("restarts", self.spawns.saturating_sub(1));
                    self.audit.record_or_log(started).await;
                    let end = self.watch_run(&mut process, port, &mut policy, &cancel).await;
                    self.upstream.send_replace(None);
                    let end = self.finish_run(&mut process, end).await;
                    let killed = leftovers::kill_instance(&instance);
                    if killed > 0 {
                        tracing::warn!(count = killed, "ended processes Node-RED left behind");
                    }
                    end
                }
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "cannot start Node-RED");
                    RunEnd::Hung("could not be started")
                }
            };

            match end {
                RunEnd::Cancelled => break,
                RunEnd::Restart(reply) => {
                    policy.on_planned_stop();
                    self.pending_restarts.push(reply);
                }
                RunEnd::Exited(_) | RunEnd::Hung(_) => {
                    let plan = policy.on_crash(Instant::now(), jitter());
                    let state = if plan.crash_loop { NodeRedState::CrashLoop } else { NodeRedState::Backoff };
                    let last = self.status.borrow().last_exit.clone().unwrap_or_default();
                    if plan.crash_loop {
                        tracing::error!(restart_in = %fmt(plan.delay), recent_crashes = policy.recent_crashes(), "Node-RED is in a crash loop");
                        if self.status.borrow().state != NodeRedState::CrashLoop {
                            let event = AuditEvent::new(AuditKind::NodeRedCrashLoop, Actor::System, "node-red")
                                .with("recent_crashes", policy.recent_crashes())
                                .with("retry_every_seconds", plan.delay.as_secs());
                            self.audit.record_or_log(event).await;
                        }
                    } else {
                        tracing::warn!(restart_in = %fmt(plan.delay), "Node-RED {last}; restarting");
                    }
                    self.set(state, None, None, Some(format!("{last}; restarting in {}", fmt(plan.delay))));
                    if !self.wait(plan.delay, &cancel).await {
                        break;
                    }
                }
            }
        }
        self.upstream.send_replace(None);
        self.set(NodeRedState::Stopped, None, None, None);
        self.fire_first_attempt();
        for reply in self.pending_restarts.drain(..) {
            let _ = reply.send(Err(SupervisorError::Gone));
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Supervisor {
    /// Ends processes of a Node-RED that an earlier agent started and did not live to stop.
    fn end_leftovers_of_previous_agent(&self) {
        let path = self.dir.node_red_instance_file();
        if let Ok(instance) = std::fs::read_to_string(&path) {
            let killed = leftovers::kill_instance(instance.trim());
            if killed > 0 {
                tracing::warn!(count = killed, "ended processes left behind by an earlier run of the agent");
            }
        }
    }

    /// The installed `red.js` (managed mode, installing it first when missing) or `None` when a
    /// command is configured. `Err(None)` means cancelled; `Err(Some(error))` a failed install.
    async fn entry_point(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<PathBuf>, Option<install::InstallError>> {
        let settings = Arc::clone(&self.settings);
        let NodeRedLaunch::Managed { node, npm, package } = &settings.launch else {
            return Ok(None);
        };
        let runtime = self.dir.runtime_dir();
        if let Some(red_js) = install::installed_red_js(&runtime, package) {
            return Ok(Some(red_js));
        }
        self.set(NodeRedState::Starting, None, None, Some(format!("installing {package} with npm")));
        self.fire_first_attempt();
        let installing = install::install(node, npm, package, &runtime);
        tokio::pin!(installing);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(None),
                result = &mut installing => return result.map(Some).map_err(Some),
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    Some(Command::Restart { reply }) => {
                        let _ = reply.send(Err(SupervisorError::Busy(format!("{package} is being installed"))));
                    }
                    None => self.commands_open = false,
                },
            }
        }
    }

    /// Writes the settings file and spawns one run. Returns the process, its port and the
    /// instance marker of the run.
    fn start(&mut self, red_js: Option<PathBuf>) -> Result<(NodeRedProcess, u16, String), StartError> {
        let port = pick_port(self.settings.port).map_err(StartError::NoPort)?;
        let settings_file = self.dir.node_red_settings();
        let (deployed_env, overrides) = deployed_overrides(&self.dir.node_red_user_dir());
        let rendered = SettingsJs {
            port,
            credential_secret: &self.credential_secret,
            upstream_key_hex: &self.upstream_tokens.key_hex(),
            control_socket: &self.dir.control_socket(),
            overrides: &overrides,
        }
        .render();
        write_private(&settings_file, rendered.as_bytes()).map_err(StartError::Write)?;

        let instance = format!("{}-{}", self.run_id, self.spawns);
        let inherited = std::env::var("NODE_OPTIONS").ok();
        let mut spec = launch_spec(
            &self.settings,
            red_js.as_deref(),
            &settings_file,
            &self.dir.node_red_user_dir(),
            &instance,
            inherited.as_deref(),
        );
        // First, so the agent's own configuration and the run marker win over a deployment.
        spec.env.splice(0..0, deployed_env);
        // Recorded before the spawn, so an agent killed right after it still finds the run.
        write_private(&self.dir.node_red_instance_file(), instance.as_bytes()).map_err(StartError::Write)?;
        let (process, pipes) = NodeRedProcess::spawn(&spec)
            .map_err(|source| StartError::Spawn { program: spec.program.clone(), source })?;
        let pid = process.pid();
        if let Some(stdout) = pipes.stdout {
            self.tasks.spawn(logs::forward(stdout, LogStream::Stdout, pid, self.logs.clone()));
        }
        if let Some(stderr) = pipes.stderr {
            self.tasks.spawn(logs::forward(stderr, LogStream::Stderr, pid, self.logs.clone()));
        }
        self.spawns += 1;
        tracing::info!(pid, port, program = %spec.program, "Node-RED started");
        self.upstream.send_replace(Some(SocketAddr::from(([127, 0, 0, 1], port))));
        self.set(NodeRedState::Starting, Some(pid), Some(port), None);
        self.fire_first_attempt();
        for reply in self.pending_restarts.drain(..) {
            let _ = reply.send(Ok(pid));
        }
        Ok((process, port, instance))
    }

    /// Watches one run until it exits, hangs, or is asked to stop.
    async fn watch_run(
        &mut self,
        process: &mut NodeRedProcess,
        port: u16,
        policy: &mut RestartPolicy,
        cancel: &CancellationToken,
    ) -> RunEnd {
        let limits = HealthLimits {
            startup_timeout: self.settings.startup_timeout,
            health_timeout: self.settings.health_timeout,
        };
        let probe = self.probe.clone();
        let started = Instant::now();
        let mut last_ok: Option<Instant> = None;
        let mut warned = false;
        loop {
            let interval = if last_ok.is_some() { self.settings.health_interval } else { STARTUP_PROBE_INTERVAL };
            let next_probe = async {
                tokio::time::sleep(interval).await;
                let sent = Instant::now();
                probe.check(port).await.map(|()| sent.elapsed())
            };
            tokio::select! {
                _ = cancel.cancelled() => return RunEnd::Cancelled,
                status = process.wait() => return RunEnd::Exited(status),
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    Some(Command::Restart { reply }) => return RunEnd::Restart(reply),
                    None => self.commands_open = false,
                },
                result = next_probe => {
                    let now = Instant::now();
                    if let Ok(took) = &result {
                        last_ok = Some(now);
                        self.probe_latency.send_replace(Some(*took));
                    }
                    match verdict(limits, started, last_ok, result.is_ok(), now) {
                        Verdict::Healthy => {
                            policy.on_healthy(now);
                            warned = false;
                            if self.status.borrow().state != NodeRedState::Running {
                                tracing::info!(pid = process.pid(), seconds = started.elapsed().as_secs_f32(), "Node-RED is up");
                                self.set(NodeRedState::Running, Some(process.pid()), Some(port), None);
                            }
                        }
                        Verdict::Starting => {}
                        Verdict::Degraded => {
                            if !warned {
                                let error = result.as_ref().err().map(|e| error_chain(e)).unwrap_or_default();
                                tracing::warn!(pid = process.pid(), %error, "Node-RED is not answering its health check");
                                warned = true;
                            }
                        }
                        Verdict::Hung if last_ok.is_none() => return RunEnd::Hung("did not answer within node_red.startup_timeout"),
                        Verdict::Hung => return RunEnd::Hung("stopped answering for node_red.health_timeout"),
                    }
                }
            }
        }
    }

    /// Stops the process if it still runs and records how the run ended.
    async fn finish_run(&mut self, process: &mut NodeRedProcess, end: RunEnd) -> RunEnd {
        self.probe_latency.send_replace(None);
        let stop_timeout = self.settings.stop_timeout;
        let pid = process.pid();
        let (last_exit, status, reason) = match &end {
            RunEnd::Exited(Ok(status)) => (describe_exit(*status), Some(*status), "exited"),
            RunEnd::Exited(Err(e)) => (format!("could not be waited for: {e}"), None, "exited"),
            RunEnd::Hung(why) => {
                tracing::warn!(pid, "Node-RED {why}; stopping it");
                let status = process.stop(stop_timeout).await.ok();
                (format!("was hung ({why}) and was stopped"), status, "hung")
            }
            RunEnd::Cancelled | RunEnd::Restart(_) => {
                tracing::info!(pid, "stopping Node-RED");
                self.set(NodeRedState::Starting, Some(pid), None, Some("stopping".into()));
                match process.stop(stop_timeout).await {
                    Ok(status) => {
                        (format!("was stopped by the agent ({})", describe_exit(status)), Some(status), "stopped")
                    }
                    Err(e) => (format!("was stopped by the agent ({e})"), None, "stopped"),
                }
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let exited = AuditEvent::new(AuditKind::NodeRedExited, Actor::System, "node-red")
            .with("pid", pid)
            .with("reason", reason)
            .with("code", status.and_then(|s| s.code()))
            .with("signal", status.and_then(|s| s.signal()))
            .with("description", last_exit.as_str());
        self.audit.record_or_log(exited).await;
        tracing::info!(pid, "Node-RED {last_exit}");
        // The run is over: the state leaves "running" in the same update that clears the pid
        // (the status never says running with no pid while the restart is planned), then the
        // exit is noted.
        self.set(state_after(&end), None, None, None);
        self.status.send_modify(|s| s.last_exit = Some(last_exit));
        end
    }

    /// Sleeps `delay` unless cancelled (false) or a restart is asked for (true, at once).
    async fn wait(&mut self, delay: Duration, cancel: &CancellationToken) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = &mut sleep => return true,
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    Some(Command::Restart { reply }) => {
                        self.pending_restarts.push(reply);
                        return true;
                    }
                    None => self.commands_open = false,
                },
            }
        }
    }

    fn set(&self, state: NodeRedState, pid: Option<u32>, port: Option<u16>, detail: Option<String>) {
        let restarts = self.spawns.saturating_sub(1);
        self.status.send_if_modified(|s| {
            let next = NodeRedStatus {
                state,
                pid,
                restarts,
                since: if s.state == state { s.since } else { SystemTime::now() },
                port,
                detail,
                last_exit: s.last_exit.clone(),
            };
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    fn fire_first_attempt(&mut self) {
        if let Some(tx) = self.first_attempt.take() {
            let _ = tx.send(());
        }
    }
}

fn pick_port(configured: u16) -> std::io::Result<u16> {
    if configured != 0 {
        return Ok(configured);
    }
    let probe = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(probe.local_addr()?.port())
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("unknown");
            format!("was killed by signal {sig} ({name})")
        }
        _ => format!("ended ({status})"),
    }
}

fn fmt(d: Duration) -> String {
    // Whole milliseconds: "3s 214ms", not nanoseconds.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// The environment and settings overrides of the deployed snapshot in `user_dir`, if any.
fn deployed_overrides(
    user_dir: &std::path::Path,
) -> (Vec<(String, String)>, serde_json::Map<String, serde_json::Value>) {
    match DeployedSnapshot::read(user_dir) {
        Ok(Some(snapshot)) => (snapshot.env.into_iter().collect(), snapshot.settings),
        Ok(None) => Default::default(),
        Err(e) => {
            tracing::warn!(error = %e, "the deployed snapshot's overrides are unreadable; starting without them");
            Default::default()
        }
    }
}

/// What the status says between the end of a run and the supervisor's next step: a crash waits
/// for its backoff (the plan may still turn it into a crash loop), a planned restart starts
/// again, a cancel stops.
fn state_after(end: &RunEnd) -> NodeRedState {
    match end {
        RunEnd::Exited(_) | RunEnd::Hung(_) => NodeRedState::Backoff,
        RunEnd::Restart(_) => NodeRedState::Starting,
        RunEnd::Cancelled => NodeRedState::Stopped,
    }
}
