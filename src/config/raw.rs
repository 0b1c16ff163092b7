//! The configuration file exactly as written: every key optional, unknown keys refused.

use super::ConfigError;
use redtether_host::config_file::{duration, parse_toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub node_red: RawNodeRed,
    #[serde(default)]
    pub gate: RawGate,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub tunnel: RawTunnel,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub logs: RawLogs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogs {
    pub buffer_lines: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub managed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTunnel {
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub keepalive: Option<Duration>,
    pub transport: Option<String>,
    pub tcp_port: Option<u16>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub quic_probe: Option<Duration>,
    pub proxy: Option<String>,
    pub hubs: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub max_bytes: Option<u64>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeRed {
    pub node: Option<String>,
    pub npm: Option<String>,
    pub package: Option<String>,
    pub command: Option<Vec<String>>,
    pub max_old_space_mb: Option<u32>,
    pub port: Option<u16>,
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub health_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub health_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub startup_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub stop_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub restart_backoff_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub restart_backoff_max: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub restart_reset_after: Option<Duration>,
    pub crash_loop_restarts: Option<u32>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub crash_loop_window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGate {
    pub listen: Option<String>,
    pub protection: Option<bool>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub session_ttl: Option<Duration>,
    pub cors_origins: Option<Vec<String>>,
    #[serde(default)]
    pub http_auth: RawHttpAuth,
    pub users: Option<Vec<RawUser>>,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpAuth {
    pub mode: Option<String>,
    pub user: Option<String>,
    pub password_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub name: String,
    pub password_hash: String,
    pub role: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub max_upstream_connections: Option<u32>,
    pub failed_auth_burst: Option<u32>,
    pub failed_auth_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed: Option<bool>,
}

/// Parses TOML text into the raw structs, turning serde's error into one that names the dotted
/// key and the line.
pub(super) fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    parse_toml(text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (String, Option<usize>, String) {
        match parse(text, Path::new("/etc/x.toml")).unwrap_err() {
            ConfigError::Invalid(k) => (k.key, k.line, k.message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let raw = parse("", Path::new("x.toml")).unwrap();
        assert!(raw.state_dir.is_none() && raw.node_red.command.is_none() && raw.gate.listen.is_none());
    }

    #[test]
    fn wrong_type_names_dotted_key_and_line() {
        let (key, line, message) = err("state_dir = \"/tmp\"\n[node_red]\nmax_old_space_mb = \"lots\"\n");
        assert_eq!(key, "node_red.max_old_space_mb");
        assert_eq!(line, Some(3));
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn unknown_key_is_named_with_its_table() {
        let (key, line, message) = err("[gate]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        assert_eq!(key, "gate.lisen");
        assert_eq!(line, Some(3));
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let (key, _, _) = err("colour = \"red\"\n");
        assert_eq!(key, "colour");
    }

    #[test]
    fn bad_duration_names_key() {
        let (key, _, message) = err("[node_red]\nstop_timeout = \"ten seconds\"\n");
        assert_eq!(key, "node_red.stop_timeout");
        assert!(message.contains("ten seconds"), "{message}");
    }

    #[test]
    fn syntax_error_has_line() {
        let (_, line, _) = err("[node_red]\nnode = \n");
        assert_eq!(line, Some(2));
    }
}
