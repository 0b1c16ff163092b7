//! The `route` label of an API request: the path's template (`/api/devices/{id}/deploy`), so a
//! fleet of thousands of devices makes a few dozen series, not one per device.

/// Segments after which the next one is a name or an id, not a fixed word.
const NAMED_AFTER: [&str; 9] = [
    "devices",
    "groups",
    "rollouts",
    "pipelines",
    "operators",
    "tokens",
    "deployments",
    "snapshots",
    "enrollment-tokens",
];

/// The template of `path`. Only the API, the console and the device spaces are told apart;
/// anything else is `other` (a scanner's paths must not make series either).
pub fn route_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    match segments.as_slice() {
        [] | [""] => return "/".into(),
        ["devices", _, "editor", ..] => return "/devices/{id}/editor/*".into(),
        ["devices", _, "http", ..] => return "/devices/{id}/http/*".into(),
        ["metrics"] => return "/metrics".into(),
        ["login"] | ["setup"] | ["setup", "confirm"] | ["auth", "oidc", ..] => {}
        ["api", ..] => {}
        ["assets", ..] => return "/assets/*".into(),
        // Console pages: their first segment, the rest templated as for the API.
        [first, ..]
            if ["devices", "groups", "rollouts", "audit", "people", "fleet", "security", "account"].contains(first) => {
        }
        _ => return "other".into(),
    }
    let mut out = String::new();
    let mut named = false;
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        if named {
            out.push_str("{id}");
            named = false;
        } else if segment.len() > 40 || !segment.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '_') {
            // Not a route's fixed word (an id where none was expected): templated too.
            out.push_str("{id}");
        } else {
            out.push_str(segment);
            // (`/api/me/tokens/{name}`, `/api/devices/{id}/tokens/{name}` alike.)
            named = NAMED_AFTER.contains(segment) && i + 1 < segments.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn ids_and_names_become_placeholders() {
        assert_eq!(route_of("/api/devices"), "/api/devices");
        assert_eq!(route_of("/api/devices/gw-17"), "/api/devices/{id}");
        assert_eq!(route_of("/api/devices/gw-17/deploy"), "/api/devices/{id}/deploy");
        assert_eq!(route_of("/api/devices/gw-17/deployments/0190ab"), "/api/devices/{id}/deployments/{id}");
        assert_eq!(route_of("/api/devices/gw-17/tokens/ci"), "/api/devices/{id}/tokens/{id}");
        assert_eq!(route_of("/api/groups/plant-a/deploy"), "/api/groups/{id}/deploy");
        assert_eq!(route_of("/api/rollouts/0190ab/pause"), "/api/rollouts/{id}/pause");
        assert_eq!(route_of("/devices/gw-17/editor/flows"), "/devices/{id}/editor/*");
        assert_eq!(route_of("/devices/gw-17"), "/devices/{id}");
        assert_eq!(route_of("/"), "/");
    }

    #[test]
    fn unknown_paths_make_one_series() {
        assert_eq!(route_of("/wp-admin/setup.php"), "other");
        assert_eq!(route_of("/.env"), "other");
        assert_eq!(route_of("/api/UNKNOWN"), "/api/{id}");
    }
}
