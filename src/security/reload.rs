//! What a reload of `agent.toml` cannot change while the daemon runs. Pure.

use crate::config::Settings;

/// The keys that differ between `running` and `reloaded` but only take effect at the next start
/// (the socket is bound, the state directory locked, Node-RED and the journal started with
/// them). The security settings of `[gate]` and `[policy]` change live and are not listed.
pub fn needs_restart(running: &Settings, reloaded: &Settings) -> Vec<String> {
    let (a, b) = (&running.gate, &reloaded.gate);
    let (ra, rb) = (&a.rate_limit, &b.rate_limit);
    let checks: [(&str, bool); 12] = [
        ("state_dir", running.state_dir != reloaded.state_dir),
        ("log_level", running.log_level != reloaded.log_level),
        ("node_red", running.node_red != reloaded.node_red),
        ("gate.listen", a.listen != b.listen),
        ("gate.tls", a.tls != b.tls),
        ("gate.session_ttl", a.session_ttl != b.session_ttl),
        ("gate.rate_limit.max_upstream_connections", ra.max_upstream_connections != rb.max_upstream_connections),
        ("gate.rate_limit.failed_auth_burst", ra.failed_auth_burst != rb.failed_auth_burst),
        ("gate.rate_limit.failed_auth_per_second", ra.failed_auth_per_second != rb.failed_auth_per_second),
        ("audit.max_bytes", running.audit.max_bytes != reloaded.audit.max_bytes),
        ("audit.on_failure", running.audit.on_failure != reloaded.audit.on_failure),
        ("tunnel.keepalive", running.tunnel.keepalive != reloaded.tunnel.keepalive),
    ];
    checks.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| key.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProcessContext, from_toml};
    use std::path::{Path, PathBuf};

    fn load(text: &str) -> Settings {
        let ctx = ProcessContext { is_root: false, state_directory: None, cwd: PathBuf::from("/") };
        from_toml(text, Path::new("/etc/redtether/agent.toml"), &ctx).unwrap()
    }

    #[test]
    fn security_settings_change_live_and_the_rest_is_named() {
        let before = load("");
        let live = load(
            "[gate]\nprotection = true\ncors_origins = [\"https://a.example\"]\n[gate.http_auth]\nmode = \"none\"\n[gate.rate_limit]\nrequests_per_second = 3.0\n[policy]\nmanaged = false\n",
        );
        assert!(needs_restart(&before, &live).is_empty());
        let restart = load(
            "log_level = \"debug\"\n[gate]\nlisten = \"127.0.0.1:1990\"\n[node_red]\nport = 1999\n[tunnel]\nkeepalive = \"5s\"\n",
        );
        assert_eq!(needs_restart(&before, &restart), ["log_level", "node_red", "gate.listen", "tunnel.keepalive"]);
    }
}
