//! Time as the two ends write it: RFC 3339 UTC timestamps (status, events, the API) and Unix
//! seconds (expiries in signed documents, records).

use std::time::{Duration, SystemTime};

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z); later times are written as it, so
/// a certificate or token valid "forever" shows as the far future instead of failing.
const LAST_WRITABLE: u64 = 253_402_300_799;

/// `2026-11-27T07:40:00Z`.
pub fn format_seconds(t: SystemTime) -> String {
    format_unix(unix_of(t))
}

/// [`format_seconds`] of a Unix time in seconds.
pub fn format_unix(secs: u64) -> String {
    let clamped = Duration::from_secs(secs.min(LAST_WRITABLE));
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + clamped).to_string()
}

/// Seconds since the Unix epoch of `t` (0 before it).
pub fn unix_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The wall clock now, in Unix seconds. (The only clock read in this crate: the state machines
/// take their time as an argument.)
pub fn unix_now() -> u64 {
    unix_of(SystemTime::now())
}

/// Serde helpers for a `SystemTime` written as RFC 3339 seconds:
/// `#[serde(with = "redtether_proto::time::rfc3339")]`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_z() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_762_800);
        assert_eq!(format_seconds(t), "2026-11-27T07:00:00Z");
        assert_eq!(format_unix(1_795_762_800), "2026-11-27T07:00:00Z");
        assert_eq!(unix_of(t), 1_795_762_800);
        assert_eq!(unix_of(SystemTime::UNIX_EPOCH - Duration::from_secs(5)), 0);
    }

    #[test]
    fn times_past_year_9999_are_written_as_its_last_second() {
        assert_eq!(format_unix(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(format_unix(LAST_WRITABLE), "9999-12-31T23:59:59Z");
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(LAST_WRITABLE + 86_400 * 365);
        assert_eq!(format_seconds(far), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn serde_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "rfc3339")]
            at: SystemTime,
        }
        let t = T { at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_762_800) };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"at":"2026-11-27T07:00:00Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
    }
}
