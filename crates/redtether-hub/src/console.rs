//! The console's front page, `GET /` from a browser: where the hub's start message and a login
//! without `next` send people. Logged in, it lists the fleet — each device, online or not, when
//! it was last seen, its agent and Node-RED, and (for roles that may open it) a link to its
//! editor; not logged in, it sends the browser to `/login`. It only reads, with the same
//! checks as `GET /api/devices`; everything else stays the JSON API.

use crate::api::{Api, ApiBody, boxed, rate_limited};
use crate::caller::Checked;
use crate::login::{esc, page};
use crate::store::{DeviceRecord, OperatorRole};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use std::net::IpAddr;

/// One device's row, as the operator may see it.
struct Row {
    id: String,
    online: bool,
    revoked: bool,
    last_seen: Option<String>,
    agent_version: Option<String>,
    node_red: Option<&'static str>,
}

impl Row {
    /// `now` is when an online device was last seen, as `GET /api/devices` says.
    fn of(d: &DeviceRecord, online: bool, now: u64) -> Row {
        Row {
            id: d.id.clone(),
            online,
            revoked: d.revoked,
            last_seen: if online { Some(now) } else { d.last_seen }.map(redtether_proto::time::format_unix),
            agent_version: d.agent_version.clone(),
            node_red: d.status.as_ref().map(|s| s.node_red.state.as_str()),
        }
    }
}

/// The page's body: pure, so what it shows (and escapes) is tested without a hub.
fn fleet(operator: &str, role: OperatorRole, rows: &[Row]) -> String {
    let mut body = format!(
        "<h1>redtether hub</h1><p>Logged in as {} ({}). Reload for the latest state.</p>",
        esc(operator),
        role.as_str()
    );
    if rows.is_empty() {
        body.push_str(
            "<p>No device is enrolled yet. <code>redtether-hub enroll-token --device ID</code> prints the \
             <code>redtether enroll</code> command for one.</p>",
        );
        return body;
    }
    body.push_str(
        "<table><thead><tr><th>Device</th><th>State</th><th>Last seen</th><th>Agent</th><th>Node-RED</th>\
         <th></th></tr></thead><tbody>",
    );
    for row in rows {
        let state = match (row.revoked, row.online) {
            (true, _) => "revoked",
            (false, true) => "online",
            (false, false) => "offline",
        };
        // Device ids are restricted names, but escaped all the same: they came from a token.
        let id = esc(&row.id);
        let editor = if role >= OperatorRole::Viewer && row.online && !row.revoked {
            format!("<a href=\"/devices/{id}/editor/\">editor</a>")
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<tr><td>{id}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{editor}</td></tr>",
            esc(row.last_seen.as_deref().unwrap_or("never")),
            esc(row.agent_version.as_deref().unwrap_or("")),
            row.node_red.unwrap_or(""),
        ));
    }
    body.push_str("</tbody></table>");
    body
}

impl Api {
    pub(crate) fn console(&self, headers: &HeaderMap, peer: IpAddr) -> Response<ApiBody> {
        let caller = match self.authenticate(headers, peer) {
            Some(Checked::Operator(caller)) => caller,
            Some(Checked::Limited(retry)) => return boxed(rate_limited(retry)),
            Some(Checked::Refused) | None => {
                let mut r = page(StatusCode::SEE_OTHER, "<p><a href=\"/login\">Log in</a></p>", None);
                r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/login"));
                return r;
            }
        };
        let rows = match self.store.devices() {
            Ok(devices) => {
                let now = redtether_proto::time::unix_now();
                devices.iter().map(|d| Row::of(d, self.registry.get(&d.id).is_some(), now)).collect::<Vec<_>>()
            }
            Err(e) => return boxed(crate::api::store_error(&e)),
        };
        page(StatusCode::OK, &fleet(&caller.operator.name, caller.operator.role, &rows), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, online: bool) -> Row {
        Row {
            id: id.into(),
            online,
            revoked: false,
            last_seen: Some("2026-11-27T07:00:00Z".into()),
            agent_version: Some("0.9.0".into()),
            node_red: Some("running"),
        }
    }

    #[test]
    fn the_fleet_links_editors_for_roles_that_may_open_them() {
        let rows = [row("pump-1", true), row("pump-2", false)];
        let page = fleet("admin", OperatorRole::Owner, &rows);
        assert!(page.contains("<td>pump-1</td><td>online</td>"), "{page}");
        assert!(page.contains("<a href=\"/devices/pump-1/editor/\">"), "{page}");
        assert!(page.contains("<td>pump-2</td><td>offline</td>"), "{page}");
        assert!(!page.contains("/devices/pump-2/editor/"), "no editor for an offline device");
        let page = fleet("tv", OperatorRole::Dashboard, &rows);
        assert!(!page.contains("/editor/"), "a dashboard operator cannot open editors");
    }

    #[test]
    fn what_came_from_outside_is_escaped() {
        let page = fleet("<b>", OperatorRole::Viewer, &[row("a\"<x>", true)]);
        assert!(!page.contains("<b>") && !page.contains("<x>"), "{page}");
        assert!(fleet("ann", OperatorRole::Owner, &[]).contains("No device is enrolled yet"));
    }
}
