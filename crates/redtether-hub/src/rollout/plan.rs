//! A rollout's plan: how many canaries, the waves after them, how long each stage must stay
//! healthy, how many failures halt it, and what offline devices and a halt do. Parsed from the
//! API's JSON and split into stages here, without I/O.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The longest `wait` and `timeout` a plan may ask for.
const MAX_SECS: u64 = 7 * 86400;
/// How long a device may take from its deployment being made to applying it, unless the plan
/// says otherwise: long enough for an npm install on a slow link.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Offline {
    /// The stage waits for the device to come back.
    #[default]
    Wait,
    /// The device is left out and reported as skipped.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnHalt {
    /// Devices the rollout moved get the snapshot they ran before.
    #[default]
    Rollback,
    /// They keep the new flows; an operator decides.
    Hold,
}

/// A checked plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Devices deployed first, alone.
    pub canary: usize,
    /// Cumulative percentages of the devices after the canary, increasing, the last 100.
    pub waves: Vec<u8>,
    /// How long every device of a stage must have run the new flows, healthy, before the next.
    pub wait_secs: u64,
    /// More failed devices than this halt the rollout.
    pub max_failed: usize,
    pub offline: Offline,
    pub on_halt: OnHalt,
    /// A device that has not applied its deployment this long after it was made has failed.
    pub timeout_secs: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            canary: 1,
            waves: vec![100],
            wait_secs: 60,
            max_failed: 0,
            offline: Offline::Wait,
            on_halt: OnHalt::Rollback,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// A plan as the API takes it: every field optional; `wait` and `timeout` are seconds or a
/// duration (`"60s"`, `"5m"`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    canary: Option<usize>,
    waves: Option<Vec<u8>>,
    wait: Option<serde_json::Value>,
    max_failed: Option<usize>,
    offline: Option<Offline>,
    on_halt: Option<OnHalt>,
    timeout: Option<serde_json::Value>,
}

/// What is wrong with a plan, naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plan.{field}: {message}")]
pub struct PlanError {
    pub field: &'static str,
    pub message: String,
}

fn wrong(field: &'static str, message: impl Into<String>) -> PlanError {
    PlanError { field, message: message.into() }
}

fn seconds(field: &'static str, value: &serde_json::Value) -> Result<u64, PlanError> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| wrong(field, "must be whole seconds"))?,
        serde_json::Value::String(text) => humantime::parse_duration(text)
            .map_err(|e| wrong(field, format!("{text:?} is not a duration: {e}")))?
            .as_secs(),
        _ => return Err(wrong(field, "must be seconds or a duration like \"60s\"")),
    };
    if secs > MAX_SECS {
        return Err(wrong(field, "must be at most 7 days"));
    }
    Ok(secs)
}

impl RawPlan {
    pub fn check(self) -> Result<Plan, PlanError> {
        let default = Plan::default();
        let waves = self.waves.unwrap_or(default.waves);
        if waves.is_empty() || waves.len() > 20 {
            return Err(wrong("waves", "must list 1 to 20 percentages"));
        }
        if waves.windows(2).any(|w| w[0] >= w[1]) || waves[0] == 0 {
            return Err(wrong("waves", "percentages must increase, starting above 0"));
        }
        if waves.last() != Some(&100) {
            return Err(wrong("waves", "the last wave must be 100 (every device)"));
        }
        let timeout_secs = self.timeout.as_ref().map(|v| seconds("timeout", v)).transpose()?;
        if timeout_secs == Some(0) {
            return Err(wrong("timeout", "must be more than 0"));
        }
        Ok(Plan {
            canary: self.canary.unwrap_or(default.canary),
            waves,
            wait_secs: self.wait.as_ref().map(|v| seconds("wait", v)).transpose()?.unwrap_or(default.wait_secs),
            max_failed: self.max_failed.unwrap_or(default.max_failed),
            offline: self.offline.unwrap_or_default(),
            on_halt: self.on_halt.unwrap_or_default(),
            timeout_secs: timeout_secs.unwrap_or(default.timeout_secs),
        })
    }
}

impl Plan {
    /// The plan as the API shows it (the shape it takes).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "canary": self.canary,
            "waves": self.waves,
            "wait": format!("{}s", self.wait_secs),
            "max_failed": self.max_failed,
            "offline": self.offline,
            "on_halt": self.on_halt,
            "timeout": format!("{}s", self.timeout_secs),
        })
    }

    /// The stages for `devices` devices, in order, as index ranges: the canary (stage 0, empty
    /// when `canary` is 0), then each wave up to its percentage of the rest, rounded up. Empty
    /// waves (few devices, close percentages) are left out.
    pub fn stages(&self, devices: usize) -> Vec<Range<usize>> {
        let canary = self.canary.min(devices);
        let rest = devices - canary;
        let mut stages = Vec::new();
        if canary > 0 {
            stages.push(0..canary);
        }
        let mut start = canary;
        for &percent in &self.waves {
            let end = canary + (rest * usize::from(percent)).div_ceil(100);
            if end > start {
                stages.push(start..end);
                start = end;
            }
        }
        stages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(v: serde_json::Value) -> Result<Plan, PlanError> {
        serde_json::from_value::<RawPlan>(v).unwrap().check()
    }

    #[test]
    fn the_issues_example_parses() {
        let p = plan(json!({"canary": 1, "waves": [10, 50, 100], "wait": "60s", "max_failed": 1, "offline": "skip"}))
            .unwrap();
        assert_eq!(p.canary, 1);
        assert_eq!(p.wait_secs, 60);
        assert_eq!(p.offline, Offline::Skip);
        assert_eq!(p.on_halt, OnHalt::Rollback);
        assert_eq!(plan(json!({"wait": 0})).unwrap().wait_secs, 0);
        assert_eq!(plan(json!({})).unwrap(), Plan::default());
    }

    #[test]
    fn bad_plans_name_their_field() {
        for (body, field) in [
            (json!({"waves": []}), "waves"),
            (json!({"waves": [50, 10, 100]}), "waves"),
            (json!({"waves": [10, 50]}), "waves"),
            (json!({"waves": [0, 100]}), "waves"),
            (json!({"wait": "soon"}), "wait"),
            (json!({"wait": -1}), "wait"),
            (json!({"wait": "30d"}), "wait"),
            (json!({"timeout": 0}), "timeout"),
        ] {
            assert_eq!(plan(body.clone()).unwrap_err().field, field, "{body}");
        }
        assert!(serde_json::from_value::<RawPlan>(json!({"canaries": 1})).is_err());
        assert!(serde_json::from_value::<RawPlan>(json!({"offline": "maybe"})).is_err());
    }

    #[test]
    fn stages_cover_every_device_once_in_order() {
        let p = plan(json!({"canary": 1, "waves": [10, 50, 100]})).unwrap();
        assert_eq!(p.stages(201), vec![0..1, 1..21, 21..101, 101..201]);
        assert_eq!(p.stages(1), vec![0..1]);
        assert_eq!(p.stages(0), Vec::<Range<usize>>::new());
        // Rounded up: 10 % of 3 is one device, not none.
        assert_eq!(p.stages(4), vec![0..1, 1..2, 2..3, 3..4]);
        let no_canary = plan(json!({"canary": 0, "waves": [100]})).unwrap();
        assert_eq!(no_canary.stages(5), vec![0..5]);
        for n in 0..300 {
            let stages = p.stages(n);
            let covered: Vec<usize> = stages.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>());
        }
    }
}
