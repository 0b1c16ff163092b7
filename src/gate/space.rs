//! Where a canonical request lands: node space, or which part of admin space. Works on the
//! classification key (lower case, no trailing slash), as Node-RED's router matches.

use super::canon::Canonical;
use crate::supervisor::ADMIN_ROOT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space<'a> {
    /// Under `/device-editor`; carries the rest of the key (`""` for the editor root).
    Admin(&'a str),
    /// HTTP-In routes, dashboards, static files.
    Node,
}

pub fn space_of(key: &str) -> Space<'_> {
    match key.strip_prefix(ADMIN_ROOT) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Space::Admin(rest),
        _ => Space::Node,
    }
}

/// The parts of admin space the gate treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    /// The editor page and its static files, icons, themes, locales: Node-RED serves these to
    /// anyone (the login dialog needs them), so the gate does too, for reads.
    Public,
    /// The editor's websocket (`/comms`).
    Comms,
    /// The gate's own editor login: `GET /auth/login`, `POST /auth/token`, `POST /auth/revoke`.
    Login,
    Token,
    Revoke,
    /// The gate's own token API (`/redtether/tokens[/NAME]`), for owners.
    TokenApi,
    /// Reads the editor needs to show flows; the only reads protection mode allows.
    EditorRead,
    /// Everything else: other reads (context, diagnostics, library...) and every write.
    Other,
}

pub fn admin_route(rest: &str) -> AdminRoute {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] | ["favicon.ico"] => AdminRoute::Public,
        ["red" | "vendor" | "types" | "resources" | "locales", _, ..] => AdminRoute::Public,
        ["theme", ..] => AdminRoute::Public,
        ["debug", "view", _, ..] => AdminRoute::Public,
        ["icons", _, _] | ["icons", _, _, _] => AdminRoute::Public,
        ["comms"] => AdminRoute::Comms,
        ["auth", "login"] => AdminRoute::Login,
        ["auth", "token"] => AdminRoute::Token,
        ["auth", "revoke"] => AdminRoute::Revoke,
        ["redtether", "tokens"] | ["redtether", "tokens", _] => AdminRoute::TokenApi,
        ["settings"] | ["settings", "user"] => AdminRoute::EditorRead,
        ["flows"] | ["flows", "state"] | ["flow", _] => AdminRoute::EditorRead,
        ["nodes", ..] | ["plugins", ..] | ["icons"] => AdminRoute::EditorRead,
        ["credentials", _, _] => AdminRoute::EditorRead,
        _ => AdminRoute::Other,
    }
}

/// What Node-RED is sent for a canonical request: its path and query, except for the editor's
/// websocket. Node-RED's upgrade listener compares the path with its own spelling byte for byte
/// (`/device-editor/comms`), while the gate decides, as Express routes, case-insensitively and
/// without a trailing slash; any other spelling would be left unanswered until Node-RED drops it.
pub fn upstream_target(canonical: &Canonical) -> String {
    match space_of(&canonical.key) {
        Space::Admin(rest) if admin_route(rest) == AdminRoute::Comms => match &canonical.query {
            Some(q) => format!("{ADMIN_ROOT}/comms?{q}"),
            None => format!("{ADMIN_ROOT}/comms"),
        },
        _ => canonical.path_and_query(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_space_is_the_prefix_as_a_whole_segment() {
        assert_eq!(space_of("/device-editor"), Space::Admin(""));
        assert_eq!(space_of("/device-editor/flows"), Space::Admin("/flows"));
        assert_eq!(space_of("/device-editorx"), Space::Node);
        assert_eq!(space_of("/"), Space::Node);
        assert_eq!(space_of("/api/device-editor"), Space::Node);
    }

    #[test]
    fn editor_assets_are_public_but_their_neighbours_are_not() {
        for p in [
            "",
            "/red/red.min.js",
            "/vendor/vendor.js",
            "/types/node/x.d.ts",
            "/theme",
            "/theme/css/x.css",
            "/locales/editor",
            "/icons/node-red/inject.svg",
            "/icons/@scope/mod/x.svg",
            "/debug/view/view.html",
            "/favicon.ico",
        ] {
            assert_eq!(admin_route(p), AdminRoute::Public, "{p}");
        }
        for p in [
            "/red",
            "/icons",
            "/context/global",
            "/diagnostics",
            "/library/local/flows",
            "/settings/user/keys",
            "/projects",
            "/inject/abc",
            "/debug/abc/enable",
            "/udp-ports/x",
        ] {
            assert_ne!(admin_route(p), AdminRoute::Public, "{p}");
        }
    }

    #[test]
    fn protection_allows_only_the_reads_the_editor_needs() {
        for p in [
            "/settings",
            "/settings/user",
            "/flows",
            "/flows/state",
            "/flow/abc",
            "/nodes",
            "/nodes/messages",
            "/nodes/node-red/inject",
            "/plugins",
            "/plugins/messages",
            "/icons",
            "/credentials/mqtt-broker/abc",
        ] {
            assert_eq!(admin_route(p), AdminRoute::EditorRead, "{p}");
        }
        for p in [
            "/context/global/x",
            "/diagnostics",
            "/library/local/flows/x",
            "/settings/user/keys",
            "/settings/user/keys/x",
            "/projects/x",
            "/flow",
            "/credentials/x",
        ] {
            assert_eq!(admin_route(p), AdminRoute::Other, "{p}");
        }
    }

    #[test]
    fn the_editor_websocket_goes_to_node_reds_spelling_and_nothing_else_is_respelled() {
        use crate::gate::canon::{Target, canonicalize};
        let upstream = |path, query| {
            upstream_target(&canonicalize(Target { path, query, authority: None, host_header: None }).unwrap())
        };
        assert_eq!(upstream("/device-editor/comms", None), "/device-editor/comms");
        assert_eq!(upstream("/Device-Editor/COMMS/", Some("x=1")), "/device-editor/comms?x=1");
        assert_eq!(upstream("//device-editor//Comms", None), "/device-editor/comms");
        assert_eq!(upstream("/device-editor/flow/AbC", None), "/device-editor/flow/AbC", "ids keep their case");
        assert_eq!(upstream("/API/Comms/", Some("q")), "/API/Comms/?q", "node space as sent (canonical)");
    }

    #[test]
    fn gate_endpoints() {
        assert_eq!(admin_route("/comms"), AdminRoute::Comms);
        assert_eq!(admin_route("/auth/login"), AdminRoute::Login);
        assert_eq!(admin_route("/auth/token"), AdminRoute::Token);
        assert_eq!(admin_route("/auth/revoke"), AdminRoute::Revoke);
        assert_eq!(admin_route("/redtether/tokens/ci"), AdminRoute::TokenApi);
    }
}
