//! Node-RED's settings file, written by the agent before every start.
//!
//! Node-RED binds loopback only, serves its editor and admin API under [`ADMIN_ROOT`], and has
//! `adminAuth` on with one credential that only the agent (the gate) holds: a request that
//! reaches Node-RED without passing the gate meets a locked door.

use serde_json::json;

/// Where the editor, the admin API and `/comms` live.
pub const ADMIN_ROOT: &str = "/device-editor";
/// The header the gate uses to present its credential to Node-RED (lower case, as Node-RED
/// compares it). Any client-sent copy is removed by the gate.
pub const GATE_TOKEN_HEADER: &str = "x-redtether-gate-token";

/// Inputs of the settings file.
#[derive(Debug, Clone)]
pub struct SettingsJs<'a> {
    pub port: u16,
    pub credential_secret: &'a str,
    /// The token that grants full rights in Node-RED; the gate injects it upstream.
    pub gate_token: &'a str,
}

impl SettingsJs<'_> {
    /// Renders the file. Every value is embedded as a JSON literal, so no input can break out of
    /// its string.
    pub fn render(&self) -> String {
        let settings = json!({
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
        });
        let settings = serde_json::to_string_pretty(&settings).unwrap_or_default();
        let token = serde_json::to_string(self.gate_token).unwrap_or_default();
        let header = serde_json::to_string(GATE_TOKEN_HEADER).unwrap_or_default();
        format!(
            r#"// Written by redtether before every start of Node-RED: edits are overwritten.
// Node-RED listens on loopback only; users reach it through redtether's gate.
"use strict";
const crypto = require("crypto");
const gateToken = Buffer.from({token});

function isGateToken(candidate) {{
    const given = Buffer.from(String(candidate || ""));
    return given.length === gateToken.length && crypto.timingSafeEqual(given, gateToken);
}}

const settings = {settings};

settings.adminAuth = {{
    type: "credentials",
    // No interactive users: logins are handled by the gate, never by Node-RED itself.
    users: [],
    tokenHeader: {header},
    tokens: function (token) {{
        return Promise.resolve(isGateToken(token) ? {{ username: "redtether-gate", permissions: "*" }} : null);
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

    fn render(secret: &str, token: &str) -> String {
        SettingsJs {
            port: 41234,
            credential_secret: secret,
            gate_token: token,
        }
        .render()
    }

    #[test]
    fn binds_loopback_on_the_given_port_under_the_admin_root() {
        let s = render("c", "t");
        assert!(s.contains(r#""uiHost": "127.0.0.1""#));
        assert!(s.contains(r#""uiPort": 41234"#));
        assert!(s.contains(r#""httpAdminRoot": "/device-editor""#));
        assert!(s.contains(r#""httpNodeRoot": "/""#));
        assert!(s.contains(r#""disableEditor": false"#));
        assert!(s.contains(r#"tokenHeader: "x-redtether-gate-token""#));
    }

    #[test]
    fn values_cannot_break_out_of_their_strings() {
        let s = render("\"; process.exit(1); \"", "\\\"+x+\"");
        assert!(
            s.contains(r#""credentialSecret": "\"; process.exit(1); \"""#),
            "{s}"
        );
        assert!(s.contains(r#"Buffer.from("\\\"+x+\"")"#), "{s}");
    }
}
