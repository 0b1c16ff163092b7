//! The JSON an alert is posted as (documented in README.md, "Alerts"). Version 1:
//!
//! ```json
//! {"version": 1, "id": "<UUIDv7, the same on every retry>", "key": "device.offline:pump-1",
//!  "alert": "device.offline", "status": "firing", "device": "pump-1", "group": "prod",
//!  "summary": "pump-1 has been offline since …", "detail": {…}, "at": "<RFC 3339>",
//!  "hub": "hub.example.com:7443"}
//! ```

use super::engine::Alert;
use serde_json::{Value, json};

/// The body of one notification. `id` is made once per notification, so a receiver can drop
/// the copy a lost answer made the hub send again.
pub fn body(alert: &Alert, id: &str, hub: &str) -> Value {
    json!({
        "version": 1,
        "id": id,
        "key": alert.key,
        "alert": alert.name.as_str(),
        "status": if alert.resolved { "resolved" } else { "firing" },
        "device": alert.device,
        "group": alert.group,
        "summary": alert.summary,
        "detail": alert.detail,
        "at": redtether_proto::time::format_unix(alert.at),
        "hub": hub,
    })
}

/// What the hub's audit trail records about an alert's delivery (with `attempts` and the
/// outcome added by the caller): never the webhook's URL, only its name and origin.
pub fn audit_detail(alert: &Alert, id: &str, webhook: &str, origin: &str) -> Value {
    json!({
        "alert": alert.name.as_str(),
        "status": if alert.resolved { "resolved" } else { "firing" },
        "key": alert.key,
        "id": id,
        "webhook": webhook,
        "origin": origin,
    })
}

/// Whom a delivery's audit event is about: the device, the group, or the hub.
pub fn audit_target(alert: &Alert) -> String {
    match (&alert.device, &alert.group) {
        (Some(device), _) => device.clone(),
        (None, Some(group)) => format!("group:{group}"),
        (None, None) => "hub".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::name::AlertName;

    #[test]
    fn the_documented_fields() {
        let alert = Alert {
            name: AlertName::RolloutHalted,
            resolved: false,
            key: "rollout.halted:r-1".into(),
            device: None,
            group: Some("prod".into()),
            summary: "rollout r-1 to group prod halted".into(),
            detail: json!({"rollout": "r-1"}),
            at: 1_800_000_000,
        };
        let b = body(&alert, "id-1", "hub.example.com:7443");
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 11, "{keys:?}");
        assert_eq!(
            (b["version"].as_u64(), b["alert"].as_str(), b["status"].as_str()),
            (Some(1), Some("rollout.halted"), Some("firing"))
        );
        assert_eq!((b["device"].clone(), b["group"].as_str()), (Value::Null, Some("prod")));
        assert_eq!(b["at"], "2027-01-15T08:00:00Z");
        assert_eq!(audit_target(&alert), "group:prod");
        let resolved = Alert { resolved: true, device: Some("pump-1".into()), ..alert };
        assert_eq!(body(&resolved, "id-2", "h")["status"], "resolved");
        assert_eq!(audit_target(&resolved), "pump-1");
    }
}
