//! `redtether status`: the running daemon's status, as JSON or a short summary.

use super::{ask, client_error, exit};
use crate::audit::{JournalState, JournalStatus, OnFailure};
use crate::config::Settings;
use crate::control::{ControlRequest, PolicyInfo, PolicySource, StatusReply};
use crate::tunnel::TunnelState;
use redtether_proto::time::format_seconds;
use std::process::ExitCode;

pub fn show(settings: &Settings, json: bool) -> ExitCode {
    let status = match ask::<StatusReply>(settings, &ControlRequest::Status) {
        Ok(status) => status,
        Err(e) => return client_error(&e),
    };
    if json {
        match serde_json::to_string(&status) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("redtether: cannot print the status as JSON: {e}");
                return exit::code(exit::FAILURE);
            }
        }
    } else {
        print!("{}", human(&status));
    }
    exit::code(exit::OK)
}

fn human(s: &StatusReply) -> String {
    let nr = &s.node_red;
    let mut out = format!(
        "redtether {} (pid {}), running since {}\n  gate      listening on {}\n  node-red  {}",
        s.version,
        s.pid,
        format_seconds(s.started),
        s.gate.listen,
        nr.state.as_str().replace('_', " "),
    );
    if let Some(pid) = nr.pid {
        out.push_str(&format!(" (pid {pid})"));
    }
    out.push_str(&format!(" since {}, {} restarts\n", format_seconds(nr.since), nr.restarts));
    if let Some(detail) = &nr.detail {
        out.push_str(&format!("            {detail}\n"));
    }
    if let Some(last) = &nr.last_exit {
        out.push_str(&format!("            last run: {last}\n"));
    }
    if let Some(metrics) = s.metrics {
        out.push_str(&format!("  metrics   http://{metrics}/metrics\n"));
    }
    out.push_str(&policy_line(&s.policy, s.gate.protection));
    let t = &s.tunnel;
    out.push_str(&format!("  tunnel    {}", tunnel_state(t.state)));
    match (&t.hub, &t.device_id) {
        (Some(hub), Some(device)) => out.push_str(&format!(" (hub {hub}, device {device})")),
        (None, Some(device)) => out.push_str(&format!(" (device {device})")),
        _ => {}
    }
    out.push('\n');
    // The list only when there is a choice; the hub in use is on the line above.
    if t.hubs.len() > 1 {
        out.push_str(&format!("            hubs {}\n", t.hubs.join(", ")));
    }
    if let Some(e) = &t.last_error {
        out.push_str(&format!("            {e}\n"));
    }
    if let Some(audit) = &s.audit {
        out.push_str(&format!("  audit     {} events, {} not yet at the hub\n", audit.last_seq, audit.backlog));
        out.push_str(&journal_health(audit));
    }
    out
}

/// Which security settings are in force: the file's or a platform policy's (with its number).
fn policy_line(p: &PolicyInfo, protection: bool) -> String {
    let protection = if protection { ", protection mode on" } else { "" };
    let mut out = match (p.source, p.number) {
        (PolicySource::Platform, Some(number)) => format!(
            "  security  platform policy {number} (applied {}){protection}\n",
            p.applied_at.as_deref().unwrap_or("?")
        ),
        _ if !p.managed => {
            format!("  security  agent.toml (locally managed: platform policies are refused){protection}\n")
        }
        _ => format!("  security  agent.toml (no platform policy yet){protection}\n"),
    };
    if let Some(refused) = &p.last_refused {
        out.push_str(&format!("            refused policy {} at {}: {}\n", refused.number, refused.at, refused.reason));
    }
    out
}

/// Nothing while the journal persists; while it fails, since when, why and what that costs.
fn journal_health(audit: &JournalStatus) -> String {
    if audit.state == JournalState::Ok {
        return String::new();
    }
    let effect = match audit.on_failure {
        OnFailure::Deny => "admin writes, logins, token changes and deployments are refused (on_failure = deny)",
        OnFailure::Allow => "actions go ahead unrecorded (on_failure = allow)",
    };
    format!(
        "            FAILING since {}: {}\n            {effect}; {} failed logins and {} refused actions so far (audit.gap will count them)\n",
        audit.failing_since.as_deref().unwrap_or("?"),
        audit.last_error.as_deref().unwrap_or("?"),
        audit.failed_logins,
        audit.refused,
    )
}

fn tunnel_state(state: TunnelState) -> &'static str {
    match state {
        TunnelState::Offline => "offline",
        TunnelState::Connecting => "connecting",
        TunnelState::Online => "online",
        TunnelState::AuthFailed => "auth failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::GateStatus;
    use crate::tunnel::TunnelStatus;
    use redtether_proto::wire::{NodeRedState, NodeRedStatus};
    use std::time::SystemTime;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn summary_shows_state_pid_and_restarts() {
        let s = StatusReply {
            audit: None,
            tunnel: TunnelStatus::initial(),
            version: "0.1.0".into(),
            pid: 10,
            started: at("2026-11-27T07:00:00Z"),
            config: "built-in defaults".into(),
            state_dir: "/var/lib/redtether".into(),
            node_red: NodeRedStatus {
                state: NodeRedState::CrashLoop,
                pid: None,
                restarts: 6,
                since: at("2026-11-27T07:05:00Z"),
                port: None,
                detail: Some("exited with code 1; restarting in 1m".into()),
                last_exit: Some("exited with code 1".into()),
            },
            deployment: None,
            gate: GateStatus { listen: "0.0.0.0:1880".parse().unwrap(), protection: false, tls: false },
            policy: PolicyInfo {
                managed: true,
                source: PolicySource::Platform,
                number: Some(7),
                hash: Some("ab".into()),
                applied_at: Some("2026-11-27T07:01:00Z".into()),
                last_refused: None,
            },
            metrics: Some("127.0.0.1:9464".parse().unwrap()),
        };
        let text = human(&s);
        assert!(text.contains("metrics   http://127.0.0.1:9464/metrics"), "{text}");
        assert!(text.contains("node-red  crash loop since 2026-11-27T07:05:00Z, 6 restarts"), "{text}");
        assert!(text.contains("listening on 0.0.0.0:1880"), "{text}");
        assert!(text.contains("restarting in 1m"), "{text}");
        assert!(text.contains("security  platform policy 7 (applied 2026-11-27T07:01:00Z)"), "{text}");
    }

    #[test]
    fn a_failing_journal_shows_since_when_why_and_what_is_refused() {
        let mut audit = JournalStatus {
            last_seq: 40,
            acked: 0,
            backlog: 40,
            bytes: 9000,
            in_memory: false,
            state: JournalState::Ok,
            failing_since: None,
            last_error: None,
            failed_logins: 0,
            refused: 0,
            on_failure: OnFailure::Deny,
        };
        assert_eq!(journal_health(&audit), "", "a healthy journal needs no line");
        audit.state = JournalState::Failing;
        audit.failing_since = Some("2026-11-27T07:05:00Z".into());
        audit.last_error = Some("audit store: No space left on device (os error 28)".into());
        audit.failed_logins = 3;
        audit.refused = 2;
        let text = journal_health(&audit);
        assert!(text.contains("FAILING since 2026-11-27T07:05:00Z: audit store: No space left"), "{text}");
        assert!(
            text.contains("refused (on_failure = deny)") && text.contains("3 failed logins and 2 refused"),
            "{text}"
        );
    }
}
