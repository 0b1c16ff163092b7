//! `GET /api/devices/{id}/audit`: the device's trail in one place — the events the device
//! delivered (`"source": "device"`, every field as the device sealed it) and the events the hub
//! recorded about it (`"source": "hub"`: enrolled, connected, commands). Pure: parsing the query
//! and merging the two streams.
//!
//! Query: `after=SEQ` (device events with a greater seq), `kind=K` (K itself or `K.*`),
//! `source=device|hub`. Hub events have their own seq, so `after` does not apply to them; a
//! client that polls with `after` asks for `source=device`.

use serde_json::Value;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub after: u64,
    pub kind: Option<String>,
    pub source: Option<Source>,
}

/// The same two sources the fleet audit shows.
pub use crate::store::Source;

/// What is wrong with a query; the API answers it as the `detail` of a `bad_query`.
#[derive(Debug, thiserror::Error)]
pub enum AuditQueryError {
    #[error("after={value:?} is not a sequence number")]
    After {
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("kind={0:?} is not an event kind")]
    Kind(String),
    #[error("source={0:?} is not device or hub")]
    Source(String),
    #[error("unknown parameter {0:?}")]
    Unknown(String),
}

impl AuditQuery {
    pub fn parse(query: Option<&str>) -> Result<AuditQuery, AuditQueryError> {
        let mut q = AuditQuery::default();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "after" => {
                    q.after =
                        value.parse().map_err(|source| AuditQueryError::After { value: value.to_string(), source })?
                }
                "kind" => {
                    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                    if !ok {
                        return Err(AuditQueryError::Kind(value.to_string()));
                    }
                    q.kind = Some(value.to_string());
                }
                "source" => {
                    q.source = Some(Source::parse(value).ok_or_else(|| AuditQueryError::Source(value.to_string()))?)
                }
                _ => return Err(AuditQueryError::Unknown(key.to_string())),
            }
        }
        Ok(q)
    }

    fn kind_matches(&self, event: &Value) -> bool {
        let Some(k) = &self.kind else { return true };
        let kind = event["kind"].as_str().unwrap_or_default();
        kind == k || kind.strip_prefix(k.as_str()).is_some_and(|rest| rest.starts_with('.'))
    }
}

/// Both streams, each kept in its own order (device events by seq even if the device's clock
/// jumped), interleaved by timestamp, each marked with its source.
pub fn merge(device: Vec<Value>, hub: Vec<Value>, q: &AuditQuery) -> Vec<Value> {
    let mark = |source: &str, mut e: Value| {
        e["source"] = source.into();
        e
    };
    let wanted = |s: Source| q.source.is_none_or(|x| x == s);
    let mut device: std::collections::VecDeque<Value> = if wanted(Source::Device) {
        device
            .into_iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s > q.after) && q.kind_matches(e))
            .map(|e| mark("device", e))
            .collect()
    } else {
        Default::default()
    };
    let mut hub: std::collections::VecDeque<Value> = if wanted(Source::Hub) {
        hub.into_iter().filter(|e| q.kind_matches(e)).map(|e| mark("hub", e)).collect()
    } else {
        Default::default()
    };
    let mut out = Vec::with_capacity(device.len() + hub.len());
    loop {
        let take_device = match (device.front(), hub.front()) {
            (Some(d), Some(h)) => timestamp(d) <= timestamp(h),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_device { device.pop_front() } else { hub.pop_front() });
    }
    out
}

fn timestamp(e: &Value) -> Option<std::time::SystemTime> {
    e["ts"].as_str().and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_query_is_strict() {
        assert_eq!(AuditQuery::parse(None).unwrap(), AuditQuery::default());
        let q = AuditQuery::parse(Some("after=7&kind=tunnel&source=device")).unwrap();
        assert_eq!(q, AuditQuery { after: 7, kind: Some("tunnel".into()), source: Some(Source::Device) });
        for bad in ["after=-1", "after=x", "kind=", "kind=a%20b", "source=both", "limit=3"] {
            assert!(AuditQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_order_is_kept_even_when_its_clock_jumped_back() {
        let device = vec![
            json!({"seq": 1, "ts": "2026-01-01T10:00:00Z", "kind": "a"}),
            json!({"seq": 2, "ts": "2026-01-01T09:00:00Z", "kind": "b"}),
            json!({"seq": 3, "ts": "2026-01-01T10:30:00Z", "kind": "tunnel.connected"}),
        ];
        let hub = vec![json!({"seq": 1, "ts": "2026-01-01T10:10:00Z", "kind": "device.connected"})];
        let all = merge(device.clone(), hub.clone(), &AuditQuery::default());
        let order: Vec<(&str, &str)> =
            all.iter().map(|e| (e["source"].as_str().unwrap(), e["kind"].as_str().unwrap())).collect();
        assert_eq!(
            order,
            [("device", "a"), ("device", "b"), ("hub", "device.connected"), ("device", "tunnel.connected")]
        );

        let after = merge(
            device.clone(),
            hub.clone(),
            &AuditQuery { after: 2, source: Some(Source::Device), ..Default::default() },
        );
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["seq"], 3);
        let tunnel = merge(device, hub, &AuditQuery { kind: Some("tunnel".into()), ..Default::default() });
        assert_eq!(tunnel.len(), 1, "kind matches K and K.*, not other prefixes");
    }
}
