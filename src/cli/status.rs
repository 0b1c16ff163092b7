//! `redtether status`: the running daemon's status, as JSON or a short summary.

use super::{ask, client_error, exit};
use crate::config::Settings;
use crate::control::ControlRequest;
use std::process::ExitCode;

pub fn show(settings: &Settings, json: bool) -> ExitCode {
    let status = match ask(settings, &ControlRequest::Status) {
        Ok(status) => status,
        Err(e) => return client_error(&e),
    };
    if json {
        println!("{status}");
    } else {
        print!("{}", human(&status));
    }
    exit::code(exit::OK)
}

fn human(s: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let nr = &s["node_red"];
    let mut out = format!(
        "redtether {} (pid {}), running since {}\n  gate      listening on {}\n  node-red  {}",
        text(&s["version"]),
        s["pid"],
        text(&s["started"]),
        text(&s["gate"]["listen"]),
        text(&nr["state"]).replace('_', " "),
    );
    if let Some(pid) = nr["pid"].as_u64() {
        out.push_str(&format!(" (pid {pid})"));
    }
    out.push_str(&format!(" since {}, {} restarts\n", text(&nr["since"]), nr["restarts"]));
    if let Some(detail) = nr["detail"].as_str() {
        out.push_str(&format!("            {detail}\n"));
    }
    if let Some(last) = nr["last_exit"].as_str() {
        out.push_str(&format!("            last run: {last}\n"));
    }
    let t = &s["tunnel"];
    if let Some(state) = t["state"].as_str() {
        out.push_str(&format!("  tunnel    {}", state.replace('_', " ")));
        if let (Some(hub), Some(device)) = (t["hub"].as_str(), t["device_id"].as_str()) {
            out.push_str(&format!(" (hub {hub}, device {device})"));
        }
        out.push('\n');
        if let Some(e) = t["last_error"].as_str() {
            out.push_str(&format!("            {e}\n"));
        }
    }
    if let Some(backlog) = s["audit"]["backlog"].as_u64() {
        out.push_str(&format!("  audit     {} events, {backlog} not yet at the hub\n", s["audit"]["last_seq"]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_state_pid_and_restarts() {
        let s = serde_json::json!({
            "version": "0.1.0", "pid": 10, "started": "2026-11-27T07:00:00Z",
            "gate": {"listen": "0.0.0.0:1880"},
            "node_red": {"state": "crash_loop", "pid": null, "restarts": 6, "since": "2026-11-27T07:05:00Z",
                          "detail": "exited with code 1; restarting in 1m", "last_exit": "exited with code 1"}
        });
        let text = human(&s);
        assert!(text.contains("node-red  crash loop since 2026-11-27T07:05:00Z, 6 restarts"), "{text}");
        assert!(text.contains("listening on 0.0.0.0:1880"), "{text}");
        assert!(text.contains("restarting in 1m"), "{text}");
    }
}
