//! Validated, immutable settings: what the rest of the agent reads.

use super::gate::GateSettings;
use super::proxy::{ProxyChoice, ProxyUrl};
use super::raw::RawConfig;
use super::{ConfigError, ConfigSource, ProcessContext};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub source: ConfigSource,
    pub audit: AuditSettings,
    pub tunnel: TunnelSettings,
    pub state_dir: PathBuf,
    pub log_level: String,
    pub node_red: NodeRedSettings,
    pub gate: GateSettings,
    pub policy: PolicySettings,
    pub metrics: MetricsSettings,
    pub logs: LogsSettings,
}

/// `[metrics]`: where Prometheus scrapes the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    /// `listen`: the address of `GET /metrics`; `None` (the default) serves no metrics.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[logs]`: the buffer of Node-RED's output the platform can fetch (see `crate::logbuf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsSettings {
    /// How many of Node-RED's last lines are kept (each at most 16 KiB).
    pub buffer_lines: usize,
}

/// `logs.buffer_lines` above this is refused: at 16 KiB a line, 100 000 lines could hold
/// 1.6 GB, more than a gateway has.
pub const MAX_BUFFER_LINES: u64 = 100_000;

/// `[policy]`: whether the platform governs the security settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySettings {
    /// `true` (the default): once the platform sent a policy, it replaces the `[gate]` security
    /// settings of this file. `false`: this file's settings always apply, and platform policies
    /// are refused (`locally_managed`).
    pub managed: bool,
}

/// How Node-RED is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRedLaunch {
    /// Install `package` with npm into the state directory when missing, run it with `node`.
    Managed { node: String, npm: String, package: String },
    /// Run this command (program and arguments) as Node-RED; nothing is installed.
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TunnelSettings {
    /// How often the tunnel proves it is alive when idle. Shorter finds a restarted hub sooner
    /// (it answers the first packet with a stateless reset); longer spends less on metered
    /// links (each keep-alive and its acknowledgement are about 100 bytes).
    pub keepalive: Duration,
    /// `transport`: how the tunnel travels.
    pub transport: TransportChoice,
    /// `quic_probe`: while `auto` fell back to TCP, how often QUIC is tried again.
    pub quic_probe: Duration,
    /// `tcp_port`: the hub's TLS-over-TCP port when it is not the port of the hub's address
    /// (the hub's `[tcp] listen` and `listen` usually share the number: UDP and TCP do not
    /// collide).
    pub tcp_port: Option<u16>,
    /// `proxy`: how the tunnel reaches the hub over TCP (see `tunnel::proxy`).
    pub proxy: ProxyChoice,
    /// `hubs`: where the hub is, replacing the list stored at enrollment when set (a fleet
    /// moves to new hub names by configuration, without re-enrolling). `None`: the enrollment's.
    pub hubs: Option<Vec<super::HubAddress>>,
}

/// `[tunnel] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// QUIC, and TLS over TCP when no QUIC handshake completes within 3 s (UDP blocked); back
    /// to QUIC once a probe gets through.
    Auto,
    Quic,
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// Bound on the journal's records; beyond it the oldest go (forwarded ones first).
    pub max_bytes: u64,
    /// What actions that must leave an audit event do while the journal cannot persist.
    pub on_failure: AuditFailurePolicy,
}

/// `audit.on_failure`. (The audit module has its own copy of these two values: configuration and
/// the journal use nothing of each other; the daemon hands one to the other.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailurePolicy {
    /// `"deny"`, the default: refused while their event cannot be made durable.
    Deny,
    /// `"allow"`: answered anyway; the journal only counts them.
    Allow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRedSettings {
    pub launch: NodeRedLaunch,
    /// Heap limit in MiB for Node.js; 0 leaves node's default.
    pub max_old_space_mb: u32,
    /// Loopback port for Node-RED; 0 picks a free one at every start.
    pub port: u16,
    pub env: BTreeMap<String, String>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub startup_timeout: Duration,
    pub stop_timeout: Duration,
    pub restart_backoff_min: Duration,
    pub restart_backoff_max: Duration,
    pub restart_reset_after: Duration,
    pub crash_loop_restarts: u32,
    pub crash_loop_window: Duration,
}

pub(super) const DEFAULT_PACKAGE: &str = "node-red@4.1";
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

pub(super) fn validate(raw: RawConfig, source: ConfigSource, ctx: &ProcessContext) -> Result<Settings, ConfigError> {
    let src = source.describe();
    let invalid = |key: &str, msg: String| ConfigError::invalid(&src, key, msg);

    let state_dir = match raw.state_dir {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(invalid("state_dir", "must not be empty".into()));
        }
        // A relative state_dir is taken relative to the file that names it, not to whatever
        // directory the daemon happens to start in.
        Some(p) if p.is_relative() => source.base_dir(ctx).join(p),
        Some(p) => p,
        None => ctx.default_state_dir("redtether"),
    };

    let log_level = raw.log_level.unwrap_or_else(|| "info".into()).to_ascii_lowercase();
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        return Err(invalid("log_level", format!("{log_level:?} is not one of {}", LOG_LEVELS.join(", "))));
    }

    let n = raw.node_red;
    let launch = match n.command {
        Some(cmd) if !cmd.is_empty() => {
            if cmd[0].trim().is_empty() {
                return Err(invalid("node_red.command", "the first element (the program) must not be empty".into()));
            }
            NodeRedLaunch::Command(cmd)
        }
        _ => {
            let node = non_empty(n.node, "node", "node_red.node", &invalid)?;
            let npm = non_empty(n.npm, "npm", "node_red.npm", &invalid)?;
            let package = non_empty(n.package, DEFAULT_PACKAGE, "node_red.package", &invalid)?;
            NodeRedLaunch::Managed { node, npm, package }
        }
    };

    let max_old_space_mb = n.max_old_space_mb.unwrap_or(256);
    if max_old_space_mb != 0 && max_old_space_mb < 32 {
        return Err(invalid(
            "node_red.max_old_space_mb",
            format!("{max_old_space_mb} MiB is too small for Node-RED (use 0 for node's default, or at least 32)"),
        ));
    }

    let env = n.env.unwrap_or_default();
    for name in env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(invalid("node_red.env", format!("{name:?} is not a valid environment variable name")));
        }
    }

    let positive = |value: Option<Duration>, default: Duration, key: &str| -> Result<Duration, ConfigError> {
        let d = value.unwrap_or(default);
        if d.is_zero() { Err(invalid(key, "must be greater than zero".into())) } else { Ok(d) }
    };
    let restart_backoff_min = positive(n.restart_backoff_min, Duration::from_secs(1), "node_red.restart_backoff_min")?;
    let restart_backoff_max = positive(n.restart_backoff_max, Duration::from_secs(60), "node_red.restart_backoff_max")?;
    if restart_backoff_max < restart_backoff_min {
        return Err(invalid(
            "node_red.restart_backoff_max",
            format!(
                "{} is less than node_red.restart_backoff_min ({})",
                humantime::format_duration(restart_backoff_max),
                humantime::format_duration(restart_backoff_min)
            ),
        ));
    }
    let crash_loop_restarts = n.crash_loop_restarts.unwrap_or(5);
    if crash_loop_restarts == 0 {
        return Err(invalid("node_red.crash_loop_restarts", "must be at least 1".into()));
    }

    let node_red = NodeRedSettings {
        launch,
        max_old_space_mb,
        port: n.port.unwrap_or(0),
        env,
        health_interval: positive(n.health_interval, Duration::from_secs(5), "node_red.health_interval")?,
        health_timeout: positive(n.health_timeout, Duration::from_secs(30), "node_red.health_timeout")?,
        startup_timeout: positive(n.startup_timeout, Duration::from_secs(120), "node_red.startup_timeout")?,
        stop_timeout: positive(n.stop_timeout, Duration::from_secs(10), "node_red.stop_timeout")?,
        restart_backoff_min,
        restart_backoff_max,
        restart_reset_after: positive(n.restart_reset_after, Duration::from_secs(600), "node_red.restart_reset_after")?,
        crash_loop_restarts,
        crash_loop_window: positive(n.crash_loop_window, Duration::from_secs(300), "node_red.crash_loop_window")?,
    };

    let base_dir = source.base_dir(ctx);
    let gate = super::gate::validate(raw.gate, &base_dir, &invalid)?;

    let max_bytes = raw.audit.max_bytes.unwrap_or(64 * 1024 * 1024);
    if max_bytes < 64 * 1024 {
        return Err(invalid(
            "audit.max_bytes",
            format!("{max_bytes} bytes is too small for a journal (at least 65536)"),
        ));
    }

    let on_failure = match raw.audit.on_failure.as_deref() {
        None | Some("deny") => AuditFailurePolicy::Deny,
        Some("allow") => AuditFailurePolicy::Allow,
        Some(other) => return Err(invalid("audit.on_failure", format!("{other:?} is not one of deny, allow"))),
    };

    let keepalive = raw.tunnel.keepalive.unwrap_or(redtether_pki::quic::DEFAULT_KEEPALIVE);
    if keepalive < Duration::from_millis(200) || keepalive > Duration::from_secs(25) {
        return Err(invalid(
            "tunnel.keepalive",
            "must be between 200ms and 25s (the tunnel's idle timeout is 30s)".into(),
        ));
    }
    let transport = match raw.tunnel.transport.as_deref() {
        None | Some("auto") => TransportChoice::Auto,
        Some("quic") => TransportChoice::Quic,
        Some("tcp") => TransportChoice::Tcp,
        Some(other) => return Err(invalid("tunnel.transport", format!("{other:?} is not one of auto, quic, tcp"))),
    };
    let tcp_port = match raw.tunnel.tcp_port {
        Some(0) => return Err(invalid("tunnel.tcp_port", "must be a port (1-65535)".into())),
        other => other,
    };
    let quic_probe = raw.tunnel.quic_probe.unwrap_or(Duration::from_secs(300));
    if quic_probe < Duration::from_secs(1) {
        return Err(invalid("tunnel.quic_probe", "must be at least 1s".into()));
    }
    let proxy = match raw.tunnel.proxy.as_deref().map(str::trim) {
        None => ProxyChoice::Environment,
        Some("") => ProxyChoice::Direct,
        Some(text) => ProxyChoice::Url(ProxyUrl::parse(text).map_err(|e| invalid("tunnel.proxy", e.to_string()))?),
    };
    let hubs = match raw.tunnel.hubs {
        None => None,
        Some(list) => Some(super::hub_address::parse_list(&list).map_err(|e| invalid("tunnel.hubs", e.to_string()))?),
    };
    let metrics = MetricsSettings {
        listen: match raw.metrics.listen {
            None => None,
            Some(text) => {
                let addr: std::net::SocketAddr = text
                    .parse()
                    .map_err(|e| invalid("metrics.listen", format!("{text:?} is not an address:port ({e})")))?;
                // The gate's port serves Node-RED to whoever passes the gate; metrics are for a
                // scraper, on a port of their own.
                if addr.port() != 0 && addr.port() == gate.listen.port() {
                    return Err(invalid(
                        "metrics.listen",
                        format!("{addr} uses the gate's port ({}): give metrics a port of their own", gate.listen),
                    ));
                }
                Some(addr)
            }
        },
    };
    let buffer_lines = raw.logs.buffer_lines.unwrap_or(2000);
    if buffer_lines == 0 || buffer_lines > MAX_BUFFER_LINES {
        return Err(invalid("logs.buffer_lines", format!("{buffer_lines} is not between 1 and {MAX_BUFFER_LINES}")));
    }
    Ok(Settings {
        source,
        metrics,
        audit: AuditSettings { max_bytes, on_failure },
        tunnel: TunnelSettings { keepalive, transport, quic_probe, tcp_port, proxy, hubs },
        state_dir,
        log_level,
        node_red,
        gate,
        policy: PolicySettings { managed: raw.policy.managed.unwrap_or(true) },
        logs: LogsSettings { buffer_lines: buffer_lines as usize },
    })
}

fn non_empty(
    value: Option<String>,
    default: &str,
    key: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<String, ConfigError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(invalid(key, "must not be empty".into())),
        Some(v) => Ok(v),
        None => Ok(default.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::from_toml;
    use super::*;
    use std::path::Path;

    fn ctx() -> ProcessContext {
        ProcessContext { is_root: false, state_directory: None, cwd: PathBuf::from("/home/pi") }
    }

    fn load(text: &str) -> Result<Settings, ConfigError> {
        from_toml(text, Path::new("/etc/redtether/agent.toml"), &ctx())
    }

    fn key_of(text: &str) -> String {
        load(text).unwrap_err().key().expect("error names a key").to_string()
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = load("").unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/home/pi/redtether-state"));
        assert_eq!(s.gate.listen, "0.0.0.0:1880".parse().unwrap());
        assert_eq!(
            s.node_red.launch,
            NodeRedLaunch::Managed { node: "node".into(), npm: "npm".into(), package: "node-red@4.1".into() }
        );
        assert_eq!(s.node_red.max_old_space_mb, 256);
        assert_eq!(s.node_red.restart_backoff_min, Duration::from_secs(1));
        assert_eq!(s.node_red.restart_backoff_max, Duration::from_secs(60));
        assert_eq!(s.node_red.restart_reset_after, Duration::from_secs(600));
        assert_eq!(s.source, ConfigSource::File(PathBuf::from("/etc/redtether/agent.toml")));
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given_and_never_on_the_gates_port() {
        assert_eq!(load("").unwrap().metrics.listen, None);
        let on = load("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(on.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(key_of("[metrics]\nlisten = \"nine\"\n"), "metrics.listen");
        assert_eq!(
            key_of("[gate]\nlisten = \"0.0.0.0:1880\"\n[metrics]\nlisten = \"127.0.0.1:1880\"\n"),
            "metrics.listen"
        );
        assert_eq!(key_of("[metrics]\nlisten = \"127.0.0.1:9464\"\nport = 1\n"), "metrics.port");
    }

    #[test]
    fn command_replaces_managed_install() {
        let s = load("[node_red]\ncommand = [\"/usr/bin/node-red\", \"--safe\"]\n").unwrap();
        assert_eq!(s.node_red.launch, NodeRedLaunch::Command(vec!["/usr/bin/node-red".into(), "--safe".into()]));
    }

    #[test]
    fn empty_command_means_managed() {
        let s = load("[node_red]\ncommand = []\n").unwrap();
        assert!(matches!(s.node_red.launch, NodeRedLaunch::Managed { .. }));
    }

    #[test]
    fn relative_state_dir_is_relative_to_the_file() {
        let s = load("state_dir = \"state\"\n").unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/etc/redtether/state"));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(key_of("[gate]\nlisten = \"localhost\"\n"), "gate.listen");
        assert_eq!(key_of("[node_red]\nmax_old_space_mb = 8\n"), "node_red.max_old_space_mb");
        assert_eq!(key_of("[node_red]\ncommand = [\"\"]\n"), "node_red.command");
        assert_eq!(key_of("[node_red]\npackage = \" \"\n"), "node_red.package");
        assert_eq!(key_of("[node_red]\nstop_timeout = \"0s\"\n"), "node_red.stop_timeout");
        assert_eq!(key_of("[node_red]\ncrash_loop_restarts = 0\n"), "node_red.crash_loop_restarts");
        assert_eq!(key_of("[node_red]\nenv = { \"A=B\" = \"x\" }\n"), "node_red.env");
        assert_eq!(key_of("log_level = \"loud\"\n"), "log_level");
        assert_eq!(key_of("state_dir = \"\"\n"), "state_dir");
    }

    #[test]
    fn backoff_max_below_min_is_refused() {
        let e = load("[node_red]\nrestart_backoff_min = \"10s\"\nrestart_backoff_max = \"5s\"\n").unwrap_err();
        assert_eq!(e.key(), Some("node_red.restart_backoff_max"));
        assert!(e.to_string().contains("/etc/redtether/agent.toml"), "{e}");
    }

    #[test]
    fn logs_buffer_lines_defaults_to_2000_and_must_be_in_range() {
        assert_eq!(load("").unwrap().logs.buffer_lines, 2000);
        assert_eq!(load("[logs]\nbuffer_lines = 50\n").unwrap().logs.buffer_lines, 50);
        for bad in ["0", "100001", "-1"] {
            let e = load(&format!("[logs]\nbuffer_lines = {bad}\n")).unwrap_err();
            assert_eq!(e.key(), Some("logs.buffer_lines"), "{bad}");
            assert!(e.to_string().contains("/etc/redtether/agent.toml"), "names the file: {e}");
        }
        assert_eq!(key_of("[logs]\nlines = 5\n"), "logs.lines");
    }

    #[test]
    fn audit_on_failure_is_deny_unless_allow_is_written() {
        assert_eq!(load("").unwrap().audit.on_failure, AuditFailurePolicy::Deny);
        assert_eq!(load("[audit]\non_failure = \"deny\"\n").unwrap().audit.on_failure, AuditFailurePolicy::Deny);
        assert_eq!(load("[audit]\non_failure = \"allow\"\n").unwrap().audit.on_failure, AuditFailurePolicy::Allow);
        let e = load("[audit]\non_failure = \"ignore\"\n").unwrap_err();
        assert_eq!(e.key(), Some("audit.on_failure"));
        assert!(e.to_string().contains("/etc/redtether/agent.toml") && e.to_string().contains("deny, allow"), "{e}");
    }

    #[test]
    fn the_platform_manages_security_unless_the_file_says_not() {
        assert!(load("").unwrap().policy.managed);
        assert!(!load("[policy]\nmanaged = false\n").unwrap().policy.managed);
        assert_eq!(key_of("[policy]\nmanaged = \"no\"\n"), "policy.managed");
        assert_eq!(key_of("[policy]\nmanged = true\n"), "policy.manged");
    }

    #[test]
    fn tunnel_proxy_is_the_environment_none_or_an_http_url() {
        assert_eq!(load("").unwrap().tunnel.proxy, ProxyChoice::Environment);
        assert_eq!(load("[tunnel]\nproxy = \"\"\n").unwrap().tunnel.proxy, ProxyChoice::Direct);
        let set = load("[tunnel]\nproxy = \"http://u:p%40ss@proxy:3128\"\n").unwrap().tunnel.proxy;
        let ProxyChoice::Url(url) = set else { panic!("{set:?}") };
        assert_eq!((url.host(), url.port()), ("proxy", 3128));
        assert_eq!(url.basic_credentials().as_deref(), Some("u:p@ss"));
        for bad in ["https://proxy:3128", "socks5://proxy:1080", "proxy:3128", "http://:3128"] {
            let e = load(&format!("[tunnel]\nproxy = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.key(), Some("tunnel.proxy"), "{bad}");
        }
        // The message says what is accepted, and a refused URL's password is not repeated.
        let e = load("[tunnel]\nproxy = \"socks5://u:hunter2@proxy:1080\"\n").unwrap_err().to_string();
        assert!(e.contains("http://") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tunnel_hubs_replace_the_enrollments_only_when_written_and_must_be_addresses() {
        assert_eq!(load("").unwrap().tunnel.hubs, None);
        let s = load("[tunnel]\nhubs = [\"hub-a:7443\", \"[::1]:7443\"]\n").unwrap();
        let hubs: Vec<String> = s.tunnel.hubs.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(hubs, ["hub-a:7443", "[::1]:7443"]);
        for bad in ["[]", "[\"hub-a\"]", "[\"::1:7443\"]", "[\"a:1\", \"a:1\"]", "[\"a:0\"]", "\"a:1\""] {
            let e = load(&format!("[tunnel]\nhubs = {bad}\n")).unwrap_err();
            assert_eq!(e.key(), Some("tunnel.hubs"), "{bad}: {e}");
            assert!(e.to_string().contains("/etc/redtether/agent.toml"), "names the file: {e}");
        }
    }

    #[test]
    fn zero_heap_limit_means_node_default() {
        assert_eq!(load("[node_red]\nmax_old_space_mb = 0\n").unwrap().node_red.max_old_space_mb, 0);
    }
}
