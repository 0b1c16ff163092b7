//! RFC 3339 UTC timestamps for status and events, as serde helpers.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::SystemTime;

/// `2026-11-27T07:40:00Z`.
pub fn format_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_seconds(*t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_with_z() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_762_800);
        assert_eq!(format_seconds(t), "2026-11-27T07:00:00Z");
    }
}
