//! Node-RED's settings file, written by the agent before every start.
//!
//! Node-RED binds loopback only, serves its editor and admin API under [`ADMIN_ROOT`], and has
//! `adminAuth` on. It accepts two kinds of credential, both only from the agent:
//! - in the [`GATE_TOKEN_HEADER`] header, the gate's per-user token (see
//!   [`super::credential`]), verified offline with the key in this file;
//! - in the editor websocket's auth frame, an editor session, which it checks with the agent
//!   over the control socket (`check_session`).
//!
//! Anything else, including a local process talking to the loopback port, is refused.

use serde_json::json;
use std::path::Path;

/// Where the editor, the admin API and `/comms` live.
pub const ADMIN_ROOT: &str = "/device-editor";
/// The header the gate presents its credential in (lower case, as Node-RED compares it). Any
/// client-sent copy is removed by the gate.
pub const GATE_TOKEN_HEADER: &str = "x-redtether-gate-token";

/// Inputs of the settings file.
#[derive(Debug, Clone)]
pub struct SettingsJs<'a> {
    pub port: u16,
    pub credential_secret: &'a str,
    /// Hex key of the gate's per-user tokens.
    pub upstream_key_hex: &'a str,
    pub control_socket: &'a Path,
    /// Settings a deployment set; only the keys a deployment may set are used.
    pub overrides: &'a serde_json::Map<String, serde_json::Value>,
}

impl SettingsJs<'_> {
    /// Renders the file. Every value is embedded as a JSON literal, so no input can break out of
    /// its string.
    pub fn render(&self) -> String {
        let mut settings = json!({
            "uiHost": "127.0.0.1",
            "uiPort": self.port,
            "httpAdminRoot": ADMIN_ROOT,
            "httpNodeRoot": "/",
            "disableEditor": false,
            "flowFile": "flows.json",
            "flowFilePretty": true,
            "credentialSecret": self.credential_secret,
            "logging": { "console": { "level": "info", "metrics": false, "audit": false } },
            "editorTheme": { "projects": { "enabled": false }, "tours": false },
            "runtimeState": { "enabled": false },
            // A device in the field sends nothing home on its own, and its editor users are not
            // asked for consent or told about new Node-RED versions: the version is the
            // agent's (`node_red.package`) and changes by a deployment or a package update.
            "telemetry": { "enabled": false, "updateNotification": false },
        });
        for (key, value) in self.overrides {
            // Checked when the deployment was accepted; checked again because this file is
            // what Node-RED obeys.
            if redtether_proto::deployment::OVERRIDABLE_SETTINGS.contains(&key.as_str()) {
                settings[key] = value.clone();
            }
        }
        let settings = serde_json::to_string_pretty(&settings).unwrap_or_default();
        let key = serde_json::to_string(self.upstream_key_hex).unwrap_or_default();
        let header = serde_json::to_string(GATE_TOKEN_HEADER).unwrap_or_default();
        let socket = serde_json::to_string(&self.control_socket.display().to_string()).unwrap_or_default();
        format!(
            r#"// Written by redtether before every start of Node-RED: edits are overwritten.
// Node-RED listens on loopback only; users reach it through redtether's gate.
"use strict";
const crypto = require("crypto");
const net = require("net");
const gateKey = Buffer.from({key}, "hex");
const controlSocket = {socket};

// The gate's token: "v1.<full|read>.<hex user>.<hex HMAC-SHA256 of the rest>".
function gateUser(token) {{
    const parts = String(token || "").split(".");
    if (parts.length !== 4 || parts[0] !== "v1" || (parts[1] !== "full" && parts[1] !== "read")) {{
        return null;
    }}
    const expected = crypto.createHmac("sha256", gateKey).update(parts.slice(0, 3).join(".")).digest();
    const given = Buffer.from(parts[3], "hex");
    if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {{
        return null;
    }}
    return {{ username: Buffer.from(parts[2], "hex").toString("utf8"), permissions: parts[1] === "full" ? "*" : "read" }};
}}

// An editor session (the websocket's auth frame), checked with the agent.
function sessionUser(token) {{
    return new Promise((resolve) => {{
        let buffer = "";
        let done = false;
        const socket = net.createConnection(controlSocket);
        const finish = (user) => {{ if (!done) {{ done = true; socket.destroy(); resolve(user); }} }};
        socket.setTimeout(3000, () => finish(null));
        socket.on("error", () => finish(null));
        socket.on("connect", () => socket.write(JSON.stringify({{ cmd: "check_session", token: String(token) }}) + "\n"));
        socket.on("data", (chunk) => {{
            buffer += chunk;
            const end = buffer.indexOf("\n");
            if (end < 0) {{ return; }}
            try {{
                const reply = JSON.parse(buffer.slice(0, end));
                finish(reply.ok && reply.result ? {{ username: reply.result.username, permissions: reply.result.permissions }} : null);
            }} catch (e) {{
                finish(null);
            }}
        }});
    }});
}}

const settings = {settings};

settings.adminAuth = {{
    type: "credentials",
    // No interactive users: logins are handled by the gate, never by Node-RED itself.
    users: [],
    tokenHeader: {header},
    tokens: function (token) {{
        const user = gateUser(token);
        return user ? Promise.resolve(user) : sessionUser(token);
    }},
}};

module.exports = settings;
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(secret: &str) -> String {
        SettingsJs {
            port: 41234,
            credential_secret: secret,
            upstream_key_hex: "00ff",
            control_socket: Path::new("/s/control.sock"),
            overrides: &serde_json::Map::new(),
        }
        .render()
    }

    #[test]
    fn deployments_may_override_only_what_they_are_allowed_to() {
        let overrides = serde_json::Map::from_iter([
            ("functionTimeout".to_string(), json!(7)),
            ("uiHost".to_string(), json!("0.0.0.0")),
            ("adminAuth".to_string(), json!(null)),
        ]);
        let s = SettingsJs {
            port: 1,
            credential_secret: "c",
            upstream_key_hex: "00",
            control_socket: Path::new("/s"),
            overrides: &overrides,
        }
        .render();
        assert!(s.contains(r#""functionTimeout": 7"#));
        assert!(s.contains(r#""uiHost": "127.0.0.1""#) && !s.contains("0.0.0.0"));
        assert!(s.contains("settings.adminAuth = {"));
    }

    #[test]
    fn binds_loopback_on_the_given_port_under_the_admin_root() {
        let s = render("c");
        assert!(s.contains(r#""uiHost": "127.0.0.1""#));
        assert!(s.contains(r#""uiPort": 41234"#));
        assert!(s.contains(r#""httpAdminRoot": "/device-editor""#));
        assert!(s.contains(r#""httpNodeRoot": "/""#));
        assert!(s.contains(r#""disableEditor": false"#));
        assert!(s.contains(r#"tokenHeader: "x-redtether-gate-token""#));
        assert!(s.contains(r#"const controlSocket = "/s/control.sock";"#));
    }

    #[test]
    fn values_cannot_break_out_of_their_strings() {
        let s = render("\"; process.exit(1); \"");
        assert!(s.contains(r#""credentialSecret": "\"; process.exit(1); \"""#), "{s}");
    }
}
