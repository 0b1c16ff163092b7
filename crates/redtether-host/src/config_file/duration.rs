//! Durations in the config file are human strings ("500ms", "10s", "5m", "1h 30m").

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub fn deserialize_opt<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{e} in {text:?} (expected e.g. \"10s\", \"5m\", \"500ms\")")))
}
